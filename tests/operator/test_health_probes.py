"""The operator's probes during a real database outage (PostgreSQL blackholed through Toxiproxy).

Liveness (the ``--liveness`` path) must stay 200: restarting a replica does not bring the database
back, and every replica of a shared backend would be restarted at once into a crash loop.
Readiness (``/readyz``) must turn 503 naming the backend, and 200 again once the server answers.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from ptask_harness import Kubectl
from ptask_harness import wait_until

import faultkit

pytestmark = [pytest.mark.cluster, pytest.mark.services, pytest.mark.slow]


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_a_database_outage_fails_readiness_not_liveness(
    k: Kubectl, start_operator: Any, postgres_url: str, toxiproxy_api: str
) -> None:
    proxy = faultkit.create_proxy(postgres_url, prefix="op_health", api=toxiproxy_api)
    try:
        url = proxy.url_for(postgres_url.split("?", 1)[0]) + f"?table=op_health_{abs(hash(k.namespace)) % 10**10}"
        op = start_operator("--namespace", k.namespace, backend=url, env={"PYNCETTE_BACKEND_TIMEOUT": "1"})
        wait_until(lambda: get(op.health_port, "/readyz")[0] == 200, timeout=60, what="readiness")

        proxy.blackhole()
        _, body = wait_until(
            lambda: (r := get(op.health_port, "/readyz"))[0] == 503 and r, timeout=60, what="readiness to fail"
        )
        assert "backend" in body["error"], body

        def liveness_reports_the_outage() -> bool:
            live_status, live = get(op.health_port, "/healthz")
            assert live_status == 200, live  # never a liveness failure
            return live["alive"] is True and live["backend"].startswith("failing: BackendTimeoutError")

        wait_until(liveness_reports_the_outage, timeout=60, what="the timed-out poll in the health details")

        proxy.heal()
        wait_until(lambda: get(op.health_port, "/readyz")[0] == 200, timeout=60, what="readiness to recover")
        assert get(op.health_port, "/healthz")[0] == 200
    finally:
        proxy.delete()
