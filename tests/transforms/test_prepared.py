"""Prepared deliveries: valid packages in as they are, safe repairs said, the rest quarantined."""

import datetime as dt
import hashlib
import shutil
import tarfile
from pathlib import Path

import pytest
from lxml import etree

from transforms.config.systems import load_system
from transforms.intake.database import extract_database
from transforms.intake.prepared import take_in
from transforms.packaging.sip import build_packages
from transforms.validation.validator import validate_package

LEX = load_system(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")
M = "{http://www.loc.gov/METS/}"


@pytest.fixture(scope="module")
def package(lex_source, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    staged = extract_database(LEX, lex_source["url"], dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1),
                              root / "staging", env={"ARKIV_LEX_FILES": str(lex_source["files"])})
    rc = min(staged.partitions, key=lambda k: staged.partitions[k].rows["cases"])
    return Path(build_packages(LEX, staged, rc, root / "build")[0].path)


def _rewrite(src: Path, dest: Path, change) -> Path:
    """Copy a package TAR, passing each member through ``change(name, data) -> data | None``."""
    with tarfile.open(src) as tin, tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isfile() else None
            if data is not None:
                data = change(m.name, data)
                if data is None:
                    continue
                m.size = len(data)
                tout.addfile(m, __import__("io").BytesIO(data))
            else:
                tout.addfile(m)
    return dest


def _strip_sizes(name: str, data: bytes) -> bytes:
    if name.endswith("/representations/rep1/METS.xml"):
        root = etree.fromstring(data)
        for f in root.iter(M + "file"):
            f.attrib.pop("SIZE", None)
            f.attrib.pop("CREATED", None)
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return data


def test_valid_repairable_and_invalid_packages(package, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a-valid.tar").write_bytes(package.read_bytes())
    # repairable: the supplier's exporter left SIZE/CREATED out of the representation METS (and
    # listed that METS, as delivered, with its correct checksum in the package METS)
    with tarfile.open(package) as tar:
        rep_name = next(n for n in tar.getnames() if n.endswith("/representations/rep1/METS.xml"))
        new_rep = _strip_sizes(rep_name, tar.extractfile(rep_name).read())

    def coherent(name: str, data: bytes) -> bytes:
        if name == rep_name:
            return new_rep
        if name.endswith("/METS.xml") and name.count("/") == 1:
            root = etree.fromstring(data)
            for f in root.iter(M + "file"):
                if f.find(M + "FLocat").get("{http://www.w3.org/1999/xlink}href") == "representations/rep1/METS.xml":
                    f.set("SIZE", str(len(new_rep)))
                    f.set("CHECKSUM", hashlib.sha256(new_rep).hexdigest())
            return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        return data

    _rewrite(package, inbox / "b-repairable.tar", coherent)
    # not repairable: a document's bytes differ from the checksum the METS lists
    _rewrite(package, inbox / "c-damaged.tar",
             lambda n, d: d + b"tampered" if "/representations/rep1/data/" in n and not n.endswith(".csv") else d)
    assert not validate_package(inbox / "b-repairable.tar", "sip").valid

    intakes = {i.source: i for i in take_in(inbox, tmp_path / "build", tmp_path / "quarantine")}
    # the valid and the repairable package share one OBJID: the second is held back, not merged
    assert intakes["b-repairable.tar"].outcome == "quarantined"
    assert "already delivered" in intakes["b-repairable.tar"].findings[-1]
    shutil.move(tmp_path / "quarantine" / next(p.name for p in (tmp_path / "quarantine").iterdir()
                                               if "b-repairable" in p.name) / "b-repairable.tar", tmp_path / "alone")
    (tmp_path / "alone").rename(tmp_path / "b-repairable.tar")
    inbox2 = tmp_path / "inbox2"
    inbox2.mkdir()
    shutil.move(tmp_path / "b-repairable.tar", inbox2 / "b-repairable.tar")
    intakes.update({i.source: i for i in take_in(inbox2, tmp_path / "build2", tmp_path / "quarantine2")})
    assert intakes["a-valid.tar"].outcome == "valid"
    assert Path(intakes["a-valid.tar"].path).read_bytes() == package.read_bytes()  # ingested as delivered
    assert intakes["a-valid.tar"].records and all(r["reference"] for r in intakes["a-valid.tar"].records)

    repaired = intakes["b-repairable.tar"]
    assert repaired.outcome == "repaired" and any("SIZE added" in r for r in repaired.repairs)
    report = validate_package(repaired.path, "sip")
    assert report.valid, report.to_text()
    with tarfile.open(repaired.path) as tar:
        mets = etree.fromstring(tar.extractfile(f"{repaired.package_id}/METS.xml").read())
    assert mets.find(f"{M}metsHdr/{M}agent[@ROLE='EDITOR']") is not None

    damaged = intakes["c-damaged.tar"]
    assert damaged.outcome == "quarantined" and any(f.startswith("CSIP71") or "checksum" in f.lower()
                                                    for f in damaged.findings), damaged.findings
    assert Path(damaged.report).is_file()
    assert not (inbox / "c-damaged.tar").exists(), "an invalid package leaves the inbox for quarantine"
    assert (inbox / "a-valid.tar").exists(), "valid originals stay until their copy is verified"
