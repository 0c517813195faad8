"""SFT and DPO exports read back with datasets.load_from_disk and pyarrow."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from schemas.policy import PRESETS, KeepCorrect, PrlWeights, ScoreRef, SelectionPolicy
from tasks.selection.export import export_dpo_pairs, export_sft
from tasks.selection.select import policy_hash, select
from tests.conftest import run_cli
from tests.helpers import WORLD, build, cid, pid


def _sorted_by_prompt(*names: str) -> list[str]:
    return sorted(names, key=lambda n: (pid(n[0]), n))


def test_export_sft_round_trips(lake, tmp_path):
    build(lake, WORLD)
    policy = SelectionPolicy(name="w", steps=[KeepCorrect(), PrlWeights()])
    select(lake, 0, policy)
    out = tmp_path / "export"
    path = export_sft(lake, 0, policy_hash(policy), out)
    assert path == out / "sft"
    data = datasets.load_from_disk(str(path))
    assert data.column_names == ["prompt", "completion", "weight", "candidate_id", "prompt_id"]
    names = _sorted_by_prompt("a0", "a1", "a3", "b0", "b1")
    expected = [
        {"prompt": f"Q: {n[0]}\n", "completion": WORLD[n[0]][1][int(n[1])]["text"],
         "weight": WORLD[n[0]][1][int(n[1])]["prl"], "candidate_id": cid(n[0], int(n[1])),
         "prompt_id": pid(n[0])}
        for n in names
    ]
    assert data.to_list() == expected
    table = pq.read_table(out / "sft.parquet")
    assert table.to_pylist() == expected
    assert table.schema.metadata[b"flywheel.policy_hash"] == policy_hash(policy).encode()


def test_export_sft_with_a_template_replaces_the_previous_export(lake, tmp_path):
    build(lake, WORLD)
    policy = PRESETS["keep_correct"]
    select(lake, 0, policy)
    export_sft(lake, 0, policy_hash(policy), tmp_path)
    select(lake, 0, SelectionPolicy(name="one", steps=[KeepCorrect(scorer="verifier")]))
    path = export_sft(lake, 0, policy_hash(policy), tmp_path,
                      prompt_template="Problem: {problem}\nAnswer:")
    data = datasets.load_from_disk(str(path))
    assert data.num_rows == 5
    assert data[0]["prompt"] == f"Problem: {sorted(['a', 'b'], key=pid)[0]}\nAnswer:"
    assert pq.read_table(tmp_path / "sft.parquet").num_rows == 5


@pytest.mark.parametrize("template, message", [
    ("Q: {question}\n", r"unknown placeholder \{question\}"),
    ("Q:\n", "has no {problem} placeholder"),
    ("Q: {problem\n", "does not parse"),
])
def test_export_sft_rejects_a_bad_template(lake, tmp_path, template, message):
    build(lake, WORLD)
    with pytest.raises(ValueError, match=message):
        export_sft(lake, 0, "whatever", tmp_path, prompt_template=template)


def test_export_sft_without_selections_is_an_error(lake, tmp_path):
    build(lake, WORLD)
    with pytest.raises(ValueError, match="no selections for policy hash 0123 in iteration 0"):
        export_sft(lake, 0, "0123", tmp_path)


def test_export_sft_refuses_to_replace_a_foreign_folder(lake, tmp_path):
    build(lake, WORLD)
    select(lake, 0, PRESETS["keep_correct"])
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a saved dataset"):
        export_sft(lake, 0, policy_hash(PRESETS["keep_correct"]), tmp_path)
    assert (tmp_path / "sft" / "notes.txt").read_text() == "mine"


def test_export_dpo_pairs_best_against_worst(lake, tmp_path):
    build(lake, WORLD)
    path = export_dpo_pairs(lake, 0, {"scorer": "orm"}, tmp_path)
    assert path == tmp_path / "dpo"
    data = datasets.load_from_disk(str(path))
    # orm: a 0.2 0.9 0.9 0.5 -> a1 vs a0; b 0.1 0.3 -> b1 vs b0; c ties (0.4, 0.4): no pair;
    # d 0.5 0.1 0.4 0.4 0.1 -> d0 vs d1 (tie for worst goes to the lower sample_index)
    pairs = {(r["prompt_id"], r["chosen_id"], r["rejected_id"], r["chosen_score"],
              r["rejected_score"]) for r in data.to_list()}
    assert pairs == {
        (pid("a"), cid("a", 1), cid("a", 0), 0.9, 0.2),
        (pid("b"), cid("b", 1), cid("b", 0), 0.3, 0.1),
        (pid("d"), cid("d", 0), cid("d", 1), 0.5, 0.1),
    }
    first = data.to_list()[0]
    assert first["prompt"] == f"Q: {sorted('abd', key=pid)[0]}\n"
    a = next(r for r in data.to_list() if r["prompt_id"] == pid("a"))
    assert (a["chosen"], a["rejected"]) == ("X=1  \n####  1", "x=1\n#### 1")
    assert pq.read_table(tmp_path / "dpo.parquet").to_pylist() == data.to_list()


def test_export_dpo_pairs_by_aggregated_steps_skips_null_scores(lake, tmp_path):
    build(lake, WORLD)
    ref = ScoreRef(scorer="prm", field="steps", aggregate="min")
    data = datasets.load_from_disk(str(export_dpo_pairs(lake, 0, ref, tmp_path)))
    # prm min: a 0.8 0.3 0.5 0.7; b0 0.6, b1 none (only one scored: no pair); c 0.2 0.1; d all 0.5
    pairs = {(r["chosen_id"], r["rejected_id"]) for r in data.to_list()}
    assert pairs == {(cid("a", 0), cid("a", 1)), (cid("c", 0), cid("c", 1))}


def test_export_dpo_pairs_with_only_ties_is_an_error(lake, tmp_path):
    build(lake, {"c": WORLD["c"]})
    with pytest.raises(ValueError, match="no DPO pairs in iteration 0: .* tie on orm.value"):
        export_dpo_pairs(lake, 0, ScoreRef(scorer="orm"), tmp_path)


def _models_row(run_id: str, iteration: int, selection_hash: str, root: Path) -> dict:
    return dict(model_id=f"ft-{run_id}-{iteration}", parent_id="base", iteration=iteration,
                path=str(root / "models" / run_id / f"iter-{iteration}"), selection_hash=selection_hash,
                num_examples=5, train_steps=1, train_loss=0.5, train_seconds=1.0,
                created_at=datetime.now(timezone.utc), metrics=None)


def test_the_export_command_writes_a_runs_kept_samples_and_pairs(lake, tmp_path):
    build(lake, WORLD)
    kept = SelectionPolicy(name="w", steps=[KeepCorrect()])
    other = SelectionPolicy(name="other", steps=[KeepCorrect(), PrlWeights()])
    select(lake, 0, kept)
    select(lake, 0, other)
    lake.write("models", [_models_row("r1", 1, policy_hash(kept), tmp_path),
                          _models_row("r2", 1, policy_hash(other), tmp_path)], 1)
    out = tmp_path / "out"
    proc = run_cli("--lake", str(lake.root), "export", "--run", "r1", "--iteration", "0", "--format", "sft",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = datasets.load_from_disk(str(out / "sft"))
    assert sorted(data["candidate_id"]) == sorted(cid(n[0], int(n[1])) for n in ("a0", "a1", "a3", "b0", "b1"))
    assert set(data["weight"]) == {1.0}  # r1's policy, not r2's PRL-weighted one
    assert pq.read_table(out / "sft.parquet").num_rows == 5

    proc = run_cli("--lake", str(lake.root), "export", "--run", "r1", "--iteration", "0", "--format", "dpo",
                   "--score", "orm", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    pairs = datasets.load_from_disk(str(out / "dpo"))
    assert pairs.num_rows >= 1 and all(c > r for c, r in zip(pairs["chosen_score"], pairs["rejected_score"]))

    proc = run_cli("--lake", str(lake.root), "export", "--run", "nope", "--iteration", "0", "--format", "sft",
                   "--out", str(tmp_path / "none"))
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("flywheel: error: run 'nope' has no model finetuned on iteration 0")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "none").exists()
