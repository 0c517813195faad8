"""Rule-based verifier: extract a candidate's final answer and compare it with the reference.

Four outcomes: "correct" (1.0), "incorrect" (0.0), "unparseable" and "timeout"
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
from dataclasses import asdict, dataclass
from functools import lru_cache
from multiprocessing.connection import Connection, wait
from typing import Any

from schemas.loop import check_regex
from tasks.scoring.math_values import decide

CORRECT, INCORRECT, UNPARSEABLE, TIMEOUT = "correct", "incorrect", "unparseable", "timeout"
DEFAULT_EXTRACTORS: tuple[str, ...] = ("hash", "boxed", "answer_is", "answer_line")
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
    configure: str | None = None  # `configure(settings: dict)`, run in the worker before warmup
    takes_source: bool = False  # compare(answer, reference, source): which extractor found it
    fallback: str | None = None  # `fallback(text) -> str | None` when no extractor finds an answer


COMPARISON_MODES: dict[str, ComparisonMode] = {
    "exact": ComparisonMode("tasks.scoring.verify:compare_exact"),
    "math": ComparisonMode("tasks.scoring.verify:compare_math", warmup="tasks.scoring.verify:warm_up_math",
                           configure="tasks.scoring.verify:configure_math", takes_source=True,
                           fallback="tasks.scoring.verify:math_verify_answer"),
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


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The last match of `pattern` in `text`, or None."""
    last = None
    for last in pattern.finditer(text):
        pass
    return last


def _extract_hash(text: str) -> str | None:
    last = _last_match(_HASH, text)
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


_CLAUSE_AFTER_ANSWER = re.compile(r"(?:[,;]|\.(?=\s))\s+(?=[A-Za-z])")


def _extract_answer_is(text: str) -> str | None:
    last = _last_match(_ANSWER_IS, text)
    if last is None:
        return None
    end = text.find("\n", last.end())
    return _clean_answer(text[last.end():end if end >= 0 else len(text)].strip().lstrip(":").strip())


# "Answer: 42", "**Answer:** 42", "Final answer: 42" at the start of a line
_ANSWER_LINE = re.compile(r"^[ \t>*_#]*(?:final[ \t]+)?answer[ \t*_]*:[ \t*_]*(\S[^\n]*?)[ \t*_]*$",
                          re.IGNORECASE | re.MULTILINE)


def _extract_answer_line(text: str) -> str | None:
    last = _last_match(_ANSWER_LINE, text)
    return None if last is None else _clean_answer(last.group(1))


def _clean_answer(value: str) -> str | None:
    """An answer read from prose: the first clause, no full stop, no enclosing `$...$`."""
    value = _CLAUSE_AFTER_ANSWER.split(value, maxsplit=1)[0]  # "18, not 16 or 20" -> "18"
    if value.endswith("."):
        value = value[:-1].rstrip()
    if len(value) >= 2 and value.startswith("$") and value.endswith("$"):
        value = value.strip("$").strip()
    return value or None


def _boxes(text: str) -> list[str]:
    """The contents of every balanced `\\boxed{...}` in `text`, in order."""
    found, start = [], text.find(_BOXED)
    while start >= 0:
        begin, depth = start + len(_BOXED), 1
        for token in _BRACE_TOKEN.finditer(text, begin):
            char = token.group()
            depth += 1 if char == "{" else -1 if char == "}" else 0
            if depth == 0:
                if text[begin:token.start()].strip():
                    found.append(text[begin:token.start()].strip())
                break
        start = text.find(_BOXED, begin)
    return found


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "hash": _extract_hash,
    "boxed": _extract_boxed,
    "answer_is": _extract_answer_is,
    "answer_line": _extract_answer_line,
}
# An extractor is a built-in name, or ("regex", pattern, "first" | "last"): the pattern's one group
# at its first or last match.
Extractor = str | tuple[str, str, str]
REGEX_OCCURRENCES = ("first", "last")


def check_extractors(extractors: Sequence[Extractor]) -> tuple[Extractor, ...]:
    """The extractors as a tuple; ValueError naming any unknown name or bad regex."""
    if isinstance(extractors, str):
        raise ValueError(f"extractors must be a sequence of names, not the string {extractors!r}")
    names = tuple(tuple(e) if isinstance(e, list) else e for e in extractors)
    if not names:
        raise ValueError("extractors must name at least one extractor")
    for name in names:
        if isinstance(name, tuple):
            if len(name) != 3 or name[0] != "regex" or name[2] not in REGEX_OCCURRENCES:
                raise ValueError(f"a regex extractor is ('regex', pattern, 'first' | 'last'), got {name!r}")
            check_regex(name[1])
        elif name not in EXTRACTORS:
            raise ValueError(f"unknown answer extractor {name!r}; known: {sorted(EXTRACTORS)} or a regex")
    return names


def extractor_label(extractor: Extractor) -> str:
    """A short name of an extractor for messages and versions."""
    return extractor if isinstance(extractor, str) else f"regex[{extractor[2]}]:{extractor[1]}"


def extract_answer(text: str, extractors: Sequence[Extractor] = DEFAULT_EXTRACTORS) -> str | None:
    """The final answer in `text`, or None: the first of `extractors` that finds one wins.

    "hash": the rest of the last line starting with `####` (whitespace and thousands commas
    stripped); "boxed": the content of the last `\\boxed{...}` (balanced braces, else None);
    "answer_is": what follows the last "the answer is" on its line, trailing period stripped;
    "answer_line": the rest of the last line starting `Answer:` (also `**Answer:**`,
    `Final answer:`), trailing period stripped;
    ("regex", pattern, "first" | "last"): the pattern's group at its first or last match.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    found = _extract(text, check_extractors(extractors))
    return found[0] if found else None


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _extract_regex(text: str, pattern: str, occurrence: str) -> str | None:
    compiled = _compiled(pattern)
    match = compiled.search(text) if occurrence == "first" else _last_match(compiled, text)
    if match is None or match.group(1) is None:
        return None
    return match.group(1).strip() or None


def _extract(text: str, names: tuple[Extractor, ...]) -> tuple[str, str] | None:
    """(answer, the extractor that found it) or None."""
    for name in names:
        answer = _extract_regex(text, name[1], name[2]) if isinstance(name, tuple) else EXTRACTORS[name](text)
        if answer is not None:
            return answer, "regex" if isinstance(name, tuple) else name
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


@dataclass(frozen=True)
class MathSettings:
    """math-verify's comparison settings (its `verify` keyword arguments) and how predictions are
    extracted (`parse`'s extraction configs), with math-verify's own defaults."""

    float_rounding: int = 6
    numeric_precision: int = 15
    strict: bool = True
    allow_set_relation_comp: bool = False
    extraction: tuple[str, ...] = ("latex", "expr")  # of "latex", "expr", "string"
    boxed_match_priority: int = 50

    def version(self) -> str:
        """The settings as a short stable string (part of the verifier scorer's version)."""
        return (f"fr={self.float_rounding},np={self.numeric_precision},strict={int(self.strict)},"
                f"set={int(self.allow_set_relation_comp)},x={'+'.join(self.extraction)},"
                f"bp={self.boxed_match_priority}")


_SETTINGS = MathSettings()
_FULL_WIDTH = str.maketrans({chr(0xFF10 + d): str(d) for d in range(10)} | {"\u2212": "-", "\uff0c": ","})
# 1 000 / 1 000 000 with a space, a no-break or narrow no-break space, or an apostrophe between groups
_SPACED_THOUSANDS = re.compile(r"(?<![\d.,])(\d{1,3})((?:[ \u00a0\u202f']\d{3})+)(?![\d])")
# a number followed by a unit word or two ("18 dollars", "5 cm.", "12 apples each")
_NUMBER_WITH_UNITS = re.compile(r"^\s*\$?\s*([+-]?\d[\d,]*(?:\.\d+)?)\s*%?\s*[A-Za-z][A-Za-z ]{0,30}\.?\s*$")
_PLAIN_NUMBER = re.compile(r"^\s*[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\s*$")


def configure_math(settings: dict) -> None:
    """Set this process's math-verify settings (called once in each worker)."""
    global _SETTINGS
    _SETTINGS = MathSettings(**{**settings, "extraction": tuple(settings.get("extraction", ("latex", "expr")))})
    _math_verdict.cache_clear()
    _math_gold.cache_clear()


def normalise_math_answer(answer: str) -> str:
    """The extracted answer as math-verify should see it: full-width digits and the Unicode minus
    as ASCII, digit groups separated by spaces or apostrophes joined ("1 000" -> "1000"), and
    unit words after a lone number dropped ("18 dollars" -> "18"): math-verify would read those
    as products of symbols."""
    text = answer.translate(_FULL_WIDTH)
    text = _SPACED_THOUSANDS.sub(lambda m: m.group(1) + re.sub(r"[ \u00a0\u202f']", "", m.group(2)), text)
    text = text.rstrip()
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()  # a sentence's full stop, inside or after the math
    units = _NUMBER_WITH_UNITS.match(text)
    if units and not re.search(r"\\|[{}=]", text):
        text = units.group(1) + ("%" if "%" in text else "")
    return text


def _extraction_configs(settings: MathSettings) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, StringExtractionConfig

    made = {"latex": lambda: LatexExtractionConfig(boxed_match_priority=settings.boxed_match_priority),
            "expr": ExprExtractionConfig, "string": StringExtractionConfig}
    return [made[name]() for name in settings.extraction]


_LATEX_SHAPED = re.compile(r"\\[A-Za-z]|[\^_{}]|[(\[].*,.*[)\]]")


def math_verify_answer(text: str) -> str | None:
    """The answer math-verify's own extraction configs find in a whole text (its string form),
    for a text none of the configured extractors matched."""
    from math_verify import parse

    if len(text) > 20 * MAX_ANSWER_CHARS:
        text = text[-20 * MAX_ANSWER_CHARS:]
    parsed = parse(normalise_math_answer(text), extraction_config=_extraction_configs(_SETTINGS),
                   parsing_timeout=None)
    return str(parsed[-1]).strip() or None if parsed else None


def _math_parse(value: str, what: str, boxed: bool) -> list[Any]:
    """math-verify's parse of an answer: a boxed answer as the box it came from; LaTeX-shaped
    text (commands, braces, scripts, bracketed lists) as math; other text through math-verify's
    extraction configs (its LaTeX delimiters, then plain expressions)."""
    from math_verify import parse

    _check_nesting(value, what)
    delimited = "$" in value or "\\(" in value or "\\[" in value
    text = _BOXED + value + "}" if boxed or (not delimited and _LATEX_SHAPED.search(value)) else value
    parsed = parse(text, extraction_config=_extraction_configs(_SETTINGS), parsing_timeout=None)
    if not parsed and not boxed:
        parsed = parse(_BOXED + value + "}", extraction_config=_extraction_configs(_SETTINGS), parsing_timeout=None)
    if not parsed:
        raise Unparseable(f"{what} could not be parsed by math-verify")
    return parsed


@lru_cache(maxsize=4096)
def _math_gold(reference: str) -> list[Any]:
    """The reference parsed once per process: as written when it carries its own LaTeX delimiters,
    else as the content of a box (a dataset's raw LaTeX answer)."""
    delimited = "$" in reference or _BOXED in reference or "\\(" in reference or "\\[" in reference
    return _math_parse(reference, "reference", boxed=not delimited)


def _plain_number(value: str) -> Any:
    """The Decimal of a plain decimal number (optionally with an exponent, `1.5e-3`), else None."""
    from decimal import Decimal, InvalidOperation

    if not _PLAIN_NUMBER.match(value):
        return None
    try:
        return Decimal(value.strip())
    except InvalidOperation:
        return None


def _numbers_equal(a: Any, b: Any, places: int) -> bool:
    """Two plain numbers equal after rounding both to `places` decimals (math-verify's rule);
    numbers beyond 10**40 in size or below 10**-40 compare exactly (no huge roundings)."""
    from decimal import ROUND_HALF_EVEN, Decimal, localcontext

    if a == b:
        return True
    if max(abs(a.adjusted()), abs(b.adjusted())) > 40:
        return False
    with localcontext() as context:
        context.prec = 100
        quantum = Decimal(1).scaleb(-places)
        return a.quantize(quantum, ROUND_HALF_EVEN) == b.quantize(quantum, ROUND_HALF_EVEN)


_UNPARSEABLE_MARK = "\0unparseable:"


def _fast_path_applies(settings: MathSettings) -> bool:
    """Whether `math_values.decide` gives math-verify's verdict under these settings: it knows
    math-verify's default extraction and strict comparison only."""
    return (settings.strict and not settings.allow_set_relation_comp and settings.numeric_precision >= 10
            and settings.extraction == ("latex", "expr"))


def math_verdict_uncached(answer: str, reference: str, boxed: bool, fast: bool = True) -> bool | str:
    """True/False, or a string starting with _UNPARSEABLE_MARK: one (answer, reference) pair's
    verdict. `fast`: plain numbers and the common LaTeX shapes of `tasks/math_values` are decided
    exactly without math-verify; off, math-verify decides every pair not written identically."""
    from math_verify import verify

    if answer.strip() == reference.strip():
        return True  # identical text needs no parsing
    a, b = _plain_number(answer), _plain_number(reference)
    if a is not None and b is not None:  # plain decimals: math-verify's rounded comparison, no sympy
        return _numbers_equal(a, b, _SETTINGS.float_rounding)
    if fast and _fast_path_applies(_SETTINGS):
        decided = decide(answer, reference, _SETTINGS.float_rounding)
        if decided is not None:
            return decided
    try:
        gold = _math_gold(reference)
        pred = _math_parse(answer, "answer", boxed)
    except Unparseable as error:
        return _UNPARSEABLE_MARK + str(error)
    try:
        return bool(verify(gold, pred, float_rounding=_SETTINGS.float_rounding,
                           numeric_precision=_SETTINGS.numeric_precision, strict=_SETTINGS.strict,
                           allow_set_relation_comp=_SETTINGS.allow_set_relation_comp,
                           timeout_seconds=None, raise_on_error=True))
    except Exception as error:  # math-verify or sympy failed: not a judgement of the answer
        return f"{_UNPARSEABLE_MARK}math-verify failed: {type(error).__name__}"


# memoised per process: most of a prompt's samples share a handful of answers
_math_verdict = lru_cache(maxsize=65536)(math_verdict_uncached)


def compare_math(answer: str, reference: str, source: str = "text") -> bool:
    """math-verify equivalence, reference as gold: `verify(parse(reference), parse(answer))` with
    this process's settings (`configure_math`).

    The answer is normalised (`normalise_math_answer`) and parsed the way math-verify parses a
    prediction: a boxed answer as its box, any other through math-verify's extraction configs;
    the reference is parsed once. math-verify's own signal timeouts are off (the worker's hard
    timeout bounds it). Parse or comparison failures raise Unparseable. Only for worker
    processes: never call it in the parent on untrusted text.
    """
    verdict = _math_verdict(normalise_math_answer(answer), reference, source == "boxed")
    if isinstance(verdict, str):
        raise Unparseable(verdict[len(_UNPARSEABLE_MARK):])
    return verdict


def warm_up_math() -> None:
    """Import math-verify and sympy, silence its 'timeout disabled' warning, run one comparison."""
    import logging

    import math_verify  # noqa: F401

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    if not compare_math("\\frac{1}{2}", "0.5", "boxed"):
        raise RuntimeError("math-verify warm-up: 1/2 did not verify against 0.5")
    _math_verdict.cache_clear()


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


def _is_collection(reference: str) -> bool:
    """Whether a reference is a set, tuple or list of answers (a comma outside any brackets, or
    one set/tuple literal), for which every box of an answer counts."""
    depth = 0
    stripped = reference.strip().strip("$").strip()
    if stripped.startswith(("\\{", "(", "[")) and stripped.endswith(("\\}", ")", "]")) and "," in stripped:
        return True
    for char in stripped:
        depth += 1 if char in "([{" else -1 if char in ")]}" else 0
        if char == "," and depth == 0:
            return True
    return False


def _check_one(text: str, reference: str, compare: Callable[..., Any],
               extractors: tuple[Extractor, ...], takes_source: bool = False,
               fallback: Callable[[str], str | None] | None = None) -> _Row:
    found = _extract(text, extractors)
    if found is None and fallback is not None:
        try:
            answer = fallback(text)
        except Exception:  # noqa: BLE001 - a fallback that breaks finds nothing
            answer = None
        found = (answer, "text") if answer else None
    if found is None:
        names = ", ".join(extractor_label(e) for e in extractors)
        return UNPARSEABLE, None, None, f"no final answer found (extractors: {names})"
    answer, source = found
    if source == "boxed" and _is_collection(reference):
        boxes = _boxes(text)
        if len(boxes) > 1:  # "the pairs are \boxed{(2, 2)} and \boxed{(6, 2)}": every box counts
            answer = ", ".join(boxes)
    if not _valid_utf8(answer):
        return UNPARSEABLE, None, _printable(answer)[:MAX_ANSWER_CHARS], "answer is not valid UTF-8"
    if "\ufffd" in answer:
        return (UNPARSEABLE, None, answer[:MAX_ANSWER_CHARS],
                "answer contains U+FFFD (undecodable bytes in the text)")
    if len(answer) > MAX_ANSWER_CHARS:
        return (UNPARSEABLE, None, answer[:MAX_ANSWER_CHARS],
                f"answer longer than {MAX_ANSWER_CHARS} characters")
    try:
        outcome = compare(answer, reference, source) if takes_source else compare(answer, reference)
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


def _worker_main(conn: Connection, progress: Any, mode: ComparisonMode, extractors: tuple[Extractor, ...],
                 sys_path: list[str], memory_limit_mb: int | None, settings: dict | None = None) -> None:
    """Worker loop: load the comparison, report ready, then check chunks until told to stop."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
        sys.path[:] = sys_path
        if memory_limit_mb:
            import resource

            limit = memory_limit_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        compare = _resolve(mode.compare)
        fallback = _resolve(mode.fallback) if mode.fallback else None
        if mode.configure:
            _resolve(mode.configure)(settings or {})
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
            rows.append(_check_one(text, reference, compare, extractors, mode.takes_source, fallback))
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

    def __init__(self, mode: str = "exact", extractors: Sequence[Extractor] = DEFAULT_EXTRACTORS,
                 timeout_s: float = 5.0, workers: int = 2, *, math_settings: MathSettings | None = None,
                 chunk_size: int | None = None,
                 start_method: str = "forkserver", memory_limit_mb: int | None = 4096,
                 startup_timeout_s: float = 120.0) -> None:
        """Start `workers` processes for `mode` and wait until each has loaded its comparison."""
        self._mode = _check_mode(mode)
        self.mode = mode
        self.extractors = check_extractors(extractors)
        self.math_settings = math_settings or MathSettings()
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
                  self.memory_limit_mb, asdict(self.math_settings)))
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
                 extractors: Sequence[Extractor] = DEFAULT_EXTRACTORS, timeout_s: float = 5.0,
                 workers: int = 2, **options: Any) -> list[Verdict]:
    """Verify `items` in a fresh process pool; one Verdict per item, in input order.

    Bad input (unknown mode or extractor, a missing reference) raises before any process starts.
    `options` go to `Verifier` (math_settings, chunk_size, start_method, memory_limit_mb, startup_timeout_s).
    """
    _check_mode(mode)
    check_extractors(extractors)
    _unpack(items)
    if not items:
        return []
    with Verifier(mode, extractors, timeout_s, min(workers, len(items)), **options) as verifier:
        return verifier.verify(items)
