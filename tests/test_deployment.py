"""docker-compose.yml can't be started here (no Docker engine): validate it against the
Compose specification and check that it agrees with what the code reads."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from transforms.config.settings import ARCHIVES, LOCATIONS
from transforms.config.systems import load_systems

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
    settings_py = (PROJECT / "transforms" / "config" / "settings.py").read_text(encoding="utf-8")
    known |= set(re.findall(r'"(ARKIV_S3_[A-Z0-9_]+)"', settings_py))
    # the working bucket, wherever in transforms/ it is read
    known |= {"ARKIV_WORK"} & {n for p in (PROJECT / "transforms").rglob("*.py")
                               for n in re.findall(r'"(ARKIV_[A-Z0-9_]+)"', p.read_text(encoding="utf-8"))}
    known |= {f"ARKIV_{a.upper()}_OBJECT_LOCK_{k}" for a in ARCHIVES for k in ("MODE", "DAYS")}
    # where alerts go (plugins/arkivflode_airflow/alerts.py and notifiers.py)
    for module in ("alerts.py", "notifiers.py"):
        text = (PROJECT / "plugins" / "arkivflode_airflow" / module).read_text(encoding="utf-8")
        known |= set(re.findall(r'"(ARKIV_ALERT_[A-Z0-9_]+)"', text))
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
    for service, path in (("postgres", "/var/lib/postgresql/data"), ("redis", "/data"), ("minio", "/data")):
        mounted = {v.split(":")[0] for v in services[service]["volumes"] if v.split(":")[1:2] == [path]}
        assert mounted and mounted <= volumes, (service, path)
    # secrets come from .env, and .env.example names every one of them
    text = (PROJECT / "docker-compose.yml").read_text(encoding="utf-8")
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    example = {line.split("=", 1)[0] for line in (PROJECT / ".env.example").read_text(encoding="utf-8").splitlines()
               if "=" in line and not line.startswith("#")}
    assert required <= example, required - example
    assert not re.search(r"PASSWORD: [^$\s]", text), "a literal password in docker-compose.yml"


def test_the_airflow_containers_share_no_volume():
    """Shared-nothing: the Airflow containers meet only in PostgreSQL, Redis and the buckets. Their
    scratch and logs are anonymous volumes (one per container, per scaled worker too); nothing an
    Airflow container writes is mounted into another."""
    compose = _compose()
    services, named = compose["services"], set(compose.get("volumes") or {})
    assert "arkiv-data" not in named and "airflow-logs" not in named
    env = compose["x-airflow-env"]
    assert env["ARKIV_HOME"] == "/data" and env["ARKIV_WORK"].startswith("s3://")
    writable: dict[str, set[str]] = {}
    anonymous: dict[str, set[str]] = {}
    for name in AIRFLOW_SERVICES:
        for v in services[name].get("volumes", []):
            source, target, mode = re.fullmatch(r"(?:(\$\{[^}]*\}|[^:$]+):)?([^:]+)(?::(ro|rw))?", v).groups()
            if source is None:
                anonymous.setdefault(name, set()).add(target)  # this container's own
                continue
            assert source not in named, f"{name} mounts the named volume {source}"
            if mode != "ro":
                writable.setdefault(target, set()).add(name)
    # the only writable bind mount left is the delivery inbox that source systems write into
    assert set(writable) <= {"/inbox"}, writable
    assert anonymous["worker"] >= {"/data", "/opt/airflow/logs"}


def test_minio_init_creates_the_buckets_the_archives_name_with_object_lock_on_the_slutarkiv():
    env = _compose()["x-airflow-env"]
    script = (PROJECT / "deploy" / "minio-init.sh").read_text(encoding="utf-8")
    mellanarkiv = env["ARKIV_MELLANARKIV"].removeprefix("s3://")
    slutarkiv = env["ARKIV_SLUTARKIV"].removeprefix("s3://")
    work = env["ARKIV_WORK"].removeprefix("s3://").split("/")[0]
    assert re.search(rf"mc mb --ignore-existing local/{work}$", script, flags=re.M)  # no lock: working copies
    assert re.search(rf"mc mb --ignore-existing local/{mellanarkiv}$", script, flags=re.M)
    assert re.search(rf"mc mb --ignore-existing --with-lock local/{slutarkiv}$", script, flags=re.M)
    assert env["ARKIV_SLUTARKIV_OBJECT_LOCK_MODE"].split(":-")[-1].rstrip("}") in {"COMPLIANCE", "GOVERNANCE"}
    policy = json.loads((PROJECT / "deploy" / "minio-arkivflode-policy.json").read_text(encoding="utf-8"))
    resources = {r for s in policy["Statement"] for r in s["Resource"]}
    assert resources == {f"arn:aws:s3:::{b}{s}" for b in (work, mellanarkiv, slutarkiv) for s in ("", "/*")}


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


# --- task logs: third-party noise filtered where the task runs -------------------------------------

_QUALITY_STEP = r"""
import os, sys
from airflow.sdk.log import configure_logging

# as the task runner sets a task process up: JSON lines, the [logging] settings of this environment;
# then it parses the task's DAG file
configure_logging(json_output=True, output=sys.stdout.buffer)
import runpy
runpy.run_path("dags/systems/lex.py")
from arkivflode_airflow import steps
from transforms import pipeline

# the two steps as the DAG's tasks call them
batch = steps.run(pipeline.extract, "lex", "2025-01-01", "2026-01-01", os.environ["ARKIV_CONN_LEX_DB"])
steps.run(pipeline.check_quality, "lex", batch["manifest"])
"""


def _quality_step_log(tmp_path, lex_source, levels: str | None) -> list[dict]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__LOGGING__", "ARKIV_"))}
    env.update(ARKIV_HOME=str(tmp_path / ("filtered" if levels else "unfiltered")),
               ARKIV_LEX_FILES=str(lex_source["files"]), ARKIV_CONN_LEX_DB=lex_source["url"],
               AIRFLOW_HOME=str(tmp_path / "airflow"), GX_ANALYTICS_ENABLED="False")
    if levels is not None:
        env["AIRFLOW__LOGGING__NAMESPACE_LEVELS"] = levels
    done = subprocess.run([sys.executable, "-c", _QUALITY_STEP], env=env, capture_output=True, text=True,
                          timeout=600, cwd=PROJECT)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_the_quality_step_logs_its_result_not_great_expectations_noise(tmp_path, lex_source):
    levels = _airflow_cluster().read_env_file()["AIRFLOW__LOGGING__NAMESPACE_LEVELS"]
    assert "great_expectations=WARNING" in levels
    makefile = (PROJECT / "Makefile").read_text(encoding="utf-8")
    assert f"export AIRFLOW__LOGGING__NAMESPACE_LEVELS := {levels}" in makefile  # make demo / make airflow too

    noisy = _quality_step_log(tmp_path, lex_source, None)
    quiet = _quality_step_log(tmp_path, lex_source, levels)
    gx = [line for line in noisy if str(line.get("logger", "")).startswith("great_expectations")]
    assert len(gx) > 100, "the noise this filter is for is not there: the test would prove nothing"
    assert not [line for line in quiet if str(line.get("logger", "")).startswith("great_expectations")
                and line.get("level") in ("debug", "info")]
    ours = [line for line in quiet if line.get("logger") == "transforms.quality.checks"]
    assert ours, "the quality step's own line is kept"
    assert len(quiet) <= 20, [line.get("event") for line in quiet]


# --- make airflow: one port, and everything that follows from it ----------------------------------

def _make_airflow(**variables) -> str:
    """The commands `make airflow` would run (make -n: printed, not run)."""
    args = [f"{k}={v}" for k, v in variables.items()]
    done = subprocess.run(["make", "-n", "--no-print-directory", "airflow", *args], cwd=PROJECT, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _airflow_settings(text: str) -> dict[str, str]:
    return dict(re.findall(r"\b(AIRFLOW__[A-Z_]+)=([^\s;]+)", text))


def test_make_airflow_moves_the_port_and_what_depends_on_it():
    from airflow.configuration import conf

    settings = _airflow_settings(_make_airflow(PORT=8081))
    assert settings["AIRFLOW__API__PORT"] == "8081"
    # without this the tasks call the execution API on 8080 and every one of them fails
    assert settings["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://localhost:8081/execution/"
    assert settings["AIRFLOW__API__BASE_URL"] == "http://localhost:8081"  # links in alerts and the UI
    assert settings["AIRFLOW__CORE__DEFAULT_TIMEZONE"] == "Europe/Stockholm"
    assert "AIRFLOW__METRICS__STATSD_ON" not in settings
    for name in settings:  # each is a real Airflow option (a misspelt one is silently ignored)
        section, key = name.removeprefix("AIRFLOW__").lower().split("__", 1)
        assert key in conf.configuration_description.get(section, {}).get("options", {}), name
    assert _airflow_settings(_make_airflow())["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == \
        "http://localhost:8080/execution/"


def test_make_airflow_switches_metrics_on_with_one_variable():
    settings = _airflow_settings(_make_airflow(METRICS=1, STATSD_PORT=9125))
    assert settings["AIRFLOW__METRICS__STATSD_ON"] == "True"
    assert (settings["AIRFLOW__METRICS__STATSD_HOST"], settings["AIRFLOW__METRICS__STATSD_PORT"]) == \
        ("127.0.0.1", "9125")
    shared = _airflow_cluster().read_env_file()  # the same prefix as production: one dashboard for both
    assert settings["AIRFLOW__METRICS__STATSD_PREFIX"] == shared["AIRFLOW__METRICS__STATSD_PREFIX"]


# --- Kubernetes: the official Apache Airflow Helm chart --------------------------------------------

HELM = PROJECT / "deploy" / "helm"


def _helm_values() -> dict:
    return yaml.safe_load((HELM / "values.yaml").read_text(encoding="utf-8"))


def _walk(node, path=()):
    """Every (path, value) in a YAML tree."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, (*path, i))


def test_helm_values_validate_against_the_charts_published_schema():
    schema = HELM / "values.schema.json"
    if not schema.is_file():
        pytest.skip("the chart's values.schema.json is not vendored in deploy/helm/ (see deploy/helm/PROVENANCE.md)")
    run = subprocess.run([Path(sys.executable).parent / "check-jsonschema", "--schemafile", str(schema),
                          str(HELM / "values.yaml")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_helm_values_run_the_projects_image_on_kubernetes_pods_with_no_shared_volume():
    values = _helm_values()
    assert values["executor"] in ("KubernetesExecutor", "CeleryExecutor,KubernetesExecutor")
    # the project's image, the Airflow it installs (requirements.lock), its user (Dockerfile)
    image = values["images"]["airflow"]
    compose_image = _compose()["x-airflow"]["image"]
    assert image["tag"] == compose_image.rsplit(":", 1)[1] and image["repository"].endswith("/arkivflode")
    lock = (PROJECT / "requirements.lock").read_text(encoding="utf-8")
    assert f"apache-airflow=={values['airflowVersion']}" in lock
    dockerfile = (PROJECT / "Dockerfile").read_text(encoding="utf-8")
    assert f"--uid {values['uid']} " in dockerfile
    config = values["config"]
    assert config["core"]["dags_folder"] == "/opt/arkivflode/dags"
    assert "AIRFLOW__CORE__DAGS_FOLDER=/opt/arkivflode/dags" in dockerfile
    # no PersistentVolumeClaim anywhere: nothing ReadWriteMany, every persistence switch off
    for path, value in _walk(values):
        assert value != "ReadWriteMany", path
        if path[-1:] == ("persistence",):
            assert value.get("enabled") is False, path
        assert path[-1:] != ("persistentVolumeClaim",), path
    for section in ("workers", "triggerer", "logs", "dags"):
        assert values[section]["persistence"]["enabled"] is False, section
    assert values["dags"]["gitSync"]["enabled"] is False  # the DAGs are in the image
    # a task pod's scratch is an emptyDir of its own at ARKIV_HOME
    mounts = {m["name"]: m["mountPath"] for m in values["workers"]["extraVolumeMounts"]}
    scratch = [v for v in values["workers"]["extraVolumes"] if "emptyDir" in v]
    assert scratch and mounts[scratch[0]["name"]] == "/data"
    # the same settings as docker-compose: working bucket, archives, catalogue and metadata in PostgreSQL
    env = {e["name"]: e["value"] for e in values["env"]}
    secrets = {e["envName"] for e in values["secret"]}
    compose_env = _compose()["x-airflow-env"]
    assert env["ARKIV_HOME"] == "/data" and env["ARKIV_WORK"].startswith("s3://")
    for name in ("ARKIV_WORK", "ARKIV_MELLANARKIV", "ARKIV_SLUTARKIV"):
        assert env[name] == compose_env[name], name
    assert {"ARKIV_CATALOGUE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= secrets
    assert values["postgresql"]["enabled"] is False and values["data"]["metadataSecretName"]
    assert values["redis"]["enabled"] is False  # the KubernetesExecutor needs no broker
    # a finished pod's log is gone with it: logs go to a bucket
    assert config["logging"]["remote_logging"] == "True"
    assert config["logging"]["remote_base_log_folder"].startswith("s3://")
    conn = config["logging"]["remote_log_conn_id"]
    assert f"AIRFLOW_CONN_{conn.upper()}" in secrets
    # what deploy/airflow.env sets for every Airflow service is set here too (less Celery's own)
    shared = _airflow_cluster().read_env_file()
    for name, value in shared.items():
        if not name.startswith("AIRFLOW__") or "__CELERY__" in name or name.endswith(
                ("__EXECUTOR", "__DEFAULT_QUEUE", "__STATSD_PORT", "__MIN_HEARTBEAT_INTERVAL")):
            continue
        section, key = name.removeprefix("AIRFLOW__").lower().split("__", 1)
        assert str(config.get(section, {}).get(key)) == value, name
