"""What the engine benches share: vLLM's CPU settings, the demo model and demo problems as requests.

Imported by the scripts beside it (`python bench/<script>.py` puts bench/ on the path); importing
it sets the environment before vLLM is imported and puts the repository on the path.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from schemas.generation import PromptFormat  # noqa: E402
from tasks.generation.generate import format_prompt, request_seed  # noqa: E402
from tasks.prompts.demo_task import make_splits  # noqa: E402
from tasks.prompts.sources import demo_prompt_rows  # noqa: E402

DEMO_MODEL = ROOT / "data" / "models" / "base"


def require_model(model: Path) -> None:
    """Exit with a one-line message when `model` is not a model folder."""
    if not (model / "config.json").is_file():
        sys.exit(f"no model at {model}: run `make demo` or `flywheel bootstrap` first")


def demo_requests(split: str, n_pretrain: int, n_train: int, n_eval: int) -> tuple[list[str], list[int]]:
    """The prompts (demo format) and per-request seeds of one split of the demo task's problems
    drawn with these split sizes (seed 0)."""
    rows = [r for r in demo_prompt_rows(make_splits(n_pretrain, n_train, n_eval, seed=0)) if r["split"] == split]
    fmt = PromptFormat()
    return [format_prompt(r["problem"], fmt) for r in rows], [request_seed(0, r["prompt_id"]) for r in rows]
