"""A generated corpus of hostile archives against transforms/common/safe_archive.py.

Every archive Hypothesis builds mixes ordinary members with hostile ones: path traversal,
absolute and Windows paths, symlinks and hardlinks, device and FIFO members, duplicate
names, size and ratio bombs, deep nesting and names that are not UTF-8. For each one,
opening and extracting it must either succeed with every file inside the extraction folder,
or refuse it with the project's own :class:`ContentError` (``UnsafeArchive``) — never another
exception, never a hang past the deadline, never a byte written outside the temp area.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from fault_support import FUZZ
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.common import safe_archive
from transforms.common.errors import ContentError
from transforms.common.safe_archive import Limits, UnsafeArchive, extract_package, open_package
from transforms.validation.validator import validate_package

LIMITS = Limits(max_total_bytes=2_000_000, max_members=200, max_member_bytes=1_000_000, max_ratio=50.0,
                max_depth=32)
FUZZ_SETTINGS = settings(max_examples=120, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                                  HealthCheck.too_slow])

SAFE_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyzåäö0123456789_-.", min_size=1, max_size=12).filter(
    lambda s: s not in (".", ".."))
HOSTILE_NAME = st.one_of(
    st.builds(lambda n, k: "../" * k + n, SAFE_NAME, st.integers(1, 4)),  # traversal
    st.builds(lambda n: "/" + n, SAFE_NAME),  # absolute
    st.builds(lambda n: "pkg/" + "../" * 3 + n, SAFE_NAME),
    st.builds(lambda d, n: f"{d}:\\{n}", st.sampled_from("CDZcz"), SAFE_NAME),  # Windows drive
    st.builds(lambda n: f"pkg\\..\\..\\{n}", SAFE_NAME),  # backslashes
    st.builds(lambda n, k: "pkg/" + "/".join(["d"] * k) + "/" + n, SAFE_NAME, st.integers(30, 80)),  # deep
    st.builds(lambda n: f"pkg/{n}\x00.txt", SAFE_NAME),  # control character
    st.just(""), st.just("."), st.just("pkg/./../../etc/passwd"),
    st.text(max_size=40),  # anything at all
)
NAME = st.one_of(st.builds(lambda n: f"pkg/{n}", SAFE_NAME), HOSTILE_NAME)
KIND = st.sampled_from(["file", "file", "file", "dir", "symlink", "hardlink", "chr", "blk", "fifo", "bomb", "rawname"])
MEMBER = st.tuples(KIND, NAME, st.binary(max_size=64),
                   st.sampled_from(["../../outside", "/etc/passwd", "pkg/a", "C:\\x"]))
ARCHIVE = st.tuples(st.sampled_from(["tar", "tar.gz", "zip"]), st.lists(MEMBER, min_size=1, max_size=8),
                    st.booleans())


def _tar(path: Path, members, duplicate: bool, mode: str, fmt: int = tarfile.GNU_FORMAT) -> None:
    with tarfile.open(path, mode, format=fmt) as tf:
        for kind, name, data, target in members + (members[:1] if duplicate else []):
            ti = tarfile.TarInfo(name or "x")
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, target
                tf.addfile(ti)
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, target
                tf.addfile(ti)
            elif kind in ("chr", "blk", "fifo"):
                ti.type = {"chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
                tf.addfile(ti)
            elif kind == "bomb":  # a member larger than the limits allow (zeros: compresses to almost nothing)
                ti.size = LIMITS.max_member_bytes + 1
                tf.addfile(ti, io.BytesIO(bytes(ti.size)))
            elif kind == "rawname":  # a name that is not UTF-8 (Latin-1 bytes kept as they are)
                ti = tarfile.TarInfo(("pkg/" + (name or "x")).encode("utf-8", "replace")[:60].decode("latin-1")
                                     + "\udce5")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))


def _zip(path: Path, members, duplicate: bool) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we write on purpose
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for kind, name, data, target in members + (members[:1] if duplicate else []):
                info = zipfile.ZipInfo(name or "x")
                if kind == "dir":
                    info.filename = (name or "x").rstrip("/") + "/"
                    zf.writestr(info, b"")
                elif kind in ("symlink", "hardlink"):
                    info.external_attr = (0o120777 << 16)
                    zf.writestr(info, target.encode())
                elif kind in ("chr", "blk", "fifo"):
                    info.external_attr = ({"chr": 0o020644, "blk": 0o060644, "fifo": 0o010644}[kind] << 16)
                    zf.writestr(info, b"")
                elif kind == "bomb":  # ratio bomb: 1 MB of zeros in about a kilobyte
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(info, bytes(LIMITS.max_member_bytes))
                elif kind == "rawname":  # flag bit 11 clear: the name is read as cp437, not UTF-8
                    info.filename = "pkg/" + (name or "x") + "\u00e5"
                    info.flag_bits &= ~0x800
                    zf.writestr(info, data)
                else:
                    zf.writestr(info, data)


def _build(tmp: Path, fmt: str, members, duplicate: bool, tar_format: int = tarfile.GNU_FORMAT) -> Path:
    path = tmp / f"hostile.{fmt}"
    try:
        if fmt == "zip":
            _zip(path, members, duplicate)
        else:
            _tar(path, members, duplicate, "w:gz" if fmt == "tar.gz" else "w", tar_format)
    except (ValueError, UnicodeError, OSError, tarfile.TarError):
        # the writer itself refused the name (e.g. a NUL in a zip name): write the bytes we have
        if not path.exists():
            path.write_bytes(b"")
    return path


def _tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.fixture
def area(tmp_path):
    """A temp area with a sentinel folder beside it: nothing may ever appear outside ``extract``."""
    (tmp_path / "extract").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path


@FUZZ_SETTINGS
@given(archive=ARCHIVE)
def test_hostile_archives_are_refused_or_extracted_inside_the_temp_area(area, archive):
    fmt, members, duplicate = archive
    FUZZ["safe_archive: hostile archives"] += 1
    for p in (area / "work").glob("*"):
        p.unlink()
    (area / "work").mkdir(exist_ok=True)
    path = _build(area / "work", fmt, members, duplicate)
    before_outside, before_root = _tree(area / "outside"), set(os.listdir(area))
    started = time.monotonic()
    try:
        with extract_package(path, LIMITS, parent=area / "extract") as root:
            base = (area / "extract").resolve()
            for p in root.rglob("*"):
                assert p.resolve().is_relative_to(base), f"{p} is outside the extraction folder"
                assert not p.is_symlink() and (p.is_file() or p.is_dir()), f"{p} is not a plain file or folder"
    except ContentError:
        pass  # refused, with the project's own error type
    assert time.monotonic() - started < 10
    assert _tree(area / "outside") == before_outside
    assert set(os.listdir(area)) == before_root
    assert not list((area / "extract").iterdir()), "the temporary extraction folder was not removed"


@FUZZ_SETTINGS
@given(archive=ARCHIVE)
def test_the_validator_reports_hostile_archives_instead_of_crashing(area, archive):
    fmt, members, duplicate = archive
    FUZZ["validate: hostile archives"] += 1
    (area / "work").mkdir(exist_ok=True)
    for p in (area / "work").glob("*"):
        p.unlink()
    path = _build(area / "work", fmt, members, duplicate)
    report = validate_package(path, limits=LIMITS)  # "never raises on bad content"
    assert report.findings or report.valid is not None


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_a_bomb_is_refused_with_bounded_memory(tmp_path, fmt):
    """200 MB of zeros compress to a few hundred kilobytes; opening must refuse it without inflating it."""
    path = tmp_path / f"bomb.{fmt}"
    size = 200 * 1024 * 1024
    if fmt == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, \
                zf.open("pkg/zeros.bin", "w", force_zip64=True) as f:
            chunk = bytes(1024 * 1024)
            for _ in range(size // len(chunk)):
                f.write(chunk)
    else:
        with tarfile.open(path, "w:gz") as tf:
            ti = tarfile.TarInfo("pkg/zeros.bin")
            ti.size = size

            class Zeros(io.RawIOBase):
                def readable(self):
                    return True

                def readinto(self, b):
                    b[:] = bytes(len(b))
                    return len(b)

            tf.addfile(ti, io.BufferedReader(Zeros()))
    assert path.stat().st_size < 1024 * 1024
    FUZZ["safe_archive: bombs"] += 1
    tracemalloc.start()
    try:
        with pytest.raises(ContentError), extract_package(path, Limits(max_member_bytes=50 * 1024 * 1024),
                                                          parent=tmp_path):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while refusing a bomb"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_entity_tricks_in_mets_are_not_expanded(tmp_path):
    """Billion laughs and an external entity (file:///etc/passwd) in METS.xml: reported, never expanded.

    Run in a fresh interpreter so that its peak resident memory is the validation's own.
    """
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    laughs = "".join(f'<!ENTITY l{i} "' + f"&l{i - 1};" * 10 + '">' for i in range(1, 10))
    (pkg / "METS.xml").write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE mets [<!ENTITY l0 "ha"><!ENTITY x SYSTEM "file:///etc/passwd">'
        + laughs + ']>\n<mets xmlns="http://www.loc.gov/METS/" OBJID="&l9;" LABEL="&x;"/>\n', encoding="utf-8")
    FUZZ["validate: entity tricks"] += 1
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of
    # a big pytest worker would report the worker's peak, not its own.
    code = ("import json, re, sys; from pathlib import Path; "
            "from transforms.validation.validator import validate_package; "
            "r = validate_package(sys.argv[1]); "
            "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1)); "
            "print(json.dumps({'valid': r.valid, 'messages': [f.message for f in r.findings], "
            "'rss_mb': hwm / 1024}))")
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-c", code, str(pkg)], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr
    assert time.monotonic() - started < 30
    result = json.loads(run.stdout)
    assert not result["valid"]
    text = " ".join(result["messages"])
    assert "root:" not in text and "hahaha" not in text
    assert result["rss_mb"] < 400, f"peak RSS {result['rss_mb']:.0f} MB"


def _package_archives() -> dict[str, bytes]:
    """A small package as a tar and as a zip (documents stored, metadata deflated), as delivered."""
    members = [("pkg-1/METS.xml", b'<?xml version="1.0"?><mets xmlns="http://www.loc.gov/METS/" OBJID="pkg-1"/>'),
               ("pkg-1/representations/rep1/data/doc.txt", "Ärende 1\n".encode() * 40),
               ("pkg-1/metadata/descriptive/ERMS.xml", b"<erms/>" * 30)]
    tar_buf, zip_buf = io.BytesIO(), io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    with zipfile.ZipFile(zip_buf, "w") as zf:
        for name, data in members:
            zf.writestr(name, data, zipfile.ZIP_STORED if "/data/" in name else zipfile.ZIP_DEFLATED)
    return {"tar": tar_buf.getvalue(), "zip": zip_buf.getvalue()}


def test_damaged_and_polyglot_package_archives_are_refused_or_extracted_inside(area):
    """Seeded mutations of a real package's tar and zip (flipped bytes, cuts, the other archive
    appended or prepended): extraction ends in the package or a ContentError, inside the temp area."""
    import random

    archives = _package_archives()
    rng = random.Random(20261207)
    (area / "work").mkdir(exist_ok=True)
    before_outside = _tree(area / "outside")
    refused = 0
    for i in range(200):
        fmt = ("tar", "zip")[i % 2]
        data = bytearray(archives[fmt])
        other = archives["zip" if fmt == "tar" else "tar"]
        kind = rng.choice(["flip", "flip", "cut", "append", "prepend"])
        if kind == "flip":
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] ^= rng.randint(1, 255)
        elif kind == "cut":
            del data[rng.randrange(len(data)):]
        elif kind == "append":
            data += other
        else:
            data[:0] = other
        path = area / "work" / f"case-{i}.{fmt}"
        path.write_bytes(bytes(data))
        FUZZ["safe_archive: damaged package archives"] += 1
        try:
            with extract_package(path, LIMITS, parent=area / "extract") as root:
                base = (area / "extract").resolve()
                for p in root.rglob("*"):
                    assert p.resolve().is_relative_to(base)
                if kind in ("append", "prepend"):
                    pytest.fail(f"case {i}: a {fmt} with another archive {kind}ed was read as a package")
        except ContentError:
            refused += 1
        path.unlink()
    assert refused > 80
    assert _tree(area / "outside") == before_outside
    assert not list((area / "extract").iterdir())


# --- the fast tar scan against tarfile --------------------------------------------------------------

def _scans(path: Path) -> tuple[tuple, tuple]:
    """(fast scan, tarfile scan) of a plain tar: names, sizes, offsets, folders and end, or the refusal.

    The fast scan answers ("unusual",) when it leaves the archive to tarfile."""
    def result(scan):
        try:
            inv, end = scan()
        except UnsafeArchive as exc:
            return ("refused", exc.member, exc.rule)
        return ("ok", dict(inv.files), dict(inv.offsets), sorted(inv.dirs), end)

    with open(path, "rb", buffering=0) as fh:
        try:
            fast = result(lambda: safe_archive._scan_tar_fast(path, fh.fileno(), LIMITS))
        except safe_archive._Unusual:
            fast = ("unusual",)
    try:
        with tarfile.open(path, "r:", encoding="utf-8", errors="surrogateescape") as tf:
            def scan():
                inv, _ = safe_archive._scan_tar(path, tf, LIMITS)
                return inv, tf.offset
            slow = result(scan)
    except (tarfile.TarError, EOFError, ValueError):
        slow = ("damaged",)
    return fast, slow


def _opened(path: Path, monkeypatch, *, through_tarfile: bool) -> dict:
    """What open_package makes of a file (listing and bytes, or the refusal), optionally without the fast scan."""
    with monkeypatch.context() as m:
        if through_tarfile:
            m.setattr(safe_archive, "_open_plain_tar", lambda src, limits: None)
        try:
            with open_package(path, LIMITS) as r:
                return {"root": r.root, "dirs": sorted(r.dirs), "sizes": dict(r.sizes),
                        "data": {rel: r.read_bytes(rel, LIMITS.max_member_bytes) for rel in r.files()}}
        except UnsafeArchive as exc:
            return {"refused": str(exc)}


def _assert_fast_scan_agrees(path: Path, monkeypatch) -> bool:
    """The fast scan agrees with tarfile or stands aside, and open_package answers alike; True: it answered."""
    fast, slow = _scans(path)
    assert fast in (("unusual",), slow), (fast, slow)
    assert _opened(path, monkeypatch, through_tarfile=False) == _opened(path, monkeypatch, through_tarfile=True)
    return fast != ("unusual",)


@FUZZ_SETTINGS
@given(members=st.lists(MEMBER, min_size=1, max_size=8), duplicate=st.booleans(),
       tar_format=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]))
def test_the_fast_tar_scan_agrees_with_tarfile_on_hostile_archives(area, monkeypatch, members, duplicate,
                                                                   tar_format):
    FUZZ["safe_archive: fast tar scan, hostile archives"] += 1
    (area / "work").mkdir(exist_ok=True)
    for p in (area / "work").glob("*"):
        p.unlink()
    path = _build(area / "work", "tar", members, duplicate, tar_format)
    if path.stat().st_size:
        _assert_fast_scan_agrees(path, monkeypatch)


def _header_spans(data: bytes) -> list[tuple[int, int]]:
    """Where the headers (and pax records) of a tar lie: the bytes a damaged header would be."""
    spans, pos = [], 0
    while pos + 512 <= len(data) and data[pos:pos + 512] != bytes(512):
        size = int(data[pos + 124:pos + 136].split(b"\0")[0].strip() or b"0", 8)
        kind = data[pos + 156:pos + 157]
        padded = -(-size // 512) * 512
        spans.append((pos, pos + 512 + (padded if kind == b"x" else 0)))
        pos += 512 + (padded if kind in (b"x", b"0", b"\0") else 0)
    return spans


def _base_tar() -> bytes:
    """A package tar as the builder writes one: PAX long and non-ASCII names, folders, sizes around a block."""
    buf = io.BytesIO()
    names = ["pkg-1/METS.xml", "pkg-1/representations/rep1/data/" + "ärende-långt-namn/" * 5 + "dok.pdf",
             "pkg-1/metadata/descriptive/ERMS.xml", "pkg-1/documentation/Åtgärd.txt", "pkg-1/schemas/mets.xsd"]
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        d = tarfile.TarInfo("pkg-1")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for i, name in enumerate(names):
            data = bytes([65 + i]) * (511 + i)
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = len(data), 1_700_000_000
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


@FUZZ_SETTINGS
@given(flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 511), st.integers(1, 255)),
                      min_size=1, max_size=3),
       cut=st.one_of(st.none(), st.integers(0, 12_000)))
def test_the_fast_tar_scan_agrees_with_tarfile_on_damaged_headers(area, monkeypatch, flips, cut):
    """Bytes flipped inside headers and pax records (and the archive cut anywhere): the fast scan
    gives tarfile's answer or leaves the archive to it, and open_package reads it the same either way."""
    FUZZ["safe_archive: fast tar scan, damaged headers"] += 1
    data = bytearray(_base_tar())
    spans = _header_spans(bytes(data))
    for which, at, xor in flips:
        start, end = spans[which % len(spans)]
        data[start + at % (end - start)] ^= xor
    if cut is not None:
        del data[cut:]
    (area / "work").mkdir(exist_ok=True)
    path = area / "work" / "damaged.tar"
    path.write_bytes(bytes(data))
    _assert_fast_scan_agrees(path, monkeypatch)


def test_the_base_tar_of_the_damage_fuzz_is_read_by_the_fast_scan(area, monkeypatch):
    path = area / "base.tar"
    path.write_bytes(_base_tar())
    assert _assert_fast_scan_agrees(path, monkeypatch)
