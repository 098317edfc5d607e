"""Test-wide plugins: the local Kubernetes cluster and the database services.

Two markers are derived from what a test uses, so ``make test`` (hack/test.sh) can run the suite in
phases without anyone tagging tests by hand:

* ``cluster``: the test needs the local control plane or its build (it uses ``kube_cluster`` or
  ``helm_bin``, directly or through another fixture). Library tests run while a fresh machine still
  builds the control plane; helm comes with that build.
* ``exclusive``: the test disturbs what other tests share (it restarts a database server with
  ``restart_service``, or is marked by hand because it runs an operator over every namespace), so
  it runs alone, after the parallel phases.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["plugins.kube", "plugins.services"]

#: A fixture that puts a test in the ``cluster`` / ``exclusive`` phase.
CLUSTER_FIXTURES = frozenset({"kube_cluster", "helm_bin"})
EXCLUSIVE_FIXTURES = frozenset({"restart_service"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark before ``-m`` selects (tryfirst: the mark plugin's own hook deselects afterwards)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & CLUSTER_FIXTURES:
            item.add_marker("cluster")
        if fixtures & EXCLUSIVE_FIXTURES:
            item.add_marker("exclusive")
