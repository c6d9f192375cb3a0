"""The builder's metadata work after the throughput changes: same bytes, same schemas, fewer passes."""

from __future__ import annotations

import datetime as dt
import hashlib
import tarfile
from pathlib import Path

import pytest
from lxml import etree

from transforms.common.xmltools import NS_ERMS, NS_METS, NS_PREMIS, NS_XLINK, schemas_used
from transforms.config.systems import load_system
from transforms.packaging.sip import build_packages

LEX = load_system(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_the_same_input_gives_byte_identical_packages(staged, tmp_path):
    policy = LEX.formats.without_conversion()
    runs = []
    for name in ("a", "b"):
        built = [p for rc in sorted(staged.partitions)
                 for p in build_packages(LEX, staged, rc, tmp_path / name, policy=policy, now=NOW)]
        runs.append({p.package_id: (Path(p.path).read_bytes(), p.sha256, p.formats) for p in built})
    a, b = runs
    assert a.keys() == b.keys() and a
    for pid in a:
        assert a[pid][0] == b[pid][0], pid
        assert a[pid][1] == b[pid][1] == hashlib.sha256(a[pid][0]).hexdigest()
        assert a[pid][2] == b[pid][2]
        assert all(f["puid"] for f in a[pid][2]), "every file of the Lex corpus is identified"


def test_schemas_used_finds_element_and_attribute_namespaces(staged, tmp_path):
    root = etree.Element(f"{{{NS_METS}}}mets", nsmap={"mets": NS_METS})
    etree.SubElement(root, f"{{{NS_METS}}}file")
    root.append(etree.Comment("a comment has no namespace"))
    root.append(etree.ProcessingInstruction("pi", "x"))
    deep = etree.SubElement(etree.SubElement(root, f"{{{NS_METS}}}fileGrp"), f"{{{NS_METS}}}FLocat")
    deep.set(f"{{{NS_XLINK}}}href", "data/x.pdf")  # only an attribute, and only deep down
    etree.SubElement(deep, f"{{{NS_PREMIS}}}object")
    etree.SubElement(root, "{urn:not:bundled}other")
    assert schemas_used(root) == ["mets.xsd", "premis-v3-0.xsd", "xlink.xsd"]
    assert schemas_used(root.getroottree()) == ["mets.xsd", "premis-v3-0.xsd", "xlink.xsd"]
    assert schemas_used(deep) == ["mets.xsd", "premis-v3-0.xsd", "xlink.xsd"]  # the subtree only
    assert schemas_used(root[0]) == ["mets.xsd"]
    # and on a real package: what every XML member of it uses
    built = build_packages(LEX, staged, sorted(staged.partitions)[0], tmp_path, policy=LEX.formats.without_conversion(),
                           now=NOW)
    with tarfile.open(built[0].path) as tar:
        erms = next(m for m in tar if m.name.endswith("/ERMS.xml"))
        tree = etree.fromstring(tar.extractfile(erms).read())
    assert etree.QName(tree).namespace == NS_ERMS
    assert schemas_used(tree) == ["ERMS.xsd"]


def _outcomes(built) -> list[tuple]:
    return sorted((f["path"], f["representation"], f["puid"], f["outcome"], f.get("derivative") or "")
                  for p in built for f in p.formats)


@pytest.fixture
def started(monkeypatch) -> list:
    """Every LibreOffice converter the build starts, in order."""
    import transforms.packaging.sip as package

    offices: list = []
    real = package.Converter.__enter__

    def counted(self):
        offices.append(self)
        return real(self)

    monkeypatch.setattr(package.Converter, "__enter__", counted)
    return offices


def test_a_large_conversion_batch_split_between_two_offices_gives_the_same_packages(staged, tmp_path, monkeypatch,
                                                                                     started):
    import transforms.packaging.sip as package
    from transforms.validation.validator import validate_package

    rc = max(staged.partitions, key=lambda k: staged.partitions[k].rows["documents"])
    # separate conversion caches: the split build must convert, not take the serial build's PDFs
    serial = build_packages(LEX, staged, rc, tmp_path / "serial", now=NOW, conversion_cache=tmp_path / "cache-serial")
    docx = sum(p.converted for p in serial)
    assert docx >= 2, "the Lex sample has DOCX to convert"
    assert len(started) == 1  # a small batch: one office
    started.clear()
    monkeypatch.setattr(package, "PARALLEL_CONVERSION_MIN", 2)
    split = build_packages(LEX, staged, rc, tmp_path / "split", now=NOW, conversion_cache=tmp_path / "cache-split")
    assert len(started) == 2 and all(c._dir is None for c in started)  # two offices, both cleaned up
    assert sum(c.invocations for c in started) >= 2
    assert [p.package_id for p in split] == [p.package_id for p in serial]
    assert [p.sha256 for p in split] == [p.sha256 for p in serial]  # however many offices converted them
    assert _outcomes(split) == _outcomes(serial)
    assert sum(p.converted for p in split) == docx
    for pkg in split:
        report = validate_package(pkg.path, "fgs")
        assert report.valid, report.to_text()


@pytest.mark.parametrize("processes", ["1", "3"])
def test_conversion_processes_setting(staged, tmp_path, monkeypatch, processes, started):
    import transforms.formats.conversion as conversion
    import transforms.packaging.sip as package

    rc = max(staged.partitions, key=lambda k: staged.partitions[k].rows["documents"])
    monkeypatch.setattr(package, "PARALLEL_CONVERSION_MIN", 2)
    monkeypatch.setenv(conversion.CONVERSION_PROCESSES_ENV, processes)
    built = build_packages(LEX, staged, rc, tmp_path / "out", now=NOW)
    converted = sum(p.converted for p in built)
    assert converted >= 3
    assert len(started) == int(processes)
    assert all(c.invocations for c in started)  # every office converted a share


@pytest.mark.parametrize("bad", ["0", "two", "-1"])
def test_conversion_processes_must_be_a_positive_number(monkeypatch, bad):
    import transforms.formats.conversion as conversion
    from transforms.common.errors import ConfigError

    monkeypatch.setenv(conversion.CONVERSION_PROCESSES_ENV, bad)
    with pytest.raises(ConfigError, match=conversion.CONVERSION_PROCESSES_ENV):
        conversion.conversion_processes()
