"""`arkiv reconcile`: each kind of disagreement between catalogue and storage is found, and --repair
does only what is safe, leaving a PREMIS event for every action."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

import pytest
import sqlalchemy as sa

from transforms.archive.storage import storage_for
from transforms.catalogue import Batch, Catalogue, Package, Record
from transforms.cli import main
from transforms.config.settings import Settings

KEY = "lex/2025/uuid-{n}.tar"


@pytest.fixture
def home(tmp_path, monkeypatch):
    for k in list(os.environ):
        if k.startswith("ARKIV_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "var"))
    return tmp_path / "var"


def _archive(settings: Settings, n: int, records: list[str], *, events=True) -> Package:
    """A package as the pipeline leaves it: stored in the mellanarkiv, catalogued with records and events."""
    data = f"package {n}\n".encode() * (n + 1)
    src = settings.build / f"p{n}.tar"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    key = KEY.format(n=n)
    store = storage_for(settings.mellanarkiv, "mellanarkiv", settings.s3)
    sha = hashlib.sha256(data).hexdigest()
    store.put(src, key, expected_sha256=sha)
    cat = Catalogue(settings.catalogue_url)
    cat.migrate()
    pid = f"uuid-{n}"
    with cat.session() as s:
        s.add(Package(id=pid, system="lex", record_class="arenden-bevaras", period="2025", batch_id="lex/2025",
                      status="stored", size=len(data), sha256=sha, content_digest=sha, storage="mellanarkiv",
                      location=key, record_count=len(records)))
        s.flush()
        for r in records:
            s.add(Record(system="lex", source_id=r, reference=f"BN {r}", package_id=pid, record_class="x"))
        if events:
            for t in ("creation", "replication", "fixity check", "validation", "ingestion"):
                cat.add_event(s, type=t, outcome="success", agent="test", package_id=pid,
                              detail=f"copied to mellanarkiv {key}, read back" if t == "replication" else t)
    return cat.package(pid)


def _reconcile(capsys, *args) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["reconcile", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def _kinds(report) -> list[str]:
    return sorted(f["kind"] for f in report["findings"] if not f["repaired"])


def test_a_consistent_archive_exits_0(home, capsys):
    s = Settings.from_env().ensure()
    _archive(s, 1, ["1", "2"])
    _archive(s, 2, ["3"])
    code, report = _reconcile(capsys)
    assert code == 0 and report["consistent"] and report["checked"]["packages"] == 2
    assert report["checked"]["mellanarkiv_objects"] == 2 and report["checked"]["records"] == 3
    assert main(["reconcile"]) == 0 and "consistent" in capsys.readouterr().out


def test_orphan_is_set_aside_only_after_the_grace_period_and_with_a_verified_copy(home, capsys):
    s = Settings.from_env().ensure()
    _archive(s, 1, ["1"])
    orphan = s.mellanarkiv / "lex/2025/uuid-9.tar"
    orphan.write_bytes(b"an interrupted run's package")
    code, report = _reconcile(capsys)  # default grace: one hour
    assert code == 1 and _kinds(report) == ["orphan"] and not report["findings"][0]["repairable"]
    code, report = _reconcile(capsys, "--repair")
    assert code == 1 and orphan.exists(), "a fresh orphan may be a run's write in progress: left alone"
    code, report = _reconcile(capsys, "--repair", "--grace", "0")
    assert code == 0 and report["repaired"] == 1 and not orphan.exists()
    kept = list((s.quarantine / "reconcile").rglob("uuid-9.tar"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"an interrupted run's package"
    events = Catalogue(s.catalogue_url).events(package_id="uuid-9")
    assert [e.type for e in events] == ["quarantine"] and "copy verified" in events[0].detail


def test_missing_and_mismatched_objects_deep_finds_a_changed_byte(home, capsys):
    s = Settings.from_env().ensure()
    gone = _archive(s, 1, ["1"])
    changed = _archive(s, 2, ["2"])
    (s.mellanarkiv / gone.location).unlink()
    path = s.mellanarkiv / changed.location
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))
    code, report = _reconcile(capsys)
    assert code == 1 and _kinds(report) == ["missing"]  # same size: only --deep sees the flipped byte
    code, report = _reconcile(capsys, "--deep", "--repair", "--grace", "0")
    assert code == 1 and _kinds(report) == ["mismatch", "missing"] and report["repaired"] == 0
    assert path.exists(), "nothing catalogued is ever removed by reconcile"


def test_an_unverified_temporary_file_is_removed_with_an_event(home, capsys):
    s = Settings.from_env().ensure()
    _archive(s, 1, ["1"])
    tmp = s.mellanarkiv / "lex/2025/.uuid-5.tar.tmp-1a2b3c4d"
    tmp.write_bytes(b"half a package")
    code, report = _reconcile(capsys, "--grace", "0")
    assert code == 1 and _kinds(report) == ["temporary"] and report["findings"][0]["package_id"] == "uuid-5"
    code, report = _reconcile(capsys, "--grace", "0", "--repair")
    assert code == 0 and not tmp.exists()
    events = Catalogue(s.catalogue_url).events(package_id="uuid-5")
    assert events[-1].type == "deletion" and "never verified nor recorded" in events[-1].detail


def test_records_in_two_packages_and_missing_events(home, capsys):
    s = Settings.from_env().ensure()
    _archive(s, 1, ["1", "2"])
    _archive(s, 2, ["2"], events=False)
    code, report = _reconcile(capsys, "--repair", "--grace", "0")
    assert code == 1 and _kinds(report) == ["duplicate_record", "missing_event"]
    dup = next(f for f in report["findings"] if f["kind"] == "duplicate_record")
    assert dup["key"] == "lex:2" and "uuid-1" in dup["detail"] and "uuid-2" in dup["detail"]


def test_an_unreachable_catalogue_exits_2(home, capsys, monkeypatch):
    monkeypatch.setenv("ARKIV_CATALOGUE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert main(["reconcile"]) == 2
    assert "could not reconcile" in capsys.readouterr().err


def test_bucket_orphans_and_recorded_checksums(home, capsys, s3_env, monkeypatch):
    monkeypatch.setenv("ARKIV_MELLANARKIV", f"s3://{s3_env['mellanarkiv']}/sip")
    monkeypatch.setenv("ARKIV_SLUTARKIV", f"s3://{s3_env['slutarkiv']}/ocfl")
    s = Settings.from_env().ensure()
    pkg = _archive(s, 1, ["1"])
    _archive(s, 2, ["2"])
    store = storage_for(s.mellanarkiv, "mellanarkiv", s.s3)
    store.client.put_object(Bucket=store.bucket, Key="sip/lex/2025/uuid-7.tar", Body=b"stray")
    cat = Catalogue(s.catalogue_url)
    with cat.session() as ses:  # the catalogue's checksum no longer matches what the object recorded
        ses.get(Package, pkg.id).sha256 = "0" * 64
    code, report = _reconcile(capsys)
    assert code == 1 and _kinds(report) == ["mismatch", "orphan"]
    code, report = _reconcile(capsys, "--repair", "--grace", "0")
    assert _kinds(report) == ["mismatch"] and not store.exists("lex/2025/uuid-7.tar")


def _batch(s: Settings, status: str, planned: list[str] | None, age: dt.timedelta = dt.timedelta(hours=2)) -> None:
    cat = Catalogue(s.catalogue_url)
    cat.migrate()
    cat.upsert_batch(batch_id="lex/2025", system="lex", period="2025", interval_start="2025-01-01T00:00:00",
                     interval_end="2026-01-01T00:00:00", status=status, rows={"tables": {}}, planned=planned)
    old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - age
    with cat.session() as ses:
        ses.execute(sa.update(Batch).values(updated_at=old))
        ses.execute(sa.update(Package).values(created_at=old))


def test_a_batch_with_some_packages_recorded_and_not_archived_is_a_partial_batch(home, capsys):
    s = Settings.from_env().ensure()
    _archive(s, 1, ["1"])
    _batch(s, "quality_passed", ["uuid-1", "uuid-2", "uuid-3"])
    code, report = _reconcile(capsys)
    assert code == 1 and _kinds(report) == ["partial_batch"]
    (f,) = report["findings"]
    assert f["key"] == "lex/2025" and f["package_id"] == "uuid-2" and not f["repairable"]
    assert f["detail"] == "system lex, period 2025: 1 of 3 package(s) recorded, the batch not archived (status " \
                          "quality_passed)"
    assert "rerun the interval (2025-01-01T00:00:00 – 2026-01-01T00:00:00)" in f["action"]
    assert main(["reconcile"]) == 1 and "partial_batch" in capsys.readouterr().out


def test_a_partial_batch_from_before_the_package_list_says_it_does_not_know_the_total(home, capsys):
    s = Settings.from_env().ensure()
    _archive(s, 1, ["1"])
    _batch(s, "staged", None)
    code, report = _reconcile(capsys)
    assert code == 1 and "1 of an unknown number of package(s) recorded" in report["findings"][0]["detail"]


def test_a_batch_being_written_now_or_archived_whole_is_no_finding(home, capsys):
    s = Settings.from_env().ensure()
    _archive(s, 1, ["1"])
    _batch(s, "quality_passed", ["uuid-1", "uuid-2"], age=dt.timedelta(minutes=5))
    code, report = _reconcile(capsys)  # within the default grace period of an hour: a run may be at it
    assert code == 0 and report["consistent"]
    _archive(s, 2, ["2"])
    _batch(s, "archived", ["uuid-1", "uuid-2"])
    code, report = _reconcile(capsys, "--grace", "0")
    assert code == 0 and report["consistent"] and report["checked"]["batches"] == 1
