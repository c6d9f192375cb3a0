"""Shared-nothing production, proven: two Celery workers with a home each, meeting only in PostgreSQL,
Redis and S3.

The real shape of a deployment on several hosts: Airflow's metadata and the archive catalogue in
PostgreSQL, Redis as the broker, the working bucket (``ARKIV_WORK``), the mellanarkiv and the
slutarkiv (Object Lock) on moto's S3 server, and two Celery workers, each with its own
``ARKIV_HOME`` in a temporary folder of its own. An audit hook in every Python process of a worker
(``audit_paths/sitecustomize.py``) records each access to a path under another worker's home; none
may happen. Two systems are archived while one worker is killed (SIGKILL) in the middle of a
package task; the retention DAG then transfers what is due into the S3 slutarkiv, and a
transferred record is read, and its document downloaded, through the archive API.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from airflow_cluster import BIN, ENDPOINT_VARIABLES, PARSE_ONCE, PROJECT, AirflowCluster, free_port, read_env_file
from testservices import S3_TEST_CREDENTIALS, make_bucket, start_moto, stop_process, throwaway_postgres_database

# A group of its own: one worker runs both tests on the module's cluster, while the "airflow" group's
# files (whose per-worker Airflow home this file does not use) run on the other.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("airflow-shared-nothing"),
              pytest.mark.timeout(1800)]

REDIS_URL = os.environ.get("ARKIV_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")
SYSTEMS = ("lex", "viva")
WORKERS = ("arkiv-worker-a", "arkiv-worker-b")
AUDIT = Path(__file__).parent / "audit_paths"
RUN_TIMEOUT = 900
YEAR = 2025  # the interval the demo sources hold (the DAGs' next yearly run)


@pytest.fixture(scope="module")
def shared_nothing(tmp_path_factory):
    """The cluster, its services and where each worker keeps its home and its audit log."""
    import demo
    from transforms.config.systems import load_systems

    root = tmp_path_factory.mktemp("shared-nothing")
    systems = {n: s for n, s in load_systems(PROJECT / "dags" / "systems").items() if n in SYSTEMS}
    sources = root / "sources"  # what the source systems provide: read by whichever worker extracts
    demo.generate_all(sources, systems, size=16, damaged_document=False)
    dags = _dags_kept_at_once(root / "dags")
    # every home there will be: the two workers, the first worker again after it was killed, and the
    # "operator" (the CLI and the archive API of this test); each worker may open only its own
    homes = {name: root / "homes" / name for name in (*WORKERS, f"{WORKERS[0]}-restarted", "operator", "core")}
    audit = root / "audit"
    audit.mkdir()
    with contextlib.ExitStack() as stack:
        metadata = stack.enter_context(throwaway_postgres_database("arkiv_airflow"))
        catalogue = stack.enter_context(throwaway_postgres_database("arkiv_catalogue"))
        moto, endpoint = start_moto()
        stack.callback(stop_process, moto)
        api_port = free_port()
        endpoints = {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata.replace("postgresql://", "postgresql+psycopg2://", 1),
            "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "ARKIV_CATALOGUE_URL": catalogue.replace("postgresql://", "postgresql+psycopg2://", 1),
            "ARKIV_WORK": f"s3://{make_bucket(endpoint)}/work",
            "ARKIV_MELLANARKIV": f"s3://{make_bucket(endpoint)}",
            "ARKIV_SLUTARKIV": f"s3://{make_bucket(endpoint, object_lock=True)}/ocfl",
            "ARKIV_S3_ENDPOINT_URL": endpoint,
            **S3_TEST_CREDENTIALS,
        }
        assert set(endpoints) == set(ENDPOINT_VARIABLES)
        queue = f"arkiv-test-{uuid.uuid4().hex[:8]}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ARKIV_", "AWS_"))},
            **read_env_file(),
            **endpoints,
            **demo.environment(sources, systems),
            "ARKIV_SLUTARKIV_OBJECT_LOCK_MODE": "GOVERNANCE", "ARKIV_SLUTARKIV_OBJECT_LOCK_DAYS": "3650",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
            "AIRFLOW__METRICS__STATSD_ON": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "ARKIV_SYSTEMS_DIR": str(dags / "systems"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_identity.hostname",
            **PARSE_ONCE,
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
            # a killed worker's task is found without a heartbeat within seconds, not the default 5 minutes
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]).strip(
                os.pathsep),
            "ARKIV_HOME": str(homes["core"]),
        }
        c = AirflowCluster(root=root / "airflow", env=env, api_port=api_port)
        c.root.mkdir()
        stack.callback(lambda: _forget_queue(queue))
        state = {"cluster": c, "env": env, "homes": homes, "audit": audit, "queue": queue, "endpoint": endpoint,
                 "systems": systems, "killed": None}
        try:
            c.start_core()
            for worker in WORKERS:
                start_worker(state, worker, worker)
            yield state
        finally:
            c.stop()
            print(c.logs())


def start_worker(state: dict, name: str, home: str):
    """A Celery worker whose ARKIV_HOME is ``homes[home]`` (fresh and empty), audited against every other home."""
    homes = state["homes"]
    homes[home].mkdir(parents=True, exist_ok=False)
    others = os.pathsep.join(str(p) for h, p in homes.items() if h not in (home, "core"))
    c = state["cluster"]
    extra = {"ARKIV_TEST_WORKER_HOSTNAME": name, "ARKIV_HOME": str(homes[home]),
             "ARKIV_TEST_FORBIDDEN_PATHS": others, "ARKIV_TEST_AUDIT_LOG": str(state["audit"] / f"{home}.log"),
             "PYTHONPATH": os.pathsep.join([str(AUDIT), state["env"]["PYTHONPATH"]])}
    if any(comp.name == name for comp in c.components):
        return c.restart(name, extra_env=extra)
    return c.start(name, "celery", "worker", "--celery-hostname", f"{name}@%h", "--queues", state["queue"],
                   "--concurrency", "1", "--without-mingle", "--without-gossip", extra_env=extra)


def _forget_queue(queue: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"*{queue}*"):
        client.delete(key)


def _api(c: AirflowCluster, token: str, method: str, path: str, body: dict | None = None) -> dict:
    return c.request(method, "/api/v2" + path, body, token=token)


def _ready(state: dict, dag_ids: tuple[str, ...]) -> str:
    c = state["cluster"]
    c.wait_for_api()
    token = c.token()

    def parsed():
        try:
            return all(_api(c, token, "GET", f"/dags/{d}") for d in dag_ids)
        except Exception:  # 404 until the dag-processor has serialized it
            return None

    c.wait("the dag-processor parses the DAGs", parsed, 240)
    alive = [comp.name for comp in c.components if comp.name in WORKERS]
    c.wait("the Celery workers are ready", lambda: all(
        " ready." in (c.root / f"{w}.log").read_text(errors="replace") for w in alive), 120, 1)
    return token


def _finished(c: AirflowCluster, token: str, dag_id: str, run_id: str):
    state = _api(c, token, "GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
    return state if state in ("success", "failed") else None


def _audit_lines(state: dict, kind: str) -> list[str]:
    return [line for log in state["audit"].glob("*.log")
            for line in log.read_text(encoding="utf-8").splitlines() if line.startswith(kind + " ")]


def _dags_kept_at_once(dest: Path) -> Path:
    """The two systems' DAGs and the retention DAG, with every record class that is kept due at once.

    The retention DAG's run applies the schedule for its own day (its logical date, which cannot lie
    in the future), while the demo cases close in YEAR and Lex keeps them for two years, Viva five:
    the copy gives the kept classes a period of P0D, so that today's run transfers them.
    """
    import re
    import shutil

    (dest / "systems").mkdir(parents=True)
    for name in ("retention.py", "source_systems.py"):
        shutil.copy(PROJECT / "dags" / name, dest / name)
    for system in SYSTEMS:
        shutil.copy(PROJECT / "dags" / "systems" / f"{system}.py", dest / "systems" / f"{system}.py")
        text = (PROJECT / "dags" / "systems" / f"{system}.yaml").read_text(encoding="utf-8")
        text, n = re.subn(r"(action: keep, counted_from: \w+, period: )P\w+", r"\1P0D", text)
        assert n, f"{system}.yaml: no kept record class found"
        (dest / "systems" / f"{system}.yaml").write_text(text, encoding="utf-8")
    return dest


def _bucket_keys(state: dict, variable: str) -> list[str]:
    """Every key under the location ``variable`` names (read with a plain S3 client, not our storage code)."""
    import boto3

    env = state["env"]
    bucket, _, prefix = env[variable].removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=env["ARKIV_S3_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "")
    return sorted(o["Key"].removeprefix(f"{prefix}/" if prefix else "") for page in pages
                  for o in page.get("Contents", []))


def _operator_env(state: dict) -> dict[str, str]:
    """The environment of a process outside the workers (the CLI, the archive API) with a home of its own."""
    home = state["homes"]["operator"]
    home.mkdir(parents=True, exist_ok=True)
    return {**state["env"], "ARKIV_HOME": str(home)}


def test_two_workers_with_homes_of_their_own_archive_two_systems_and_survive_a_killed_worker(shared_nothing):
    from transforms.catalogue import Batch, Catalogue

    state = shared_nothing
    c = state["cluster"]
    token = _ready(state, SYSTEMS)
    runs = {}
    for system in SYSTEMS:
        dag = _api(c, token, "GET", f"/dags/{system}")
        body = {"dag_run_id": f"shared-nothing-{system}", "logical_date": dag["next_dagrun_logical_date"],
                "data_interval_start": dag["next_dagrun_data_interval_start"],
                "data_interval_end": dag["next_dagrun_data_interval_end"], "conf": {}}
        runs[system] = _api(c, token, "POST", f"/dags/{system}/dagRuns", body)["dag_run_id"]
        assert _api(c, token, "PATCH", f"/dags/{system}", {"is_paused": False})["is_paused"] is False

    # kill a worker, process group and all (its task process too), while it runs a package task
    def running_package():
        for system, run_id in runs.items():
            tis = _api(c, token, "GET", f"/dags/{system}/dagRuns/{run_id}/taskInstances?limit=200")["task_instances"]
            for t in tis:
                if t["task_id"] == "package" and t["state"] == "running" and t["hostname"] in WORKERS:
                    return system, t
        return None

    system, victim = c.wait("a package task runs on a worker", running_package, RUN_TIMEOUT, 0.5)
    comp = next(comp for comp in c.components if comp.name == victim["hostname"])
    os.killpg(comp.proc.pid, signal.SIGKILL)
    comp.proc.wait(timeout=30)
    c.components.remove(comp)  # dead on purpose: not a failure of the cluster
    state["killed"] = victim["hostname"]
    survivor = next(w for w in WORKERS if w != victim["hostname"])

    for s, run_id in runs.items():
        done = c.wait(f"the {s} DAG run finishes", lambda s=s, r=run_id: _finished(c, token, s, r), RUN_TIMEOUT, 3)
        tis = _api(c, token, "GET", f"/dags/{s}/dagRuns/{run_id}/taskInstances?limit=200")["task_instances"]
        assert done == "success", sorted((t["task_id"], t["map_index"], t["state"], t["hostname"]) for t in tis)
    # the killed task was run again, on the other worker, from a disk that never saw its first try
    tis = _api(c, token, "GET", f"/dags/{system}/dagRuns/{runs[system]}/taskInstances?limit=200")["task_instances"]
    again = next(t for t in tis if t["task_id"] == "package" and t["map_index"] == victim["map_index"])
    assert again["try_number"] > victim["try_number"] and again["hostname"] == survivor, again

    # archived exactly once: each batch whole, each package once in the catalogue and once in the bucket
    cat = Catalogue(state["env"]["ARKIV_CATALOGUE_URL"])
    try:
        stored = _bucket_keys(state, "ARKIV_MELLANARKIV")
        for s in SYSTEMS:
            packages = cat.packages(s)
            assert packages and all(p.status == "stored" for p in packages), s
            with cat.session() as session:
                batch = session.get(Batch, f"{s}/{YEAR}")
                assert batch is not None and batch.status == "archived", s
                root = state["systems"][s].root_table.name
                assert sum(p.record_count for p in packages) == json.loads(batch.rows)["tables"][root] > 0
            for p in packages:
                assert stored.count(p.location) == 1, p.location
                assert [e.type for e in cat.events(package_id=p.id)] == \
                    ["creation", "replication", "fixity check", "validation", "ingestion"], p.id
        assert len(stored) == sum(len(cat.packages(s)) for s in SYSTEMS)
    finally:
        cat.dispose()
    # the catalogue, the archives and the working bucket agree
    run = subprocess.run([BIN / "arkiv", "reconcile"], env=_operator_env(state), capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    # no worker opened a path under another's home, and the hook was there to see it in both
    assert _audit_lines(state, "FORBIDDEN") == []
    for worker in WORKERS:  # the hook was active in each worker's processes (it saw their own home)
        log = state["audit"] / f"{worker}.log"
        assert log.is_file() and "OWN " in log.read_text(encoding="utf-8"), worker


def test_retention_on_two_workers_into_the_s3_slutarkiv_then_read_through_the_api(shared_nothing):
    from fastapi.testclient import TestClient

    from transforms.access.api import create_app
    from transforms.access.auth import add_credential
    from transforms.access.service import Archive
    from transforms.archive import ocfl
    from transforms.config.settings import Settings

    state = shared_nothing
    c = state["cluster"]
    operator = _operator_env(state)
    # the two systems archived (by the test above, or here through the CLI when it could not)
    for system in SYSTEMS:
        start, end = f"{YEAR}-01-01", f"{YEAR + 1}-01-01"
        run = subprocess.run([BIN / "arkiv", "run", system, "--start", start, "--end", end], env=operator,
                             capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # a killed worker comes back on a fresh, empty disk
    if state["killed"]:
        start_worker(state, state["killed"], f"{WORKERS[0]}-restarted" if state["killed"] == WORKERS[0]
                     else WORKERS[0] + "-restarted")
        state["killed"] = None
    token = _ready(state, ("retention",))
    # the retention DAG as it runs in production: unpaused, it runs for today (and for the mellanarkiv
    # updates it was waiting for); the packages of YEAR are due, so its runs transfer them
    from transforms.catalogue import Catalogue

    cat = Catalogue(state["env"]["ARKIV_CATALOGUE_URL"])
    try:
        keep = {p.id for s in SYSTEMS for p in cat.packages(s) if p.retention_action == "keep"}
        assert keep, "nothing to keep: the retention run would transfer nothing"
        assert _api(c, token, "PATCH", "/dags/retention", {"is_paused": False})["is_paused"] is False

        def transferred_and_settled():
            runs = _api(c, token, "GET", "/dags/retention/dagRuns")["dag_runs"]
            moved = {p.id for s in SYSTEMS for p in cat.packages(s) if p.status == "transferred"}
            if runs and all(r["state"] in ("success", "failed") for r in runs) and moved >= keep:
                return runs
            return None

        runs = c.wait("the retention DAG transfers what is due", transferred_and_settled, RUN_TIMEOUT, 3)
    finally:
        cat.dispose()
    tis = [t for r in runs for t in _api(c, token, "GET", f"/dags/retention/dagRuns/{r['dag_run_id']}/taskInstances"
                                                                "?limit=200")["task_instances"]]
    summary = sorted((t["dag_run_id"], t["task_id"], t["map_index"], t["state"], t["hostname"]) for t in tis)
    assert all(r["state"] == "success" for r in runs), summary
    transfers = [t for t in tis if t["task_id"] == "transfer" and t["state"] == "success"]
    assert len(transfers) == len(keep), summary
    assert {t["hostname"] for t in transfers} <= {comp.name for comp in c.components}, summary

    with pytest.MonkeyPatch.context() as mp:
        for k, v in operator.items():
            if k.startswith(("ARKIV_", "AWS_")):
                mp.setenv(k, v)
        settings = Settings.from_env().ensure()
        arc = Archive(settings)
        try:
            assert type(arc.slutarkiv).__name__ == "S3Storage"
            token_api = add_credential(arc.cat, "anna-arkivarie", "archivist", by="test")
            client = TestClient(create_app(settings, archive=arc, oidc=None))
            auth = {"Authorization": f"Bearer {token_api}"}
            for system in SYSTEMS:
                moved = [p for p in arc.cat.packages(system) if p.status == "transferred"]
                assert moved, f"{system}: nothing transferred"
                for p in moved:
                    assert ocfl.verify_object(arc.slutarkiv, p.location.removeprefix("ocfl:")) == []
                hits = client.get("/api/v1/search", params={"system": system, "storage": "slutarkiv", "limit": 500},
                                  headers=auth).json()["hits"]
                assert {h["package_id"] for h in hits} == {p.id for p in moved}
                rec = next(r for r in (client.get(f"/api/v1/records/{system}/{h['source_id']}", headers=auth).json()
                                       for h in hits) if any(d.get("content") for d in r["documents"]))
                assert rec["storage"] == "slutarkiv" and rec["package"]["verified"]
                doc = next(d for d in rec["documents"] if d.get("content"))
                got = client.get(doc["content"], headers=auth)
                assert got.status_code == 200 and len(got.content) == doc["size"]
                assert hashlib.sha256(got.content).hexdigest() == doc["sha256"]
        finally:
            arc.cat.dispose()
    # nothing of the slutarkiv went to a folder in any home, and no worker read another's home
    assert not [p for p in state["homes"].values() if (p / "slutarkiv").exists()]
    assert _audit_lines(state, "FORBIDDEN") == [], _audit_lines(state, "FORBIDDEN")[:10]
    print("\nshared-nothing: " + json.dumps({"transfers": {t["map_index"]: t["hostname"] for t in transfers}}))
