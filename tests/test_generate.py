"""Generation: vLLM (the real engine, once per session), HF, and the stage's resume logic."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from schemas.generation import EngineConfig, PromptFormat, SamplingConfig
from tasks.generation.generate import (Completion, GenerationError, HFBackend, LazyBackend, check_model_folder,
                            context_length, generate_candidates, generation_hash, model_id_for,
                            split_steps, start_backend, step_token_ends)
from tasks.lake import ids
from tasks.prompts.demo_task import make_splits
from tasks.lake.store import Lake
from tasks.prompts.sources import demo_prompt_rows

FMT = PromptFormat()


def demo_prompts(count: int) -> list[dict]:
    rows = demo_prompt_rows(make_splits(10, count, 4, seed=3))
    return [r for r in rows if r["split"] == "train"][:count]


class CountingBackend:
    """Wraps a backend and records every prompt it was asked to generate for."""

    def __init__(self, inner):
        self.inner, self.name, self.tokenizer = inner, inner.name, getattr(inner, "tokenizer", None)
        self.calls: list[int] = []

    def generate(self, prompts, sampling, seeds):
        self.calls.append(len(prompts))
        return self.inner.generate(prompts, sampling, seeds)

    def close(self):
        pass


def test_split_steps_and_token_ends():
    steps = split_steps("7+5=12\n\n12*3=36\n#### 36")
    assert steps == [("7+5=12", 6), ("12*3=36", 15), ("#### 36", 23)]
    # one character per token: the token holding char end-1 is at index end-1
    char_ends = list(range(1, 24))
    assert step_token_ends(char_ends, [e for _, e in steps]) == [5, 14, 22]


def test_sampling_config_rejects_bad_values():
    with pytest.raises(ValueError, match="n"):
        SamplingConfig(n=0)
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingConfig(max_tokens=0)
    with pytest.raises(ValueError, match="greedy"):
        SamplingConfig(n=4, temperature=0)
    with pytest.raises(ValueError, match="bogus"):
        SamplingConfig(bogus=1)


def test_missing_model_folder_fails_before_engine(tmp_path: Path):
    with pytest.raises(GenerationError, match="model folder not found"):
        start_backend(tmp_path / "nope", EngineConfig(backend="vllm"))


def test_folder_without_config_is_named(tmp_path: Path):
    (tmp_path / "m").mkdir()
    with pytest.raises(GenerationError, match="no config.json"):
        check_model_folder(tmp_path / "m")


def test_tokenizer_without_eos_is_refused(tiny_model_dir: Path, tmp_path: Path):
    import json
    import shutil
    broken = tmp_path / "no-eos"
    shutil.copytree(tiny_model_dir, broken)
    config = json.loads((broken / "tokenizer_config.json").read_text())
    config.pop("eos_token", None)
    (broken / "tokenizer_config.json").write_text(json.dumps(config))
    special = broken / "special_tokens_map.json"
    if special.exists():
        data = json.loads(special.read_text())
        data.pop("eos_token", None)
        special.write_text(json.dumps(data))
    with pytest.raises(GenerationError, match="no EOS token"):
        check_model_folder(broken)


def test_empty_prompt_set_is_an_error(lake: Lake):
    with pytest.raises(GenerationError, match="no prompts"):
        generate_candidates(lake, CountingBackend(_NeverBackend()), [], model_id="m", iteration=0,
                            sampling=SamplingConfig(), fmt=FMT)


class _NeverBackend:
    name = "never"
    tokenizer = None

    def generate(self, prompts, sampling, seeds):
        raise AssertionError("must not be called")


class _ShortBackend:
    """Returns one completion too few for the last prompt."""
    name = "short"
    tokenizer = None

    def generate(self, prompts, sampling, seeds):
        out = [[Completion("#### 1", [1], None, None, "stop")] * sampling.n for _ in prompts]
        out[-1] = out[-1][:-1]
        return out


def test_wrong_candidate_count_fails_without_writing(lake: Lake):
    with pytest.raises(GenerationError, match="expected n=4"):
        generate_candidates(lake, _ShortBackend(), demo_prompts(3), model_id="m", iteration=0,
                            sampling=SamplingConfig(n=4), fmt=FMT)
    assert lake.shards("candidates") == []


def test_vllm_writes_exactly_n_per_prompt_with_stable_ids(vllm_backend, tiny_model_dir, tmp_path):
    prompts = demo_prompts(12)
    sampling = SamplingConfig(n=4, temperature=1.0, max_tokens=48, seed=7)
    model_id = model_id_for(tiny_model_dir)
    tables = []
    for name in ("a", "b"):
        lake = Lake(tmp_path / name)
        report = generate_candidates(lake, vllm_backend, prompts, model_id=model_id, iteration=0,
                                     sampling=sampling, fmt=FMT, chunk_size=5)
        assert report.candidates_written == 48 and report.chunks_total == 3
        tables.append(lake.read("candidates").sort_by("candidate_id"))
    a, b = tables
    assert a.column("candidate_id").to_pylist() == b.column("candidate_id").to_pylist()
    assert a.column("text").to_pylist() == b.column("text").to_pylist()  # per-request seeds
    counts = {}
    for pid in a.column("prompt_id").to_pylist():
        counts[pid] = counts.get(pid, 0) + 1
    assert counts == {p["prompt_id"]: 4 for p in prompts}
    row = a.slice(0, 1).to_pylist()[0]
    assert row["candidate_id"] == ids.candidate_id(row["prompt_id"], model_id, row["sampling_hash"],
                                                   row["sample_index"])
    assert row["cumulative_logprob"] is not None and row["cumulative_logprob"] < 0
    assert len(row["token_logprobs"]) == row["num_tokens"] == len(row["token_ids"])
    assert abs(sum(row["token_logprobs"]) - row["cumulative_logprob"]) < 1e-3
    assert row["finish_reason"] in ("stop", "length")
    assert len(row["step_token_ends"]) == len(row["steps"])


def test_texts_decoded_after_sampling_are_vllms_own(vllm_backend):
    """The backend samples with detokenize=False and decodes the texts itself: they must be the texts
    vLLM's own detokenizer writes for the same requests, with the same tokens and log-probabilities."""
    from vllm import SamplingParams

    from tasks.generation.generate import format_prompt

    prompts = [format_prompt(p["problem"], FMT) for p in demo_prompts(12)]
    seeds = list(range(100, 112))
    sampling = SamplingConfig(n=4, temperature=1.0, max_tokens=48, seed=0)
    ours = vllm_backend.generate(prompts, sampling, seeds)
    params = [SamplingParams(n=4, temperature=1.0, max_tokens=48, seed=seed, logprobs=1) for seed in seeds]
    theirs = vllm_backend.llm.generate(prompts, params, use_tqdm=False)
    eos = vllm_backend.tokenizer.eos_token_id
    stopped = 0
    for group, output in zip(ours, theirs, strict=True):
        reference = sorted(output.outputs, key=lambda o: o.index)
        assert [c.text for c in group] == [o.text for o in reference]
        assert [c.token_ids for c in group] == [list(o.token_ids) for o in reference]
        assert [c.token_logprobs for c in group] == [
            [p[t].logprob for t, p in zip(o.token_ids, o.logprobs)] for o in reference]
        for completion in group:
            if completion.token_ids and completion.token_ids[-1] == eos:
                stopped += 1
                assert completion.text and vllm_backend.tokenizer.eos_token not in completion.text
    assert stopped > 0  # some samples end at EOS, which the texts leave out


def test_the_cpu_engine_batches_more_sequences_than_vllms_default(vllm_backend):
    from tasks.generation.generate import CPU_MAX_NUM_SEQS

    assert CPU_MAX_NUM_SEQS > 256
    assert vllm_backend.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs == CPU_MAX_NUM_SEQS


def engine_cores() -> set[int]:
    """The pids of the vLLM engine cores this process started that are still running."""
    import psutil

    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "EngineCore" in child.name() and child.status() != psutil.STATUS_ZOMBIE:
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


def wait_for_cores(expected: set[int]) -> set[int]:
    deadline = time.monotonic() + 30
    while engine_cores() != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return engine_cores()


def test_one_engine_runs_in_this_process_at_a_time_and_all_sample_alike(vllm_backend, tiny_model_dir):
    import torch

    from tasks.generation.generate import VLLMBackend

    prompts = [p["problem"] for p in demo_prompts(6)]
    sampling = SamplingConfig(n=3, temperature=1.0, max_tokens=32, seed=5)
    seeds = list(range(40, 46))
    assert EngineConfig().engine_in_process(on_gpu=False) and not EngineConfig().engine_in_process(on_gpu=True)
    with pytest.raises(ValueError, match="in_process: true runs one engine process"):
        EngineConfig(in_process=True, tensor_parallel_size=2)

    session_cores = engine_cores()
    assert len(session_cores) == 1  # the session's engine, in_process: false
    apart = vllm_backend.generate(prompts, sampling, seeds)

    first = VLLMBackend(tiny_model_dir, EngineConfig(backend="vllm"))  # the CPU default: this process
    assert first.in_process and engine_cores() == session_cores
    assert torch.set_num_threads.__module__ == "torch"  # vLLM's guard against it is undone here
    try:
        second = VLLMBackend(tiny_model_dir, EngineConfig(backend="vllm"))  # this process is taken
        try:
            assert not second.in_process and len(engine_cores() - session_cores) == 1
            by_second = second.generate(prompts, sampling, seeds)
        finally:
            second.close()
        assert wait_for_cores(session_cores) == session_cores  # closing it stopped its process
        by_first = first.generate(prompts, sampling, seeds)  # and left the one in this process working
    finally:
        first.close()
    third = VLLMBackend(tiny_model_dir, EngineConfig(backend="vllm"))  # this process is free again
    try:
        assert third.in_process
        by_third = third.generate(prompts, sampling, seeds)
    finally:
        third.close()
    after_all = vllm_backend.generate(prompts, sampling, seeds)  # the session's engine still works

    tokens = [[[c.token_ids for c in group] for group in out]
              for out in (apart, by_first, by_second, by_third, after_all)]
    assert all(t == tokens[0] for t in tokens)
    assert [c.cumulative_logprob for group in by_first for c in group] == pytest.approx(
        [c.cumulative_logprob for group in apart for c in group])


def test_an_in_process_engine_samples_from_any_thread_whatever_its_thread_count(tiny_model_dir):
    """Its CPU kernels must run with the thread count the engine started with (a mismatch aborts
    the step: "Check failed: input->metadata->thread_num == thread_num"); Prefect calls the
    engine from task threads that start with the process default."""
    import threading

    import torch

    from tasks.generation.generate import VLLMBackend

    default = torch.get_num_threads()
    prompts = [p["problem"] for p in demo_prompts(4)]
    sampling = SamplingConfig(n=2, temperature=1.0, max_tokens=24, seed=3)
    torch.set_num_threads(1)
    try:
        backend = VLLMBackend(tiny_model_dir, EngineConfig(backend="vllm"))
        try:
            assert backend.in_process
            outputs, counts = [], []

            def sample() -> None:  # a fresh thread: torch has not set its OpenMP thread count yet
                outputs.append(backend.generate(prompts, sampling, [1, 2, 3, 4]))
                counts.append(torch.get_num_threads())

            worker = threading.Thread(target=sample, daemon=True)
            worker.start()
            worker.join(timeout=120)
            assert not worker.is_alive(), "sampling from another thread hung"
            torch.set_num_threads(default)
            outputs.append(backend.generate(prompts, sampling, [1, 2, 3, 4]))
        finally:
            backend.close()
    finally:
        torch.set_num_threads(default)
    assert len(outputs) == 2 and all(len(group) == 2 for group in outputs[0])
    assert [[c.token_ids for c in g] for g in outputs[0]] == [[c.token_ids for c in g] for g in outputs[1]]
    assert counts == [1]  # the calling thread's count is torch's (1 here) after the call too


def test_rerun_after_partial_run_generates_only_missing_chunks(vllm_backend, tiny_model_dir, lake):
    prompts = demo_prompts(9)
    sampling = SamplingConfig(n=2, temperature=1.0, max_tokens=32, seed=1)
    model_id = model_id_for(tiny_model_dir)
    first = generate_candidates(lake, vllm_backend, prompts, model_id=model_id, iteration=0,
                                sampling=sampling, fmt=FMT, chunk_size=3)
    assert first.chunks_total == 3 and first.chunks_skipped == 0
    before = lake.read("candidates").sort_by("candidate_id")
    lake.shards("candidates")[1].unlink()  # a crash lost one chunk
    counting = CountingBackend(vllm_backend)
    second = generate_candidates(lake, counting, prompts, model_id=model_id, iteration=0,
                                 sampling=sampling, fmt=FMT, chunk_size=3)
    assert counting.calls == [3]
    assert second.chunks_skipped == 2 and second.candidates_written == 6
    after = lake.read("candidates").sort_by("candidate_id")
    assert after.column("candidate_id").to_pylist() == before.column("candidate_id").to_pylist()
    counting.calls.clear()
    generate_candidates(lake, counting, prompts, model_id=model_id, iteration=0,
                        sampling=sampling, fmt=FMT, chunk_size=3)
    assert counting.calls == []


def test_another_engine_never_reuses_the_samples_of_the_default_one(vllm_backend, tiny_model_dir, lake):
    """Candidate ids name the engine when it is not the default (vLLM, dtype auto): the same model,
    prompts and sampling on the HF backend are other samples, generated anew, not vLLM's reused."""
    prompts = demo_prompts(4)
    sampling = SamplingConfig(n=2, temperature=1.0, max_tokens=24, seed=5)
    model_id = model_id_for(tiny_model_dir)
    on_vllm = generate_candidates(lake, vllm_backend, prompts, model_id=model_id, iteration=0,
                                  sampling=sampling, fmt=FMT)
    hf = HFBackend(tiny_model_dir, EngineConfig(backend="hf"))
    on_hf = generate_candidates(lake, hf, prompts, model_id=model_id, iteration=0, sampling=sampling, fmt=FMT)
    assert on_vllm.candidates_written == on_hf.candidates_written == 8 and on_hf.chunks_skipped == 0
    rows = lake.read("candidates").to_pylist()
    by_hash = {h: sum(r["sampling_hash"] == h for r in rows) for h in {r["sampling_hash"] for r in rows}}
    assert by_hash == {generation_hash(sampling, FMT, "\n", EngineConfig()): 8,
                       generation_hash(sampling, FMT, "\n", EngineConfig(backend="hf")): 8}
    # a rerun on either engine finds its own samples
    again = generate_candidates(lake, hf, prompts, model_id=model_id, iteration=0, sampling=sampling, fmt=FMT)
    assert again.candidates_written == 0


def test_the_default_engine_keeps_the_ids_lakes_already_have():
    """The default engine adds nothing to the generation hash (every existing candidate id stays);
    another backend or an explicit dtype each give another hash."""
    sampling = SamplingConfig(n=2, temperature=1.0, max_tokens=24, seed=5)
    before = ids.sampling_hash({"sampling": sampling.model_dump(), "format": FMT.model_dump(), "step_separator": "\n"})
    assert generation_hash(sampling, FMT, "\n", EngineConfig()) == before
    assert generation_hash(sampling, FMT, "\n", EngineConfig(max_num_seqs=8, in_process=False)) == before
    others = {generation_hash(sampling, FMT, "\n", EngineConfig(**e)) for e in
              ({"backend": "hf"}, {"backend": "hf", "dtype": "bfloat16"}, {"dtype": "bfloat16"},
               {"backend": "openai", "base_url": "http://127.0.0.1:1/v1"})}
    assert len(others) == 4 and before not in others
    # a loop round names its candidates with its config's engine (what its LazyBackend starts)
    from schemas.config import parse_config
    from schemas.loop import LoopConfig
    from tasks.rounds.context import round_sampling_hash

    loop = lambda engine: parse_config({"run_id": "r", "generation": {"engine": engine}}, LoopConfig)  # noqa: E731
    assert round_sampling_hash(loop({"backend": "hf"})) == generation_hash(
        loop({}).generation.sampling, loop({}).generation.format, "\n", EngineConfig(backend="hf"))
    assert round_sampling_hash(loop({"backend": "hf"})) != round_sampling_hash(loop({}))
    assert round_sampling_hash(loop({"in_process": False})) == round_sampling_hash(loop({}))


def test_hf_backend_loads_the_same_folder(tiny_model_dir, lake):
    backend = HFBackend(tiny_model_dir, EngineConfig(backend="hf", hf_batch_size=16))
    prompts = demo_prompts(5)
    report = generate_candidates(lake, backend, prompts, model_id="m", iteration=0,
                                 sampling=SamplingConfig(n=3, max_tokens=32), fmt=FMT)
    assert report.candidates_written == 15
    rows = lake.read("candidates").to_pylist()
    for row in rows:
        assert len(row["token_logprobs"]) == row["num_tokens"]
        if row["finish_reason"] == "stop":
            assert row["token_ids"][-1] == backend.tokenizer.eos_token_id


def test_token_char_ends_match_the_decoded_text():
    from tasks.generation.generate import token_char_ends
    from tasks.prompts.tiny_model import build_tokenizer
    tokenizer = build_tokenizer()
    text = "7+5=12\n12*3=36\n#### 36"
    token_ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    for _ in range(2):  # the second call is served from the per-tokenizer cache
        ends = token_char_ends(tokenizer, token_ids)
        assert ends == [*range(1, len(text) + 1), len(text)]  # EOS decodes to nothing


def test_a_prompt_that_cannot_fit_is_refused_before_the_engine_starts(tmp_path: Path, tiny_model_dir: Path):
    """Prompt tokens + max_tokens are checked against the context (the model's positions, or the
    engine's max_model_len) for every prompt before any engine starts; the prompt is named."""
    import json

    positions = json.loads((tiny_model_dir / "config.json").read_text())["max_position_embeddings"]
    assert context_length(tiny_model_dir, EngineConfig()) == positions
    assert context_length(tiny_model_dir, EngineConfig(max_model_len=16)) == 16
    lake = Lake(tmp_path / "lake")
    prompts = demo_prompts(3)
    prompts[2] = {**prompts[2], "problem": "1+" * positions + "1"}
    sampling = SamplingConfig(n=1, max_tokens=8)
    backend = LazyBackend(tiny_model_dir, EngineConfig(backend="hf"))
    pattern = (rf"prompt {prompts[2]['prompt_id']}: \d+ prompt tokens \+ max_tokens 8 exceed the "
               rf"model's context of {positions} tokens")
    with pytest.raises(GenerationError, match=pattern):
        generate_candidates(lake, backend, prompts, model_id="m", iteration=0, sampling=sampling,
                            fmt=FMT, chunk_size=1)  # the long prompt is in the last chunk
    assert not backend.started and lake.shards("candidates") == []
    short = LazyBackend(tiny_model_dir, EngineConfig(backend="hf", max_model_len=16))
    with pytest.raises(GenerationError, match="exceed the model's context of 16 tokens"):
        generate_candidates(lake, short, prompts[:2], model_id="m", iteration=0, sampling=sampling, fmt=FMT)
    assert not short.started and lake.shards("candidates") == []
