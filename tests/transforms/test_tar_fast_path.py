"""The fast tar scan answers exactly as tarfile does, for real packages and hostile archives.

:mod:`transforms.common.safe_archive` reads the headers of a plain tar itself (ustar and GNU
headers, PAX ``path`` and ``size`` records) and leaves anything unusual to a scan through
tarfile. These tests run both scans on the same file and compare them member by member: the
same names, sizes, folders and data offsets and the same end of archive, or the same refusal
naming the same member and rule. They also check that the fast scan is the one used for
packages as the builder writes them, and that ``open_package`` gives the same listing, bytes
and refusals whichever scan ran.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import unicodedata
from pathlib import Path

import pytest

from transforms.common import safe_archive as sa
from transforms.common.safe_archive import DEFAULT_LIMITS, Limits, UnsafeArchive, open_package
from transforms.config.systems import load_system
from transforms.packaging.sip import build_packages
from transforms.validation.validator import validate_package

LEX = load_system(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")

ROOT = "pkg-fast"
UNUSUAL = ("unusual",)


# --- the two scans, and what open_package makes of a file ------------------------------------------

def _scanned(scan) -> tuple:
    try:
        inv, end = scan()
    except UnsafeArchive as exc:
        return ("refused", exc.member, exc.rule, str(exc))
    return ("ok", dict(inv.files), dict(inv.offsets), sorted(inv.dirs), end)


def fast_scan(path: Path, limits: Limits = DEFAULT_LIMITS) -> tuple:
    """The fast scan's answer, or UNUSUAL when it leaves the archive to tarfile."""
    with open(path, "rb", buffering=0) as fh:
        try:
            return _scanned(lambda: sa._scan_tar_fast(path, fh.fileno(), limits))
        except sa._Unusual:
            return UNUSUAL


def tarfile_scan(path: Path, limits: Limits = DEFAULT_LIMITS) -> tuple:
    """The scan through tarfile (the rule the fast scan must agree with)."""
    try:
        tf = tarfile.open(path, "r:", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
    except tarfile.TarError:
        return ("unreadable",)
    with tf:
        def scan():
            inv, _sparse = sa._scan_tar(path, tf, limits)
            return inv, tf.offset
        try:
            return _scanned(scan)
        except tarfile.TarError:
            return ("damaged",)


def outcome(path: Path, limits: Limits | None = None) -> dict:
    """What open_package makes of a file: listing, offsets and every member's digest, or the refusal."""
    try:
        with open_package(path, limits) as r:
            return {"root": r.root, "single_root": r.single_root, "dirs": sorted(r.dirs),
                    "sizes": dict(sorted(r.sizes.items())), "offsets": dict(sorted(r._offsets.items())),
                    "listing": {d: r.listdir(d) for d in ["", *sorted(r.dirs)]},
                    "sha256": {rel: hashlib.sha256(r.read_bytes(rel, 1 << 26)).hexdigest() for rel in r.files()},
                    "fast": r._tf is None}
    except UnsafeArchive as exc:
        return {"refused": str(exc), "member": exc.member, "rule": exc.rule}


def outcome_through_tarfile(path: Path, monkeypatch, limits: Limits | None = None) -> dict:
    with monkeypatch.context() as m:
        m.setattr(sa, "_open_plain_tar", lambda src, lim: None)
        return outcome(path, limits)


def assert_agree(path: Path, monkeypatch, *, fast: bool, limits: Limits = DEFAULT_LIMITS) -> tuple:
    """Both scans agree (or the fast one stood aside); ``fast``: whether it must have answered itself."""
    ours, rule = fast_scan(path, limits), tarfile_scan(path, limits)
    if fast:
        assert ours != UNUSUAL, "the fast scan left an ordinary archive to tarfile"
        assert ours == rule
    else:
        assert ours == UNUSUAL
    public, reference = outcome(path, limits), outcome_through_tarfile(path, monkeypatch, limits)
    used_fast = public.pop("fast", None)
    assert reference.pop("fast", None) in (False, None)
    assert public == reference
    if used_fast is not None:
        assert used_fast == fast
    return ours


# --- writing tars: with tarfile, and header by header -----------------------------------------------

def tar_with(path: Path, members: list[tuple[str, bytes | None]], fmt=tarfile.PAX_FORMAT, **pax) -> Path:
    """A tar of (name, bytes) files and (name, None) folders, written by tarfile."""
    with tarfile.open(path, "w", format=fmt, encoding="utf-8", errors="surrogateescape") as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_700_000_000
            if data is None:
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            else:
                ti.size = len(data)
                ti.pax_headers = dict(pax)
                tf.addfile(ti, io.BytesIO(data))
    return path


def header(name: bytes, size: int = 0, kind: bytes = b"0", *, prefix: bytes = b"", magic: bytes = b"ustar\x0000",
           fields: dict[str, bytes] | None = None, signed: bool = False, checksum: bytes | None = None) -> bytes:
    """One 512-byte header, checksum computed unless given."""
    values = {"mode": b"0000644\0", "uid": b"0000000\0", "gid": b"0000000\0", "size": b"%011o\0" % size,
              "mtime": b"%011o\0" % 1_700_000_000, "devmajor": b"0000000\0", "devminor": b"0000000\0"}
    values.update(fields or {})
    buf = bytearray(512)
    buf[0:len(name)] = name
    for (a, b), key in (((100, 108), "mode"), ((108, 116), "uid"), ((116, 124), "gid"), ((124, 136), "size"),
                        ((136, 148), "mtime"), ((329, 337), "devmajor"), ((337, 345), "devminor")):
        assert len(values[key]) == b - a, key
        buf[a:b] = values[key]
    buf[148:156] = b" " * 8
    buf[156:157] = kind
    buf[257:265] = magic
    buf[345:345 + len(prefix)] = prefix
    total = sum(b - 256 if signed and b > 127 else b for b in buf)
    buf[148:156] = checksum if checksum is not None else b"%06o\0 " % total
    return bytes(buf)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def member(name: str, data: bytes, **kw) -> bytes:
    return header(name.encode(), len(data), **kw) + padded(data)


def pax(records: dict[str, bytes] | bytes, following: bytes, *, pad: bytes | None = None) -> bytes:
    """A pax extended header with ``records`` (a dict, or raw bytes), then the header it applies to."""
    if isinstance(records, dict):
        raw = b""
        for key, value in records.items():
            body = b" %s=%s\n" % (key.encode(), value)
            n = len(body) + 1
            while len(body) + len(str(n)) != n:  # the length counts its own digits
                n = len(body) + len(str(n))
            raw += b"%d%s" % (n, body)
    else:
        raw = records
    data = padded(raw + (pad or b""))
    return header(b"././@PaxHeader", len(raw), b"x") + data + following


def archive(path: Path, *parts: bytes, end: bytes = bytes(1024)) -> Path:
    path.write_bytes(b"".join(parts) + end)
    return path


def _ordinary() -> list[tuple[str, bytes | None]]:
    long_dir = f"{ROOT}/representations/rep1/data/" + "ärende-med-ett-långt-namn/" * 4
    return [(ROOT, None), (f"{ROOT}/METS.xml", b"<mets/>"), (f"{ROOT}/representations", None),
            (f"{ROOT}/representations/rep1", None), (f"{ROOT}/empty.txt", b""), (f"{ROOT}/b512.bin", b"x" * 512),
            (f"{ROOT}/b513.bin", b"y" * 513), (f"{long_dir}fil-åäö.pdf", b"%PDF-1.7 " * 300),
            (f"{ROOT}/" + "n" * 99 + ".txt", b"ninety-nine"), (f"{ROOT}/Ärende.txt", "Ärende".encode())]


# --- real packages ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(staged, tmp_path_factory):
    out = tmp_path_factory.mktemp("fast-path-build")
    return [Path(p.path) for rc in staged.partitions for p in build_packages(LEX, staged, rc, out)]


def test_packages_as_built_are_scanned_fast_and_exactly_as_tarfile_reads_them(built, monkeypatch):
    assert built
    for path in built:
        ours = assert_agree(path, monkeypatch, fast=True)
        assert ours[0] == "ok" and ours[1], path.name
        with open_package(path) as reader, tarfile.open(path) as tf:
            assert reader._tf is None
            for ti in tf.getmembers():
                if ti.isfile():
                    rel = ti.name.split("/", 1)[1]
                    assert reader._offsets[rel] == ti.offset_data
                    assert reader.read_bytes(rel, 1 << 26) == tf.extractfile(ti).read()
        assert validate_package(path, "fgs").valid


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT],
                         ids=["pax", "ustar", "gnu"])
def test_ordinary_archives_of_every_format_agree(tmp_path, monkeypatch, fmt):
    members = _ordinary()
    if fmt == tarfile.USTAR_FORMAT:  # names split into a prefix and a name of at most 100 bytes
        members = [(n, d) for n, d in members if len(n.encode()) <= 200 and len(n.rsplit("/", 1)[-1].encode()) < 100]
    path = tar_with(tmp_path / "p.tar", members, fmt)
    # GNU writes long names as 'L' headers, which the fast scan leaves to tarfile.
    ours = assert_agree(path, monkeypatch, fast=fmt != tarfile.GNU_FORMAT)
    if fmt != tarfile.GNU_FORMAT:
        assert ours[0] == "ok" and len(ours[1]) == sum(d is not None for _, d in members)


def test_gnu_headers_with_short_names_are_read_fast(tmp_path, monkeypatch):
    members = [(n, d) for n, d in _ordinary() if len(n.encode()) < 100]
    path = tar_with(tmp_path / "p.tar", members, tarfile.GNU_FORMAT)
    assert assert_agree(path, monkeypatch, fast=True)[0] == "ok"


def test_pax_records_the_fast_scan_reads_or_ignores(tmp_path, monkeypatch):
    path = tar_with(tmp_path / "p.tar", _ordinary(), tarfile.PAX_FORMAT, mtime="1700000000.25", uid="70000",
                    gid="70000", uname="arkiv", gname="arkiv", comment_free="no")
    # An unknown keyword ("comment_free") is left to tarfile...
    assert_agree(path, monkeypatch, fast=False)
    path = tar_with(tmp_path / "q.tar", _ordinary(), tarfile.PAX_FORMAT, mtime="1700000000.25", uid="70000",
                    gid="70000", uname="ärkiv", gname="arkiv")
    # ... the ones that change nothing we check are read past.
    assert assert_agree(path, monkeypatch, fast=True)[0] == "ok"


# --- hostile names and limits: decided by the fast scan itself ----------------------------------

def _refused_fast(tmp_path, monkeypatch, members, rule_part, limits=DEFAULT_LIMITS, fmt=tarfile.PAX_FORMAT):
    path = tar_with(tmp_path / "h.tar", members, fmt)
    ours = assert_agree(path, monkeypatch, fast=True, limits=limits)
    assert ours[0] == "refused" and rule_part in ours[2], ours


@pytest.mark.parametrize(("name", "rule"), [
    ("../escape.txt", "'..' component"),
    (f"{ROOT}/../../etc/passwd", "'..' component"),
    ("/etc/passwd", "absolute path"),
    ("C:\\Windows\\x.txt", "backslash"),
    ("C:x.txt", "drive letter"),
    (f"{ROOT}/a\x01b.txt", "control characters"),
    (f"{ROOT}/" + "d/" * 70 + "x.txt", "nested too deeply"),
    (".", "empty"),
], ids=["traversal", "inner-traversal", "absolute", "backslash", "drive", "control", "deep", "dot"])
def test_hostile_names_are_refused_alike(tmp_path, monkeypatch, name, rule):
    _refused_fast(tmp_path, monkeypatch, [(f"{ROOT}/METS.xml", b"<mets/>"), (name, b"x")], rule)


def test_a_name_that_is_not_utf8_is_refused_alike(tmp_path, monkeypatch):
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT):
        _refused_fast(tmp_path, monkeypatch, [(f"{ROOT}/METS.xml", b"<mets/>"), (f"{ROOT}/l\udce5s.txt", b"x")],
                      "not valid UTF-8", fmt=fmt)


@pytest.mark.parametrize(("names", "rule"), [
    ([f"{ROOT}/a.txt", f"{ROOT}/a.txt"], "duplicate"),
    ([f"{ROOT}/Readme.txt", f"{ROOT}/README.TXT"], "collide"),
    ([f"{ROOT}/" + unicodedata.normalize("NFC", "å.txt"), f"{ROOT}/" + unicodedata.normalize("NFD", "å.txt")],
     "collide"),
    ([f"{ROOT}/x", f"{ROOT}/x/y.txt"], "both a file and a folder"),
], ids=["duplicate", "case", "normalisation", "file-and-folder"])
def test_colliding_names_are_refused_alike(tmp_path, monkeypatch, names, rule):
    _refused_fast(tmp_path, monkeypatch, [(n, b"data") for n in names], rule)


@pytest.mark.parametrize(("limits", "rule"), [
    (Limits(max_members=3), "too many members"),
    (Limits(max_member_bytes=1000), "member is too large"),
    (Limits(max_total_bytes=3000), "package is too large"),
    (Limits(max_name_bytes=60), "name is too long"),
], ids=["members", "member-size", "total-size", "name-length"])
def test_limits_are_kept_alike(tmp_path, monkeypatch, limits, rule):
    members = [(ROOT, None), *[(f"{ROOT}/f{i}.bin", bytes(1100)) for i in range(4)],
               (f"{ROOT}/" + "n" * 70, b"x")]
    _refused_fast(tmp_path, monkeypatch, members, rule, limits=limits)


# --- headers the fast scan leaves to tarfile ------------------------------------------------------

@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE,
                                  tarfile.FIFOTYPE, tarfile.CONTTYPE],
                         ids=["symlink", "hardlink", "chr", "blk", "fifo", "contiguous"])
def test_links_devices_and_rare_types_go_to_tarfile(tmp_path, monkeypatch, kind):
    path = archive(tmp_path / "t.tar", member(f"{ROOT}/METS.xml", b"<mets/>"),
                   header(f"{ROOT}/odd".encode(), 0, kind))
    assert_agree(path, monkeypatch, fast=False)
    assert "refused" in outcome(path) or kind == tarfile.CONTTYPE


def test_headers_written_by_hand(tmp_path, monkeypatch):
    mets = member(f"{ROOT}/METS.xml", b"<mets/>")
    cases = {
        # a v7 folder: a regular-file type whose name ends with a slash
        "v7-folder": (True, [header(f"{ROOT}/sub/".encode(), 0, b"\0"), member(f"{ROOT}/sub/a.txt", b"a"), mets]),
        "folder-slashes": (True, [header(f"{ROOT}//sub///".encode(), 0, b"5"), mets]),
        "prefix": (True, [header(b"a.txt", 1, prefix=f"{ROOT}/deep".encode()) + padded(b"a"), mets]),
        "prefix-folder": (True, [header(b"", 0, b"5", prefix=f"{ROOT}/empty/".encode()), mets]),
        "spaces": (True, [header(f"{ROOT}/s.txt".encode(), 2, fields={
            "size": b"         2 \0", "mode": b"  644 \0\0", "mtime": b"\0" * 12}) + padded(b"ss"), mets]),
        "gnu-magic": (True, [header(f"{ROOT}/g.txt".encode(), 1, magic=b"ustar  \0") + padded(b"g"), mets]),
        "file-with-slash": (True, [header(f"{ROOT}/f.txt/".encode(), 1) + padded(b"f"), mets]),
        "junk-after-nul": (True, [header(f"{ROOT}/j.txt".encode(), 1, fields={
            "mode": b"644\0abcd", "uid": b"0\0\xff\xff\xff\xff\xff\xff"}) + padded(b"j"), mets]),
        "folder-with-data": (False, [header(f"{ROOT}/d".encode(), 512, b"5") + bytes(512), mets]),
        "tab-in-number": (False, [header(f"{ROOT}/t.txt".encode(), 1, fields={"size": b"\t0000000001\0"})
                                  + padded(b"t"), mets]),
        "base-256-size": (False, [header(f"{ROOT}/b.txt".encode(), 1, fields={"size": b"\x80" + bytes(10) + b"\x01"})
                                  + padded(b"b"), mets]),
        "signed-sum": (False, [header(f"{ROOT}/ö.txt".encode(), 1, signed=True) + padded(b"o"), mets]),
        "bad-checksum": (False, [mets, header(f"{ROOT}/x.txt".encode(), 1, checksum=b"0000000\0") + padded(b"x")]),
        "bad-number": (False, [mets, header(f"{ROOT}/x.txt".encode(), 1, fields={"uid": b"00000z0\0"})
                               + padded(b"x")]),
        "no-magic": (False, [header(f"{ROOT}/v7.txt".encode(), 1, magic=bytes(8)) + padded(b"v"), mets]),
        "pax-path": (True, [pax({"path": f"{ROOT}/pax/" .encode() + "å".encode() * 80},
                                member(f"{ROOT}/short", b"p")), mets]),
        "pax-path-slash": (True, [pax({"path": f"{ROOT}/paxdir///".encode()}, header(b"x", 0, b"5")), mets]),
        "pax-size": (True, [pax({"size": b"3"}, header(f"{ROOT}/s".encode(), 1) + padded(b"abc")), mets]),
        "pax-size-folder": (False, [pax({"size": b"3"}, header(f"{ROOT}/s".encode(), 0, b"5")) + padded(b"abc"),
                                    mets]),
        "pax-size-not-a-number": (False, [pax({"size": b"+3"}, header(f"{ROOT}/s".encode(), 3) + padded(b"abc")),
                                          mets]),
        "pax-linkpath": (False, [pax({"linkpath": b"/etc/passwd"}, member(f"{ROOT}/l", b"l")), mets]),
        "pax-hdrcharset": (False, [pax({"hdrcharset": b"BINARY", "path": f"{ROOT}/\xe5".encode("latin-1")},
                                       member(f"{ROOT}/h", b"h")), mets]),
        "pax-sparse": (False, [pax({"GNU.sparse.size": b"10"}, member(f"{ROOT}/sp", b"s")), mets]),
        "pax-junk-in-padding": (False, [pax({"path": f"{ROOT}/p".encode()}, member(f"{ROOT}/q", b"q"),
                                            pad=b"9 path=x\n"), mets]),
        "pax-bad-length": (False, [pax(b"99 path=x\n", member(f"{ROOT}/q", b"q")), mets]),
        "pax-zero-length": (False, [pax(b"0 path=x\n", member(f"{ROOT}/q", b"q")), mets]),
        "pax-then-pax": (False, [pax({"path": b"a"}, pax({"path": f"{ROOT}/b".encode()}, member(f"{ROOT}/q", b"q"))),
                                 mets]),
        "pax-then-end": (False, [mets, pax({"path": f"{ROOT}/p".encode()}, b"")]),
        "global-pax": (False, [header(b"pax_global_header", 0, b"g"), mets]),
        "gnu-longname": (False, [header(b"././@LongLink", 5, b"L", magic=b"ustar  \0") + padded(b"abcd\0"),
                                 member(f"{ROOT}/q", b"q", magic=b"ustar  \0"), mets]),
    }
    for name, (fast, parts) in cases.items():
        path = archive(tmp_path / f"{name}.tar", *parts)
        try:
            assert_agree(path, monkeypatch, fast=fast)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc


@pytest.mark.parametrize("cut", ["inside-member", "inside-header", "no-end-block", "one-end-block"])
def test_archives_cut_short_agree(tmp_path, monkeypatch, cut):
    full = tar_with(tmp_path / "full.tar", _ordinary()).read_bytes()
    with tarfile.open(tmp_path / "full.tar") as tf:
        last = tf.getmembers()[-1]
    at = {"inside-member": last.offset_data + 3, "inside-header": last.offset + 100,
          "no-end-block": last.offset_data + 512, "one-end-block": last.offset_data + 1024}[cut]
    path = tmp_path / "cut.tar"
    path.write_bytes(full[:at])
    fast = cut == "one-end-block"
    assert_agree(path, monkeypatch, fast=fast)
    assert "refused" in outcome(path) or fast


def test_data_after_the_end_is_refused_after_a_fast_scan(tmp_path, monkeypatch):
    body = tar_with(tmp_path / "t.tar", _ordinary()).read_bytes()
    path = tmp_path / "polyglot.tar"
    path.write_bytes(body + b"PK\x05\x06" + bytes(18))
    assert assert_agree(path, monkeypatch, fast=True)[0] == "ok"  # the headers themselves are fine ...
    assert "data after the tar's end" in outcome(path)["rule"]  # ... what follows them is not


def test_a_member_read_through_the_fast_reader_lands_in_the_callers_buffer(tmp_path):
    data = bytes(range(256)) * 40
    path = tar_with(tmp_path / "t.tar", [(ROOT, None), (f"{ROOT}/METS.xml", b"<mets/>"), (f"{ROOT}/d.bin", data)])
    with open_package(path) as reader, reader.open("d.bin") as fh:
        buf = bytearray(4096)
        view = memoryview(buf)
        got = b""
        while n := fh.readinto(view):
            got += bytes(view[:n])
        assert got == data
        fh.seek(5000)
        assert fh.read(10) == data[5000:5010]
