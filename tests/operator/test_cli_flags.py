"""``pyncette-operator run`` flags → Settings; a bad value is one line naming the flag."""

from __future__ import annotations

import pytest

from pyncette_operator.cli import UsageError
from pyncette_operator.cli import build_parser
from pyncette_operator.cli import settings_from_args
from pyncette_operator.settings import Settings


def settings(*argv: str) -> Settings:
    return settings_from_args(build_parser().parse_args(["run", *argv]))


def test_defaults_for_the_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PYNCETTE_MIN_INTERVAL", "PYNCETTE_POD_CREATE_QPS", "PYNCETTE_POD_CREATE_BURST"):
        monkeypatch.delenv(name, raising=False)
    s = settings()
    assert (s.min_interval, s.pod_creates_per_second, s.pod_create_burst) == (1.0, 10.0, 20)
    assert s.operator_service_account is None and s.allowed_service_accounts is None
    assert (s.health_bind_address, s.metrics_bind_address) == (None, "0.0.0.0")


def test_bounds_and_addresses_from_flags() -> None:
    s = settings(
        "--min-interval=30s",
        "--pod-create-qps=2.5",
        "--pod-create-burst=5",
        "--allowed-service-accounts=runner,team-a:reporter",
        "--operator-service-account=pyncette-system:pyncette-operator",
        "--health-bind-address=127.0.0.1",
        "--metrics-bind-address=::1",
    )
    assert (s.min_interval, s.pod_creates_per_second, s.pod_create_burst) == (30.0, 2.5, 5)
    assert s.allowed_service_accounts == {"runner", "team-a:reporter"}
    assert s.operator_service_account == ("pyncette-system", "pyncette-operator")
    assert (s.health_bind_address, s.metrics_bind_address) == ("127.0.0.1", "::1")
    assert settings("--min-interval=0.5").min_interval == 0.5


def test_bounds_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNCETTE_MIN_INTERVAL", "1m")
    monkeypatch.setenv("PYNCETTE_POD_CREATE_QPS", "3")
    monkeypatch.setenv("PYNCETTE_OPERATOR_SERVICE_ACCOUNT", "ops:op")
    s = settings()
    assert (s.min_interval, s.pod_creates_per_second, s.operator_service_account) == (60.0, 3.0, ("ops", "op"))


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--allowed-service-accounts=Team_A:x"], "--allowed-service-accounts: 'Team_A:x' is not a ServiceAccount"),
        (["--allowed-service-accounts=a:b:c"], "is not a ServiceAccount NAME or NAMESPACE:NAME"),
        (["--operator-service-account=just-a-name"], "--operator-service-account: expected NAMESPACE:NAME"),
        (["--min-interval=often"], "--min-interval: expected a duration"),
        (["--min-interval=0s"], "--min-interval: must be positive"),
        (["--pod-create-qps=0"], "--pod-create-qps: must be >= 0.01"),
        (["--pod-create-burst=0"], "--pod-create-burst: must be >= 1"),
        (["--metrics-bind-address=0.0.0.0:9100"], "--metrics-bind-address: expected an IP address or a host name"),
        (["--health-bind-address=http://x"], "--health-bind-address: expected an IP address"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        settings(*argv)
    assert fragment in str(info.value)


def test_excluded_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYNCETTE_EXCLUDE_NAMESPACES", raising=False)
    assert settings().excluded_namespaces == ()
    assert settings("--exclude-namespace=ops", "--exclude-namespace=a,b").excluded_namespaces == ("ops", "a", "b")
    monkeypatch.setenv("PYNCETTE_EXCLUDE_NAMESPACES", "pyncette-system")
    assert settings().excluded_namespaces == ("pyncette-system",)
    with pytest.raises(UsageError, match="--exclude-namespace: 'Ops' is not a namespace name"):
        settings("--exclude-namespace=Ops")


def test_backfill_max_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYNCETTE_BACKFILL_MAX_SLOTS", raising=False)
    assert settings().backfill_max_slots == 1000
    assert settings("--backfill-max-slots", "24").backfill_max_slots == 24
    monkeypatch.setenv("PYNCETTE_BACKFILL_MAX_SLOTS", "48")
    assert settings().backfill_max_slots == 48
