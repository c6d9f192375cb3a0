"""Package build throughput against the single-stream limit, the per-file loop, ``cp -r`` +
``sha256sum`` and bagit-python.

The single-stream limit is the work a TAR writer cannot avoid: read each document, SHA-256 it
and append it to one file. Ours is measured against it first; the per-file loop writes one file
per document and so also measures how the disk copes with many small files.

Every method works on the same document files (the corpus's staged batch) and ends with its
output durable on disk (``sync -f`` of the output file system is inside the timing; ours
fsyncs each TAR itself), so no method wins by leaving dirty pages behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import tarfile
from pathlib import Path

import bagit

from bench.common import MB, clear, drop_caches, sync_fs, timed, warm
from bench.corpus import LEX, Corpus
from transforms.formats.identification import FormatPolicy, Identifier
from transforms.packaging.sip import build_packages

CHUNK = 1 << 20


def _build(corpus: Corpus, out: Path, policy: FormatPolicy) -> dict:
    """transforms.packaging.sip.build_packages for every record class of the staged batch."""
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


def single_stream(corpus: Corpus, out: Path) -> dict:
    """The floor for a package writer: read each document once, SHA-256 it, append it to one file."""
    out.mkdir(parents=True)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    digests = 0
    with open(out / "stream.bin", "wb") as fout:
        for src in corpus.documents:
            h = hashlib.sha256()
            with open(src, "rb") as fin:
                while n := fin.readinto(buf):
                    h.update(view[:n])
                    fout.write(view[:n])
            h.digest()
            digests += 1
        fout.flush()
        os.fsync(fout.fileno())
    sync_fs(out)
    return {"metadata_bytes": 0, "documents": digests, "output_bytes": (out / "stream.bin").stat().st_size}


def one_pass(corpus: Corpus, out: Path) -> dict:
    """The per-file loop: read each file once, SHA-256 it and write its copy (plus a manifest)."""
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


#: the order of the first round; later rounds rotate it
METHODS = {
    "single_stream": single_stream,
    "ours": ours,
    "one_pass": one_pass,
    "cp_sha256sum": cp_sha256sum,
    "bagit": bagit_bag,
}
#: measured beside METHODS and kept apart in the JSON (``build["variants"]``): work no other method does
VARIANTS = {"ours_with_conversion": ours_with_conversion}


def run(corpus: Corpus, work: Path, *, repeats: int, cold: bool, log, sample=None,
        conversion: bool = True) -> dict:
    """Every method in ``repeats`` interleaved rounds warm and, when allowed, as many cold.

    A round runs every method once, one after the other, so that a slow spell of the disk (a
    virtual disk's write bursts come and go) or of a CPU shared with other processes falls on all
    methods alike rather than on one method's rounds; each round starts with the next method,
    because this machine's disk writes fast in a round's first method and then slows for minutes
    after a burst of small files (bench/README.md). Each method's best and median round are kept,
    with every round. The conversion variant takes its turn in the warm rounds like the others.
    fido's signatures are loaded before any timing (once per process, ~0.5 s, as a worker pays it
    once for all its builds). ``sample(label)`` is called after each round (the load average).
    """
    nbytes, nfiles = corpus.doc_bytes, len(corpus.documents)
    result: dict = {"files": nfiles, "bytes": nbytes, "rounds": repeats, "warm": {}, "cold": {},
                    "cold_available": None}
    Identifier.shared()
    for mode in ("warm", "cold"):
        if mode == "cold" and not cold:
            result["cold_available"] = False
            continue
        order = list(METHODS) + (list(VARIANTS) if mode == "warm" and conversion else [])
        fns = {**METHODS, **VARIANTS}
        runs: dict[str, list[dict]] = {}
        for round_no in range(repeats):
            turn = order[round_no % len(order):] + order[:round_no % len(order)]
            for name in turn:
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
                seconds, info = timed(lambda fn=fns[name], out=out: fn(corpus, out))
                if "paths" in info:
                    info["metadata_bytes"] = metadata_bytes(info.pop("paths"))
                runs.setdefault(name, []).append({"seconds": seconds, "round": round_no + 1, **info})
                clear(out)
                log(f"  build {mode:4} {name:20} round {round_no + 1}: {seconds:7.2f} s")
            if mode == "cold" and result["cold_available"] is False:
                break
            if sample:
                sample(f"build {mode} round {round_no + 1}")
        if mode == "cold" and result["cold_available"] is False:
            result["cold"] = {}
            continue
        for name, tries in runs.items():
            best = dict(min(tries, key=lambda r: r["seconds"]))
            med = statistics.median(r["seconds"] for r in tries)
            best.update(mb_s=nbytes / MB / best["seconds"], files_s=nfiles / best["seconds"],
                        all_seconds=[r["seconds"] for r in tries], median_seconds=med,
                        median_mb_s=nbytes / MB / med)
            if name in VARIANTS:
                result.setdefault("variants", {}).setdefault(mode, {})[name] = best
            else:
                result[mode][name] = best
            extra = (f"  ({best['converted']} converted by LibreOffice, {best['conversion_seconds']:.1f} s)"
                     if best.get("converted") else "")
            log(f"  build {mode:4} {name:20} best {best['seconds']:7.2f} s, median {med:7.2f} s "
                f"{best['mb_s']:7.1f} MB/s {best['files_s']:8.0f} files/s{extra}")
        limit, ours_ = result[mode].get("single_stream"), result[mode].get("ours")
        if limit and ours_:
            # limit ÷ ours in seconds = ours' speed ÷ the limit's: the goal is ≥ 0.5
            result.setdefault("ours_vs_single_stream", {})[mode] = {
                "best": limit["seconds"] / ours_["seconds"],
                "median": limit["median_seconds"] / ours_["median_seconds"]}
    return result


def build_for_validation(corpus: Corpus, out: Path) -> list[str]:
    """Build the corpus's packages once (kept for the validation benchmark)."""
    out.mkdir(parents=True, exist_ok=True)
    return [p.path for rc in corpus.staged.partitions for p in build_packages(LEX, corpus.staged, rc, out)]
