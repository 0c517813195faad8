"""Content digests of model folders: the weights, the tokenizer and the chat template, by their bytes.

A model's id must change whenever anything that shapes its samples changes, and stay the same
when nothing does. Weights are hashed block by block (SHA-256); since a 15 GB checkpoint takes
minutes to read, each weight file's digest is cached next to it in `.flywheel_digest.json`, keyed
by the file's name, size and mtime_ns. When the folder is read-only the cache lives under
`$XDG_CACHE_HOME/flywheel` (or `~/.cache/flywheel`), keyed by the folder's resolved path. A cache
that cannot be read or parsed is ignored and rewritten; failing to write one only costs time.
Tokenizer, chat-template and config files are small and are hashed on every call.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from tasks.lake import ids

logger = logging.getLogger("flywheel.model_digest")

CACHE_NAME = ".flywheel_digest.json"
CACHE_FORMAT = 1
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Files besides the weights that shape what a model samples: its config, its tokenizer (every
# format transformers reads) and its chat template (inside tokenizer_config.json, or its own files).
SHAPING_FILES = ("config.json", "generation_config.json", "special_tokens_map.json", "added_tokens.json",
                 "chat_template.json", "spiece.model")
SHAPING_PATTERNS = ("tokenizer*", "vocab*", "merges*", "*.tiktoken", "*.jinja", "sentencepiece*.model",
                    "additional_chat_templates/*.jinja")
BLOCK_BYTES = 8 << 20
# A file modified this close to when it was hashed may be rewritten again within the filesystem's
# mtime granularity without its mtime changing: such a digest is used but not cached.
RACY_WINDOW_NS = 2_000_000_000
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ModelDigestError(RuntimeError):
    """A model folder cannot be digested; the message is one line naming the path."""


def hash_file(path: Path) -> str:
    """The SHA-256 hex digest of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    buffer = bytearray(BLOCK_BYTES)
    view = memoryview(buffer)
    try:
        with open(path, "rb", buffering=0) as handle:
            while True:
                count = handle.readinto(buffer)
                if not count:
                    break
                digest.update(view[:count])
    except OSError as error:
        raise ModelDigestError(f"cannot read {path}: {error.strerror or error}") from None
    return digest.hexdigest()


def weight_files(folder: Path) -> list[Path]:
    """The folder's weight files (top level, *.safetensors and *.bin), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())


def shaping_files(folder: Path) -> list[Path]:
    """The config, tokenizer and chat-template files in a model folder, sorted by relative path."""
    found = {folder / name for name in SHAPING_FILES}
    for pattern in SHAPING_PATTERNS:
        found.update(folder.glob(pattern))
    return sorted((p for p in found if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())


def fallback_cache_path(folder: Path) -> Path:
    """Where a read-only folder's weight digests are cached: one file per resolved folder path."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    key = ids.content_hash("model-folder-path", str(folder.resolve()))
    return Path(base) / "flywheel" / "model-digests" / f"{key}.json"


def _parse_cache(text: str | None) -> dict[str, dict[str, Any]]:
    """The well-formed entries of one cache file's text; nothing when it is missing or corrupt."""
    try:
        data = json.loads(text) if text is not None else None
    except ValueError:
        return {}
    files = data.get("files") if isinstance(data, dict) and data.get("format") == CACHE_FORMAT else None
    if not isinstance(files, dict):
        return {}
    good = {}
    for name, entry in files.items():
        if (isinstance(entry, dict) and type(entry.get("size")) is int and type(entry.get("mtime_ns")) is int
                and isinstance(entry.get("sha256"), str) and _SHA256_HEX.fullmatch(entry["sha256"])):
            good[name] = entry
    return good


def _write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` under a temporary name in the same folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _cache_text(folder: Path, entries: dict[str, dict[str, Any]]) -> str:
    """The cache file's text for these entries (stable, so an unchanged cache is not rewritten)."""
    return json.dumps({"format": CACHE_FORMAT, "folder": str(folder.resolve()), "files": entries},
                      indent=1, sort_keys=True) + "\n"


def _read_text(path: Path) -> str | None:
    """A file's text, or None when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _save_cache(folder: Path, text: str) -> None:
    """Cache the digests inside the folder, else (read-only folder) under the user's cache."""
    try:
        _write_atomically(folder / CACHE_NAME, text)
        return
    except OSError as error:
        reason = error.strerror or str(error)
    fallback = fallback_cache_path(folder)
    try:
        _write_atomically(fallback, text)
    except OSError as error:
        logger.warning("cannot cache the weight digests of %s (%s) nor in %s (%s): they will be read again",
                       folder, reason, fallback, error.strerror or error)


def weight_digests(folder: str | os.PathLike[str]) -> dict[str, str]:
    """SHA-256 of each weight file's content by file name, read from the cache when the file's
    size and mtime_ns match the cached ones, else computed (and cached)."""
    root = Path(folder)
    files = weight_files(root)
    in_folder, fallback = _read_text(root / CACHE_NAME), _read_text(fallback_cache_path(root))
    cached = {**_parse_cache(fallback), **_parse_cache(in_folder)}
    entries: dict[str, dict[str, Any]] = {}
    digests: dict[str, str] = {}
    for path in files:
        stat = path.stat()
        entry = cached.get(path.name)
        if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            digests[path.name] = entry["sha256"]
            entries[path.name] = entry
            continue
        started_ns = time.time_ns()
        digest = hash_file(path)
        after = path.stat()
        digests[path.name] = digest
        stable = (after.st_size, after.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
        if stable and started_ns - stat.st_mtime_ns > RACY_WINDOW_NS:
            entries[path.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    text = _cache_text(root, entries)
    had_cache = in_folder is not None or fallback is not None
    if text not in (in_folder, fallback) and (entries or had_cache):  # new, changed, stale or corrupt
        _save_cache(root, text)
    return digests


def folder_digest(folder: str | os.PathLike[str]) -> str:
    """A content id of a model folder: its weights, config, tokenizer and chat-template files."""
    root = Path(folder)
    if not root.is_dir():
        raise ModelDigestError(f"model folder not found: {root}")
    shaping = {p.relative_to(root).as_posix(): hash_file(p) for p in shaping_files(root)}
    return ids.content_hash("model-content", shaping, weight_digests(root))
