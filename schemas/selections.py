"""selections: one kept sample under one selection policy. Key: (candidate_id, policy_hash)."""
import pyarrow as pa

from schemas.base import TableSpec

SPEC = TableSpec(
    name="selections",
    version=1,
    key=("candidate_id", "policy_hash"),
    schema=pa.schema(
        [
            pa.field("candidate_id", pa.string(), nullable=False),
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("iteration", pa.int32(), nullable=False),
            pa.field("policy_name", pa.string(), nullable=False),
            pa.field("policy_hash", pa.string(), nullable=False),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("weight", pa.float64(), nullable=False),
        ]
    ),
)
