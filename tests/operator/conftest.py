"""Fixtures of the operator tests; they live in ptask_harness.py (see there)."""

from ptask_harness import crd_installed
from ptask_harness import k
from ptask_harness import start_operator

__all__ = ["crd_installed", "k", "start_operator"]
