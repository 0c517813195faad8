"""Model folders on disk: saved atomically with their card, never replaced by another model."""
from __future__ import annotations

import json
from pathlib import Path

from tasks.runtime.faults import crash_point


def write_model_card(folder: Path, title: str, sections: dict) -> Path:
    """Write README.md (human) and flywheel_card.json (machine) describing a checkpoint."""
    folder = Path(folder)
    lines = [f"# {title}", ""]
    for key, value in sections.items():
        rendered = json.dumps(value, indent=2, default=str) if isinstance(value, (dict, list)) else value
        lines += [f"## {key}", "", f"```\n{rendered}\n```" if isinstance(value, (dict, list)) else str(rendered), ""]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")
    card = folder / "flywheel_card.json"
    card.write_text(json.dumps(sections, indent=2, default=str), encoding="utf-8")
    return card


def save_checkpoint(model, tokenizer, output: Path, title: str, card: dict) -> Path:
    """Save a plain transformers model folder with its card, atomically (staging folder, then rename)."""
    import shutil

    output = Path(output)
    staging = output.with_name(f".{output.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    write_model_card(staging, title, card)
    output.parent.mkdir(parents=True, exist_ok=True)
    crash_point("save-checkpoint")
    try:
        staging.rename(output)  # never replaces a folder: a checkpoint is not deleted to make room
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise CheckpointConflict(f"cannot save the checkpoint: {output} already exists "
                                 f"({error.strerror}); it is left as it is") from None
    return output.resolve()


class CheckpointConflict(RuntimeError):
    """A checkpoint folder already holds a model trained from other inputs; nothing is deleted."""


def refuse_other_checkpoint(output: Path, model_id: str, inputs: dict, what: str) -> None:
    """Raise CheckpointConflict when `output` exists but does not hold `model_id`, naming the input
    that differs (from the card's recorded inputs) so the user can pick a new run id instead."""
    if not output.exists():
        return
    card_path = output / "flywheel_card.json"
    try:
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    except ValueError:
        card = {}
    if card.get("model_id") == model_id:
        return
    recorded = card.get("inputs") or {}
    differing = [name for name in inputs if name in recorded and recorded[name] != inputs[name]]
    why = (f"its {', '.join(differing)} differ" if differing
           else "it was trained from other inputs" if card else "it is not a Flywheel checkpoint")
    raise CheckpointConflict(
        f"{what}: {output} already holds model {card.get('model_id', '?')} and {why}; these inputs make "
        f"{model_id}. The folder is kept: use a new run_id, or move the folder away to train again")
