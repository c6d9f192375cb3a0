# Arkivflöde — two commands set everything up on a fresh machine:
#   make demo   archive the Lex demo system end to end (real Airflow run, embedded defaults)
#   make test   the test suite (what CI runs)
# Everything the embedded default keeps is under var/ (delete it to start over).

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed

export ARKIV_HOME ?= $(CURDIR)/var
export AIRFLOW_HOME ?= $(ARKIV_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION := True
export GX_ANALYTICS_ENABLED := False
# Task logs without Great Expectations' import-time INFO lines (deploy/airflow.env says why)
export AIRFLOW__LOGGING__NAMESPACE_LEVELS := great_expectations=WARNING
DEMO_SIZE ?= 200
# The runs the demo makes: logical date 2026-01-02 gives yearly DAGs the interval 2025 and
# monthly ones December 2025. SYSTEMS: every YAML in dags/systems (override to run a subset).
DEMO_DATE ?= 2026-01-02
SYSTEMS ?= $(basename $(notdir $(wildcard dags/systems/*.yaml)))

comma := ,
empty :=
space := $(empty) $(empty)
.PHONY: install system-packages demo drill retention bench test reliability audit lint airflow clean lock

# Debian packages the project runs (not Python): LibreOffice converts office documents to PDF/A,
# Chromium and ChromeDriver drive the archivist's page in the browser tests. Installed once, only
# what is missing (needs root or sudo; skipped with a message when neither is available).
DEB_PACKAGES := libreoffice-writer-nogui libreoffice-calc-nogui chromium chromium-driver fonts-dejavu-core

# Bytecode is compiled at install (uv does not by default, and where PYTHONDONTWRITEBYTECODE is
# set, as on this CI machine, nothing else ever writes it): without it every process compiles
# what it imports (Airflow, Great Expectations, pandas) from source, seconds each time.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade >/dev/null
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -q -j 0 transforms plugins dags demo bench >/dev/null
	touch $(STAMP)

install: $(STAMP) system-packages oidc-provider  ## create .venv from the lock file (reproducible: pinned versions and hashes)

# The tests' OpenID Connect provider (tests/oidc/provider.mjs): the npm package oidc-provider, installed
# exactly as pinned in tests/oidc/package-lock.json, again only when the lock file changes. Without node
# and npm the tests that need the provider are skipped (they say so).
.PHONY: oidc-provider
oidc-provider:  ## the npm packages of the tests' OpenID Connect provider, from its lock file
	@if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then \
	  if [ ! -f tests/oidc/node_modules/.package-lock.json ] \
	     || [ tests/oidc/package-lock.json -nt tests/oidc/node_modules/.package-lock.json ]; then \
	    npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error; \
	  fi; \
	else echo "node/npm not found: the OpenID Connect tests will be skipped"; fi

system-packages:  ## the Debian packages above, if any is missing
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing Debian packages: $$missing"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lock:  ## re-resolve requirements.lock after changing dependencies in pyproject.toml
	$(BIN)/uv pip compile --quiet pyproject.toml --extra dev --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes -o requirements.lock

$(AIRFLOW_HOME)/airflow.db: $(STAMP)
	mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || { tail -20 $(AIRFLOW_HOME)/db-migrate.log; exit 1; }

demo: install $(AIRFLOW_HOME)/airflow.db  ## generate every source system, run each DAG with `airflow dags test`, print a summary
	$(BIN)/arkiv demo --size $(DEMO_SIZE) --systems $(subst $(space),$(comma),$(strip $(SYSTEMS)))
	@set -a; . $(ARKIV_HOME)/demo/env.sh; set +a; \
	for s in $(SYSTEMS); do \
	  echo "Running the $$s DAG (airflow dags test $$s $(DEMO_DATE)); log: $(AIRFLOW_HOME)/demo-$$s.log"; \
	  $(BIN)/airflow dags test $$s $(DEMO_DATE) > $(AIRFLOW_HOME)/demo-$$s.log 2>&1; \
	  grep -q "state=success" $(AIRFLOW_HOME)/demo-$$s.log \
	    || { grep -E "CONTENT PROBLEM|ERROR|Error" $(AIRFLOW_HOME)/demo-$$s.log | tail -15; exit 1; }; \
	done
	@$(BIN)/arkiv summary

drill: install  ## a failed quality gate end to end in its own ARKIV_HOME (new under var/drill, or DRILL_HOME=DIR)
	$(BIN)/arkiv drill $(if $(DRILL_HOME),--home $(DRILL_HOME))

RETENTION_DATE ?= 2040-01-02
retention: install $(AIRFLOW_HOME)/airflow.db  ## run the retention DAG as of RETENTION_DATE (the clock moved forward)
	@set -a; . $(ARKIV_HOME)/demo/env.sh; set +a; \
	$(BIN)/airflow dags test retention $(RETENTION_DATE) > $(AIRFLOW_HOME)/retention-$(RETENTION_DATE).log 2>&1; \
	grep -q "state=success" $(AIRFLOW_HOME)/retention-$(RETENTION_DATE).log \
	  || { grep -E "CONTENT PROBLEM|ERROR" $(AIRFLOW_HOME)/retention-$(RETENTION_DATE).log | tail -15; exit 1; }
	@cat $(ARKIV_HOME)/reports/retention/plan-$(RETENTION_DATE).txt
	@$(BIN)/arkiv gallring list

BENCH_SIZE ?= quick
bench: install  ## benchmarks side by side, ratios against baselines (BENCH_SIZE=tiny|quick|large); see bench/README.md
	$(BIN)/python -m bench --size $(BENCH_SIZE)

test: install  ## the whole suite, as CI runs it (unit, DAG integrity, end-to-end Airflow runs, integration)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

reliability: install  ## failpoints, infrastructure faults, reconcile, fuzzing, sensitive-value scan, dependency audit; prints the tables (var/reliability.json)
	ARKIV_RELIABILITY_REPORT=$(ARKIV_HOME)/reliability.json $(BIN)/python -m pytest tests/reliability -n 0 -q -p no:cacheprovider
	@$(MAKE) --no-print-directory audit

audit: install  ## dependency audit: every package of requirements.lock against PyPI's known vulnerabilities (var/dependency-audit.json)
	@.ci/audit $(ARKIV_HOME)/dependency-audit.json; rc=$$?; \
	if [ $$rc -eq 4 ]; then echo "(some packages could not be audited here: see the report)"; exit 0; fi; exit $$rc

lint: install  ## ruff
	$(BIN)/ruff check .

# The UI's port, and every setting that follows from it: the tasks reach the API server's
# execution API at EXECUTION_API_SERVER_URL (left alone, http://localhost:8080/execution/, so a
# moved port would fail every task), and links in alerts use BASE_URL. AIRFLOW_HOST: the name
# the UI is opened by. METRICS=1: Airflow's and Arkivflöde's metrics as StatsD to
# 127.0.0.1:STATSD_PORT (docs/operations.md, "Metrics").
PORT ?= 8080
AIRFLOW_HOST ?= localhost
METRICS ?=
STATSD_PORT ?= 8125
airflow: install $(AIRFLOW_HOME)/airflow.db  ## Airflow UI on http://localhost:PORT (default 8080; airflow standalone; password in var/airflow)
	@test -f $(ARKIV_HOME)/demo/env.sh || $(BIN)/arkiv demo --size $(DEMO_SIZE)
	set -a; . $(ARKIV_HOME)/demo/env.sh; set +a; \
	export AIRFLOW__API__PORT=$(PORT) AIRFLOW__API__BASE_URL=http://$(AIRFLOW_HOST):$(PORT) \
	  AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://$(AIRFLOW_HOST):$(PORT)/execution/ \
	  AIRFLOW__CORE__DEFAULT_TIMEZONE=Europe/Stockholm; \
	$(if $(METRICS),export AIRFLOW__METRICS__STATSD_ON=True AIRFLOW__METRICS__STATSD_HOST=127.0.0.1 \
	  AIRFLOW__METRICS__STATSD_PORT=$(STATSD_PORT) AIRFLOW__METRICS__STATSD_PREFIX=airflow;) \
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/airflow standalone

clean:  ## remove everything the embedded default keeps (var/), not the virtualenv
	rm -rf var
