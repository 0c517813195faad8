"""Scoring: the scorer interface and every scorer (rule verifier, step verifier, learned reward
models, Math-Shepherd labels, PRL, the pairwise judge and its tournaments), votes and step
aggregation."""
