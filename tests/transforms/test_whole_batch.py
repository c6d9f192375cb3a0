"""A batch is archived whole or not at all.

The transforms-level chain (extract, gate, package, ship, verify, record, finish) runs a Lex
interval; the second package's ship fails for real (its built TAR is damaged on disk, so the
store's checksum check refuses it) after the first package was stored and recorded. The batch
must not be archived, `finish_batch` must refuse to archive it, `arkiv reconcile` must report
it, and a rerun of the interval must complete it with every package exactly once.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest
import sqlalchemy as sa

from transforms import pipeline
from transforms.catalogue import Batch, Package, Record
from transforms.cli import main
from transforms.common.errors import StateError, StorageError
from transforms.config.settings import Settings

START, END = "2025-01-01", "2026-01-01"


@pytest.fixture
def settings(monkeypatch, tmp_path, lex_source) -> Settings:
    for k in list(os.environ):
        if k.startswith("ARKIV_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("ARKIV_LEX_FILES", str(lex_source["files"]))
    monkeypatch.setenv("ARKIV_CONN_LEX_DB", lex_source["url"])
    return Settings.from_env().ensure()


def _damage(path: str) -> None:
    """Flip bytes in the middle of a built package: what a bad disk or a stray write leaves."""
    with open(path, "r+b") as fh:
        fh.seek(os.path.getsize(path) // 2)
        chunk = fh.read(64)
        fh.seek(-len(chunk), os.SEEK_CUR)
        fh.write(bytes(b ^ 0xFF for b in chunk))


def _chain(settings: Settings, url: str, *, damage: int | None = None) -> tuple[dict, list[dict], list[dict]]:
    batch = pipeline.extract(settings, "lex", START, END, url)
    pipeline.check_quality(settings, "lex", batch["manifest"])
    built = [p for rc in batch["record_classes"] for p in pipeline.package(settings, "lex", batch["manifest"], rc)]
    results = []
    for n, pkg in enumerate(built):
        if n == damage:
            _damage(pkg["path"])
        results.append(pipeline.record(settings, pipeline.verify(settings, pipeline.ship(settings, pkg))))
    return batch, built, results


def _reconcile(capsys) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["reconcile", "--json", "--grace", "0"])
    return code, json.loads(capsys.readouterr().out)


def _stored(settings: Settings) -> list[str]:
    return sorted(p.relative_to(settings.mellanarkiv).as_posix() for p in settings.mellanarkiv.rglob("*.tar"))


def test_a_ship_failing_after_a_stored_package_leaves_the_batch_unarchived_and_a_rerun_completes_it(
        settings, lex_source, capsys):
    url = lex_source["url"]
    with pytest.raises(StorageError):
        _chain(settings, url, damage=1)
    cat = pipeline.catalogue(settings)
    with cat.session() as s:
        b = s.get(Batch, "lex/2025")
        status, planned = b.status, json.loads(b.planned)
    assert len(planned) >= 2, "the interval must make at least two packages for this test to mean anything"
    recorded = [p.id for p in cat.packages("lex")]
    assert len(recorded) == 1 and recorded[0] in planned
    assert status != "archived"

    # Whoever calls finish on what was recorded (a cleared task, a hand-run CLI) cannot archive it.
    manifest = str(settings.staging / "lex" / "2025" / "manifest.json")
    with pytest.raises(StateError, match=r"1 of \d+ package\(s\) are recorded"):
        pipeline.finish_batch(settings, "lex", manifest, [{"package_id": recorded[0], "recorded": True}])
    with cat.session() as s:
        assert s.get(Batch, "lex/2025").status != "archived"

    code, report = _reconcile(capsys)
    assert code == 1 and not report["consistent"]
    partial = [f for f in report["findings"] if f["kind"] == "partial_batch"]
    assert len(partial) == 1, report["findings"]
    assert partial[0]["key"] == "lex/2025"
    assert f"1 of {len(planned)} package(s) recorded" in partial[0]["detail"]
    assert "system lex, period 2025" in partial[0]["detail"] and "rerun the interval" in partial[0]["action"]
    first = cat.package(recorded[0])

    batch, built, results = _chain(settings, url)
    done = pipeline.finish_batch(settings, "lex", batch["manifest"], results)
    assert done["packages_total"] == len(planned) and done["packages_new"] == len(planned) - 1
    assert [p["package_id"] for p in built if p.get("already_archived")] == recorded, \
        "the rerun skips the package already recorded instead of building it again"

    with cat.session() as s:
        assert s.get(Batch, "lex/2025").status == "archived"
        ids = [p for (p,) in s.execute(sa.select(Package.id))]
        record_places = Counter(s.execute(sa.select(Record.system, Record.source_id)).all())
    assert sorted(ids) == sorted(planned), "every package exactly once"
    assert all(n == 1 for n in record_places.values()), "every record in exactly one package"
    assert sum(p.record_count for p in cat.packages("lex")) == sum(record_places.values())
    assert _stored(settings) == sorted(p.location for p in cat.packages("lex")), "one stored copy per package"
    again = cat.package(recorded[0])
    assert (again.sha256, again.location, again.created_at) == (first.sha256, first.location, first.created_at)

    code, report = _reconcile(capsys)
    assert code == 0 and report["consistent"], report["findings"]


def test_an_archived_batch_missing_a_planned_package_is_reported(settings, lex_source, capsys):
    """However a package went missing from the catalogue (a hand-edit, an old version's bug), an
    archived batch that lacks one of its packages is a half-archived batch all the same."""
    batch, built, results = _chain(settings, lex_source["url"])
    pipeline.finish_batch(settings, "lex", batch["manifest"], results)
    cat = pipeline.catalogue(settings)
    with cat.session() as s:
        planned = json.loads(s.get(Batch, "lex/2025").planned)
        s.execute(sa.update(Batch).where(Batch.id == "lex/2025")
                  .values(planned=json.dumps(sorted([*planned, "uuid-not-recorded"]))))
    code, report = _reconcile(capsys)
    partial = [f for f in report["findings"] if f["kind"] == "partial_batch"]
    assert code == 1 and len(partial) == 1
    assert f"{len(planned)} of {len(planned) + 1} package(s) recorded, the batch archived" in partial[0]["detail"]
    assert partial[0]["package_id"] == "uuid-not-recorded"


def test_a_batch_still_waiting_for_its_packages_is_not_a_finding_within_the_grace_period(settings, lex_source,
                                                                                         capsys):
    with pytest.raises(StorageError):
        _chain(settings, lex_source["url"], damage=1)
    capsys.readouterr()
    assert main(["reconcile", "--json"]) in (0, 1)  # default grace: an hour
    report = json.loads(capsys.readouterr().out)
    assert not [f for f in report["findings"] if f["kind"] == "partial_batch"]
