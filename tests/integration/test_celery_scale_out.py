"""Scale-out proven: the Lex DAG on Airflow's CeleryExecutor with two workers.

Everything is real and separate, as in docker-compose.yml: PostgreSQL is Airflow's metadata
database, the Celery result backend and the archive catalogue; Redis is the broker; the
api-server, scheduler, dag-processor and two Celery workers are separate processes with
their own AIRFLOW_HOME that meet only through those services and HTTP. The DAG is unpaused
and triggered through the REST API (/api/v2, JWT from the simple auth manager), and the test
checks what the workers did: which worker ran each task, that the record classes were
packaged as mapped tasks, and that the packages are in the mellanarkiv — a bucket on moto's
S3 server, over real HTTP — and in the catalogue.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from airflow_cluster import (
    ENDPOINT_VARIABLES,
    PARSE_ONCE,
    PROJECT,
    AirflowCluster,
    dags_folder,
    free_port,
    read_env_file,
)
from testservices import S3_TEST_CREDENTIALS, make_bucket, throwaway_postgres_database

from transforms.catalogue import Batch, Catalogue, Package

# A group of its own: its cluster is its own, so it need not wait behind the "airflow" group's files.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("airflow-celery"),
              pytest.mark.timeout(900)]

REDIS_URL = os.environ.get("ARKIV_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")  # a db of its own
WORKERS = ("arkiv-worker-a", "arkiv-worker-b")
RUN_TIMEOUT = 600  # seconds for the DAG run itself
SLOT_FREED_WITHIN = 3  # seconds from a task's end until its worker can take the next task


@pytest.fixture
def metadata_db():
    """A throwaway PostgreSQL database for Airflow's metadata and the Celery results."""
    with throwaway_postgres_database("arkiv_airflow") as url:
        yield url


class StatsdListener:
    """Collects the StatsD lines the cluster sends (UDP on loopback)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.lines.extend(data.decode("utf-8", "replace").splitlines())

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def _bucket_keys(env: dict[str, str]) -> list[str]:
    """Every key in the mellanarkiv bucket (read with a plain S3 client, not our storage code)."""
    import boto3

    bucket = env["ARKIV_MELLANARKIV"].removeprefix("s3://")
    client = boto3.client("s3", endpoint_url=env["ARKIV_S3_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _forget_queue(queue: str) -> None:
    """Remove this run's keys from Redis (not the whole database: another run may share it)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"*{queue}*"):
        client.delete(key)


@pytest.fixture
def cluster(tmp_path, metadata_db, pg_url, lex_source, moto_server):
    statsd = StatsdListener()
    home = tmp_path / "arkiv"
    api_port = free_port()
    # endpoints and secrets: exactly the names docker-compose.yml must set (tests/test_deployment.py)
    endpoints = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db.replace("postgresql://", "postgresql+psycopg2://", 1),
        "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_db,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "AIRFLOW__CORE__FERNET_KEY": "",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "ARKIV_CATALOGUE_URL": pg_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        # the mellanarkiv is a bucket on moto's S3 server (real HTTP), as it is on MinIO in docker-compose.yml
        "ARKIV_MELLANARKIV": f"s3://{make_bucket(moto_server)}",
        "ARKIV_WORK": f"s3://{make_bucket(moto_server)}/work",
        "ARKIV_SLUTARKIV": f"s3://{make_bucket(moto_server, object_lock=True)}",
        "ARKIV_S3_ENDPOINT_URL": moto_server,
        **S3_TEST_CREDENTIALS,
    }
    assert set(endpoints) == set(ENDPOINT_VARIABLES)
    queue = f"arkiv-test-{uuid.uuid4().hex[:8]}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ARKIV_", "AWS_"))},
        **read_env_file(),  # deploy/airflow.env, as every Airflow service in docker-compose.yml
        **endpoints,
        # this test only: its own queue (a Redis db shared by accident can't leak tasks), this checkout,
        # a StatsD listener, faster polling, the demo Lex as the source system
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder(tmp_path / "dags", ("lex",))),  # the one DAG it runs
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_identity.hostname",
        **PARSE_ONCE,
        "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]).strip(os.pathsep),
        "ARKIV_HOME": str(home),
        "ARKIV_LEX_FILES": str(lex_source["files"]),
        "AIRFLOW_CONN_LEX_DB": json.dumps({"conn_type": "sqlite",
                                           "host": lex_source["url"].removeprefix("sqlite:///")}),
    }
    c = AirflowCluster(root=tmp_path / "airflow", env=env, api_port=api_port)
    c.root.mkdir()
    c.statsd = statsd
    try:
        c.start_core()  # db migrate, api-server, scheduler, dag-processor
        for worker in WORKERS:
            # One slot per worker (deploy/airflow.env has 2): with late acks and a prefetch of one, a busy
            # worker takes nothing more, so two mapped tasks queued together must run on both workers.
            c.start(worker, "celery", "worker", "--celery-hostname", f"{worker}@%h", "--queues", queue,
                    "--concurrency", "1", "--without-mingle", "--without-gossip",
                    extra_env={"ARKIV_TEST_WORKER_HOSTNAME": worker})
        yield c
    finally:
        c.stop()
        statsd.close()
        _forget_queue(queue)
        print(c.logs())  # pytest shows a teardown's output only when the test failed


def _slots_freed(cluster: AirflowCluster) -> dict[str, datetime]:
    """When each task's supervisor finished on its worker (its Celery slot free again), by task instance id."""
    freed = {}
    for worker in WORKERS:
        for line in (cluster.root / f"{worker}.log").read_text(errors="replace").splitlines():
            if "Workload finished" in line and (m := re.search(r"workload_id=([0-9a-f-]{36})", line)):
                freed[m[1]] = datetime.fromisoformat(line.split()[0])
    return freed


def _wait(what: str, check, timeout: float, cluster: AirflowCluster, interval: float = 2):
    return cluster.wait(what, check, timeout, interval)


def test_lex_dag_runs_on_two_celery_workers(cluster, pg_url, lex_source, tmp_path):
    t0 = time.monotonic()
    cluster.wait_for_api()
    token = cluster.token()

    def api(method, path, body=None):
        return cluster.request(method, "/api/v2" + path, body, token=token)

    def parsed():
        try:
            return api("GET", "/dags/lex")
        except Exception:  # 404 until the dag-processor has serialized it
            return None

    dag = _wait("the dag-processor parses the Lex DAG", parsed, 180, cluster)
    _wait("both Celery workers are ready", lambda: all(
        " ready." in (cluster.root / f"{w}.log").read_text(errors="replace") for w in WORKERS), 120, cluster, 1)
    # Trigger the interval the schedule would run next (so unpausing creates no second run).
    body = {"dag_run_id": "integration-celery", "logical_date": dag["next_dagrun_logical_date"],
            "data_interval_start": dag["next_dagrun_data_interval_start"],
            "data_interval_end": dag["next_dagrun_data_interval_end"], "conf": {}}
    run = api("POST", "/dags/lex/dagRuns", body)
    assert api("PATCH", "/dags/lex", {"is_paused": False})["is_paused"] is False
    t_triggered = time.monotonic()

    def finished():
        state = api("GET", f"/dags/lex/dagRuns/{run['dag_run_id']}")["state"]
        return state if state in ("success", "failed") else None

    state = _wait("the Lex DAG run finishes", finished, RUN_TIMEOUT, cluster, interval=3)
    t_done = time.monotonic()
    print(f"\nCelery scale-out: db migrate {cluster.timings['db migrate']:.0f} s, start-up to trigger "
          f"{t_triggered - t0:.0f} s, DAG run {t_done - t_triggered:.0f} s")
    tis = api("GET", f"/dags/lex/dagRuns/{run['dag_run_id']}/taskInstances?limit=200")["task_instances"]
    summary = sorted((t["task_id"], t["map_index"], t["state"], t["hostname"]) for t in tis)
    assert state == "success", summary
    assert api("GET", "/dags/lex/dagRuns")["total_entries"] == 1  # unpausing did not schedule the interval again

    # every task ran on one of the two Celery workers, and the work was spread over both
    hosts = {t["hostname"] for t in tis if t["state"] == "success"}
    assert hosts <= set(WORKERS), summary
    assert hosts == set(WORKERS), f"only {hosts} did work: {summary}"
    # the record classes were packaged as mapped tasks, and each package shipped, verified, recorded
    mapped = {name: sorted(t["map_index"] for t in tis if t["task_id"] == name)
              for name in ("package", "ship", "verify", "record")}
    assert len(mapped["package"]) >= 2 and all(i >= 0 for i in mapped["package"]), summary
    assert len(mapped["ship"]) == len(mapped["verify"]) == len(mapped["record"]) >= 2, summary
    # the record classes were packaged at the same time, one on each worker: more workers, more throughput
    packaging = [t for t in tis if t["task_id"] == "package"]
    timeline = [(t["map_index"], t["hostname"], t["queued_when"], t["start_date"], t["end_date"]) for t in packaging]
    assert {t["hostname"] for t in packaging} == set(WORKERS), timeline
    assert max(t["start_date"] for t in packaging) < min(t["end_date"] for t in packaging), timeline
    # …which needs a worker's slot to be free soon after its task ends: at most the heartbeat interval
    # deploy/airflow.env sets (1 s), plus process teardown, not the 5 s of Airflow's default
    done = [t for t in tis if t["state"] == "success"]

    def all_freed():  # the last task's line may come just after the run is marked success
        freed = _slots_freed(cluster)
        return freed if all(t["id"] in freed for t in done) else None

    freed = _wait("every task's supervisor logs its end", all_freed, 30, cluster, 0.5)
    late = {(t["task_id"], t["map_index"]):
            round((freed[t["id"]] - datetime.fromisoformat(t["end_date"])).total_seconds(), 2) for t in done}
    assert not {k: lag for k, lag in late.items() if lag >= SLOT_FREED_WITHIN}, late

    # the packages are in the mellanarkiv and in the PostgreSQL catalogue
    cat = Catalogue(cluster.env["ARKIV_CATALOGUE_URL"])
    try:
        packages = cat.packages("lex")
        assert len(packages) == len(mapped["record"])
        stored = [k for k in _bucket_keys(cluster.env) if k.endswith(".tar")]
        assert sorted(p.location for p in packages) == stored
        with cat.session() as s:
            batch = s.get(Batch, "lex/2025")
            assert batch is not None and batch.status == "archived"
            assert sum(p.record_count for p in s.scalars(sa.select(Package))) == \
                json.loads(batch.rows)["tables"]["cases"] > 0
        for p in packages:
            assert [e.type for e in cat.events(package_id=p.id)] == \
                ["creation", "replication", "fixity check", "validation", "ingestion"]
    finally:
        cat.dispose()

    # Airflow's metrics left through StatsD as deploy/airflow.env configures them: the scheduler's, the
    # CeleryExecutor's, and each task's duration from the task runner on the workers (the path our
    # own counters in plugins/arkivflode_airflow/metrics.py take)
    metrics = {line.split(":", 1)[0] for line in cluster.statsd.lines}
    expected = {"airflow.scheduler_heartbeat", "airflow.executor.running_tasks.CeleryExecutor",
                *(f"airflow.dag.lex.{task}.duration" for task in {t["task_id"] for t in tis}),
                # and our own counters, from the finish task on a worker
                "airflow.arkivflode.lex.packages", "airflow.arkivflode.lex.records", "airflow.arkivflode.lex.bytes"}
    assert expected <= metrics, sorted(expected - metrics)
    print("tasks per worker: " + ", ".join(f"{h}={sum(t['hostname'] == h for t in tis)}" for h in WORKERS))
