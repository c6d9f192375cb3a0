"""Scale with workers: one extraction's partitions built as parallel mapped tasks, 1 vs 2 at a time.

Lex is split into one record class per classification leaf (14 partitions, see
:func:`bench.corpus.fine_grained`), the way a mapped ``package`` task gets one record class each.
Two measurements, documents in the page cache:

* with Airflow (:mod:`bench.airflow_stack`): the project's Lex DAG on a real Airflow stack with
  the LocalExecutor at parallelism 1 and 2, ``package`` mapped over the 14 record classes; the
  span of the mapped task instances as the metadata database records it;
* without Airflow: the same partitions built by ``build_packages`` in a ``ProcessPoolExecutor``
  of 1 and of 2 processes (reused between partitions), largest partition first.

A third measurement is the shared-nothing shape (:func:`shared_nothing`): each worker process has
a home of its own, and everything a task needs from an earlier one, or leaves for a later one,
goes through a working bucket on moto's S3 server (real HTTP on loopback) with the project's own
storage code: a task downloads the staged batch into its home, builds its record class's package,
uploads it and removes what it downloaded and built. 1 and 2 workers again, and the hand-over's cost per
package against the same builds reading and writing local paths.

Each task is kept to one CPU (``bench.common.ONE_CPU_PER_TASK``): by default a package build
already uses two (identification workers beside the TAR writer, two LibreOffice processes),
which would hide what a second worker adds. Both report the CPU seconds used (user + system,
child processes included) per wall second and how busy the machine's CPUs were meanwhile, so
that a ratio can be read on a shared machine.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psutil

from bench import airflow_stack
from bench.common import MB, ONE_CPU_PER_TASK, clear, timed, warm
from bench.corpus import LEX, fine_grained, stage_sqlite, staged_documents
from transforms.packaging.sip import build_packages
from transforms.staging.batch import StagedBatch


def _task(manifest: str, record_class: str, out: str) -> int:
    os.environ.update(ONE_CPU_PER_TASK)
    staged = StagedBatch.load(manifest)
    # a conversion cache of the row's own (emptied with it): every row converts, as the shared-nothing and
    # Airflow rows do on their fresh homes; the default cache beside the corpus is already full
    built = build_packages(fine_grained(LEX), staged, record_class, Path(out),
                           conversion_cache=Path(out) / ".conversion-cache")
    return sum(p.document_bytes for p in built)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children (and theirs)
    return usage.ru_utime + usage.ru_stime


def _machine() -> tuple[float, float]:
    m = psutil.cpu_times()
    every = sum(m)
    return every - m.idle - getattr(m, "iowait", 0.0), every


def run(db: Path, files: Path, work: Path, *, log, airflow: bool = True) -> dict:
    """Both measurements; ``airflow=False`` leaves the Airflow one out (it takes minutes)."""
    staging = work / "workers-staging"
    clear(staging)
    staged = stage_sqlite(fine_grained(LEX), db, files, staging)
    docs = staged_documents(staged)
    sizes = {rc: sum(os.path.getsize(p) for p in staged_documents(_only(staged, rc))) + p.rows.get("cases", 0)
             for rc, p in staged.partitions.items()}
    order = sorted(sizes, key=lambda rc: -sizes[rc])
    res: dict = {"partitions": len(order), "bytes": sum(os.path.getsize(p) for p in docs), "files": len(docs)}
    for n in (1, 2):
        out = work / f"workers-{n}"
        clear(out)
        out.mkdir(parents=True)
        warm(docs)
        os.sync()

        def go(n=n, out=out):
            with ProcessPoolExecutor(max_workers=n) as pool:
                futures = [pool.submit(_task, str(staged.manifest_path), rc, str(out)) for rc in order]
                return sum(f.result() for f in futures)

        cpu0, (busy0, every0) = _children_cpu(), _machine()
        seconds, nbytes = timed(go)  # the pool's processes are reaped when it shuts down: their CPU is counted
        cpu, (busy1, every1) = _children_cpu() - cpu0, _machine()
        res[f"workers_{n}"] = x = {"seconds": seconds, "mb_s": nbytes / MB / seconds, "files_s": len(docs) / seconds,
                                   "cpu_seconds": cpu, "cpu_per_second": cpu / seconds,
                                   "machine_busy": (busy1 - busy0) / ((every1 - every0) or 1)}
        log(f"  workers {n}  {seconds:7.2f} s  {nbytes / MB / seconds:7.1f} MB/s  {len(docs) / seconds:7.0f} files/s"
            f"  (CPU {x['cpu_per_second']:.2f} s/s, machine {x['machine_busy']:.0%} busy)")
        clear(out)
    res["speedup"] = res["workers_1"]["seconds"] / res["workers_2"]["seconds"]
    try:
        res["shared_nothing"] = shared_nothing(staged, order, docs, work, local=res, log=log)
    except (OSError, RuntimeError) as exc:  # no moto server here: the other figures stand
        res["shared_nothing"] = {"available": False, "error": f"{type(exc).__name__}: {exc}"}
    clear(staging)
    if airflow:
        log("  the same partitions as mapped tasks on Airflow (LocalExecutor, parallelism 1 and 2)")
        try:
            res["airflow"] = airflow_stack.run(db, files, work, log=log)
        except Exception as exc:  # noqa: BLE001 - a stack that fails or times out ends this row, not the whole run
            log(f"  Airflow run failed: {type(exc).__name__}: {exc}")
            res["airflow"] = {"available": False, "error": f"{type(exc).__name__}: {exc}"}
    else:
        res["airflow"] = {"available": False, "error": "not run at this size (the Airflow stack takes minutes)"}
    return res


def _only(staged: StagedBatch, rc: str) -> StagedBatch:
    import dataclasses

    return dataclasses.replace(staged, partitions={rc: staged.partitions[rc]})


# --- shared-nothing: homes of their own, a working bucket between the tasks ---------------------------

_HOME: Path | None = None  # this worker process's own ARKIV_HOME


def _own_home(root: str) -> None:
    global _HOME
    _HOME = Path(root) / f"worker-{os.getpid()}"
    _HOME.mkdir(parents=True, exist_ok=True)


def _work_store(bucket: str):
    from transforms.archive.storage import S3Storage
    from transforms.config.settings import S3Config

    return S3Storage(bucket, "work", "work", config=S3Config.from_env(os.environ))


def _download(store, key: str, dest: Path) -> int:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with store.open(key) as f, open(dest, "wb") as out:
        shutil.copyfileobj(f, out, 1024 * 1024)
    return dest.stat().st_size


def _bucket_task(bucket: str, batch_prefix: str, record_class: str) -> dict:
    """One package task of a worker with a home of its own: fetch, build, hand over, clear."""
    os.environ.update(ONE_CPU_PER_TASK)
    store = _work_store(bucket)
    scratch = _HOME / uuid.uuid4().hex[:8]
    t0 = time.perf_counter()
    # the whole staged batch: a package build reads the other partitions' document rows too (a
    # document belongs to exactly one record of the batch)
    for key in store.list(batch_prefix):
        _download(store, key, scratch / "staging" / key.removeprefix(f"{batch_prefix}/"))
    staged = StagedBatch.load(scratch / "staging" / "manifest.json")
    t1 = time.perf_counter()
    # the build folder is the worker's, as the local runs' is (its office profile is reused between tasks:
    # a worker's disk may cache); what the task downloaded and built is removed once handed over
    built = build_packages(fine_grained(LEX), staged, record_class, _HOME / "build")
    t2 = time.perf_counter()
    for p in built:
        store.put(p.path, f"packages/{Path(p.path).name}", expected_sha256=p.sha256)
        Path(p.path).unlink()
    t3 = time.perf_counter()
    shutil.rmtree(scratch)
    return {"bytes": sum(p.document_bytes for p in built), "packages": len(built), "fetch": t1 - t0,
            "build": t2 - t1, "upload": t3 - t2}


def _moto() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in a process of its own on a free loopback port."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)  # noqa: S310 — loopback only
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto_server did not answer")


def shared_nothing(staged: StagedBatch, order: list[str], docs: list[str], work: Path, *, local: dict,
                   log) -> dict:
    """1 and 2 workers with homes of their own and a working bucket; the hand-over's cost per package."""
    import boto3

    proc, endpoint = _moto()
    saved = {k: os.environ.get(k) for k in ("ARKIV_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION")}
    # moto takes any credentials: a throwaway pair for this run
    os.environ.update({"ARKIV_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": uuid.uuid4().hex, "AWS_DEFAULT_REGION": "eu-north-1"})
    try:
        bucket = "arkiv-bench-work"
        boto3.client("s3", endpoint_url=endpoint, region_name="eu-north-1").create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-north-1"})
        store = _work_store(bucket)
        # the extract task's hand-over: the staged batch into the bucket, once
        root = Path(staged.directory)
        t = time.perf_counter()
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            store.put(path, f"staged/{path.relative_to(root).as_posix()}")
        staged_upload = time.perf_counter() - t
        res: dict = {"staged_upload_seconds": staged_upload, "endpoint": "moto_server on loopback"}
        for n in (1, 2):
            homes = work / f"homes-{n}"
            clear(homes)
            warm(docs)

            def go(n=n, homes=homes):
                with ProcessPoolExecutor(max_workers=n, initializer=_own_home, initargs=(str(homes),)) as pool:
                    return [f.result() for f in [pool.submit(_bucket_task, bucket, "staged", rc) for rc in order]]

            seconds, tasks = timed(go)
            nbytes = sum(x["bytes"] for x in tasks)
            packages = sum(x["packages"] for x in tasks)
            res[f"workers_{n}"] = x = {
                "seconds": seconds, "mb_s": nbytes / MB / seconds, "files_s": len(docs) / seconds,
                "packages": packages, "fetch_seconds": sum(t["fetch"] for t in tasks),
                "build_seconds": sum(t["build"] for t in tasks), "upload_seconds": sum(t["upload"] for t in tasks),
                "homes": len(list(homes.iterdir()))}
            log(f"  shared-nothing, {n} worker(s) with own homes  {seconds:7.2f} s  {x['mb_s']:7.1f} MB/s  "
                f"(fetch {x['fetch_seconds']:.2f} s, upload {x['upload_seconds']:.2f} s over {packages} packages)")
            for key in store.list("packages"):  # the next round writes the same packages again
                store.client.delete_object(Bucket=bucket, Key=f"work/{key}")
            clear(homes)
        one, two = res["workers_1"], res["workers_2"]
        res["speedup"] = one["seconds"] / two["seconds"]
        res["handover_per_package_seconds"] = (one["fetch_seconds"] + one["upload_seconds"]) / one["packages"]
        res["extra_per_package_vs_local_seconds"] = (one["seconds"] - local["workers_1"]["seconds"]) / one["packages"]
        extra = res["extra_per_package_vs_local_seconds"]
        log(f"  shared-nothing: 2 vs 1 worker {res['speedup']:.2f}×; hand-over "
            f"{res['handover_per_package_seconds']:.3f} s per package measured in the tasks, {extra:+.3f} s per "
            f"package against local paths (1 worker); staged batch upload {staged_upload:.2f} s once")
        return res
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(timeout=10)
