"""Generation benchmark: tokens/s of raw vLLM, Flywheel's generate stage on vLLM, and HF `generate`,
side by side in one run, at two model sizes (the demo model and a ~25M-parameter model of the same
architecture with random weights).

For each model: one vLLM engine is started (its start time is reported), warmed up, then timed on
(a) raw `vllm.LLM.generate` with one `SamplingParams(n, temperature 1, max_tokens, seed, logprobs=1)`
per prompt and (b) `generate_candidates` with a `VLLMBackend` into a temporary lake, shards included
((a) and (b) alternate `--repeats` times, the fastest of each is kept); the engine is closed, then
(c) `HFBackend.generate` runs at a few `hf_batch_size` values and the best is kept. Every figure
counts the tokens actually generated (EOS included when a sample stops there).

Random-weight models are saved with EOS suppressed (see `suppress_eos`), so every sample runs to
max_tokens in all three runs and the comparison is like for like; their raw vLLM run also sets
`ignore_eos=True` (a no-op then). The trained demo model stops at EOS, so its raw run does not.

Usage: python bench/generation.py [--quick] [--demo-prompts 256] [--big-prompts 64]
           [--big-shape 512,8,8,1408] [--hf-batch-sizes 128,512,2048] [--repeats 2] [--n 8] [--max-tokens 64]
Last line: `vllm/hf throughput ratio: <x>` for the big model (raw vLLM tokens/s / best HF tokens/s;
target at least 3). Second target: the stage within 10% of raw vLLM.
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Before vLLM or transformers are imported (the engine's spawned processes inherit these too).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from schemas.generation import EngineConfig, PromptFormat, SamplingConfig  # noqa: E402
from tasks.generation.generate import (  # noqa: E402
    HFBackend, VLLMBackend, format_prompt, generate_candidates, model_id_for, request_seed,
)
from tasks.prompts.demo_task import make_splits  # noqa: E402
from tasks.lake.store import Lake  # noqa: E402
from tasks.prompts.sources import demo_prompt_rows  # noqa: E402
from tasks.prompts.tiny_model import TinyModelConfig, build_model, build_tokenizer  # noqa: E402

DEMO_MODEL = ROOT / "data" / "models" / "base"
QUICK_BIG_SHAPE = "128,2,4,256"  # head_dim 32, about 0.4M parameters
STAGE_TARGET = 0.90  # the stage's tokens/s at least 90% of raw vLLM's
RATIO_TARGET = 3.0  # raw vLLM tokens/s at least 3x the best HF tokens/s (big model)


@dataclass
class Run:
    """One timed generation run."""

    model: str
    run: str
    ignore_eos: bool
    prompts: int
    sequences: int
    tokens: int
    eos_stops: int  # samples that ended at EOS rather than at max_tokens
    seconds: float
    note: str = ""

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second."""
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class ModelResult:
    """Everything measured for one model size."""

    label: str
    parameters: int
    random_weights: bool
    engine_start_s: float
    raw: Run
    stage: Run
    hf_runs: list[Run]

    @property
    def best_hf(self) -> Run:
        """The HF run with the highest tokens/s."""
        return max(self.hf_runs, key=lambda r: r.tokens_per_s)


# -- models and prompts ---------------------------------------------------------------------------
def parse_shape(text: str) -> TinyModelConfig:
    """`HIDDEN,LAYERS,HEADS,INTERMEDIATE` as a TinyModelConfig."""
    hidden, layers, heads, intermediate = (int(part) for part in text.split(","))
    return TinyModelConfig(hidden_size=hidden, num_layers=layers, num_heads=heads,
                           intermediate_size=intermediate)


def suppress_eos(model: "object", eos_id: int) -> None:
    """Make a random-weight Llama practically never sample EOS (its log-probability drops below -60).

    A random model samples EOS about once per 100 tokens, so roughly 40% of 64-token samples would
    stop early, and HF's batches keep stepping until their last sample ends: tokens/s would then
    compare unlike work. Here dimension 0 of the residual stream is held at 1 for every input token
    (embeddings set to 1 there, no attention or MLP output writes to it), the final norm scales it up,
    and EOS's (tied) output row reads it with the opposite sign. The arithmetic per token is unchanged.
    """
    import torch

    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight  # tied with lm_head
        embeddings[:, 0] = 1.0
        embeddings[eos_id, 0] = -1.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0].zero_()
            layer.mlp.down_proj.weight[0].zero_()
        model.model.norm.weight[0] = 20.0


def save_random_model(folder: Path, shape: TinyModelConfig, seed: int = 0) -> Path:
    """Build a random tiny Llama with the char tokenizer, EOS suppressed, and save it (model + tokenizer)."""
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, shape, seed)
    suppress_eos(model, tokenizer.eos_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def parameter_count(folder: Path) -> int:
    """Parameters stored in a model folder's safetensors files (tied weights count once)."""
    from safetensors import safe_open

    total = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                total += math.prod(handle.get_slice(key).get_shape())
    return total


def benchmark_prompts(count: int, seed: int = 0) -> list[dict]:
    """`count` demo-task prompt rows (train split), sorted by prompt id like the stage sorts them."""
    rows = demo_prompt_rows(make_splits(n_pretrain=0, n_train=count, n_eval=0, seed=seed))
    return sorted(rows, key=lambda r: r["prompt_id"])[:count]


# -- the runs -------------------------------------------------------------------------------------
def bench_vllm(label: str, folder: Path, rows: list[dict], sampling: SamplingConfig, fmt: PromptFormat,
               ignore_eos: bool, work: Path, repeats: int = 1) -> tuple[float, Run, Run]:
    """Start one engine, warm it up, then time raw `LLM.generate` and the generate stage `repeats`
    times each (alternating, a fresh lake each time) and keep the fastest of each. Closes the engine."""
    from vllm import SamplingParams

    started = time.perf_counter()
    backend = VLLMBackend(folder, EngineConfig(backend="vllm"))
    engine_start_s = time.perf_counter() - started
    try:
        texts = [format_prompt(row["problem"], fmt) for row in rows]
        # Warm-up at the full batch shape but few tokens; it also fills the prefix cache for both timed
        # runs alike. The first timed call was still often slower than the next (hence --repeats).
        warm = [SamplingParams(n=sampling.n, temperature=1.0, max_tokens=min(16, sampling.max_tokens),
                               seed=index + 1, logprobs=1, ignore_eos=True) for index in range(len(rows))]
        backend.llm.generate(texts, warm, use_tqdm=False)

        params = [SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                 max_tokens=sampling.max_tokens, seed=request_seed(sampling.seed, row["prompt_id"]),
                                 logprobs=1, ignore_eos=ignore_eos)
                  for row in rows]
        raw_runs, stage_runs = [], []
        for attempt in range(repeats):
            t0 = time.perf_counter()
            outputs = backend.llm.generate(texts, params, use_tqdm=False)
            raw_s = time.perf_counter() - t0
            samples = [sample for output in outputs for sample in output.outputs]
            raw_runs.append(Run(label, "(a) raw vllm.LLM.generate", ignore_eos, len(rows), len(samples),
                                sum(len(s.token_ids) for s in samples),
                                sum(s.finish_reason == "stop" for s in samples), raw_s))

            lake = Lake(work / f"lake-{label}-{attempt}")
            t0 = time.perf_counter()
            report = generate_candidates(lake, backend, rows, model_id=model_id_for(folder), iteration=0,
                                         sampling=sampling, fmt=fmt)
            stage_s = time.perf_counter() - t0
            written = read_candidates(lake)
            if written["tokens"] != report.tokens or written["rows"] != report.candidates_written:
                raise RuntimeError(f"shards hold {written} but the stage reported {report}")
            stage_runs.append(Run(
                label, "(b) Flywheel generate stage", False, len(rows), report.candidates_written,
                report.tokens, written["eos_stops"], stage_s,
                note=f"engine call {report.engine_seconds:.2f} s, {len(lake.shards('candidates'))} shard(s)"))
    finally:
        backend.close()
        gc.collect()
    raw, stage = (max(runs, key=lambda r: r.tokens_per_s) for runs in (raw_runs, stage_runs))
    if repeats > 1:
        for run, runs in ((raw, raw_runs), (stage, stage_runs)):
            run.note = ", ".join(filter(None, [f"best of {repeats}: "
                                               + "/".join(f"{r.tokens_per_s:,.0f}" for r in runs), run.note]))
    return engine_start_s, raw, stage


def read_candidates(lake: Lake) -> dict[str, int]:
    """Rows, tokens and EOS stops in the candidate shards the stage wrote."""
    import pyarrow.parquet as pq

    rows = tokens = stops = 0
    for shard in lake.shards("candidates"):
        table = pq.read_table(shard, columns=["num_tokens", "finish_reason"])
        rows += table.num_rows
        tokens += sum(table.column("num_tokens").to_pylist())
        stops += sum(reason == "stop" for reason in table.column("finish_reason").to_pylist())
    return {"rows": rows, "tokens": tokens, "eos_stops": stops}


def bench_hf(label: str, folder: Path, rows: list[dict], sampling: SamplingConfig, fmt: PromptFormat,
             batch_sizes: list[int]) -> list[Run]:
    """Time `HFBackend.generate` on all prompts once per effective batch size (sequences per batch)."""
    total = len(rows) * sampling.n
    effective = sorted({min(size, total) for size in batch_sizes})
    backend = HFBackend(folder, EngineConfig(backend="hf", hf_batch_size=effective[0]))
    texts = [format_prompt(row["problem"], fmt) for row in rows]
    seeds = [request_seed(sampling.seed, row["prompt_id"]) for row in rows]
    runs = []
    try:
        backend.generate(texts[:2], sampling.model_copy(update={"max_tokens": 8}), seeds[:2])  # warm-up
        for size in effective:
            backend.batch_size = size
            t0 = time.perf_counter()
            results = backend.generate(texts, sampling, seeds)
            seconds = time.perf_counter() - t0
            samples = [c for completions in results for c in completions]
            runs.append(Run(label, f"(c) HF generate, batch {size}", False, len(rows), len(samples),
                            sum(len(c.token_ids) for c in samples),
                            sum(c.finish_reason == "stop" for c in samples), seconds))
    finally:
        backend.close()
        gc.collect()
    return runs


def bench_model(label: str, folder: Path, random_weights: bool, prompts: int, sampling: SamplingConfig,
                hf_batch_sizes: list[int], work: Path, repeats: int) -> ModelResult:
    """All three runs for one model size."""
    fmt = PromptFormat()
    rows = benchmark_prompts(prompts)
    params = parameter_count(folder)
    print(f"[{label}] {folder} ({params / 1e6:.2f}M parameters, {'random' if random_weights else 'trained'} "
          f"weights), {len(rows)} prompts x n={sampling.n}, max_tokens={sampling.max_tokens}", flush=True)
    engine_s, raw, stage = bench_vllm(label, folder, rows, sampling, fmt, ignore_eos=random_weights,
                                      work=work, repeats=repeats)
    print(f"[{label}] engine start {engine_s:.1f} s; raw {raw.tokens_per_s:,.0f} tok/s; "
          f"stage {stage.tokens_per_s:,.0f} tok/s", flush=True)
    hf_runs = bench_hf(label, folder, rows, sampling, fmt, hf_batch_sizes)
    for run in hf_runs:
        print(f"[{label}] {run.run}: {run.tokens_per_s:,.0f} tok/s", flush=True)
    return ModelResult(label, params, random_weights, engine_s, raw, stage, hf_runs)


# -- report ---------------------------------------------------------------------------------------
def print_table(results: list[ModelResult]) -> None:
    """The side-by-side table, then the targets."""
    header = (f"{'model':<10} {'run':<30} {'ignore_eos':>10} {'prompts x n':>11} {'tokens':>8} "
              f"{'EOS stops':>9} {'seconds':>8} {'tokens/s':>9} {'vs raw':>7}  note")
    print()
    print(header)
    print("-" * len(header))
    for result in results:
        best = result.best_hf
        for run in [result.raw, result.stage, *result.hf_runs]:
            mark = " (best HF)" if run is best and len(result.hf_runs) > 1 else ""
            print(f"{run.model:<10} {run.run:<30} {'yes' if run.ignore_eos else 'no':>10} "
                  f"{f'{run.prompts} x {run.sequences // max(run.prompts, 1)}':>11} {run.tokens:>8,} "
                  f"{run.eos_stops:>9,} {run.seconds:>8.2f} {run.tokens_per_s:>9,.0f} "
                  f"{run.tokens_per_s / result.raw.tokens_per_s:>6.0%}  {run.note}{mark}")
    print()
    for result in results:
        stage_share = result.stage.tokens_per_s / result.raw.tokens_per_s
        ratio = result.raw.tokens_per_s / result.best_hf.tokens_per_s
        print(f"{result.label}: {result.parameters / 1e6:.2f}M parameters, engine start {result.engine_start_s:.1f} s; "
              f"stage at {stage_share:.0%} of raw vLLM (target >= {STAGE_TARGET:.0%}: "
              f"{'met' if stage_share >= STAGE_TARGET else 'MISSED'}); raw vLLM / best HF {ratio:.2f}x"
              + (f" (target >= {RATIO_TARGET:g}: {'met' if ratio >= RATIO_TARGET else 'MISSED'})"
                 if result is results[-1] else ""))
    print("Random-weight models were saved with EOS suppressed, so all their runs generate max_tokens; "
          "only raw vLLM on them sets ignore_eos. Tokens/s = generated tokens / wall seconds of the call "
          "(the stage's seconds include building rows and writing shards).")


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"16 prompts per model and a small big model ({QUICK_BIG_SHAPE}): checks the script runs")
    parser.add_argument("--demo-prompts", type=int, default=256)
    parser.add_argument("--big-prompts", type=int, default=64)
    parser.add_argument("--big-shape", default="512,8,8,1408",
                        help="HIDDEN,LAYERS,HEADS,INTERMEDIATE of the random big model (default: 25.75M parameters)")
    parser.add_argument("--hf-batch-sizes", default="128,512,2048",
                        help="hf_batch_size values (sequences per batch) to try; the best is reported")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2,
                        help="time raw vLLM and the stage this many times each (alternating) and keep the fastest")
    parser.add_argument("--demo-model", default=str(DEMO_MODEL),
                        help="trained demo model folder (a random one of the demo shape when missing)")
    args = parser.parse_args()
    if args.quick:
        args.demo_prompts, args.big_prompts, args.big_shape = 16, 16, QUICK_BIG_SHAPE
        args.hf_batch_sizes = "32,128"

    sampling = SamplingConfig(n=args.n, temperature=1.0, max_tokens=args.max_tokens)
    batch_sizes = [int(size) for size in args.hf_batch_sizes.split(",")]
    big_shape = parse_shape(args.big_shape)
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-gen-") as tmp:
        work = Path(tmp)
        demo_folder = Path(args.demo_model)
        demo_random = not (demo_folder / "config.json").is_file()
        if demo_random:
            print(f"{demo_folder} not found: using a random model of the demo shape", flush=True)
            demo_folder = save_random_model(work / "demo-random", TinyModelConfig())
        big_folder = save_random_model(work / "big-random", big_shape)
        results = [
            bench_model("demo", demo_folder, demo_random, args.demo_prompts, sampling, batch_sizes, work,
                        args.repeats),
            bench_model("big", big_folder, True, args.big_prompts, sampling, batch_sizes, work, args.repeats),
        ]
    print_table(results)
    big = results[-1]
    print(f"vllm/hf throughput ratio: {big.raw.tokens_per_s / big.best_hf.tokens_per_s:.2f}")


if __name__ == "__main__":
    main()
