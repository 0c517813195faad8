"""The report flow: write data/reports/<run>/report.md with plots, and publish it as a Prefect artifact."""
from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from tasks.evaluation.report import write_report
from tasks.lake.sql import connect
from tasks.lake.store import Lake


def reports_dir_for(lake_root: str) -> Path:
    """data/reports beside the lake (data/lake → data/reports)."""
    return Path(lake_root).resolve().parent / "reports"


def known_runs(lake_root: str) -> list[str]:
    """Run ids that have evals rows, in first-seen order."""
    rows = connect(Lake(lake_root)).execute(
        "SELECT run_id, min(iteration) FROM evals GROUP BY run_id ORDER BY run_id").fetchall()
    return [r[0] for r in rows]


@flow(name="flywheel-report", log_prints=True)
def report_flow(lake_root: str = "data/lake", run_ids: list[str] | None = None) -> str:
    """Write the report of the given runs (default: every run in the lake); returns its path."""
    runs = run_ids or known_runs(lake_root)
    if not runs:
        raise ValueError(f"no runs with evals in the lake at {lake_root}")
    path, markdown = write_report(Lake(lake_root), runs, reports_dir_for(lake_root))
    key = "flywheel-report-" + "-".join(runs)[:80].lower().replace("_", "-").replace(".", "-")
    create_markdown_artifact(markdown=markdown, key=key, description=f"Flywheel report {', '.join(runs)}")
    print(f"report written to {path}")
    return str(path)
