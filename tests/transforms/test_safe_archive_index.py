"""The compact tar index of transforms.common.safe_archive: members read at their data offsets.

A tar package is indexed as name -> (size, data offset) without keeping tarfile's TarInfo
objects, and members are read straight from the archive stream. These tests check that every
member reads back exactly (PAX and GNU long names, sizes around the 512-byte block, .tar.gz,
members open side by side, any order), that an archive cut after the scan is refused rather
than read short, and that opening a 20,000-member tar keeps the validator's memory bounded.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from transforms.common.errors import ContentError
from transforms.common.safe_archive import UnsafeArchive, open_package

ROOT = "pkg-7f3e"
LONG_DIR = "representations/rep1/data/" + "ärende-med-ett-mycket-långt-namn/" * 4  # well over 100 bytes


def _members() -> dict[str, bytes]:
    rng = random.Random(1)
    out = {}
    for i, size in enumerate([0, 1, 511, 512, 513, 1024, 4097, 70_000, 200_000]):
        data = rng.randbytes(size)
        out[f"{ROOT}/short-{i}.bin"] = data
        out[f"{ROOT}/{LONG_DIR}fil-{i}-åäö.bin"] = data[::-1]
    out[f"{ROOT}/METS.xml"] = b"<mets/>"
    return out


def _write(path: Path, members: dict[str, bytes], mode: str, fmt: int) -> Path:
    with tarfile.open(path, mode, format=fmt) as tf:
        d = tarfile.TarInfo(ROOT)
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


@pytest.mark.parametrize(("suffix", "mode", "fmt"), [
    ("tar", "w", tarfile.PAX_FORMAT),
    ("tar", "w", tarfile.GNU_FORMAT),
    ("tar.gz", "w:gz", tarfile.PAX_FORMAT),
    ("tar.bz2", "w:bz2", tarfile.PAX_FORMAT),
], ids=["pax", "gnu", "pax-gz", "pax-bz2"])
def test_every_member_reads_back_exactly_in_any_order(tmp_path, suffix, mode, fmt):
    members = _members()
    assert any(len(n.encode()) > 100 for n in members)  # long names: PAX / GNU long-name headers
    path = _write(tmp_path / f"p.{suffix}", members, mode, fmt)
    expected = {n.split("/", 1)[1]: d for n, d in members.items()}
    with open_package(path) as reader:
        assert reader.root == ROOT and reader.single_root
        assert reader.files() == sorted(expected)
        if (suffix, fmt) == ("tar", tarfile.PAX_FORMAT):
            assert reader._tf is None  # the fast scan read every header, tarfile was never opened
        else:
            assert reader._tf.members == []  # tarfile kept no TarInfo behind
        order = list(expected)
        random.Random(2).shuffle(order)  # backwards seeks too (a gzip stream rewinds for them)
        for rel in order:
            assert reader.size(rel) == len(expected[rel])
            assert reader.read_bytes(rel, 1 << 20) == expected[rel], rel


def test_members_open_side_by_side_and_seek(tmp_path):
    members = _members()
    path = _write(tmp_path / "p.tar", members, "w", tarfile.PAX_FORMAT)
    a_rel, b_rel = f"{LONG_DIR}fil-7-åäö.bin", "short-8.bin"
    a, b = members[f"{ROOT}/{a_rel}"], members[f"{ROOT}/{b_rel}"]
    with open_package(path) as reader, reader.open(a_rel) as fa, reader.open(b_rel) as fb:
        got_a, got_b = [], []
        while True:  # interleaved reads over the one archive stream
            ca, cb = fa.read(3000), fb.read(7001)
            if not ca and not cb:
                break
            got_a.append(ca)
            got_b.append(cb)
        assert b"".join(got_a) == a and b"".join(got_b) == b
        assert fa.read() == b"" and fa.tell() == len(a)  # never past the member's end
        fa.seek(-10, os.SEEK_END)
        assert fa.read() == a[-10:]
        fb.seek(100)
        assert fb.read(5) == b[100:105]
        end = b.find(b"\n", 105)
        assert fb.readline() == (b[105:end + 1] if end >= 0 else b[105:])


def test_an_archive_cut_after_the_scan_is_refused_not_read_short(tmp_path):
    members = _members()
    path = _write(tmp_path / "p.tar", members, "w", tarfile.PAX_FORMAT)
    with tarfile.open(path) as tf:
        big = next(m for m in tf.getmembers() if m.size == 200_000 and len(m.name.encode()) > 100)
    rel = big.name.split("/", 1)[1]
    with open_package(path) as reader:
        before = reader.read_bytes("short-1.bin", 10)
        with open(path, "r+b") as fh:
            fh.truncate(big.offset_data + 1000)
        assert reader.read_bytes("short-1.bin", 10) == before  # whole members still read
        with pytest.raises(UnsafeArchive, match="truncated"):
            reader.read_bytes(rel, 1 << 20)


def test_an_archive_cut_inside_a_member_is_refused_when_opened(tmp_path):
    members = _members()
    path = _write(tmp_path / "p.tar", members, "w", tarfile.PAX_FORMAT)
    with tarfile.open(path) as tf:
        big = next(m for m in tf.getmembers() if m.size == 200_000)
    path.write_bytes(path.read_bytes()[: big.offset_data + 100])
    with pytest.raises(ContentError, match="damaged tar"):
        open_package(path)


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar to write a sparse member")
def test_a_sparse_member_still_reads_exactly(tmp_path):
    pkg = tmp_path / ROOT
    pkg.mkdir()
    sparse = pkg / "sparse.bin"
    with open(sparse, "wb") as fh:
        fh.seek(300_000)
        fh.write(b"middle")
        fh.seek(900_000)
        fh.write(b"end")
    (pkg / "METS.xml").write_bytes(b"<mets/>")
    path = tmp_path / "p.tar"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-cf", str(path), "-C", str(tmp_path), ROOT], check=True)
    with tarfile.open(path) as tf:
        assert tf.getmember(f"{ROOT}/sparse.bin").issparse()
    with open_package(path) as reader:
        assert reader.read_bytes("sparse.bin", 1 << 21) == sparse.read_bytes()
        assert reader.read_bytes("METS.xml", 100) == b"<mets/>"


# Peak resident memory of a fresh interpreter: after importing, after open_package, after
# reading every member. VmHWM rather than ru_maxrss, which Linux carries over fork and exec.
_CHILD = r"""
import json, re, sys, time
from pathlib import Path
def hwm():
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024
from transforms.common.safe_archive import open_package
base = hwm()
t = time.monotonic()
reader = open_package(sys.argv[1])
opened = hwm()
bad = 0
for rel in reader.files():
    data = reader.read_bytes(rel, 1 << 20)
    bad += data != f"member {rel}\n".encode() * (1 + int(rel[-10:-4]) % 3)
print(json.dumps({"base": base, "opened": opened, "read": hwm(), "files": len(reader.files()), "bad": bad,
                  "seconds": time.monotonic() - t}))
"""


def test_opening_a_20000_member_tar_keeps_memory_bounded(tmp_path):
    """Before the compact index this grew VmHWM by about 29 MB; now by about 9 MB."""
    path = tmp_path / "big.tar"
    n = 20_000
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(n):
            rel = f"{LONG_DIR}{i // 1000:03d}/handling-{i:06d}.txt"  # PAX names, non-ASCII
            data = f"member {rel}\n".encode() * (1 + i % 3)
            ti = tarfile.TarInfo(f"{ROOT}/{rel}")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    run = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["files"] == n and got["bad"] == 0
    grown = got["read"] - got["base"]
    assert grown < 16, f"VmHWM grew by {grown:.1f} MB opening and reading {n} members ({got})"
    assert got["seconds"] < 120
