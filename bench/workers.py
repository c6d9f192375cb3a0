"""Scale with workers: one extraction's partitions built as parallel mapped tasks, 1 vs 2 processes.

The corpus is staged once with Lex split into one record class per classification leaf
(14 partitions, see :func:`bench.corpus.fine_grained`), the way a mapped ``package`` task gets
one record class each. The partitions are then built by a ``ProcessPoolExecutor`` of 1 and of 2
worker processes — what LocalExecutor parallelism does with mapped task instances — largest
partition first, with the documents in the page cache.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.common import MB, clear, timed, warm
from bench.corpus import LEX, fine_grained, stage_sqlite, staged_documents
from transforms.extract import StagedBatch
from transforms.package import build_packages


def _task(manifest: str, record_class: str, out: str) -> int:
    staged = StagedBatch.load(manifest)
    built = build_packages(fine_grained(LEX), staged, record_class, Path(out))
    return sum(p.document_bytes for p in built)


def run(db: Path, files: Path, work: Path, *, log) -> dict:
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

        seconds, nbytes = timed(go)
        res[f"workers_{n}"] = {"seconds": seconds, "mb_s": nbytes / MB / seconds, "files_s": len(docs) / seconds}
        log(f"  workers {n}  {seconds:7.2f} s  {nbytes / MB / seconds:7.1f} MB/s  {len(docs) / seconds:7.0f} files/s")
        clear(out)
    res["speedup"] = res["workers_1"]["seconds"] / res["workers_2"]["seconds"]
    clear(staging)
    return res


def _only(staged: StagedBatch, rc: str) -> StagedBatch:
    import dataclasses

    return dataclasses.replace(staged, partitions={rc: staged.partitions[rc]})
