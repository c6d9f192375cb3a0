"""Scale with workers on real Airflow: the partitions of one extraction as mapped tasks on the LocalExecutor.

The stack is the one tests/integration/airflow_cluster.py starts for the CeleryExecutor test
(api-server, scheduler, dag-processor; PostgreSQL as the metadata database), here with the
LocalExecutor: the scheduler runs the task instances itself, at most ``[core] parallelism``
(and ``max_active_tasks_per_dag``) at a time. The DAG is the project's own, built by
``arkivflode_airflow.factory.build_system_dag`` from a copy of ``dags/systems/lex.yaml`` whose
record classes are the 14 classification leaves of :func:`bench.corpus.fine_grained` and whose
schedule starts at midnight (so its 2025 interval is exactly the corpus's). It runs against the
bench corpus (the Lex SQLite database and its document folder); ``package`` is mapped over the
record classes.

For each parallelism the DAG runs once (extract, quality, decision, then the mapped ``package``
tasks), with a fresh catalogue and ARKIV_HOME; the run is stopped as soon as every ``package``
task instance has finished (shipping is not measured). The time measured is the span of the
mapped tasks, from the first ``package`` task instance's start to the last one's end, as the
metadata database records them. Start-up of the stack, extraction and the quality gate are
outside it. CPU use: the user+system CPU seconds of the whole stack's process tree (every
component and the task processes below it), sampled four times a second and interpolated at the
window's ends; and how busy the machine's CPUs were over the window (all processes, other users'
too).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import os
import sys
import threading
import time
import urllib.error
import uuid
from pathlib import Path

import psutil
import sqlalchemy as sa
import yaml

from bench.common import MB, ONE_CPU_PER_TASK, PROJECT, clear, warm
from bench.corpus import FILES_ENV, staged_documents
from demo import lex as lexsim
from transforms.staging.batch import StagedBatch

ADMIN_URL = os.environ.get("ARKIV_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SYSTEM = "lex"
#: seconds for one DAG run up to the end of its mapped tasks: at large, parallelism 1 converts ~7,700
#: DOCX on one LibreOffice (~10 min on an idle machine), and a shared machine can double that
RUN_TIMEOUT = 2400
FINISHED = ("success", "failed", "upstream_failed", "skipped", "removed")


def cluster_module():
    """tests/integration/airflow_cluster.py (the stack the CeleryExecutor test starts), loaded by path."""
    if "airflow_cluster" in sys.modules:
        return sys.modules["airflow_cluster"]
    spec = importlib.util.spec_from_file_location("airflow_cluster", PROJECT / "tests/integration/airflow_cluster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["airflow_cluster"] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def write_system(folder: Path) -> Path:
    """dags/systems/lex.yaml with one record class per classification leaf and a midnight schedule."""
    raw = yaml.safe_load((PROJECT / "dags" / "systems" / "lex.yaml").read_text(encoding="utf-8"))
    keep, dispose = raw["record_classes"][0], raw["record_classes"][1]
    classes = []
    for code, title in lexsim.CLASSIFICATION:
        if "." not in code:
            continue
        base = dispose if code.startswith("4.") else keep
        classes.append({"name": f"arenden-{code.replace('.', '-')}", "title": title,
                        "match": {"column": base["match"]["column"], "prefixes": [code]},
                        "retention": base["retention"]})
    raw["record_classes"] = classes
    raw["schedule"] = "0 0 1 1 *"  # [2025-01-01, 2026-01-01) local: the interval the corpus was staged for
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{SYSTEM}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def write_dag(folder: Path, system_yaml: Path) -> Path:
    """A DAG file that builds the system's DAG with the project's factory, as each system's loader does."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench_source_system.py"
    path.write_text('"""Benchmark: the Lex DAG from the project\'s factory, with fine-grained record classes."""\n\n'
                    "from pathlib import Path\n\n"
                    "from arkivflode_airflow.factory import build_system_dag\n\n"
                    f"dag_{SYSTEM} = build_system_dag(Path({str(system_yaml)!r}))\n", encoding="utf-8")
    return path


class CpuSampler:
    """Samples the CPU seconds of the stack's process trees and of the whole machine, in a thread."""

    def __init__(self, roots, interval: float = 0.25):
        self.roots = roots  # callable: the current root processes (subprocess.Popen)
        self.interval = interval
        self.samples: list[tuple[float, float, float, float]] = []  # (epoch, stack cpu, machine busy, machine all)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _stack_cpu(self) -> float:
        # A live process's own time plus its reaped children's: each CPU second is counted once,
        # in the process that used it while it lives, in its parent's children times once reaped.
        total = 0.0
        for root in self.roots():
            try:
                procs = [psutil.Process(root.pid)]
                procs += procs[0].children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for p in procs:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    t = p.cpu_times()
                    total += t.user + t.system + t.children_user + t.children_system
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            m = psutil.cpu_times()
            idle = m.idle + getattr(m, "iowait", 0.0)
            every = sum(m)
            self.samples.append((time.time(), self._stack_cpu(), every - idle, every))
            self._stop.wait(self.interval)

    def between(self, start: float, end: float) -> dict:
        """Stack CPU seconds and the machine's busy fraction between two epoch times (interpolated)."""
        def at(t: float, i: int) -> float:
            s = self.samples
            if not s:
                return 0.0
            if t <= s[0][0]:
                return s[0][i]
            for a, b in zip(s, s[1:], strict=False):
                if a[0] <= t <= b[0]:
                    return a[i] + (b[i] - a[i]) * (t - a[0]) / ((b[0] - a[0]) or 1)
            return s[-1][i]

        cpu = at(end, 1) - at(start, 1)
        busy, every = at(end, 2) - at(start, 2), at(end, 3) - at(start, 3)
        return {"stack_cpu_seconds": cpu, "machine_busy": busy / every if every else None}


@contextlib.contextmanager
def _database(prefix: str):
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield sa.engine.make_url(ADMIN_URL).set(drivername="postgresql+psycopg2", database=name) \
            .render_as_string(hide_password=False)
    finally:
        with contextlib.suppress(sa.exc.SQLAlchemyError), admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _epoch(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run(db: Path, files: Path, work: Path, *, parallelisms=(1, 2), log) -> dict:
    """Run the DAG once per parallelism; the mapped ``package`` tasks' span, throughput and CPU use."""
    try:
        with contextlib.ExitStack() as stack:
            metadata = stack.enter_context(_database("arkiv_bench_airflow"))
            catalogues = [stack.enter_context(_database("arkiv_bench_catalogue")) for _ in parallelisms]
            return _run(db, files, work, metadata, catalogues, parallelisms, log)
    except sa.exc.OperationalError as exc:
        return {"available": False, "error": str(exc).splitlines()[0]}


def _run(db: Path, files: Path, work: Path, metadata: str, catalogues: list[str], parallelisms, log) -> dict:
    ac = cluster_module()
    root = work / "airflow"
    system_yaml = write_system(root / "systems")
    dags = root / "dags"
    write_dag(dags, system_yaml)
    api_port = ac.free_port()

    def arkiv_env(i: int) -> dict[str, str]:
        n = parallelisms[i]
        # [core] parallelism is the LocalExecutor's number of task slots. (max_active_tasks_per_dag would be
        # baked into the DAG by the dag-processor when it parses it; the DAG's default, 16, is above both.)
        return {"AIRFLOW__CORE__PARALLELISM": str(n),
                "ARKIV_HOME": str(root / f"arkiv-{n}"), "ARKIV_CATALOGUE_URL": catalogues[i],
                "ARKIV_SYSTEMS_DIR": str(system_yaml.parent), f"ARKIV_CONN_{SYSTEM.upper()}_DB": f"sqlite:///{db}",
                FILES_ENV: str(files), **ONE_CPU_PER_TASK}

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ARKIV_", "AWS_"))},
        **ac.read_env_file(),  # deploy/airflow.env: the deployment's settings …
        # … on one machine: the LocalExecutor, PostgreSQL for the metadata, no StatsD listener
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "AIRFLOW__CORE__FERNET_KEY": "",
        "AIRFLOW__METRICS__STATSD_ON": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        **arkiv_env(0),
    }
    (root / "stack").mkdir(parents=True, exist_ok=True)
    cluster = ac.AirflowCluster(root=root / "stack", env=env, api_port=api_port)
    res: dict = {"available": True, "executor": "LocalExecutor", "dag": f"{SYSTEM} (arkivflode_airflow.factory)",
                 "mapped_task": "package"}
    t0 = time.monotonic()
    try:
        cluster.start_core()
        cluster.wait_for_api()
        token = cluster.token()

        def api(method: str, path: str, body: dict | None = None) -> dict:
            try:
                return cluster.request(method, "/api/v2" + path, body, token=token)
            except urllib.error.HTTPError as exc:
                raise RuntimeError(f"{method} {path}: HTTP {exc.code} {exc.read()[:2000]!r}") from None

        def parsed():
            with contextlib.suppress(Exception):  # 404 until the dag-processor has serialized it
                return api("GET", f"/dags/{SYSTEM}")
            return None

        dag = cluster.wait(f"the dag-processor parses the {SYSTEM} DAG", parsed, 300)
        interval = {k: dag[f"next_dagrun_{k}"] for k in ("logical_date", "data_interval_start", "data_interval_end")}
        res["start_up_seconds"] = time.monotonic() - t0
        res["db_migrate_seconds"] = cluster.timings.get("db migrate")
        log(f"  Airflow stack up in {res['start_up_seconds']:.0f} s (db migrate {res['db_migrate_seconds']:.0f} s); "
            f"data interval {interval['data_interval_start']} – {interval['data_interval_end']}")
        with CpuSampler(lambda: [c.proc for c in cluster.components]) as sampler:
            for i, n in enumerate(parallelisms):
                if i:  # the next parallelism: a new scheduler (its LocalExecutor) with a fresh ARKIV_HOME
                    cluster.restart("scheduler", extra_env=arkiv_env(i))
                warm(p for p in files.rglob("*") if p.is_file())
                run_id = f"bench-parallelism-{n}"
                api("POST", f"/dags/{SYSTEM}/dagRuns", {"dag_run_id": run_id, "conf": {},
                                                          "logical_date": interval["logical_date"],
                                                          "data_interval_start": interval["data_interval_start"],
                                                          "data_interval_end": interval["data_interval_end"]})
                api("PATCH", f"/dags/{SYSTEM}", {"is_paused": False})
                t_run = time.monotonic()
                tis = cluster.wait(f"parallelism {n}: every mapped package task finishes",
                                   lambda run_id=run_id: _packaged(api, run_id), RUN_TIMEOUT, interval=1)
                api("PATCH", f"/dags/{SYSTEM}", {"is_paused": True})  # ship … are not measured
                res[f"parallelism_{n}"] = x = _measure(tis, Path(arkiv_env(i)["ARKIV_HOME"]), sampler)
                x["run_to_packaged_seconds"] = time.monotonic() - t_run
                log(f"  Airflow LocalExecutor parallelism {n}: {x['tasks']} mapped tasks in {x['seconds']:.2f} s  "
                    f"{x['mb_s']:7.1f} MB/s  {x['files_s']:6.0f} files/s  "
                    f"(at most {x['most_running']} at once, overlap {x['concurrency']:.2f}, "
                    f"stack CPU {x['cpu_per_second']:.2f} s/s, "
                    f"machine {x['machine_busy'] or 0:.0%} busy)")
                # end this run (its leftover tasks stop) and forget it, so the interval can run again
                api("PATCH", f"/dags/{SYSTEM}/dagRuns/{run_id}", {"state": "failed"})
                api("DELETE", f"/dags/{SYSTEM}/dagRuns/{run_id}")
    except Exception:
        print(cluster.logs(tail=40), file=sys.stderr)
        raise
    finally:
        cluster.stop()
        clear(root)  # the packages built (twice the corpus) and the components' homes and logs
    a, b = (res[f"parallelism_{n}"]["seconds"] for n in parallelisms[:2])
    res["speedup"] = a / b
    return res


def _packaged(api, run_id: str) -> list[dict] | None:
    """The ``package`` task instances once all have finished (``collect`` is scheduled only then)."""
    run = api("GET", f"/dags/{SYSTEM}/dagRuns/{run_id}")
    tis = api("GET", f"/dags/{SYSTEM}/dagRuns/{run_id}/taskInstances?limit=500")["task_instances"]
    states = {t["task_id"]: t["state"] for t in tis if t["map_index"] < 0}
    packages = [t for t in tis if t["task_id"] == "package"]
    mapped = [t for t in packages if t["map_index"] >= 0]
    if mapped and all(t["state"] in FINISHED for t in mapped):
        return mapped
    if run["state"] == "failed" or any(s in ("failed", "upstream_failed") for s in states.values()):
        raise RuntimeError(f"DAG run {run_id} failed before packaging: "
                           + ", ".join(f"{k}={v}" for k, v in sorted(states.items())))
    return None


def _measure(tis: list[dict], home: Path, sampler: CpuSampler) -> dict:
    bad = [(t["map_index"], t["state"]) for t in tis if t["state"] != "success"]
    if bad:
        raise RuntimeError(f"mapped package tasks did not succeed: {bad}")
    start, end = min(_epoch(t["start_date"]) for t in tis), max(_epoch(t["end_date"]) for t in tis)
    seconds = end - start
    spans = [(_epoch(t["start_date"]), _epoch(t["end_date"])) for t in tis]
    busy = sum(e - s for s, e in spans)
    # the most task instances running at one moment (at most the parallelism)
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    manifests = list((home / "staging" / SYSTEM).glob("*/manifest.json"))
    docs = staged_documents(StagedBatch.load(manifests[0]))
    nbytes = sum(os.path.getsize(p) for p in docs)
    cpu = sampler.between(start, end)
    return {"tasks": len(tis), "seconds": seconds, "files": len(docs), "bytes": nbytes,
            "mb_s": nbytes / MB / seconds, "files_s": len(docs) / seconds,
            "task_seconds": busy, "concurrency": busy / seconds, "most_running": most,
            "longest_task_seconds": max(_epoch(t["end_date"]) - _epoch(t["start_date"]) for t in tis),
            "stack_cpu_seconds": cpu["stack_cpu_seconds"], "cpu_per_second": cpu["stack_cpu_seconds"] / seconds,
            "machine_busy": cpu["machine_busy"]}
