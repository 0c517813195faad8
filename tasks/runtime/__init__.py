"""Runtime: Prefect task runners and sharding, progress bars, fault injection for the reliability
suite, the watchdog that ends orphaned processes."""
