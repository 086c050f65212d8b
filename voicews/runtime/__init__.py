"""The daemon's shared state: the config in force, the live calls, the metrics."""
