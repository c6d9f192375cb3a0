"""Tests for transforms.common.tarstream: the same bytes as tarfile's PAX stream, the sources checked."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from pathlib import Path
from typing import BinaryIO

import pytest

from transforms.common.hashing import HashingWriter
from transforms.common.safe_archive import open_package
from transforms.common.tarstream import CHUNK, RECORD, SourceSizeError, TarStream, member_header

#: a recent mtime (November 2026), fixed: a parameter read from the clock differed between
#: pytest-xdist workers that collected in different seconds, and xdist refuses that
NOW = 1_795_706_795
ROOT = "uuid-0f0e6a52-8f7e-5a4e-9d1c-61726b69766c"


class HashingReader:
    """A readable file with ``read`` only (no ``readinto``), hashing what is read: how the builder fed tarfile."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


def _content(size: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(size))


def _with_tarfile(members: list[tuple[str, bytes, int | float]]) -> bytes:
    """The archive as transforms/packaging/sip.py writes it today (tarfile stream, hashing wrappers)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=HashingWriter(raw), mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[arg-type]
        for name, data, mtime in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = mtime
            info.mode = 0o644
            tar.addfile(info, HashingReader(io.BytesIO(data)))  # type: ignore[arg-type]
    return raw.getvalue()


def _opener(how: str):
    if how == "unbuffered":
        return lambda path: open(path, "rb", buffering=0)
    if how == "buffered":
        return lambda path: open(path, "rb")
    return lambda path: HashingReader(open(path, "rb"))  # read() only, no readinto  # noqa: SIM115


def _with_tarstream(members, tmp_path: Path, how: str = "unbuffered") -> bytes:
    """The same members through TarStream.add_file from real files; checks each digest on the way."""
    raw = io.BytesIO()
    src = tmp_path / "source"
    with TarStream(HashingWriter(raw)) as tar:
        for name, data, mtime in members:
            src.write_bytes(data)
            fh = _opener(how)(src)
            try:
                digest, copied = tar.add_file(name, fh, len(data), mtime)
            finally:
                (fh.raw if isinstance(fh, HashingReader) else fh).close()
            assert digest == hashlib.sha256(data).hexdigest()
            assert copied == len(data)
    return raw.getvalue()


def _with_add_bytes(members) -> bytes:
    raw = io.BytesIO()
    with TarStream(raw) as tar:
        for name, data, mtime in members:
            tar.add_bytes(name, data, mtime)
    return raw.getvalue()


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 10 * 1024, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK])
def test_sizes_match_tarfile(tmp_path, size):
    members = [(f"{ROOT}/representations/rep1/data/doc.bin", _content(size), NOW)]
    expected = _with_tarfile(members)
    assert _with_tarstream(members, tmp_path) == expected
    assert _with_add_bytes(members) == expected


@pytest.mark.parametrize("how", ["unbuffered", "buffered", "read-only"])
def test_any_binary_source(tmp_path, how):
    members = [("a.txt", _content(700), NOW), ("b.bin", _content(CHUNK + 513, 7), NOW), ("c", b"", NOW)]
    assert _with_tarstream(members, tmp_path, how) == _with_tarfile(members)


class _Trickle(io.RawIOBase):
    """A source that hands out at most 100 bytes a read, as a pipe or socket may."""

    def __init__(self, data: bytes):
        self._data, self._pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), 100, len(self._data) - self._pos)
        b[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


def test_short_reads_are_filled():
    data = _content(CHUNK + 5000, 3)
    raw = io.BytesIO()
    with TarStream(raw) as tar:
        digest, copied = tar.add_file("x.bin", _Trickle(data), len(data), NOW)
        tar.add_file("y.bin", _Trickle(data[:3000]), 3000, NOW)
    assert (digest, copied) == (hashlib.sha256(data).hexdigest(), len(data))
    assert raw.getvalue() == _with_tarfile([("x.bin", data, NOW), ("y.bin", data[:3000], NOW)])


def _names() -> list[str]:
    names = []
    for length in (99, 100, 101, 155, 156, 255, 300):
        names.append("n" * length)  # one component: no ustar prefix split is possible
        path = f"{ROOT}/representations/rep1/data/"
        names.append(path + "d" * (length - len(path)) if length > len(path) else "p/" + "q" * (length - 2))
    return names + [
        f"{ROOT}/representations/rep1/data/Beslut om bygglov, Åsa Öberg.pdf",
        "ärende/bilaga ä ö å Å Ä Ö.txt",
        "å" * 60,  # 60 characters, 120 UTF-8 bytes
        "ö" * 100,
        "documents/über naïve café – “quoted” €.docx",
        "日本語/文書.txt",
        "emoji 😀/file.txt",
        "name with  spaces /and trailing space ",
        "a" * 99 + "é",
        "é" + "a" * 99,
        "x" * 1000 + "/" + "ä" * 500,
    ]


@pytest.mark.parametrize("name", _names())
def test_names_match_tarfile(tmp_path, name):
    members = [(name, _content(1234), NOW), (name + ".2", b"", 0)]
    expected = _with_tarfile(members)
    assert _with_tarstream(members, tmp_path) == expected
    assert _with_add_bytes(members) == expected


@pytest.mark.parametrize("mtime", [0, 1, NOW, 8**11 - 1, 8**11, -1, -(10**10), 1700000000.5])
def test_mtimes_match_tarfile(tmp_path, mtime):
    members = [("m.txt", b"data", mtime), ("m" * 150 + ".txt", b"more", mtime)]
    expected = _with_tarfile(members)
    assert _with_tarstream(members, tmp_path) == expected
    assert _with_add_bytes(members) == expected


@pytest.mark.parametrize("mode", [0o644, 0o600, 0o755, 0o100644])
def test_modes_match_tarfile(mode):
    info = tarfile.TarInfo("f")
    info.mode = mode
    assert member_header("f", 0, 0, mode) == info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


@pytest.mark.parametrize("size", [8**11 - 1, 8**11, 64 * 2**30])
@pytest.mark.parametrize("name", ["big.iso", "ä/" + "b" * 120])
def test_huge_size_header_matches_tarfile(size, name):
    # 8 GiB and over needs a PAX size record; the header alone is compared (no 8 GiB copy).
    info = tarfile.TarInfo(name)
    info.size, info.mtime = size, NOW
    assert member_header(name, size, NOW) == info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def test_pax_record_lengths_match_tarfile():
    # The record length counts its own digits; cross the 2-, 3- and 4-digit boundaries.
    for length in range(80, 1100):
        name = "p" * length
        info = tarfile.TarInfo(name)
        assert member_header(name, 0, 0) == info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def test_undecodable_name_matches_tarfile():
    # A file name with bytes that are not UTF-8 (surrogate-escaped): tarfile's hdrcharset=BINARY.
    name = b"dir/r\xe9sum\xe9.txt".decode("utf-8", "surrogateescape")
    assert _with_add_bytes([(name, b"x", NOW)]) == _with_tarfile([(name, b"x", NOW)])


@pytest.mark.parametrize("count", list(range(0, 25)) + [100, 4000])
def test_record_padding_at_close(count):
    # Members of 512 data bytes take two blocks: the end lands on every block position of a record.
    members = [(f"{ROOT}/f{i:05d}", _content(512 if i % 3 else 100, i), NOW) for i in range(count)]
    out = _with_add_bytes(members)
    assert out == _with_tarfile(members)
    assert len(out) % RECORD == 0


def test_empty_archive_matches_tarfile():
    raw = io.BytesIO()
    TarStream(raw).close()
    assert raw.getvalue() == _with_tarfile([]) == b"\0" * RECORD


@pytest.mark.parametrize("declared, actual", [(100, 99), (100, 101), (0, 1), (1, 0), (CHUNK - 1, CHUNK),
                                              (CHUNK, CHUNK - 1), (3 * CHUNK, 3 * CHUNK - 1),
                                              (3 * CHUNK, 3 * CHUNK + 1), (2 * CHUNK, CHUNK)])
def test_source_of_the_wrong_size_is_refused(tmp_path, declared, actual):
    src = tmp_path / "changed.bin"
    src.write_bytes(_content(actual))
    raw = io.BytesIO()
    tar = TarStream(raw)
    tar.add_bytes("before.txt", b"fine", NOW)
    with open(src, "rb") as fh, pytest.raises(SourceSizeError) as err:
        tar.add_file("changed.bin", fh, declared, NOW)
    assert err.value.declared == declared
    assert err.value.got == (actual if actual < declared else declared + 1)
    assert "changed.bin" in str(err.value)
    # Whatever was written, the stream cannot be made to look like a complete archive.
    with pytest.raises(ValueError, match="earlier member failed"):
        tar.add_bytes("after.txt", b"x", NOW)
    with pytest.raises(ValueError, match="earlier member failed"):
        tar.close()


def test_failed_block_writes_no_end_of_archive():
    raw = io.BytesIO()
    with pytest.raises(RuntimeError), TarStream(raw) as tar:
        tar.add_bytes("a.txt", b"abc", NOW)
        raise RuntimeError("build failed")
    assert len(raw.getvalue()) == 1024  # the member only: no end blocks, no record padding
    with pytest.raises(ValueError, match="closed"):
        tar.add_bytes("b.txt", b"x", NOW)


def test_bad_size_is_refused():
    tar = TarStream(io.BytesIO())
    with pytest.raises(ValueError, match="non-negative"):
        tar.add_file("x", io.BytesIO(b""), -1, NOW)


def test_output_hash_equals_tarfiles(tmp_path):
    members = [(f"{ROOT}/d/{i}.txt", _content(6000 + i, i), NOW) for i in range(50)]
    ours = HashingWriter(io.BytesIO())
    with TarStream(ours) as tar:
        for name, data, mtime in members:
            tar.add_bytes(name, data, mtime)
    assert ours.hexdigest() == hashlib.sha256(_with_tarfile(members)).hexdigest()
    assert ours.size % RECORD == 0


def test_reads_back_with_tarfile_and_safe_archive(tmp_path):
    members = {
        "METS.xml": b"<mets/>",
        "representations/rep1/data/Beslut, Åsa Öberg.pdf": _content(5000, 1),
        "representations/rep1/data/" + "lång " * 40 + ".txt": _content(513, 2),
        "representations/rep1/data/big.bin": _content(CHUNK + 100, 3),
        "documentation/empty.csv": b"",
    }
    path = tmp_path / f"{ROOT}.tar"
    with open(path, "wb") as raw, TarStream(raw) as tar:
        for rel, data in members.items():
            src = tmp_path / "src"
            src.write_bytes(data)
            with open(src, "rb", buffering=0) as fh:
                tar.add_file(f"{ROOT}/{rel}", fh, len(data), NOW)
    with tarfile.open(path) as tf:
        infos = tf.getmembers()
        assert [i.name for i in infos] == [f"{ROOT}/{rel}" for rel in members]
        for info, data in zip(infos, members.values(), strict=True):
            assert info.isreg() and info.size == len(data) and info.mtime == NOW and info.mode == 0o644
            assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
            assert tf.extractfile(info).read() == data  # type: ignore[union-attr]
    with open_package(path) as pkg:
        assert pkg.root == ROOT and pkg.single_root
        assert pkg.files() == sorted(members)
        for rel, data in members.items():
            assert pkg.read_bytes(rel, 10 * CHUNK) == data


def _hash_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("tar-member-sha256")]


class _FailingWriter:
    """Takes the first ``ok`` writes, then fails like a full disk."""

    def __init__(self, ok: int):
        self.ok = ok

    def write(self, data) -> int:
        if self.ok == 0:
            raise OSError(28, "No space left on device")
        self.ok -= 1
        return len(data)


def test_a_large_members_digests_are_both_right_and_the_helper_thread_ends_with_the_stream():
    data = _content(3 * CHUNK + 17, 5)
    out = HashingWriter(io.BytesIO())
    with TarStream(out) as tar:
        digest, _ = tar.add_file("big.bin", io.BytesIO(data), len(data), NOW)
        assert _hash_threads()  # the document's digest is computed beside the package's
    assert digest == hashlib.sha256(data).hexdigest()
    assert out.hexdigest() == hashlib.sha256(out.raw.getvalue()).hexdigest()
    assert out.raw.getvalue() == _with_tarfile([("big.bin", data, NOW)])
    assert _hash_threads() == []


def test_a_write_failing_mid_member_leaves_no_helper_thread():
    data = _content(3 * CHUNK, 6)
    with pytest.raises(OSError, match="No space"), TarStream(_FailingWriter(ok=2)) as tar:
        tar.add_file("big.bin", io.BytesIO(data), len(data), NOW)
    assert _hash_threads() == []
