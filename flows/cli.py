"""The `flywheel` command: one entry point, one subcommand per job."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Callable, Sequence

import duckdb

from schemas import SchemaError
from tasks.lake import Lake, LakeError, default_lake_root
from tasks.sql import connect, write_views_file

# Errors that are the user's input, reported as one line with a non-zero exit.
USER_ERRORS: tuple[type[BaseException], ...] = (LakeError, SchemaError, duckdb.Error, ValueError,
                                                FileNotFoundError)


class CommandError(RuntimeError):
    """A subcommand failed for a reason that one line explains."""


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def cmd_sql(args: argparse.Namespace) -> int:
    """Run one SQL query and print it as a table, or open the DuckDB shell with the lake's views."""
    lake = Lake(args.lake)
    strays = lake.stray_files() if lake.root.is_dir() else []
    if strays:
        print(f"flywheel: note: ignoring {len(strays)} temporary file(s) left by an interrupted "
              f"write, e.g. {strays[0]}", file=sys.stderr)
    if args.query is None:
        views = write_views_file(lake)
        binary = shutil.which("duckdb") or os.path.join(os.path.dirname(sys.executable), "duckdb")
        if not os.path.exists(binary):
            raise CommandError("the duckdb CLI is not installed (pip install duckdb-cli)")
        print(f"flywheel: views from {views}", file=sys.stderr)
        os.execv(binary, [binary, "-init", str(views)])
    con = connect(lake)
    try:
        relation = con.sql(args.query)
    except duckdb.Error as error:
        raise CommandError(f"SQL error: {_one_line(error)}") from None
    if relation is not None:
        relation.show(max_rows=args.max_rows, max_width=shutil.get_terminal_size((200, 40)).columns)
    return 0


def cmd_views(args: argparse.Namespace) -> int:
    """Write the views file for `duckdb -init` and print its path."""
    print(write_views_file(Lake(args.lake)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="flywheel", description=__doc__)
    parser.add_argument("--lake", default=default_lake_root(),
                        help="lake root (default: $FLYWHEEL_LAKE or data/lake)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sql = sub.add_parser("sql", help="query the lake with DuckDB SQL (no query: interactive shell)")
    sql.add_argument("query", nargs="?", help="one SQL statement; omit for the DuckDB shell")
    sql.add_argument("--max-rows", type=int, default=40, help="rows to print (default 40)")
    sql.set_defaults(func=cmd_sql)

    views = sub.add_parser("views", help="write <lake>/views.sql for `duckdb -init` and print its path")
    views.set_defaults(func=cmd_views)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `flywheel` console command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (CommandError, *USER_ERRORS) as error:
        if os.environ.get("FLYWHEEL_DEBUG"):
            raise
        print(f"flywheel: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flywheel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
