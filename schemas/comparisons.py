"""comparisons: one pairwise judgment. Key: (prompt_id, a_id, b_id, judge, tournament, vote).

`tournament` ('knockout' or 'elo') is part of the key: the same judge may compare the same pair
with the same vote number in both tournaments, and those are two judgments (version 2; version 1
left it out, so knockout and ELO rows of one judge collided).

`first_id` is the candidate shown as response 1; `verdict` is 'a', 'b' or 'unparseable';
`winner_id` is null when unparseable.
"""
import pyarrow as pa

from schemas.base import TableSpec

SPEC = TableSpec(
    name="comparisons",
    version=2,
    key=("prompt_id", "a_id", "b_id", "judge", "tournament", "vote"),
    schema=pa.schema(
        [
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("iteration", pa.int32(), nullable=False),
            pa.field("a_id", pa.string(), nullable=False),
            pa.field("b_id", pa.string(), nullable=False),
            pa.field("judge", pa.string(), nullable=False),
            pa.field("judge_version", pa.string(), nullable=False),
            pa.field("vote", pa.int32(), nullable=False),
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
