"""Run every benchmark side by side and print a table of ratios; the raw figures go to a JSON file.

Usage (from the project root)::

    .venv/bin/python -m bench [--size tiny|quick|large] [--only SECTION,…] [--out DIR] [--seed N] [--keep]
    .venv/bin/python bench/run.py …        # the same

The corpus is generated from ``--seed`` at the chosen size, under a temporary work folder on
the same file system as ``--work`` (default: the system temp folder), which is removed at the
end unless ``--keep``. The JSON goes to ``DIR/<timestamp>.json`` (default ``bench/results/``).
Nothing here asserts a time: these are measurements, read as ratios (see bench/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import build, dagparse, extraction, machine, memory, rebuild, validation, workers  # noqa: E402
from bench.common import MB, ONE_CPU_PER_TASK, PROJECT, load_sample, load_verdict, load_warning  # noqa: E402
from bench.corpus import LEX, make_corpus, remove_copies, replicate, single_document, stage_sqlite  # noqa: E402

SECTIONS = ("build", "rebuild", "validate", "extract", "memory", "workers", "dagparse")


@dataclass(frozen=True)
class Size:
    cases: int  # Lex cases generated (about 80 % are closed in 2025 and archived)
    large: list[int]  # sizes of the few large documents added to the corpus
    mem_cases: int  # cases (by id) in the 1× memory corpus; 10× is ten copies of it
    single: int  # the one-huge-file package
    pg_factor: int  # copies of the corpus's rows loaded into PostgreSQL
    repeats: int  # build rounds, warm and again cold (every method once a round; best and median kept)
    dag_repeats: int
    cold: bool = True
    dd: int = 512 * MB
    mem_variants: tuple[str, ...] = ("split", "one_package")
    rebuild_classes: int | None = None  # record classes the rebuild section builds, fewest documents first (None: all)
    rebuild_repeats: int | None = None  # rounds of the rebuild section (None: ``repeats``)
    notes: list[str] = field(default_factory=list)


SIZES = {
    "tiny": Size(cases=120, large=[4 * MB], mem_cases=40, single=16 * MB, pg_factor=2, repeats=2, dag_repeats=3,
                 cold=False, dd=64 * MB, mem_variants=("one_package",), rebuild_classes=1,
                 rebuild_repeats=1,
                 notes=["tiny: for the test suite only; 2 build rounds (not 5) to stay fast, no cold run; "
                        "the rebuild section: one round, of the record class with the fewest documents"]),
    "quick": Size(cases=2000, large=[40 * MB] * 3, mem_cases=300, single=200 * MB, pg_factor=10, repeats=5,
                  dag_repeats=10),
    "large": Size(cases=20000, large=[256 * MB] * 4, mem_cases=2000, single=2048 * MB, pg_factor=20, repeats=5,
                  dag_repeats=10, dd=2048 * MB),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="quick")
    parser.add_argument("--out", type=Path, default=PROJECT / "bench" / "results", help="folder for the JSON file")
    parser.add_argument("--work", type=Path, default=None, help="parent of the temporary work folder")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (corpus, packages)")
    parser.add_argument("--load-threshold", type=float, default=None,
                        help="1-minute load average above which the run is reported as loaded "
                             "(default: the CPU count)")
    args = parser.parse_args(argv)
    size = SIZES[args.size]
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")

    started = dt.datetime.now(dt.UTC)
    work = Path(tempfile.mkdtemp(prefix="arkiv-bench-", dir=args.work))
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    result: dict = {"size": args.size, "seed": args.seed, "started": started.isoformat(), "parameters":
                    {k: v for k, v in size.__dict__.items()}, "machine": machine.describe(work)}
    loads: list[dict] = []

    def sample(label: str) -> None:
        loads.append(load_sample(label))

    sample("start")
    # wall seconds of each part of the run, for estimating another size's duration (bench/README.md)
    section_seconds: dict[str, float] = {}
    result["section_seconds"] = section_seconds
    since = [time.perf_counter()]

    def done(name: str) -> None:
        now = time.perf_counter()
        section_seconds[name] = now - since[0]
        since[0] = now

    cpus = result["machine"].get("cpu_affinity") or result["machine"].get("cpu_count")
    if warning := load_warning(load_verdict(loads, cpus, args.load_threshold)):
        log(warning)
    try:
        log(f"limits: SHA-256 in memory, dd write/read ({size.dd // MB} MB)")
        result["limits"] = machine.limits(work, size.dd)
        lim = result["limits"]
        log(f"  sha256 {lim['sha256_mb_s']:.0f} MB/s, sha256sum {lim['sha256sum_tool_mb_s']:.0f} MB/s, "
            f"write {lim['write_mb_s']:.0f} MB/s, read cold {lim['read_cold_mb_s'] or 0:.0f} MB/s")
        done("limits")
        log(f"corpus: Lex, {size.cases} cases, large documents {[s // MB for s in size.large]} MB, seed {args.seed}")
        corpus = make_corpus(work / "corpus", cases=size.cases, large=size.large, seed=args.seed)
        result["corpus"] = {"cases_generated": size.cases, "staged_rows": dict(corpus.staged.tables),
                            "documents": len(corpus.documents), "bytes": corpus.doc_bytes,
                            "record_classes": sorted(corpus.staged.partitions)}
        log(f"  {len(corpus.documents)} documents, {corpus.doc_bytes / MB:.1f} MB staged")
        done("corpus")
        if "build" in only:
            log("build throughput")
            result["build"] = build.run(corpus, work, repeats=size.repeats, cold=size.cold, log=log, sample=sample)
            done("build")
        if "rebuild" in only:
            log("rebuild of an unchanged interval (first build with empty caches, then with them warm)")
            result["rebuild"] = rebuild.run(corpus, work, repeats=size.rebuild_repeats or size.repeats, log=log,
                                            sample=sample, classes=size.rebuild_classes)
            done("rebuild")
        if "validate" in only:
            log("validation throughput")
            packages = build.build_for_validation(corpus, work / "packages")
            result["validate"] = validation.run(packages, work, log=log)
            sample("after validate")
            shutil.rmtree(work / "packages", ignore_errors=True)
            done("validate")
        if "extract" in only:
            log(f"extraction from PostgreSQL ({size.pg_factor}× the corpus's rows)")
            result["extract"] = extraction.run(corpus.db, corpus.files, work, factor=size.pg_factor, log=log)
            sample("after extract")
            done("extract")
        if "memory" in only:
            log(f"memory: 1× = cases up to id {size.mem_cases} (small documents), 10× = ten copies; "
                f"one file of {size.single // MB} MB")
            mem = work / "memory"
            mem.mkdir()
            replicate(corpus.db, mem / "1x.sqlite", 1, max_case=size.mem_cases, small_only=True)
            replicate(corpus.db, mem / "10x.sqlite", 10, max_case=size.mem_cases, small_only=True, files=corpus.files)
            single_document(corpus.db, mem / "single.sqlite", corpus.files, size.single, args.seed)
            manifests = [stage_sqlite(LEX, mem / f"{n}.sqlite", corpus.files, mem / f"staging-{n}").manifest_path
                         for n in ("1x", "10x", "single")]
            result["memory"] = memory.run(*manifests, mem, log=log, variants=size.mem_variants)
            sample("after memory")
            (corpus.files / "huge" / "single-document.pdf").unlink(missing_ok=True)
            remove_copies(corpus.files)
            shutil.rmtree(mem, ignore_errors=True)
            done("memory")
        if "workers" in only:
            log("scale with workers (14 record-class partitions, 1 vs 2 at a time)")
            # the Airflow stack takes minutes: not at tiny (the size the test suite runs)
            result["workers"] = workers.run(corpus.db, corpus.files, work, log=log, airflow=args.size != "tiny")
            sample("after workers")
            done("workers")
        if "dagparse" in only:
            log("DAG parse time")
            result["dagparse"] = dagparse.run(repeats=size.dag_repeats, log=log)
            sample("after dagparse")
            done("dagparse")
    finally:
        sample("end")
        result["load"] = load_verdict(loads, cpus, args.load_threshold)
        result["seconds"] = time.perf_counter() - t0
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{args.size}.json"
        out.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    print()
    print(table(result))
    print(f"\nraw figures: {out}")
    return 0


# ------------------------------------------------------------------------------------ table
def _limit(mb_s: float, lim: dict, *, cold: bool, passes: int = 1, tool_hash: bool = False) -> str:
    """Which physical limit a throughput is nearest to (fractions of each, the largest named)."""
    sha = lim["sha256sum_tool_mb_s"] if tool_hash else lim["sha256_mb_s"]
    cands = {"SHA-256": mb_s * passes / sha, "disk write": mb_s / lim["write_mb_s"]}
    if cold and lim.get("read_cold_mb_s"):
        cands["disk read"] = mb_s / lim["read_cold_mb_s"]
    name, frac = max(cands.items(), key=lambda kv: kv[1])
    if frac < 0.5:
        return f"per-file CPU ({name} at {frac:.0%})"
    return f"{name} ({frac:.0%})"


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


def _workers(wk: dict, m: dict) -> list[str]:
    """Section 5: the process pool and the Airflow mapped tasks at 1 and 2, with the CPU they used."""
    lines = [f"5. Workers ({wk['partitions']} partitions, {wk['files']} files, {wk['bytes'] / MB:.1f} MB; "
             f"{m.get('cpu_count')} CPUs, ideal speed-up 2×)"]
    w = [38, 8, 8, 8, 9, 9, 8]
    lines.append(_row(["run", "seconds", "MB/s", "files/s", "CPU s/s", "machine", "overlap"], w))
    for n in (1, 2):
        x = wk[f"workers_{n}"]
        lines.append(_row([f"without Airflow: process pool of {n}", f"{x['seconds']:.2f}", f"{x['mb_s']:.1f}",
                           f"{x['files_s']:.0f}", f"{x.get('cpu_per_second', 0):.2f}",
                           f"{x.get('machine_busy', 0):.0%}", ""], w))
    af = wk.get("airflow") or {}
    if af.get("available"):
        for n in (1, 2):
            x = af[f"parallelism_{n}"]
            lines.append(_row([f"Airflow LocalExecutor, parallelism {n}", f"{x['seconds']:.2f}", f"{x['mb_s']:.1f}",
                               f"{x['files_s']:.0f}", f"{x['cpu_per_second']:.2f}", f"{x['machine_busy'] or 0:.0%}",
                               f"{x['concurrency']:.2f}"], w))
    lines.append(f"  speed-up 2 ÷ 1: without Airflow {wk['speedup']:.2f}×"
                 + (f", Airflow {af['speedup']:.2f}×" if af.get("available") else ""))
    if af.get("available"):
        x1 = af["parallelism_1"]
        lines.append(f"  Airflow: the project's Lex DAG, `package` mapped over the record classes "
                     f"({x1['tasks']} task instances, {x1['files']} files), timed from the first one's start to the "
                     f"last one's end in the metadata DB; stack start-up ({af['start_up_seconds']:.0f} s), extract "
                     "and quality gate not timed")
    else:
        lines.append(f"  Airflow: {af.get('error', 'not run')}")
    lines.append("  CPU s/s: user+system CPU seconds of the pool (or the whole Airflow stack) per wall second; "
                 "machine: all CPUs' busy share, other processes included; overlap: task seconds ÷ span")
    lines.append("  each task kept to one CPU (" + ", ".join(f"{k}={v}" for k, v in ONE_CPU_PER_TASK.items())
                 + "); by default one task already uses two")
    return lines


#: the rows of the build table, in its order: the floor first, then ours, then the baselines
BUILD_ROWS = {"single_stream": "single-stream limit", "ours": "ours (FGS SIP TAR)",
              "one_pass": "per-file loop", "cp_sha256sum": "cp -r + sha256sum", "bagit": "copy + bagit",
              "ours_with_conversion": "ours + PDF/A conversion"}


def _build(b: dict, r: dict, lim: dict, m: dict) -> list[str]:
    """Section 1: ours ÷ the single-stream limit first, then every method's best and median round."""
    rounds = b.get("rounds") or len(next(iter((b.get("warm") or {"": {}}).values()), {}).get("all_seconds", ()))
    lines = [f"1. Package build ({b['files']} files, {b['bytes'] / MB:.1f} MB; output durable on disk; "
             f"{rounds} interleaved rounds per method, best and median)"]
    w = [26, 8, 8, 9, 9, 9, 9, 28]
    passes = {"ours": 2, "ours_with_conversion": 2}
    for mode in ("warm", "cold"):
        runs = b.get(mode) or {}
        if not runs:
            if mode == "cold":
                lines.append("cold: not available (dropping the page cache was refused)"
                             if b.get("cold_available") is False and r["size"] != "tiny" else
                             "cold: not run at this size")
            continue
        conv = (b.get("variants") or {}).get(mode, {}).get("ours_with_conversion")
        rows = {**runs, **({"ours_with_conversion": conv} if conv else {})}
        ours = runs.get("ours")
        vs = (b.get("ours_vs_single_stream") or {}).get(mode)
        lines.append(f"  {mode}:")
        if vs:
            lines.append(f"  ours ÷ single-stream limit: {vs['best']:.2f}× best, {vs['median']:.2f}× median "
                         "(goal ≥ 0.5×; the limit reads, SHA-256s and appends every document to one file)")
        lines.append(_row(["  method", "best s", "median s", "MB/s", "files/s", "ours ÷ it", "(median)",
                           "limit hit (best)"], w))
        for k in sorted(rows, key=lambda k: list(BUILD_ROWS).index(k) if k in BUILD_ROWS else len(BUILD_ROWS)):
            v = rows[k]
            med = v.get("median_seconds", v["seconds"])
            lines.append(_row([f"  {BUILD_ROWS.get(k, k)}", f"{v['seconds']:.2f}", f"{med:.2f}", f"{v['mb_s']:.1f}",
                               f"{v['files_s']:.0f}",
                               f"{v['seconds'] / ours['seconds']:.2f}×" if ours else "",
                               f"{med / ours['median_seconds']:.2f}×" if ours and ours.get("median_seconds") else "",
                               _limit(v["mb_s"], lim, cold=mode == "cold", passes=passes.get(k, 1),
                                      tool_hash=k == "cp_sha256sum")], w))
        if ours:
            lines.append("  ours ÷ it: above 1 ours is faster; metadata written: "
                         f"ours {ours.get('metadata_bytes', 0) / MB:.1f} MB, "
                         f"bagit {(runs.get('bagit') or {}).get('metadata_bytes', 0) / MB:.2f} MB")
        if len(next(iter(runs.values())).get("all_seconds", ())) > 1:
            lines.append("  rounds (s, in the order run; each round starts with the next method): " + "; ".join(
                f"{k} " + "/".join(f"{x:.2f}" for x in v["all_seconds"]) for k, v in rows.items()))
        if conv and ours:
            lines.append(f"  + conversion: {conv.get('converted', 0)} DOCX to PDF/A by LibreOffice "
                         f"({conv.get('conversion_seconds', 0):.1f} s of conversion on "
                         f"{min(2, m.get('cpu_count') or 1)} processes) make the build "
                         f"{conv['seconds'] / ours['seconds']:.1f}× as long (best rounds); no other method converts")
    return lines


#: the rows of the rebuild table, in its order
REBUILD_ROWS = {"without_conversion": "without conversion", "with_conversion": "with PDF/A conversion (Lex)"}


def _rebuild(rb: dict) -> list[str]:
    """Section 7: first build with empty caches against a rebuild with both warm, per variant."""
    classes = rb.get("record_classes") or []
    of = rb.get("all_record_classes")
    which = ("every record class" if len(classes) == of
             else f"record class{'es' if len(classes) > 1 else ''} {', '.join(classes)} of {of}")
    lines = [f"7. Rebuild of an unchanged interval ({rb['files']} files, {rb['bytes'] / MB:.1f} MB, {which}; "
             f"{rb['rounds']} round{'s' if rb['rounds'] != 1 else ''}, best and median; "
             f"goal: first ÷ rebuild ≥ {rb['goal']:g}× on the medians)"]
    w = [40, 8, 9, 9, 10, 10, 8, 10]
    lines.append(_row(["build", "best s", "median s", "files/s", "÷ (best)", "÷ (median)", "goal", "same SHA"], w))
    for key, label in REBUILD_ROWS.items():
        v = rb["variants"].get(key)
        if not v:
            continue
        first, again, ratio = v["first"], v["rebuild"], v["first_over_rebuild"]
        lines.append(_row([f"{label}: first build", f"{first['seconds']:.2f}", f"{first['median_seconds']:.2f}",
                           f"{first['files_s']:.0f}", "", "", "", ""], w))
        lines.append(_row(["  rebuild (caches warm)", f"{again['seconds']:.2f}", f"{again['median_seconds']:.2f}",
                           f"{again['files_s']:.0f}", f"{ratio['best']:.2f}×", f"{ratio['median']:.2f}×",
                           "met" if v["goal_met"] else "MISSED", "yes" if v["identical"] else "NO"], w))
    for key, v in rb["variants"].items():
        first, again = v["first"], v["rebuild"]
        conv = (f"; {first['converted']} conversions, {first['conversion_seconds']:.1f} s in LibreOffice first, "
                f"{again['conversion_seconds']:.1f} s on rebuild" if first.get("converted") else "")
        lines.append(f"  {REBUILD_ROWS.get(key, key)}: rounds first/rebuild (s) " + "; ".join(
            f"{a:.2f}/{b:.2f}" for a, b in zip(first["all_seconds"], again["all_seconds"], strict=True))
            + f"; identifications cached {again['identifications']}{conv}")
    lines.append("  first: fresh SQLite catalogue (identification cache) and empty conversion cache; rebuild: the "
                 "caches that first build filled, packages compared by the SHA-256 of each (same SHA: rebuild = "
                 "first build, every round = the first round)")
    return lines


def table(r: dict) -> str:
    lines: list[str] = []
    lim = r.get("limits", {})
    m = r.get("machine", {})
    if warning := load_warning(r.get("load")):
        lines.append(warning)
    lines.append(f"Arkivflöde benchmarks — size {r['size']}, seed {r['seed']}, {m.get('cpu_count')} CPUs "
                 f"({m.get('cpu_model')}), {(m.get('ram_bytes') or 0) / 1e9:.0f} GB RAM, "
                 f"commit {str(m.get('git_commit'))[:10]}{' (dirty)' if m.get('git_dirty') else ''}")
    if lim:
        lines.append(f"limits: hashlib SHA-256 {lim['sha256_mb_s']:.0f} MB/s, coreutils sha256sum "
                     f"{lim['sha256sum_tool_mb_s']:.0f} MB/s, disk write (fdatasync) {lim['write_mb_s']:.0f} MB/s, "
                     f"disk read cold {lim['read_cold_mb_s']:.0f} MB/s" if lim.get("read_cold_mb_s") else
                     f"limits: SHA-256 {lim['sha256_mb_s']:.0f} MB/s, disk write {lim['write_mb_s']:.0f} MB/s")
    c = r.get("corpus")
    if c:
        lines.append(f"corpus: {c['documents']} documents, {c['bytes'] / MB:.1f} MB "
                     f"({c['staged_rows'].get('cases')} cases archived)")
    b = r.get("build")
    if b:
        lines.append("")
        lines.extend(_build(b, r, lim, m))
    v = r.get("validate")
    if v:
        lines.append("")
        lines.append(f"2. Validation ({v['packages']} packages, {v['bytes'] / MB:.1f} MB, in page cache)")
        # sha256sum -c ÷ this: the goal is at least 1.0× (as fast as a checksum tool), by best wall-clock
        # time and by CPU time (the fairer figure on a busy machine).
        w = [34, 8, 8, 6, 9, 12, 22]
        lines.append(_row(["validator", "best s", "median", "CPU s", "MB/s", "ours(tar) ÷",
                           "sha256sum -c ÷ (CPU)"], w))
        ours = v["ours_tar"]["seconds"]
        for k, label in (("ours_tar", "arkiv validate (tar)"), ("ours_folder", "arkiv validate (folder)"),
                         ("sha256sum_c", "sha256sum -c (checksums only)"),
                         ("eark", "E-ARK reference (no checksums)")):
            x = v.get(k) or {}
            if not x.get("seconds"):
                lines.append(_row([label, "n/a", "", "", "", "", ""], w))
                continue
            median = f"{x['median']:.2f}" if x.get("median") else ""
            cpu = f"{x['cpu_seconds']:.2f}" if x.get("cpu_seconds") else ""
            vs = (f"{x['vs_sha256sum_c']:.2f}×" + (f" ({x['vs_sha256sum_c_cpu']:.2f}×)"
                                                   if x.get("vs_sha256sum_c_cpu") else "")
                  if x.get("vs_sha256sum_c") else "")
            lines.append(_row([label, f"{x['seconds']:.2f}", median, cpu, f"{x['mb_s']:.1f}",
                               f"{x['seconds'] / ours:.2f}×", vs], w))
    e = r.get("extract")
    if e:
        lines.append("")
        if not e.get("available"):
            lines.append(f"3. Extraction: PostgreSQL not available ({e.get('error')})")
        else:
            lines.append(f"3. Extraction from PostgreSQL ({e['rows']} rows: {e['tables']})")
            w = [34, 8, 11, 12]
            lines.append(_row(["method", "seconds", "rows/s", "ours ÷ it"], w))
            for k, label in (("ours", "extract_database → Parquet"), ("copy", "COPY (query) TO STDOUT (ceiling)"),
                             ("pandas", "pandas.read_sql + to_parquet")):
                x = e[k]
                lines.append(_row([label, f"{x['seconds']:.2f}", f"{x['rows_s']:.0f}",
                                   f"{x['rows_s'] and e['ours']['rows_s'] / x['rows_s']:.2f}×"], w))
    mm = r.get("memory")
    if mm:
        lines.append("")
        floor = mm["imports"]["max_rss_mb"]
        lines.append(f"4. Peak RSS (MB; imports alone {floor:.0f} MB, subtracted for the goal: flat means "
                     "(10× − imports) ÷ (1× − imports) ≤ 1.2)")
        w = [22, 12, 12, 12, 16, 10]
        lines.append(_row(["", "1×", "10×", "10× ÷ 1×", "minus imports", "flat?"], w))
        for variant in ("split", "one_package"):
            if f"{variant}_1x" not in mm:
                continue
            for what in ("build", "validate"):
                a, b10 = mm[f"{variant}_1x"][what]["max_rss_mb"], mm[f"{variant}_10x"][what]["max_rss_mb"]
                net = (b10 - floor) / (a - floor) if a > floor else float("inf")
                lines.append(_row([f"{what} ({variant.replace('_', ' ')})", f"{a:.0f}", f"{b10:.0f}",
                                   f"{b10 / a:.2f}", f"{net:.2f}", "yes" if net <= 1.2 else "NO"], w))
            p1, p10 = mm[f"{variant}_1x"]["validated_package"], mm[f"{variant}_10x"]["validated_package"]
            lines.append(f"    ({variant.replace('_', ' ')}: biggest package {p1['records']} → {p10['records']} "
                         "records, "
                         f"{p1['documents']} → {p10['documents']} files)")
        s = mm["single_file"]
        lines.append(f"  one file, package {s['package_bytes'] / MB:.0f} MB: build {s['build']['max_rss_mb']:.0f} MB, "
                     f"validate {s['validate']['max_rss_mb']:.0f} MB (build "
                     f"{s['package_bytes'] / MB / s['build']['seconds']:.0f} MB/s, validate "
                     f"{s['package_bytes'] / MB / s['validate']['seconds']:.0f} MB/s)")
    wk = r.get("workers")
    if wk:
        lines.append("")
        lines.extend(_workers(wk, m))
    d = r.get("dagparse")
    if d:
        lines.append("")
        lines.append("6. DAG parse (fresh interpreter, Airflow already imported)")
        w = [30, 12, 14, 14]
        lines.append(_row(["file", "first (ms)", "re-parse (ms)", "÷ empty DAG"], w))
        base = d["files"]["empty_dag.py (baseline)"]
        for k, x in d["files"].items():
            lines.append(_row([k, f"{x['first_ms']:.1f}", f"{x['reparse_ms']:.1f}",
                               f"{x['first_ms'] / base['first_ms']:.1f}×"], w))
        de, dp = d["dagbag_empty"], d["dagbag_project"]
        lines.append(f"  DagBag: project {dp['ms']:.0f} ms ({dp['dags']} DAGs, {dp['import_errors']} import errors) "
                     f"vs empty DAG folder {de['ms']:.0f} ms")
    rb = r.get("rebuild")
    if rb:
        lines.append("")
        lines.extend(_rebuild(rb))
    lines.append(f"\ntotal {r.get('seconds', 0):.0f} s"
                 + (" (" + ", ".join(f"{k} {v:.0f} s" for k, v in r["section_seconds"].items()) + ")"
                    if r.get("section_seconds") else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
