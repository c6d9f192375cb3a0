"""Helpers shared by the benchmarks: timing, page cache, subprocesses with their own peak RSS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MB = 1_000_000

#: each task of the workers benchmark on one CPU (identification in the task's process, one
#: LibreOffice): by default one package build already uses two, which would hide what a second
#: worker adds
ONE_CPU_PER_TASK = {"ARKIV_IDENTIFY_WORKERS": "0", "ARKIV_CONVERSION_PROCESSES": "1"}


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call."""
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def drop_caches() -> bool:
    """Write back dirty pages and drop the page cache; False when the machine refuses (not root)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def warm(paths: Iterable[Path | str]) -> int:
    """Read files once so that they sit in the page cache; returns the bytes read."""
    total = 0
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
    return total


def sync_fs(path: Path | str) -> None:
    """Make everything written under ``path`` durable (``sync -f``: that file system only)."""
    subprocess.run(["sync", "-f", str(path)], check=True)


def clear(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


# Peak RSS goes through a small launcher: Linux records the RSS a process had *before* exec in
# its ru_maxrss, so a child forked straight from this (large) benchmark process would report at
# least our own RSS. The launcher is a fresh, small interpreter; it runs the command and reports
# resource.getrusage(RUSAGE_CHILDREN).ru_maxrss, i.e. the peak of that one child.
_LAUNCHER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(rc)\n"
)


def run_measured(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                 stdout_path: Path | None = None) -> dict:
    """Run one child process; its wall time, exit code, stdout and peak RSS in kB (see _LAUNCHER)."""
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="arkiv-bench-rss-", delete=False) as f:
        rss_file = f.name
    try:
        r = _run([PYTHON, "-S", "-c", _LAUNCHER, rss_file, *args], env=env, cwd=cwd,
                 stdout_path=stdout_path)
        text = Path(rss_file).read_text().strip()
        r["max_rss_kb"] = int(text) if text else None
    finally:
        os.unlink(rss_file)
    return r


def _run(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
         stdout_path: Path | None = None) -> dict:
    out = open(stdout_path, "wb") if stdout_path else subprocess.PIPE  # noqa: SIM115 - closed below
    t = time.perf_counter()
    proc = subprocess.Popen(args, env=env or child_env(), cwd=cwd or PROJECT, stdout=out,
                            stderr=subprocess.PIPE)
    stdout = b""
    stderr = b""
    if stdout_path is None:
        stdout, stderr = _communicate_without_wait(proc)
    else:
        stderr = proc.stderr.read() if proc.stderr else b""
    _, status, _usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if stdout_path:
        out.close()  # type: ignore[union-attr]
    return {"seconds": seconds, "returncode": proc.returncode,
            "stdout": stdout.decode(errors="replace"), "stderr": stderr.decode(errors="replace")[-4000:]}


def _communicate_without_wait(proc: subprocess.Popen) -> tuple[bytes, bytes]:
    """Read stdout and stderr to their end without reaping the child (so wait4 can)."""
    import threading

    chunks: dict[str, bytes] = {}

    def drain(name: str, stream) -> None:
        chunks[name] = stream.read()

    threads = [threading.Thread(target=drain, args=(n, s)) for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return chunks.get("out", b""), chunks.get("err", b"")


def tree_bytes(paths: Iterable[Path | str]) -> tuple[int, int]:
    """(files, bytes) of a list of files."""
    n = size = 0
    for p in paths:
        n += 1
        size += os.stat(p).st_size
    return n, size


def ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return a / b


# ------------------------------------------------------------------------------------ machine load
def load_sample(label: str) -> dict:
    """The 1-, 5- and 15-minute load averages now, named by what the run had just done."""
    one, five, fifteen = os.getloadavg()
    return {"when": label, "at": time.time(), "load1": one, "load5": five, "load15": fifteen}


#: runnable processes of the run's own above one per CPU: the writer beside a LibreOffice or
#: identification process on each CPU
OWN_LOAD = 1.0


def load_verdict(samples: list[dict], cpu_count: int | None, threshold: float | None = None) -> dict:
    """Whether the run shared the machine: some sample's 1-minute load average above its threshold.

    The default threshold is the CPU count for the ``start`` sample (nothing of the run's own is
    running yet) and the CPU count + ``OWN_LOAD`` for the samples taken while the run works:
    above that, more processes were runnable than the run itself keeps busy, so some timed work
    waited for a CPU. ``threshold`` replaces both.
    """
    cpus = float(cpu_count or 1)

    def limit_of(s: dict) -> float:
        if threshold is not None:
            return float(threshold)
        return cpus if s["when"] == "start" else cpus + OWN_LOAD

    over = [s for s in samples if s["load1"] > limit_of(s)]
    peak = max(over or samples, key=lambda s: s["load1"], default=None)
    return {"samples": samples, "threshold": float(threshold) if threshold is not None else cpus,
            "threshold_is_cpu_count": threshold is None, "own_load": 0.0 if threshold is not None else OWN_LOAD,
            "cpu_count": cpu_count, "max_load1": peak["load1"] if peak else 0.0,
            "loaded": bool(over), "loaded_at": [s["when"] for s in over]}


def load_warning(verdict: dict | None) -> str | None:
    """The line a loaded run prints first; None for a run alone on the machine."""
    if not verdict or not verdict.get("loaded"):
        return None
    basis = (f"the CPU count, + {verdict['own_load']:g} for the run's own processes once it works"
             if verdict.get("threshold_is_cpu_count") else "--load-threshold")
    return (f"WARNING: LOADED MACHINE: the 1-minute load average reached {verdict['max_load1']:.2f}, above "
            f"{verdict['threshold']:g} ({basis}), in {len(verdict['loaded_at'])} of {len(verdict['samples'])} "
            "samples; other processes took CPU from the timed work, so these figures are not an idle "
            "machine's and ratios may be skewed")
