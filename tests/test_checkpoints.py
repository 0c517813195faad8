"""Checkpoint folders: a rerun with other inputs never deletes a registered checkpoint; weight merging
with the base model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.generation import PromptFormat
from schemas.loop import FinetuneStage
from tasks.generation.generate import model_id_for
from tasks.lake import ids
from tasks.lake.store import Lake
from tasks.training.checkpoints import CheckpointConflict, refuse_other_checkpoint
from tasks.training.finetune import finetune_on_selection

POLICY = "policy-0"
MODEL = "model-0"


def write_selection(lake: Lake, problems: list[tuple[str, str]]) -> None:
    """Prompts, one candidate each, and a selection keeping every candidate."""
    prompts, candidates, kept = [], [], []
    for problem, solution in problems:
        pid = ids.prompt_id("t", problem)
        cid = ids.candidate_id(pid, MODEL, "s", 0)
        prompts.append(dict(prompt_id=pid, iteration=0, source="t", split="train", problem=problem,
                            reference_answer=solution.split("#### ")[-1], metadata=None))
        candidates.append(dict(candidate_id=cid, prompt_id=pid, model_id=MODEL, iteration=0, sampling_hash="s",
                               sample_index=0, text=solution, steps=solution.split("\n"), num_tokens=len(solution),
                               finish_reason="stop", cumulative_logprob=None, token_ids=None, token_logprobs=None,
                               step_token_ends=None))
        kept.append(dict(candidate_id=cid, prompt_id=pid, iteration=0, policy_name="p", policy_hash=POLICY,
                         rank=0, weight=1.0))
    lake.write("prompts", prompts, 0, shard="prompts")
    lake.write("candidates", candidates, 0, shard="candidates")
    lake.write("selections", kept, 0, shard="sel")


def finetune(lake: Lake, base: Path, output: Path, stage: FinetuneStage):
    return finetune_on_selection(lake, iteration=0, source_model_id=MODEL, policy_hash=POLICY,
                                 start_path=str(base), start_model_id=model_id_for(base), output=output,
                                 stage=stage, fmt=PromptFormat(), sampling_hash="s", run_id="run demo")


def test_a_changed_finetune_config_is_refused_and_the_registered_checkpoint_kept(lake, tiny_model_dir, tmp_path):
    write_selection(lake, [("1+2", "1+2=3\n#### 3"), ("2+2", "2+2=4\n#### 4")])
    output = tmp_path / "models" / "demo" / "iter-1"
    stage = FinetuneStage(epochs=1, batch_size=2, warmup_steps=0)
    path, model_id, reused = finetune(lake, tiny_model_dir, output, stage)
    assert not reused and path == output.resolve()
    weights = sorted(p.name for p in output.iterdir())

    again = finetune(lake, tiny_model_dir, output, stage)
    assert again == (output.resolve(), model_id, True)

    with pytest.raises(CheckpointConflict) as error:
        finetune(lake, tiny_model_dir, output, stage.model_copy(update={"learning_rate": 5e-4}))
    message = str(error.value)
    assert "run demo iteration 1" in message and "finetune config differ" in message
    assert model_id in message and "\n" not in message
    assert sorted(p.name for p in output.iterdir()) == weights
    assert json.loads((output / "flywheel_card.json").read_text())["model_id"] == model_id
    (row,) = lake.read("models").to_pylist()
    assert row["model_id"] == model_id and Path(row["path"]).is_dir()


def test_a_changed_selection_names_the_kept_samples(lake, tiny_model_dir, tmp_path):
    write_selection(lake, [("1+2", "1+2=3\n#### 3")])
    output = tmp_path / "iter-1"
    stage = FinetuneStage(epochs=1, batch_size=1, warmup_steps=0)
    finetune(lake, tiny_model_dir, output, stage)
    write_selection(lake, [("1+2", "1+2=3\n#### 3"), ("3+3", "3+3=6\n#### 6")])  # replaces the shards
    with pytest.raises(CheckpointConflict, match="kept samples differ"):
        finetune(lake, tiny_model_dir, output, stage)


def test_a_folder_that_is_not_a_checkpoint_is_never_replaced(tmp_path):
    folder = tmp_path / "iter-1"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointConflict, match="not a Flywheel checkpoint"):
        refuse_other_checkpoint(folder, "ft-x", {}, "run r iteration 1")
    assert (folder / "notes.txt").read_text() == "mine"
    refuse_other_checkpoint(tmp_path / "absent", "ft-x", {}, "run r iteration 1")  # nothing there: fine


def test_merge_with_base_saves_the_average_of_the_finetuned_and_base_weights(lake, tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    write_selection(lake, [("1+2", "1+2=3\n#### 3"), ("2+2", "2+2=4\n#### 4"), ("3+4", "3+4=7\n#### 7")])
    stage = FinetuneStage(epochs=2, batch_size=2, warmup_steps=0, learning_rate=3e-3)
    _, plain_id, _ = finetune(lake, tiny_model_dir, tmp_path / "plain", stage)
    base_id = model_id_for(tiny_model_dir)
    merged_stage = stage.model_copy(update={"merge_with_base": 0.25})
    path, merged_id, reused = finetune_on_selection(
        lake, iteration=0, source_model_id=MODEL, policy_hash=POLICY, start_path=str(tiny_model_dir),
        start_model_id=base_id, output=tmp_path / "merged", stage=merged_stage, fmt=PromptFormat(),
        sampling_hash="s", base_path=str(tiny_model_dir), base_model_id=base_id)
    assert not reused and merged_id != plain_id

    base = load_file(str(tiny_model_dir / "model.safetensors"))
    plain = load_file(str(tmp_path / "plain" / "model.safetensors"))
    merged = load_file(str(path / "model.safetensors"))
    assert merged.keys() == plain.keys() and len(merged) > 5
    moved = 0
    for name, weight in merged.items():
        expected = 0.75 * plain[name] + 0.25 * base[name]
        assert torch.allclose(weight, expected, atol=1e-6), name  # tied embeddings merged once, not twice
        moved += not torch.equal(plain[name], base[name])
    assert moved > 5  # training changed the weights the merge averages
    card = json.loads((path / "flywheel_card.json").read_text())
    assert card["inputs"]["merged with"] == base_id and card["finetune"]["merge_with_base"] == 0.25


def test_merge_with_base_needs_the_base_model_and_a_share_below_one(lake, tiny_model_dir, tmp_path):
    write_selection(lake, [("1+2", "1+2=3\n#### 3")])
    stage = FinetuneStage(epochs=1, batch_size=1, warmup_steps=0, merge_with_base=0.5)
    with pytest.raises(ValueError, match="merge_with_base needs the base model"):
        finetune(lake, tiny_model_dir, tmp_path / "iter-1", stage)
    assert not (tmp_path / "iter-1").exists()
    with pytest.raises(ValueError, match="merge_with_base"):
        FinetuneStage(merge_with_base=1.0)
