"""Quarantine material, quality reports and their Data Docs in the working bucket: held there verified,
named by the case, read by the archivist's page from there, and copied back on approval with the
quarantined copy kept (moto's S3 server; the full gate-then-approve run on two workers is in
test_workarea_s3.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from transforms.quality import quarantine as review
from transforms.quality import quarantine_page as review_web

CHECK = {"table": "cases", "expectation": "expect_column_values_to_not_be_null", "column": "title", "success": False,
         "unexpected_count": 2, "offending_ids": ["C-1", "C-2"], "examples": []}


def _keys(area, under: str = "") -> list[str]:
    return sorted(a for a, _, _ in area.listing(under))


def _report_with_data_docs(folder: Path) -> Path:
    """A quality report as the gate writes it, with its Data Docs folder beside it."""
    docs = folder / "lex-2025-datadocs"
    docs.mkdir(parents=True)
    (docs / "index.html").write_text('<ul><li><a href="cases.html">cases</a></li></ul>', encoding="utf-8")
    (docs / "cases.html").write_text('<p>cases: 2 unexpected</p><a href="index.html">back</a>', encoding="utf-8")
    report = folder / "lex-2025-quality.json"
    report.write_text(json.dumps({"system": "lex", "batch": "2025", "checks": [CHECK],
                                  "data_docs": str(docs / "index.html")}), encoding="utf-8")
    return report


def test_the_report_and_its_data_docs_go_to_the_bucket_and_the_page_reads_them_from_there(bucket_worker):
    from transforms.pipeline import _hand_over_report

    settings = bucket_worker.settings
    report = _hand_over_report(settings, "lex", _report_with_data_docs(settings.reports / "lex"))
    assert report == bucket_worker.area.url("reports/lex/lex-2025-quality.json")
    assert _keys(bucket_worker.area, "reports/") == ["reports/lex/lex-2025-datadocs/cases.html",
                                              "reports/lex/lex-2025-datadocs/index.html",
                                              "reports/lex/lex-2025-quality.json"]
    assert json.loads(bucket_worker.area.read_text(report))["data_docs"] == \
        bucket_worker.area.url("reports/lex/lex-2025-datadocs/index.html")
    # another worker, with nothing on its disk, serves the case's page and its Data Docs
    held = bucket_worker.area.url("quarantine/lex/2025/20260101T120000")
    bucket_worker.area.write_text(f"{held}/manifest.json", "{}")
    case_id = review.open_case(bucket_worker.cat, system="lex", batch_id="lex/2025", kind="quality",
                               reasons=["cases: 2 record(s)"], path=held, report=report, area=bucket_worker.area)
    assert case_id == "lex/2025/20260101T120000"
    assert "C-1" in bucket_worker.area.read_text(f"{held}/rapport.html")  # the report page beside the held batch
    case = review.get_case(bucket_worker.cat, case_id)
    assert case.path == held and case.report == report
    import shutil

    shutil.rmtree(bucket_worker.settings.reports)
    page = review_web.case_page(bucket_worker.cat, case, "/arkiv", may_decide=False, area=bucket_worker.area)
    assert "C-1" in page and "/arkiv/datadocs?id=lex%2F2025%2F20260101T120000&amp;page=index.html" in page
    index = review_web.data_docs_html(case, "index.html", "/arkiv", bucket_worker.area)
    assert 'href="/arkiv/datadocs?id=lex%2F2025%2F20260101T120000&amp;page=cases.html"' in index
    assert "2 unexpected" in review_web.data_docs_html(case, "cases.html", "/arkiv", bucket_worker.area)
    for bad in ("../lex-2025-quality.json", "..html", "missing.html", "quarantine/x.html"):
        assert review_web.data_docs_html(case, bad, "/arkiv", bucket_worker.area) is None
    # without the working area the bucket's report cannot be read: the page says what it can, no link
    bare = review_web.case_page(bucket_worker.cat, case, "/arkiv", may_decide=False)
    assert "datadocs" not in bare and "cases: 2 record(s)" in bare


def _staged(folder: Path, system: str = "lex", batch: str = "2025") -> SimpleNamespace:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"batch": "2025"}', encoding="utf-8")
    (folder / "cases").mkdir()
    (folder / "cases" / "part-0.parquet").write_bytes(b"PAR1" * 100)
    return SimpleNamespace(directory=str(folder), system=system, batch=batch)


def test_a_held_batch_moves_to_the_bucket_and_an_approval_copies_it_back_verified(bucket_worker):
    from transforms.pipeline import _restore_held_batch, quarantine

    area = bucket_worker.area
    staged = _staged(bucket_worker.tmp / "scratch" / ".2025.abc")
    manifest = area.publish_tree(Path(staged.directory), "staging/lex/2025") + "/manifest.json"
    held = quarantine(bucket_worker.settings, staged)
    assert held.startswith(area.url("quarantine/lex/2025/"))
    assert not Path(staged.directory).exists() and not area.exists(manifest)  # moved: neither disk nor staging
    stamp = held.rsplit("/", 1)[-1]
    assert _keys(area) == [f"quarantine/lex/2025/{stamp}/cases/part-0.parquet",
                           f"quarantine/lex/2025/{stamp}/manifest.json"]
    head = area.client.head_object(Bucket=area.bucket, Key=f"work/quarantine/lex/2025/{stamp}/manifest.json")
    assert head["Metadata"]["sha256"] == area.sha256(f"{held}/manifest.json")  # written verified
    area.write_text(f"{held}/rapport.html", "<p>page</p>")

    _restore_held_batch(area, held, manifest)
    assert _keys(area, "staging/") == ["staging/lex/2025/cases/part-0.parquet", "staging/lex/2025/manifest.json"]
    assert area.sha256(manifest) == area.sha256(f"{held}/manifest.json")
    assert len(_keys(area, "quarantine/")) == 3  # the quarantined copy is kept, with its page

    area.remove_tree(held)
    area.remove_tree(manifest.rsplit("/", 1)[0])
    from transforms.common.errors import StateError

    with pytest.raises(StateError, match="gone from the working bucket"):
        _restore_held_batch(area, held, manifest)


def test_documents_held_back_while_building_go_to_the_bucket_and_the_sidecar_names_them(bucket_worker):
    from transforms.intake.delivery import PackageSidecar
    from transforms.pipeline import _hand_over_package

    folder = bucket_worker.settings.quarantine / "lex" / "documents" / "uuid-1"
    (folder / "docs").mkdir(parents=True)
    (folder / "docs" / "a.wpd").write_bytes(b"not convertible")
    (folder / "reasons.json").write_text("{}", encoding="utf-8")
    package = bucket_worker.settings.build / "lex" / "uuid-1.tar"
    package.parent.mkdir(parents=True, exist_ok=True)
    package.write_bytes(b"tar")
    sidecar = PackageSidecar(package_id="uuid-1", system="lex", record_class="x", period="2025", content_digest="d",
                             sha256="s", size=3, record_count=1, document_count=1, built_at="2026-01-01T00:00:00",
                             quarantined=[{"path": "docs/a.wpd", "copy": str(folder / "docs" / "a.wpd"),
                                           "folder": str(folder), "reason": "not an accepted format"}])
    ref = _hand_over_package(bucket_worker.settings, "lex", str(package), sidecar)
    assert ref == bucket_worker.area.url("build/lex/uuid-1.tar") and not folder.exists()
    held = bucket_worker.area.url("quarantine/lex/documents/uuid-1")
    (entry,) = json.loads(bucket_worker.area.read_text(f"{ref}.json"))["quarantined"]
    assert entry["folder"] == held and entry["copy"] == f"{held}/docs/a.wpd"
    assert bucket_worker.area.read_text(entry["copy"]) == "not convertible"
    case_id = review.open_case(bucket_worker.cat, system="lex", batch_id="lex/2025", kind="document",
                               reasons=["docs/a.wpd: not an accepted format"], path=held, area=bucket_worker.area)
    assert review.get_case(bucket_worker.cat, case_id).path == held
    assert bucket_worker.area.exists(f"{held}/rapport.html")


def test_a_refused_delivered_package_is_held_in_the_bucket_and_without_one_stays_in_its_folder(bucket_worker,
                                                                                               monkeypatch):
    from transforms.pipeline import _hand_over_held

    folder = bucket_worker.settings.quarantine / "castor" / "20260101T000000-sip.tar"
    folder.mkdir(parents=True)
    (folder / "validation.json").write_text('{"valid": false}', encoding="utf-8")
    held = _hand_over_held(bucket_worker.settings, folder, "quarantine/castor/packages")
    assert held == bucket_worker.area.url("quarantine/castor/packages/20260101T000000-sip.tar")
    assert bucket_worker.area.read_text(f"{held}/validation.json") == '{"valid": false}'
    monkeypatch.delenv("ARKIV_WORK")
    assert _hand_over_held(bucket_worker.settings, folder, "quarantine/castor/packages") == folder
