"""Scale with workers: one extraction's partitions built as parallel mapped tasks, 1 vs 2 at a time.

Lex is split into one record class per classification leaf (14 partitions, see
:func:`bench.corpus.fine_grained`), the way a mapped ``package`` task gets one record class each.
Two measurements, documents in the page cache:

* with Airflow (:mod:`bench.airflow_stack`): the project's Lex DAG on a real Airflow stack with
  the LocalExecutor at parallelism 1 and 2, ``package`` mapped over the 14 record classes; the
  span of the mapped task instances as the metadata database records it;
* without Airflow: the same partitions built by ``build_packages`` in a ``ProcessPoolExecutor``
  of 1 and of 2 processes (reused between partitions), largest partition first.

Each task is kept to one CPU (``bench.common.ONE_CPU_PER_TASK``): by default a package build
already uses two (identification workers beside the TAR writer, two LibreOffice processes),
which would hide what a second worker adds. Both report the CPU seconds used (user + system,
child processes included) per wall second and how busy the machine's CPUs were meanwhile, so
that a ratio can be read on a shared machine.
"""

from __future__ import annotations

import os
import resource
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
    built = build_packages(fine_grained(LEX), staged, record_class, Path(out))
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
    clear(staging)
    if airflow:
        log("  the same partitions as mapped tasks on Airflow (LocalExecutor, parallelism 1 and 2)")
        res["airflow"] = airflow_stack.run(db, files, work, log=log)
    else:
        res["airflow"] = {"available": False, "error": "not run at this size (the Airflow stack takes minutes)"}
    return res


def _only(staged: StagedBatch, rc: str) -> StagedBatch:
    import dataclasses

    return dataclasses.replace(staged, partitions={rc: staged.partitions[rc]})
