"""values.schema.json refuses bad values before anything reaches the cluster.

Each case names the value at fault; helm's message must point at it. The template guards repeat
the rules that matter most, so that --skip-schema-validation does not get them through either.
"""

from __future__ import annotations

import dataclasses

import pytest

from chart.chartkit import Chart
from chart.chartkit import Obj

REJECTED: dict[str, tuple[Obj, str]] = {
    "two replicas on the embedded SQLite": ({"replicaCount": 2}, "/replicaCount"),
    "three replicas on a sqlite URL": (
        {"replicaCount": 3, "backend": {"url": "sqlite:////data/x.db"}},
        "/replicaCount",
    ),
    "two replicas on memory://": ({"replicaCount": 2, "backend": {"url": "memory://"}}, "/replicaCount"),
    "URL and Secret both": (
        {"backend": {"url": "redis://r:6379", "existingSecret": {"name": "db"}}},
        "/backend/url",
    ),
    "all namespaces and a list": ({"watch": {"allNamespaces": True, "namespaces": ["a"]}}, "/watch/allNamespaces"),
    "unknown backend scheme": ({"backend": {"url": "http://db:80"}}, "/backend/url"),
    "misspelt key": ({"replicas": 2}, "'replicas'"),
    "negative replicas": ({"replicaCount": -1}, "/replicaCount"),
    "bad pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "bad digest": ({"image": {"digest": "latest"}}, "/image/digest"),
    "namespace not a DNS label": ({"watch": {"namespaces": ["Team_A"]}}, "/watch/namespaces/0"),
    "handler not a module path": ({"handlers": ["my handlers"]}, "/handlers/0"),
    "port out of range": ({"metrics": {"port": 70000}}, "/metrics/port"),
    "privileged container": ({"securityContext": {"privileged": True}}, "/securityContext/privileged"),
    "root allowed": ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
    "negative status interval": ({"statusInterval": -1}, "/statusInterval"),
    "status interval below the floor": ({"statusInterval": 0.05}, "/statusInterval"),
    "PDB percentage malformed": ({"podDisruptionBudget": {"maxUnavailable": "half"}}, "/podDisruptionBudget"),
    "relative SQLite dir": ({"backend": {"sqlite": {"dataDir": "data"}}}, "/backend/sqlite/dataDir"),
    "min interval not a duration": ({"minInterval": "often"}, "/minInterval"),
    "no Pod creates at all": ({"podCreateRate": {"qps": 0}}, "/podCreateRate/qps"),
    "account with a bad namespace": ({"allowedServiceAccounts": ["Team_A:runner"]}, "/allowedServiceAccounts/0"),
}

ACCEPTED: dict[str, Obj] = {
    "defaults": {},
    "one replica on a sqlite URL": {"backend": {"url": "sqlite:////var/lib/pyncette/x.db"}},
    "replicas on Redis": {"replicaCount": 3, "backend": {"url": "redis://:pw@redis:6379/0"}},
    "replicas on PostgreSQL": {"replicaCount": 2, "backend": {"url": "postgresql://u:p@pg:5432/pyncette"}},
    "replicas on DynamoDB": {"replicaCount": 2, "backend": {"url": "dynamodb://eu-west-1/tasks"}},
    "replicas on a Secret": {"replicaCount": 2, "backend": {"existingSecret": {"name": "db", "key": "url"}}},
    "scaled to zero": {"replicaCount": 0},
    "percentage PDB": {"podDisruptionBudget": {"maxUnavailable": "50%"}},
    "accounts by namespace": {"allowedServiceAccounts": ["runner", "team-a:reporter"]},
    "release namespace asked for": {"watch": {"releaseNamespace": True}},
}


@pytest.mark.parametrize(("values", "pointer"), REJECTED.values(), ids=REJECTED.keys())
def test_schema_rejects(chart: Chart, values: Obj, pointer: str) -> None:
    message = chart.render_error(values)
    assert "values don't meet the specifications of the schema" in message, message
    assert pointer in message, message


@pytest.mark.parametrize("values", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_schema_accepts(chart: Chart, values: Obj) -> None:
    assert chart.render(values)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"replicaCount": 2}, "replicaCount=2 needs a shared backend"),
        ({"backend": {"url": "redis://r", "existingSecret": {"name": "db"}}}, "give the backend URL one way only"),
        ({"watch": {"allNamespaces": True, "namespaces": ["a"]}}, "choose cluster-wide or a list of namespaces"),
    ],
)
def test_template_guards_hold_without_the_schema(chart: Chart, values: Obj, words: str) -> None:
    message = chart.render_error(values, "--skip-schema-validation")
    assert words in message, message


def test_no_namespace_to_serve_is_refused_with_the_reason(chart: Chart) -> None:
    message = dataclasses.replace(chart, tenants=None).render_error({"replicaCount": 1})
    assert "set watch.allNamespaces=true" in message
    assert "it holds the operator's ServiceAccount and the backend Secret" in message
