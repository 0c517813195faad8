"""Runtime: Prefect task runners and sharding, progress bars, library log routing and the run
logger, the errors a round raises, fault injection for the reliability suite, the watchdog that
ends orphaned processes."""
