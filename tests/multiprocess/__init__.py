"""Scenarios that run several OS processes against one shared backend."""
