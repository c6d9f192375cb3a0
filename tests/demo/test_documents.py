"""The document generators write valid, deterministic PDF, DOCX, JPEG and text files."""

from __future__ import annotations

import io
import random
import re
import zipfile
from xml.etree import ElementTree as ET

import pytest
from PIL import Image

from demo.documents import make_docx, make_jpeg, make_pdf, make_text, verify_pdf

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def check_pdf(data: bytes) -> int:
    """Assert the PDF's structure (header, trailer, exact xref offsets); return its page count."""
    assert data.startswith(b"%PDF-")
    assert data.rstrip().endswith(b"%%EOF")
    startxref = int(re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", data).group(1))
    assert data[startxref:].startswith(b"xref")
    m = re.match(rb"xref\s+0 (\d+)\n", data[startxref:])
    size = int(m.group(1))
    table = data[startxref + m.end() : startxref + m.end() + 20 * size]
    entries = [table[i : i + 20] for i in range(0, len(table), 20)]
    assert entries[0] == b"0000000000 65535 f \n"
    for num, entry in enumerate(entries[1:], start=1):
        assert re.fullmatch(rb"\d{10} 00000 n \n", entry), entry
        offset = int(entry[:10])
        assert data[offset:].startswith(b"%d 0 obj" % num), (num, offset)
    # Every stream's /Length matches its bytes.
    for sm in re.finditer(rb"<< /Length (\d+) >>\nstream\n", data):
        length = int(sm.group(1))
        assert data[sm.end() + length : sm.end() + length + 9] == b"endstream"
    return int(re.search(rb"/Type /Pages /Kids \[[^\]]*\] /Count (\d+)", data).group(1))


def test_pdf_structure_and_text():
    title = 'Ansökan om bygglov för "Torshälla 3:14" & rivning (ÅÄÖ)'
    data = make_pdf([f"{title}\nBackslash \\ här", "Andra sidan"], title=title)
    assert check_pdf(data) == 2
    # Page text is WinAnsi (cp1252) with parentheses and backslashes escaped.
    assert 'Ansökan om bygglov för "Torshälla 3:14" & rivning \\(ÅÄÖ\\)'.encode("cp1252") in data
    assert b"Backslash \\\\ h\xe4r" in data
    # The Info title is UTF-16BE hex, so any character survives.
    assert b"/Title <FEFF" + title.encode("utf-16-be").hex().upper().encode() + b">" in data


def test_verify_pdf_agrees_and_catches_a_shifted_xref():
    data = make_pdf(["Hej", "Två"], title="t")
    assert verify_pdf(data) == check_pdf(data) == 2
    with pytest.raises(ValueError, match="offset"):
        # One byte more in the header comment shifts every object; startxref is kept right.
        shifted = data.replace(b"\xd3\n", b"\xd3X\n", 1)
        xref_at = int(re.search(rb"startxref\n(\d+)", data).group(1))
        verify_pdf(shifted.replace(b"startxref\n%d" % xref_at, b"startxref\n%d" % (xref_at + 1)))
    with pytest.raises(ValueError):
        verify_pdf(data[:-7])  # truncated: no %%EOF


def test_pdf_overflowing_page_continues_and_is_deterministic():
    long_page = "\n".join(f"Rad {i} med åäö" for i in range(120))
    data = make_pdf([long_page])
    assert check_pdf(data) >= 3
    assert b"Sida 1 av" in data
    assert make_pdf([long_page]) == data
    assert check_pdf(make_pdf([])) == 1


def test_docx_is_valid_ooxml():
    paras = ['Första stycket & <x> "citat"', "Andra\nrad", "Kontroll\x01tecken"]
    data = make_docx(paras, title="Beslut åäö")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert names[0] == "[Content_Types].xml"
        assert {"_rels/.rels", "word/document.xml", "docProps/core.xml"} <= set(names)
        for name in names:
            ET.fromstring(zf.read(name))  # every part is well-formed XML
        root = ET.fromstring(zf.read("word/document.xml"))
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    texts = ["".join(t.text or "" for t in p.iter(f"{W}t")) for p in root.iter(f"{W}p")]
    assert texts == ["Beslut åäö", 'Första stycket & <x> "citat"', "Andrarad", "Kontrolltecken"]
    assert len(list(root.iter(f"{W}br"))) == 1
    assert make_docx(paras, title="Beslut åäö") == data


def test_jpeg_opens_and_is_reproducible():
    scan = make_jpeg(random.Random(7), 300, 420, "Inskannad ansökan\nÅsa Öberg")
    photo = make_jpeg(random.Random(7), 320, 240, "Foto", photo=True)
    for data, size, mode in ((scan, (300, 420), "L"), (photo, (320, 240), "RGB")):
        img = Image.open(io.BytesIO(data))
        img.load()
        assert (img.format, img.size, img.mode) == ("JPEG", size, mode)
        assert len(data) < 100_000
    assert make_jpeg(random.Random(7), 300, 420, "Inskannad ansökan\nÅsa Öberg") == scan
    assert make_jpeg(random.Random(8), 300, 420, "Inskannad ansökan\nÅsa Öberg") != scan


def test_text_is_utf8():
    data = make_text("Tjänsteskrivelse & <bilaga>", ["Första stycket om ärendet.", "Andra."], header=["KS 2025/0001"])
    text = data.decode("utf-8")
    assert not data.startswith(b"\xef\xbb\xbf")
    assert text.startswith("KS 2025/0001\n\nTjänsteskrivelse & <bilaga>\n")
    assert text.endswith("Andra.\n")
    assert "\r" not in text


# ------------------------------------------------------------- building drawings


def test_drawing_pdf_is_valid_a3_and_deterministic():
    from demo.documents import make_drawing_pdf

    sheets = ["Situationsplan\nTorshälla 3:14", "Planritning", "Fasadritning mot söder", "Sektion A-A"]
    data = make_drawing_pdf(random.Random(3), sheets, title="Ritningar – MBN 2025/0815")
    assert check_pdf(data) == verify_pdf(data) == 4
    assert data.count(b"/MediaBox [0 0 1191 842]") == 4  # A3 landscape
    assert b"(Torsh\xe4lla 3:14)" in data  # WinAnsi å in the title block
    assert b" re S" in data and b" l S" in data  # real vector line work
    assert data == make_drawing_pdf(random.Random(3), sheets, title="Ritningar – MBN 2025/0815")
    assert data != make_drawing_pdf(random.Random(4), sheets, title="Ritningar – MBN 2025/0815")


def test_tiff_is_multipage_group4_and_deterministic():
    from demo.documents import make_tiff

    pages = ["Planritning\nNybyggnad av enbostadshus", "Fasadritning", "Situationsplan"]
    data = make_tiff(random.Random(7), pages)
    img = Image.open(io.BytesIO(data))
    assert img.format == "TIFF" and img.n_frames == 3
    for frame in range(3):
        img.seek(frame)
        img.load()
        assert img.mode == "1" and img.size == (1240, 877)
        assert img.info["compression"] == "group4"
        assert 0 < img.convert("L").histogram()[0] < 1240 * 877 // 4  # black lines on white paper
    assert data == make_tiff(random.Random(7), pages)
    assert data != make_tiff(random.Random(8), pages)
