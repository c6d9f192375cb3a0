"""docker-compose.yml can't be started here (no Docker engine): validate it against the
Compose specification and check that it agrees with what the code reads."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

from transforms.config import LOCATIONS
from transforms.systems import load_systems

PROJECT = Path(__file__).resolve().parents[1]


def test_compose_file_validates_against_the_compose_spec():
    run = subprocess.run([Path(sys.executable).parent / "check-jsonschema", "--builtin-schema",
                          "vendor.compose-spec", str(PROJECT / "docker-compose.yml")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_compose_environment_names_what_the_code_reads():
    compose = yaml.safe_load((PROJECT / "docker-compose.yml").read_text(encoding="utf-8"))
    env = compose["x-airflow-env"]
    known = set(LOCATIONS) | {"ARKIV_HOME", "ARKIV_CATALOGUE_URL", "ARKIV_SYSTEMS_DIR", "ARKIV_EXPECTATIONS_DIR"}
    systems = load_systems(PROJECT / "dags" / "systems")
    known |= {t.files_root_env for s in systems.values() for t in s.tables.values() if t.files_root_env}
    known |= {s.inbox_env for s in systems.values() if s.inbox_env}
    arkiv_vars = {k for k in env if k.startswith("ARKIV_")}
    assert arkiv_vars <= known, f"unknown settings in docker-compose.yml: {arkiv_vars - known}"
    # every source system is wired: a connection for SQL, a document store, an inbox for deliveries
    for s in systems.values():
        if s.connection:
            assert f"AIRFLOW_CONN_{s.connection.upper()}" in env, s.name
        if s.inbox_env:
            assert s.inbox_env in env, s.name
        for t in s.tables.values():
            if t.files_root_env:
                assert t.files_root_env in env, (s.name, t.name)
    assert env["AIRFLOW__CORE__EXECUTOR"] in {"LocalExecutor", "CeleryExecutor"}
    services = compose["services"]
    for name in ("api-server", "scheduler", "dag-processor", "triggerer", "postgres"):
        assert "healthcheck" in services[name], name


def test_dockerfile_installs_from_the_lock_file():
    text = (PROJECT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"uv pip sync --system requirements\.lock", text)
    assert "--no-deps" in text
