"""`arkiv reconcile` with a working bucket: what finished or abandoned runs left there is reported as a
leftover with its fix (not an inconsistency), `--clean-work` removes only what the catalogue confirms,
and quarantine material an open case needs but the bucket lacks is a failure (moto's S3 server)."""

from __future__ import annotations

import hashlib
import json
import time

import sqlalchemy as sa

from transforms.archive.storage import storage_for
from transforms.catalogue import Catalogue, Event, Package, QuarantineCase
from transforms.cli import main
from transforms.config.settings import Settings


def _put(area, key: str, body: bytes = b"x") -> None:
    area.client.put_object(Bucket=area.bucket, Key=f"work/{key}", Body=body)


def _keys(area) -> list[str]:
    return sorted(a for a, _, _ in area.listing())


def _batch(cat: Catalogue, batch_id: str, status: str, planned: list[str]) -> None:
    system, period = batch_id.split("/")
    cat.upsert_batch(batch_id=batch_id, system=system, period=period, interval_start=f"{period}-01-01T00:00:00",
                     interval_end=f"{int(period) + 1}-01-01T00:00:00", status=status, rows={"tables": {}},
                     planned=planned)


def _recorded_package(settings: Settings, cat: Catalogue, pid: str) -> None:
    data = f"package {pid}\n".encode()
    src = settings.build / f"{pid}.tar"
    src.write_bytes(data)
    key = f"lex/2024/{pid}.tar"
    storage_for(settings.mellanarkiv, "mellanarkiv", settings.s3).put(src, key)
    src.unlink()
    sha = hashlib.sha256(data).hexdigest()
    with cat.session() as s:
        s.add(Package(id=pid, system="lex", record_class="x", period="2024", batch_id="lex/2024", status="stored",
                      size=len(data), sha256=sha, content_digest=sha, storage="mellanarkiv", location=key,
                      record_count=0))
        s.flush()
        for t in ("creation", "replication", "fixity check", "validation", "ingestion"):
            cat.add_event(s, type=t, outcome="success", agent="test", package_id=pid,
                          detail=f"copied to mellanarkiv {key}, read back" if t == "replication" else t)


def _reconcile(capsys, *args) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["reconcile", "--json", "--grace", "0", *args])
    return code, json.loads(capsys.readouterr().out)


def _leftovers(report: dict) -> dict[str, bool]:
    """key -> whether --clean-work may remove it, for the leftovers still there."""
    return {f["key"]: f["repairable"] for f in report["findings"] if f["leftover"] and not f["repaired"]}


def test_leftovers_are_reported_with_their_fix_and_clean_work_removes_only_confirmed_ones(bucket_worker, capsys):
    s, area, cat = bucket_worker.settings, bucket_worker.area, bucket_worker.cat
    # an archived batch (its one package recorded and stored) whose staged copy and build were left behind
    _recorded_package(s, cat, "uuid-1")
    _batch(cat, "lex/2024", "archived", ["uuid-1"])
    _put(area, "staging/lex/2024/manifest.json")
    _put(area, "staging/lex/2024/cases/part-0.parquet")
    _put(area, "build/lex/uuid-1.tar")
    _put(area, "build/lex/uuid-1.tar.json")
    # a staged batch the catalogue does not know, a package without its sidecar, a rejected batch's staging
    _put(area, "staging/lex/2023/manifest.json")
    _put(area, "build/lex/uuid-9.tar")
    _batch(cat, "lex/2022", "quality_failed", [])
    _put(area, "staging/lex/2022/manifest.json")
    with cat.session() as ses:
        ses.add(QuarantineCase(id="lex/2022/20260101T000000", system="lex", batch_id="lex/2022", kind="quality",
                               reasons="[]", path=area.url("quarantine/lex/2022/20260101T000000"),
                               status="rejected", content_state="{}"))
    _put(area, "quarantine/lex/2022/20260101T000000/manifest.json")
    # quarantine material no case names, and an upload a killed worker never completed
    _put(area, "quarantine/lex/2021/20250101T000000/manifest.json")
    upload = area.client.create_multipart_upload(Bucket=area.bucket, Key="work/build/lex/uuid-5.tar")["UploadId"]
    time.sleep(1.1)  # every object older than the zero grace period

    code, report = _reconcile(capsys)
    assert code == 0 and report["consistent"], report  # leftovers are findings, not failures
    assert _leftovers(report) == {
        "staging/lex/2024/": True, "build/lex/uuid-1.tar": True, "build/lex/uuid-1.tar.json": True,
        "staging/lex/2022/": True, f"build/lex/uuid-5.tar?uploadId={upload}": True,
        "staging/lex/2023/": False, "build/lex/uuid-9.tar": False,
        "quarantine/lex/2021/20250101T000000/": False}
    actions = {f["key"]: f["action"] for f in report["findings"]}
    assert actions["build/lex/uuid-1.tar"].startswith("safe to remove")
    assert "rerun the interval" in actions["build/lex/uuid-9.tar"]
    assert report["checked"]["work_uploads"] == 1

    code, report = _reconcile(capsys, "--clean-work")
    assert code == 0
    assert _keys(area) == ["build/lex/uuid-9.tar", "quarantine/lex/2021/20250101T000000/manifest.json",
                           "quarantine/lex/2022/20260101T000000/manifest.json", "staging/lex/2023/manifest.json"]
    assert area.client.list_multipart_uploads(Bucket=area.bucket).get("Uploads", []) == []
    with cat.session() as ses:
        removed = list(ses.scalars(sa.select(Event.detail).where(Event.type == "deletion")))
    assert len(removed) == 5 and all("working bucket" in d for d in removed)
    # the archive itself is untouched
    assert storage_for(s.mellanarkiv, "mellanarkiv", s.s3).exists("lex/2024/uuid-1.tar")


def test_a_build_is_kept_while_the_archive_does_not_confirm_its_recorded_package(bucket_worker, capsys):
    s, area, cat = bucket_worker.settings, bucket_worker.area, bucket_worker.cat
    _recorded_package(s, cat, "uuid-2")
    storage_for(s.mellanarkiv, "mellanarkiv", s.s3).root.joinpath("lex/2024/uuid-2.tar").unlink()
    _put(area, "build/lex/uuid-2.tar")
    time.sleep(1.1)
    code, report = _reconcile(capsys, "--clean-work")
    assert code == 1  # the stored copy is missing: that is the failure, not the leftover
    assert _leftovers(report) == {"build/lex/uuid-2.tar": False}
    assert _keys(area) == ["build/lex/uuid-2.tar"]


def test_an_open_case_whose_material_is_gone_from_the_working_bucket_is_a_failure(bucket_worker, capsys):
    area, cat = bucket_worker.area, bucket_worker.cat
    _batch(cat, "lex/2020", "quality_failed", [])
    held = area.url("quarantine/lex/2020/20260102T000000")
    with cat.session() as ses:
        ses.add(QuarantineCase(id="lex/2020/20260102T000000", system="lex", batch_id="lex/2020", kind="quality",
                               reasons="[]", path=held, status="open", content_state="{}"))
    code, report = _reconcile(capsys)
    assert code == 1
    (missing,) = [f for f in report["findings"] if not f["leftover"]]
    assert missing["kind"] == "missing" and missing["key"] == held and "open quarantine case" in missing["detail"]
    _put(area, "quarantine/lex/2020/20260102T000000/manifest.json")
    code, report = _reconcile(capsys)
    assert code == 0 and report["findings"] == []


def test_without_a_working_bucket_reconcile_looks_at_no_bucket(bucket_worker, capsys, monkeypatch):
    monkeypatch.delenv("ARKIV_WORK")
    code, report = _reconcile(capsys, "--clean-work")
    assert code == 0 and "work_objects" not in report["checked"]  # the archives alone
