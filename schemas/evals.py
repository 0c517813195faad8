"""evals: one metric value with its bootstrap confidence interval.

Key: (run_id, model_id, split, benchmark, metric, k, scorer, eval_hash). pass@1 is
`metric='pass' AND k=1`. `eval_hash` names what else makes the value: the eval sampling (sampled
and greedy), prompt format, the eval prompt set and every scorer's version, so an evaluation
under another config is a new row, never a reuse of the old one.
"""
import pyarrow as pa

from schemas.base import TableSpec

SPEC = TableSpec(
    name="evals",
    version=2,
    key=("run_id", "model_id", "split", "benchmark", "metric", "k", "scorer", "eval_hash"),
    schema=pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("iteration", pa.int32(), nullable=False),
            pa.field("model_id", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("benchmark", pa.string(), nullable=False),
            pa.field("metric", pa.string(), nullable=False),
            pa.field("k", pa.int32(), nullable=False),
            pa.field("scorer", pa.string()),
            pa.field("value", pa.float64(), nullable=False),
            pa.field("ci_low", pa.float64()),
            pa.field("ci_high", pa.float64()),
            pa.field("n_problems", pa.int64(), nullable=False),
            pa.field("eval_hash", pa.string(), nullable=False),
        ]
    ),
)

# pass@k, avg@n, maj@k, rm@k (best-of-k by `scorer`), greedy accuracy, plus the shares reported
# apart from accuracy: every step correct, and unparseable answers; and the drift from the base
# model at k = n: mean completion tokens, distinct final answers per problem, and the mean per-token
# log-ratio log pi(a) - log pi_base(a) of the sampled answers (a Monte-Carlo estimate of the
# per-token KL(pi || pi_base) when eval samples at temperature 1).
METRICS = ("pass", "avg", "maj", "rm", "greedy", "all_steps", "unparseable", "tokens", "answers", "log_ratio")
