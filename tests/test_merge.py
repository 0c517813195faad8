"""`flywheel merge`: a model's weights averaged with its base model's into a new folder (WiSE-FT)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from tasks.generation.generate import model_id_for
from tests.conftest import run_cli


def perturbed_copy(model_dir: Path, folder: Path) -> Path:
    """A copy of the model whose every weight moved by seeded noise (a stand-in for finetuning: the
    merge is arithmetic on weights, whatever moved them)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(model_dir / name, folder / name)
    return folder


def test_merge_writes_the_weighted_average_with_a_card_and_refuses_to_overwrite(tiny_model_dir, tmp_path):
    tuned = perturbed_copy(tiny_model_dir, tmp_path / "tuned")
    output = tmp_path / "merged"
    proc = run_cli("merge", "--model", str(tuned), "--base", str(tiny_model_dir), "--base-share", "0.3",
                   "--output", str(output))
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout[proc.stdout.index("{"):])
    base, theirs = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(tuned / "model.safetensors"))
    merged = load_file(str(output / "model.safetensors"))
    assert merged.keys() == base.keys() and len(merged) > 5
    for name, weight in merged.items():
        assert not torch.equal(theirs[name], base[name]), name
        assert torch.allclose(weight, 0.7 * theirs[name] + 0.3 * base[name], atol=1e-6), name
    card = json.loads((output / "flywheel_card.json").read_text())
    assert card == {k: v for k, v in printed.items() if k != "path"}
    assert (card["kind"], card["parent_id"], card["merged_with"], card["base_share"]) == (
        "merged", model_id_for(tuned), model_id_for(tiny_model_dir), 0.3)
    assert model_id_for(output) == card["model_id"] and card["model_id"].startswith("merged-")

    again = run_cli("merge", "--model", str(tuned), "--base", str(tiny_model_dir), "--output", str(output))
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1
    assert "already exists" in again.stderr
    assert load_file(str(output / "model.safetensors")).keys() == merged.keys()
    assert json.loads((output / "flywheel_card.json").read_text()) == card


def test_merge_refuses_a_share_outside_zero_to_one_and_a_missing_folder(tiny_model_dir, tmp_path):
    proc = run_cli("merge", "--model", str(tiny_model_dir), "--base", str(tiny_model_dir), "--base-share", "1",
                   "--output", str(tmp_path / "out"))
    assert proc.returncode == 1 and "share must be between 0 and 1 (exclusive), got 1.0" in proc.stderr
    proc = run_cli("merge", "--model", str(tmp_path / "nowhere"), "--base", str(tiny_model_dir),
                   "--output", str(tmp_path / "out"))
    assert proc.returncode == 1 and f"no model folder at {tmp_path / 'nowhere'}" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
