"""Conversion to PDF/A with the real LibreOffice, and packages that carry originals and derivatives."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from format_corpus import broken_docx, make_corpus
from lxml import etree
from reference_validator import real_findings

from transforms.catalogue import Catalogue, FileFormat, add_file_formats
from transforms.common.xmltools import NS_PREMIS
from transforms.config.systems import load_system
from transforms.formats.conversion import Converter, Job, check_pdf
from transforms.formats.identification import Identifier, default_policy
from transforms.intake.database import extract_database
from transforms.packaging.sip import REP_ORIGINAL, build_packages
from transforms.validation.validator import validate_package

LEX = load_system(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")
P = {"p": NS_PREMIS}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def test_docx_xlsx_doc_become_pdfa_in_one_office_run_per_family(corpus, tmp_path):
    jobs = [Job(corpus["docx"], "fmt/412"), Job(corpus["xlsx"], "fmt/214"), Job(corpus["doc"], "fmt/40")]
    with Converter(timeout=120) as conv:
        results = conv.convert(jobs, tmp_path / "out")
        assert conv.invocations == 2  # writer (DOCX + DOC) and calc (XLSX): not one process per file
        assert conv.version.startswith("LibreOffice 7.")
    ident = Identifier()
    for job, r in zip(jobs, results, strict=True):
        assert r.ok, f"{job.source.name}: {r.detail}"
        assert r.output.is_file() and r.pdfa == "2B"
        assert check_pdf(r.output, 2)[0]
        assert ident.identify(r.output).puid == "fmt/477"  # fido: PDF/A-2b
        assert default_policy().decide(ident.identify(r.output)).action == "accept"


def test_a_failing_document_is_reported_and_the_rest_still_converted(corpus, tmp_path):
    bad = tmp_path / "skadad.docx"
    bad.write_bytes(broken_docx())
    jobs = [Job(corpus["docx"], "fmt/412"), Job(bad, "fmt/412"), Job(corpus["doc"], "fmt/40")]
    with Converter(timeout=120) as conv:
        results = conv.convert(jobs, tmp_path / "out")
        assert conv.invocations == 2  # the batch, then the failed file alone to be sure it was the one
    assert [r.ok for r in results] == [True, False, True]
    assert "could not convert" in results[1].detail and results[1].output is None


def test_a_document_that_takes_too_long_is_cut_off(corpus, tmp_path):
    # No LibreOffice starts and converts within 0.3 s: every file must time out, quickly and cleanly.
    jobs = [Job(corpus["docx"], "fmt/412"), Job(corpus["doc"], "fmt/40")]
    started = time.monotonic()
    with Converter(timeout=0.3) as conv:
        results = conv.convert(jobs, tmp_path / "out")
    assert time.monotonic() - started < 30
    assert not any(r.ok for r in results)
    assert all("did not finish within" in r.detail for r in results), [r.detail for r in results]
    assert not list((tmp_path / "out").glob("*.pdf"))


def test_check_pdf_refuses_what_is_not_pdfa(corpus, tmp_path):
    assert not check_pdf(corpus["pdf"], 2)[0]  # a valid PDF, but not PDF/A
    truncated = tmp_path / "cut.pdf"
    truncated.write_bytes(corpus["pdfa"].read_bytes()[:-200])
    assert not check_pdf(truncated)[0]


# --- a package with converted, rejected and failed documents --------------------------------------

@pytest.fixture(scope="module")
def converted(corpus, tmp_path_factory):
    """A Lex package whose documents include DOCX, XLSX, DOC, a broken DOCX and an encrypted PDF."""
    from demo import lex

    root = tmp_path_factory.mktemp("lex-formats")
    url = f"sqlite:///{root / 'lex.sqlite'}"
    lex.generate(url, root / "files", cases=8, seed=5, year=2025)
    staged = extract_database(LEX, url, dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1), root / "staging",
                              env={"ARKIV_LEX_FILES": str(root / "files")})
    docs = [d for p in staged.table_files()["documents"] for d in pq.read_table(p).to_pylist()]
    pdfs = sorted(Path(d["source_path"]) for d in docs if d["source_path"].endswith(".pdf"))
    # Replace some of the generated PDFs' bytes (the names stay; identification reads the bytes).
    plan = {"xlsx": corpus["xlsx"].read_bytes(), "doc": corpus["doc"].read_bytes(), "broken": broken_docx(),
            "encrypted": corpus["encrypted"].read_bytes()}
    replaced = {}
    for (kind, data), path in zip(plan.items(), pdfs, strict=False):
        path.write_bytes(data)
        replaced[kind] = path
    assert len(replaced) == len(plan)
    built = [p for rc in staged.partitions for p in
             build_packages(LEX, staged, rc, root / "build", quarantine_dir=root / "quarantine")]
    return {"built": built, "replaced": replaced, "root": root, "docs": docs}


def _members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_converted_package_keeps_originals_beside_pdfa(converted, tmp_path):
    built = converted["built"]
    assert sum(b.converted for b in built) >= 4  # the sample's DOCX plus the XLSX and DOC
    ident, policy = Identifier(), default_policy()
    for pkg in built:
        members = _members(pkg.path)
        data = {k: v for k, v in members.items() if k.startswith("representations/rep1/data/")}
        originals = {k: v for k, v in members.items() if k.startswith(f"representations/{REP_ORIGINAL}/data/")}
        for name, payload in data.items():  # nothing but accepted formats in the preservation representation
            f = tmp_path / Path(name).name
            f.write_bytes(payload)
            assert policy.decide(ident.identify(f)).action == "accept", name
        for row in (r for r in pkg.formats if r["outcome"] == "converted"):
            assert row["derivative"].endswith(".pdf") and row["derivative"][len("representations/"):] in \
                {k[len("representations/"):] for k in data}
            assert row["path"] in originals
        if any(r["outcome"] == "converted" for r in pkg.formats):
            assert f"representations/{REP_ORIGINAL}/METS.xml" in members


def test_every_file_has_a_puid_and_the_migration_is_in_premis(converted):
    for pkg in converted["built"]:
        members = _members(pkg.path)
        premis = etree.fromstring(members["representations/rep1/metadata/preservation/premis.xml"])
        files = premis.findall("p:object", P)
        assert files
        for obj in files:
            assert obj.findtext(".//p:formatRegistryName", namespaces=P) == "PRONOM"
            assert obj.findtext(".//p:formatRegistryKey", namespaces=P)
            assert "fido" in obj.findtext(".//p:formatNote", namespaces=P)
        if f"representations/{REP_ORIGINAL}/metadata/preservation/premis.xml" in members:
            orig = etree.fromstring(members[f"representations/{REP_ORIGINAL}/metadata/preservation/premis.xml"])
            for obj in orig.findall("p:object", P):
                assert obj.findtext(".//p:formatName", namespaces=P)
        migrations = [e for e in premis.findall("p:event", P) if e.findtext("p:eventType", namespaces=P) == "migration"]
        derived = [o for o in files if o.find("p:relationship", P) is not None]
        assert len([m for m in migrations if m.findtext(".//p:eventOutcome", namespaces=P) == "success"]) == \
            len(derived) == pkg.converted
        for obj in derived:
            rel = obj.find("p:relationship", P)
            assert rel.findtext("p:relationshipType", namespaces=P) == "derivation"
            source = rel.findtext(".//p:relatedObjectIdentifierValue", namespaces=P)
            assert source.startswith(f"representations/{REP_ORIGINAL}/data/")
            assert obj.findtext(".//p:creatingApplicationName", namespaces=P) == "LibreOffice"
        for m in migrations:
            roles = {link.findtext("p:linkingObjectRole", namespaces=P)
                     for link in m.findall("p:linkingObjectIdentifier", P)}
            assert "source" in roles
            assert m.findtext(".//p:linkingAgentIdentifierValue", namespaces=P) == "libreoffice"
        agents = {a.findtext(".//p:agentIdentifierValue", namespaces=P): a.findtext("p:agentVersion", namespaces=P)
                  for a in premis.findall("p:agent", P)}
        assert agents["fido"].startswith("1.")
        if migrations:
            assert agents["libreoffice"].startswith("7.")


def test_rejected_and_failed_documents_are_quarantined_not_lost(converted):
    held = [q for b in converted["built"] for q in b.quarantined]
    reasons = " ".join(q["reason"] for q in held)
    assert len(held) == 2, held  # the broken DOCX (conversion failed) and the encrypted PDF (rejected)
    assert "conversion of fmt/412" in reasons and "encrypted" in reasons
    copies = {Path(q["copy"]).read_bytes(): q for q in held}
    for kind in ("broken", "encrypted"):
        q = copies[converted["replaced"][kind].read_bytes()]  # a byte-identical copy in the quarantine …
        listing = json.loads((Path(q["folder"]) / "reasons.json").read_text(encoding="utf-8"))
        assert q["path"] in {d["path"] for d in listing["documents"]}  # … with its reason beside it
    for pkg in converted["built"]:
        members = _members(pkg.path)
        for q in pkg.quarantined:
            assert f"representations/{REP_ORIGINAL}/data/{q['path']}" in members  # kept in the package too
            assert f"representations/rep1/data/{q['path']}" not in members
        premis = etree.fromstring(members["representations/rep1/metadata/preservation/premis.xml"])
        quarantines = [e for e in premis.findall("p:event", P) if e.findtext("p:eventType", namespaces=P) ==
                       "quarantine"]
        assert len(quarantines) == len(pkg.quarantined)


def test_converted_package_passes_both_validators(converted):
    for pkg in converted["built"]:
        report = validate_package(pkg.path, "fgs")
        assert report.valid, report.to_text()
    assert converted["built"], "nothing was built"
    findings = real_findings(b.path for b in converted["built"])
    assert not findings, f"real findings from the reference validator: {findings}"


def test_formats_enter_the_catalogue(converted, tmp_path):
    cat = Catalogue(f"sqlite:///{tmp_path / 'cat.sqlite'}")
    cat.migrate()
    pkg = converted["built"][0]
    with cat.session() as s:
        add_file_formats(s, pkg.package_id, pkg.formats)
    with cat.session() as s:
        rows = s.query(FileFormat).filter_by(package_id=pkg.package_id).all()
        assert len(rows) == len(pkg.formats)
        assert all(r.puid and r.tool.startswith("fido") for r in rows if r.representation == "rep1")
        outcomes = {r.outcome for r in rows}
        assert "accepted" in outcomes
    cat.dispose()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_the_pipeline_records_formats_and_opens_a_case_for_a_held_back_document(monkeypatch, tmp_path):
    """`arkiv run lex` end to end: every file in the catalogue with its PUID; the broken DOCX is a case."""
    from demo import lex
    from transforms.catalogue import QuarantineCase
    from transforms.cli import main

    src = tmp_path / "source"
    src.mkdir()
    url = f"sqlite:///{src / 'lex.sqlite'}"
    lex.generate(url, src / "files", cases=6, seed=5, year=2025)
    docx = sorted(p for p in (src / "files").rglob("*.docx"))
    docx[0].write_bytes(broken_docx())
    home = tmp_path / "var"
    monkeypatch.setenv("ARKIV_HOME", str(home))
    monkeypatch.setenv("ARKIV_LEX_FILES", str(src / "files"))
    monkeypatch.setenv("ARKIV_CONN_LEX_DB", url)
    assert main(["run", "lex", "--start", "2025-01-01", "--end", "2026-01-01"]) == 0
    cat = Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")
    with cat.session() as s:
        rows = s.query(FileFormat).all()
        cases = s.query(QuarantineCase).filter_by(kind="document").all()
    assert rows and {r.package_id for r in rows} == {p.id for p in cat.packages("lex")}
    assert all(r.puid for r in rows if r.representation == "rep1")  # nothing unidentified is preserved
    assert {r.outcome for r in rows} >= {"accepted", "converted", "derivative", "conversion failed"}
    [case] = cases
    assert "conversion of fmt/412" in case.reasons
    held = next(Path(case.path).rglob("*.docx"))
    assert held.read_bytes() == docx[0].read_bytes()  # the held-back document is in the quarantine
    events = [e.type for p in cat.packages("lex") for e in cat.events(package_id=p.id)]
    assert "quarantine" in events
    cat.dispose()


def test_the_converter_version_is_asked_once_per_installed_binary(tmp_path):
    """``soffice --version`` runs once per binary in a process, and again when the binary changes (an upgrade)."""
    import os
    import time

    from transforms.formats.conversion import libreoffice_version

    calls = tmp_path / "calls"
    fake = tmp_path / "soffice"
    fake.write_text(f"#!/bin/sh\necho x >> {calls}\necho 'LibreOffice 7.4.7.2 40(Build:2)'\n")
    fake.chmod(0o755)
    assert libreoffice_version(str(fake)) == "LibreOffice 7.4.7.2"
    assert libreoffice_version(str(fake)) == "LibreOffice 7.4.7.2"
    assert calls.read_text().count("x") == 1
    fake.write_text(f"#!/bin/sh\necho x >> {calls}\necho 'LibreOffice 24.2.1.2 20(Build:2)'\n")
    later = time.time() + 5
    os.utime(fake, (later, later))
    assert libreoffice_version(str(fake)) == "LibreOffice 24.2.1.2"
    assert calls.read_text().count("x") == 2
