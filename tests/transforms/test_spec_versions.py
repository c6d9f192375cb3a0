"""Version-aware validation: a package is judged by the E-ARK version it declares (2.0.4, 2.1.0, 2.2.0).

The packages come from the producer models in ``test_prepare.py`` (commons-ip, the 2.0.4 layout,
SIP 2.2.0, RODA-in, meemoo-like), each written the way that tool writes them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree
from test_prepare import (
    SIP_220,
    CommonsIP2,
    Eark204,
    M,
    Meemoo22,
    Producer,
    RodaIn,
    Sip220,
    _write,
    make_1x,
    make_package,
    prepare,
)

from transforms.validation import validator as v


# ------------------------------------------------------------------------------------------
# Version-aware validation of the deliveries as they are
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("producer,version", [(CommonsIP2(), "2.1.0"), (Eark204(), "2.1.0"), (Sip220(), "2.2.0"),
                                              (RodaIn(), "2.1.0"), (Meemoo22(), "2.2.0")], ids=lambda x: getattr(
                                                  x, "name", x))
def test_delivered_package_is_validated_by_its_declared_version(tmp_path, producer, version):
    pkg = make_package(tmp_path, producer)
    rep = v.validate_package(pkg)
    assert rep.spec_version == version, rep.spec_reason
    assert rep.profile == "sip", rep.spec_reason  # RODA-in's CSIP URL with OAISPACKAGETYPE="SIP" is a SIP
    text = rep.to_text()
    assert f"CSIP+SIP {version}" in text
    assert "METS-XSD" not in rep.requirements_failed("ERROR"), text  # 2.2.0 terms checked by the 2.2.0 schema


def test_sip220_terms_are_valid_in_220_and_not_in_210(tmp_path):
    pkg = make_package(tmp_path, Sip220())
    rep = v.validate_package(pkg)
    assert not {"CSIP2", "CSIP4", "SIP2", "SIP3"} & set(rep.requirements_failed("ERROR")), rep.to_text()
    forced = v.validate_package(pkg, spec_version="2.1.0")
    assert forced.spec_version == "2.1.0" and "forced" in forced.spec_reason
    assert {"CSIP4", "SIP2", "SIP3"} <= set(forced.requirements_failed("ERROR")), forced.to_text()


def test_sip220_levels_apply_only_to_220(tmp_path):
    pkg = make_package(tmp_path, Sip220())
    # CSIP96: a Documentation fileGrp no fptr points at is a MUST in 2.1.0 and a SHOULD in 2.2.0
    tree = etree.parse(str(pkg / "METS.xml"))
    div = tree.find(f".//{M}div[@LABEL='Documentation']")
    div.remove(div.find(f"{M}fptr"))
    _write(tree.getroot(), pkg / "METS.xml")
    sev = {f.requirement: f.severity for f in v.validate_package(pkg).findings}
    assert sev.get("CSIP96") == "WARNING"
    sev = {f.requirement: f.severity for f in v.validate_package(pkg, spec_version="2.1.0").findings}
    assert sev.get("CSIP96") == "ERROR"


def test_204_main_division_label_is_checked_only_in_204(tmp_path):
    pkg = make_package(tmp_path, Producer())
    assert "CSIP86" not in v.validate_package(pkg).requirements_failed()
    assert "CSIP86" in v.validate_package(pkg, spec_version="2.0.4").requirements_failed("ERROR")


def test_lower_case_namespace_is_named_as_such(tmp_path):
    pkg = make_package(tmp_path, Meemoo22())
    rep = v.validate_package(pkg)
    msgs = [f.message for f in rep.findings if f.requirement in ("CSIP9", "CSIP4")]
    assert any("only in case" in m and "dilcis.eu" in m for m in msgs), rep.to_text()
    assert not any(m.startswith("metsHdr/@csip:OAISPACKAGETYPE is missing") for m in msgs)


def test_plus_in_href_names_the_nearest_file_and_why(tmp_path):
    pkg = make_package(tmp_path, RodaIn())
    rep = v.validate_package(pkg)
    msg = next(f.message for f in rep.findings if f.requirement == "CSIP79")
    assert "nearest match" in msg and "'+' is not an encoded space" in msg, msg


def test_csip_package_is_not_reported_as_sip(tmp_path):
    p = Producer()
    p.profile, p.package_type = v.CSIP_PROFILE_URL, "AIP"
    rep = v.validate_package(make_package(tmp_path, p))
    assert rep.profile == "csip" and "no SIP rules applied" in rep.spec_reason
    assert not any(f.requirement.startswith("SIP") for f in rep.findings)
    assert "CSIP+SIP" not in rep.to_text()


def test_1x_package_is_refused_naming_the_version(tmp_path):
    rep = v.validate_package(make_1x(tmp_path))
    assert not rep.valid and rep.declared_version == "1.x" and rep.spec_version == "2.1.0"
    assert "1.x" in rep.to_text().splitlines()[1]  # the "rules applied" line says why
    msg = next(f.message for f in rep.findings if f.requirement == "SPEC-VERSION")
    assert "1.x" in msg and "2.0.4" in msg
    res = prepare(tmp_path / "old-1x", tmp_path / "out")
    assert not res.ok and [f.requirement for f in res.findings] == ["SPEC-VERSION"]
    assert "1.x" in res.to_text()


@pytest.mark.parametrize("url,ptype,version,sip", [
    (v.SIP_PROFILE_URL, "SIP", "2.1.0", True),
    (SIP_220, "SIP", "2.2.0", True),
    ("https://earksip.dilcis.eu/profile/E-ARK-SIP-v2-0-4.xml", "SIP", "2.0.4", True),
    ("https://earkcsip.dilcis.eu/profile/E-ARK-CSIP-v2-2-0.xml", "AIP", "2.2.0", False),
    (v.CSIP_PROFILE_URL, "SIP", "2.1.0", True),
    (v.CSIP_PROFILE_URL, "AIP", "2.1.0", False),
    ("https://earksip.dilcis.eu/profile/E-ARK-SIP-v2-0-2.xml", "SIP", "2.0.4", True),
    ("http://www.eark-project.com/METS/IP.xml", None, "1.x", False),
])
def test_detect_spec(url, ptype, version, sip):
    choice = v.detect_spec(url, ptype)
    assert (choice.version, choice.sip) == (version, sip), choice.reason


def test_requirements_per_version():
    r220 = {r.id: r.level for r in v.list_requirements("sip", "2.2.0")}
    r210 = {r.id: r.level for r in v.list_requirements("sip", "2.1.0")}
    assert r220["SIP12"] == "MUST" and r210["SIP12"] == "MAY"
    assert r220["CSIP100"] == "SHOULD" and r210["CSIP100"] == "MUST"
    assert "CSIP86" in {r.id for r in v.list_requirements("csip", "2.0.4")} and "CSIP86" not in r210
    assert "Musical Scores - Print" in v.vocabulary("CSIPVocabularyContentCategory", "2.2.0")
    assert "Musical Scores - Print" not in v.vocabulary("CSIPVocabularyContentCategory")
    assert "REPLACEMENT" in v.vocabulary("SIPVocabularyRecordStatus", "2.2.0")




VENDOR = Path(__file__).resolve().parents[3] / "shared" / "vendor" / "versions"


@pytest.mark.skipif(not VENDOR.is_dir(), reason="shared/vendor/versions is not beside the project")
def test_versioned_copies_are_byte_identical_to_the_vendored_files():
    base = v.PROFILE_DIR.parent  # transforms/, where profiles/, schemas/ and vocabularies/ live
    pairs = [("profiles/E-ARK-CSIP-v2-0-4.xml", "csip-2.0.4/profile.xml"),
             ("profiles/E-ARK-CSIP-v2-2-0.xml", "csip-2.2.0/profile.xml"),
             ("profiles/E-ARK-SIP-v2-0-4.xml", "sip-2.0.4/profile.xml"),
             ("profiles/E-ARK-SIP-v2-2-0.xml", "sip-2.2.0/profile.xml"),
             ("profiles/E-ARK-CSIP-v2-1-0.xml", "csip-2.1.0/profile.xml"),
             ("schemas/DILCISExtensionMETS-v2-2-0.xsd", "csip-2.2.0/schemas/DILCISExtensionMETS.xsd")]
    for version in ("2.0.4", "2.2.0"):
        tag = version.replace(".", "-")
        for f in (VENDOR / f"csip-{version}" / "vocabularies").glob("*.xml"):
            pairs.append((f"vocabularies/{f.stem}-v{tag}.xml", f"csip-{version}/vocabularies/{f.name}"))
        for f in (VENDOR / f"sip-{version}" / "vocabularies").glob("SIPVocabulary*.xml"):
            pairs.append((f"vocabularies/{f.stem}-v{tag}.xml", f"sip-{version}/vocabularies/{f.name}"))
    assert len(pairs) > 20
    for ours, theirs in pairs:
        assert (base / ours).read_bytes() == (VENDOR / theirs).read_bytes(), ours


def test_mets_namespace_in_the_wrong_case_is_named(tmp_path):
    pkg = make_package(tmp_path, Producer())
    mets = pkg / "METS.xml"
    mets.write_bytes(mets.read_bytes().replace(b"http://www.loc.gov/METS/", b"http://www.loc.gov/mets/"))
    rep = v.validate_package(pkg)
    msg = next(f.message for f in rep.findings if f.requirement == "METS-XML")
    assert "only in case" in msg, msg
