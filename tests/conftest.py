"""Shared fixtures: a fresh lake per test, and a helper that runs the flywheel CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Before any library import reads them: no hub, a small CPU KV cache, a quiet Prefect.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import pytest  # noqa: E402

from tasks.lake.store import Lake  # noqa: E402
from tests.model_fixtures import tiny_model_dir, vllm_backend  # noqa: F401  (session fixtures)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    """An empty lake in a temporary folder."""
    root = tmp_path / "lake"
    root.mkdir()
    return Lake(root)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `python -m flows.cli ARGS` in a subprocess and capture its output."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_ROOT), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd or PROJECT_ROOT, env=full_env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def prefect_harness(tmp_path_factory):
    """A temporary Prefect server and PREFECT_HOME for this module's flow runs. (One server for the
    whole session saved about 100 s, but with it idling beside the real server and worker of
    tests/test_deployments.py, that server stopped answering within 30 s once in CI.)"""
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    old = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(home)
    with prefect_test_harness(server_startup_timeout=120):
        yield
    if old is None:
        os.environ.pop("PREFECT_HOME", None)
    else:
        os.environ["PREFECT_HOME"] = old


class ArithmeticBackend:
    """A stand-in generation backend for prompts ending "Problem: a+b": sample i of each prompt
    is `write(a, b, i)`. For logic that does not depend on the engine (the real engines are
    tested in test_generate.py and test_generation_integrity.py)."""

    name = "arithmetic"

    def __init__(self, write) -> None:
        self.write = write

    def generate(self, prompts, sampling, seeds):
        """`sampling.n` completions per prompt, written by `write`."""
        from tasks.generation.generate import Completion

        out = []
        for prompt in prompts:
            a, b = (int(x) for x in prompt.split("Problem: ")[-1].split("\n")[0].split("+"))
            out.append([Completion(text=self.write(a, b, i), token_ids=[1, 2], token_logprobs=None,
                                   cumulative_logprob=None, finish_reason="stop") for i in range(sampling.n)])
        return out

    def close(self) -> None:
        """Nothing to stop."""
