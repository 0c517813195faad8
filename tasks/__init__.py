"""Plain functions for every stage, with thin Prefect @task wrappers. Never imports flows/."""
