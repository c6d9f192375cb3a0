"""Tests for transforms.common.safe_archive: hostile packages are refused before anything is written."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from transforms.common.safe_archive import Limits, UnsafeArchive, extract_package, open_package
from transforms.validation.validator import validate_package


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode="w") -> Path:
    with tarfile.open(path, mode) as tf:
        for m in members:
            if isinstance(m, tuple):
                ti = tarfile.TarInfo(m[0])
                ti.size = len(m[1])
                tf.addfile(ti, io.BytesIO(m[1]))
            else:
                tf.addfile(m)
    return path


def _link(name, target, kind):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = target
    return ti


def _special(name, kind):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    return ti


def _snapshot(d: Path) -> set[str]:
    return {str(p) for p in d.rglob("*")}


HOSTILE_TAR = [
    ("traversal", [("pkg/../../x", b"x")], "'..'"),
    ("absolute", [("/etc/x", b"x")], "absolute"),
    ("drive", [("C:\\x", b"x")], "backslash"),
    ("drive-slash", [("C:/x", b"x")], "drive"),
    ("symlink", [_link("pkg/link", "/etc/passwd", tarfile.SYMTYPE)], "link"),
    ("hardlink", [_link("pkg/hard", "/etc/passwd", tarfile.LNKTYPE)], "link"),
    ("device", [_special("pkg/dev", tarfile.CHRTYPE)], "device"),
    ("fifo", [_special("pkg/fifo", tarfile.FIFOTYPE)], "FIFO"),
    ("duplicate", [("pkg/a.txt", b"1"), ("pkg/a.txt", b"2")], "duplicate"),
]


@pytest.mark.parametrize(("name", "members", "reason"), HOSTILE_TAR, ids=[h[0] for h in HOSTILE_TAR])
def test_hostile_tar_is_refused(tmp_path, monkeypatch, name, members, reason):
    # The archive sits one level down and the working directory beside it, so that a member
    # escaping by ".." or through a link would land in tmp_path, which is watched whole (the
    # parent folder is shared with other tests running at the same time, so it is not).
    (tmp_path / "in").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    archive = _tar(tmp_path / "in" / f"{name}.tar", members)
    before = _snapshot(tmp_path)
    with pytest.raises(UnsafeArchive) as exc:
        open_package(archive)
    assert reason.lower() in str(exc.value).lower()
    with pytest.raises(UnsafeArchive), extract_package(archive, parent=tmp_path):
        pass
    report = validate_package(archive)
    assert not report.valid and report.findings[0].requirement == "PACKAGE"
    assert reason.lower() in report.to_text().lower()
    assert _snapshot(tmp_path) == before  # nothing was written anywhere


def test_non_utf8_names_are_refused(tmp_path):
    archive = tmp_path / "latin1.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("pkg/x")
        zf.writestr(info, b"x")
    raw = archive.read_bytes().replace(b"pkg/x", b"pkg/\xe9")  # a Latin-1 name, no UTF-8 flag
    archive.write_bytes(raw)
    with pytest.raises(UnsafeArchive, match="UTF-8"):
        open_package(archive)
    tar = tmp_path / "latin1.tar"
    with tarfile.open(tar, "w", encoding="latin-1", format=tarfile.GNU_FORMAT) as tf:
        ti = tarfile.TarInfo("pkg/\xe9")
        tf.addfile(ti, io.BytesIO(b""))
    with pytest.raises(UnsafeArchive, match="UTF-8"):
        open_package(tar)


def test_zip_bomb_ratio_is_refused(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/zeros.bin", b"\0" * (5 * 1024 * 1024))
    with pytest.raises(UnsafeArchive, match="ratio"):
        open_package(archive)


def test_zip_traversal_and_symlink(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.txt", b"x")
    with pytest.raises(UnsafeArchive, match=r"\.\."):
        open_package(archive)
    archive2 = tmp_path / "link.zip"
    with zipfile.ZipFile(archive2, "w") as zf:
        info = zipfile.ZipInfo("pkg/link")
        info.create_system = 3
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, b"/etc/passwd")
    with pytest.raises(UnsafeArchive, match="link"):
        open_package(archive2)


def test_limits(tmp_path):
    archive = _tar(tmp_path / "big.tar", [("pkg/a", b"x" * 100), ("pkg/b", b"y" * 100)])
    with pytest.raises(UnsafeArchive, match="too large"):
        open_package(archive, Limits(max_member_bytes=50))
    with pytest.raises(UnsafeArchive, match="package is too large"):
        open_package(archive, Limits(max_total_bytes=150))
    with pytest.raises(UnsafeArchive, match="too many members"):
        open_package(archive, Limits(max_members=1))


def test_reader_streams_members_and_finds_root(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", [("pkg-1/METS.xml", b"<mets/>"), ("pkg-1/data/a.txt", b"abc")], "w:gz")
    with open_package(archive) as reader:
        assert reader.root == "pkg-1" and reader.single_root
        assert reader.files() == ["METS.xml", "data/a.txt"]
        assert reader.is_dir("data") and reader.size("data/a.txt") == 3
        with reader.open("data/a.txt") as fh:
            assert fh.read() == b"abc"
        assert reader.listdir("") == ["METS.xml", "data"]


def test_archive_without_single_root(tmp_path):
    archive = _tar(tmp_path / "flat.tar", [("METS.xml", b"<mets/>"), ("data/a.txt", b"abc")])
    with open_package(archive) as reader:
        assert not reader.single_root and reader.root == "flat"
    report = validate_package(archive)
    assert "CSIPSTR1" in {f.requirement for f in report.findings}


def test_extract_package_stays_inside_and_cleans_up(tmp_path):
    archive = _tar(tmp_path / "ok.tar", [("pkg-1/METS.xml", b"<mets/>"), ("pkg-1/data/a.txt", b"abc")])
    with extract_package(archive, parent=tmp_path) as root:
        assert (root / "data/a.txt").read_bytes() == b"abc"
        assert root.resolve().is_relative_to(tmp_path.resolve())
        made = root.parent
    assert not made.exists()


def test_folder_with_symlink_is_refused(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "METS.xml").write_text("<mets/>")
    os.symlink("/etc/passwd", pkg / "passwd")
    with pytest.raises(UnsafeArchive, match="symbolic link"):
        open_package(pkg)


def test_folder_wrapping_package_root(tmp_path):
    (tmp_path / "wrap/pkg-1").mkdir(parents=True)
    (tmp_path / "wrap/pkg-1/METS.xml").write_text("<mets/>")
    with open_package(tmp_path / "wrap") as reader:
        assert reader.root == "pkg-1" and reader.is_file("METS.xml")


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00garbage" * 10)
    report = validate_package(junk)
    assert not report.valid and report.findings[0].requirement == "PACKAGE"


def test_billion_laughs_in_archive_mets(tmp_path):
    lol = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
           + b"".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'.encode()
                      for i in range(1, 10))
           + b"]><mets>&lol9;</mets>")
    archive = _tar(tmp_path / "lol.tar", [("pkg/METS.xml", lol)])
    report = validate_package(archive)
    assert not report.valid
    assert any(f.requirement == "METS-XML" and "DOCTYPE" in f.message for f in report.findings)
