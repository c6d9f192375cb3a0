"""Access over an S3 mellanarkiv (moto's server over HTTP): indexing, documents, receipts through open()."""

from __future__ import annotations

import hashlib

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
