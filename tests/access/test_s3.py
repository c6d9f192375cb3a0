"""Access over archives in S3 (moto's server over HTTP): indexing, documents, receipts through open(); every
case-shaped system read through the API from a slutarkiv in a bucket."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from transforms.access.auth import Principal
from transforms.access.receipts import build_receipt
from transforms.access.service import Archive

pytestmark = pytest.mark.integration


def test_index_serve_and_receipt_from_an_s3_mellanarkiv(tmp_path, lex_source, s3_env, monkeypatch, archive_helpers):
    monkeypatch.setenv("ARKIV_MELLANARKIV", f"s3://{s3_env['mellanarkiv']}/mellanarkiv")
    settings = archive_helpers["archive_lex"](tmp_path / "var", lex_source)
    arc = Archive(settings)
    assert type(arc.store).__name__ == "S3Storage"
    assert arc.sync()["indexed"] == 0  # the pipeline indexed every package as it recorded it
    with arc.cat.engine.connect() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM access_packages").scalar() == len(arc.cat.packages()) > 0
    case = archive_helpers["pick"](arc, archive_helpers["source_cases"](lex_source))["public"]
    who = Principal("lex-client", "client", "lex")
    rec = arc.record(who, "lex", str(case["case_id"]))
    assert rec["package"]["verified"] and rec["documents"]
    for doc in rec["documents"]:
        data = b"".join(arc.document(who, "lex", rec["source_id"], doc["document_id"]).chunks)
        assert hashlib.sha256(data).hexdigest() == doc["sha256"] and len(data) == doc["size"]
    receipt = build_receipt(arc.cat, arc.store, rec["package_id"], issued_to="lex")
    assert receipt["record_count"] == arc.cat.package(rec["package_id"]).record_count


CASE_SHAPED = {"lex": ("2025-01-01", "2026-01-01"), "viva": ("2025-01-01", "2026-01-01"),
               "procapita": ("2025-01-01", "2026-01-01"), "treserva": ("2025-12-01", "2026-01-01"),
               "castor": ("2026-01-01", "2026-01-02")}


@pytest.mark.slow
def test_every_case_shaped_system_is_read_through_the_api_from_an_s3_slutarkiv(tmp_path, s3_env, monkeypatch):
    """Both archives in buckets (the slutarkiv under Object Lock): each case-shaped system is archived, its
    kept packages transferred by the retention run, and then a transferred record of each is read through the
    HTTP API and its document downloaded, byte for byte, from the OCFL object in the bucket."""
    from fastapi.testclient import TestClient

    import demo
    from transforms.access.api import create_app
    from transforms.access.auth import add_credential
    from transforms.archive import ocfl
    from transforms.cli import main
    from transforms.config.settings import Settings
    from transforms.config.systems import load_systems

    systems = {n: s for n, s in load_systems(Path(__file__).resolve().parents[2] / "dags" / "systems").items()
               if n in CASE_SHAPED}
    home = tmp_path / "var"
    demo.generate_all(home, systems, size=20, damaged_document=False)
    env = {**demo.environment(home, systems), "ARKIV_HOME": str(home),
           "ARKIV_MELLANARKIV": f"s3://{s3_env['mellanarkiv']}/mellanarkiv",
           "ARKIV_SLUTARKIV": f"s3://{s3_env['slutarkiv']}/ocfl",
           "ARKIV_SLUTARKIV_OBJECT_LOCK_MODE": "GOVERNANCE", "ARKIV_SLUTARKIV_OBJECT_LOCK_DAYS": "3650"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for system, (start, end) in CASE_SHAPED.items():
        assert main(["run", system, "--start", start, "--end", end]) == 0, system
    assert main(["retention", "run", "--as-of", "2040-01-01"]) == 0
    settings = Settings.from_env().ensure()
    arc = Archive(settings)
    assert type(arc.slutarkiv).__name__ == "S3Storage" and not (home / "slutarkiv").exists()
    token = add_credential(arc.cat, "anna-arkivarie", "archivist", by="test")
    client = TestClient(create_app(settings, archive=arc, oidc=None))
    auth = {"Authorization": f"Bearer {token}"}
    for system in CASE_SHAPED:
        moved = [p for p in arc.cat.packages(system) if p.status == "transferred"]
        assert moved, f"{system}: nothing transferred to the slutarkiv"
        assert all(ocfl.verify_object(arc.slutarkiv, p.location.removeprefix("ocfl:")) == [] for p in moved)
        hits = client.get("/api/v1/search", params={"system": system, "storage": "slutarkiv", "limit": 500},
                          headers=auth).json()["hits"]
        assert {h["package_id"] for h in hits} == {p.id for p in moved}, system
        read = 0
        for h in hits:
            rec = client.get(f"/api/v1/records/{system}/{h['source_id']}", headers=auth).json()
            assert rec["storage"] == "slutarkiv" and rec["package"]["verified"], rec
            docs = [d for d in rec["documents"] if d.get("content")]
            for d in docs[:2]:
                got = client.get(d["content"], headers=auth)
                assert got.status_code == 200, (system, got.text)
                assert hashlib.sha256(got.content).hexdigest() == d["sha256"] and len(got.content) == d["size"]
                read += 1
            if read:
                break
        assert read, f"{system}: no transferred record with a document"
        receipt = client.get(f"/api/v1/receipts/{moved[0].id}", headers=auth).json()
        assert receipt["storage"] == "slutarkiv" and receipt["transfer"]["verified"] == "re-read now", receipt
    arc.cat.dispose()
