"""Rounds: what the stages of one round of the loop share (the lake, the model in and out, the
sampling hash, the engine's lifetime), each stage's body over that context, and the run-level
rules (which round is next, when to stop early)."""
