"""The Castor simulator writes deterministic FGS packages: valid, repairable and bad ones."""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from pathlib import Path

import pytest
from lxml import etree
from PIL import Image
from reference_validator import real_findings

from demo import castor
from demo.documents import verify_pdf
from transforms.common.identifiers import is_valid_organisationsnummer, is_valid_personnummer
from transforms.common.xmltools import NS_ERMS, NS_METS, schema_errors
from transforms.config.systems import load_system
from transforms.validation.validator import validate_package

PROJECT = Path(__file__).resolve().parents[2]
# Rules on which eark-validator 1.1.3 is known to be wrong (shared/tools/README.md).
E = f"{{{NS_ERMS}}}"
M = f"{{{NS_METS}}}"

# What our validator must say about each faulty package: the (requirement, severity) pairs
# of its errors and warnings, exactly for the repairable ones.
REPAIRABLE_FINDINGS = {
    "schemas_missing": {("CSIP113", "ERROR"), ("CSIPSTR15", "WARNING")},
    "file_attributes_missing": {("CSIP69", "ERROR"), ("CSIP70", "ERROR")},
}
BAD_REQUIREMENT = {
    "checksum_mismatch": "CSIP71",
    "mets_not_well_formed": "METS-XML",
    "path_traversal": "PACKAGE",
    "missing_objid": "CSIP1",
}


@pytest.fixture(scope="module")
def inbox(tmp_path_factory) -> tuple[Path, castor.CastorSummary]:
    """One inbox with three valid packages (one .zip), every bad kind and every repairable kind."""
    root = tmp_path_factory.mktemp("castor-inbox")
    summary = castor.generate(root, size=3, seed=4, bad=len(castor.BAD_KINDS),
                              repairable=len(castor.REPAIRABLE_KINDS), as_zip=1)
    return root, summary


def _members(path: Path) -> dict[str, bytes]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            return {n: zf.read(n) for n in zf.namelist()}
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _valid(inbox) -> list[Path]:
    root, summary = inbox
    return [root / n for n, k in summary.kinds.items() if k == "valid"]


def test_sizes_and_kinds(inbox):
    root, summary = inbox
    names = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    assert names == sorted(summary.kinds)
    assert len(names) == 3 + len(castor.BAD_KINDS) + len(castor.REPAIRABLE_KINDS) == summary.counts["packages"]
    valid = _valid(inbox)
    assert sorted(p.suffix for p in valid) == [".tar", ".tar", ".zip"]
    assert {k for k in summary.kinds.values()} == {"valid", *castor.BAD_KINDS, *castor.REPAIRABLE_KINDS}
    assert summary.bad_rows == {k: 1 for k in (*castor.BAD_KINDS, *castor.REPAIRABLE_KINDS)}
    assert summary.counts["cases"] >= 9 and summary.counts["documents"] > summary.counts["cases"]
    assert summary.bytes == sum((root / n).stat().st_size for n in names)
    assert summary.describe().startswith("Castor: 3 packages (")
    for n in names:  # the package ID is the supplier's own (UUIDv5), and names the root folder
        assert re.fullmatch(r"uuid-[0-9a-f-]{36}\.(tar|zip)", n)


def test_same_seed_same_bytes(tmp_path):
    a = castor.generate(tmp_path / "a", size=2, seed=9, bad=1, repairable=1, as_zip=1)
    b = castor.generate(tmp_path / "b", size=2, seed=9, bad=1, repairable=1, as_zip=1)
    assert a == b
    for name in a.kinds:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    c = castor.generate(tmp_path / "c", size=2, seed=10, as_zip=0)
    assert set(c.kinds).isdisjoint(a.kinds)


def test_rerun_replaces_its_own_packages_only(tmp_path):
    (tmp_path / "not-castors.txt").write_text("keep me", encoding="utf-8")
    first = castor.generate(tmp_path, size=2, seed=1, bad=1, as_zip=0)
    second = castor.generate(tmp_path, size=1, seed=2, as_zip=0)
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert left == sorted([*second.kinds, "not-castors.txt"])
    assert not set(first.kinds) & set(left)


def test_valid_packages_pass_our_validator(inbox):
    for path in _valid(inbox):
        report = validate_package(path, "sip")
        assert report.valid, report.to_text()
        assert not [f for f in report.findings if f.severity in ("ERROR", "WARNING")], report.to_text()


@pytest.mark.parametrize("kind", castor.REPAIRABLE_KINDS)
def test_repairable_packages_have_exactly_the_repairable_findings(inbox, kind):
    root, summary = inbox
    (name,) = [n for n, k in summary.kinds.items() if k == kind]
    report = validate_package(root / name, "sip")
    assert not report.valid
    found = {(f.requirement, f.severity) for f in report.findings if f.severity in ("ERROR", "WARNING")}
    assert found == REPAIRABLE_FINDINGS[kind], report.to_text()


@pytest.mark.parametrize("kind", castor.BAD_KINDS)
def test_bad_packages_are_invalid(inbox, kind):
    root, summary = inbox
    (name,) = [n for n, k in summary.kinds.items() if k == kind]
    report = validate_package(root / name, "sip")
    assert not report.valid
    assert BAD_REQUIREMENT[kind] in report.requirements_failed("ERROR"), report.to_text()


def test_reference_validator_reports_only_its_known_false_errors(inbox):
    valid = _valid(inbox)
    assert valid, "the simulator delivered no valid package"
    findings = real_findings(valid)
    assert not findings, f"real findings from the reference validator: {findings}"


def test_packages_are_the_suppliers_and_hold_real_bygglov_cases(inbox):
    path = _valid(inbox)[0]
    members = _members(path)
    objid = path.stem
    assert all(n.startswith(f"{objid}/") for n in members)
    mets = etree.fromstring(members[f"{objid}/METS.xml"])
    assert mets.get("OBJID") == objid
    software = mets.find(f"{M}metsHdr/{M}agent[@OTHERTYPE='SOFTWARE']")
    assert software.findtext(f"{M}name") == castor.SOFTWARE
    assert software.findtext(f"{M}note") == castor.SOFTWARE_VERSION
    # A supplier's package: nothing in its metadata claims Arkivflöde made it.
    for name, data in members.items():
        if name.endswith(".xml") and "/schemas/" not in name:
            assert b"Arkivfl" not in data, name
            assert schema_errors(etree.fromstring(data).getroottree()) == [], name
    erms_doc = etree.fromstring(members[f"{objid}/metadata/descriptive/ERMS.xml"])
    aggs = erms_doc.findall(f".//{E}aggregation")
    assert 3 <= len(aggs) <= 6
    for agg in aggs:
        assert re.fullmatch(r"MBN \d{4}/\d{4}", agg.findtext(f"{E}objectId"))
        own = {el.get("name"): el.findtext(f"{E}value") for el in agg.iterfind(f".//{E}ownElement[@name]")}
        assert re.fullmatch(r"(Eskilstuna|Torshälla) .+ \d+:\d+", own["fastighetsbeteckning"])
        assert own["atgard"] and own["beslut"] and own["beslutsdatum"]
        closed = agg.find(f"{E}dates/{E}date[@dateType='closed']").text
        assert closed.startswith("2025-")
        for number in agg.iterfind(f".//{E}idNumber"):
            check = is_valid_personnummer if number.get("idNumberType") == "personnummer" else (
                is_valid_organisationsnummer)
            assert check(number.text)


def test_documents_are_valid_pdf_and_multipage_tiff(inbox):
    pdfs = tiffs = 0
    for path in _valid(inbox):
        for name, data in _members(path).items():
            if "/data/" not in name:
                continue
            if name.endswith(".pdf"):
                assert verify_pdf(data) >= 1
                pdfs += 1
            else:
                assert name.endswith(".tif")
                img = Image.open(io.BytesIO(data))
                assert img.format == "TIFF" and img.n_frames >= 2
                img.seek(img.n_frames - 1)
                img.load()
                tiffs += 1
    assert pdfs > 10 and tiffs >= 1


def test_yaml_loads_as_a_prepared_system():
    system = load_system(PROJECT / "dags" / "systems" / "castor.yaml")
    assert system.extract_kind == "prepared" and system.inbox_env == "ARKIV_CASTOR_INBOX"
    assert system.quality_suite is None and system.content["kind"] == "prepared"
    assert [rc.name for rc in system.record_classes] == ["bygglov-bevaras"]
    assert system.agreement.archive_creator.organisationsnummer == castor.ARCHIVE_CREATOR[1]
    assert system.agreement.series == "F 2"


def test_main_writes_the_inbox(tmp_path, capsys):
    assert castor.main(["--inbox", str(tmp_path), "--size", "1", "--as-zip", "0", "--bad", "1"]) == 0
    assert "Castor: 1 packages" in capsys.readouterr().out
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 2
