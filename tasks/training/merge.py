"""Weight-space ensembles: a model's weights averaged with its base model's (WiSE-FT).

Finetuning a model on its own right answers narrows what it samples: pass@1 rises while pass@k for
large k falls. Averaging the finetuned weights with the weights it started from keeps much of the
gain and much of the breadth (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models";
Dang et al. 2025, "Weight ensembling improves reasoning in language models").
"""
from __future__ import annotations

from pathlib import Path

from tasks.lake import ids


def merge_weights(model, other, share: float) -> None:
    """Move `model`'s floating-point weights to (1 - share) * its own + share * `other`'s, in place:
    a weight-space ensemble of two models of one architecture (WiSE-FT, Wortsman et al. 2022)."""
    import torch

    theirs = other.state_dict()
    merged: set[int] = set()  # tied weights (embeddings and LM head) are one tensor under two names
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name not in theirs or theirs[name].shape != tensor.shape:
                raise ValueError(f"cannot merge: the base model has no weight {name!r} of shape {tuple(tensor.shape)}")
            if tensor.is_floating_point() and tensor.data_ptr() not in merged:
                merged.add(tensor.data_ptr())
                tensor.lerp_(theirs[name].to(tensor.device, tensor.dtype), share)


def merge_model_folders(model_path: str | Path, base_path: str | Path, base_share: float,
                        output: str | Path) -> dict:
    """Save (1 - base_share) * the model's weights + base_share * the base model's as a new model
    folder with its card (kind `merged`, the two model ids, the share); returns the card. The id is a
    hash of the two ids and the share. An existing `output` is refused, never replaced."""
    from datetime import datetime, timezone

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.generation.generate import model_id_for
    from tasks.training.checkpoints import save_checkpoint

    if not 0 < base_share < 1:
        raise ValueError(f"the base model's share must be between 0 and 1 (exclusive), got {base_share}")
    output = Path(output)
    if output.exists():
        raise FileExistsError(f"{output} already exists; it is left as it is: pick another output folder")
    for path in (model_path, base_path):
        if not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(f"no model folder at {path} (config.json missing)")
    model_id, base_id = model_id_for(model_path), model_id_for(base_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    base = AutoModelForCausalLM.from_pretrained(base_path)
    if type(model) is not type(base):
        raise ValueError(f"cannot merge a {type(model).__name__} with a {type(base).__name__}")
    merge_weights(model, base, base_share)
    card = {"model_id": f"merged-{ids.content_hash('merge', model_id, base_id, base_share)}", "kind": "merged",
            "parent_id": model_id, "merged_with": base_id, "base_share": base_share,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    save_checkpoint(model, AutoTokenizer.from_pretrained(model_path), output,
                    f"Flywheel model: {model_id} merged with {base_id}", card)
    return card
