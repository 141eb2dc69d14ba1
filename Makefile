# selfheal: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/.cache/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help prereqs servers venv tools lint test test-unit test-integration test-e2e cluster-up \
        cluster-down cluster-status demo bench bench-anomaly manifests clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# Checked in the first second, before any slow step; hack/preflight.sh installs with apt
# what it can (as root) and otherwise prints the exact command to run.
prereqs: ## check (and, as root, apt-get install) python3-venv, Go >= 1.26 unless the binaries are cached, prometheus, prometheus-alertmanager
	@VENV=$(VENV) hack/preflight.sh venv go servers

servers: ## check (and, as root, apt-get install) the real servers: Debian's prometheus, prometheus-alertmanager
	@hack/preflight.sh servers

$(VENV)/.stamp: pyproject.toml requirements.lock
	@VENV=$(VENV) hack/preflight.sh venv
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.stamp ## create the virtual environment from the lock

tools: ## build (or reuse) kube-apiserver, kube-controller-manager, kubectl, etcd, helm
	hack/build-tools.sh

lint: venv ## ruff, mypy --strict, import-linter
	$(VENV)/bin/ruff check operator tests bench hack
	$(VENV)/bin/ruff format --check operator tests bench hack
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: prereqs venv tools lint ## lint, then every test: unit, integration (real API server, Prometheus, Jira stand-in), e2e
	$(PY) -m pytest tests

test-unit: venv ## pure tests only, no servers
	$(PY) -m pytest tests/unit

test-integration: prereqs venv tools
	$(PY) -m pytest tests/integration

test-e2e: prereqs venv tools
	$(PY) -m pytest tests/e2e

cluster-up: venv tools ## start the local control plane; prints the kubeconfig path
	$(PY) -m tests.support.cluster up

cluster-down: venv ## stop the local control plane and delete its data
	$(PY) -m tests.support.cluster down

cluster-status: venv ## is the local control plane up? prints the kubeconfig and logs path
	$(PY) -m tests.support.cluster status

demo: prereqs venv tools ## play the whole loop on the local control plane
	$(PY) -m tests.support.demo

bench: prereqs venv tools ## cluster-scale benchmarks; writes bench/out/report.{md,json}
	$(PY) -m bench.run

bench-anomaly: venv ## NAB scores and throughput of the anomaly detector
	$(PY) -m bench.anomaly.run

manifests: ## regenerate manifests/selfheal.yaml, the chart's CRD copies and its values table
	hack/render-manifests.sh

clean: ## remove the venv and build caches (not the Go module cache)
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
