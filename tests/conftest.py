"""Test-wide plugins: the local Kubernetes cluster and the database services."""

pytest_plugins = ["plugins.kube", "plugins.services"]
