"""The chart's RBAC, read statically: enough for the operator, and nothing more.

The cluster tests (test_chart_cluster.py) prove the same against a real apiserver; these catch a
widened rule before anything is installed.
"""

from __future__ import annotations

import dataclasses

from chart.chartkit import NAMESPACE
from chart.chartkit import NAMESPACED_NEEDS
from chart.chartkit import Chart
from chart.chartkit import Obj
from chart.chartkit import find
from chart.chartkit import grants
from chart.chartkit import rules_of

RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
SA = "pt-pyncette-operator"


def _all_grants(objs: list[Obj]) -> set[tuple[str, str, str]]:
    return set().union(*(grants(rules_of(o)) for o in objs if o["kind"] in ("Role", "ClusterRole")))


def _bound_roles(objs: list[Obj]) -> dict[tuple[str, str | None], Obj]:
    """(kind, namespace) -> role for every role bound to the chart's ServiceAccount."""
    roles = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")): o for o in objs}
    bound: dict[tuple[str, str | None], Obj] = {}
    for binding in find(objs, "RoleBinding") + find(objs, "ClusterRoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SA, "namespace": NAMESPACE}]
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        role = roles[(ref["kind"], ref["name"], namespace)]
        bound[(ref["kind"] + ":" + ref["name"], namespace)] = role
    return bound


def test_no_rule_touches_secrets_or_uses_wildcards(chart: Chart) -> None:
    for values in ({}, {"watch": {"allNamespaces": True}}, {"watch": {"namespaces": ["a", "b"]}}):
        objs = chart.render(values)
        for group, resource, verb in _all_grants(objs):
            assert "secrets" not in resource, (group, resource, verb)
            assert "*" not in (group, resource, verb), (group, resource, verb)
            assert verb not in ("escalate", "bind", "impersonate", "deletecollection"), (group, resource, verb)
        for obj in objs:
            for rule in rules_of(obj):
                assert "nonResourceURLs" not in rule


def test_namespaced_mode_grants_exactly_the_needs_in_each_watched_namespace(chart: Chart) -> None:
    objs = chart.render({"watch": {"namespaces": ["team-a", "team-b"]}})
    roles = find(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert grants(rules_of(role)) == NAMESPACED_NEEDS
    # Nothing cluster-scoped at all: outside the watched namespaces the operator can do nothing.
    assert not find(objs, "ClusterRole") and not find(objs, "ClusterRoleBinding")
    bound = _bound_roles(objs)
    assert {ns for (_, ns) in bound} == {"team-a", "team-b"}


def test_the_release_namespace_is_served_only_when_asked(chart: Chart) -> None:
    """It holds the operator's ServiceAccount and backend Secret: no tenant's Pod belongs there."""
    message = dataclasses.replace(chart, tenants=None).render_error({})
    assert "watch: name the namespaces whose PyncetteTasks the operator runs" in message
    assert f"The release namespace {NAMESPACE} is not served unless you set watch.releaseNamespace=true" in message
    objs = chart.render({"watch": {"namespaces": ["team-a"]}})
    assert [r["metadata"]["namespace"] for r in find(objs, "Role")] == ["team-a"]
    # Asked for: a Role there too.
    objs = chart.render({"watch": {"namespaces": ["team-a"], "releaseNamespace": True}})
    assert sorted(r["metadata"]["namespace"] for r in find(objs, "Role")) == [NAMESPACE, "team-a"]
    objs = chart.render({"watch": {"releaseNamespace": True}})
    assert [b["metadata"]["namespace"] for b in find(objs, "RoleBinding")] == [NAMESPACE]


def test_cluster_wide_mode_excludes_the_release_namespace_unless_asked(chart: Chart) -> None:
    def args(watch: Obj) -> list[str]:
        deployment = find(chart.render({"watch": watch}), "Deployment")[0]
        result: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        return result

    assert f"--exclude-namespace={NAMESPACE}" in args({"allNamespaces": True})
    assert not [a for a in args({"allNamespaces": True, "releaseNamespace": True}) if "exclude" in a]


def test_cluster_wide_mode_uses_one_cluster_role_with_the_same_rules(chart: Chart) -> None:
    objs = chart.render({"watch": {"allNamespaces": True}})
    assert not find(objs, "Role") and not find(objs, "RoleBinding")
    assert _all_grants(objs) == NAMESPACED_NEEDS
    assert len(_bound_roles(objs)) == 1


def test_cluster_scoped_names_include_the_release_namespace(chart: Chart) -> None:
    objs = chart.render({"watch": {"allNamespaces": True}})
    for obj in find(objs, "ClusterRole") + find(objs, "ClusterRoleBinding"):
        assert obj["metadata"]["name"].startswith(f"{NAMESPACE}-"), obj["metadata"]["name"]


def test_rbac_can_be_left_to_the_cluster_admin(chart: Chart) -> None:
    objs = chart.render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops"}})
    assert not [o for o in objs if o["kind"] in RBAC_KINDS]
    assert not find(objs, "ServiceAccount")
    deployment = find(objs, "Deployment")[0]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
