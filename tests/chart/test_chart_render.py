"""What `helm template` produces for the values users set: lint, labels, Deployment, backend wiring."""

from __future__ import annotations

import tomllib

import pytest
import yaml

from chart.chartkit import NAMESPACE
from chart.chartkit import RELEASE
from chart.chartkit import REPO
from chart.chartkit import Chart
from chart.chartkit import Obj
from chart.chartkit import container
from chart.chartkit import env_of
from chart.chartkit import find
from chart.chartkit import one

REDIS = {"backend": {"url": "redis://redis.db:6379/0"}}

VALUE_SETS = {
    "defaults": {},
    "cluster-wide": {"watch": {"allNamespaces": True}},
    "namespaces": {"watch": {"namespaces": ["team-a", "team-b"]}},
    "secret-backend": {"replicaCount": 3, "backend": {"existingSecret": {"name": "pyncette-db", "key": "url"}}},
    "redis-servicemonitor": {**REDIS, "replicaCount": 2, "metrics": {"serviceMonitor": {"enabled": True}}},
    "minimal": {"metrics": {"enabled": False}, "podDisruptionBudget": {"enabled": False}, "rbac": {"create": False}},
}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_is_clean(chart: Chart, values: Obj) -> None:
    proc = chart.lint(values)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout and "[INFO]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_object_carries_the_standard_labels(chart: Chart, values: Obj) -> None:
    for obj in chart.render(values):
        labels = obj["metadata"].get("labels", {})
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert labels.get("app.kubernetes.io/name") == "pyncette-operator", where
        assert labels.get("app.kubernetes.io/instance") == RELEASE, where
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", where
        assert labels.get("app.kubernetes.io/version"), where
        assert labels.get("helm.sh/chart", "").startswith("pyncette-operator-"), where


def test_default_render_has_the_expected_objects(chart: Chart) -> None:
    kinds = sorted(o["kind"] for o in chart.render())
    assert kinds == sorted(
        [
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    )


def test_deployment_is_locked_down(chart: Chart) -> None:
    objs = chart.render(REDIS)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    c = container(objs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert pod["serviceAccountName"] == f"{RELEASE}-pyncette-operator"
    # The read-only root still has a writable /tmp.
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # noqa: S108 - an emptyDir, not the host's


def test_probes_hit_the_operator_liveness_and_readiness_endpoints(chart: Chart) -> None:
    objs = chart.render({"probes": {"port": 8181, "path": "/livez"}})
    c = container(objs)
    assert "--liveness=http://0.0.0.0:8181/livez" in c["args"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["health"] == 8181
    # Liveness must not follow the database (a restart would not bring it back); readiness does.
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}


def test_readiness_probe_path_can_differ_from_liveness(chart: Chart) -> None:
    c = container(chart.render({"probes": {"path": "/healthz", "readinessPath": "/readyz"}}))
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_helm_test_hook_asks_the_readiness_endpoint_through_its_own_service(chart: Chart) -> None:
    objs = chart.render_tests({"probes": {"port": 8181, "readinessPath": "/readyz"}, "tests": {"image": "bb:1"}})
    service, pod = one(objs, "Service"), one(objs, "Pod")
    for obj, weight in ((service, "-1"), (pod, "0")):
        assert obj["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert obj["metadata"]["annotations"]["helm.sh/hook-weight"] == weight
    assert service["spec"]["selector"] == one(chart.render(), "Deployment")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "health", "port": 8181, "targetPort": "health", "protocol": "TCP"}]
    (c,) = pod["spec"]["containers"]
    assert c["image"] == "bb:1"
    script = c["command"][-1]
    name = service["metadata"]["name"]
    assert f"${{{name.upper().replace('-', '_')}_SERVICE_HOST:-{name}.{NAMESPACE}.svc}}" in script
    assert ':8181/readyz"' in script
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert chart.render_tests({"tests": {"enabled": False}}) == []


def test_entrypoint_args_follow_values(chart: Chart) -> None:
    objs = chart.render(
        {
            "watch": {"namespaces": ["team-a", "team-b"]},
            "handlers": ["acme.jobs", "acme.reports"],
            "allowedServiceAccounts": ["runner"],
            "statusInterval": 30,
            "extraArgs": ["--log-level=DEBUG"],
        }
    )
    args = container(objs)["args"]
    assert args[0] == "run"
    assert "--metrics-port=9100" in args
    assert [a for a in args if a.startswith("--namespace=")] == ["--namespace=team-a", "--namespace=team-b"]
    assert [a for a in args if a.startswith("--handlers=")] == ["--handlers=acme.jobs", "--handlers=acme.reports"]
    assert "--allowed-service-accounts=runner" in args
    assert "--status-interval=30" in args
    assert args[-1] == "--log-level=DEBUG"
    assert "--all-namespaces" not in args


def test_watched_namespaces_and_cluster_wide_on_request(chart: Chart) -> None:
    args = container(chart.render({"watch": {"namespaces": ["team-a", "team-b"]}}))["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    args = container(chart.render({"watch": {"allNamespaces": True}}))["args"]
    assert "--all-namespaces" in args
    assert not [a for a in args if a.startswith("--namespace")]


def test_bounds_and_the_operators_own_service_account_reach_the_operator(chart: Chart) -> None:
    args = container(chart.render())["args"]
    assert f"--operator-service-account={NAMESPACE}:{RELEASE}-pyncette-operator" in args
    assert {"--min-interval=1s", "--pod-create-qps=10", "--pod-create-burst=20", "--backfill-max-slots=1000"} <= set(
        args
    )
    assert {"--health-bind-address=0.0.0.0", "--metrics-bind-address=0.0.0.0"} <= set(args)
    values = {
        "minInterval": "30s",
        "podCreateRate": {"qps": 2.5, "burst": 5},
        "backfillMaxSlots": 50,
        "probes": {"bindAddress": "10.0.0.1"},
        "metrics": {"bindAddress": "127.0.0.1"},
        "serviceAccount": {"name": "ops"},
        "allowedServiceAccounts": ["runner", "team-a:reporter"],
    }
    args = container(chart.render(values))["args"]
    assert f"--operator-service-account={NAMESPACE}:ops" in args
    assert {"--min-interval=30s", "--pod-create-qps=2.5", "--pod-create-burst=5", "--backfill-max-slots=50"} <= set(
        args
    )
    assert {"--health-bind-address=10.0.0.1", "--metrics-bind-address=127.0.0.1"} <= set(args)
    assert {"--allowed-service-accounts=runner", "--allowed-service-accounts=team-a:reporter"} <= set(args)


def test_embedded_sqlite_gets_an_emptydir_and_no_rolling_overlap(chart: Chart) -> None:
    objs = chart.render({"backend": {"sqlite": {"dataDir": "/data", "sizeLimit": "1Gi"}}})
    env = env_of(objs)
    assert "PYNCETTE_BACKEND_URL" not in env
    assert env["PYNCETTE_DATA_DIR"]["value"] == "/data"
    deployment = one(objs, "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["sqlite-data"]["emptyDir"] == {"sizeLimit": "1Gi"}
    assert {"name": "sqlite-data", "mountPath": "/data"} in container(objs)["volumeMounts"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_sqlite_url_also_gets_the_emptydir(chart: Chart) -> None:
    objs = chart.render({"backend": {"url": "sqlite:////var/lib/pyncette/tasks.db"}})
    assert env_of(objs)["PYNCETTE_BACKEND_URL"]["value"] == "sqlite:////var/lib/pyncette/tasks.db"
    assert any(v["name"] == "sqlite-data" for v in one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"])


def test_shared_backend_url_goes_to_env_without_sqlite_volume(chart: Chart) -> None:
    objs = chart.render({**REDIS, "replicaCount": 3})
    env = env_of(objs)
    assert env["PYNCETTE_BACKEND_URL"] == {"name": "PYNCETTE_BACKEND_URL", "value": "redis://redis.db:6379/0"}
    assert "PYNCETTE_DATA_DIR" not in env
    deployment = one(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert all(v["name"] != "sqlite-data" for v in deployment["spec"]["template"]["spec"]["volumes"])


def test_existing_secret_is_read_by_the_kubelet_not_the_operator(chart: Chart) -> None:
    objs = chart.render({"replicaCount": 2, "backend": {"existingSecret": {"name": "pyncette-db", "key": "dsn"}}})
    assert env_of(objs)["PYNCETTE_BACKEND_URL"]["valueFrom"] == {"secretKeyRef": {"name": "pyncette-db", "key": "dsn"}}
    # No Secret is created by the chart, and no RBAC rule mentions Secrets (see test_chart_rbac.py).
    assert not find(objs, "Secret")


def test_metrics_service_servicemonitor_and_pdb(chart: Chart) -> None:
    objs = chart.render({"metrics": {"port": 9200, "serviceMonitor": {"enabled": True, "interval": "15s"}}})
    service = one(objs, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9200, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"] == one(objs, "Deployment")["spec"]["selector"]["matchLabels"]
    monitor = one(objs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["interval"] == "15s"
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == one(objs, "Deployment")["spec"]["selector"]

    objs = chart.render({"metrics": {"enabled": False}, "podDisruptionBudget": {"enabled": False}})
    assert not find(objs, "Service") and not find(objs, "ServiceMonitor") and not find(objs, "PodDisruptionBudget")
    assert not [a for a in container(objs)["args"] if a.startswith("--metrics-port")]


def test_image_reference(chart: Chart) -> None:
    # By default the image is tagged with the chart's appVersion, which is the Python package's version.
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    app_version = yaml.safe_load((REPO / "charts/pyncette-operator/Chart.yaml").read_text())["appVersion"]
    assert app_version == version
    assert container(chart.render())["image"] == f"pyncette-operator:{version}"
    digest = "sha256:" + "ab" * 32
    objs = chart.render({"image": {"repository": "registry.example/pyncette-operator", "digest": digest}})
    assert container(objs)["image"] == f"registry.example/pyncette-operator@{digest}"
    objs = chart.render({"image": {"repository": "registry.example/pyncette-operator", "tag": "v9"}})
    assert container(objs)["image"] == "registry.example/pyncette-operator:v9"


def test_a_tag_of_digits_only_goes_in_with_set_string(chart: Chart) -> None:
    """The README's `make image` tags name the content (12 hex digits), and one in 300 has no letter;
    dates are tags too. --set reads those as numbers, which the schema refuses in one line."""
    objs = chart.render(None, "--set-string", "image.tag=202611281234")
    assert container(objs)["image"] == "pyncette-operator:202611281234"
    error = chart.render_error(None, "--set", "image.tag=202611281234")
    assert "/image/tag" in error and "want string" in error
