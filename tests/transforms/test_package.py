import contextlib
import hashlib
import os
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
import xmlschema
from lxml import etree

from transforms.common.errors import ContentError
from transforms.common.xmltools import NS_ERMS, NS_METS, NS_PREMIS, SCHEMA_DIR
from transforms.config.systems import load_system
from transforms.packaging.sip import build_packages, package_id_for, safe_name
from transforms.validation.validator import validate_package

LEX = load_system(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")
NS = {"m": NS_METS, "e": NS_ERMS, "p": NS_PREMIS, "xlink": "http://www.w3.org/1999/xlink"}


@pytest.fixture(scope="module")
def built(staged, tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    return [p for rc in staged.partitions for p in build_packages(LEX, staged, rc, out)]


def _members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_packages_pass_our_validator_with_the_fgs_profile(built):
    assert built
    for pkg in built:
        report = validate_package(pkg.path, "fgs")
        assert report.valid, report.to_text()
        assert not [f for f in report.findings if f.severity == "WARNING"], report.to_text()


def test_every_xml_validates_with_a_second_schema_engine(built):
    # xmlschema is a second, independent XSD engine; it may only read the bundled files.
    local = {"http://www.w3.org/1999/xlink": str(SCHEMA_DIR / "xlink.xsd"),
             "http://www.w3.org/XML/1998/namespace": str(SCHEMA_DIR / "xml.xsd")}
    schemas = {ns: xmlschema.XMLSchema(str(SCHEMA_DIR / name), locations=local, allow="local") for ns, name in
               [(NS_ERMS, "ERMS.xsd"), (NS_PREMIS, "premis-v3-0.xsd")]}
    mets = xmlschema.XMLSchema([str(SCHEMA_DIR / "mets.xsd"), str(SCHEMA_DIR / "DILCISExtensionMETS.xsd"),
                                str(SCHEMA_DIR / "DILCISExtensionSIPMETS.xsd")], locations=local, allow="local")
    checked = 0
    for pkg in built:
        for name, data in _members(pkg.path).items():
            if not name.endswith(".xml") or "/representations/rep1/data/" in name:
                continue
            root = etree.fromstring(data)
            ns = etree.QName(root).namespace
            schema = mets if ns == NS_METS else schemas.get(ns)
            if schema is None:
                continue  # our retention extension: validated by lxml at build time
            schema.validate(data.decode("utf-8"))
            checked += 1
    assert checked >= 4 * len(built)


def test_tar_layout_and_checksums_in_mets(built):
    pkg = built[0]
    members = _members(pkg.path)
    top = {n.split("/", 1)[0] for n in members}
    assert top == {pkg.package_id}
    assert f"{pkg.package_id}/METS.xml" in members
    assert f"{pkg.package_id}/representations/rep1/METS.xml" in members
    assert f"{pkg.package_id}/metadata/descriptive/ERMS.xml" in members
    assert f"{pkg.package_id}/metadata/preservation/premis.xml" in members
    rep = etree.fromstring(members[f"{pkg.package_id}/representations/rep1/METS.xml"])
    files = rep.findall(".//m:file", NS)
    assert len(files) == pkg.document_count
    for f in files:
        href = f.find("m:FLocat", NS).get(f"{{{NS['xlink']}}}href")
        data = members[f"{pkg.package_id}/representations/rep1/{href}"]
        assert f.get("CHECKSUMTYPE") == "SHA-256"
        assert f.get("CHECKSUM") == hashlib.sha256(data).hexdigest()
        assert int(f.get("SIZE")) == len(data)
    root = etree.fromstring(members[f"{pkg.package_id}/METS.xml"])
    assert root.get("OBJID") == pkg.package_id
    assert hashlib.sha256(Path(pkg.path).read_bytes()).hexdigest() == pkg.sha256


def test_documents_are_copied_byte_for_byte_and_originals_named_in_erms(built, staged):
    import pyarrow.parquet as pq

    docs = {d["document_id"]: d for d in pq.read_table(staged.table_files()["documents"]).to_pylist()}
    for pkg in built:
        members = _members(pkg.path)
        erms = etree.fromstring(members[f"{pkg.package_id}/metadata/descriptive/ERMS.xml"])
        for rec in erms.iterfind(".//e:record", NS):
            doc = docs[int(rec.get("systemIdentifier"))]
            appendix = rec.find(".//e:appendix", NS)
            assert appendix.get("name") == doc["file_name"]  # original name, åäö and spaces intact
            inner = appendix.get("path").removeprefix("../../")
            assert members[f"{pkg.package_id}/{inner}"] == Path(doc["source_path"]).read_bytes()
            assert all(ch.isascii() and ch not in " " for ch in inner)


def test_secret_cases_are_marked_confidential_in_erms(built, staged):
    import pyarrow.parquet as pq

    secret = {c["diarienummer"] for c in pq.read_table(staged.table_files()["cases"]).to_pylist() if c["secrecy"]}
    assert secret, "the generated Lex should contain secret cases"
    found = set()
    for pkg in built:
        erms = etree.fromstring(_members(pkg.path)[f"{pkg.package_id}/metadata/descriptive/ERMS.xml"])
        for agg in erms.iterfind("e:aggregations/e:aggregation", NS):
            if agg.find("e:restriction[@restrictionType='confidential']", NS) is not None:
                found.add(agg.findtext("e:objectId", namespaces=NS))
    assert found == secret


def test_package_ids_are_deterministic(staged, tmp_path):
    rc = sorted(staged.partitions)[0]
    a = build_packages(LEX, staged, rc, tmp_path / "a")
    b = build_packages(LEX, staged, rc, tmp_path / "b")
    assert [p.package_id for p in a] == [p.package_id for p in b]
    assert a[0].package_id == package_id_for("lex", rc, "2025", 0, staged.partitions[rc].digest)
    assert package_id_for("lex", rc, "2025", 0, "other-digest") != a[0].package_id


def test_large_partitions_are_split_by_max_records(staged, tmp_path):
    rc = max(staged.partitions, key=lambda k: staged.partitions[k].rows["cases"])
    rows = staged.partitions[rc].rows["cases"]
    small = replace(LEX, max_records=5)
    pkgs = build_packages(small, staged, rc, tmp_path)
    assert len(pkgs) == -(-rows // 5)
    assert sum(p.record_count for p in pkgs) == rows
    assert len({p.package_id for p in pkgs}) == len(pkgs)
    assert not list(tmp_path.glob(".*"))  # no half-written temp files


@contextlib.contextmanager
def _first_document_moved_away(staged):
    """(record class, path) of the first document of the first record class, its file moved away
    for the duration (put back after, whatever the test left at its path is the test's to remove)."""
    import pyarrow.parquet as pq

    rc = sorted(staged.partitions)[0]
    doc = pq.read_table(staged.partitions[rc].files["documents"]).to_pylist()[0]
    src = Path(doc["source_path"])
    moved = src.with_suffix(".moved")
    src.rename(moved)
    try:
        yield rc, src
    finally:
        moved.rename(src)


def test_missing_document_is_a_content_error_and_leaves_nothing(staged, tmp_path, monkeypatch):
    with _first_document_moved_away(staged) as (rc, _src), pytest.raises(ContentError, match="cannot be read"):
        build_packages(LEX, staged, rc, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_document_that_is_not_a_regular_file_is_a_content_error(staged, tmp_path, kind):
    """A FIFO in the document's place would block the build at open(); it is refused before."""
    with _first_document_moved_away(staged) as (rc, src):
        os.mkfifo(src) if kind == "fifo" else src.mkdir()
        try:
            with pytest.raises(ContentError, match="not a regular file"):
                build_packages(LEX, staged, rc, tmp_path / "out")
        finally:
            src.unlink() if kind == "fifo" else src.rmdir()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_safe_names():
    assert safe_name("Beslut om bygglov – Torshälla 3:14.pdf") == "Beslut_om_bygglov_Torshalla_3_14.pdf"
    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("åäö") == "aao"
    assert safe_name("???") == "file"
