"""Fixtures for the tests that run real containers on the real node (hack/node, docs/local-cluster.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from node_helpers import NODE_NAME
from node_helpers import bring_up


@pytest.fixture(scope="session")
def real_node(kube_cluster: Any) -> Iterator[str]:
    """The node of ``make node-up``, brought up (idempotently) with the registry and the images it
    pulls; yields its name. Needs root, like ``make node-up``; fails with the scripts' output."""
    if not kube_cluster.local:
        pytest.fail("the node tests add a node to the local control plane; unset KUBECONFIG", pytrace=False)
    bring_up()
    yield NODE_NAME
