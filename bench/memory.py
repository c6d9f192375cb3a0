"""Memory: peak RSS of building and of validating a package at 1× and 10× the corpus, and of one huge file.

Each measurement is a fresh child process (``python -m bench.memory build|validate|imports``),
so its peak RSS (``ru_maxrss`` of that child, from ``os.wait4``) is its own. The staged batch is
prepared beforehand and not measured. ``imports`` is the floor: a process that imports
everything the build and the validator import and does nothing.

Two build variants: *split* is Lex as configured (packages cut at ``max_records`` = 2000 cases,
so the 10× corpus becomes several packages) and *one package* raises ``max_records`` so the whole
corpus goes into one package — the case a single large record class or a big single delivery meets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

from bench.common import MB, PYTHON, child_env, run_measured


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("manifest")
    b.add_argument("out")
    b.add_argument("--max-records", type=int, default=None)
    v = sub.add_parser("validate")
    v.add_argument("paths", nargs="+")
    sub.add_parser("imports")
    args = parser.parse_args(argv)

    from bench.common import PROJECT
    from transforms.config.systems import load_system
    from transforms.packaging.sip import build_packages
    from transforms.staging.batch import StagedBatch
    from transforms.validation.validator import validate_package

    LEX = load_system(PROJECT / "dags" / "systems" / "lex.yaml")  # noqa: N806 - as in bench.corpus

    t = time.perf_counter()
    if args.cmd == "build":
        staged = StagedBatch.load(args.manifest)
        system = dataclasses.replace(LEX, max_records=args.max_records) if args.max_records else LEX
        built = [p for rc in staged.partitions for p in build_packages(system, staged, rc, Path(args.out))]
        out = {"packages": [{"path": p.path, "size": p.size, "records": p.record_count,
                             "documents": p.document_count} for p in built]}
    elif args.cmd == "validate":
        reports = [validate_package(p, "fgs") for p in args.paths]
        out = {"valid": all(r.valid for r in reports), "errors": [f.to_dict() for r in reports for f in r.errors()][:5]}
    else:
        out = {}
    out["seconds"] = time.perf_counter() - t
    out["own_peak_mb"] = _own_peak_mb()
    print(json.dumps(out))
    return 0


def _own_peak_mb() -> float | None:
    """This process's own peak RSS (VmHWM). ``ru_maxrss`` of the launcher's children also counts
    the LibreOffice processes the build starts for conversions, which can be the larger ones."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    return None


def measure(args: list[str]) -> dict:
    r = run_measured([PYTHON, "-m", "bench.memory", *args], env=child_env())
    if r["returncode"] != 0:
        raise RuntimeError(f"bench.memory {args[0]} failed: {r['stderr']}")
    info = json.loads(r["stdout"].strip().splitlines()[-1])
    return {"max_rss_mb": r["max_rss_kb"] * 1024 / MB, "wall_seconds": r["seconds"], **info}


VARIANTS = {"split": None, "one_package": 10**9}


def run(one_x: Path, ten_x: Path, single: Path, work: Path, *, log, variants=tuple(VARIANTS)) -> dict:
    """``one_x``, ``ten_x``, ``single``: manifests of the staged batches to build."""
    res: dict = {"imports": measure(["imports"])}
    log(f"  memory imports only           {res['imports']['max_rss_mb']:7.1f} MB")
    for variant in variants:
        max_records = VARIANTS[variant]
        for label, manifest in (("1x", one_x), ("10x", ten_x)):
            out = work / f"mem-{variant}-{label}"
            shutil.rmtree(out, ignore_errors=True)
            extra = ["--max-records", str(max_records)] if max_records else []
            b = measure(["build", str(manifest), str(out), *extra])
            biggest = max(b["packages"], key=lambda p: p["size"])
            v = measure(["validate", biggest["path"]])
            res[f"{variant}_{label}"] = {"build": b, "validate": v, "validated_package": biggest}
            log(f"  memory {variant:11} {label:3} build {b['max_rss_mb']:7.1f} MB (own {b.get('own_peak_mb') or 0:.0f})"
                f"  validate {v['max_rss_mb']:7.1f} MB"
                f"  ({len(b['packages'])} packages, biggest {biggest['records']} records, "
                f"{biggest['documents']} files, {biggest['size'] / MB:.0f} MB)")
            shutil.rmtree(out, ignore_errors=True)
        r1, r10 = res[f"{variant}_1x"], res[f"{variant}_10x"]
        res[f"{variant}_ratio"] = {
            "build": r10["build"]["max_rss_mb"] / r1["build"]["max_rss_mb"],
            "validate": r10["validate"]["max_rss_mb"] / r1["validate"]["max_rss_mb"],
        }
    out = work / "mem-single"
    shutil.rmtree(out, ignore_errors=True)
    b = measure(["build", str(single), str(out)])
    v = measure(["validate", b["packages"][0]["path"]])
    res["single_file"] = {"build": b, "validate": v, "package_bytes": b["packages"][0]["size"]}
    log(f"  memory single file {b['packages'][0]['size'] / MB:7.0f} MB  build {b['max_rss_mb']:7.1f} MB  "
        f"validate {v['max_rss_mb']:7.1f} MB")
    shutil.rmtree(out, ignore_errors=True)
    return res


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
