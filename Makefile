# The one entry point for developers and CI. See CONTRIBUTING.md for the dev loop.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

.PHONY: help venv run run-stop run-library test test-unit lint bench services-up services-down cluster-up cluster-down node-up node-down node-images test-node e2e compat-1x clean image registry-up registry-down skaffold e2e-node test-py312

help:
	@echo "make run            - local cluster + CRD + operator on embedded SQLite + a sample task, show its runs"
	@echo "make run-stop       - stop the operator started by make run (make cluster-down stops the cluster)"
	@echo "make run-library    - the scheduler library alone: an example app on SQLite printing its runs"
	@echo "make venv           - the virtualenv .venv with the package and its dev tools"
	@echo "make test           - set up everything and run lint + the whole test suite (but tests/node)"
	@echo "make test-py312     - the scheduler core and conformance tests on Python 3.12 too (.venv-3.12; the image's Python)"
	@echo "make test-unit      - the tests that need neither servers nor the cluster"
	@echo "make e2e            - the end-to-end suite (e2e/) against the local cluster or \$$KUBECONFIG"
	@echo "make lint           - ruff, mypy --strict, import-linter"
	@echo "make bench          - benchmarks (compares against pyncette 1.1.0)"
	@echo "make compat-1x      - pyncette 1.1.0's own test suite against this package (hack/compat)"
	@echo "make services-up    - start Redis, PostgreSQL, MariaDB and the DynamoDB endpoint"
	@echo "make services-down  - stop them"
	@echo "make cluster-up     - build (once) and start the local Kubernetes control plane"
	@echo "make cluster-down   - stop the control plane (and the real node, if up)"
	@echo "make node-up        - add a real node (containerd, kubelet, kube-proxy) to the control plane; root"
	@echo "make node-down      - remove the real node: no process, mount, bridge, chain or cgroup left"
	@echo "make node-images    - build busybox/redis/pause from Debian packages, push to the local registry"
	@echo "make test-node      - node-up, then the tests that run real containers (tests/node)"
	@echo "make e2e-node       - node-up, then the operator image with Helm on the real node, the README path, skaffold run"
	@echo "make image          - build the operator image with podman, push it to the local registry, print its name"
	@echo "make registry-up    - start the local image registry on 127.0.0.1:5000 (make image does it too)"
	@echo "make registry-down  - stop the local image registry (its blobs stay cached)"
	@echo "make skaffold       - build (once) the pinned skaffold into the tool cache and print its path"
	@echo "make clean          - remove .venv and the tool caches"

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(VENV)/bin/ruff check operator tests benchmarks examples e2e hack/compat
	$(VENV)/bin/ruff format --check operator tests benchmarks e2e hack/compat
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The image's Python (3.12: executions start eagerly) for the core and conformance suites.
test-py312: services-up
	bash hack/test-python.sh 3.12 $(PYTEST_ARGS)

test-unit: venv
	$(VENV)/bin/pytest -m "not cluster and not services" $(PYTEST_ARGS)

# The real-node tests (marker node) run in test-node, on a node make test does not bring up.
# Library tests first while a fresh machine builds the control plane, then the cluster tests, both in
# parallel workers, then the exclusive ones alone (hack/test.sh; PYNCETTE_TEST_WORKERS=0: one process).
test: venv lint services-up
	bash hack/test.sh $(PYTEST_ARGS)

e2e: venv cluster-up
	$(VENV)/bin/pytest e2e -m "not node" $(PYTEST_ARGS)

# The operator image installed with Helm on the real node, the README's Helm path, skaffold run.
e2e-node: venv node-up
	PYNCETTE_E2E_REAL_NODE=1 $(VENV)/bin/pytest e2e -m node $(PYTEST_ARGS)

compat-1x: venv services-up
	bash hack/compat/run.sh $(PYTEST_ARGS)

bench: venv services-up
	$(PY) benchmarks/throughput.py --compare $(BENCH_ARGS)

services-up:
	bash hack/services/up.sh

services-down:
	bash hack/services/down.sh

cluster-up:
	bash hack/cluster/up.sh

cluster-down:
	bash hack/cluster/down.sh

node-up: cluster-up
	bash hack/node/up.sh

node-down:
	bash hack/node/down.sh

node-images:
	bash hack/node/images.sh

test-node: venv node-up
	$(VENV)/bin/pytest tests/node -m node $(PYTEST_ARGS)

image:
	@bash hack/images/image.sh

registry-up:
	bash hack/images/registry.sh up

registry-down:
	bash hack/images/registry.sh down

skaffold:
	@bash hack/cluster/build.sh skaffold
	@source hack/cluster/lib.sh && echo "$$(component_dir skaffold)/skaffold"

run: venv
	bash hack/demo.sh

run-stop:
	bash hack/demo.sh stop

run-library: venv
	bash hack/run.sh

clean:
	rm -rf $(VENV) .venv-* .pytest_cache .mypy_cache .ruff_cache
