"""candidates: one sampled solution.

Key: candidate_id = hash(prompt_id, model_id, sampling-params hash, sample_index).
token_ids / token_logprobs are the sampled tokens and their log-probabilities under the policy
that generated them (needed by PRL); step_token_ends[i] is the index of the last token of step i.
"""
import pyarrow as pa

from schemas.base import TableSpec

SPEC = TableSpec(
    name="candidates",
    version=1,
    key=("candidate_id",),
    schema=pa.schema(
        [
            pa.field("candidate_id", pa.string(), nullable=False),
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("model_id", pa.string(), nullable=False),
            pa.field("iteration", pa.int32(), nullable=False),
            pa.field("sampling_hash", pa.string(), nullable=False),
            pa.field("sample_index", pa.int32(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("steps", pa.list_(pa.string()), nullable=False),
            pa.field("num_tokens", pa.int32(), nullable=False),
            pa.field("finish_reason", pa.string(), nullable=False),
            pa.field("cumulative_logprob", pa.float64()),
            pa.field("token_ids", pa.list_(pa.int32())),
            pa.field("token_logprobs", pa.list_(pa.float32())),
            pa.field("step_token_ends", pa.list_(pa.int32())),
        ]
    ),
)

FINISH_REASONS = ("stop", "length")
