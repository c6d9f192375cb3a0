"""Validation throughput: ``arkiv validate`` against the E-ARK reference validator and ``sha256sum -c``.

All three read the same packages, with their bytes in the page cache. The reference validator
runs in its own virtualenv (``/work/shared/tools/eark-validate`` creates it on first use); a
small driver imports it there and times only ``PackageValidator`` per package, not its start-up.
``sha256sum -c`` checks the checksums every METS lists (the checksum part of validation) on the
unpacked packages. Ours (tar and folder) and ``sha256sum -c`` run in interleaved rounds; each
row has the best and median seconds, and ``vs_sha256sum_c`` is sha256sum's best time divided by
ours (the goal: at least 1.0, as fast as a checksum tool that only reads and hashes).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tarfile
import time
from pathlib import Path

from lxml import etree

from bench.common import MB, PROJECT, clear, warm
from transforms.common.xmltools import NS_METS, NS_XLINK
from transforms.validation.validator import validate_package

EARK_TOOL = PROJECT.parent / "shared" / "tools" / "eark-validate"
#: Interleaved rounds of each timed method (ours on tars, ours on folders, sha256sum -c).
ROUNDS = 5


def _cpu() -> float:
    """CPU seconds of this process and its finished children (sha256sum runs as a child)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def interleaved(methods: dict, rounds: int) -> dict:
    """Run each method once per round, in turn, ``rounds`` times; per method the best and median
    wall-clock seconds, the CPU seconds of the best round, every round's time, and what the last
    round returned. Interleaving spreads a busy machine's slow moments over every method alike."""
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in methods}
    info: dict[str, dict] = {}
    for _ in range(rounds):
        for key, fn in methods.items():
            cpu, wall = _cpu(), time.perf_counter()
            info[key] = fn() or {}
            times[key].append((time.perf_counter() - wall, _cpu() - cpu))
    out = {}
    for key, pairs in times.items():
        best = min(pairs)
        out[key] = {"seconds": best[0], "median": statistics.median(w for w, _ in pairs), "cpu_seconds": best[1],
                    "rounds": [round(w, 3) for w, _ in pairs], **info[key]}
    return out

_EARK_DRIVER = r"""
import json, runpy, sys, time
from pathlib import Path
tools, paths = sys.argv[1], sys.argv[2:]
front = runpy.run_path(tools + "/eark_validate.py", run_name="eark_front")  # offline vocabularies, no main()
from eark_validator.packages import PackageValidator
out = []
for p in paths:
    t = time.perf_counter()
    try:
        report = PackageValidator(Path(p)).validation_report
        valid = bool(report.structure and report.metadata and report.is_valid)
        errors = sorted({m.rule_id for _, m in front["errors_of"](report)})
        failed = None
    except Exception as exc:
        valid, errors, failed = False, [], type(exc).__name__ + ": " + str(exc).splitlines()[0][:200]
    out.append({"path": p, "seconds": time.perf_counter() - t, "valid": valid, "rules": errors, "failed": failed})
print(json.dumps(out))
"""


def eark_python() -> Path | None:
    """The reference validator's interpreter, creating its virtualenv (once) through the tool."""
    if not EARK_TOOL.exists():
        return None
    env_dir = Path(os.environ.get("EARK_VALIDATOR_ENV")
                   or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eark-validator-1.1.3")
    py = env_dir / "bin" / "python"
    if not py.exists():
        subprocess.run([str(EARK_TOOL), "--help"], capture_output=True, check=False)  # creates the env
    return py if py.exists() else None


def run_eark(paths: list[str]) -> dict:
    py = eark_python()
    if py is None:
        return {"available": False}
    r = subprocess.run([str(py), "-c", _EARK_DRIVER, str(EARK_TOOL.parent), *paths], capture_output=True,
                       text=True, check=False)
    if r.returncode != 0:
        return {"available": False, "error": r.stderr[-2000:]}
    per = json.loads(r.stdout.strip().splitlines()[-1])
    return {"available": True, "seconds": sum(p["seconds"] for p in per), "packages": per}


def checksum_list(pkg_dir: Path) -> list[str]:
    """``sha256sum -c`` lines for every file the package's METS documents list with a checksum."""
    lines = []
    mets_files = [pkg_dir / "METS.xml", *sorted(pkg_dir.glob("representations/*/METS.xml"))]
    for mets in mets_files:
        base = mets.parent
        root = etree.parse(str(mets)).getroot()
        for el in root.iter(f"{{{NS_METS}}}file", f"{{{NS_METS}}}mdRef"):
            checksum = el.get("CHECKSUM")
            href = el.get(f"{{{NS_XLINK}}}href")
            if href is None:
                loc = el.find(f"{{{NS_METS}}}FLocat")
                href = loc.get(f"{{{NS_XLINK}}}href") if loc is not None else None
            if checksum and href:
                lines.append(f"{checksum.lower()}  {os.path.relpath(base / href, pkg_dir)}\n")
    return lines


def run(packages: list[str], work: Path, *, log) -> dict:
    total = sum(os.path.getsize(p) for p in packages)
    res: dict = {"packages": len(packages), "bytes": total}
    unpacked = work / "unpacked"
    clear(unpacked)
    unpacked.mkdir(parents=True)
    dirs = []
    for p in packages:
        with tarfile.open(p) as tar:
            tar.extractall(unpacked, filter="data")
        dirs.append(unpacked / Path(p).name.removesuffix(".tar"))
    lists = []
    for d in dirs:
        lst = d.parent / f"{d.name}.sha256"
        lst.write_text("".join(checksum_list(d)), encoding="utf-8")
        lists.append(lst)
    files_in_dirs = [str(f) for d in dirs for f in d.rglob("*") if f.is_file()]
    warm(packages)
    warm(files_in_dirs)

    def ours(paths):
        reports = [validate_package(p, "fgs") for p in paths]
        return {"valid": all(r.valid for r in reports), "bytes_checked": sum(r.bytes_checked for r in reports),
                "files_checked": sum(r.files_checked for r in reports)}

    def sha256sum_c():
        for d, lst in zip(dirs, lists, strict=True):
            subprocess.run(["sha256sum", "-c", "--quiet", "--strict", str(lst)], cwd=d, check=True,
                           stdout=subprocess.DEVNULL)
        return {"files": sum(len(lst.read_text().splitlines()) for lst in lists)}

    methods = {"ours_tar": lambda: ours(packages), "ours_folder": lambda: ours([str(d) for d in dirs]),
               "sha256sum_c": sha256sum_c}
    for key, row in interleaved(methods, ROUNDS).items():
        res[key] = {**row, "mb_s": total / MB / row["seconds"]}
    # The goal: validation at least as fast as sha256sum -c over the same files (ratio >= 1.0).
    for key in ("ours_tar", "ours_folder"):
        res[key]["vs_sha256sum_c"] = res["sha256sum_c"]["seconds"] / res[key]["seconds"]
        res[key]["vs_sha256sum_c_cpu"] = res["sha256sum_c"]["cpu_seconds"] / res[key]["cpu_seconds"]
    eark = run_eark(packages)
    if eark.get("available"):
        eark["mb_s"] = total / MB / eark["seconds"]
    res["eark"] = eark
    for k in ("ours_tar", "ours_folder", "sha256sum_c", "eark"):
        if res[k].get("seconds"):
            spread = f" (median {res[k]['median']:.2f} s)" if "median" in res[k] else ""
            vs = f"  sha256sum -c ÷ this {res[k]['vs_sha256sum_c']:.2f}×" if "vs_sha256sum_c" in res[k] else ""
            log(f"  validate {k:12} {res[k]['seconds']:7.2f} s{spread}  {res[k]['mb_s']:7.1f} MB/s{vs}")
    clear(unpacked)
    return res
