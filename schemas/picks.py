"""picks: the one candidate a reward-guided inference method chose for one prompt.

Key: (run_id, iteration, prompt_id, method, model_id, sampling_hash): one pick per prompt and
method in a best-of-N run over one policy's candidates of one sampling config, in the lake
iteration whose candidates and scores it read (version 2; version 1 left the iteration out, so one
run_id rerun into another iteration gave two rows one key). Picks are never reused: a rerun
recomputes them and replaces its method's shard, so the scores it read are those of the
`scorer_version` on the row.

`answer` is the picked candidate's extracted final answer (null: unparseable); `score` is what the
method ranked it by (ORM logit, aggregated PRM score, the answer's vote total, the judge's
knockout round reached or ELO rating; null when nothing could be ranked). `scorer` and
`scorer_version` name the scores rows the method read (null for plain majority, which reads only
the answers). `correct` is the rule verifier's verdict on the pick against the reference answer,
null when the prompt has no reference: it is for reporting only, no method reads it.

Cost columns are the method's extra work for this prompt on top of sampling the N candidates:
`rm_passes` (candidates a reward model scored), `judge_comparisons` (pairwise judgments),
`extra_engine_calls` and `extra_generated_tokens` (the judge's batched engine calls and
completion tokens; null when not measured, e.g. judged by an earlier interrupted run).
"""
import pyarrow as pa

from schemas.base import TableSpec

SPEC = TableSpec(
    name="picks",
    version=2,
    key=("run_id", "iteration", "prompt_id", "method", "model_id", "sampling_hash"),
    schema=pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("iteration", pa.int32(), nullable=False),
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("method", pa.string(), nullable=False),
            pa.field("model_id", pa.string(), nullable=False),
            pa.field("sampling_hash", pa.string(), nullable=False),
            pa.field("n", pa.int32(), nullable=False),
            pa.field("candidate_id", pa.string(), nullable=False),
            pa.field("sample_index", pa.int32(), nullable=False),
            pa.field("answer", pa.string()),
            pa.field("score", pa.float64()),
            pa.field("scorer", pa.string()),
            pa.field("scorer_version", pa.string()),
            pa.field("correct", pa.bool_()),
            pa.field("rm_passes", pa.int32(), nullable=False),
            pa.field("judge_comparisons", pa.int32(), nullable=False),
            pa.field("extra_engine_calls", pa.int32()),
            pa.field("extra_generated_tokens", pa.int64()),
        ]
    ),
)
