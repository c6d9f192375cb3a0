"""Identification in worker processes: the same answers, in order, whatever happens to the workers.

A large package's documents are identified by forked workers while the build copies the ones
already answered into the TAR (:class:`transforms.formats.identification.IdentifyPool`). These tests lower the
size at which the pool is used, so the small generated Lex uses it, and compare every result
with identification in the building process.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from transforms.common.errors import ConfigError
from transforms.config.systems import load_system
from transforms.formats import identification as formats
from transforms.formats.identification import Identifier, IdentifyPool, configured_workers
from transforms.packaging import sip as package
from transforms.packaging.sip import build_packages

PROJECT = Path(__file__).resolve().parents[2]
LEX = load_system(PROJECT / "dags" / "systems" / "lex.yaml")
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.fixture
def small_pool_threshold(monkeypatch):
    """Use the pool from 8 files on (the generated Lex has ~100 documents)."""
    monkeypatch.setattr(formats, "POOL_MIN_FILES", 8)
    monkeypatch.setattr(package, "POOL_MIN_FILES", 8)


def _documents(lex_source) -> list[str]:
    return sorted(str(p) for p in Path(lex_source["files"]).rglob("*") if p.is_file())


def test_pool_answers_like_the_building_process_in_order(lex_source, small_pool_threshold, tmp_path):
    paths = _documents(lex_source)
    paths += [str(tmp_path / "missing.pdf"), str(tmp_path)]  # not a file: answered, not an error
    here = Identifier.shared()
    expected = [(p, here.identify(p)) for p in paths]
    pool = IdentifyPool.start(2)
    assert pool is not None
    try:
        got = list(here.identify_stream(paths, pool))
    finally:
        pool.close()
    assert got == expected
    assert len({i.puid for _, i in got}) >= 4  # several formats (PDF, DOCX, JPEG, text), not all one answer


def test_a_worker_killed_midway_changes_nothing(lex_source, small_pool_threshold):
    paths = _documents(lex_source) * 20  # enough chunks that some are still queued when the workers die
    here = Identifier.shared()
    expected = [(p, here.identify(p)) for p in paths]
    pool = IdentifyPool.start(2)
    assert pool is not None
    try:
        stream = here.identify_stream(paths, pool)
        got = [next(stream)]
        for pid in list(pool._executor._processes):
            os.kill(pid, signal.SIGKILL)
        got += list(stream)
    finally:
        pool.close()
    assert got == expected
    assert pool.broken


def test_packages_are_byte_identical_with_and_without_workers(staged, small_pool_threshold, tmp_path, monkeypatch):
    policy = LEX.formats.without_conversion()
    built = {}
    for workers in ("0", "2"):
        monkeypatch.setenv(formats.WORKERS_ENV, workers)
        built[workers] = [p for rc in sorted(staged.partitions)
                          for p in build_packages(LEX, staged, rc, tmp_path / workers, policy=policy, now=NOW)]
    assert [p.sha256 for p in built["0"]] == [p.sha256 for p in built["2"]]
    assert [p.formats for p in built["0"]] == [p.formats for p in built["2"]]
    assert sum(p.document_count for p in built["2"]) >= 8


def test_conversion_after_the_documents_gives_the_same_package(staged, small_pool_threshold, tmp_path,
                                                               monkeypatch):
    """Converted documents' PDF/A are added once every document is in; LibreOffice's output differs
    from run to run (timestamps), so compare members and outcomes rather than bytes."""
    rc = max(staged.partitions, key=lambda k: staged.partitions[k].rows["cases"])
    built = {}
    for workers in ("0", "2"):
        monkeypatch.setenv(formats.WORKERS_ENV, workers)
        [built[workers]] = build_packages(LEX, staged, rc, tmp_path / workers, now=NOW)
    with tarfile.open(built["0"].path) as a, tarfile.open(built["2"].path) as b:
        assert a.getnames() == b.getnames()
    outcomes = [[(f["path"], f["outcome"], f["puid"]) for f in p.formats] for p in built.values()]
    assert outcomes[0] == outcomes[1]
    converted = [f for f in built["2"].formats if f["outcome"] == "converted"]
    assert converted and built["2"].converted == len(converted)
    derivatives = {f["derived_from"] for f in built["2"].formats if f["outcome"] == "derivative"}
    assert derivatives == {f"representations/rep1-original/data/{f['path'].split('/data/', 1)[1]}"
                           for f in converted}


def _in_daemon(queue) -> None:
    queue.put(IdentifyPool.start(1) is None)


def test_a_process_that_cannot_have_children_identifies_in_process():
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_in_daemon, args=(queue,), daemon=True)
    proc.start()
    assert queue.get(timeout=60) is True
    proc.join(30)


def test_workers_die_with_a_killed_build(tmp_path):
    """A worker holds copies of the build's open files (the interval lock among them): it must not outlive it."""
    script = tmp_path / "build.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(PROJECT)!r})\n"
        "from transforms.formats.identification import IdentifyPool\n"
        "pool = IdentifyPool.start(2)\n"
        "print(' '.join(str(p) for p in pool._executor._processes), flush=True)\n"
        "time.sleep(600)\n", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids)
    finally:
        proc.kill()
        proc.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_worker_count_setting(monkeypatch):
    monkeypatch.setenv(formats.WORKERS_ENV, "3")
    assert configured_workers() == 3
    monkeypatch.setenv(formats.WORKERS_ENV, "0")
    assert configured_workers() == 0
    assert IdentifyPool.start() is None
    for bad in ("two", "-1"):
        monkeypatch.setenv(formats.WORKERS_ENV, bad)
        with pytest.raises(ConfigError, match=formats.WORKERS_ENV):
            configured_workers()
    monkeypatch.delenv(formats.WORKERS_ENV)
    assert configured_workers() == len(os.sched_getaffinity(0)) - 1


def test_work_handed_to_the_pool_runs_in_a_worker_or_here_once_the_pool_is_broken():
    pool = IdentifyPool.start(1)
    assert pool is not None
    try:
        assert pool.call(os.getpid)() != os.getpid()
        answer = pool.call(os.getpid)  # queued, then its worker is killed
        for pid in list(pool._executor._processes):
            os.kill(pid, signal.SIGKILL)
        assert answer() == os.getpid()
        assert pool.broken
        assert pool.call(os.getpid)() == os.getpid()
    finally:
        pool.close()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_written_document_that_is_invalid_stops_the_package(staged, small_pool_threshold, tmp_path, monkeypatch,
                                                              workers):
    """The schema checks of what the build wrote run in a worker when there are workers; either
    way an invalid document stops the build before the package gets its name, and nothing is left."""
    from transforms.packaging import premis
    from transforms.packaging.sip import PackageBuildError

    write_object = premis._file_object_text

    def broken(depth, obj):  # compositionLevel is a non-negative integer in PREMIS 3
        return write_object(depth, obj).replace(b">0</premis:compositionLevel>", b">none</premis:compositionLevel>")

    monkeypatch.setattr(premis, "_file_object_text", broken)
    monkeypatch.setenv(formats.WORKERS_ENV, workers)
    rc = max(staged.partitions, key=lambda k: staged.partitions[k].rows["cases"])
    out = tmp_path / "build"
    with pytest.raises(PackageBuildError, match=r"premis\.xml of package uuid-.* does not validate.*compositionLevel"):
        build_packages(LEX, staged, rc, out, policy=LEX.formats.without_conversion(), now=NOW)
    assert [p.name for p in out.iterdir() if p.name != "quarantined-documents"] == []


def test_read_ahead_passes_over_a_fifo_without_blocking(tmp_path):
    """A FIFO among a chunk's files (a broken export) must not hang the worker's read-ahead."""
    import threading

    from transforms.formats.identification import _read_ahead

    fifo, plain = tmp_path / "pipe", tmp_path / "plain.txt"
    os.mkfifo(fifo)
    plain.write_text("text")
    done = threading.Event()
    threading.Thread(target=lambda: (_read_ahead([str(fifo), str(plain)]), done.set()), daemon=True).start()
    assert done.wait(10), "_read_ahead blocked on a FIFO"
