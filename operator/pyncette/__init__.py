"""pyncette: a reliable distributed scheduler for async Python (placeholder until the app lands)."""

__version__ = "2.0.0.dev0"
