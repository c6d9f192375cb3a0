"""``python -m bench.profiles``: where a build's time, a validation's time and a package's memory go.

The profiles behind the explanations of missed goals in bench/README.md, on the same corpus as
``python -m bench`` (same sizes and seed)::

    .venv/bin/python -m bench.profiles --size quick               # build, validate and memory, top 25 each
    .venv/bin/python -m bench.profiles --size large --only validate --top 40

*build*: one build of every record class as the benchmark's "ours" row (documents warm in the page
cache, DOCX accepted as delivered), the writer's process under cProfile; identification runs in the
pool's worker processes beside it, which cProfile does not see: their share shows as the writer's
wait (``_answers``, ``result``). *validate*: ``validate_package`` of every built TAR, under cProfile,
against hashing the same bytes with ``hashlib`` (the part no validator can skip). *memory*: each
record class built as one package (``max_records`` raised, as the memory benchmark's "one package"),
under tracemalloc; when the biggest package's metadata (METS, PREMIS) is about to be written, where
its memory lies: the lines holding the most, with bytes per file of the package.

Each profile is printed (top functions by own time, then by cumulative time) with the wall and CPU
seconds with and without the profiler, and written to ``bench/results/<timestamp>-profile-<size>.txt``.
cProfile slows Python-heavy code more than hashing and system calls, so read the shares, not the
seconds.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import os
import pstats
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import MB, PROJECT, clear, sync_fs, warm
from bench.corpus import LEX, make_corpus
from bench.run import SIZES

SECTIONS = ("build", "validate", "memory")


def _profiled(fn: Callable[[], object], top: int) -> tuple[str, dict]:
    """Run ``fn`` once plain and once under cProfile: the profile's text and the timings."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    plain = {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c}
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    profiled_wall = time.perf_counter() - t
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    out.write(f"--- top {top} by own time (tottime) ---\n")
    stats.sort_stats("tottime").print_stats(top)
    out.write(f"--- top {top} by cumulative time ---\n")
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue(), {**plain, "profiled_wall_s": profiled_wall}


def _build_section(corpus, work: Path, top: int) -> str:
    from transforms.packaging.sip import build_packages

    policy = LEX.formats.without_conversion()
    out = work / "build"

    def build() -> None:
        clear(out)
        out.mkdir(parents=True)
        for rc in corpus.staged.partitions:
            build_packages(LEX, corpus.staged, rc, out, policy=policy, conversion_cache=out / ".conversion-cache")
        sync_fs(out)

    warm(corpus.documents)
    text, t = _profiled(build, top)
    return (f"build: {len(corpus.documents)} documents, {corpus.doc_bytes / MB:.1f} MB, DOCX as delivered; "
            f"without the profiler {t['wall_s']:.2f} s wall, {t['cpu_s']:.2f} s CPU in the writer's process; "
            f"under it {t['profiled_wall_s']:.2f} s\n{text}")


def _validate_section(corpus, work: Path, top: int) -> str:
    from bench.build import build_for_validation
    from transforms.common.hashing import sha256_file
    from transforms.validation.validator import validate_package

    out = work / "packages"
    clear(out)
    packages = build_for_validation(corpus, out)
    warm(packages)
    nbytes = sum(os.path.getsize(p) for p in packages)

    t = time.perf_counter()
    for p in packages:
        sha256_file(p)
    floor = time.perf_counter() - t
    reports: list = []

    def validate() -> None:
        reports[:] = [validate_package(p, "fgs") for p in packages]

    text, v = _profiled(validate, top)
    files = sum(r.files_checked for r in reports)
    per_file = (v["wall_s"] - floor) / files * 1e6 if files else 0.0
    return (f"validate: {len(packages)} packages, {files} files, {nbytes / MB:.1f} MB; without the profiler "
            f"{v['wall_s']:.2f} s wall ({v['cpu_s']:.2f} s CPU), hashing the same bytes once with hashlib "
            f"{floor:.2f} s: {per_file:.1f} µs a file beyond the hash; under the profiler "
            f"{v['profiled_wall_s']:.2f} s\n{text}")


def _memory_section(corpus, work: Path, top: int) -> str:
    import dataclasses
    import tracemalloc

    import pyarrow as pa

    from transforms.packaging import sip

    system = dataclasses.replace(LEX, max_records=10**9)
    policy = LEX.formats.without_conversion()
    out = work / "one-package"
    clear(out)
    out.mkdir(parents=True)
    seen: list[tuple] = []  # (files, traced bytes, snapshot, Arrow's bytes) at each bigger package
    real = sip._write_metadata

    def at_metadata(*args, **kwargs):
        files = len(args[4])  # the package's data files (the spool of its entries)
        if not seen or files > seen[-1][0]:
            seen.append((files, tracemalloc.get_traced_memory()[0], tracemalloc.take_snapshot(),
                         pa.total_allocated_bytes()))
        return real(*args, **kwargs)

    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    sip._write_metadata = at_metadata
    try:
        for rc in corpus.staged.partitions:
            sip.build_packages(system, corpus.staged, rc, out, policy=policy,
                               conversion_cache=out / ".conversion-cache")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        sip._write_metadata = real
        tracemalloc.stop()
    if not seen:
        return "memory: no package was built"
    files, traced, snapshot, arrow = seen[-1]
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = snapshot.filter_traces(ignore).statistics("lineno")
    lines = [f"memory: one package per record class; the biggest, {files} files: {(traced - start) / MB:.1f} MB "
             f"traced when its metadata is written ({(traced - start) / files / 1e3:.2f} kB a file), "
             f"peak of the whole build {(peak - start) / MB:.1f} MB above the start (Python's allocations); "
             f"Arrow's memory pool (not traced) held {arrow / MB:.1f} MB then, "
             f"{(pa.default_memory_pool().max_memory() or 0) / MB:.1f} MB at most",
             f"--- top {top} lines by memory held at that moment ---",
             f"{'KB':>10} {'blocks':>9} {'B/file':>8}  line"]
    for st in stats[:top]:
        frame = st.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        lines.append(f"{st.size / 1e3:10.1f} {st.count:9d} {st.size / files:8.0f}  {where}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profiles", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="quick")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--top", type=int, default=25, help="functions listed per table")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=PROJECT / "bench" / "results", help="folder for the text file")
    parser.add_argument("--work", type=Path, default=None, help="parent of the temporary work folder")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(only) - set(SECTIONS):
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    size = SIZES[args.size]
    work = Path(tempfile.mkdtemp(prefix="arkiv-profile-", dir=args.work))
    try:
        corpus = make_corpus(work / "corpus", cases=size.cases, large=size.large, seed=args.seed)
        parts = [f"Arkivflöde profiles — size {args.size}, seed {args.seed}, {os.cpu_count()} CPUs"]
        if "build" in only:
            parts.append(_build_section(corpus, work, args.top))
        if "validate" in only:
            parts.append(_validate_section(corpus, work, args.top))
        if "memory" in only:
            parts.append(_memory_section(corpus, work, args.top))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = "\n\n".join(parts)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (args.out / f"{stamp}-profile-{args.size}.txt").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
