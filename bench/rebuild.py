"""Rebuild of an unchanged interval: the first build with empty caches against a rebuild with both warm.

A first build identifies every document (fido) and converts what the policy says to convert
(LibreOffice to PDF/A). A rebuild of the same staged batch — a rerun, a retry after a failed
hand-over — finds both in its caches: identifications in the catalogue's
``format_identifications`` table (by content SHA-256 and signature version, through
:class:`~transforms.formats.identification.CatalogueIdentificationCache`, as
``transforms.intake.delivery`` builds) and conversions in the
:class:`~transforms.formats.conversion.ConversionCache` (by input SHA-256 and converter version).
The goal: the rebuild at least 3× faster than the first build (first ÷ rebuild ≥ 3).

Each round builds every record class of the corpus's staged batch twice per variant, without
conversion (DOCX accepted as delivered) and with it (Lex as configured):

* **first**: a fresh SQLite catalogue (migrated before the timing) and an empty conversion cache;
* **rebuild**: the same catalogue and conversion cache the first build just filled, a new output folder.

Both start with the documents in the page cache and end with the packages durable on disk
(``sync -f`` inside the timing), as in the build section. The variants take turns at starting a
round, so that a slow spell of the machine falls on both alike; a rebuild always follows its own
first build (it needs the caches that build filled). The SHA-256 of every package file of each
build is compared: a rebuild must give the same bytes as its first build, and every round the
same bytes as the first round.
"""

from __future__ import annotations

import hashlib
import os
import statistics
from collections.abc import Callable
from pathlib import Path

from bench.common import MB, clear, sync_fs, timed, warm
from bench.corpus import LEX, Corpus
from transforms.catalogue import Catalogue, FormatIdentification
from transforms.formats.identification import CatalogueIdentificationCache, FormatPolicy, Identifier
from transforms.packaging.sip import build_packages

#: the rebuild is this many times faster than the first build, or better (first ÷ rebuild)
GOAL = 3.0

#: the format policy of each variant, in the order of the first round
POLICIES: dict[str, Callable[[], FormatPolicy]] = {
    "without_conversion": lambda: LEX.formats.without_conversion(),
    "with_conversion": lambda: LEX.formats,
}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _identifications(catalogue: Catalogue) -> int:
    """Rows of the catalogue's identification cache."""
    import sqlalchemy as sa

    with catalogue.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(FormatIdentification.__table__)).scalar_one()


def build(corpus: Corpus, out: Path, policy: FormatPolicy, caches: Path, classes: list[str]) -> dict:
    """The record classes ``classes`` of the staged batch into ``out``, with the caches under ``caches``.

    As the production task does, one catalogue connection for the build and an identification
    cache over it for each record class's ``build_packages`` call.
    """
    out.mkdir(parents=True)
    catalogue = Catalogue(f"sqlite:///{caches / 'catalogue.sqlite'}")
    try:
        built = []
        for rc in classes:
            built += build_packages(LEX, corpus.staged, rc, out, policy=policy,
                                    conversion_cache=caches / "conversions",
                                    identification_cache=CatalogueIdentificationCache(catalogue))
    finally:
        catalogue.dispose()
    sync_fs(out)
    converted = [f for p in built for f in p.formats if f["outcome"] == "converted"]
    return {"packages": len(built), "output_bytes": sum(p.size for p in built),
            "paths": sorted(p.path for p in built), "converted": len(converted),
            "conversion_seconds": sum(f.get("seconds") or 0 for f in converted)}


def fresh_caches(caches: Path) -> None:
    """An empty conversion cache and a new, migrated SQLite catalogue (not timed: it is set up once)."""
    clear(caches)
    (caches / "conversions").mkdir(parents=True)
    catalogue = Catalogue(f"sqlite:///{caches / 'catalogue.sqlite'}")
    try:
        catalogue.migrate()
    finally:
        catalogue.dispose()


def cache_state(caches: Path) -> dict:
    """What the caches hold: identification rows and stored conversions."""
    catalogue = Catalogue(f"sqlite:///{caches / 'catalogue.sqlite'}")
    try:
        rows = _identifications(catalogue)
    finally:
        catalogue.dispose()
    return {"identifications": rows, "conversions": sum(1 for p in (caches / "conversions").rglob("*.pdf"))}


def _summary(tries: list[dict], nbytes: int, nfiles: int) -> dict:
    best = dict(min(tries, key=lambda r: r["seconds"]))
    med = statistics.median(r["seconds"] for r in tries)
    best.update(mb_s=nbytes / MB / best["seconds"], files_s=nfiles / best["seconds"],
                all_seconds=[r["seconds"] for r in tries], median_seconds=med)
    return best


def smallest(corpus: Corpus, n: int | None) -> list[str]:
    """Every record class of the staged batch (``n`` None), else the ``n`` with the fewest documents."""
    parts = corpus.staged.partitions
    if n is None:
        return list(parts)
    return sorted(parts, key=lambda rc: (parts[rc].rows.get("documents", 0), rc))[:n]


def documents_of(corpus: Corpus, classes: list[str]) -> list[str]:
    """The document files the packages of ``classes`` carry (the corpus's own list when all are built)."""
    if set(classes) == set(corpus.staged.partitions):
        return corpus.documents
    import pyarrow.parquet as pq

    return [p for rc in classes for f in corpus.staged.partitions[rc].files.get("documents", [])
            for p in pq.read_table(f, columns=["source_path"]).column(0).to_pylist() if p]


def run(corpus: Corpus, work: Path, *, repeats: int, log, sample=None, conversion: bool = True,
        classes: int | None = None) -> dict:
    """``repeats`` rounds of first build and rebuild for each variant; best, median and first ÷ rebuild.

    ``classes``: build only that many record classes, those with the fewest documents (the tiny
    size, to keep the test suite's run short); None builds every one, as the other sizes do.
    """
    picked = smallest(corpus, classes)
    docs = documents_of(corpus, picked)
    nbytes, nfiles = sum(os.path.getsize(d) for d in docs), len(docs)
    variants = [v for v in POLICIES if conversion or v != "with_conversion"]
    result: dict = {"files": nfiles, "bytes": nbytes, "rounds": repeats, "goal": GOAL,
                    "record_classes": picked, "all_record_classes": len(corpus.staged.partitions), "variants": {}}
    Identifier.shared()  # fido's signatures once per process, before any timing (as in the build section)
    runs: dict[str, dict[str, list[dict]]] = {v: {"first": [], "rebuild": []} for v in variants}
    reference: dict[str, dict[str, str]] = {}  # each variant's package digests in the first round
    for round_no in range(repeats):
        turn = variants[round_no % len(variants):] + variants[:round_no % len(variants)]
        for variant in turn:
            policy = POLICIES[variant]()
            caches = work / f"rebuild-caches-{variant}"
            fresh_caches(caches)
            digests: dict[str, dict[str, str]] = {}
            for step in ("first", "rebuild"):
                out = work / f"rebuild-{variant}-{step}"
                clear(out)
                os.sync()
                warm(docs)
                seconds, info = timed(lambda out=out, policy=policy, caches=caches:
                                      build(corpus, out, policy, caches, picked))
                paths = info.pop("paths")
                digests[step] = {os.path.basename(p): file_sha256(p) for p in paths}
                info.update(cache_state(caches))
                runs[variant][step].append({"seconds": seconds, "round": round_no + 1, **info})
                clear(out)
                log(f"  rebuild {variant:18} {step:7} round {round_no + 1}: {seconds:7.2f} s"
                    + (f"  ({info['converted']} converted, {info['conversion_seconds']:.1f} s in LibreOffice)"
                       if info["converted"] else ""))
            reference.setdefault(variant, digests["first"])
            runs[variant]["rebuild"][-1]["identical_to_first"] = digests["rebuild"] == digests["first"]
            runs[variant]["first"][-1]["identical_to_round_1"] = digests["first"] == reference[variant]
            clear(caches)
        if sample:
            sample(f"rebuild round {round_no + 1}")
    for variant, steps in runs.items():
        first, again = (_summary(steps[s], nbytes, nfiles) for s in ("first", "rebuild"))
        ratio = {"best": first["seconds"] / again["seconds"],
                 "median": first["median_seconds"] / again["median_seconds"],
                 "rounds": [f["seconds"] / r["seconds"] for f, r in zip(steps["first"], steps["rebuild"],
                                                                           strict=True)]}
        identical = (all(r["identical_to_first"] for r in steps["rebuild"])
                     and all(f["identical_to_round_1"] for f in steps["first"]))
        result["variants"][variant] = {
            "first": first, "rebuild": again, "first_over_rebuild": ratio,
            # judged on the medians: one lucky round does not meet it
            "goal_met": ratio["median"] >= GOAL,
            "identical": identical,
            "package_sha256": reference[variant],
        }
        log(f"  rebuild {variant:18} first {first['seconds']:7.2f} s (median {first['median_seconds']:.2f}), "
            f"rebuild {again['seconds']:7.2f} s (median {again['median_seconds']:.2f}): first ÷ rebuild "
            f"{ratio['best']:.2f}× best, {ratio['median']:.2f}× median; goal ≥ {GOAL:g}× "
            f"{'met' if ratio['median'] >= GOAL else 'MISSED'}; packages "
            f"{'byte-identical' if identical else 'DIFFER'}")
    return result
