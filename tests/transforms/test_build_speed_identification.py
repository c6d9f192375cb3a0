"""Identification runs ahead of the package writer, and the writer never waits idle for a worker.

The pool's workers identify a package's documents a few chunks ahead of the one the build is
copying; when they fall behind (too few of them, or their CPUs taken by other work), the build
identifies the chunk it needs itself. These tests check the order of the work and the answers,
not how long anything takes.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from transforms.config.systems import load_system
from transforms.formats import identification as formats
from transforms.formats.identification import Identifier, IdentifyPool
from transforms.packaging import sip as package
from transforms.packaging.sip import build_packages

PROJECT = Path(__file__).resolve().parents[2]
LEX = load_system(PROJECT / "dags" / "systems" / "lex.yaml")
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.fixture
def small_chunks(monkeypatch):
    """The pool from 8 files on, in chunks of 4 (the generated Lex has ~100 documents)."""
    monkeypatch.setattr(formats, "POOL_MIN_FILES", 8)
    monkeypatch.setattr(package, "POOL_MIN_FILES", 8)
    monkeypatch.setattr(formats, "POOL_CHUNK", 4)


def _documents(lex_source) -> list[str]:
    return sorted(str(p) for p in Path(lex_source["files"]).rglob("*") if p.is_file())


def _busy_until(flag: str) -> bool:
    """Keep a worker busy until ``flag`` exists (a worker whose CPU other work has taken)."""
    deadline = time.monotonic() + 120
    while not Path(flag).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return Path(flag).exists()


def test_the_build_identifies_what_a_busy_worker_has_not_answered(lex_source, small_chunks, tmp_path, monkeypatch):
    paths = _documents(lex_source)
    here = Identifier.shared()
    expected = [(p, here.identify(p)) for p in paths]
    asked: list[str] = []
    real = Identifier.identify

    def counting(self, path):
        asked.append(str(path))
        return real(self, path)

    pool = IdentifyPool.start(1)
    assert pool is not None
    monkeypatch.setattr(Identifier, "identify", counting)  # after the fork: counts this process only
    flag = tmp_path / "release"
    try:
        busy = pool._executor.submit(_busy_until, str(flag))
        got = list(here.identify_stream(paths, pool))
        # the chunks queued behind the busy worker were taken back, none identified twice here
        assert sorted(asked) == sorted(paths)
        # every answer came while the only worker was still busy: none was waited for
        assert not busy.done()
        flag.touch()
        assert busy.result(timeout=120) is True
    finally:
        flag.touch()
        pool.close()
    assert got == expected
    assert len(got) >= 3 * formats.POOL_CHUNK


def test_a_chunk_a_worker_is_on_is_answered_the_same_whoever_finishes_first(lex_source, small_chunks):
    paths = _documents(lex_source)
    here = Identifier.shared()
    expected = [(p, here.identify(p)) for p in paths]
    pool = IdentifyPool.start(2)
    assert pool is not None
    try:
        for _ in range(3):  # the race between the workers and this process falls differently each time
            assert list(here.identify_stream(paths, pool)) == expected
    finally:
        pool.close()


def test_identification_is_submitted_chunks_ahead_of_the_document_written(staged, small_chunks, tmp_path,
                                                                          monkeypatch):
    """When document N is copied into the TAR, the chunks after N's are already with the workers."""
    monkeypatch.setenv(formats.WORKERS_ENV, "1")
    submitted: list[str] = []
    ahead_when_written: list[tuple[int, int]] = []  # (position of the written document, files submitted)
    order: dict[str, int] = {}
    real_submit, real_add_file = IdentifyPool.submit, package._add_file

    def submit(self, chunk):
        for p in chunk:
            order.setdefault(p, len(order))
        submitted.extend(chunk)
        return real_submit(self, chunk)

    def add_file(writer, arcname, src, file_id, *args, **kwargs):
        if kwargs.get("staged") and str(src) in order:
            ahead_when_written.append((order[str(src)], len(submitted)))
        return real_add_file(writer, arcname, src, file_id, *args, **kwargs)

    monkeypatch.setattr(IdentifyPool, "submit", submit)
    monkeypatch.setattr(package, "_add_file", add_file)
    rc = max(staged.partitions, key=lambda k: staged.partitions[k].rows["cases"])
    [built] = build_packages(LEX, staged, rc, tmp_path / "out", policy=LEX.formats.without_conversion(), now=NOW)
    total = len(order)
    assert built.document_count >= 3 * formats.POOL_CHUNK and ahead_when_written
    for position, n in ahead_when_written:
        # at least the next chunk (all of them near the end) was submitted before this one was written
        assert n >= min(total, position + 1 + formats.POOL_CHUNK), (position, n, total)


def test_with_a_cache_the_first_answers_come_before_every_file_is_hashed(lex_source, tmp_path, monkeypatch):
    """The cache is looked up a window at a time: the build gets its first verdicts while later
    windows are still to be hashed, and content seen in an earlier window is not identified again."""
    monkeypatch.setattr(formats, "CACHE_WINDOW", 8)
    docs = _documents(lex_source)
    pdf = next(p for p in docs if p.endswith(".pdf"))
    again = tmp_path / "again"
    again.mkdir()
    copy = again / "bilaga.pdf"
    copy.write_bytes(Path(pdf).read_bytes())
    paths = [pdf, *[p for p in docs if p != pdf], str(copy)]  # the same PDF in the first and the last window
    hashed: list[str] = []
    identified: list[str] = []
    real_hash, real_identify = formats._hash_file, Identifier.identify

    def hash_file(path):
        hashed.append(path)
        return real_hash(path)

    def identify(self, path):
        identified.append(str(path))
        return real_identify(self, path)

    here = Identifier.shared()
    expected = [(p, here.identify(p)) for p in paths]
    monkeypatch.setattr(formats, "_hash_file", hash_file)
    monkeypatch.setattr(Identifier, "identify", identify)
    stream = here.identify_stream(paths, cache=formats.IdentificationCache())
    first = next(stream)
    assert len(hashed) < len(paths)  # the first answer did not wait for every file to be hashed
    got = [first, *stream]
    assert got == expected
    assert sorted(hashed) == sorted(paths)
    assert str(copy) not in identified and identified.count(pdf) == 1


def test_the_heap_is_left_out_of_full_collections_while_pools_run_and_handed_back_after():
    import gc

    before = gc.get_freeze_count()  # (0 unless a pool of another test is still open)
    first = IdentifyPool.start(1)
    assert first is not None
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # fido's signatures and the loaded modules
        second = IdentifyPool.start(1)
        assert second is not None
        second.close()
        second.close()  # closing twice hands nothing back twice
        # the first pool still runs: nothing was handed back (an unfreeze would empty the permanent
        # generation; a frozen object that dies meanwhile leaves it, so the count may drop by a few)
        assert frozen - 1_000 < gc.get_freeze_count() <= frozen
        garbage = [[]]
        garbage[0].append(garbage)  # a cycle made while the pool runs is collected as usual
        del garbage
        assert gc.collect() >= 1
    finally:
        first.close()
    assert gc.get_freeze_count() == (0 if formats._FROZEN == 0 else before)
