"""docker-compose.yml can't be started here (no Docker engine): validate it against the
Compose specification and check that it agrees with what the code reads."""

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from transforms.config import ARCHIVES, LOCATIONS
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
    # the S3 settings S3Config.from_env reads (literal names, and the per-archive Object Lock pair)
    known |= set(re.findall(r'"(ARKIV_S3_[A-Z0-9_]+)"', (PROJECT / "transforms" / "config.py").read_text()))
    known |= {f"ARKIV_{a.upper()}_OBJECT_LOCK_{k}" for a in ARCHIVES for k in ("MODE", "DAYS")}
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
    services = compose["services"]
    for name in ("api-server", "scheduler", "dag-processor", "triggerer", "postgres"):
        assert "healthcheck" in services[name], name


def test_dockerfile_installs_from_the_lock_file():
    text = (PROJECT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"uv pip sync --system requirements\.lock", text)
    assert "--no-deps" in text


# --- the production path: the same settings the CeleryExecutor integration test proved ----------

def _airflow_cluster():
    """tests/integration/airflow_cluster.py: where the integration test's settings live."""
    import importlib.util

    if "airflow_cluster" in sys.modules:
        return sys.modules["airflow_cluster"]
    spec = importlib.util.spec_from_file_location("airflow_cluster", PROJECT / "tests/integration/airflow_cluster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["airflow_cluster"] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def _compose() -> dict:
    return yaml.safe_load((PROJECT / "docker-compose.yml").read_text(encoding="utf-8"))


AIRFLOW_SERVICES = ("airflow-init", "api-server", "scheduler", "dag-processor", "triggerer", "worker")


def test_compose_runs_the_settings_the_celery_test_proved():
    cluster = _airflow_cluster()
    compose = _compose()
    shared = cluster.read_env_file()
    assert cluster.AIRFLOW_ENV_FILE == PROJECT / "deploy" / "airflow.env"
    assert shared["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for name in AIRFLOW_SERVICES:  # every Airflow service reads the file the test reads
        assert compose["services"][name]["env_file"] == ["deploy/airflow.env"], name
    env = compose["x-airflow-env"]
    # the endpoints and secrets the test had to set are set here too, and nothing is set twice
    assert set(cluster.ENDPOINT_VARIABLES) <= set(env), set(cluster.ENDPOINT_VARIABLES) - set(env)
    twice = set(shared) & set(env)
    assert not twice, f"set in both deploy/airflow.env and docker-compose.yml: {twice}"
    # same kinds of services behind them as in the test
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert env["ARKIV_CATALOGUE_URL"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://api-server:8080/execution/"
    assert env["ARKIV_MELLANARKIV"].startswith("s3://") and env["ARKIV_SLUTARKIV"].startswith("s3://")


def test_compose_has_every_service_of_a_production_deployment():
    compose = _compose()
    services = compose["services"]
    assert set(services) >= {*AIRFLOW_SERVICES, "postgres", "redis", "minio", "minio-init", "statsd-exporter"}
    one_shot = {"airflow-init", "minio-init"}
    for name, service in services.items():
        if name not in one_shot:
            assert "healthcheck" in service, name
            assert service.get("restart") == "unless-stopped", name
    # workers scale (`--scale worker=N`): no fixed name, no host port
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]
    # what must survive a restart is on named volumes
    volumes = set(compose["volumes"])
    for service, path in (("postgres", "/var/lib/postgresql/data"), ("redis", "/data"), ("minio", "/data"),
                          ("worker", "/data")):
        mounted = {v.split(":")[0] for v in services[service]["volumes"] if v.split(":")[1] == path}
        assert mounted and mounted <= volumes, (service, path)
    # secrets come from .env, and .env.example names every one of them
    text = (PROJECT / "docker-compose.yml").read_text(encoding="utf-8")
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    example = {line.split("=", 1)[0] for line in (PROJECT / ".env.example").read_text(encoding="utf-8").splitlines()
               if "=" in line and not line.startswith("#")}
    assert required <= example, required - example
    assert not re.search(r"PASSWORD: [^$\s]", text), "a literal password in docker-compose.yml"


def test_minio_init_creates_the_buckets_the_archives_name_with_object_lock_on_the_slutarkiv():
    env = _compose()["x-airflow-env"]
    script = (PROJECT / "deploy" / "minio-init.sh").read_text(encoding="utf-8")
    mellanarkiv = env["ARKIV_MELLANARKIV"].removeprefix("s3://")
    slutarkiv = env["ARKIV_SLUTARKIV"].removeprefix("s3://")
    assert re.search(rf"mc mb --ignore-existing local/{mellanarkiv}$", script, flags=re.M)
    assert re.search(rf"mc mb --ignore-existing --with-lock local/{slutarkiv}$", script, flags=re.M)
    assert env["ARKIV_SLUTARKIV_OBJECT_LOCK_MODE"].split(":-")[-1].rstrip("}") in {"COMPLIANCE", "GOVERNANCE"}
    policy = json.loads((PROJECT / "deploy" / "minio-arkivflode-policy.json").read_text(encoding="utf-8"))
    resources = {r for s in policy["Statement"] for r in s["Resource"]}
    assert resources == {f"arn:aws:s3:::{b}{s}" for b in (mellanarkiv, slutarkiv) for s in ("", "/*")}


def test_metrics_go_to_the_statsd_exporter_on_the_port_airflow_sends_to():
    compose = _compose()
    shared = _airflow_cluster().read_env_file()
    assert shared["AIRFLOW__METRICS__STATSD_ON"] == "True"
    assert compose["x-airflow-env"]["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter"
    exporter = compose["services"]["statsd-exporter"]
    assert f"--statsd.listen-udp=:{shared['AIRFLOW__METRICS__STATSD_PORT']}" in exporter["command"]
    mapping = yaml.safe_load((PROJECT / "deploy" / "statsd-mapping.yml").read_text(encoding="utf-8"))
    prefix = shared["AIRFLOW__METRICS__STATSD_PREFIX"]
    assert any(m["match"] == f"{prefix}.arkivflode.*.*" for m in mapping["mappings"])
