"""Prefect flows that compose the stage functions of tasks/, and the `flywheel` CLI."""
