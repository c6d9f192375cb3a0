"""Prepared-system intake: each delivery is judged on its own, and a zip is a package like a tar.

One damaged, hostile or unreadable delivery in an inbox is quarantined with the rule it broke;
the good deliveries beside it are still taken in. A zip is stored as a zip and read back (scan,
receipts, index) by the same checked opener; a compressed tar is refused with what to send
instead; what the bytes are decides the stored name.
"""

from __future__ import annotations

import datetime as dt
import errno
import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from lxml import etree

from transforms.access.packages import scan_tar
from transforms.common.safe_archive import container_kind
from transforms.config.systems import load_system
from transforms.intake import prepared
from transforms.intake.database import extract_database
from transforms.intake.prepared import take_in
from transforms.packaging.sip import build_packages

LEX = load_system(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")
M = "{http://www.loc.gov/METS/}"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"


@pytest.fixture(scope="module")
def package(lex_source, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("intake")
    staged = extract_database(LEX, lex_source["url"], dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1),
                              root / "staging", env={"ARKIV_LEX_FILES": str(lex_source["files"])})
    rc = min(staged.partitions, key=lambda k: staged.partitions[k].rows["cases"])
    return Path(build_packages(LEX, staged, rc, root / "build")[0].path)


def _members(tar_path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(tar_path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers() if m.isfile()]


def _zip(members, method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _bad_crc_zip(members) -> bytes:
    data = bytearray(_zip(members, zipfile.ZIP_STORED))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = next(i for i in zf.infolist() if "/representations/" in i.filename and "/data/" in i.filename
                    and i.file_size)
    data[info.header_offset + 30 + len(info.filename.encode())] ^= 0x01
    return bytes(data)


def _quarantined(intake, quarantine: Path) -> dict:
    assert intake.outcome == "quarantined"
    report = json.loads(Path(intake.report).read_text(encoding="utf-8"))
    assert Path(intake.report).is_relative_to(quarantine)
    return report


def test_one_bad_delivery_never_blocks_the_others(package, tmp_path, monkeypatch):
    members = _members(package)
    inbox, build, quarantine = tmp_path / "inbox", tmp_path / "build", tmp_path / "quarantine"
    inbox.mkdir()
    (inbox / "a-bad-crc.zip").write_bytes(_bad_crc_zip(members))
    (inbox / "b-polyglot.tar").write_bytes(_tar([("x/readme.txt", b"hello\n")]) + _zip(members))
    (inbox / "c-gzip-named.tar").write_bytes(gzip.compress(package.read_bytes()))
    (inbox / "d-truncated.tar").write_bytes(package.read_bytes()[: package.stat().st_size // 2])
    (inbox / "e-compressed.tar.gz").write_bytes(gzip.compress(package.read_bytes()))
    (inbox / "f-empty.zip").write_bytes(_zip([]))
    (inbox / "g-hostile\nname.zip").write_bytes(b"PK\x03\x04" + bytes(100))
    (inbox / "h-checker-fails.tar").write_bytes(b"placeholder")  # made to raise below
    (inbox / "z-good.tar").write_bytes(package.read_bytes())

    real = prepared.validate_package

    def planted(path, *args, **kw):
        if Path(path).name == "h-checker-fails.tar":
            raise RecursionError("planted: the checker itself fails on this delivery")
        return real(path, *args, **kw)

    monkeypatch.setattr(prepared, "validate_package", planted)
    intakes = {i.source: i for i in take_in(inbox, build, quarantine)}

    good = intakes.pop("z-good.tar")
    assert good.outcome == "valid" and good.package_id
    assert Path(good.path).read_bytes() == package.read_bytes() and Path(good.path).suffix == ".tar"
    assert sorted(p.name for p in build.iterdir() if not p.name.startswith(".")) == [Path(good.path).name]
    assert len(intakes) == 8
    for source, intake in intakes.items():
        report = _quarantined(intake, quarantine)
        assert not report["valid"], source
        assert intake.findings and all("\n" not in f and "Traceback" not in f for f in intake.findings), source
        assert not (inbox / source).exists()  # moved out of the inbox, into its quarantine folder
    reasons = {s: " ".join(i.findings) for s, i in intakes.items()}
    assert "bad CRC-32" in reasons["a-bad-crc.zip"]
    assert "data after the tar's end" in reasons["b-polyglot.tar"]
    assert "the name says a tar archive, the bytes are gzip-compressed data" in reasons["c-gzip-named.tar"]
    assert "send the package as an uncompressed .tar or as a .zip" in reasons["e-compressed.tar.gz"]
    assert "CSIPSTR4" in reasons["f-empty.zip"]
    assert "RecursionError" in reasons["h-checker-fails.tar"] and "planted" not in reasons["h-checker-fails.tar"]
    assert "g-hostile\\nname.zip" in reasons["g-hostile\nname.zip"]  # the delivery's name, escaped
    assert all(i.report.isprintable() for i in intakes.values())  # report paths too
    assert (Path(intakes["g-hostile\nname.zip"].report).parent / "g-hostile\nname.zip").is_file()  # kept as delivered


def test_a_zip_delivery_is_stored_as_a_zip_and_read_back_like_a_tar(package, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "leverans.zip").write_bytes(_zip(_members(package)))
    [intake] = take_in(inbox, tmp_path / "build", tmp_path / "quarantine")
    assert intake.outcome == "valid", intake.findings
    stored = Path(intake.path)
    assert stored.suffix == ".zip" and container_kind(stored) == "zip"
    assert intake.records and intake.formats
    with open(stored, "rb") as f:
        scan = scan_tar(f)
    with open(package, "rb") as f:
        as_tar = scan_tar(f)
    assert scan.sha256 == intake.sha256 == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert {p: m.sha256 for p, m in scan.members.items()} == {p: m.sha256 for p, m in as_tar.members.items()}
    assert not scan.unverified() and "METS.xml" in scan.metadata


def test_a_repaired_zip_is_stored_as_the_tar_it_now_is(package, tmp_path):
    members = dict(_members(package))
    rep_name = next(n for n in members if n.endswith("/representations/rep1/METS.xml"))
    rep = etree.fromstring(members[rep_name])
    for f in rep.iter(M + "file"):
        f.attrib.pop("SIZE", None)
        f.attrib.pop("CREATED", None)
    members[rep_name] = etree.tostring(rep, xml_declaration=True, encoding="UTF-8")
    root_name = next(n for n in members if n.endswith("/METS.xml") and n.count("/") == 1)
    mets = etree.fromstring(members[root_name])
    for f in mets.iter(M + "file"):
        if f.find(M + "FLocat").get(XLINK_HREF) == "representations/rep1/METS.xml":
            f.set("SIZE", str(len(members[rep_name])))
            f.set("CHECKSUM", hashlib.sha256(members[rep_name]).hexdigest())
    members[root_name] = etree.tostring(mets, xml_declaration=True, encoding="UTF-8")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "repairable.zip").write_bytes(_zip(members.items()))
    [intake] = take_in(inbox, tmp_path / "build", tmp_path / "quarantine")
    assert intake.outcome == "repaired", intake.findings
    assert Path(intake.path).suffix == ".tar" and container_kind(intake.path) == "tar"


def test_a_failure_after_the_copy_leaves_no_package_behind(package, tmp_path, monkeypatch):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.tar").write_bytes(package.read_bytes())

    def planted(self, intake):
        raise ValueError("planted: format identification failed")

    monkeypatch.setattr(prepared._FormatCheck, "check", planted)
    [intake] = take_in(inbox, tmp_path / "build", tmp_path / "quarantine")
    assert intake.outcome == "quarantined" and "ValueError" in " ".join(intake.findings)
    assert not [p for p in (tmp_path / "build").iterdir() if p.suffix in (".tar", ".zip")]


def test_a_full_disk_stops_the_intake_and_keeps_the_delivery(package, tmp_path, monkeypatch):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.tar").write_bytes(package.read_bytes())

    def full(src, dest):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prepared, "copy_hashed", full)
    with pytest.raises(OSError) as caught:
        take_in(inbox, tmp_path / "build", tmp_path / "quarantine")
    assert caught.value.errno == errno.ENOSPC
    assert (inbox / "a.tar").exists() and not (tmp_path / "quarantine").exists()


def test_stored_suffix_follows_the_bytes_and_compressed_tars_are_listed(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("a.tar", "b.zip", "c.tar.gz", "d.tgz", "e.tar.xz", "f.tar.bz2", "g.tar.zst", "h.txt", ".i.tar"):
        (inbox / name).write_bytes(b"x")
    assert [p.name for p in prepared.delivered(inbox)] == ["a.tar", "b.zip", "c.tar.gz", "d.tgz", "e.tar.xz",
                                                          "f.tar.bz2", "g.tar.zst"]
    (tmp_path / "t.zip").write_bytes(_tar([("p/METS.xml", b"<mets/>")]))
    assert prepared._suffix(tmp_path / "t.zip") == ".tar"
    (tmp_path / "g.tar").write_bytes(gzip.compress(b"x"))
    with pytest.raises(Exception, match="not stored as a package"):
        prepared._suffix(tmp_path / "g.tar")
