"""The report flow: write data/reports/<run>/report.md with plots, and publish it as a Prefect artifact."""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from tasks.evaluation.report import known_runs, reports_dir_for, write_report
from tasks.lake.store import Lake


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
