"""scores: one scorer's verdict on one candidate. Key: (candidate_id, scorer).

`label` is one of LABELS for verifiers and null for learned reward models; `value` is null when the
label is unparseable or timeout (an exception is never a score). `step_scores` holds per-step
scores (PRM, PRL, step verifier); aggregation happens late, never at scoring.
"""
import pyarrow as pa

from schemas.base import TableSpec

SPEC = TableSpec(
    name="scores",
    version=1,
    key=("candidate_id", "scorer"),
    finite=("value", "step_scores"),  # a NaN or infinity is an error, never a score
    schema=pa.schema(
        [
            pa.field("candidate_id", pa.string(), nullable=False),
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("iteration", pa.int32(), nullable=False),
            pa.field("scorer", pa.string(), nullable=False),
            pa.field("scorer_version", pa.string(), nullable=False),
            pa.field("value", pa.float64()),
            pa.field("label", pa.string()),
            pa.field("extracted_answer", pa.string()),
            pa.field("step_scores", pa.list_(pa.float64())),
            pa.field("detail", pa.string()),
        ]
    ),
)

LABELS = ("correct", "incorrect", "unparseable", "timeout")
