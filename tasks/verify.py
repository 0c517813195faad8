"""Rule-based verifier: extract a candidate's final answer and compare it with the reference.

Four outcomes (DESIGN.md): "correct" (1.0), "incorrect" (0.0), "unparseable" and "timeout"
(value None). A comparison that fails, hangs or kills its process is never scored 0.

Every item is checked in a worker process (`Verifier`, `verify_batch`) under a hard per-item
wall-clock timeout kept by the parent: a worker that overruns is killed (no signal.alarm, no
threads). Items travel in chunks for throughput; a worker publishes which item it is on and when
it started it in shared memory, so the parent knows exactly which item hung or crashed, records
that one, and sends the rest of the chunk again.

Comparison modes are named in `COMPARISON_MODES` by import path ("module:function"), because a
fresh worker imports them itself; tests add modes there with monkeypatch.
"""
from __future__ import annotations

import importlib
import math
import multiprocessing
import re
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing.connection import Connection, wait
from typing import Any

CORRECT, INCORRECT, UNPARSEABLE, TIMEOUT = "correct", "incorrect", "unparseable", "timeout"
DEFAULT_EXTRACTORS: tuple[str, ...] = ("hash", "boxed", "answer_is")
MAX_ANSWER_CHARS = 1000  # a longer "final answer" is unparseable, never compared
MAX_NESTING = 50  # math mode: deeper bracket nesting is unparseable (parsers recurse)
MAX_CHUNK = 256
MAX_DETAIL_CHARS = 200


# ---------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class VerifyItem:
    """One candidate to check: its completion text and the reference answer."""

    text: str
    reference: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """The verifier's outcome for one item (maps onto the scores table's value/label columns)."""

    label: str
    value: float | None
    extracted_answer: str | None
    detail: str | None


class Unparseable(Exception):
    """Raised by a comparison when the answer or the reference cannot be interpreted."""


@dataclass(frozen=True)
class ComparisonMode:
    """A comparison by import path: `compare(answer, reference) -> bool`, optional `warmup()`.

    Paths, not functions, because worker processes import them fresh.
    """

    compare: str
    warmup: str | None = None


COMPARISON_MODES: dict[str, ComparisonMode] = {
    "exact": ComparisonMode("tasks.verify:compare_exact"),
    "math": ComparisonMode("tasks.verify:compare_math", warmup="tasks.verify:warm_up_math"),
}


# ---------------------------------------------------------------- extraction

_HASH = re.compile(r"^[ \t]*####[ \t]*([^\n]*)", re.MULTILINE)
_ANSWER_IS = re.compile(r"the (?:final )?answer is", re.IGNORECASE)
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)
_BRACKET_TOKEN = re.compile(r"\\.|[{}()\[\]]", re.DOTALL)
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", re.ASCII)
_INTEGER = re.compile(r"([+-]?)(\d+)", re.ASCII)
_BOXED = "\\boxed{"


def strip_thousands(value: str) -> str:
    """`1,234,567` -> `1234567`; anything that is not a comma-grouped number is returned as is."""
    return value.replace(",", "") if _THOUSANDS.fullmatch(value) else value


def _extract_hash(text: str) -> str | None:
    last = None
    for last in _HASH.finditer(text):
        pass
    if last is None:
        return None
    return strip_thousands(last.group(1).strip()) or None


def _extract_boxed(text: str) -> str | None:
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    begin, depth = start + len(_BOXED), 1
    for token in _BRACE_TOKEN.finditer(text, begin):
        char = token.group()
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[begin:token.start()].strip() or None
    return None  # unbalanced: the box never closes


def _extract_answer_is(text: str) -> str | None:
    last = None
    for last in _ANSWER_IS.finditer(text):
        pass
    if last is None:
        return None
    end = text.find("\n", last.end())
    value = text[last.end():end if end >= 0 else len(text)].strip().lstrip(":").strip()
    if value.endswith("."):
        value = value[:-1].rstrip()
    if len(value) >= 2 and value.startswith("$") and value.endswith("$"):
        value = value.strip("$").strip()
    return value or None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "hash": _extract_hash,
    "boxed": _extract_boxed,
    "answer_is": _extract_answer_is,
}


def check_extractors(extractors: Sequence[str]) -> tuple[str, ...]:
    """The extractor names as a tuple; ValueError naming any unknown one."""
    if isinstance(extractors, str):
        raise ValueError(f"extractors must be a sequence of names, not the string {extractors!r}")
    names = tuple(extractors)
    if not names:
        raise ValueError("extractors must name at least one extractor")
    for name in names:
        if name not in EXTRACTORS:
            raise ValueError(f"unknown answer extractor {name!r}; known: {sorted(EXTRACTORS)}")
    return names


def extract_answer(text: str, extractors: Sequence[str] = DEFAULT_EXTRACTORS) -> str | None:
    """The final answer in `text`, or None: the first of `extractors` that finds one wins.

    "hash": the rest of the last line starting with `####` (whitespace and thousands commas
    stripped); "boxed": the content of the last `\\boxed{...}` (balanced braces, else None);
    "answer_is": what follows the last "the answer is" on its line, trailing period stripped.
    Linear time in len(text).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    return _extract(text, check_extractors(extractors))


def _extract(text: str, names: tuple[str, ...]) -> str | None:
    for name in names:
        answer = EXTRACTORS[name](text)
        if answer is not None:
            return answer
    return None


# ---------------------------------------------------------------- comparisons


def normalise_exact(value: str) -> str:
    """Canonical form for exact comparison: stripped, thousands commas removed, integers canonical.

    `032` -> `32`, `+5` -> `5`, `-0` -> `0`; non-integers stay as their stripped text.
    """
    value = strip_thousands(value.strip())
    match = _INTEGER.fullmatch(value)
    if not match:
        return value
    sign, digits = match.groups()
    digits = digits.lstrip("0") or "0"
    return f"-{digits}" if sign == "-" and digits != "0" else digits


def compare_exact(answer: str, reference: str) -> bool:
    """Exact match after `normalise_exact` on both sides (integers compare as integers)."""
    return normalise_exact(answer) == normalise_exact(reference)


def _check_nesting(value: str, what: str) -> None:
    """Unparseable unless braces balance and brackets of any kind nest at most MAX_NESTING deep."""
    braces = depth = deepest = 0
    for token in _BRACKET_TOKEN.finditer(value):
        char = token.group()
        if len(char) > 1:
            continue  # an escaped character such as \{ or \\
        opening = char in "{(["
        depth += 1 if opening else -1
        deepest = max(deepest, depth)
        if char == "{" or char == "}":
            braces += 1 if opening else -1
            if braces < 0:
                break
    if braces != 0:
        raise Unparseable(f"{what} has unbalanced braces")
    if deepest > MAX_NESTING:
        raise Unparseable(f"{what} nests brackets more than {MAX_NESTING} deep")


def _math_parse(value: str, what: str) -> list[Any]:
    from math_verify import parse

    _check_nesting(value, what)
    parsed = parse(_BOXED + value + "}", parsing_timeout=None)
    if not parsed:
        raise Unparseable(f"{what} could not be parsed by math-verify")
    return parsed


@lru_cache(maxsize=4096)
def _math_gold(reference: str) -> list[Any]:
    return _math_parse(reference, "reference")


def compare_math(answer: str, reference: str) -> bool:
    """math-verify equivalence, reference as gold: `verify(parse(reference), parse(answer))`.

    Both sides are parsed as the content of a \\boxed{}; math-verify's own signal timeouts are
    off (the worker's hard timeout bounds it). Parse or comparison failures raise Unparseable.
    Only for worker processes: never call it in the parent on untrusted text.
    """
    from math_verify import verify

    if answer.strip() == reference.strip():
        return True  # identical text needs no parsing
    gold = _math_gold(reference)
    pred = _math_parse(answer, "answer")
    try:
        return bool(verify(gold, pred, timeout_seconds=None, raise_on_error=True))
    except Exception as error:  # math-verify or sympy failed: not a judgement of the answer
        raise Unparseable(f"math-verify failed: {type(error).__name__}") from None


def warm_up_math() -> None:
    """Import math-verify and sympy, silence its 'timeout disabled' warning, run one comparison."""
    import logging

    import math_verify  # noqa: F401

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    if not compare_math("\\frac{1}{2}", "0.5"):
        raise RuntimeError("math-verify warm-up: 1/2 did not verify against 0.5")


def _resolve(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"comparison path must look like 'module:function', got {path!r}")
    return getattr(importlib.import_module(module), name)


def _check_mode(mode: str) -> ComparisonMode:
    if mode not in COMPARISON_MODES:
        raise ValueError(f"unknown comparison mode {mode!r}; known: {sorted(COMPARISON_MODES)}")
    return COMPARISON_MODES[mode]


# ---------------------------------------------------------------- one item (in a worker)

_Row = tuple[str, float | None, str | None, str | None]


def _short(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= MAX_DETAIL_CHARS else message[:MAX_DETAIL_CHARS] + "..."


def _valid_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(value: str) -> str:
    """`value` with undecodable bytes (lone surrogates) shown as U+FFFD, storable as UTF-8."""
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def _check_one(text: str, reference: str, compare: Callable[[str, str], Any],
               extractors: tuple[str, ...]) -> _Row:
    answer = _extract(text, extractors)
    if answer is None:
        return UNPARSEABLE, None, None, f"no final answer found (extractors: {', '.join(extractors)})"
    if not _valid_utf8(answer):
        return UNPARSEABLE, None, _printable(answer)[:MAX_ANSWER_CHARS], "answer is not valid UTF-8"
    if "\ufffd" in answer:
        return (UNPARSEABLE, None, answer[:MAX_ANSWER_CHARS],
                "answer contains U+FFFD (undecodable bytes in the text)")
    if len(answer) > MAX_ANSWER_CHARS:
        return (UNPARSEABLE, None, answer[:MAX_ANSWER_CHARS],
                f"answer longer than {MAX_ANSWER_CHARS} characters")
    try:
        outcome = compare(answer, reference)
    except Unparseable as error:
        return UNPARSEABLE, None, answer, _short(str(error))
    except Exception as error:  # the comparison broke: never a score of 0
        try:
            message = f"comparison failed: {type(error).__name__}: {error}"
        except Exception:
            message = f"comparison failed: {type(error).__name__}"
        return UNPARSEABLE, None, answer, _short(message)
    if outcome is True:
        return CORRECT, 1.0, answer, None
    if outcome is False:
        return INCORRECT, 0.0, answer, None
    return UNPARSEABLE, None, answer, f"comparison returned {type(outcome).__name__}, not bool"


# ---------------------------------------------------------------- worker process

_IDLE = -1.0  # progress token meaning "between items"


def _worker_main(conn: Connection, progress: Any, mode: ComparisonMode, extractors: tuple[str, ...],
                 sys_path: list[str], memory_limit_mb: int | None) -> None:
    """Worker loop: load the comparison, report ready, then check chunks until told to stop."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
        sys.path[:] = sys_path
        if memory_limit_mb:
            import resource

            limit = memory_limit_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        compare = _resolve(mode.compare)
        if mode.warmup:
            _resolve(mode.warmup)()
    except BaseException:
        conn.send(("error", traceback.format_exc(limit=3)))
        return
    conn.send(("ready", None))
    clock = time.monotonic
    while True:
        message = conn.recv()
        if message is None:
            return
        tokens, texts, references = message
        rows = []
        for token, text, reference in zip(tokens, texts, references):
            progress[0] = clock()  # start time first, then the token (the parent reads the other way)
            progress[1] = token
            rows.append(_check_one(text, reference, compare, extractors))
        progress[0] = clock()
        progress[1] = _IDLE
        conn.send(("rows", rows))


@dataclass
class _Worker:
    process: Any
    conn: Connection
    progress: Any
    started: float
    ready: bool = False
    chunk: list[int] | None = None
    sent_at: float = 0.0


# ---------------------------------------------------------------- the pool


class Verifier:
    """A pool of verifier processes kept alive across `verify` calls; use as a context manager.

    `startup_s` is the measured time to start the pool; `stats` counts timeouts, crashes and
    worker restarts since creation.
    """

    def __init__(self, mode: str = "exact", extractors: Sequence[str] = DEFAULT_EXTRACTORS,
                 timeout_s: float = 5.0, workers: int = 2, *, chunk_size: int | None = None,
                 start_method: str = "forkserver", memory_limit_mb: int | None = 4096,
                 startup_timeout_s: float = 120.0) -> None:
        """Start `workers` processes for `mode` and wait until each has loaded its comparison."""
        self._mode = _check_mode(mode)
        self.mode = mode
        self.extractors = check_extractors(extractors)
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self.timeout_s = float(timeout_s)
        self.chunk_size = chunk_size
        self.memory_limit_mb = memory_limit_mb
        self.startup_timeout_s = startup_timeout_s
        self._ctx = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            self._ctx.set_forkserver_preload([__name__])  # only effective before the server starts
        self.stats = {"timeouts": 0, "crashes": 0, "restarts": 0}
        self._workers: list[_Worker] = []
        began = time.perf_counter()
        try:
            self._workers = [self._spawn() for _ in range(workers)]
            self._await_ready()
        except BaseException:
            self.close()
            raise
        self.startup_s = time.perf_counter() - began

    # -- lifecycle

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        progress = self._ctx.RawArray("d", 2)
        progress[0], progress[1] = 0.0, _IDLE
        process = self._ctx.Process(
            target=_worker_main, name="flywheel-verifier", daemon=True,
            args=(child_conn, progress, self._mode, self.extractors, list(sys.path),
                  self.memory_limit_mb))
        process.start()
        child_conn.close()
        return _Worker(process, parent_conn, progress, time.monotonic())

    def _await_ready(self) -> None:
        while not all(w.ready for w in self._workers):
            waiting = [w for w in self._workers if not w.ready]
            wait([w.conn for w in waiting] + [w.process.sentinel for w in waiting], timeout=0.5)
            for worker in waiting:
                self._poll_start(worker, time.monotonic())

    def _poll_start(self, worker: _Worker, now: float) -> None:
        """Advance a starting worker; raise RuntimeError if it failed or is too slow."""
        if worker.conn.poll():
            try:
                kind, payload = worker.conn.recv()
            except (EOFError, OSError):
                kind, payload = "died", None
            if kind == "ready":
                worker.ready = True
                return
            if kind == "error":
                last = payload.strip().splitlines()[-1] if payload else "?"
                raise RuntimeError(f"verifier worker could not load mode {self.mode!r}: {last}")
            raise RuntimeError(
                f"verifier worker exited during start-up (exit code {worker.process.exitcode})")
        if not worker.process.is_alive():
            raise RuntimeError(
                f"verifier worker exited during start-up (exit code {worker.process.exitcode})")
        if now - worker.started > self.startup_timeout_s:
            raise RuntimeError(f"verifier worker did not start within {self.startup_timeout_s:g} s")

    def _replace(self, worker: _Worker) -> _Worker:
        self._kill(worker)
        self.stats["restarts"] += 1
        fresh = self._spawn()
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    @staticmethod
    def _kill(worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5)
        worker.conn.close()

    def close(self) -> None:
        """Stop every worker (politely, then by force)."""
        for worker in self._workers:
            try:
                if worker.process.is_alive():
                    worker.conn.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 2.0
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            self._kill(worker)
        self._workers = []

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- verification

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        """One Verdict per item, in input order; ValueError before any work on a bad item."""
        if not self._workers:
            raise RuntimeError("this Verifier is closed")
        texts, references = _unpack(items)
        n = len(texts)
        results: list[Verdict | None] = [None] * n
        size = self.chunk_size or max(1, min(MAX_CHUNK, math.ceil(n / (8 * len(self._workers)))))
        pending: deque[list[int]] = deque(
            list(range(start, min(start + size, n))) for start in range(0, n, size))
        remaining = n

        def record(index: int, row: _Row) -> None:
            """Store the verdict for item `index` (counted once)."""
            nonlocal remaining
            if results[index] is None:
                remaining -= 1
            results[index] = Verdict(*row)

        while remaining:
            for worker in self._workers:
                if worker.ready and worker.chunk is None and pending:
                    chunk = pending.popleft()
                    worker.chunk, worker.sent_at = chunk, time.monotonic()
                    worker.conn.send((chunk, [texts[i] for i in chunk],
                                      [references[i] for i in chunk]))
            active = [w for w in self._workers if w.chunk is not None or not w.ready]
            if not active:
                raise RuntimeError("verifier has unfinished items but no busy worker")  # a bug
            now = time.monotonic()
            pause = min(self._deadline(w, now)[0] for w in active) - now
            wait([w.conn for w in active] + [w.process.sentinel for w in active],
                 timeout=max(0.0, pause))
            now = time.monotonic()
            for worker in active:
                self._service(worker, now, pending, record)
        return results  # type: ignore[return-value]

    def _deadline(self, worker: _Worker, now: float) -> tuple[float, int | None]:
        """When `worker` overruns, and the index of the item it is on (None: unknown)."""
        if not worker.ready:
            return worker.started + self.startup_timeout_s, None
        token = worker.progress[1]  # token first, then the time (the worker writes the other way)
        began = worker.progress[0]
        if began < worker.sent_at:  # progress is from an earlier chunk: not started yet
            return worker.sent_at + self.timeout_s, None
        current = int(token)
        return began + self.timeout_s, (current if current in worker.chunk else None)

    def _service(self, worker: _Worker, now: float, pending: deque[list[int]],
                 record: Callable[[int, _Row], None]) -> None:
        if not worker.ready:
            self._poll_start(worker, now)
            return
        chunk = worker.chunk
        assert chunk is not None
        if worker.conn.poll():
            try:
                kind, rows = worker.conn.recv()
            except (EOFError, OSError):
                kind, rows = "died", None
            if kind == "rows":
                for index, row in zip(chunk, rows):
                    record(index, row)
                worker.chunk = None
                return
        elif worker.process.is_alive():
            deadline, current = self._deadline(worker, now)
            if now < deadline:
                return
            self.stats["timeouts"] += 1
            self._replace(worker)
            self._isolate(chunk, current, pending, record, TIMEOUT,
                          f"verification exceeded the {self.timeout_s:g} s timeout")
            return
        # the worker died (crash, os._exit, signal, memory): blame the item it was on
        _, current = self._deadline(worker, now)
        worker.process.join(5)
        code = worker.process.exitcode
        self.stats["crashes"] += 1
        self._replace(worker)
        if current is not None and len(chunk) > 1:
            pending.appendleft([current])  # confirm alone before blaming it
            rest = [i for i in chunk if i != current]
            pending.appendleft(rest)
            return
        self._isolate(chunk, current, pending, record, UNPARSEABLE,
                      f"verifier worker died (exit code {code}) while checking this item")

    @staticmethod
    def _isolate(chunk: list[int], current: int | None, pending: deque[list[int]],
                 record: Callable[[int, _Row], None], label: str, detail: str) -> None:
        """Record `current` (or a lone item) as `label`; send the rest again, halved if unknown."""
        if current is None and len(chunk) > 1:
            half = len(chunk) // 2
            pending.appendleft(chunk[half:])
            pending.appendleft(chunk[:half])
            return
        culprit = chunk[0] if current is None else current
        record(culprit, (label, None, None, detail))
        rest = [i for i in chunk if i != culprit]
        if rest:
            pending.appendleft(rest)


def _unpack(items: Sequence[VerifyItem]) -> tuple[list[str], list[str]]:
    texts, references = [], []
    for index, item in enumerate(items):
        if not isinstance(item, VerifyItem):
            raise TypeError(f"item {index}: expected VerifyItem, got {type(item).__name__}")
        if item.reference is None:
            raise ValueError(f"item {index}: reference is None")
        if not isinstance(item.reference, str):
            raise TypeError(f"item {index}: reference must be str, got {type(item.reference).__name__}")
        if not item.reference.strip():
            raise ValueError(f"item {index}: reference is empty")
        if not _valid_utf8(item.reference):
            raise ValueError(f"item {index}: reference is not valid UTF-8")
        if not isinstance(item.text, str):
            raise TypeError(f"item {index}: text must be str, got {type(item.text).__name__}")
        texts.append(item.text)
        references.append(item.reference)
    return texts, references


def verify_batch(items: Sequence[VerifyItem], mode: str = "exact",
                 extractors: Sequence[str] = DEFAULT_EXTRACTORS, timeout_s: float = 5.0,
                 workers: int = 2, **options: Any) -> list[Verdict]:
    """Verify `items` in a fresh process pool; one Verdict per item, in input order.

    Bad input (unknown mode or extractor, a missing reference) raises before any process starts.
    `options` go to `Verifier` (chunk_size, start_method, memory_limit_mb, startup_timeout_s).
    """
    _check_mode(mode)
    check_extractors(extractors)
    _unpack(items)
    if not items:
        return []
    with Verifier(mode, extractors, timeout_s, min(workers, len(items)), **options) as verifier:
        return verifier.verify(items)
