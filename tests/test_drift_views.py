"""The drift and purity views on a hand-built lake, against figures counted by hand."""
from __future__ import annotations

import pytest

from schemas.policy import preset
from tasks.lake.sql import connect
from tasks.lake.store import Lake
from tasks.selection.select import select
from tests.helpers import MODEL, SAMPLING, WORLD, build


def test_round_drift_counts_tokens_answers_and_unparseable_per_model(lake: Lake):
    build(lake, WORLD)
    row = connect(lake).sql("SELECT * FROM round_drift").fetchall()
    assert len(row) == 1
    iteration, split, model, sampling, prompts, candidates, tokens, answers, unparseable = row[0]
    assert (iteration, split, model, sampling, prompts, candidates) == (0, "train", MODEL, SAMPLING, 4, 13)
    # texts: a: 10, 13, 10, 10 characters; b, c, d: 2 each (9 texts)
    assert tokens == pytest.approx((10 + 13 + 10 + 10 + 2 * 9) / 13)
    # distinct extracted answers: a {1, 2}, b {2}, c {4}, d {3, 4, ' 04'}
    assert answers == pytest.approx((2 + 1 + 1 + 3) / 4)
    assert unparseable == pytest.approx(1 / 13)  # c1


def test_kept_purity_is_the_share_of_kept_samples_with_every_step_right(lake: Lake):
    build(lake, WORLD)
    select(lake, 0, preset("keep_correct"), model_id=MODEL, sampling_hash=SAMPLING)
    rows = connect(lake).sql("SELECT policy_name, n_kept, n_steps_known, n_all_steps_correct, purity "
                             "FROM kept_purity").fetchall()
    # kept: a0, a1, a3, b0, b1; the step verifier says a0, a3, b0 are right throughout
    assert rows == [("keep_correct", 5, 5, 3, pytest.approx(3 / 5))]
