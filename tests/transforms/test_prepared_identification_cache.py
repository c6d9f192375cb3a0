"""Prepared intake identifies a content once: a re-delivered package is looked up in the catalogue's
identification cache, not identified again, and gets the same formats as without a cache.

The tests count calls to the real identifier on real Castor packages (PDF and TIFF drawings).
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from demo import castor
from transforms.catalogue import Catalogue, FormatIdentification
from transforms.config.systems import load_systems
from transforms.formats.identification import CatalogueIdentificationCache
from transforms.intake.delivery import PreparedDelivery, delivery_for
from transforms.intake.prepared import take_in


@pytest.fixture(scope="module")
def castor_inbox(tmp_path_factory) -> Path:
    inbox = tmp_path_factory.mktemp("castor") / "inbox"
    castor.generate(inbox, size=2, as_zip=1)
    return inbox


def _copy(inbox: Path, to: Path) -> Path:
    to.mkdir(parents=True)
    for p in inbox.iterdir():
        if p.is_file() and p.suffix in (".tar", ".zip"):
            shutil.copy(p, to / p.name)
    return to


def _formats(intakes) -> list[dict]:
    return [f for i in sorted(intakes, key=lambda i: i.source) for f in i.formats]


def test_a_redelivered_package_is_not_identified_again(castor_inbox, tmp_path, identify_calls):
    without = take_in(_copy(castor_inbox, tmp_path / "a"), tmp_path / "build-a", tmp_path / "q-a")
    assert all(i.outcome == "valid" for i in without) and len(without) == 2
    data_files = len(_formats(without))
    assert data_files > 0 and len(identify_calls) == data_files
    cat = Catalogue(f"sqlite:///{tmp_path / 'catalogue.sqlite'}")
    cat.migrate()
    try:
        identify_calls.clear()
        first = take_in(_copy(castor_inbox, tmp_path / "b"), tmp_path / "build-b", tmp_path / "q-b",
                        identification_cache=CatalogueIdentificationCache(cat))
        assert _formats(first) == _formats(without)
        assert 0 < len(identify_calls) <= data_files  # the same bytes twice in one intake: identified once
        identify_calls.clear()
        again = take_in(_copy(castor_inbox, tmp_path / "c"), tmp_path / "build-c", tmp_path / "q-c",
                        identification_cache=CatalogueIdentificationCache(cat))
        assert identify_calls == []
        assert _formats(again) == _formats(without)
        assert [i.format_findings for i in again] == [i.format_findings for i in without]
    finally:
        cat.dispose()


def test_the_prepared_delivery_uses_the_catalogues_cache(castor_inbox, tmp_path, monkeypatch, settings, identify_calls):
    inbox = _copy(castor_inbox, tmp_path / "inbox")
    monkeypatch.setenv("ARKIV_CASTOR_INBOX", str(inbox))
    system = load_systems(settings.systems_dir)["castor"]
    delivery = delivery_for(system)
    assert isinstance(delivery, PreparedDelivery)
    cat = Catalogue(f"sqlite:///{tmp_path / 'catalogue.sqlite'}")
    cat.migrate()
    try:
        start, end = dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2)
        first = delivery.stage(settings, cat, start, end, None)
        assert len(first.prepared) == 2 and identify_calls
        with cat.engine.connect() as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(FormatIdentification.__table__)).scalar_one()
        assert rows > 0
        identify_calls.clear()
        second = delivery.stage(settings, cat, start, end, None)  # the packages are still in the inbox
        assert identify_calls == []
        assert [d["formats"] for d in second.prepared] == [d["formats"] for d in first.prepared]
    finally:
        cat.dispose()


def test_a_repaired_package_delivered_again_is_not_identified_again(tmp_path, identify_calls):
    """Repairing a package (here: files without MIMETYPE, which the repair takes from identification)
    identifies through the cache too: redelivered, neither the repair nor the format check asks again."""
    inbox = tmp_path / "repairable"
    castor.generate(inbox, size=0, repairable=2, as_zip=0)
    cat = Catalogue(f"sqlite:///{tmp_path / 'catalogue.sqlite'}")
    cat.migrate()
    try:
        first = take_in(_copy(inbox, tmp_path / "a"), tmp_path / "build-a", tmp_path / "q-a",
                        identification_cache=CatalogueIdentificationCache(cat))
        assert sorted(i.outcome for i in first) == ["repaired", "repaired"]
        assert any("MIMETYPE added from format identification" in c for i in first for c in i.repairs)
        assert identify_calls
        identify_calls.clear()
        again = take_in(_copy(inbox, tmp_path / "b"), tmp_path / "build-b", tmp_path / "q-b",
                        identification_cache=CatalogueIdentificationCache(cat))
        assert identify_calls == []
        assert _formats(again) == _formats(first)
        assert [i.repairs for i in again] == [i.repairs for i in first]
    finally:
        cat.dispose()
