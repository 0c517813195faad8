"""comparisons: one pairwise judgment of one tournament.

Key: (prompt_id, a_id, b_id, judge, judge_version, tournament, votes_k, seed, vote).

A row is one vote of one tournament, and the key names every input that changes it:
- `judge_version` is the judge model's id plus a hash of the judge's settings (prompt template,
  sampling, attempts, prompt format; `tasks.scoring.judge.stored_judge_version`): another judge model,
  temperature or template is another judgment, never a reuse of this one;
- `seed` is the tournament seed the vote's engine seed and the knockout draw derive from, and
  `votes_k` the number of votes per pair (voting@k): two knockouts that differ only in seed or k
  are two tournaments whose rows must both stay (version 3; version 2 left seed, k and the judge
  version out of the key, so two knockouts with different seeds shared keys);
- `tournament` ('knockout' or 'elo'): the same judge may compare the same pair with the same vote
  number in both tournaments, and those are two rows (version 2).

`first_id` is the candidate shown as response 1; `verdict` is 'a', 'b' or 'unparseable';
`winner_id` is null when unparseable.
"""
import pyarrow as pa

from schemas.base import TableSpec

SPEC = TableSpec(
    name="comparisons",
    version=3,
    key=("prompt_id", "a_id", "b_id", "judge", "judge_version", "tournament", "votes_k", "seed", "vote"),
    schema=pa.schema(
        [
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("iteration", pa.int32(), nullable=False),
            pa.field("a_id", pa.string(), nullable=False),
            pa.field("b_id", pa.string(), nullable=False),
            pa.field("judge", pa.string(), nullable=False),
            pa.field("judge_version", pa.string(), nullable=False),
            pa.field("vote", pa.int32(), nullable=False),
            pa.field("votes_k", pa.int32(), nullable=False),
            pa.field("seed", pa.int64(), nullable=False),
            pa.field("tournament", pa.string(), nullable=False),
            pa.field("round", pa.int32(), nullable=False),
            pa.field("first_id", pa.string(), nullable=False),
            pa.field("verdict", pa.string(), nullable=False),
            pa.field("winner_id", pa.string()),
            pa.field("reasoning", pa.string()),
            pa.field("attempts", pa.int32(), nullable=False),
        ]
    ),
)

VERDICTS = ("a", "b", "unparseable")
