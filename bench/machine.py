"""The machine a run measured, and its physical limits: SHA-256 speed, disk write and read speed."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from bench.common import MB, PROJECT, drop_caches


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=PROJECT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or None
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else None


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def describe(work: Path) -> dict:
    """CPU, RAM, disk free, versions and git commit."""
    from lxml import etree

    dirty = _git("status", "--porcelain")
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "ram_bytes": _ram_bytes(),
        "disk_free_bytes": shutil.disk_usage(work).free,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {
            "pyarrow": _version("pyarrow"),
            "lxml": ".".join(map(str, etree.LXML_VERSION)),
            "libxml2": ".".join(map(str, etree.LIBXML_VERSION)),
            "openssl": __import__("ssl").OPENSSL_VERSION,
            "apache-airflow": _version("apache-airflow"),
            "sqlalchemy": _version("sqlalchemy"),
            "pandas": _version("pandas"),
            "psycopg2": _version("psycopg2-binary") or _version("psycopg2"),
            "bagit": _version("bagit"),
            "arkivflode": _version("arkivflode"),
        },
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(dirty) if dirty is not None else None,
    }


def sha256_speed(total: int = 512 * MB, chunk: int = 1 << 20) -> float:
    """SHA-256 throughput (MB/s) of ``hashlib`` on an in-memory buffer, 1 MiB updates, best of 3."""
    buf = os.urandom(min(total, 64 * MB))
    view = memoryview(buf)
    best = 0.0
    for _ in range(3):
        h = hashlib.sha256()
        t = time.perf_counter()
        done = 0
        while done < total:
            for i in range(0, len(buf), chunk):
                h.update(view[i:i + chunk])
            done += len(buf)
        best = max(best, done / MB / (time.perf_counter() - t))
    return best


def disk_speeds(work: Path, size: int) -> dict:
    """Sequential write (``dd conv=fdatasync``, durable), read warm and (if allowed) cold, and the speed of
    coreutils ``sha256sum`` on a cached file, in MB/s. The test file holds zeros: speeds do not depend
    on content here (no compression or deduplication on this disk path is assumed)."""
    path = work / "dd-test.bin"
    count = max(1, size // (1 << 20))
    out: dict = {"bytes": count << 20}
    t = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={count}", "conv=fdatasync", "status=none"],
                   check=True)
    out["write_mb_s"] = (count << 20) / MB / (time.perf_counter() - t)
    t = time.perf_counter()
    subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=1M", "status=none"], check=True)
    out["read_warm_mb_s"] = (count << 20) / MB / (time.perf_counter() - t)
    t = time.perf_counter()
    subprocess.run(["sha256sum", str(path)], capture_output=True, check=True)
    out["sha256sum_tool_mb_s"] = (count << 20) / MB / (time.perf_counter() - t)  # coreutils, file in cache
    if drop_caches():
        t = time.perf_counter()
        subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=1M", "status=none"], check=True)
        out["read_cold_mb_s"] = (count << 20) / MB / (time.perf_counter() - t)
    else:
        out["read_cold_mb_s"] = None
    path.unlink()
    return out


def limits(work: Path, dd_size: int) -> dict:
    return {"sha256_mb_s": sha256_speed(), **disk_speeds(work, dd_size)}
