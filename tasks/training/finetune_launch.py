"""SFT as a standalone job that `accelerate launch` can start on one or several processes.

The only argument is a JSON file:

    {"model": "path/to/start/model",            # a transformers model folder
     "examples": "path/to/examples.parquet",    # or .jsonl: prompt, completion, weight (optional) columns
     "output": "path/to/new/model",
     "train": {"max_steps": 200, "batch_size": 32, "lora_r": 16}}   # TrainConfig fields

Every process trains on its shard of each global batch (tasks.training.finetune.train); the main process
alone writes the output folder, a plain transformers model (LoRA adapters merged) with its card.

    python -m tasks.training.finetune_launch args.json                    # one process
    accelerate launch --multi_gpu --num_processes 2 -m tasks.training.finetune_launch args.json

On a machine without GPUs the second line starts CPU processes that train together over gloo:
`accelerate launch --cpu` starts a single process unless MPI is set up (`--mpirun_hostfile`).
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from tasks.training.checkpoints import save_checkpoint
from tasks.training.finetune import Example, TrainConfig, TrainResult, train

ARG_KEYS = {"model", "examples", "output", "train"}


@dataclass(frozen=True)
class LaunchArgs:
    """What one launched finetuning job reads, trains and writes."""

    model: Path
    examples: Path
    output: Path
    train: TrainConfig


def read_args(path: str | Path) -> LaunchArgs:
    """Parse and check the JSON argument file."""
    values = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object with keys {sorted(ARG_KEYS)}")
    missing, unknown = {"model", "examples", "output"} - set(values), set(values) - ARG_KEYS
    if missing or unknown:
        raise ValueError(f"{path}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    return LaunchArgs(Path(values["model"]), Path(values["examples"]), Path(values["output"]),
                      TrainConfig(**values.get("train", {})))


def read_examples(path: str | Path) -> list[Example]:
    """Examples from a parquet or JSON-lines file with prompt, completion and optional weight columns."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    elif path.suffix in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        raise ValueError(f"{path}: examples must be a .parquet or .jsonl file")
    return [_example(row, index, path) for index, row in enumerate(rows)]


def _example(row: dict, index: int, path: Path) -> Example:
    if not isinstance(row.get("prompt"), str) or not isinstance(row.get("completion"), str):
        raise ValueError(f"{path}: row {index} needs string prompt and completion columns")
    weight = row.get("weight")
    return Example(row["prompt"], row["completion"], 1.0 if weight is None else float(weight))


def run(args: LaunchArgs) -> TrainResult:
    """Train the start model on the examples; the main process saves it. Returns the training result."""
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.generation.generate import model_id_for
    from tasks.lake import ids

    examples = read_examples(args.examples)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    result = train(model, tokenizer, examples, args.train)
    state = PartialState()
    if state.is_main_process:
        start_id = model_id_for(args.model)
        card = {
            "model_id": "ft-" + ids.content_hash("finetune-launch", start_id, [asdict(e) for e in examples],
                                                 asdict(args.train)),
            "kind": "finetuned", "start_model_id": start_id, "start_path": str(args.model),
            "examples": len(examples), "examples_path": str(args.examples), "train": result.summary(),
            "train_config": asdict(args.train), "lora": args.train.lora_card(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        save_checkpoint(model, tokenizer, args.output, "Flywheel finetuned checkpoint", card)
    state.wait_for_everyone()
    return result


def main(argv: list[str] | None = None) -> None:
    """Entry point: `python -m tasks.training.finetune_launch ARGS.json` (also under `accelerate launch`)."""
    import logging

    from accelerate import PartialState

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m tasks.training.finetune_launch ARGS.json")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run(read_args(argv[0]))
    PartialState().destroy_process_group()


if __name__ == "__main__":
    main()
