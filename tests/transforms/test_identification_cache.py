"""Identification once: a content identified with the same signatures is never identified again.

The cache is the catalogue's ``format_identifications`` table (SQLite and PostgreSQL), keyed by
the content's SHA-256 and what identified it. The tests count calls to the real identifier and
compare every answer with identification without a cache.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from transforms.catalogue import Catalogue, FormatIdentification
from transforms.config.systems import load_system
from transforms.formats import identification as formats
from transforms.formats.identification import (
    CatalogueIdentificationCache,
    IdentificationCache,
    Identifier,
    IdentifyPool,
)
from transforms.packaging import sip as package
from transforms.packaging.sip import build_packages

PROJECT = Path(__file__).resolve().parents[2]
LEX = load_system(PROJECT / "dags" / "systems" / "lex.yaml")
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def catalogue(request, tmp_path):
    if request.param == "sqlite":
        cat = Catalogue(f"sqlite:///{tmp_path / 'catalogue.sqlite'}")
    else:
        cat = Catalogue(request.getfixturevalue("pg_url"))
    cat.migrate()
    yield cat
    cat.dispose()


def _documents(lex_source) -> list[str]:
    return sorted(str(p) for p in Path(lex_source["files"]).rglob("*") if p.is_file())


def _rows(cat: Catalogue) -> int:
    with cat.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(FormatIdentification.__table__)).scalar_one()


def test_second_stream_identifies_nothing_and_answers_the_same(lex_source, catalogue, identify_calls):
    paths = _documents(lex_source)
    here = Identifier.shared()
    expected = [(p, here.identify(p)) for p in paths]
    identify_calls.clear()
    cache = CatalogueIdentificationCache(catalogue)
    first = list(here.identify_stream(paths, cache=cache))
    assert first == expected
    assert sorted(identify_calls) == paths  # all new: every file identified, once
    assert _rows(catalogue) == len({Path(p).read_bytes() for p in paths})
    identify_calls.clear()
    second = list(here.identify_stream(paths, cache=CatalogueIdentificationCache(catalogue)))
    assert second == expected
    assert identify_calls == []


def test_the_same_attachment_twice_is_identified_once(lex_source, tmp_path, identify_calls):
    pdf = next(p for p in _documents(lex_source) if p.endswith(".pdf"))
    copies = []
    for case in ("case-1", "case-2", "case-3"):
        (tmp_path / case).mkdir()
        copies.append(str(shutil.copy(pdf, tmp_path / case / "bilaga.PDF")))
    here = Identifier.shared()
    identify_calls.clear()
    got = list(here.identify_stream(copies, cache=IdentificationCache()))
    assert len(identify_calls) == 1
    assert [i for _, i in got] == [here.identify(pdf)] * 3


def test_the_name_decides_only_where_the_extension_did(tmp_path, identify_calls):
    """Plain text is identified by its extension: the same bytes under another extension are
    identified again (the answer may differ), under the same extension they are not."""
    text = b"Protokoll fran sammantradet\n" * 20
    paths = []
    for name in ("a.txt", "b.txt", "c.csv", "d"):
        (tmp_path / name).write_bytes(text)
        paths.append(str(tmp_path / name))
    here = Identifier.shared()
    expected = [(p, here.identify(p)) for p in paths]
    identify_calls.clear()
    cache = IdentificationCache()
    assert list(here.identify_stream(paths, cache=cache)) == expected
    assert sorted(Path(p).name for p in identify_calls) == ["a.txt", "c.csv", "d"]
    identify_calls.clear()
    assert list(here.identify_stream(paths, cache=cache)) == expected
    assert identify_calls == []


def test_new_signatures_identify_again(lex_source, catalogue, identify_calls, monkeypatch):
    paths = _documents(lex_source)[:10]
    here = Identifier.shared()
    list(here.identify_stream(paths, cache=CatalogueIdentificationCache(catalogue)))
    monkeypatch.setattr(here, "tool", here.tool.replace("PRONOM v", "PRONOM v9"))
    identify_calls.clear()
    again = list(here.identify_stream(paths, cache=CatalogueIdentificationCache(catalogue)))
    assert sorted(identify_calls) == sorted(paths)
    assert all(i.tool == here.tool for _, i in again)


def test_an_unreadable_file_is_never_kept(tmp_path, identify_calls):
    """No digest, no cache entry: a missing file is asked about every time (an empty one has a
    digest like any content and is answered from the cache the second time)."""
    (tmp_path / "empty.pdf").write_bytes(b"")
    paths = [str(tmp_path / "missing.pdf"), str(tmp_path / "empty.pdf")]
    cache = IdentificationCache()
    here = Identifier.shared()
    for _ in range(2):
        got = list(here.identify_stream(paths, cache=cache))
        assert [i.note for _, i in got] == ["no such file", "empty file"]
    assert [Path(c).name for c in identify_calls] == ["missing.pdf", "empty.pdf", "missing.pdf"]


def test_pool_hashes_and_identifies_like_the_building_process(lex_source, catalogue, monkeypatch):
    monkeypatch.setattr(formats, "POOL_MIN_FILES", 8)
    paths = _documents(lex_source)
    here = Identifier.shared()
    expected = [(p, here.identify(p)) for p in paths]
    pool = IdentifyPool.start(2)
    assert pool is not None
    try:
        for _ in range(2):
            assert list(here.identify_stream(paths, pool, CatalogueIdentificationCache(catalogue))) == expected
    finally:
        pool.close()


def test_rebuilding_with_the_catalogue_identifies_no_document(staged, lex_source, catalogue, identify_calls, tmp_path,
                                                              monkeypatch):
    monkeypatch.setenv(formats.WORKERS_ENV, "0")  # identification in this process, where it is counted
    monkeypatch.setattr(package, "POOL_MIN_FILES", 8)
    policy = LEX.formats.without_conversion()
    documents = Path(lex_source["files"]).resolve()

    def build(out: str, cache) -> list:
        return [p for rc in sorted(staged.partitions)
                for p in build_packages(LEX, staged, rc, tmp_path / out, policy=policy, now=NOW,
                                        identification_cache=cache)]

    plain = build("plain", None)
    first = build("first", CatalogueIdentificationCache(catalogue))
    identify_calls.clear()
    second = build("second", CatalogueIdentificationCache(catalogue))
    assert [Path(c) for c in identify_calls if Path(c).resolve().is_relative_to(documents)] == []
    assert sum(p.document_count for p in second) >= 8
    assert [p.sha256 for p in plain] == [p.sha256 for p in first] == [p.sha256 for p in second]
    assert [p.formats for p in plain] == [p.formats for p in second]


def test_two_builds_storing_the_same_content_both_succeed(lex_source, catalogue):
    """Two builds of one attachment that both missed it: the second writer finds the row there."""
    paths = _documents(lex_source)[:5]
    here = Identifier.shared()
    one, two = CatalogueIdentificationCache(catalogue), CatalogueIdentificationCache(catalogue)
    stream_one, stream_two = here.identify_stream(paths, cache=one), here.identify_stream(paths, cache=two)
    next(stream_one), next(stream_two)  # both looked up before either stored
    assert list(stream_one)[-1] == list(stream_two)[-1]
    assert _rows(catalogue) == len({Path(p).read_bytes() for p in paths})
