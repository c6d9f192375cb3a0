"""Package build throughput against the one-pass limit, ``cp -r`` + ``sha256sum`` and bagit-python.

Every method works on the same document files (the corpus's staged batch) and ends with its
output durable on disk (``sync -f`` of the output file system is inside the timing; ours
fsyncs each TAR itself), so no method wins by leaving dirty pages behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import bagit

from bench.common import MB, clear, drop_caches, sync_fs, timed, warm
from bench.corpus import LEX, Corpus
from transforms.formats import FormatPolicy, Identifier
from transforms.package import build_packages

CHUNK = 1 << 20


def _build(corpus: Corpus, out: Path, policy: FormatPolicy) -> dict:
    """transforms.package.build_packages for every record class of the staged batch."""
    out.mkdir(parents=True)
    built = []
    for rc in corpus.staged.partitions:
        # a cache of its own in each round: every round converts, as a first build does
        built += build_packages(LEX, corpus.staged, rc, out, policy=policy, conversion_cache=out / ".conversion-cache")
    sync_fs(out)
    converted = [f for p in built for f in p.formats if f["outcome"] == "converted"]
    return {"packages": len(built), "output_bytes": sum(p.size for p in built), "paths": [p.path for p in built],
            "converted": len(converted), "conversion_seconds": sum(f.get("seconds") or 0 for f in converted)}


def ours(corpus: Corpus, out: Path) -> dict:
    """Our package build, like for like with the other methods: the same files in, the same files
    out (plus METS, PREMIS, ERMS, identification); DOCX accepted as delivered, no LibreOffice."""
    return _build(corpus, out, LEX.formats.without_conversion())


def ours_with_conversion(corpus: Corpus, out: Path) -> dict:
    """Our package build as Lex is configured: DOCX also converted to PDF/A by LibreOffice."""
    return _build(corpus, out, LEX.formats)


def metadata_bytes(paths: list[str]) -> int:
    """Bytes of every package member that is not a document: METS, PREMIS, ERMS, CSV tables, schemas …"""
    total = 0
    for path in paths:
        with tarfile.open(path) as tar:
            for m in tar:
                is_document = "/representations/rep1/data/" in m.name and "/data/tables/" not in m.name
                if m.isfile() and not is_document:
                    total += m.size
    return total


def one_pass(corpus: Corpus, out: Path) -> dict:
    """The physical limit: read each file once, SHA-256 it and write the copy (plus a manifest)."""
    out.mkdir(parents=True)
    lines = []
    root = corpus.files
    for src in corpus.documents:
        rel = os.path.relpath(src, root)
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            while chunk := fin.read(CHUNK):
                h.update(chunk)
                fout.write(chunk)
        lines.append(f"{h.hexdigest()}  {rel}\n")
    (out / "manifest-sha256.txt").write_text("".join(lines), encoding="utf-8")
    sync_fs(out)
    return {"metadata_bytes": (out / "manifest-sha256.txt").stat().st_size}


def cp_sha256sum(corpus: Corpus, out: Path) -> dict:
    """What a script does: ``cp -r`` then ``sha256sum`` over every file of the copy (two passes)."""
    dst = out / "data"
    out.mkdir(parents=True)
    subprocess.run(["cp", "-r", str(corpus.files), str(dst)], check=True)
    files = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    with open(out / "manifest-sha256.txt", "wb") as manifest:
        for i in range(0, len(files), 2000):
            subprocess.run(["sha256sum", "--", *files[i:i + 2000]], cwd=dst, stdout=manifest, check=True)
    sync_fs(out)
    return {"metadata_bytes": (out / "manifest-sha256.txt").stat().st_size}


def bagit_bag(corpus: Corpus, out: Path) -> dict:
    """What a BagIt user does: copy, then ``bagit.make_bag(dir, checksums=["sha256"])``."""
    dst = out / "bag"
    out.mkdir(parents=True)
    shutil.copytree(corpus.files, dst)
    bagit.make_bag(str(dst), checksums=["sha256"])
    sync_fs(out)
    meta = sum(p.stat().st_size for p in dst.iterdir() if p.is_file())
    return {"metadata_bytes": meta}


METHODS = {
    "ours": ours,
    "one_pass": one_pass,
    "cp_sha256sum": cp_sha256sum,
    "bagit": bagit_bag,
}
#: measured beside METHODS and kept apart in the JSON (``build["variants"]``): work no other method does
VARIANTS = {"ours_with_conversion": ours_with_conversion}


def run(corpus: Corpus, work: Path, *, repeats: int, cold: bool, log) -> dict:
    """Every method warm (``repeats`` rounds, best kept) and, when allowed, once cold.

    A round runs every method once, one after the other, so that a slow spell of the disk (a
    virtual disk's write bursts come and go) falls on all methods alike rather than on one
    method's repeats; each round starts with the next method (round 2 with the one-pass loop,
    …), because this machine's disk writes fast in a round's first method and then slows for
    minutes after a burst of small files (bench/README.md). The conversion variant runs once, at
    the end of the first warm round: LibreOffice's minutes do not depend on the page cache.
    fido's signatures are loaded before any timing (once per process, ~0.5 s, as a worker pays it
    once for all its builds).
    """
    nbytes, nfiles = corpus.doc_bytes, len(corpus.documents)
    result: dict = {"files": nfiles, "bytes": nbytes, "warm": {}, "cold": {}, "cold_available": None}
    Identifier.shared()
    order = list(METHODS)
    for mode in ("warm", "cold"):
        if mode == "cold" and not cold:
            result["cold_available"] = False
            continue
        runs: dict[str, list[dict]] = {}
        for round_no in range(repeats if mode == "warm" else 1):
            turn = order[round_no % len(order):] + order[:round_no % len(order)]
            methods = {**{k: METHODS[k] for k in turn}, **(VARIANTS if mode == "warm" and round_no == 0 else {})}
            for name, fn in methods.items():
                out = work / f"build-{name}"
                clear(out)
                os.sync()
                if mode == "warm":
                    warm(corpus.documents)
                elif not drop_caches():
                    result["cold_available"] = False
                    break
                else:
                    result["cold_available"] = True
                seconds, info = timed(lambda fn=fn, out=out: fn(corpus, out))
                if "paths" in info:
                    info["metadata_bytes"] = metadata_bytes(info.pop("paths"))
                runs.setdefault(name, []).append({"seconds": seconds, **info})
                clear(out)
                log(f"  build {mode:4} {name:20} round {round_no + 1}: {seconds:7.2f} s")
        if mode == "cold" and result["cold_available"] is False:
            result["cold"] = {}
            continue
        for name, tries in runs.items():
            best = min(tries, key=lambda r: r["seconds"])
            best.update(mb_s=nbytes / MB / best["seconds"], files_s=nfiles / best["seconds"],
                        all_seconds=[r["seconds"] for r in tries],
                        median_seconds=sorted(r["seconds"] for r in tries)[len(tries) // 2])
            if name in VARIANTS:
                result.setdefault("variants", {}).setdefault(mode, {})[name] = best
            else:
                result[mode][name] = best
            extra = (f"  ({best['converted']} converted by LibreOffice, {best['conversion_seconds']:.1f} s)"
                     if best.get("converted") else "")
            log(f"  build {mode:4} {name:20} {best['seconds']:7.2f} s  {best['mb_s']:7.1f} MB/s "
                f"{best['files_s']:8.0f} files/s{extra}")
    return result


def build_for_validation(corpus: Corpus, out: Path) -> list[str]:
    """Build the corpus's packages once (kept for the validation benchmark)."""
    out.mkdir(parents=True, exist_ok=True)
    return [p.path for rc in corpus.staged.partitions for p in build_packages(LEX, corpus.staged, rc, out)]
