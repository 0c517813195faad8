"""prompts: one problem with its reference answer and split. Key: prompt_id = hash(source, problem)."""
import pyarrow as pa

from schemas.base import TableSpec

SPEC = TableSpec(
    name="prompts",
    version=1,
    key=("prompt_id",),
    schema=pa.schema(
        [
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("iteration", pa.int32(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("problem", pa.string(), nullable=False),
            pa.field("reference_answer", pa.string()),
            pa.field("metadata", pa.string()),
        ]
    ),
)

SPLITS = ("train", "eval", "pretrain")
