"""``arkiv prepare``: packages written the way other tools write them become FGS 2.0 packages.

Each producer below follows the documented habits of a real tool (what its packages declare and
what they leave out); none of them is written by our own package builder. A prepared package must
pass our validator (``--profile fgs``), the E-ARK reference validator beyond its known false rules,
and ``xmlschema`` (an independent XSD engine); every deliberately broken delivery must be refused
for its own defect, and a 1.x package with a message naming the version.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
import xmlschema
from lxml import etree
from reference_validator import real_findings

from transforms.common.xmltools import NS_CSIP, NS_METS, NS_PREMIS, NS_SIP, NS_XLINK, SCHEMA_DIR
from transforms.packaging import prepare as pr
from transforms.validation import validator as v

M = f"{{{NS_METS}}}"
XL = f"{{{NS_XLINK}}}"
SIP_220 = "https://earksip.dilcis.eu/profile/E-ARK-SIP-v2-2-0.xml"
ORGNR_ARCHIVIST = "212000-0142"
ORGNR_SUBMITTER = "556677-8899"
DC = "http://purl.org/dc/elements/1.1/"
PREMIS = (f'<premis xmlns="{NS_PREMIS}" version="3.0"><object xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
          'xsi:type="intellectualEntity"><objectIdentifier><objectIdentifierType>local</objectIdentifierType>'
          "<objectIdentifierValue>x</objectIdentifierValue></objectIdentifier></object></premis>").encode()


# ------------------------------------------------------------------------------------------
# Producers
# ------------------------------------------------------------------------------------------
class Producer:
    """The knobs in which the tools' packages differ from FGS 2.0 (all derivable from the package)."""

    name = "base"
    profile = v.SIP_PROFILE_URL
    rep_profile = v.CSIP_PROFILE_URL
    csip_ns = NS_CSIP
    package_type = "SIP"
    mets_type = "Mixed"
    cit = "citserms_v2_1"
    rep_cit = True  # the representation METS carries CONTENTINFORMATIONTYPE
    checksum = "SHA-256"
    schemas_group = True
    documentation = True
    rep_agents = True
    structmap_label = "CSIP"
    extra_structmaps = False
    main_label_objid = False
    created = True
    orgnr_style = "plain"
    record_status = "NEW"
    data_name = "ärende 1.txt"
    href_plus = False  # writes '+' for the space in the href

    def orgnr(self, nr: str) -> str:
        if self.orgnr_style == "vat":
            return f"SE{nr.replace('-', '')}01"
        return nr


class CommonsIP2(Producer):
    """commons-ip 2.x (SIP 2.1.0): MIXED content, schemas only where written by hand, MD5 in old exports."""

    name = "commons-ip-2"
    cit = "MIXED"
    rep_cit = False
    checksum = "MD5"
    schemas_group = False
    orgnr_style = "vat"


class Eark204(Producer):
    """The E-ARK 2.0.4 layout: main division labelled with the OBJID, SHA-1, no CREATED on files."""

    name = "eark-2.0.4"
    main_label_objid = True
    checksum = "SHA-1"
    created = False
    documentation = False


class Sip220(Producer):
    """A SIP 2.2.0 package (commons-ip 2.7+, the E-ARK SIP creator): versioned SIP URL, 2.2.0 terms."""

    name = "sip-2.2.0"
    profile = SIP_220
    mets_type = "Musical Scores - Print"
    cit = "citserms_v3_0"
    record_status = "REPLACEMENT"


class RodaIn(Producer):
    """RODA-in: the CSIP profile URL on a SIP, representation METS without agents, '+' for spaces."""

    name = "roda-in"
    profile = v.CSIP_PROFILE_URL
    rep_agents = False
    href_plus = True
    schemas_group = False


class Meemoo22(Producer):
    """meemoo-like 2.2 SIPs: extra structMaps, lower-case dilcis.eu namespace, no Schemas group."""

    name = "meemoo-2.2"
    profile = SIP_220
    extra_structmaps = True
    csip_ns = "https://dilcis.eu/XML/METS/CSIPExtensionMETS"
    schemas_group = False
    rep_cit = False


PRODUCERS = [CommonsIP2(), Eark204(), Sip220(), RodaIn(), Meemoo22()]


def _el(parent, tag, text=None, **attrs):
    el = etree.SubElement(parent, f"{M}{tag}")
    for k, val in attrs.items():
        el.set(k, val)
    if text is not None:
        el.text = text
    return el


def _attrs(p: Producer, path: Path) -> dict:
    data = path.read_bytes()
    algo = {"SHA-256": "sha256", "MD5": "md5", "SHA-1": "sha1"}[p.checksum]
    out = {"MIMETYPE": "text/xml" if path.suffix in (".xml", ".xsd") else "text/plain", "SIZE": str(len(data)),
           "CHECKSUM": hashlib.new(algo, data).hexdigest(), "CHECKSUMTYPE": p.checksum}
    if p.created:
        out["CREATED"] = "2024-03-01T10:00:00Z"
    return out


def _loc(parent, href: str, tag="FLocat"):
    loc = _el(parent, tag, LOCTYPE="URL")
    loc.set(f"{XL}type", "simple")
    loc.set(f"{XL}href", href)
    return loc


def _header(p: Producer, mets, cs: str, *, root: bool):
    hdr = _el(mets, "metsHdr", CREATEDATE="2024-03-01T10:00:00Z")
    hdr.set(f"{{{cs}}}OAISPACKAGETYPE", p.package_type)
    if root:
        hdr.set("RECORDSTATUS", p.record_status)
    if root or p.rep_agents:
        sw = _el(hdr, "agent", ROLE="CREATOR", TYPE="OTHER", OTHERTYPE="SOFTWARE")
        _el(sw, "name", p.name)
        _el(sw, "note", "2.3.1").set(f"{{{cs}}}NOTETYPE", "SOFTWARE VERSION")
    if root:
        for role, who, nr in (("ARCHIVIST", "Exempla kommun", ORGNR_ARCHIVIST),
                              ("CREATOR", "Exempla kommun, socialtjänsten", ORGNR_SUBMITTER)):
            a = _el(hdr, "agent", ROLE=role, TYPE="ORGANIZATION")
            _el(a, "name", who)
            _el(a, "note", p.orgnr(nr)).set(f"{{{cs}}}NOTETYPE", "IDENTIFICATIONCODE")
    return hdr


def _write(el, path: Path) -> None:
    path.write_bytes(etree.tostring(el, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def make_package(base: Path, p: Producer, objid: str = "uuid-5b1c") -> Path:
    """A delivery shaped like ``p``'s packages (folder)."""
    cs = p.csip_ns
    nsmap = {None: NS_METS, "csip": cs, "sip": NS_SIP, "xlink": NS_XLINK}
    root = base / objid
    for d in ("metadata/descriptive", "metadata/preservation", "representations/rep1/data",
              "representations/rep1/metadata"):
        (root / d).mkdir(parents=True, exist_ok=True)
    data = root / "representations/rep1/data" / p.data_name
    data.write_text("Beslut i ärendet.\n", encoding="utf-8")
    (root / "metadata/descriptive/dc.xml").write_bytes(
        f'<metadata xmlns:dc="{DC}"><dc:title>Leverans</dc:title></metadata>'.encode())
    (root / "metadata/preservation/premis.xml").write_bytes(PREMIS)
    if p.documentation:
        (root / "documentation").mkdir()
        (root / "documentation/leverans.txt").write_text("Om leveransen.\n", encoding="utf-8")
    if p.schemas_group:
        (root / "schemas").mkdir()
        for s in ("mets.xsd", "xlink.xsd", "DILCISExtensionMETS.xsd", "DILCISExtensionSIPMETS.xsd", "premis-v3-0.xsd"):
            shutil.copyfile(SCHEMA_DIR / s, root / "schemas" / s)

    rep = etree.Element(f"{M}mets", nsmap=nsmap, OBJID="rep1", TYPE=p.mets_type, PROFILE=p.rep_profile)
    if p.rep_cit:
        rep.set(f"{{{cs}}}CONTENTINFORMATIONTYPE", p.cit)
    _header(p, rep, cs, root=False)
    fs = _el(rep, "fileSec", ID="rep-fs")
    grp = _el(fs, "fileGrp", ID="rep-grp", USE="Representations/rep1/data")
    href = "data/" + (p.data_name.replace(" ", "+") if p.href_plus else p.data_name.replace(" ", "%20"))
    _loc(_el(grp, "file", ID="rep-f1", **_attrs(p, data)), href)
    sm = _el(rep, "structMap", ID="rep-sm", TYPE="PHYSICAL", LABEL=p.structmap_label)
    main = _el(sm, "div", ID="rep-main", LABEL="rep1")
    _el(main, "div", ID="rep-md", LABEL="Metadata")
    _el(_el(main, "div", ID="rep-data", LABEL="Data"), "fptr", FILEID="rep-grp")
    _write(rep, root / "representations/rep1/METS.xml")

    mets = etree.Element(f"{M}mets", nsmap=nsmap, OBJID=objid, TYPE=p.mets_type, LABEL="Leverans",
                         PROFILE=p.profile)
    mets.set(f"{{{cs}}}CONTENTINFORMATIONTYPE", p.cit)
    hdr = _header(p, mets, cs, root=True)
    _el(hdr, "altRecordID", "SA-2024-1", TYPE="SUBMISSIONAGREEMENT")
    dmd = _el(mets, "dmdSec", ID="dmd-1", CREATED="2024-03-01T10:00:00Z", STATUS="CURRENT")
    ref = _loc(dmd, "metadata/descriptive/dc.xml", tag="mdRef")
    ref.set("MDTYPE", "DC")
    for k, val in _attrs(p, root / "metadata/descriptive/dc.xml").items():
        ref.set(k, val)
    amd = _el(mets, "amdSec", ID="amd-1")
    dp = _el(amd, "digiprovMD", ID="dp-1", STATUS="CURRENT")
    ref = _loc(dp, "metadata/preservation/premis.xml", tag="mdRef")
    ref.set("MDTYPE", "PREMIS")
    for k, val in _attrs(p, root / "metadata/preservation/premis.xml").items():
        ref.set(k, val)
    fs = _el(mets, "fileSec", ID="fs")
    if p.documentation:
        g = _el(fs, "fileGrp", ID="grp-doc", USE="Documentation")
        _loc(_el(g, "file", ID="f-doc", **_attrs(p, root / "documentation/leverans.txt")), "documentation/leverans.txt")
    if p.schemas_group:
        g = _el(fs, "fileGrp", ID="grp-sch", USE="Schemas")
        for i, s in enumerate(sorted((root / "schemas").iterdir())):
            _loc(_el(g, "file", ID=f"f-sch-{i}", **_attrs(p, s)), f"schemas/{s.name}")
    g = _el(fs, "fileGrp", ID="grp-rep1", USE="Representations/rep1")
    g.set(f"{{{cs}}}CONTENTINFORMATIONTYPE", p.cit)
    _loc(_el(g, "file", ID="f-rep1", **_attrs(p, root / "representations/rep1/METS.xml")),
         "representations/rep1/METS.xml")
    sm = _el(mets, "structMap", ID="sm", TYPE="PHYSICAL", LABEL=p.structmap_label)
    main = _el(sm, "div", ID="main", LABEL=objid if p.main_label_objid else "Leverans")
    _el(main, "div", ID="div-md", LABEL="Metadata", ADMID="dp-1", DMDID="dmd-1")
    if p.documentation:
        _el(_el(main, "div", ID="div-doc", LABEL="Documentation"), "fptr", FILEID="grp-doc")
    if p.schemas_group:
        _el(_el(main, "div", ID="div-sch", LABEL="Schemas"), "fptr", FILEID="grp-sch")
    rdiv = _el(main, "div", ID="div-rep1", LABEL="Representations/rep1")
    mptr = _loc(rdiv, "representations/rep1/METS.xml", tag="mptr")
    mptr.set(f"{XL}title", "grp-rep1")
    if p.extra_structmaps:
        logical = _el(mets, "structMap", ID="sm-logical", TYPE="logical", LABEL="meemoo logical")
        _el(_el(logical, "div", ID="lg-1", LABEL="Leverans"), "div", ID="lg-2", LABEL="Beslut")
    _write(mets, root / "METS.xml")
    return root


def make_1x(base: Path) -> Path:
    """The E-ARK 1.x layout (commons-ip 1.x, earkweb): the old profile URL, TYPE="SIP", no csip: attributes."""
    root = base / "old-1x"
    (root / "representations/rep1/data").mkdir(parents=True)
    (root / "representations/rep1/data/a.txt").write_text("x\n", encoding="utf-8")
    mets = etree.Element(f"{M}mets", nsmap={None: NS_METS, "xlink": NS_XLINK}, OBJID="old-1x", TYPE="SIP",
                         PROFILE="http://www.eark-project.com/METS/IP.xml")
    hdr = _el(mets, "metsHdr", CREATEDATE="2017-01-01T00:00:00Z")
    _el(_el(hdr, "agent", ROLE="CREATOR", TYPE="OTHER", OTHERTYPE="SOFTWARE"), "name", "commons-ip")
    fs = _el(mets, "fileSec")
    g = _el(fs, "fileGrp", USE="submission")
    _loc(_el(g, "file", ID="f1", MIMETYPE="text/plain"), "representations/rep1/data/a.txt")
    sm = _el(mets, "structMap", TYPE="physical", LABEL="Common Specification structural map")
    _el(sm, "div", LABEL="old-1x")
    _write(mets, root / "METS.xml")
    return root


def as_tar(folder: Path) -> Path:
    out = folder.with_suffix(".tar")
    with tarfile.open(out, "w") as tar:
        tar.add(folder, arcname=folder.name)
    return out


def as_zip(folder: Path) -> Path:
    out = folder.parent / f"{folder.name}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f"{folder.name}/{f.relative_to(folder).as_posix()}")
    return out


class _StubIdentifier:
    """Format identification that runs without loading fido (fast unit tests; fido runs in one test)."""

    class _I:
        def __init__(self, path):
            suffix = Path(path).suffix.lower()
            self.puid = {".txt": "x-fmt/111", ".xml": "fmt/101", ".xsd": "x-fmt/280", ".tar": "x-fmt/265",
                         ".zip": "x-fmt/263"}.get(suffix, "UNIDENTIFIED")
            self.name = "Plain Text File" if suffix == ".txt" else "Extensible Markup Language"
            self.version = ""
            self.mime = "text/plain" if suffix == ".txt" else "text/xml"
            self.method, self.tool = "extension", "stub"

        @property
        def identified(self):
            return self.puid != "UNIDENTIFIED"

    def identify(self, path):
        return self._I(path)


def prepare(src: Path, out: Path, **kw) -> pr.PrepareResult:
    return pr.prepare_package(src, out, identifier=kw.pop("identifier", _StubIdentifier()), **kw)


def _xmlschema_errors(folder: Path) -> list[str]:
    local = {"http://www.w3.org/1999/xlink": str(SCHEMA_DIR / "xlink.xsd"),
             "http://www.w3.org/XML/1998/namespace": str(SCHEMA_DIR / "xml.xsd")}
    mets = xmlschema.XMLSchema([str(SCHEMA_DIR / "mets.xsd"), str(SCHEMA_DIR / "DILCISExtensionMETS.xsd"),
                                str(SCHEMA_DIR / "DILCISExtensionSIPMETS.xsd")], locations=local, allow="local")
    premis = xmlschema.XMLSchema(str(SCHEMA_DIR / "premis-v3-0.xsd"), locations=local, allow="local")
    errors = []
    for f in [*folder.rglob("METS.xml"), *folder.glob("metadata/preservation/*.xml")]:
        root = etree.parse(str(f)).getroot()
        schema = mets if etree.QName(root).namespace == NS_METS else premis
        errors += [f"{f.relative_to(folder)}: {e.reason}" for e in schema.iter_errors(str(f))][:3]
    return errors


# ------------------------------------------------------------------------------------------
# prepare
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Every producer's package, delivered as folder, tar and zip, prepared once."""
    base = tmp_path_factory.mktemp("producers")
    out = []
    for i, p in enumerate(PRODUCERS):
        folder = make_package(base / p.name, p, objid=f"uuid-{i}")
        for kind, src in (("folder", folder), ("tar", as_tar(folder)), ("zip", as_zip(folder))):
            if kind != "folder" and i % 2:
                continue  # every producer once as a folder; archives for every other one
            res = prepare(src, base / "out" / f"{p.name}-{kind}")
            out.append((p, kind, src, res))
    return out


def test_every_producer_is_prepared_into_a_valid_fgs_package(prepared):
    for p, kind, _src, res in prepared:
        assert res.ok, f"{p.name} {kind}: {res.to_text()}"
        rep = v.validate_package(res.package, "fgs")
        assert rep.valid and rep.spec_version == "2.1.0", rep.to_text()
        assert not rep.findings or {f.severity for f in rep.findings} <= {"WARNING", "INFO"}


def test_prepared_packages_pass_xmlschema(prepared):
    for p, _kind, _src, res in prepared:
        assert not _xmlschema_errors(Path(res.package)), (p.name, _xmlschema_errors(Path(res.package)))


def test_prepared_packages_pass_the_reference_validator(prepared):
    paths = [res.package for _p, _k, _s, res in prepared]
    assert not real_findings(paths)


def test_every_change_is_a_premis_event_with_requirement_and_original(prepared):
    for p, _kind, src, res in prepared:
        premis = etree.parse(str(Path(res.package) / pr.PREMIS_REL)).getroot()
        ns = {"p": NS_PREMIS}
        details = [d.text for d in premis.iterfind(".//p:event/p:eventDetailInformation/p:eventDetail", ns)]
        notes = [d.text for d in premis.iterfind(".//p:eventOutcomeDetailNote", ns)]
        assert res.changes, p.name
        for c in res.changes:
            assert any(d.startswith(f"{c.requirement}: {c.what}") for d in details), (p.name, c)
        assert any(repr(c.original) in " ".join(notes) for c in res.changes if c.original)
        # every file has its format identification
        objects = premis.findall("p:object", ns)
        assert objects and all(o.find(".//p:formatRegistryKey", ns) is not None for o in objects
                               if not o.findtext(".//p:objectIdentifierValue", "", ns).endswith(".txt.bin"))
        # the original delivery is kept unchanged inside the package
        kept = list((Path(res.package) / pr.ORIGINAL_DIR).iterdir())
        assert len(kept) == 1
        if Path(src).is_file():
            assert kept[0].read_bytes() == Path(src).read_bytes()
        assert hashlib.sha256(kept[0].read_bytes()).hexdigest() == res.original_sha256


def test_changes_are_the_producers_habits(prepared):
    by = {p.name: {c.requirement for c in res.changes} for p, k, _s, res in prepared if k == "folder"}
    assert {"ARK1", "CSIP4", "ARK4", "CSIP113"} <= by["commons-ip-2"]  # MD5, rep CIT, VAT orgnr, schemas
    assert {"SIP2", "CSIP2", "CSIP4", "SIP3"} <= by["sip-2.2.0"]  # 2.2.0 URL and terms
    assert {"SIP2", "CSIP79", "CSIP10"} <= by["roda-in"]  # CSIP URL, '+' href, rep agents
    assert {"CSIP9", "SIP2"} <= by["meemoo-2.2"]  # namespace case, 2.2.0 URL
    assert {"CSIP70", "ARK1", "CSIP60"} <= by["eark-2.0.4"]  # CREATED, SHA-1, documentation group


def test_meemoo_extra_structmaps_are_kept_beside_the_mets(prepared):
    res = next(r for p, k, _s, r in prepared if p.name == "meemoo-2.2")
    pkg = Path(res.package)
    assert [m.get("LABEL") for m in etree.parse(str(pkg / "METS.xml")).iter(f"{M}structMap")] == ["CSIP"]
    kept = etree.parse(str(pkg / "documentation/arkivflode-additional-structmaps.xml")).getroot()
    assert [m.get("LABEL") for m in kept.iter(f"{M}structMap")] == ["meemoo logical"]
    assert any(c.requirement == "CSIP80" and "meemoo logical" in c.original for c in res.changes)


def test_sip220_terms_are_mapped_by_the_official_lists(prepared):
    res = next(r for p, k, _s, r in prepared if p.name == "sip-2.2.0")
    mets = etree.parse(str(Path(res.package) / "METS.xml")).getroot()
    assert mets.get("TYPE") == "OTHER" and mets.get(f"{{{NS_CSIP}}}OTHERTYPE") == "Musical Scores - Print"
    assert mets.get(f"{{{NS_CSIP}}}CONTENTINFORMATIONTYPE") == "OTHER"
    assert mets.get(f"{{{NS_CSIP}}}OTHERCONTENTINFORMATIONTYPE") == "citserms_v3_0"
    assert mets.find(f"{M}metsHdr").get("RECORDSTATUS") == "REPLEACEMENT"  # the 2.1.0 list's own spelling


def test_a_valid_fgs_delivery_is_prepared_with_only_our_own_additions(tmp_path):
    res = prepare(make_package(tmp_path, Producer()), tmp_path / "out")
    assert res.ok, res.to_text()
    assert {c.requirement for c in res.changes} <= {"SIP2", "CSIP6"}, res.to_text()


# ------------------------------------------------------------------------------------------
# Refusals: damage is never repaired
# ------------------------------------------------------------------------------------------
def _break(kind: str, pkg: Path) -> None:
    rep_mets = pkg / "representations/rep1/METS.xml"
    if kind == "missing file":
        next((pkg / "representations/rep1/data").iterdir()).unlink()
    elif kind == "checksum mismatch":
        f = next((pkg / "representations/rep1/data").iterdir())
        f.write_bytes(f.read_bytes().replace(b"Beslut", b"Beslot"))
    elif kind == "not well-formed":
        rep_mets.write_bytes(rep_mets.read_bytes()[:-40])
    elif kind == "outside reference":
        tree = etree.parse(str(rep_mets))
        tree.find(f".//{M}FLocat").set(f"{XL}href", "../../../etc/passwd")
        _write(tree.getroot(), rep_mets)


@pytest.mark.parametrize("kind,rule", [("missing file", "CSIP79"), ("checksum mismatch", "CSIP71"),
                                       ("not well-formed", "METS-XML"), ("outside reference", "CSIP79")])
@pytest.mark.parametrize("producer", [CommonsIP2(), Sip220()], ids=lambda p: p.name)
def test_broken_delivery_is_refused_for_its_defect(tmp_path, kind, rule, producer):
    pkg = make_package(tmp_path, producer)
    _break(kind, pkg)
    before = {p: p.read_bytes() for p in pkg.rglob("*") if p.is_file()}
    res = prepare(pkg, tmp_path / "out")
    assert not res.ok, res.to_text()
    assert rule in {f.requirement for f in res.findings}, res.to_text()
    assert not list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else True
    assert {p: p.read_bytes() for p in pkg.rglob("*") if p.is_file()} == before  # the delivery is untouched


def test_missing_organisationsnummer_is_not_invented(tmp_path):
    pkg = make_package(tmp_path, Producer())
    tree = etree.parse(str(pkg / "METS.xml"))
    for n in tree.iter(f"{M}note"):
        if n.get(f"{{{NS_CSIP}}}NOTETYPE") == "IDENTIFICATIONCODE":
            n.getparent().remove(n)
    _write(tree.getroot(), pkg / "METS.xml")
    res = prepare(pkg, tmp_path / "out")
    assert not res.ok and "ARK4" in {f.requirement for f in res.findings}, res.to_text()


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------
def test_cli_exit_codes(tmp_path, capsys):
    from transforms.cli import main

    pkg = make_package(tmp_path, CommonsIP2())
    assert main(["prepare", str(pkg), "--out", str(tmp_path / "out"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["outcome"] == "prepared" and out["delivered_version"] == "2.1.0"
    _break("checksum mismatch", pkg)
    assert main(["prepare", str(pkg), "--out", str(tmp_path / "out2")]) == 1
    assert "CSIP71" in capsys.readouterr().out
    assert main(["prepare", str(pkg)]) == 2
    assert main(["prepare", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert main(["prepare", "--bogus"]) == 2


def test_prepare_with_real_format_identification(tmp_path):
    res = pr.prepare_package(as_tar(make_package(tmp_path, Sip220())), tmp_path / "out", as_tar=True)
    assert res.ok, res.to_text()
    by_path = {f["path"]: f for f in res.formats}
    assert by_path["representations/rep1/data/ärende 1.txt"]["puid"] == "x-fmt/111"
    assert tarfile.is_tarfile(res.package)
    assert v.validate_package(res.package, "fgs").valid


def test_windows_separators_checksum_spellings_and_rep_documentation_are_derived(tmp_path):
    pkg = make_package(tmp_path, Producer())
    rep_mets = pkg / "representations/rep1/METS.xml"
    tree = etree.parse(str(rep_mets))
    loc = tree.find(f".//{M}FLocat")
    loc.set(f"{XL}href", loc.get(f"{XL}href").replace("/", "\\"))
    f = tree.find(f".//{M}file")
    f.set("CHECKSUMTYPE", "SHA256")  # not the METS list's spelling, the same algorithm
    _write(tree.getroot(), rep_mets)
    (pkg / "representations/rep1/documentation").mkdir()
    (pkg / "representations/rep1/documentation/om.txt").write_text("Om representationen.\n", encoding="utf-8")
    _refresh_root_entry(pkg)
    res = prepare(pkg, tmp_path / "out")
    assert res.ok, res.to_text()
    by = {c.requirement: c for c in res.changes}
    assert "CSIP79" in by and "\\" in by["CSIP79"].original
    assert by["ARK1"].original.startswith("SHA256:")
    rep = etree.parse(str(Path(res.package) / "representations/rep1/METS.xml"))
    assert rep.find(f".//{M}fileGrp[@USE='Documentation']") is not None


def _refresh_root_entry(pkg: Path) -> None:
    """The package METS lists the representation METS with its current size and checksum."""
    tree = etree.parse(str(pkg / "METS.xml"))
    data = (pkg / "representations/rep1/METS.xml").read_bytes()
    for f in tree.iter(f"{M}file"):
        if f.find(f"{M}FLocat").get(f"{XL}href") == "representations/rep1/METS.xml":
            f.set("SIZE", str(len(data)))
            f.set("CHECKSUM", hashlib.sha256(data).hexdigest())
            f.set("CHECKSUMTYPE", "SHA-256")
    _write(tree.getroot(), pkg / "METS.xml")


def test_a_representation_without_its_own_mets_gets_one_from_the_package_mets(tmp_path):
    """Some tools list a representation's files in the package METS only (CSIPSTR12 is a SHOULD)."""
    pkg = make_package(tmp_path, Producer())
    rep = etree.parse(str(pkg / "representations/rep1/METS.xml"))
    (pkg / "representations/rep1/METS.xml").unlink()
    tree = etree.parse(str(pkg / "METS.xml"))
    grp = tree.find(f".//{M}fileGrp[@USE='Representations/rep1']")
    for f in list(grp):
        grp.remove(f)
    for f in rep.iter(f"{M}file"):
        loc = f.find(f"{M}FLocat")
        loc.set(f"{XL}href", "representations/rep1/" + loc.get(f"{XL}href"))
        grp.append(f)
    div = tree.find(f".//{M}div[@LABEL='Representations/rep1']")
    div.remove(div.find(f"{M}mptr"))
    etree.SubElement(div, f"{M}fptr", FILEID="grp-rep1")
    _write(tree.getroot(), pkg / "METS.xml")
    assert "ARK6" in v.validate_package(pkg, "fgs").requirements_failed("ERROR")
    res = prepare(pkg, tmp_path / "out")
    assert res.ok, res.to_text()
    assert any(c.requirement == "ARK6" for c in res.changes)
    made = etree.parse(str(Path(res.package) / "representations/rep1/METS.xml"))
    hrefs = [loc.get(f"{XL}href") for loc in made.iter(f"{M}FLocat")]
    assert hrefs == ["data/%C3%A4rende%201.txt"]
    assert not real_findings([res.package])
    assert not _xmlschema_errors(Path(res.package))


def test_created_comes_from_the_archive_members_time(tmp_path):
    folder = make_package(tmp_path, Eark204())  # writes no CREATED
    tar = tmp_path / "delivery.tar"
    with tarfile.open(tar, "w") as t:
        for f in sorted(folder.rglob("*")):
            info = t.gettarinfo(str(f), arcname=f"{folder.name}/{f.relative_to(folder).as_posix()}")
            info.mtime = 1_600_000_000  # 2020-09-13T12:26:40Z
            if f.is_file():
                with f.open("rb") as fh:
                    t.addfile(info, fh)
            else:
                t.addfile(info)
    res = prepare(tar, tmp_path / "out")
    assert res.ok, res.to_text()
    created = [c.new for c in res.changes if c.requirement == "CSIP70"]
    assert created and set(created) == {"2020-09-13T12:26:40Z"}


def test_a_term_in_no_official_list_is_refused_not_rewritten(tmp_path):
    pkg = make_package(tmp_path, Producer())
    tree = etree.parse(str(pkg / "METS.xml"))
    tree.getroot().set("TYPE", "Bananas")
    _write(tree.getroot(), pkg / "METS.xml")
    res = prepare(pkg, tmp_path / "out")
    assert not res.ok and "CSIP2" in {f.requirement for f in res.findings}, res.to_text()


def _bag(folder: Path, lower_case_mets: bool = True) -> Path:
    """Wrap a package the way meemoo delivers: a BagIt bag whose payload is the package, METS files
    named ``mets.xml``."""
    if lower_case_mets:
        for mets in [folder / "METS.xml", *folder.glob("representations/*/METS.xml")]:
            mets.rename(mets.with_name("mets.xml"))
        tree = etree.parse(str(folder / "mets.xml"))
        for loc in tree.iter(f"{M}FLocat", f"{M}mptr"):
            loc.set(f"{XL}href", loc.get(f"{XL}href").replace("METS.xml", "mets.xml"))
        _write(tree.getroot(), folder / "mets.xml")
        data = (folder / "representations/rep1/mets.xml").read_bytes()
        tree = etree.parse(str(folder / "mets.xml"))
        for loc in tree.iter(f"{M}FLocat"):
            if loc.get(f"{XL}href").endswith("rep1/mets.xml"):
                loc.getparent().set("CHECKSUM", hashlib.sha256(data).hexdigest())
                loc.getparent().set("CHECKSUMTYPE", "SHA-256")
        _write(tree.getroot(), folder / "mets.xml")
    bag = folder.parent / f"bag-{folder.name}"
    (bag / "data").mkdir(parents=True)
    for child in folder.iterdir():
        shutil.move(str(child), bag / "data" / child.name)
    (bag / "bagit.txt").write_text("BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n", encoding="utf-8")
    lines = [f"{hashlib.md5(f.read_bytes()).hexdigest()}  {f.relative_to(bag).as_posix()}"
             for f in sorted((bag / "data").rglob("*")) if f.is_file()]
    (bag / "manifest-md5.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return bag


def test_a_bagit_wrapped_package_with_lower_case_mets_names_is_prepared(tmp_path):
    bag = _bag(make_package(tmp_path, Producer()))
    assert not v.validate_package(bag).valid  # no METS.xml at the root
    res = prepare(as_zip(bag), tmp_path / "out")
    assert res.ok, res.to_text()
    reqs = {c.requirement for c in res.changes}
    assert {"CSIPSTR1", "CSIPSTR4", "CSIPSTR12"} <= reqs, res.to_text()
    pkg = Path(res.package)
    assert (pkg / "METS.xml").is_file() and not (pkg / "bagit.txt").exists()
    assert not real_findings([res.package])


def test_a_bag_whose_payload_does_not_match_its_manifest_is_refused(tmp_path):
    bag = _bag(make_package(tmp_path, Producer()))
    doc = bag / "data/documentation/leverans.txt"
    doc.write_text("Ändrad.\n", encoding="utf-8")
    res = prepare(bag, tmp_path / "out")
    assert not res.ok and "BAGIT" in {f.requirement for f in res.findings}, res.to_text()


def test_the_20_representations_group_and_division_become_the_210_form(tmp_path):
    """E-ARK 2.0.x wrote one fileGrp and one division labelled exactly "Representations"."""
    pkg = make_package(tmp_path, Eark204())
    tree = etree.parse(str(pkg / "METS.xml"))
    tree.find(f".//{M}fileGrp[@USE='Representations/rep1']").set("USE", "Representations")
    tree.find(f".//{M}div[@LABEL='Representations/rep1']").set("LABEL", "Representations")
    _write(tree.getroot(), pkg / "METS.xml")
    res = prepare(pkg, tmp_path / "out")
    assert res.ok, res.to_text()
    assert {"CSIP114", "CSIP105"} <= {c.requirement for c in res.changes}
    mets = etree.parse(str(Path(res.package) / "METS.xml"))
    grp = mets.find(f".//{M}fileGrp[@USE='Representations/rep1']")
    div = mets.find(f".//{M}div[@LABEL='Representations/rep1']")
    assert grp is not None and div is not None and mets.find(f".//{M}div[@LABEL='Representations']") is None
    assert div.find(f"{M}mptr").get(f"{XL}title") == grp.get("ID")
    assert grp.get(f"{{{NS_CSIP}}}CONTENTINFORMATIONTYPE") == "citserms_v2_1"
    assert not real_findings([res.package])


def test_archival_cits_value_the_210_vocabulary_and_schema_disagree_on(tmp_path):
    p = CommonsIP2()
    p.cit = "citcarchival_v1_0"  # in the 2.1.0 extension schema, not in its vocabulary
    res = prepare(make_package(tmp_path, p), tmp_path / "out")
    assert res.ok, res.to_text()
    mets = etree.parse(str(Path(res.package) / "METS.xml")).getroot()
    assert mets.get(f"{{{NS_CSIP}}}CONTENTINFORMATIONTYPE") == "OTHER"
    assert mets.get(f"{{{NS_CSIP}}}OTHERCONTENTINFORMATIONTYPE") == "citcarchival_v1_0"
    assert not _xmlschema_errors(Path(res.package))
