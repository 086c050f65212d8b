"""config.yaml: typed settings, their loader, and the plugin manager that resolves pipelines."""
