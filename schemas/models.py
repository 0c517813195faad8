"""models: one checkpoint and its lineage. Key: model_id."""
import pyarrow as pa

from schemas.base import TableSpec

SPEC = TableSpec(
    name="models",
    version=1,
    key=("model_id",),
    schema=pa.schema(
        [
            pa.field("model_id", pa.string(), nullable=False),
            pa.field("parent_id", pa.string()),
            pa.field("iteration", pa.int32(), nullable=False),
            pa.field("path", pa.string(), nullable=False),
            pa.field("selection_hash", pa.string()),
            pa.field("num_examples", pa.int64(), nullable=False),
            pa.field("train_steps", pa.int64(), nullable=False),
            pa.field("train_loss", pa.float64()),
            pa.field("train_seconds", pa.float64()),
            pa.field("created_at", pa.timestamp("s", tz="UTC"), nullable=False),
            pa.field("metrics", pa.string()),
        ]
    ),
)
