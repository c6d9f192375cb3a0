"""A delivered package is what its leading bytes say, and no byte sequence crashes the validator.

Polyglots (a tar that ends with a zip, a zip inside or after a tar), names that disagree with
the bytes, zips whose local headers contradict their central directory, names that collide on
case-insensitive or normalising file systems, sparse members that expand past the limits and
damaged member data: each must end as an invalid report (or a refusal) naming the member and
the rule, never as a traceback, and never as a valid package without its own root METS.xml.

Besides packages written by Python's tarfile/zipfile, a zip is written here byte by byte the way
streaming tools write one (deflate, data descriptors, no folder entries, zip64 extra fields and
end records), and a sparse tar by GNU tar.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import shutil
import struct
import subprocess
import tarfile
import unicodedata
import zipfile
import zlib
from pathlib import Path

import pytest
from test_validate import build_package

from transforms.access.packages import scan_tar, stream_range, zip_member_chunks
from transforms.common.safe_archive import Limits, UnsafeArchive, container_kind, open_package, sniff
from transforms.validation.validator import validate_package

ROOT = "pkg-1"


@pytest.fixture(scope="module")
def pkg(tmp_path_factory) -> Path:
    root = build_package(tmp_path_factory.mktemp("containers"), ROOT)
    assert validate_package(root, "fgs").valid
    return root


def _files(root: Path) -> list[tuple[str, bytes]]:
    return [(f"{root.name}/{p.relative_to(root).as_posix()}", p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()]


def tar_bytes(members: list[tuple[str, bytes]], fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: list[tuple[str, bytes]], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def streamed_zip(members: list[tuple[str, bytes]], *, comment: bytes = b"", zip64: bool = True) -> bytes:
    """A zip as streaming writers make one: deflate, sizes in a data descriptor after the data
    (flag bit 3), no folder entries, zip64 extra fields and a zip64 end record."""
    out, central = bytearray(), bytearray()
    for name, data in members:
        raw = name.encode("utf-8")
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        packed = comp.compress(data) + comp.flush()
        crc, offset, flags = zlib.crc32(data), len(out), 0x0808  # data descriptor, UTF-8 names
        local_extra = struct.pack("<HHQQ", 1, 16, 0, 0) if zip64 else b""
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, flags, 8, 0, 0x5021, 0,
                           0xFFFFFFFF if zip64 else 0, 0xFFFFFFFF if zip64 else 0, len(raw), len(local_extra))
        out += raw + local_extra + packed
        if zip64:
            out += struct.pack("<4sIQQ", b"PK\x07\x08", crc, len(packed), len(data))
            extra = struct.pack("<HHQQQ", 1, 24, len(data), len(packed), offset)
            sizes = (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
        else:
            out += struct.pack("<4sIII", b"PK\x07\x08", crc, len(packed), len(data))
            extra, sizes = b"", (len(packed), len(data), offset)
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", (3 << 8) | 45, 45, flags, 8, 0, 0x5021,
                               crc, sizes[0], sizes[1], len(raw), len(extra), 0, 0, 0, 0o100644 << 16, sizes[2])
        central += raw + extra
    cd_off, cd_size = len(out), len(central)
    out += central
    if zip64:
        rec_off = len(out)
        out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, len(members), len(members),
                           cd_size, cd_off)
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, rec_off, 1)
        out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, len(comment))
    else:
        out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), cd_size, cd_off,
                           len(comment))
    return bytes(out + comment)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _package_finding(report) -> str:
    return " ".join(f.message for f in report.findings if f.requirement == "PACKAGE")


def _never_valid_without_mets(path: Path) -> None:
    report = validate_package(path)
    assert not report.valid, report.to_text()


# -- sniffing ----------------------------------------------------------------------------------

def test_sniff_names_every_container_by_its_first_bytes(pkg, tmp_path):
    members = _files(pkg)
    assert sniff(tar_bytes(members)) == "tar"
    assert sniff(tar_bytes(members, tarfile.GNU_FORMAT)) == "tar"
    assert sniff(tar_bytes(members, tarfile.USTAR_FORMAT)) == "tar"
    assert sniff(zip_bytes(members)) == "zip"
    assert sniff(gzip.compress(tar_bytes(members))) == "gzip"
    assert sniff(lzma.compress(tar_bytes(members))) == "xz"
    assert sniff(b"BZh91AY&SY") == "bzip2"
    assert sniff(b"\x28\xb5\x2f\xfd" + bytes(20)) == "zstd"
    assert sniff(b"PK\x05\x06" + bytes(18)) == "zip"
    assert sniff(bytes(1024)) == "unknown"  # zero blocks alone are no tar header
    assert sniff(b"%PDF-1.7" + bytes(600)) == "unknown"


# -- formats other tools write -------------------------------------------------------------------

@pytest.mark.parametrize("zip64", [True, False])
def test_a_zip_written_like_streaming_tools_is_valid(pkg, tmp_path, zip64):
    path = _write(tmp_path / f"{ROOT}.zip", streamed_zip(_files(pkg), comment=b"made elsewhere", zip64=zip64))
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None and not any(n.endswith("/") for n in zf.namelist())
    report = validate_package(path, "fgs")
    assert report.valid, report.to_text()


def test_a_tar_padded_with_zero_blocks_is_valid(pkg, tmp_path):
    path = _write(tmp_path / f"{ROOT}.tar", tar_bytes(_files(pkg)) + bytes(20 * 512))
    assert validate_package(path, "fgs").valid


# -- polyglots -----------------------------------------------------------------------------------

def test_a_tar_that_ends_with_a_zip_of_a_valid_package_is_refused(pkg, tmp_path):
    outer = tar_bytes([("other/readme.txt", b"nothing to see\n")])
    inner = zip_bytes(_files(pkg))
    assert zipfile.is_zipfile(io.BytesIO(outer + inner))  # what the old opener asked, and believed
    for name in ("delivery.tar", "delivery.zip", "delivery"):
        path = _write(tmp_path / name, outer + inner)
        report = validate_package(path)
        assert not report.valid
        assert "PACKAGE" in {f.requirement for f in report.findings}
    assert "data after the tar's end" in _package_finding(validate_package(tmp_path / "delivery.tar"))
    assert "the name says a zip archive, the bytes are a tar archive" in _package_finding(
        validate_package(tmp_path / "delivery.zip"))


def test_a_zip_inside_a_tar_is_never_read_as_the_package(pkg, tmp_path):
    path = _write(tmp_path / "wrapped.tar", tar_bytes([("wrapped/pkg-1.zip", zip_bytes(_files(pkg)))]))
    report = validate_package(path)
    assert not report.valid
    assert "CSIPSTR4" in {f.requirement for f in report.findings}  # no METS.xml at the root


def test_a_zip_followed_by_a_tar_is_refused(pkg, tmp_path):
    data = zip_bytes(_files(pkg)) + tar_bytes([("x/y.txt", b"y")])
    report = validate_package(_write(tmp_path / f"{ROOT}.zip", data))
    assert not report.valid and "end record is not at its end" in _package_finding(report)


def test_a_zip_after_other_bytes_is_refused(pkg, tmp_path):
    report = validate_package(_write(tmp_path / f"{ROOT}.zip", b"MZ" + bytes(510) + zip_bytes(_files(pkg))))
    assert not report.valid and "the name says a zip archive" in _package_finding(report)


def test_a_zip_with_a_second_archive_between_its_entries_and_directory_is_refused(pkg, tmp_path):
    good = zip_bytes(_files(pkg))
    with zipfile.ZipFile(io.BytesIO(good)) as zf:
        cd = zf.start_dir
    # Hide bytes before the central directory and shift its offsets so that zipfile still reads it.
    hidden = b"HIDDEN" * 10
    data = bytearray(good[:cd] + hidden + good[cd:])
    eocd = data.rfind(b"PK\x05\x06")
    struct.pack_into("<I", data, eocd + 16, cd + len(hidden))
    report = validate_package(_write(tmp_path / f"{ROOT}.zip", bytes(data)))
    assert not report.valid and "between the last zip member and the central directory" in _package_finding(report)


# -- names and bytes must agree ---------------------------------------------------------------

def test_a_tar_name_over_gzip_bytes_is_refused_naming_both(pkg, tmp_path):
    path = _write(tmp_path / f"{ROOT}.tar", gzip.compress(tar_bytes(_files(pkg))))
    msg = _package_finding(validate_package(path))
    assert "the name says a tar archive, the bytes are gzip-compressed data" in msg


def test_a_zip_name_over_tar_bytes_is_refused_naming_both(pkg, tmp_path):
    msg = _package_finding(validate_package(_write(tmp_path / f"{ROOT}.zip", tar_bytes(_files(pkg)))))
    assert "the name says a zip archive, the bytes are a tar archive" in msg


def test_compressed_tars_are_read_by_the_validator_and_refused_where_only_plain_ones_are_stored(pkg, tmp_path):
    gz = _write(tmp_path / f"{ROOT}.tar.gz", gzip.compress(tar_bytes(_files(pkg))))
    xz = _write(tmp_path / f"{ROOT}.tar.xz", lzma.compress(tar_bytes(_files(pkg))))
    for path in (gz, xz):
        assert validate_package(path, "fgs").valid
        refused = validate_package(path, "fgs", compressed=False)
        assert not refused.valid
        assert "send the package as an uncompressed .tar or as a .zip" in _package_finding(refused)
    zst = _write(tmp_path / f"{ROOT}.tar.zst", b"\x28\xb5\x2f\xfd" + bytes(100))
    assert "zstd-compressed data is not accepted" in _package_finding(validate_package(zst))


def test_compressed_data_that_is_not_a_tar_is_refused(pkg, tmp_path):
    path = _write(tmp_path / f"{ROOT}.tar.gz", gzip.compress(zip_bytes(_files(pkg))))
    report = validate_package(path)
    assert not report.valid and "gzip-compressed data is not a tar archive" in _package_finding(report)


def test_a_gzip_tar_followed_by_garbage_is_refused(pkg, tmp_path):
    path = _write(tmp_path / f"{ROOT}.tar.gz", gzip.compress(tar_bytes(_files(pkg))) + b"garbage after")
    assert not validate_package(path).valid


# -- zip headers ------------------------------------------------------------------------------------

def _local_header_offset(data: bytes, name: str) -> int:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.getinfo(name).header_offset


def test_a_local_header_whose_name_differs_from_the_central_directory_is_refused(pkg, tmp_path):
    data = bytearray(zip_bytes(_files(pkg)))
    off = _local_header_offset(bytes(data), f"{ROOT}/METS.xml")
    name_at = off + 30
    assert data[name_at:name_at + len(ROOT) + 9] == f"{ROOT}/METS.xml".encode()
    data[name_at + len(ROOT) + 1:name_at + len(ROOT) + 9] = b"EVIL.xml"
    report = validate_package(_write(tmp_path / f"{ROOT}.zip", bytes(data)))
    assert not report.valid and "local header's name differs" in _package_finding(report)


def test_a_local_header_whose_method_or_size_differs_is_refused(pkg, tmp_path):
    good = zip_bytes(_files(pkg))
    off = _local_header_offset(good, f"{ROOT}/METS.xml")
    method = bytearray(good)
    struct.pack_into("<H", method, off + 8, 0)
    assert "compression method differs" in _package_finding(
        validate_package(_write(tmp_path / "m.zip", bytes(method))))
    size = bytearray(good)
    struct.pack_into("<I", size, off + 18, struct.unpack_from("<I", good, off + 18)[0] + 1)
    assert "compressed size differs" in _package_finding(validate_package(_write(tmp_path / "s.zip", bytes(size))))


def test_an_unsupported_compression_method_is_refused(pkg, tmp_path):
    data = bytearray(zip_bytes(_files(pkg)))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info, pos = zf.getinfo(f"{ROOT}/METS.xml"), zf.start_dir
    struct.pack_into("<H", data, info.header_offset + 8, 99)  # AES, as WinZip writes it
    while True:  # the central entry of the same member
        n = struct.unpack_from("<H", data, pos + 28)[0]
        if bytes(data[pos + 46:pos + 46 + n]) == f"{ROOT}/METS.xml".encode():
            struct.pack_into("<H", data, pos + 10, 99)
            break
        pos += 46 + n + struct.unpack_from("<H", data, pos + 30)[0] + struct.unpack_from("<H", data, pos + 32)[0]
    report = validate_package(_write(tmp_path / f"{ROOT}.zip", bytes(data)))
    assert not report.valid and "unsupported compression method" in _package_finding(report)


def test_an_empty_zip_is_an_invalid_package(tmp_path):
    path = _write(tmp_path / "empty.zip", zip_bytes([]))
    assert path.read_bytes()[:4] == b"PK\x05\x06"
    report = validate_package(path)
    assert not report.valid and "CSIPSTR4" in {f.requirement for f in report.findings}


# -- damaged member data: a finding naming the member, never a traceback -------------------------

def test_a_bad_crc_is_a_finding_naming_the_member(pkg, tmp_path):
    members = _files(pkg)
    data = bytearray(zip_bytes(members, zipfile.ZIP_STORED))
    doc = f"{ROOT}/representations/rep1/data/doc.txt"
    off = _local_header_offset(bytes(data), doc)
    start = off + 30 + len(doc)
    data[start] ^= 0x01  # one flipped bit in a stored document: only the CRC can tell
    report = validate_package(_write(tmp_path / f"{ROOT}.zip", bytes(data)), "fgs")
    assert not report.valid
    text = report.to_text()
    assert "representations/rep1/data/doc.txt" in text and "bad CRC-32" in text


def test_corrupt_deflate_data_is_a_finding(pkg, tmp_path):
    members = _files(pkg)
    data = bytearray(zip_bytes(members))
    off = _local_header_offset(bytes(data), f"{ROOT}/METS.xml")
    start = off + 30 + len(f"{ROOT}/METS.xml")
    for i in range(start + 2, start + 40):
        data[i] ^= 0x5A
    report = validate_package(_write(tmp_path / f"{ROOT}.zip", bytes(data)))
    assert not report.valid


@pytest.mark.parametrize("cut", [100, 700, 3000, 0, 1, 511, 512, 1023])
def test_a_truncated_tar_is_invalid(pkg, tmp_path, cut):
    data = tar_bytes(_files(pkg))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        tf.getmembers()
        end = tf.offset  # where the end-of-archive blocks start
    # a cut inside the first members, or at or just after the end of the last member's data
    at = cut if cut >= 100 else end - 512 + cut if cut else end
    report = validate_package(_write(tmp_path / f"{ROOT}.tar", data[:at]))
    assert not report.valid


def test_a_tar_missing_only_its_record_padding_is_still_whole(pkg, tmp_path):
    data = tar_bytes(_files(pkg))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        tf.getmembers()
        end = tf.offset
    assert validate_package(_write(tmp_path / f"{ROOT}.tar", data[:end + 1024]), "fgs").valid


def test_a_member_name_with_a_newline_cannot_forge_a_report_line(pkg, tmp_path):
    members = [*_files(pkg), (f"{ROOT}/x\nPACKAGE OK 19121212-1212.txt", b"x")]
    report = validate_package(_write(tmp_path / f"{ROOT}.tar", tar_bytes(members)))
    assert not report.valid
    for f in report.findings:
        assert "\n" not in f.message and "\n" not in f.location
        assert "19121212-1212" not in f.message and "19121212-1212" not in f.location


# -- limits and names ----------------------------------------------------------------------------

def test_names_that_differ_only_in_unicode_normalisation_collide(pkg, tmp_path):
    nfc = unicodedata.normalize("NFC", "ärende.txt")
    nfd = unicodedata.normalize("NFD", "ärende.txt")
    assert nfc != nfd
    members = [*_files(pkg), (f"{ROOT}/documentation/{nfc}", b"a"), (f"{ROOT}/documentation/{nfd}", b"b")]
    for path in (_write(tmp_path / "n.tar", tar_bytes(members)), _write(tmp_path / "n.zip", zip_bytes(members))):
        with pytest.raises(UnsafeArchive, match="names collide"):
            open_package(path)
        assert "names collide" in _package_finding(validate_package(path))


def test_names_that_differ_only_in_case_collide(pkg, tmp_path):
    members = [*_files(pkg), (f"{ROOT}/Documentation/readme.txt", b"other")]
    path = _write(tmp_path / "c.tar", tar_bytes(members))
    with pytest.raises(UnsafeArchive, match="names collide"):
        open_package(path)
    dup = [*_files(pkg), (f"{ROOT}/metS.xml", b"<mets/>")]
    assert "names collide" in _package_finding(validate_package(_write(tmp_path / "d.zip", zip_bytes(dup))))


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar to write a sparse member")
def test_a_sparse_member_is_counted_by_what_it_expands_to(pkg, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(pkg, work / ROOT)
    holes = work / ROOT / "documentation" / "holes.bin"
    with open(holes, "wb") as fh:  # 3 MB on paper, a few bytes of data
        fh.write(b"start")
        fh.seek(3 * 1024 * 1024)
        fh.write(b"end")
    path = tmp_path / f"{ROOT}.tar"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-cf", str(path), "-C", str(work), ROOT], check=True)
    assert path.stat().st_size < 1024 * 1024  # the archive is small; what it would write is not
    with tarfile.open(path) as tf:
        assert tf.getmember(f"{ROOT}/documentation/holes.bin").issparse()
    with pytest.raises(UnsafeArchive, match="member is too large"):
        open_package(path, Limits(max_member_bytes=1024 * 1024))
    with pytest.raises(UnsafeArchive, match="package is too large"):
        open_package(path, Limits(max_total_bytes=2 * 1024 * 1024))
    report = validate_package(path, limits=Limits(max_member_bytes=1024 * 1024))
    assert not report.valid and "member is too large" in _package_finding(report)


def test_a_zip_member_count_and_total_expansion_are_bounded(pkg, tmp_path):
    path = _write(tmp_path / f"{ROOT}.zip", zip_bytes(_files(pkg)))
    with pytest.raises(UnsafeArchive, match="too many members"):
        open_package(path, Limits(max_members=3))
    with pytest.raises(UnsafeArchive, match="package is too large"):
        open_package(path, Limits(max_total_bytes=1000))


# -- stored packages read back by the same opener -------------------------------------------------

def test_a_stored_zip_is_scanned_and_served_like_a_tar(pkg, tmp_path):
    members = _files(pkg)
    tar = _write(tmp_path / f"{ROOT}.tar", tar_bytes(members))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # documents stored, metadata deflated: both kinds of member
        for name, data in members:
            zf.writestr(name, data, zipfile.ZIP_STORED if "/data/" in name else zipfile.ZIP_DEFLATED)
    zp = _write(tmp_path / f"{ROOT}.zip", buf.getvalue())
    with open(tar, "rb") as f:
        from_tar = scan_tar(f)
    with open(zp, "rb") as f:
        from_zip = scan_tar(f)
    assert from_zip.sha256 == hashlib.sha256(zp.read_bytes()).hexdigest() and from_zip.size == zp.stat().st_size
    assert {p: m.sha256 for p, m in from_zip.members.items()} == {p: m.sha256 for p, m in from_tar.members.items()}
    assert from_zip.metadata.keys() == from_tar.metadata.keys() and not from_zip.unverified()
    doc = from_zip.members["representations/rep1/data/doc.txt"]
    assert doc.offset is not None  # stored: served by ranged read, exactly as from a tar
    served = b"".join(stream_range(lambda: open(zp, "rb"), doc.offset, doc.size, doc.sha256))  # noqa: SIM115
    assert served == (pkg / "representations/rep1/data/doc.txt").read_bytes()
    mets = from_zip.members["METS.xml"]
    assert mets.offset is None  # deflated: decompressed through the checked opener
    for opener in (lambda: open(zp, "rb"), lambda: io.BytesIO(zp.read_bytes())):  # noqa: SIM115
        data = b"".join(zip_member_chunks(opener, "METS.xml", mets.size, mets.sha256))
        assert data == (pkg / "METS.xml").read_bytes()
    from transforms.common.errors import StorageError
    with pytest.raises(StorageError, match="no longer matches"):
        b"".join(zip_member_chunks(lambda: open(zp, "rb"), "METS.xml", mets.size, "0" * 64))  # noqa: SIM115


def test_a_stored_file_that_is_neither_tar_nor_zip_is_refused(tmp_path):
    from transforms.common.errors import StorageError
    with pytest.raises(StorageError, match="not a tar or zip"):
        scan_tar(io.BytesIO(gzip.compress(b"x" * 2000)))


def test_container_kind_reads_only_the_leading_bytes(pkg, tmp_path):
    path = _write(tmp_path / "x.bin", tar_bytes(_files(pkg)) + zip_bytes(_files(pkg)))
    assert container_kind(path) == "tar"
