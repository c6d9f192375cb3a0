"""Tests for transforms.validation.validator: a package built here is valid, and each mutation fires its rule ID."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import shutil
import struct
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from transforms.common.xmltools import NS_CSIP, NS_METS, NS_PREMIS, NS_SIP, NS_XLINK, SCHEMA_DIR
from transforms.validation import validator as v

M = f"{{{NS_METS}}}"
XL = f"{{{NS_XLINK}}}"
CS = f"{{{NS_CSIP}}}"
NSMAP = {None: NS_METS, "csip": NS_CSIP, "sip": NS_SIP, "xlink": NS_XLINK}
ORGNR_ARCHIVIST = "212000-0142"
ORGNR_SUBMITTER = "556677-8899"
SCHEMAS = ["mets.xsd", "xlink.xsd", "DILCISExtensionMETS.xsd", "DILCISExtensionSIPMETS.xsd", "premis-v3-0.xsd"]
PREMIS = (
    f'<premis xmlns="{NS_PREMIS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="3.0">'
    '<object xsi:type="intellectualEntity"><objectIdentifier><objectIdentifierType>local</objectIdentifierType>'
    "<objectIdentifierValue>pkg-1</objectIdentifierValue></objectIdentifier></object></premis>"
).encode()


@pytest.fixture(autouse=True)
def _rules_report_only_their_own_ids(caplog):
    """Every test here also proves that no rule reported a requirement ID it does not own."""
    with caplog.at_level(logging.ERROR, logger="transforms.validation"):
        yield
    assert not [r.getMessage() for r in caplog.records if "does not own" in r.getMessage()]


# ------------------------------------------------------------------------------------------
# A minimal but complete CSIP 2.1.0 / SIP 2.1.0 / FGS package, written with lxml
# ------------------------------------------------------------------------------------------
def _el(parent, tag, text=None, **attrs):
    el = etree.SubElement(parent, f"{M}{tag}")
    for k, val in attrs.items():
        el.set(k, val)
    if text is not None:
        el.text = text
    return el


def _file_attrs(path: Path) -> dict:
    data = path.read_bytes()
    return {"MIMETYPE": "application/xml" if path.suffix in (".xml", ".xsd") else "text/plain",
            "SIZE": str(len(data)), "CREATED": "2024-01-01T12:00:00Z",
            "CHECKSUM": hashlib.sha256(data).hexdigest(), "CHECKSUMTYPE": "SHA-256"}


def _flocat(file_el, href):
    loc = _el(file_el, "FLocat", LOCTYPE="URL")
    loc.set(f"{XL}type", "simple")
    loc.set(f"{XL}href", href)


def _mdref(parent, root: Path, href: str, mdtype="PREMIS"):
    ref = _el(parent, "mdRef", LOCTYPE="URL", MDTYPE=mdtype, **_file_attrs(root / href))
    ref.set(f"{XL}type", "simple")
    ref.set(f"{XL}href", href)
    return ref


def _header(mets, *, sip: bool):
    hdr = _el(mets, "metsHdr", CREATEDATE="2024-01-01T12:00:00Z", LASTMODDATE="2024-01-02T12:00:00Z")
    hdr.set(f"{CS}OAISPACKAGETYPE", "SIP")
    if sip:
        hdr.set("RECORDSTATUS", "NEW")
    sw = _el(hdr, "agent", ROLE="CREATOR", TYPE="OTHER", OTHERTYPE="SOFTWARE")
    _el(sw, "name", "Arkivflöde")
    _el(sw, "note", "0.1.0").set(f"{CS}NOTETYPE", "SOFTWARE VERSION")
    if sip:
        for role, name, nr in (("ARCHIVIST", "Exempla kommun", ORGNR_ARCHIVIST),
                               ("CREATOR", "Exempla kommun, arkivet", ORGNR_SUBMITTER)):
            a = _el(hdr, "agent", ROLE=role, TYPE="ORGANIZATION")
            _el(a, "name", name)
            _el(a, "note", nr).set(f"{CS}NOTETYPE", "IDENTIFICATIONCODE")
        for typ, val in (("SUBMISSIONAGREEMENT", "LA 2024:1"), ("PREVIOUSSUBMISSIONAGREEMENT", "LA 2020:1"),
                         ("REFERENCECODE", "SE/EX/1"), ("PREVIOUSREFERENCECODE", "SE/EX/0")):
            _el(hdr, "altRecordID", val, TYPE=typ)
    return hdr


def _write(tree_root, path: Path):
    path.write_bytes(etree.tostring(tree_root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def build_package(base: Path, name: str = "pkg-1") -> Path:
    """Write a small SIP that is valid under every profile (csip, sip, fgs)."""
    root = base / name
    for d in ("metadata/preservation", "representations/rep1/data", "representations/rep1/metadata",
              "schemas", "documentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "documentation/readme.txt").write_text("Om leveransen.\n", encoding="utf-8")
    (root / "representations/rep1/data/doc.txt").write_text("Ärende 1\n", encoding="utf-8")
    (root / "metadata/preservation/premis.xml").write_bytes(PREMIS)
    for s in SCHEMAS:
        shutil.copyfile(SCHEMA_DIR / s, root / "schemas" / s)

    # representation METS
    rep = etree.Element(f"{M}mets", nsmap=NSMAP, OBJID="rep1", TYPE="Mixed", PROFILE=v.SIP_PROFILE_URL)
    rep.set(f"{CS}CONTENTINFORMATIONTYPE", "citserms_v2_1")
    _header(rep, sip=False)
    fs = _el(rep, "fileSec", ID="rep-filesec")
    grp = _el(fs, "fileGrp", ID="rep-grp-data", USE="Representations/rep1/data")
    f = _el(grp, "file", ID="rep-file-1", **_file_attrs(root / "representations/rep1/data/doc.txt"))
    _flocat(f, "data/doc.txt")
    sm = _el(rep, "structMap", ID="rep-sm", TYPE="PHYSICAL", LABEL="CSIP")
    main = _el(sm, "div", ID="rep-div", LABEL="rep1")
    _el(main, "div", ID="rep-div-md", LABEL="Metadata")
    data = _el(main, "div", ID="rep-div-data", LABEL="Data")
    _el(data, "fptr", FILEID="rep-grp-data")
    _write(rep, root / "representations/rep1/METS.xml")

    # package METS
    mets = etree.Element(f"{M}mets", nsmap=NSMAP, OBJID=name, TYPE="Mixed", LABEL="Testleverans",
                         PROFILE=v.SIP_PROFILE_URL)
    mets.set(f"{CS}CONTENTINFORMATIONTYPE", "citserms_v2_1")
    _header(mets, sip=True)
    amd = _el(mets, "amdSec")
    dp = _el(amd, "digiprovMD", ID="amd-premis", STATUS="CURRENT")
    _mdref(dp, root, "metadata/preservation/premis.xml")
    fs = _el(mets, "fileSec", ID="filesec")
    doc_grp = _el(fs, "fileGrp", ID="grp-doc", USE="Documentation")
    f = _el(doc_grp, "file", ID="file-readme", **_file_attrs(root / "documentation/readme.txt"))
    _flocat(f, "documentation/readme.txt")
    sch_grp = _el(fs, "fileGrp", ID="grp-schemas", USE="Schemas")
    for i, s in enumerate(SCHEMAS):
        f = _el(sch_grp, "file", ID=f"file-xsd-{i}", **_file_attrs(root / "schemas" / s))
        _flocat(f, f"schemas/{s}")
    rep_grp = _el(fs, "fileGrp", ID="grp-rep1", USE="Representations/rep1")
    rep_grp.set(f"{CS}CONTENTINFORMATIONTYPE", "citserms_v2_1")
    f = _el(rep_grp, "file", ID="file-rep1-mets", **_file_attrs(root / "representations/rep1/METS.xml"))
    _flocat(f, "representations/rep1/METS.xml")
    sm = _el(mets, "structMap", ID="sm", TYPE="PHYSICAL", LABEL="CSIP")
    main = _el(sm, "div", ID="div-main", LABEL=name)
    _el(main, "div", ID="div-md", LABEL="Metadata", ADMID="amd-premis")
    _el(_el(main, "div", ID="div-doc", LABEL="Documentation"), "fptr", FILEID="grp-doc")
    _el(_el(main, "div", ID="div-schemas", LABEL="Schemas"), "fptr", FILEID="grp-schemas")
    rep_div = _el(main, "div", ID="div-rep1", LABEL="Representations/rep1")
    mptr = _el(rep_div, "mptr", LOCTYPE="URL")
    mptr.set(f"{XL}type", "simple")
    mptr.set(f"{XL}href", "representations/rep1/METS.xml")
    mptr.set(f"{XL}title", "grp-rep1")
    _write(mets, root / "METS.xml")
    return root


def mutate(root: Path, fn, rel: str = "METS.xml") -> None:
    """Apply ``fn(mets_root_element)`` to a METS document of the package and write it back."""
    tree = etree.parse(str(root / rel))
    fn(tree.getroot())
    _write(tree.getroot(), root / rel)


def ids(report, severity=None) -> set[str]:
    return {f.requirement for f in report.findings if severity is None or f.severity == severity}


@pytest.fixture
def pkg(tmp_path) -> Path:
    return build_package(tmp_path)


# ------------------------------------------------------------------------------------------
# The good package
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", [None, "csip", "sip", "fgs"])
def test_built_package_is_valid(pkg, profile):
    report = v.validate_package(pkg, profile)
    assert report.valid, report.to_text()
    assert not ids(report, "WARNING") - {"CSIP17"}, report.to_text()  # no descriptive metadata: a SHOULD
    assert report.profile == (profile or "sip")
    assert report.files_checked >= 8 and report.bytes_checked > 0


def test_profile_detection_from_mets_profile(pkg):
    # A CSIP profile URL with OAISPACKAGETYPE="SIP" (RODA-in's habit) is still a SIP: the SIP rules
    # apply, and SIP2 says which URL a SIP declares.
    mutate(pkg, lambda m: m.set("PROFILE", v.CSIP_PROFILE_URL))
    rep = v.validate_package(pkg)
    assert rep.profile == "sip" and ids(rep, "ERROR") == {"SIP2"}, rep.to_text()
    assert "OAISPACKAGETYPE" in rep.spec_reason and "SIP rules apply" in rep.spec_reason
    # Declared an AIP under the CSIP URL: CSIP rules only, and the report says so.
    mutate(pkg, lambda m: m.find(f"{{{NS_METS}}}metsHdr").set(f"{{{NS_CSIP}}}OAISPACKAGETYPE", "AIP"))
    rep = v.validate_package(pkg)
    assert rep.profile == "csip" and rep.valid, rep.to_text()
    assert "no SIP rules applied" in rep.to_text()
    assert "SIP2" in ids(v.validate_package(pkg, "sip"))


def test_archives_validate_like_folders(pkg, tmp_path):
    tgz = tmp_path / "pkg-1.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(pkg, arcname="pkg-1")
    zp = tmp_path / "pkg-1.zip"
    shutil.make_archive(str(zp.with_suffix("")), "zip", root_dir=tmp_path, base_dir="pkg-1")
    for archive in (tgz, zp):
        report = v.validate_package(archive, "fgs")
        assert report.valid, report.to_text()


# ------------------------------------------------------------------------------------------
# Each rule family fires with the right ID
# ------------------------------------------------------------------------------------------
def _del(attr, xpath="."):
    def fn(m):
        for el in m.xpath(xpath, namespaces={"m": NS_METS}):
            el.attrib.pop(attr, None)
    return fn


def _set(attr, value, xpath="."):
    def fn(m):
        for el in m.xpath(xpath, namespaces={"m": NS_METS}):
            el.set(attr, value)
    return fn


def _remove(xpath):
    def fn(m):
        for el in m.xpath(xpath, namespaces={"m": NS_METS}):
            el.getparent().remove(el)
    return fn


CASES = [
    ("CSIP1", _del("OBJID"), "ERROR"),
    ("CSIP1", _set("OBJID", "other-id"), "WARNING"),
    ("CSIP2", _set("TYPE", "Not a category"), "ERROR"),
    ("CSIP2", _set("TYPE", "OTHER"), "ERROR"),  # OTHER without csip:OTHERTYPE
    ("CSIP4", _set(f"{CS}CONTENTINFORMATIONTYPE", "nonsense"), "ERROR"),
    ("CSIP5", _set(f"{CS}CONTENTINFORMATIONTYPE", "OTHER"), "ERROR"),
    ("CSIP6", _del("PROFILE"), "ERROR"),
    ("CSIP117", _remove("m:metsHdr"), "ERROR"),
    ("CSIP7", _del("CREATEDATE", "m:metsHdr"), "ERROR"),
    ("CSIP8", _set("LASTMODDATE", "2999-01-01T00:00:00Z", "m:metsHdr"), "ERROR"),
    ("CSIP9", _set(f"{CS}OAISPACKAGETYPE", "XIP", "m:metsHdr"), "ERROR"),
    ("CSIP11", _set("ROLE", "EDITOR", "m:metsHdr/m:agent[@OTHERTYPE='SOFTWARE']"), "ERROR"),
    ("CSIP13", _del("OTHERTYPE", "m:metsHdr/m:agent[@OTHERTYPE='SOFTWARE']"), "ERROR"),
    ("CSIP16", _set(f"{CS}NOTETYPE", "IDENTIFICATIONCODE", "m:metsHdr/m:agent[@OTHERTYPE='SOFTWARE']/m:note"),
     "ERROR"),
    ("CSIP34", _set("STATUS", "TEST", "m:amdSec/m:digiprovMD"), "ERROR"),
    ("CSIP36", _set("LOCTYPE", "URN", "m:amdSec/m:digiprovMD/m:mdRef"), "ERROR"),
    ("CSIP41", _set("SIZE", "1", "m:amdSec/m:digiprovMD/m:mdRef"), "ERROR"),
    ("CSIP43", _set("CHECKSUM", "00" * 32, "m:amdSec/m:digiprovMD/m:mdRef"), "ERROR"),
    ("CSIP38", _set(f"{XL}href", "metadata/preservation/missing.xml", "m:amdSec/m:digiprovMD/m:mdRef"), "ERROR"),
    ("CSIP38", _set(f"{XL}href", "../../etc/passwd", "m:amdSec/m:digiprovMD/m:mdRef"), "ERROR"),
    ("CSIP60", _remove("m:fileSec/m:fileGrp[@USE='Documentation']"), "ERROR"),
    ("CSIP113", _remove("m:fileSec/m:fileGrp[@USE='Schemas']"), "ERROR"),
    ("CSIP114", _set("USE", "Documentation", "m:fileSec/m:fileGrp[@ID='grp-rep1']"), "ERROR"),
    ("CSIP61", _set("ADMID", "grp-doc", "m:fileSec/m:fileGrp[@ID='grp-doc']"), "ERROR"),
    ("CSIP62", _del(f"{CS}CONTENTINFORMATIONTYPE", "m:fileSec/m:fileGrp[@ID='grp-rep1']"), "ERROR"),
    ("CSIP64", _set("USE", "Representations/nowhere", "m:fileSec/m:fileGrp[@ID='grp-rep1']"), "ERROR"),
    ("CSIP66", _remove("m:fileSec/m:fileGrp[@ID='grp-doc']/m:file"), "ERROR"),
    ("CSIP68", _set("MIMETYPE", "not a mime type", "m:fileSec//m:file[@ID='file-readme']"), "ERROR"),
    ("CSIP69", _set("SIZE", "3", "m:fileSec//m:file[@ID='file-readme']"), "ERROR"),
    ("CSIP70", _del("CREATED", "m:fileSec//m:file[@ID='file-readme']"), "ERROR"),
    ("CSIP71", _set("CHECKSUM", "ab" * 32, "m:fileSec//m:file[@ID='file-readme']"), "ERROR"),
    ("CSIP72", _del("CHECKSUMTYPE", "m:fileSec//m:file[@ID='file-readme']"), "ERROR"),
    ("CSIP76", _remove("m:fileSec//m:file[@ID='file-readme']/m:FLocat"), "ERROR"),
    ("CSIP77", _set("LOCTYPE", "OTHER", "m:fileSec//m:file[@ID='file-readme']/m:FLocat"), "ERROR"),
    ("CSIP78", _del(f"{XL}type", "m:fileSec//m:file[@ID='file-readme']/m:FLocat"), "ERROR"),
    ("CSIP79", _set(f"{XL}href", "C:\\docs\\readme.txt", "m:fileSec//m:file[@ID='file-readme']/m:FLocat"),
     "ERROR"),
    ("CSIP80", _set("LABEL", "Other", "m:structMap"), "ERROR"),
    ("CSIP81", _set("TYPE", "LOGICAL", "m:structMap"), "ERROR"),
    ("CSIP88", _remove("m:structMap/m:div/m:div[@LABEL='Metadata']"), "ERROR"),
    ("CSIP91", _set("ADMID", "amd-premis nothing", "m:structMap/m:div/m:div[@LABEL='Metadata']"), "ERROR"),
    ("CSIP96", _remove("m:structMap/m:div/m:div[@LABEL='Documentation']/m:fptr"), "ERROR"),
    ("CSIP116", _set("FILEID", "grp-schemas", "m:structMap/m:div/m:div[@LABEL='Documentation']/m:fptr"), "ERROR"),
    ("CSIP100", _remove("m:structMap/m:div/m:div[@LABEL='Schemas']/m:fptr"), "ERROR"),
    ("CSIP108", _set(f"{XL}title", "nothing", "m:structMap//m:mptr"), "ERROR"),
    ("CSIP109", _remove("m:structMap//m:mptr"), "ERROR"),
    ("CSIP110", _set(f"{XL}href", "representations/rep9/METS.xml", "m:structMap//m:mptr"), "ERROR"),
    ("CSIP111", _set(f"{XL}type", "extended", "m:structMap//m:mptr"), "ERROR"),
    ("SIP2", _set("PROFILE", "https://example.org/profile.xml"), "ERROR"),
    ("SIP3", _set("RECORDSTATUS", "BOGUS", "m:metsHdr"), "ERROR"),
    ("SIP4", _set(f"{CS}OAISPACKAGETYPE", "AIP", "m:metsHdr"), "ERROR"),
    ("SIP5", _set("TYPE", "SUBMISSIONAGREEMENT", "m:metsHdr/m:altRecordID"), "ERROR"),  # 4 instances
    ("SIP1", _del("LABEL"), "INFO"),
    ("SIP11", _set("TYPE", "OTHER", "m:metsHdr/m:agent[@ROLE='ARCHIVIST']"), "ERROR"),
    ("SIP14", _del(f"{CS}NOTETYPE", "m:metsHdr/m:agent[@ROLE='ARCHIVIST']/m:note"), "ERROR"),
    ("SIP15", _remove("m:metsHdr/m:agent[@TYPE='ORGANIZATION' and @ROLE='CREATOR']"), "ERROR"),
    ("SIP20", _set(f"{CS}NOTETYPE", "SOFTWARE VERSION",
                   "m:metsHdr/m:agent[@TYPE='ORGANIZATION' and @ROLE='CREATOR']/m:note"), "ERROR"),
]


@pytest.mark.parametrize(("rid", "fn", "severity"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_mutation_fires_rule(pkg, rid, fn, severity):
    mutate(pkg, fn)
    report = v.validate_package(pkg, "sip")
    assert rid in ids(report, severity), report.to_text(show_info=True)
    if severity == "ERROR":
        assert not report.valid
    else:
        assert report.valid, report.to_text()
    assert rid in report.to_text(show_info=True)


def test_software_agent_rules_do_not_apply_to_submitter(pkg):
    # CSIP12/13/15/16 concern the software agent only; the reference validator wrongly applies them
    # to the SIP submitting agent (ROLE=CREATOR, TYPE=ORGANIZATION). SIP14 likewise is not about
    # the software agent, whose note is typed SOFTWARE VERSION (CSIP16).
    report = v.validate_package(pkg, "sip")
    assert not ids(report) & {"CSIP12", "CSIP13", "CSIP15", "CSIP16", "SIP14"}


def test_type_other_with_othertype_is_accepted(pkg):
    # CSIP2: the profile text prescribes TYPE="OTHER" + csip:OTHERTYPE (the reference validator
    # only accepts the vocabulary's "Other").
    def fn(m):
        m.set("TYPE", "OTHER")
        m.set(f"{CS}OTHERTYPE", "Kommunala handlingar")
    mutate(pkg, fn)
    assert "CSIP2" not in ids(v.validate_package(pkg, "sip"))


def test_filegrp_without_content_information_type_is_fine(pkg):
    # CSIP63: only a stray OTHERCONTENTINFORMATIONTYPE is wrong; the reference validator fails every
    # fileGrp without csip:CONTENTINFORMATIONTYPE. CSIP103: "Representations/rep1" division is fine.
    report = v.validate_package(pkg, "sip")
    assert not ids(report) & {"CSIP63", "CSIP103"}


def test_representation_mets_is_validated(pkg):
    mutate(pkg, _del(f"{CS}CONTENTINFORMATIONTYPE"), "representations/rep1/METS.xml")
    report = v.validate_package(pkg, "sip")
    assert any(f.requirement == "CSIP4" and f.severity == "ERROR" and "representations/rep1" in f.location
               for f in report.findings), report.to_text()


def test_rep_mets_checksum_mismatch(pkg):
    (pkg / "representations/rep1/data/doc.txt").write_text("changed\n", encoding="utf-8")
    report = v.validate_package(pkg)
    assert {"CSIP69", "CSIP71"} <= ids(report, "ERROR")


def test_structure_rules(pkg):
    (pkg / "METS.xml").rename(pkg / "Mets.xml")
    report = v.validate_package(pkg)
    assert "CSIPSTR4" in ids(report, "ERROR") and "Mets.xml" in report.to_text()


def test_structure_should_rules(pkg):
    shutil.rmtree(pkg / "documentation")
    report = v.validate_package(pkg)
    assert "CSIPSTR16" in ids(report, "WARNING")


def test_metadata_coverage(pkg):
    (pkg / "metadata/descriptive").mkdir()
    (pkg / "metadata/descriptive/ead.xml").write_text("<ead/>")
    report = v.validate_package(pkg)
    assert "CSIP17" in ids(report, "ERROR")


def test_digiprovmd_without_preservation_file_is_a_csip32_warning(pkg):
    # CSIP32 (SHOULD): one digiprovMD per piece of PREMIS metadata. A digiprovMD that neither
    # embeds its PREMIS nor has a file in metadata/preservation is a CSIP32 finding (the corpus's
    # CSIP32 test case agrees), besides the CSIP31 one for the amdSec; both only warn.
    mutate(pkg, _remove("m:amdSec/m:digiprovMD/m:mdRef"))
    (pkg / "metadata/preservation/premis.xml").unlink()
    report = v.validate_package(pkg)
    assert {"CSIP31", "CSIP32"} <= ids(report, "WARNING") and report.valid, report.to_text()


def test_embedded_premis_needs_no_preservation_file(pkg):
    def embed(m):
        dp = m.find(f"{M}amdSec/{M}digiprovMD")
        dp.remove(dp.find(f"{M}mdRef"))
        wrap = _el(dp, "mdWrap", MDTYPE="PREMIS")
        _el(wrap, "xmlData").append(etree.fromstring(f'<premis xmlns="{NS_PREMIS}" version="3.0"/>'))
    mutate(pkg, embed)
    (pkg / "metadata/preservation/premis.xml").unlink()
    report = v.validate_package(pkg)
    assert not ids(report) & {"CSIP31", "CSIP32", "CSIP35"} and report.valid, report.to_text()


def test_case_only_href_mismatch_warns(pkg):
    mutate(pkg, _set(f"{XL}href", "Documentation/README.txt", "m:fileSec//m:file[@ID='file-readme']/m:FLocat"))
    report = v.validate_package(pkg)
    assert "CSIP79" in ids(report, "WARNING") and report.valid


def test_unsafe_xml_in_mets_is_reported(pkg):
    (pkg / "METS.xml").write_text('<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaa">'
                                  '<!ENTITY b "&a;&a;&a;&a;&a;">]><mets>&b;</mets>')
    report = v.validate_package(pkg)
    assert not report.valid and "METS-XML" in ids(report)
    assert "DOCTYPE" in report.to_text()


# ------------------------------------------------------------------------------------------
# FGS rules
# ------------------------------------------------------------------------------------------
def test_fgs_unlisted_file(pkg):
    (pkg / "documentation/extra.txt").write_text("not listed")
    assert "ARK2" in ids(v.validate_package(pkg, "fgs"), "ERROR")
    assert "CSIP58" in ids(v.validate_package(pkg, "sip"), "WARNING")


def test_fgs_sha256_and_orgnr(pkg):
    def fn(m):
        f = m.find(f".//{M}file[@ID='file-readme']")
        f.set("CHECKSUMTYPE", "MD5")
        f.set("CHECKSUM", hashlib.md5((pkg / "documentation/readme.txt").read_bytes()).hexdigest())  # noqa: S324
        m.find(f"{M}metsHdr/{M}agent[@ROLE='ARCHIVIST']/{M}note").text = "212000-0143"
    mutate(pkg, fn)
    report = v.validate_package(pkg, "fgs")
    assert {"ARK1", "ARK4"} <= ids(report, "ERROR")
    assert v.validate_package(pkg, "sip").valid  # MD5 is fine outside FGS; orgnr is ours


def test_fgs_metadata_schema_and_schemas_folder(pkg):
    (pkg / "metadata/preservation/premis.xml").write_bytes(PREMIS.replace(b'version="3.0"', b'version="9"'))
    (pkg / "schemas/premis-v3-0.xsd").unlink()
    report = v.validate_package(pkg, "fgs")
    assert {"ARK3", "ARK5"} <= ids(report, "ERROR")


def test_fgs_representation_mets_required(pkg):
    (pkg / "representations/rep2/data").mkdir(parents=True)
    assert "ARK6" in ids(v.validate_package(pkg, "fgs"), "ERROR")


# ------------------------------------------------------------------------------------------
# Requirements listing, report formats
# ------------------------------------------------------------------------------------------
def test_list_requirements_reads_profiles():
    csip = {r.id: r for r in v.list_requirements("csip")}
    assert "CSIP60" in csip and csip["CSIP60"].level == "MUST" and csip["CSIP60"].checked
    assert "Documentation" in csip["CSIP60"].description
    assert "SIP4" not in csip
    sip = {r.id: r for r in v.list_requirements("sip")}
    assert sip["SIP4"].checked and "ARK1" not in sip
    fgs = {r.id: r for r in v.list_requirements("fgs")}
    assert fgs["ARK2"].checked and not fgs["REF_METS_1"].checked and fgs["REF_METS_1"].note
    assert len([r for r in csip.values() if r.id.startswith("CSIP") and not r.id.startswith("CSIPSTR")]) == 116
    with pytest.raises(ValueError):
        v.list_requirements("nope")


def test_report_dict_and_text(pkg):
    mutate(pkg, _set("SIZE", "3", "m:fileSec//m:file[@ID='file-readme']"))
    report = v.validate_package(pkg)
    d = report.to_dict()
    assert d["valid"] is False and d["profile"] == "sip"
    assert any(f["requirement"] == "CSIP69" for f in d["findings"])
    assert "CSIP69" in d["requirements_checked"]
    json.dumps(d)
    text = report.to_text()
    assert text.startswith("INVALID") and "CSIP69" in text


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------
def _run(argv, capsys):
    parser = argparse.ArgumentParser()
    v.add_arguments(parser)
    code = v.run(parser.parse_args(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_exit_codes(pkg, tmp_path, capsys):
    assert _run([str(pkg)], capsys)[0] == 0
    code, out, _ = _run([str(pkg), "--json"], capsys)
    assert code == 0 and json.loads(out)["valid"] is True
    bad = build_package(tmp_path / "second", "pkg-2")
    mutate(bad, _remove("m:structMap"))
    code, out, _ = _run([str(pkg), str(bad), "--json"], capsys)
    assert code == 1 and [r["valid"] for r in json.loads(out)] == [True, False]
    assert _run([], capsys)[0] == 2
    assert _run([str(tmp_path / "missing")], capsys)[0] == 2
    code, out, _ = _run(["--requirements", "--profile", "fgs"], capsys)
    assert code == 0 and "ARK2" in out and "CSIP60" in out


def test_cli_hostile_archive_is_invalid_not_a_crash(tmp_path, capsys):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tf:
        data = b"owned"
        ti = tarfile.TarInfo("../escape.txt")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    code, out, err = _run([str(evil)], capsys)
    assert code == 1 and "INVALID" in out and "Traceback" not in out + err
    assert not (tmp_path.parent / "escape.txt").exists()


def test_main_usage_error():
    from transforms.cli import main

    assert main(["validate", "--profile", "nope", "x"]) == 2


# ------------------------------------------------------------------------------------------
# Robustness: mutations never crash, they only change the report
# ------------------------------------------------------------------------------------------
_ATTRS = ["OBJID", "TYPE", "PROFILE", "ID", "USE", "LABEL", "SIZE", "CHECKSUM", "CHECKSUMTYPE", "MIMETYPE",
          "LOCTYPE", "ADMID", "DMDID", "FILEID", "CREATED", "STATUS", f"{XL}href", f"{XL}type", f"{XL}title",
          f"{CS}OAISPACKAGETYPE", f"{CS}CONTENTINFORMATIONTYPE", "ROLE", "OTHERTYPE"]
_VALUES = st.one_of(st.sampled_from(["", "OTHER", "../x", "/etc/passwd", "C:\\x", "%2e%2e/x", "file:///x",
                                     "http://example.org/", "Representations/rep1", "-1", "99999999999999999999",
                                     "grp-doc", "amd-premis"]),
                    st.text(max_size=12))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.integers(0, 400), st.sampled_from(_ATTRS), st.one_of(st.none(), _VALUES),
                              st.booleans()), min_size=1, max_size=6))
def test_random_mutations_never_crash(tmp_path_factory, ops):
    root = build_package(tmp_path_factory.mktemp("h"))

    def fn(m):
        elements = [e for e in m.iter() if isinstance(e.tag, str)]
        for idx, attr, value, drop in ops:
            el = elements[idx % len(elements)]
            if drop and el is not m and el.getparent() is not None and idx % 7 == 0:
                el.getparent().remove(el)
                elements = [e for e in m.iter() if isinstance(e.tag, str)]
            elif value is None:
                el.attrib.pop(attr, None)
            else:
                clean = "".join(ch for ch in value if ch.isprintable() and ch not in "\x00\ud800")
                with contextlib.suppress(ValueError):
                    el.set(attr, clean)
    mutate(root, fn)
    report = v.validate_package(root, "fgs")
    assert isinstance(report.valid, bool)
    json.dumps(report.to_dict())
    report.to_text()


def test_dip_profile_wants_package_type_dip_and_a_withheld_manifest(pkg):
    """Our DIP rules (no official DIP profile is bundled): a SIP is not a DIP; a DIP declares withholdings."""
    reqs = {r.id for r in v.list_requirements("dip")}
    assert {"DIP1", "DIP2", "CSIP9"} <= reqs and "SIP4" not in reqs and "ARK1" not in reqs
    assert {"DIP1", "DIP2"} <= ids(v.validate_package(pkg, "dip"), "ERROR")  # a SIP, as built

    mutate(pkg, lambda m: m.find(f"{{{NS_METS}}}metsHdr").set(f"{{{NS_CSIP}}}OAISPACKAGETYPE", "DIP"))
    for rep in (pkg / "representations").iterdir():
        mutate(pkg, lambda m: m.find(f"{{{NS_METS}}}metsHdr").set(f"{{{NS_CSIP}}}OAISPACKAGETYPE", "DIP"),
               f"representations/{rep.name}/METS.xml")
    (pkg / "documentation").mkdir(exist_ok=True)
    (pkg / "documentation" / "withheld.json").write_text("not json", encoding="utf-8")
    found = ids(v.validate_package(pkg, "dip"), "ERROR")
    assert "DIP1" not in found and "DIP2" in found
    (pkg / "documentation" / "withheld.json").write_text('{"withheld": []}', encoding="utf-8")
    assert not {"DIP1", "DIP2"} & ids(v.validate_package(pkg, "dip"), "ERROR")


# ------------------------------------------------------------------------------------------
# Whatever the bytes, a report: parser and container errors become findings
# ------------------------------------------------------------------------------------------
def test_deeply_nested_withheld_json_is_a_finding_not_a_crash(pkg):
    (pkg / "documentation" / "withheld.json").write_text("[" * 200_000, encoding="utf-8")
    report = v.validate_package(pkg, "dip")
    assert "DIP2" in ids(report, "ERROR") and not report.valid


def test_an_unreadable_root_mets_in_a_zip_is_a_finding_naming_it(pkg, tmp_path):
    import zipfile

    path = tmp_path / "pkg-1.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(p for p in pkg.rglob("*") if p.is_file()):
            zf.write(f, f"pkg-1/{f.relative_to(pkg).as_posix()}")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("pkg-1/METS.xml")
    at = info.header_offset + 30 + len("pkg-1/METS.xml") + 200
    data[at] = ord(" ") if data[at] != ord(" ") else ord("\t")  # still XML; only the CRC can tell
    path.write_bytes(bytes(data))
    report = v.validate_package(path)
    assert not report.valid
    bad = [f for f in report.findings if f.requirement == "METS-XML"]
    assert bad and "METS.xml" in bad[0].message and "bad CRC-32" in bad[0].message


def test_a_damaged_document_fails_its_checksum_and_the_rest_is_still_checked(pkg, tmp_path):
    import zipfile

    path = tmp_path / "pkg-1.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(p for p in pkg.rglob("*") if p.is_file()):
            zf.write(f, f"pkg-1/{f.relative_to(pkg).as_posix()}")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("pkg-1/representations/rep1/data/doc.txt")
    data[info.header_offset + 30 + len(info.filename)] ^= 0x20
    path.write_bytes(bytes(data))
    report = v.validate_package(path, "fgs")
    assert not report.valid and "PACKAGE" not in ids(report)
    crc = [f for f in report.findings if "bad CRC-32" in f.message]
    assert crc and "representations/rep1/data/doc.txt" in crc[0].message
    assert report.files_checked > 1  # the other files were still hashed


def test_a_mets_below_the_root_never_makes_a_package_valid(pkg, tmp_path):
    wrapped = tmp_path / "wrapped"
    shutil.copytree(pkg, wrapped / "inner" / "pkg-1")
    (wrapped / "readme.txt").write_text("see inner/\n", encoding="utf-8")
    report = v.validate_package(wrapped)
    assert not report.valid and "CSIPSTR4" in ids(report, "ERROR")


@pytest.mark.parametrize("error", [struct.error("unpack requires a buffer"),
                                   RecursionError("maximum recursion depth exceeded"), MemoryError(),
                                   OverflowError("int too large"), NotImplementedError("method 9")])
def test_any_error_from_reading_a_package_becomes_a_package_finding(pkg, monkeypatch, error):
    def planted(self):
        raise error

    monkeypatch.setattr(v._Validator, "run", planted)
    report = v.validate_package(pkg)
    assert not report.valid
    [finding] = [f for f in report.findings if f.requirement == "PACKAGE"]
    assert type(error).__name__ in finding.message
    assert not str(error) or str(error) not in finding.message  # the type, never the text (it may quote content)


def test_a_disk_error_is_not_judged_as_the_package(pkg, monkeypatch):
    import errno

    def planted(self):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(v._Validator, "run", planted)
    with pytest.raises(OSError):
        v.validate_package(pkg)


def test_findings_never_carry_a_personnummer_or_a_control_character_from_the_delivery(pkg, tmp_path):
    (pkg / "documentation" / "19121212-1212 Tolvan.txt").write_text("x", encoding="utf-8")
    mutate(pkg, _set(f"{XL}href", "documentation/\u202ereadme\n.txt", "m:fileSec//m:file[@ID='file-readme']/m:FLocat"))
    moved = tmp_path / "leverans\n19121212-1212"
    shutil.copytree(pkg, moved / "pkg-1")
    report = v.validate_package(moved / "pkg-1", "fgs")
    assert not report.valid
    written = json.dumps(report.to_dict(), ensure_ascii=False) + report.to_text(show_info=True)
    assert "19121212-1212" not in written and "121212-1212" not in written
    assert "\u202e" not in written
    for f in report.findings:
        assert f.message.isprintable() and f.location.isprintable()
    assert report.to_text().count("\n") == len(report.to_text().splitlines()) - 1
