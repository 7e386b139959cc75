"""Configuration: the typed schema (`conf.schema`), YAML defaults and groups, and `conf.load.compose`."""
