"""A real Prefect server (and workers) for tests, each process in its own group, loopback only."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil

from tests.conftest import PROJECT_ROOT

PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "flywheel"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrefectStack:
    """A Prefect server, and later a worker, each in its own process group."""

    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": self.api,
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
                    "PREFECT_WORKER_QUERY_SECONDS": "2",
                    "PYTHONPATH": str(PROJECT_ROOT)}
        self.env.pop("PREFECT_API_KEY", None)
        self.logs = home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.processes: list[subprocess.Popen] = []

    def start_server(self) -> None:
        """`prefect server start` on this stack's loopback port; returns once it is healthy."""
        self.start("server", "server", "start", "--host", "127.0.0.1", "--port", str(self.port), "--analytics-off")
        self.wait_healthy()

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")
        process = subprocess.Popen([PREFECT, *args], cwd=PROJECT_ROOT, env=self.env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes.append(process)
        return process

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PREFECT, *args], cwd=PROJECT_ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def request(self, path: str, body: dict | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api + path, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def poll(self, path: str, body: dict | None = None) -> object | None:
        """`request`, but None when the server is too busy to answer in time (a loaded CI machine):
        for wait loops that ask again until their own deadline."""
        try:
            return self.request(path, body)
        except (TimeoutError, urllib.error.URLError) as error:
            print(f"prefect server did not answer {path} ({error}); asking again")
            return None

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[0].poll() is not None:
                raise RuntimeError(f"prefect server exited: {(self.logs / 'server.log').read_text()[-2000:]}")
            try:
                if self.request("/health") is True:
                    return
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"prefect server not healthy after {timeout} s")

    def listening(self) -> list[tuple[str, int]]:
        """(address, port) of every listening TCP socket of the started process trees."""
        found = []
        for process in self.processes:
            try:
                tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for proc in tree:
                try:
                    found += [(c.laddr.ip, c.laddr.port) for c in proc.net_connections("tcp")
                              if c.status == psutil.CONN_LISTEN]
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        return found

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)


@contextmanager
def running_server(home: Path) -> Iterator[PrefectStack]:
    """A healthy Prefect server on a free loopback port for the block; everything stopped after."""
    stack = PrefectStack(home)
    try:
        stack.start_server()
        yield stack
    finally:
        stack.stop()
