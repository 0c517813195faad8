"""The Parquet lake: atomic, content-addressed shards under <root>/<table>/iteration=<k>/.

Every path the project builds into the lake goes through `Lake`, so the root can later be an
fsspec URI without touching callers. Shards are written under a temporary name that does not end
in `.parquet` (and starts with a dot, which pyarrow datasets skip), fsynced, then renamed into
place: a crash never leaves a half-written file that a `*.parquet` glob can see.
"""
from __future__ import annotations

import errno
import os
import subprocess
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas import SchemaError, table_spec
from tasks.lake import ids
from tasks.runtime.faults import crash_point

DEFAULT_LAKE = "data/lake"
LAKE_ENV = "FLYWHEEL_LAKE"
TEMP_MARK = ".tmp-"
PARTITION = "iteration"
METADATA_PREFIX = "flywheel."


class LakeError(RuntimeError):
    """A lake path or shard problem; the message is one line naming the path."""


class DuplicateKeyError(LakeError):
    """A write would add a key that its table's partition already holds (or holds twice itself)."""


def default_lake_root() -> str:
    """The lake root: $FLYWHEEL_LAKE, else data/lake under the working directory."""
    return os.environ.get(LAKE_ENV) or DEFAULT_LAKE


@lru_cache(maxsize=1)
def code_version() -> str:
    """The producing code's version: the git commit of this checkout when known, else 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


class Lake:
    """A lake rooted at a local directory (string or path)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        raw = str(root) if root is not None else default_lake_root()
        if "://" in raw and not raw.startswith("file://"):
            raise LakeError(f"lake root {raw!r}: only local paths are supported so far")
        self.root = Path(raw.removeprefix("file://")).expanduser().resolve()

    # -- paths -------------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        """Folder of one table (the table name is checked)."""
        table_spec(table)
        return self.root / table

    def partition_dir(self, table: str, iteration: int) -> Path:
        """Folder of one table's shards for one iteration."""
        return self.table_dir(table) / f"{PARTITION}={int(iteration)}"

    def glob(self, table: str) -> str:
        """The absolute glob that matches every visible shard of `table` (for DuckDB)."""
        return str(self.table_dir(table) / "**" / "*.parquet")

    def require_exists(self) -> None:
        """Raise LakeError when the root is missing or not a directory."""
        if not self.root.exists():
            raise LakeError(f"lake not found: {self.root}")
        if not self.root.is_dir():
            raise LakeError(f"lake root is not a directory: {self.root}")

    # -- listing -----------------------------------------------------------------------------
    def shards(self, table: str, iteration: int | None = None) -> list[Path]:
        """Visible shards of a table (optionally one iteration), sorted by path."""
        base = self.table_dir(table) if iteration is None else self.partition_dir(table, iteration)
        if not base.is_dir():
            return []
        return sorted(p for p in base.rglob("*.parquet") if p.is_file())

    def stray_files(self) -> list[Path]:
        """Temporary files left by an interrupted write (invisible to readers)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.rglob(f"*{TEMP_MARK}*") if p.is_file())

    def iterations(self, table: str) -> list[int]:
        """Iterations for which `table` has at least one shard."""
        found = set()
        for shard in self.shards(table):
            part = shard.parent.name
            if part.startswith(f"{PARTITION}="):
                found.add(int(part.split("=", 1)[1]))
        return sorted(found)

    # -- writing -----------------------------------------------------------------------------
    def write(
        self,
        table: str,
        data: pa.Table | list[dict[str, Any]],
        iteration: int,
        shard: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Path:
        """Validate `data` against the table's schema and write it as one atomic zstd shard.

        The shard name defaults to a hash of the rows' keys, so writing the same rows twice
        replaces one file instead of duplicating rows. Returns the shard's path.
        """
        spec = table_spec(table)
        arrow = spec.from_rows(data) if isinstance(data, list) else spec.validate(data)
        if arrow.num_rows == 0:
            raise LakeError(f"refusing to write an empty shard to table {table!r}")
        iterations = set(arrow.column(PARTITION).to_pylist())
        if iterations != {int(iteration)}:
            raise SchemaError(
                f"table {table!r}: column 'iteration' holds {sorted(iterations)}, "
                f"but the shard is for iteration {iteration}"
            )
        if shard is None:
            keys = ["\x1f".join(str(v) for v in row) for row in zip(
                *(arrow.column(k).to_pylist() for k in spec.key))]
            shard = ids.shard_id(table, keys)
        if "/" in shard or shard.startswith("."):
            raise LakeError(f"invalid shard name {shard!r}")
        target = self.partition_dir(table, iteration) / f"{shard}.parquet"
        self._refuse_duplicate_keys(table, arrow, iteration, target)
        file_metadata = {
            "schema_version": str(spec.version),
            "table": table,
            "producer": "flywheel",
            "code_version": code_version(),
            **(metadata or {}),
        }
        arrow = arrow.replace_schema_metadata(
            {f"{METADATA_PREFIX}{k}": str(v) for k, v in file_metadata.items()}
        )
        _atomic_write_parquet(arrow, target)
        return target

    def _refuse_duplicate_keys(self, table: str, arrow: pa.Table, iteration: int, target: Path) -> None:
        """Raise DuplicateKeyError when `arrow` repeats a key, or holds a key that another shard of
        the same table and partition already holds (the shard it replaces does not count)."""
        key = table_spec(table).key
        new = _key_strings(arrow, key)
        if pc.count_distinct(new).as_py() != len(new):
            counts = pc.value_counts(new)
            repeated = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
            raise DuplicateKeyError(f"table {table!r}, iteration {iteration}: the rows to write hold key "
                                    f"{_describe_key(key, repeated)} more than once")
        others = [other for other in self.shards(table, iteration) if other != target]
        if not others:
            return
        # Probe every existing key against a hash set of the new ones (built once, small).
        existing = pa.chunked_array([_shard_keys(other, key) for other in others], type=pa.string())
        clash = pc.is_in(existing, value_set=new)
        if pc.any(clash).as_py():
            first = existing.filter(clash)[0].as_py()
            where = next(o for o in others if pc.any(pc.equal(_shard_keys(o, key), first)).as_py())
            raise DuplicateKeyError(
                f"table {table!r}, iteration {iteration}: key {_describe_key(key, first)} is already "
                f"in shard {where.name}; refusing to write it again")

    # -- reading -----------------------------------------------------------------------------
    def read(
        self, table: str, iteration: int | None = None, columns: Iterable[str] | None = None
    ) -> pa.Table:
        """All visible rows of a table (optionally one iteration) as one Arrow table."""
        spec = table_spec(table)
        shards = self.shards(table, iteration)
        wanted = list(columns) if columns is not None else spec.columns
        if not shards:
            return spec.empty().select(wanted)
        parts = []
        for path in shards:
            try:
                parts.append(pq.read_table(path, columns=wanted))
            except (pa.ArrowException, OSError) as error:
                raise LakeError(f"unreadable shard {path}: {_first_line(error)}") from None
        return pa.concat_tables(parts, promote_options="default")

    def existing_keys(
        self, table: str, iteration: int | None = None, columns: Iterable[str] | None = None
    ) -> set[tuple]:
        """The set of key tuples already in the lake (for resuming a stage)."""
        spec = table_spec(table)
        cols = list(columns) if columns is not None else list(spec.key)
        arrow = self.read(table, iteration, cols)
        return set(zip(*(arrow.column(c).to_pylist() for c in cols))) if arrow.num_rows else set()

    def file_metadata(self, shard: Path) -> dict[str, str]:
        """The flywheel key-value metadata of one shard."""
        raw = pq.read_schema(shard).metadata or {}
        return {
            k.decode()[len(METADATA_PREFIX):]: v.decode()
            for k, v in raw.items()
            if k.decode().startswith(METADATA_PREFIX)
        }


KEY_SEPARATOR = "\x1f"
_NULL_KEY_PART = "\x00null"
# Key column of each shard already read, by path, valid while its size and mtime are unchanged.
_SHARD_KEYS: dict[Path, tuple[int, int, pa.Array]] = {}
_SHARD_KEYS_MAX = 4096


def _key_strings(arrow: pa.Table, key: Sequence[str]) -> pa.Array:
    """One string per row joining its key columns (nulls spelled out, so they compare equal)."""
    parts = [pc.cast(arrow.column(name), pa.string()).combine_chunks() for name in key]
    if len(parts) == 1:
        return pc.fill_null(parts[0], _NULL_KEY_PART)
    return pc.binary_join_element_wise(*parts, KEY_SEPARATOR, null_handling="replace",
                                       null_replacement=_NULL_KEY_PART)


def _shard_keys(path: Path, key: Sequence[str]) -> pa.Array:
    """The key strings of one shard, read once per version of the file."""
    stat = path.stat()
    cached = _SHARD_KEYS.get(path)
    if cached is not None and cached[:2] == (stat.st_size, stat.st_mtime_ns):
        return cached[2]
    try:
        keys = _key_strings(pq.read_table(path, columns=list(key)), key)
    except (pa.ArrowException, OSError) as error:
        raise LakeError(f"unreadable shard {path}: {_first_line(error)}") from None
    if len(_SHARD_KEYS) >= _SHARD_KEYS_MAX:
        _SHARD_KEYS.clear()
    _SHARD_KEYS[path] = (stat.st_size, stat.st_mtime_ns, keys)
    return keys


def _describe_key(key: Sequence[str], joined: str) -> str:
    values = joined.split(KEY_SEPARATOR)
    return ", ".join(f"{name}={value!r}" for name, value in zip(key, values))


def _atomic_write_parquet(table: pa.Table, target: Path) -> None:
    """Write `table` to `target` so that readers see either nothing or the whole file."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LakeError(f"cannot create {target.parent}: {_os_reason(error)}") from None
    temp = target.parent / f".{target.name}{TEMP_MARK}{uuid.uuid4().hex[:8]}"
    try:
        with open(temp, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        crash_point(f"write-temp:{target.parent.parent.name}")
        os.replace(temp, target)
        _fsync_dir(target.parent)
        crash_point(f"write:{target.parent.parent.name}")
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise LakeError(f"cannot write {target}: {_os_reason(error)}") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_reason(error: OSError) -> str:
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"read-only or not permitted ({error.strerror})"
    return error.strerror or str(error)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
