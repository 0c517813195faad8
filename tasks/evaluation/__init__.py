"""Evaluation: sampling held-out problems, the metrics (pass@k, maj@k, avg@n, rm@k), reward-model
evaluation, the run report."""
