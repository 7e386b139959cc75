"""Built-in task generators (pure: standard library only)."""
