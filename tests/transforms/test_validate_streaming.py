"""The validator streams big packages: memory stays flat, and defects deep in big files are still found.

The package is the small valid SIP of test_validate.py, grown here: thousands of files listed in
the representation METS and a PREMIS file of tens of megabytes. Peak memory is measured in a
fresh process (VmHWM from /proc/self/status), so nothing else in the test run counts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from transforms.common.xmltools import NS_METS, NS_PREMIS
from transforms.validation import validator as v

M = f"{{{NS_METS}}}"
PROJECT = Path(__file__).resolve().parents[2]
OBJECT = ('<object xsi:type="intellectualEntity"><objectIdentifier><objectIdentifierType>local'
          "</objectIdentifierType><objectIdentifierValue>obj-{i}</objectIdentifierValue></objectIdentifier></object>")


def _base():
    path = Path(__file__).resolve().parent / "test_validate.py"
    spec = importlib.util.spec_from_file_location("arkiv_validate_base", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BASE = _base()


def _premis(objects: int, *, last: str | None = None) -> bytes:
    """A PREMIS file with one object per line (object i on line i + 2); ``last`` replaces the last one."""
    lines = [f'<premis xmlns="{NS_PREMIS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="3.0">']
    lines += [OBJECT.format(i=i) for i in range(objects - 1)]
    lines.append(last if last is not None else OBJECT.format(i=objects - 1))
    lines.append("</premis>")
    return "\n".join(lines).encode()


def _refresh(file_el, path: Path) -> None:
    for key, value in BASE._file_attrs(path).items():
        file_el.set(key, value)


def _refresh_premis_ref(root: Path) -> None:
    premis = root / "metadata/preservation/premis.xml"
    BASE.mutate(root, lambda m: _refresh(m.find(f".//{M}digiprovMD/{M}mdRef"), premis))


def grow(root: Path, *, files: int, objects: int, premis: bytes | None = None) -> Path:
    """Add ``files`` data files to rep1 (listed in its METS) and make the PREMIS ``objects`` long."""
    data = root / "representations/rep1/data"
    rep_mets = root / "representations/rep1/METS.xml"
    tree = etree.parse(str(rep_mets))
    grp = tree.find(f".//{M}fileGrp[@ID='rep-grp-data']")
    for i in range(files):
        p = data / f"d{i:05}.txt"
        p.write_text(f"Handling {i}\n", encoding="utf-8")
        f = BASE._el(grp, "file", ID=f"rep-file-x{i}")
        _refresh(f, p)
        BASE._flocat(f, f"data/{p.name}")
    tree.write(str(rep_mets), xml_declaration=True, encoding="UTF-8")
    (root / "metadata/preservation/premis.xml").write_bytes(premis if premis is not None else _premis(objects))

    def fix(m):
        _refresh(m.find(f".//{M}digiprovMD/{M}mdRef"), root / "metadata/preservation/premis.xml")
        _refresh(m.find(f".//{M}file[@ID='file-rep1-mets']"), rep_mets)

    BASE.mutate(root, fix)
    return root


def _peak_in_child(package: Path) -> dict:
    code = (
        "import json, sys\n"
        "from transforms.validation.validator import validate_package\n"
        "r = validate_package(sys.argv[1], 'fgs')\n"
        "hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "print(json.dumps({'valid': r.valid, 'kb': hwm, 'files': r.files_checked,"
        " 'errors': [f.message for f in r.errors()][:3]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(package)], cwd=PROJECT, capture_output=True,
                         text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is read from /proc")
def test_peak_memory_does_not_grow_with_the_package(tmp_path):
    small = BASE.build_package(tmp_path / "small")
    big = grow(BASE.build_package(tmp_path / "big"), files=3000, objects=150_000)
    assert (big / "metadata/preservation/premis.xml").stat().st_size > 25_000_000
    a, b = _peak_in_child(small), _peak_in_child(big)
    assert a["valid"] and b["valid"], (a, b)
    assert b["files"] >= a["files"] + 3000
    # Whole trees of the 30 MB PREMIS (600,000 elements) and of the 3,000-file METS took
    # more than 250 MB here; streamed, the big package costs a few MB more than the small one.
    grew_mb = (b["kb"] - a["kb"]) / 1024
    assert grew_mb < 40, f"peak grew by {grew_mb:.0f} MB ({a['kb'] // 1024} -> {b['kb'] // 1024} MB)"


@pytest.fixture(scope="module")
def big_pkg(tmp_path_factory) -> Path:
    return grow(BASE.build_package(tmp_path_factory.mktemp("big")), files=1500, objects=40_000)


def _copy(src: Path, tmp: Path) -> Path:
    import shutil

    dst = tmp / src.name
    shutil.copytree(src, dst)
    return dst


def test_big_package_is_valid_as_folder_and_tar(big_pkg, tmp_path):
    import tarfile

    assert v.validate_package(big_pkg, "fgs").valid
    tar = tmp_path / "big.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(big_pkg, arcname=big_pkg.name)
    report = v.validate_package(tar, "fgs")
    assert report.valid, report.to_text()
    assert report.files_checked == v.validate_package(big_pkg, "fgs").files_checked


def test_schema_error_on_the_last_line_of_a_big_premis(big_pkg, tmp_path):
    root = _copy(big_pkg, tmp_path)
    (root / "metadata/preservation/premis.xml").write_bytes(_premis(40_000, last="<bogus/>"))
    _refresh_premis_ref(root)
    report = v.validate_package(root, "fgs")
    ark3 = [f.message for f in report.findings if f.requirement == "ARK3"]
    assert ark3 and "line 40001:" in ark3[0] and "bogus" in ark3[0], ark3


def test_namespace_error_deep_in_a_big_premis_is_not_well_formed(big_pkg, tmp_path):
    root = _copy(big_pkg, tmp_path)
    (root / "metadata/preservation/premis.xml").write_bytes(_premis(40_000, last=OBJECT.format(i=1).replace(
        "<objectIdentifierType>", '<objectIdentifierType p:x="1">')))
    report = v.validate_package(root, "fgs")
    ark3 = [f.message for f in report.findings if f.requirement == "ARK3"]
    assert ark3 and "not well-formed XML: Namespace prefix p for x on objectIdentifierType is not defined" in ark3[0]


def test_cut_off_big_premis_is_not_well_formed(big_pkg, tmp_path):
    root = _copy(big_pkg, tmp_path)
    p = root / "metadata/preservation/premis.xml"
    p.write_bytes(p.read_bytes()[:-200])
    ark3 = [f.message for f in v.validate_package(root, "fgs").findings if f.requirement == "ARK3"]
    assert ark3 and "not well-formed XML" in ark3[0], ark3


def test_duplicate_xml_id_deep_in_a_big_premis(big_pkg, tmp_path):
    root = _copy(big_pkg, tmp_path)
    dup = OBJECT.format(i=1).replace("<object ", '<object xml:id="twice" ')
    (root / "metadata/preservation/premis.xml").write_bytes(
        _premis(40_000, last=dup).replace(b"<object ", b'<object xml:id="twice" ', 1))
    ark3 = [f.message for f in v.validate_package(root, "fgs").findings if f.requirement == "ARK3"]
    assert ark3 and "ID twice already defined" in ark3[0], ark3


def test_duplicate_premis_xmlid_deep_in_a_big_premis(big_pkg, tmp_path):
    root = _copy(big_pkg, tmp_path)
    twice = OBJECT.format(i=7).replace("<object ", '<object xmlID="o7" ')
    data = _premis(40_000, last=twice).replace(b"<object ", b'<object xmlID="o7" ', 1)
    (root / "metadata/preservation/premis.xml").write_bytes(data)
    _refresh_premis_ref(root)
    ark3 = [f.message for f in v.validate_package(root, "fgs").findings if f.requirement == "ARK3"]
    assert ark3 and "'o7' is not a valid value of the atomic type 'xs:ID'" in ark3[0], ark3


def test_duplicate_file_id_deep_in_a_big_mets(big_pkg, tmp_path):
    root = _copy(big_pkg, tmp_path)
    BASE.mutate(root, lambda m: m.findall(f".//{M}file")[-1].set("ID", "rep-file-x3"),
                "representations/rep1/METS.xml")
    report = v.validate_package(root, "fgs")
    xsd = [f.message for f in report.findings if f.requirement == "METS-XSD"]
    assert any("'rep-file-x3' is not a valid value of the atomic type 'xs:ID'" in m for m in xsd), xsd


def test_checksum_of_the_last_file_in_a_big_mets(big_pkg, tmp_path):
    root = _copy(big_pkg, tmp_path)
    (root / "representations/rep1/data/d01499.txt").write_text("changed\n", encoding="utf-8")
    report = v.validate_package(root, "fgs")
    bad = [f for f in report.errors() if f.requirement in ("CSIP69", "CSIP71")]
    assert {f.requirement for f in bad} == {"CSIP69", "CSIP71"}
    sourceline = next(i for i, line in enumerate(
        (root / "representations/rep1/METS.xml").read_text(encoding="utf-8").splitlines(), 1)
        if 'ID="rep-file-x1499"' in line)
    assert all(f.location == f"representations/rep1/METS.xml:{sourceline} <file ID=rep-file-x1499>" for f in bad)


def test_findings_past_the_cap_are_counted_in_document_order(big_pkg, tmp_path):
    root = _copy(big_pkg, tmp_path)

    def spoil(m):
        for f in m.findall(f".//{M}file"):
            f.set("CHECKSUM", hashlib.sha256(b"other").hexdigest())

    BASE.mutate(root, spoil, "representations/rep1/METS.xml")
    BASE.mutate(root, lambda m: _refresh(m.find(f".//{M}file[@ID='file-rep1-mets']"),
                                         root / "representations/rep1/METS.xml"))
    report = v.validate_package(root, "fgs")
    bad = [f for f in report.findings if f.requirement == "CSIP71"]
    assert len(bad) == v.MAX_FINDINGS_PER_REQUIREMENT
    assert report.suppressed["CSIP71"] == 1501 - v.MAX_FINDINGS_PER_REQUIREMENT
    assert "rep-file-1>" in bad[0].location and "rep-file-x0>" in bad[1].location
    assert "rep-file-x198>" in bad[-1].location
