"""The validator's fast paths give the answers of the general ones: plain hrefs resolved without URL
parsing, the root element found by reading small pieces, checksums read into one reused buffer."""

from __future__ import annotations

import hashlib
import posixpath
import urllib.parse
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transforms.common.safe_archive import DEFAULT_LIMITS, open_package
from transforms.validation.context import resolve_href
from transforms.validation.xmlstream import CHUNK, XmlReader


def _general(href: str, base: str) -> tuple[str | None, str]:
    """What resolve_href answers for a plain relative path, worked out the long way."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(href).path)
    joined = posixpath.normpath(posixpath.join(base, path)) if base else posixpath.normpath(path)
    if joined == ".." or joined.startswith("../") or joined == ".":
        return None, "points outside the package"
    return joined, ""


@given(href=st.text(alphabet="ab._~-/", min_size=1, max_size=12).filter(lambda h: not h.startswith("/")),
       base=st.sampled_from(["", "representations/rep1", "a/b"]))
def test_a_plain_href_resolves_as_the_url_parsing_would(href, base):
    assert resolve_href(href, base) == _general(href, base)


@pytest.mark.parametrize(("href", "base", "expected"), [
    ("data/a.txt", "representations/rep1", ("representations/rep1/data/a.txt", "")),
    ("./data//a.txt", "", ("data/a.txt", "")),
    ("../METS.xml", "representations/rep1", ("representations/METS.xml", "")),
    ("../../../x", "representations/rep1", (None, "points outside the package")),
    ("data/a%20b.txt", "", ("data/a b.txt", "")),  # not plain: decoded by the general path
    ("file:data/a.txt", "", ("data/a.txt", "")),
    ("/abs/a.txt", "", (None, "is an absolute path; use a path relative to the METS document")),
    ("data\\a.txt", "", (None, "uses backslashes; a URL path separates folders with '/'")),
])
def test_hrefs_resolve_as_before(href, base, expected):
    assert resolve_href(href, base) == expected


def test_the_root_element_is_found_behind_a_long_prologue(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    prologue = "<!--" + "x" * 50_000 + "-->\n<?pi stuff?>\n"
    (pkg / "a.xml").write_text(f'<?xml version="1.0"?>{prologue}<r xmlns="urn:t"><c/></r>', encoding="utf-8")
    (pkg / "broken.xml").write_text(f"{prologue}<r>{'<c/>' * 5000}</x>", encoding="utf-8")
    (pkg / "none.xml").write_text(prologue, encoding="utf-8")
    with open_package(pkg, DEFAULT_LIMITS) as reader:
        xml = XmlReader(reader)
        assert xml.root_tag(xml.opener("a.xml", spool=False)) == "{urn:t}r"
        # The start tag is read long before the error: the rest is judged by the validating parse.
        assert xml.root_tag(xml.opener("broken.xml", spool=False)) == "r"
        assert xml.root_tag(xml.opener("none.xml", spool=False)) is None


@pytest.mark.parametrize("ctype", ["SHA-256", "MD5", "CRC32", "ADLER-32"])
def test_a_file_over_several_reads_is_hashed_whole(tmp_path, ctype):
    from transforms.validation.context import Context
    from transforms.validation.report import ValidationReport

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    data = bytes(range(256)) * (CHUNK // 256 * 2 + 3) + b"tail"  # two full reads and a short one
    (pkg / "big.bin").write_bytes(data)
    expected = {"SHA-256": hashlib.sha256(data).hexdigest(), "MD5": hashlib.md5(data).hexdigest(),
                "CRC32": f"{zlib.crc32(data) & 0xFFFFFFFF:08x}", "ADLER-32": f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"}
    with open_package(pkg, DEFAULT_LIMITS) as reader:
        report = ValidationReport(str(pkg), "csip")
        ctx = Context(reader, report, None, True)
        assert ctx.digest("big.bin", ctype) == expected[ctype]
        assert report.bytes_checked == len(data) and report.files_checked == 1
        assert ctx.digest("big.bin", ctype) == expected[ctype]  # known: not read again
        assert report.bytes_checked == len(data)
