"""Data integrity of generation (issue #14): resume per candidate whatever the chunking, samples
that depend only on their own seed in every backend, and model ids that are content ids."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from schemas.generation import EngineConfig, PromptFormat, SamplingConfig
from tasks.generation.generate import (Completion, HFBackend, OpenAIBackend, generate_candidates, generation_chunks,
                            model_id_for, request_seed)
from tasks.lake import ids
from tasks.prompts.demo_task import make_splits
from tasks.lake.store import Lake
from tasks.prompts.sources import demo_prompt_rows
from tasks.runtime.runners import group_units

FMT = PromptFormat()


def demo_prompts(count: int) -> list[dict]:
    """`count` train prompts of the demo task, in prompt_id order."""
    rows = demo_prompt_rows(make_splits(10, count, 4, seed=3))
    return sorted([r for r in rows if r["split"] == "train"][:count], key=lambda r: r["prompt_id"])


def fake_text(prompt: str, seed: int) -> str:
    """What the fake backend samples for a prompt under one per-sample seed."""
    return "#### " + hashlib.sha256(f"{seed}|{prompt}".encode()).hexdigest()[:12]


class SeededFakeBackend:
    """A deterministic backend with vLLM's seeding rule: sample i of a request seeded s is a
    function of the prompt and s + i only. Records every call as (prompts, n, seeds)."""

    name = "fake"
    tokenizer = None

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], int, list[int]]] = []

    def generate(self, prompts, sampling, seeds):
        self.calls.append((list(prompts), sampling.n, list(seeds)))
        return [[Completion(fake_text(p, s + i), [1, 2, 3], [-0.5] * 3, -1.5, "stop") for i in range(sampling.n)]
                for p, s in zip(prompts, seeds)]

    def close(self) -> None:
        pass

    def requested(self) -> int:
        """Samples asked for over all calls."""
        return sum(len(prompts) * n for prompts, n, _ in self.calls)


def rows_by_id(lake: Lake) -> dict[str, dict]:
    """The lake's candidate rows by candidate id; fails on a duplicated id."""
    rows = lake.read("candidates").to_pylist()
    counts = Counter(r["candidate_id"] for r in rows)
    assert [cid for cid, k in counts.items() if k > 1] == [], "a candidate id is in the lake twice"
    return {r["candidate_id"]: r for r in rows}


def drop_rows(shard: Path, keep) -> list[dict]:
    """Rewrite one shard in place (same name) keeping only the rows `keep` accepts; the dropped rows."""
    table = pq.read_table(shard)
    rows = table.to_pylist()
    kept = [r for r in rows if keep(r)]
    pq.write_table(table.from_pylist(kept, schema=table.schema), shard)
    return [r for r in rows if not keep(r)]


SAMPLING = SamplingConfig(n=2, temperature=1.0, max_tokens=24, seed=5)


def run(lake: Lake, backend, prompts: list[dict], chunk_size: int, sampling: SamplingConfig = SAMPLING):
    """generate_candidates with the test's fixed model id and format."""
    return generate_candidates(lake, backend, prompts, model_id="m", iteration=0, sampling=sampling, fmt=FMT,
                               chunk_size=chunk_size)


# -- 1. resume per candidate, whatever the chunking -----------------------------------------------
def test_resume_after_a_lost_shard_with_another_chunk_size_adds_only_the_lost_rows(lake: Lake):
    prompts = demo_prompts(4)
    backend = SeededFakeBackend()
    run(lake, backend, prompts, chunk_size=2)
    before = rows_by_id(lake)
    assert len(before) == 8 and len(lake.shards("candidates")) == 2
    lost = lake.shards("candidates")[0]
    lost_ids = set(pq.read_table(lost, columns=["candidate_id"]).column(0).to_pylist())
    lost.unlink()  # a crash before this shard was written
    backend.calls.clear()
    report = run(lake, backend, prompts, chunk_size=3)
    after = rows_by_id(lake)
    assert lake.read("candidates").num_rows == 8
    assert report.candidates_written == 4 and backend.requested() == 4
    assert after.keys() == before.keys()
    for cid in lost_ids:  # regenerated exactly as before the loss
        assert after[cid]["text"] == before[cid]["text"]
        assert after[cid]["sample_index"] == before[cid]["sample_index"]


def test_adding_a_prompt_that_sorts_between_existing_ones_generates_only_it(lake: Lake):
    prompts = demo_prompts(5)
    newcomer = prompts.pop(2)  # its id sorts between the others
    backend = SeededFakeBackend()
    run(lake, backend, prompts, chunk_size=2)
    before = rows_by_id(lake)
    backend.calls.clear()
    report = run(lake, backend, prompts + [newcomer], chunk_size=2)
    after = rows_by_id(lake)
    assert lake.read("candidates").num_rows == 10 and len(after) == 10
    assert report.candidates_written == 2 and backend.requested() == 2
    assert {r["prompt_id"] for cid, r in after.items() if cid not in before} == {newcomer["prompt_id"]}
    assert all(after[cid]["text"] == row["text"] for cid, row in before.items())


def test_a_partly_done_prompt_generates_only_its_missing_samples_with_their_own_seeds(lake: Lake):
    prompts = demo_prompts(3)
    sampling = SamplingConfig(n=3, temperature=1.0, max_tokens=24, seed=9)
    backend = SeededFakeBackend()
    run(lake, backend, prompts, chunk_size=3, sampling=sampling)
    before = rows_by_id(lake)
    target = prompts[1]["prompt_id"]
    [shard] = lake.shards("candidates")
    dropped = drop_rows(shard, lambda r: not (r["prompt_id"] == target and r["sample_index"] in (0, 2)))
    assert len(dropped) == 2
    backend.calls.clear()
    report = run(lake, backend, prompts, chunk_size=2, sampling=sampling)
    seed = request_seed(sampling.seed, target)
    text = FMT.template.replace("{problem}", prompts[1]["problem"])
    assert backend.calls == [([text, text], 1, [seed, seed + 2])]
    assert report.candidates_written == 2
    assert rows_by_id(lake) == before  # every row, text and index exactly as before


def test_shards_are_named_by_the_candidates_they_hold_and_never_share_one(lake: Lake):
    prompts = demo_prompts(6)
    backend = SeededFakeBackend()
    run(lake, backend, prompts[:4], chunk_size=3)
    lake.shards("candidates")[-1].unlink()
    run(lake, backend, prompts, chunk_size=2)
    seen: set[str] = set()
    for shard in lake.shards("candidates"):
        held = pq.read_table(shard, columns=["candidate_id"]).column(0).to_pylist()
        assert shard.stem == ids.shard_id("candidates", held)
        assert seen.isdisjoint(held)
        seen.update(held)
    assert len(seen) == 12


def test_the_runners_sharding_still_resumes_per_candidate(lake: Lake):
    """flows/loop.py cuts the chunks into runner shards and calls the stage once per shard."""
    prompts = demo_prompts(7)
    backend = SeededFakeBackend()
    for shard in group_units(generation_chunks(prompts[:5], 2), 2):
        run(lake, backend, shard, chunk_size=2)
    before = rows_by_id(lake)
    lost = lake.shards("candidates")[1]
    kept = len(before) - pq.read_metadata(lost).num_rows
    lost.unlink()
    backend.calls.clear()
    reports = [run(lake, backend, shard, chunk_size=3)
               for shard in group_units(generation_chunks(prompts, 3), 3)]
    after = rows_by_id(lake)
    assert len(after) == 14 and lake.read("candidates").num_rows == 14
    assert sum(r.candidates_written for r in reports) == backend.requested() == 14 - kept
    assert all(after[cid]["text"] == row["text"] for cid, row in before.items())
    backend.calls.clear()
    for shard in group_units(generation_chunks(prompts, 1), 4):
        run(lake, backend, shard, chunk_size=1)
    assert backend.calls == []


# -- 2. every backend samples per request -----------------------------------------------------------
def test_vllm_sample_i_is_an_n1_request_seeded_seed_plus_i(vllm_backend):
    """The rule generate_candidates relies on, checked on the real engine."""
    text = FMT.template.replace("{problem}", demo_prompts(1)[0]["problem"])
    sampling = SamplingConfig(n=2, temperature=1.0, max_tokens=24, seed=0)
    single = SamplingConfig(n=1, temperature=1.0, max_tokens=24, seed=0)
    [pair] = vllm_backend.generate([text], sampling, [1234])
    together = vllm_backend.generate([text, text], single, [1234, 1235])
    alone = [vllm_backend.generate([text], single, [seed])[0] for seed in (1234, 1235)]
    expected = [c.token_ids for c in pair]
    assert expected[0] != expected[1]
    assert [c[0].token_ids for c in together] == expected
    assert [c[0].token_ids for c in alone] == expected


def test_vllm_resume_with_another_chunking_gives_the_rows_of_one_uninterrupted_run(vllm_backend, tmp_path):
    prompts = demo_prompts(4)
    whole = Lake(tmp_path / "whole")
    run(whole, vllm_backend, prompts, chunk_size=4)
    resumed = Lake(tmp_path / "resumed")
    run(resumed, vllm_backend, prompts, chunk_size=2)
    first, second = resumed.shards("candidates")
    first.unlink()
    some = pq.read_table(second, columns=["prompt_id"]).column(0)[0].as_py()
    drop_rows(second, lambda r: not (r["prompt_id"] == some and r["sample_index"] == 1))
    report = run(resumed, vllm_backend, prompts, chunk_size=3)
    assert report.candidates_written == 5
    got, want = rows_by_id(resumed), rows_by_id(whole)
    assert got.keys() == want.keys() and len(got) == 8
    for cid, row in want.items():
        assert (got[cid]["token_ids"], got[cid]["text"]) == (row["token_ids"], row["text"]), cid


@pytest.fixture(scope="module")
def hf_backend(tiny_model_dir):
    """An HF backend over the tiny model, small batches."""
    backend = HFBackend(tiny_model_dir, EngineConfig(backend="hf", hf_batch_size=4))
    yield backend
    backend.close()


def test_hf_samples_depend_only_on_their_own_request(hf_backend):
    prompts = [FMT.template.replace("{problem}", p["problem"]) for p in demo_prompts(2)]
    sampling = SamplingConfig(n=2, temperature=1.0, max_tokens=24, seed=0)
    single = SamplingConfig(n=1, temperature=1.0, max_tokens=24, seed=0)
    hf_backend.batch_size = 8
    [alone] = hf_backend.generate([prompts[0]], sampling, [77])
    after_other = hf_backend.generate([prompts[1], prompts[0]], sampling, [5, 77])[1]
    hf_backend.batch_size = 1
    one_per_batch = hf_backend.generate([prompts[1], prompts[0]], sampling, [5, 77])[1]
    per_sample = hf_backend.generate([prompts[0], prompts[0]], single, [77, 78])
    hf_backend.batch_size = 4
    expected = [c.token_ids for c in alone]
    assert expected[0] != expected[1]
    assert [c.token_ids for c in after_other] == expected
    assert [c.token_ids for c in one_per_batch] == expected
    assert [c[0].token_ids for c in per_sample] == expected


def test_hf_resume_and_batch_size_do_not_change_any_candidate(hf_backend, tmp_path):
    prompts = demo_prompts(3)
    sampling = SamplingConfig(n=2, temperature=1.0, max_tokens=24, seed=3)
    whole = Lake(tmp_path / "whole")
    hf_backend.batch_size = 6
    run(whole, hf_backend, prompts, chunk_size=3, sampling=sampling)
    resumed = Lake(tmp_path / "resumed")
    hf_backend.batch_size = 2
    run(resumed, hf_backend, prompts, chunk_size=1, sampling=sampling)
    drop_rows(resumed.shards("candidates")[0], lambda r: r["sample_index"] == 0)
    run(resumed, hf_backend, prompts, chunk_size=2, sampling=sampling)
    hf_backend.batch_size = 4
    got, want = rows_by_id(resumed), rows_by_id(whole)
    assert got.keys() == want.keys() and len(got) == 6
    for cid, row in want.items():
        assert got[cid]["token_ids"] == row["token_ids"], cid
        assert got[cid]["token_logprobs"] == pytest.approx(row["token_logprobs"], abs=1e-4)


def test_hf_sampler_draws_from_the_tempered_nucleus():
    """The per-row sampler against the distribution it must draw from (computed by hand here)."""
    import math

    import torch

    from tasks.generation.generate import _SeededSampler

    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    temperature, top_p, draws = 0.5, 0.9, 4000
    weights = [math.exp(x / temperature) for x in logits.tolist()]
    probs = [w / sum(weights) for w in weights]  # 0.865, 0.117, 0.016, 0.002
    nucleus = [probs[0] / (probs[0] + probs[1]), probs[1] / (probs[0] + probs[1]), 0.0, 0.0]
    sampler = _SeededSampler([torch.Generator().manual_seed(i) for i in range(draws)], temperature, top_p)
    scores = sampler(None, logits.repeat(draws, 1))
    assert torch.isfinite(scores).sum(dim=-1).tolist() == [1] * draws
    counts = Counter(scores.argmax(dim=-1).tolist())
    assert counts[2] == counts[3] == 0
    assert abs(counts[1] / draws - nucleus[1]) < 0.025
    full = _SeededSampler([torch.Generator().manual_seed(i) for i in range(draws)], temperature, 1.0)
    counts = Counter(full(None, logits.repeat(draws, 1)).argmax(dim=-1).tolist())
    for token in range(4):
        assert abs(counts[token] / draws - probs[token]) < 0.025


def test_openai_backend_asks_the_server_only_for_missing_samples_with_their_seeds(lake: Lake):
    """Over HTTP each request carries its own seed; a partly done prompt is asked n=1 per sample."""
    import httpx

    bodies: list[dict] = []

    def serve(request: httpx.Request) -> httpx.Response:  # vLLM's rule: choice i from seed + i
        body = json.loads(request.content)
        bodies.append(body)
        choices = [{"index": i, "text": fake_text(body["prompt"], body["seed"] + i), "finish_reason": "stop",
                    "token_ids": [1], "logprobs": {"token_logprobs": [-0.5]}} for i in range(body["n"])]
        return httpx.Response(200, json={"choices": choices})

    backend = OpenAIBackend(None, EngineConfig(backend="openai", base_url="http://server.test/v1", api_model="m"))
    backend.client = httpx.Client(transport=httpx.MockTransport(serve))
    prompts = demo_prompts(3)
    run(lake, backend, prompts, chunk_size=2)
    before = rows_by_id(lake)
    assert sorted((b["n"], b["seed"]) for b in bodies) == sorted(
        (2, request_seed(SAMPLING.seed, p["prompt_id"])) for p in prompts)
    target = prompts[2]["prompt_id"]
    shard = next(s for s in lake.shards("candidates")
                 if target in pq.read_table(s, columns=["prompt_id"]).column(0).to_pylist())
    drop_rows(shard, lambda r: not (r["prompt_id"] == target and r["sample_index"] == 1))
    bodies.clear()
    run(lake, backend, prompts, chunk_size=3)
    backend.close()
    assert [(b["n"], b["seed"]) for b in bodies] == [(1, request_seed(SAMPLING.seed, target) + 1)]
    assert rows_by_id(lake) == before


# -- 3. model ids are content ids -------------------------------------------------------------------
def model_folder(path: Path, weights: bytes = b"\x00" * 1024, **files: str) -> Path:
    """A minimal model folder: config.json, model.safetensors, tokenizer files; mtimes in the past
    (a digest is cached only for a file not modified in the last seconds)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (path / "model.safetensors").write_bytes(weights)
    defaults = {"tokenizer.json": '{"model": {"vocab": {"a": 0}}}',
                "tokenizer_config.json": '{"eos_token": "<eos>"}'}
    for name, text in {**defaults, **files}.items():
        (path / name).write_text(text)
    age(path)
    return path


def age(folder: Path, seconds: float = 60) -> None:
    """Set every file's mtime `seconds` into the past."""
    past = time.time() - seconds
    for file in folder.iterdir():
        os.utime(file, (past, past))


@pytest.fixture
def cache_home(tmp_path, monkeypatch) -> Path:
    """A private $XDG_CACHE_HOME for the fallback digest cache."""
    home = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


def test_same_size_different_weights_get_different_ids(tmp_path, cache_home):
    zeros = model_folder(tmp_path / "zeros", b"\x00" * 1024)
    ones = model_folder(tmp_path / "ones", b"\x01" * 1024)
    assert model_id_for(zeros) != model_id_for(ones)
    assert model_id_for(zeros) == model_id_for(model_folder(tmp_path / "zeros-again", b"\x00" * 1024))


@pytest.mark.parametrize("name, text", [
    ("tokenizer.json", '{"model": {"vocab": {"b": 0}}}'),
    ("tokenizer_config.json", '{"eos_token": "<eos>", "chat_template": "{{ messages }}"}'),
    ("chat_template.jinja", "{% for m in messages %}{{ m.content }}{% endfor %}"),
    ("special_tokens_map.json", '{"eos_token": "</s>"}'),
    ("generation_config.json", '{"temperature": 0.7}'),
    ("vocab.json", '{"a": 0}'),
    ("merges.txt", "a b"),
])
def test_a_tokenizer_or_chat_template_change_changes_the_id(tmp_path, cache_home, name, text):
    base = model_folder(tmp_path / "base")
    changed = model_folder(tmp_path / "changed", **{name: text})
    assert model_id_for(base) != model_id_for(changed)


def test_a_flywheel_card_still_names_the_model(tmp_path, cache_home):
    folder = model_folder(tmp_path / "m")
    (folder / "flywheel_card.json").write_text(json.dumps({"model_id": "ft-0123456789abcdef"}))
    assert model_id_for(folder) == "ft-0123456789abcdef"


def test_the_weights_digest_is_cached_and_a_changed_file_invalidates_it(tmp_path, cache_home, monkeypatch):
    from tasks.generation import model_digest

    folder = model_folder(tmp_path / "m", b"\x00" * 1024)
    (folder / "extra.bin").write_bytes(b"\x02" * 512)
    age(folder)
    read: list[str] = []
    real = model_digest.hash_file
    monkeypatch.setattr(model_digest, "hash_file", lambda path: read.append(Path(path).name) or real(path))
    first = model_id_for(folder)
    assert {"model.safetensors", "extra.bin"} <= set(read)
    cache = json.loads((folder / model_digest.CACHE_NAME).read_text())
    assert cache["files"]["model.safetensors"]["sha256"] == hashlib.sha256(b"\x00" * 1024).hexdigest()

    read.clear()
    assert model_id_for(folder) == first
    assert "model.safetensors" not in read and "extra.bin" not in read  # served from the cache

    stat = (folder / "model.safetensors").stat()  # same size and bytes, new mtime: read again
    os.utime(folder / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    read.clear()
    assert model_id_for(folder) == first
    assert read.count("model.safetensors") == 1 and "extra.bin" not in read

    (folder / "model.safetensors").write_bytes(b"\x00" * 1023 + b"\x01")  # same size, new content
    os.utime(folder / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even the old mtime
    (folder / "extra.bin").write_bytes(b"\x02" * 513)  # new size
    age(folder)
    read.clear()
    changed = model_id_for(folder)
    assert changed != first and {"model.safetensors", "extra.bin"} <= set(read)


def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path, cache_home):
    from tasks.generation import model_digest

    folder = model_folder(tmp_path / "m", b"\x01" * 1024)
    expected = model_id_for(folder)
    cache = folder / model_digest.CACHE_NAME
    bogus = {"format": 1, "files": {"model.safetensors": {"size": 1024, "mtime_ns": 0, "sha256": "0" * 64}}}
    for text in ("{not json", json.dumps({"format": 1, "files": []}), "\x00\x01"):
        cache.write_text(text)
        assert model_id_for(folder) == expected
        assert json.loads(cache.read_text())["files"]["model.safetensors"]["sha256"] == \
            hashlib.sha256(b"\x01" * 1024).hexdigest()
    stat = (folder / "model.safetensors").stat()
    bogus["files"]["model.safetensors"]["mtime_ns"] = stat.st_mtime_ns
    bogus["files"]["model.safetensors"]["size"] = stat.st_size + 1  # stale: another size
    cache.write_text(json.dumps(bogus))
    assert model_id_for(folder) == expected


@contextlib.contextmanager
def read_only(folder: Path):
    """Make a folder read-only for this process: mode 0555, or the immutable attribute for root
    (root writes into any folder whatever its mode); checked by trying to create a file in it."""
    if os.geteuid() == 0:
        if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(folder)],
                                                         capture_output=True).returncode:
            pytest.skip("running as root without `chattr +i`: cannot make a folder read-only")
        undo = ["chattr", "-i", str(folder)]
    else:
        os.chmod(folder, 0o555)
        undo = None
    try:
        with pytest.raises(OSError):
            (folder / "probe").write_text("x")
        yield folder
    finally:
        if undo:
            subprocess.run(undo, check=True)
        else:
            os.chmod(folder, 0o755)


def test_a_read_only_folder_caches_its_digest_under_the_user_cache(tmp_path, cache_home, monkeypatch):
    from tasks.generation import model_digest

    folder = model_folder(tmp_path / "m", b"\x03" * 1024)
    read: list[str] = []
    real = model_digest.hash_file
    monkeypatch.setattr(model_digest, "hash_file", lambda path: read.append(Path(path).name) or real(path))
    with read_only(folder):
        first = model_id_for(folder)
        assert read.count("model.safetensors") == 1
        read.clear()
        assert model_id_for(folder) == first
        assert "model.safetensors" not in read
        assert not (folder / model_digest.CACHE_NAME).exists()
        assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temporary left
    cached = list((cache_home / "flywheel").rglob("*.json"))
    assert len(cached) == 1 and cached[0] == model_digest.fallback_cache_path(folder)
    entry = json.loads(cached[0].read_text())["files"]["model.safetensors"]
    assert entry["sha256"] == hashlib.sha256(b"\x03" * 1024).hexdigest()
    assert model_id_for(folder) == first  # writable again: the same id


def test_a_real_model_folders_content_id(tiny_model_dir, tmp_path, cache_home):
    """Without its card, a copy of a real model folder has the same content id as another copy;
    one weight byte, or the chat template, changes it."""
    copies = []
    for name in ("a", "b", "c"):
        copy = tmp_path / name
        shutil.copytree(tiny_model_dir, copy)
        (copy / "flywheel_card.json").unlink()
        copies.append(copy)
    a, b, c = copies
    assert model_id_for(a) == model_id_for(b)
    weights = next(b.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    assert model_id_for(b) != model_id_for(a)
    (c / "chat_template.jinja").write_text("{{ messages[0].content }}")
    assert model_id_for(c) != model_id_for(a)
