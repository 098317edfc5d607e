"""Backend-specific tests: configuration errors, storage layout, multi-process and restart scenarios."""
