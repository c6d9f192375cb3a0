"""Small document files for the simulators: PDF, DOCX, JPEG and UTF-8 text (and one damaged DOCX).

Every generator is deterministic: the same arguments (and, for the JPEG, the same
``random.Random`` state) give the same bytes, so two simulator runs with one seed produce
identical files. No timestamps, no global randomness.

The PDF writer is hand-rolled (no reportlab on the machines): standard Helvetica with
WinAnsiEncoding, so Swedish å, ä, ö render in any viewer without embedding a font, and the
content streams are left uncompressed so tests (and curious archivists) can find the text.
"""

from __future__ import annotations

import io
import random
import re
import textwrap
import unicodedata
import zipfile
from collections.abc import Iterable, Sequence
from xml.sax.saxutils import escape

from PIL import Image, ImageDraw, ImageFont

MIME_PDF = "application/pdf"
MIME_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MIME_JPEG = "image/jpeg"
MIME_TEXT = "text/plain"

# A4 in points, with 2 cm margins.
_PAGE_W, _PAGE_H = 595, 842
_MARGIN = 57
_FONT_SIZE = 11
_LEADING = 15
# Helvetica's average glyph is about half an em wide; 92 characters of 11 pt text fit
# the 481 pt text width for ordinary prose (capitals-only lines may run a little long).
_WRAP = 92
_LINES_PER_PAGE = (_PAGE_H - 2 * _MARGIN) // _LEADING

# Fixed zip timestamp: zipfile would otherwise stamp the current time into every entry.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

# XML 1.0 forbids most C0 control characters; they would make document.xml unparsable.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _pdf_string(text: str) -> bytes:
    """A PDF literal string in WinAnsi (cp1252): characters outside it become '?'."""
    raw = text.encode("cp1252", errors="replace")
    raw = raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    # Line breaks inside a literal would be read as part of the string; drop them.
    raw = raw.replace(b"\r", b" ").replace(b"\n", b" ")
    return b"(" + raw + b")"


def _pdf_text_string(text: str) -> bytes:
    """A PDF text string (document metadata) as UTF-16BE hex: WinAnsi is for page content only."""
    return b"<FEFF" + text.encode("utf-16-be").hex().upper().encode("ascii") + b">"


def _wrap_page(text: str) -> list[str]:
    lines: list[str] = []
    for para in text.split("\n"):
        if not para.strip():
            lines.append("")
            continue
        lines.extend(textwrap.wrap(para, _WRAP, break_long_words=True) or [""])
    return lines


def make_pdf(pages: Sequence[str], *, title: str | None = None) -> bytes:
    """A valid PDF 1.4 with one page per entry of ``pages`` (``\\n`` separates lines).

    Long lines are wrapped; a page whose text does not fit continues on extra pages. The
    optional ``title`` goes into the document information dictionary. The cross-reference
    table carries the exact byte offset of every object, so strict readers accept it.
    """
    # Split every requested page into physical pages of at most _LINES_PER_PAGE lines.
    physical: list[list[str]] = []
    for text in pages or [""]:
        lines = _wrap_page(text)
        for start in range(0, max(len(lines), 1), _LINES_PER_PAGE):
            physical.append(lines[start : start + _LINES_PER_PAGE])

    # Object numbers: 1 catalog, 2 page tree, 3 font, 4 info, then (page, content) pairs.
    n_pages = len(physical)
    page_ids = [5 + 2 * i for i in range(n_pages)]
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % p for p in page_ids) + b"] /Count %d >>" % n_pages,
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        4: b"<< /Producer "
        + _pdf_text_string("Arkivflöde demo")
        + (b" /Title " + _pdf_text_string(title) if title else b"")
        + b" >>",
    }
    for i, lines in enumerate(physical):
        page_id, content_id = page_ids[i], page_ids[i] + 1
        ops = [b"BT", b"/F1 %d Tf" % _FONT_SIZE, b"%d TL" % _LEADING, b"%d %d Td" % (_MARGIN, _PAGE_H - _MARGIN)]
        for line in lines:
            ops.append(_pdf_string(line) + b" Tj T*")
        ops.append(b"ET")
        if n_pages > 1:
            # Page number in the footer, as a real letter would have.
            footer = _pdf_string(f"Sida {i + 1} av {n_pages}")
            ops.append(b"BT /F1 9 Tf %d %d Td " % (_PAGE_W // 2 - 25, _MARGIN // 2) + footer + b" Tj ET")
        stream = b"\n".join(ops) + b"\n"
        objects[content_id] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream"
        objects[page_id] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] " % (_PAGE_W, _PAGE_H)
            + b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % content_id
        )

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")  # binary comment: marks the file as binary
    offsets: dict[int, int] = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objects[num] + b"\nendobj\n"
    xref_at = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n" % size
    out += b"0000000000 65535 f \n"  # each entry is exactly 20 bytes, EOL included
    for num in range(1, size):
        out += b"%010d 00000 n \n" % offsets[num]
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\n" % size
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


def verify_pdf(data: bytes) -> int:
    """Check a PDF's skeleton the way a strict reader would; return its page count.

    Raises ``ValueError`` unless the file has the ``%PDF-`` header, a classic xref table
    whose every entry points exactly at its ``N 0 obj``, a correct ``startxref``, stream
    lengths that match, and ends with ``%%EOF``. Meant for files this module writes (no
    compressed xref streams or incremental updates).
    """
    if not data.startswith(b"%PDF-"):
        raise ValueError("no %PDF- header")
    m = re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", data)
    if not m:
        raise ValueError("no startxref / %%EOF trailer")
    xref_at = int(m.group(1))
    head = re.match(rb"xref\s+0 (\d+)\r?\n", data[xref_at:])
    if not head:
        raise ValueError(f"startxref {xref_at} does not point at an xref table")
    size, table_at = int(head.group(1)), xref_at + head.end()
    for num in range(1, size):
        entry = data[table_at + 20 * num : table_at + 20 * num + 20]
        if not re.fullmatch(rb"\d{10} \d{5} n(?: \n|\r\n)", entry):
            raise ValueError(f"xref entry {num} malformed: {entry!r}")
        offset = int(entry[:10])
        if not data[offset:].startswith(b"%d 0 obj" % num):
            raise ValueError(f"xref offset {offset} of object {num} is wrong")
    for sm in re.finditer(rb"/Length (\d+) >>\s*stream\r?\n", data):
        end = sm.end() + int(sm.group(1))
        if not re.match(rb"\r?\n?endstream", data[end : end + 11]):
            raise ValueError(f"stream at {sm.start()} has a wrong /Length")
    count = re.search(rb"/Type /Pages /Kids \[[^\]]*\] /Count (\d+)", data)
    if not count:
        raise ValueError("no page tree")
    return int(count.group(1))


def _xml_text(text: str) -> str:
    return escape(_XML_ILLEGAL.sub("", text), {'"': "&quot;"})


def _docx_paragraph(text: str, *, heading: bool = False) -> str:
    props = '<w:rPr><w:b/><w:sz w:val="32"/></w:rPr>' if heading else ""
    # A line break within a paragraph is <w:br/>, not a newline in the text.
    runs = "<w:br/>".join(f'<w:t xml:space="preserve">{_xml_text(part)}</w:t>' for part in text.split("\n"))
    return f"<w:p><w:r>{props}{runs}</w:r></w:p>"


def make_docx(paragraphs: Iterable[str], *, title: str | None = None) -> bytes:
    """A minimal valid Word document (OOXML zip) with ``paragraphs`` as body text.

    ``title``, when given, is the first (bold, large) paragraph and the document's
    ``dc:title`` in docProps/core.xml. Opens in Word and LibreOffice.
    """
    body = []
    if title:
        body.append(_docx_paragraph(title, heading=True))
    body.extend(_docx_paragraph(p) for p in paragraphs)
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        "<w:body>" + "".join(body) + '<w:sectPr><w:pgSz w:w="11906" w:h="16838"/>'
        '<w:pgMar w:top="1134" w:right="1134" w:bottom="1134" w:left="1134" w:header="708"'
        ' w:footer="708" w:gutter="0"/></w:sectPr>'
        "</w:body></w:document>"
    )
    core = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<dc:title>{_xml_text(title or '')}</dc:title><dc:creator>Arkivflöde demo</dc:creator>"
        "</cp:coreProperties>"
    )
    content_types = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
        '<Override PartName="/docProps/core.xml" ContentType="application/'
        'vnd.openxmlformats-package.core-properties+xml"/>'
        "</Types>"
    )
    rels = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/officeDocument" Target="word/document.xml"/>'
        '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/'
        'relationships/metadata/core-properties" Target="docProps/core.xml"/>'
        "</Relationships>"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        # [Content_Types].xml first: some readers sniff the first entry.
        for name, data in (
            ("[Content_Types].xml", content_types),
            ("_rels/.rels", rels),
            ("docProps/core.xml", core),
            ("word/document.xml", document),
        ):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data.encode("utf-8"))
    return buf.getvalue()



def make_damaged_docx(paragraphs: Iterable[str], *, title: str | None = None) -> bytes:
    """A Word document damaged the way a failed save leaves one: intact zip, unreadable body.

    The OOXML container is whole (format identification still says DOCX, by its container
    signature), but ``word/document.xml`` is not XML, so no office suite can open it. The
    demo's way to show that a document that cannot be converted is quarantined, not lost.
    """
    good = zipfile.ZipFile(io.BytesIO(make_docx(paragraphs, title=title)))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info in good.infolist():
            data = good.read(info.filename)
            if info.filename == "word/document.xml":
                data = b"\x00\x00<w:document " + data[-40:]  # the start of the part lost, the end left
            zf.writestr(info, data)
    return buf.getvalue()

# Fonts tried for text drawn into images, in order. Pillow's own default font has no
# å, ä, ö glyphs (they draw as boxes), so a system DejaVu is preferred where present;
# without one, the drawn text is folded to ASCII (the database keeps the real title).
_FONT_PATHS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
)
_FONT_CACHE: dict[int, tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, bool]] = {}


def _font(size: int) -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, bool]:
    """The font for ``size`` and whether it draws Swedish letters."""
    if size not in _FONT_CACHE:
        for path in _FONT_PATHS:
            try:
                _FONT_CACHE[size] = (ImageFont.truetype(path, size), True)
                break
            except OSError:
                continue
        else:
            try:
                _FONT_CACHE[size] = (ImageFont.load_default(size=size), False)
            except (TypeError, OSError, ImportError):  # Pillow built without FreeType
                _FONT_CACHE[size] = (ImageFont.load_default(), False)
    return _FONT_CACHE[size]


def _drawable(text: str, full: bool) -> str:
    if full:
        return text
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def make_jpeg(rng: random.Random, width: int, height: int, text: str, *, photo: bool = False) -> bytes:
    """A JPEG that looks like a scanned page (grayscale) or, with ``photo``, a snapshot (colour).

    ``text`` is drawn at the top (lines split on ``\\n``); the rest of the page carries
    grey bars standing in for body text, on a faintly mottled, slightly skewed background.
    All randomness comes from ``rng``, so the bytes are reproducible.
    """
    # Low-resolution noise, scaled up: a paper texture that JPEG compresses well
    # (per-pixel noise would make every scan several hundred KB).
    small_w, small_h = max(width // 16, 1), max(height // 16, 1)
    if photo:
        # A sky/ground gradient-ish scene: two random base colours with mottling.
        nw, nh = max(small_w // 2, 1), max(small_h // 2, 1)
        noise = Image.frombytes("RGB", (nw, nh), rng.randbytes(nw * nh * 3))
        top = tuple(rng.randrange(90, 200) for _ in range(3))
        bottom = tuple(rng.randrange(40, 140) for _ in range(3))
        base = Image.new("RGB", (1, 2))
        base.putpixel((0, 0), top)
        base.putpixel((0, 1), bottom)
        img = Image.blend(
            base.resize((width, height), Image.Resampling.BILINEAR),
            noise.resize((width, height), Image.Resampling.BICUBIC),
            0.12,
        )
        draw = ImageDraw.Draw(img)
        for _ in range(rng.randrange(3, 8)):  # a few "buildings" or "objects"
            x0, y0 = rng.randrange(width), rng.randrange(height // 3, height)
            x1, y1 = x0 + rng.randrange(20, width // 3 + 21), y0 + rng.randrange(20, height // 3 + 21)
            draw.rectangle((x0, y0, x1, y1), fill=tuple(rng.randrange(30, 230) for _ in range(3)))
        font, full = _font(max(12, width // 40))
        draw.text(
            (10, height - 10 - max(12, width // 40) * (text.count("\n") + 1)),
            _drawable(text, full),
            fill=(255, 255, 210),
            font=font,
        )
        out = io.BytesIO()
        img.save(out, "JPEG", quality=70)
        return out.getvalue()

    noise = Image.frombytes("L", (small_w, small_h), rng.randbytes(small_w * small_h))
    paper = noise.point(lambda v: 232 + v * 20 // 255).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(paper)
    size = max(12, width // 36)
    font, full = _font(size)
    text = _drawable(text, full)
    margin = width // 12
    y = margin
    for line in text.split("\n"):
        for part in textwrap.wrap(line, max(20, (width - 2 * margin) // (size // 2 + 1))) or [""]:
            draw.text((margin, y), part, fill=rng.randrange(10, 50), font=font)
            y += int(size * 1.4)
    y += size
    # Body text as grey bars: the look of a scan without the cost of real prose.
    while y < height - margin:
        if rng.random() < 0.12:
            y += size  # paragraph break
            continue
        length = rng.randrange((width - 2 * margin) // 2, width - 2 * margin)
        draw.rectangle((margin, y, margin + length, y + size // 3), fill=rng.randrange(70, 130))
        y += int(size * 0.9)
    # A scanner never feeds paper perfectly straight. NEAREST: bilinear is 8x slower and
    # the difference disappears in the JPEG compression anyway.
    paper = paper.rotate(rng.uniform(-1.5, 1.5), resample=Image.Resampling.NEAREST, fillcolor=240)
    out = io.BytesIO()
    paper.save(out, "JPEG", quality=60)
    return out.getvalue()


def make_text(title: str, paragraphs: Iterable[str], *, header: Sequence[str] = ()) -> bytes:
    """A plain-text document, UTF-8 without BOM, LF line endings: header lines, title, paragraphs."""
    parts = [*header, ""] if header else []
    parts += [title, "=" * min(len(title), 78), ""]
    for p in paragraphs:
        parts += [textwrap.fill(p, 78) if "\n" not in p else p, ""]
    return ("\n".join(parts).rstrip("\n") + "\n").encode("utf-8")


# ------------------------------------------------------------------ building drawings
# Bygglov drawings (ritningar): A3 landscape sheets with a title block (ritningshuvud) in
# the lower right corner, as an architect's CAD export (vector PDF) or as an old drawing
# scanned on a large-format scanner (bilevel multi-page TIFF, CCITT Group 4).

MIME_TIFF = "image/tiff"

# A3 landscape in points.
_A3_W, _A3_H = 1191, 842

_DRAWING_KINDS = ("plan", "fasad", "sektion", "situationsplan")


def _drawing_kind(text: str) -> str:
    """Which sheet to draw, from the first line of its text (Planritning, Fasadritning …)."""
    first = text.split("\n", 1)[0].lower()
    if "fasad" in first:
        return "fasad"
    if "sektion" in first:
        return "sektion"
    if "situation" in first or "tomt" in first:
        return "situationsplan"
    return "plan"


def _drawing_shapes(rng: random.Random, kind: str, w: float, h: float) -> tuple[list, list]:
    """Line segments and rectangles of one sheet, in a coordinate system with y pointing down.

    Returns ``(lines, rects)``: lines as ``(x0, y0, x1, y1)``, rectangles as
    ``(x, y, width, height)``. Everything scales with the sheet, so the PDF and the TIFF
    writer draw the same kind of drawing at any resolution.
    """
    lines: list[tuple[float, float, float, float]] = []
    rects: list[tuple[float, float, float, float]] = []
    # The drawing area: the sheet minus a 5 % border and the title block strip at the bottom.
    x0, y0, x1, y1 = 0.06 * w, 0.06 * h, 0.94 * w, 0.72 * h
    bw, bh = (x1 - x0) * rng.uniform(0.45, 0.7), (y1 - y0) * rng.uniform(0.5, 0.8)
    bx, by = x0 + (x1 - x0 - bw) / 2, y0 + (y1 - y0 - bh) / 2
    if kind == "plan":
        rects.append((bx, by, bw, bh))
        rects.append((bx + 4, by + 4, bw - 8, bh - 8))  # the outer wall's inner face
        cols, rows = rng.randint(2, 4), rng.randint(1, 3)
        for i in range(1, cols):
            x = bx + bw * i / cols + rng.uniform(-0.05, 0.05) * bw
            lines.append((x, by, x, by + bh))
        for j in range(1, rows):
            y = by + bh * j / rows
            lines.append((bx, y, bx + bw, y))
        for _ in range(rng.randint(4, 9)):  # windows: short double lines in the outer wall
            x = rng.uniform(bx + 0.1 * bw, bx + 0.85 * bw)
            lines += [(x, by - 3, x + 0.08 * bw, by - 3), (x, by + bh + 3, x + 0.08 * bw, by + bh + 3)]
        # Dimension line (måttlinje) under the building with ticks.
        lines += [(bx, by + bh + 25, bx + bw, by + bh + 25), (bx, by + bh + 18, bx, by + bh + 32),
                  (bx + bw, by + bh + 18, bx + bw, by + bh + 32)]
    elif kind == "fasad":
        ground = by + bh
        rects.append((bx, by + 0.35 * bh, bw, 0.65 * bh))
        ridge = (bx + bw / 2, by)
        lines += [(bx - 10, by + 0.35 * bh, *ridge), (*ridge, bx + bw + 10, by + 0.35 * bh),
                  (x0, ground, x1, ground)]
        n = rng.randint(3, 6)
        for i in range(n):
            wx = bx + bw * (i + 0.5) / n - 0.04 * bw
            rects.append((wx, by + 0.5 * bh, 0.08 * bw, 0.18 * bh))
        rects.append((bx + bw * rng.uniform(0.15, 0.7), ground - 0.3 * bh, 0.07 * bw, 0.3 * bh))  # door
    elif kind == "sektion":
        rects.append((bx, by + 0.3 * bh, bw, 0.7 * bh))
        lines += [(bx - 10, by + 0.3 * bh, bx + bw / 2, by), (bx + bw / 2, by, bx + bw + 10, by + 0.3 * bh)]
        for f in range(1, rng.randint(2, 3) + 1):
            y = by + 0.3 * bh + 0.7 * bh * f / 3
            lines.append((bx, y, bx + bw, y))
        lines.append((x0, by + bh + 8, x1, by + bh + 8))  # grundläggning
    else:  # situationsplan: property boundary, the building, the street, a north arrow
        pts = [(x0 + 0.1 * (x1 - x0), y0 + 0.1 * (y1 - y0)), (x1 - 0.15 * (x1 - x0), y0 + 0.05 * (y1 - y0)),
               (x1 - 0.1 * (x1 - x0), y1 - 0.2 * (y1 - y0)), (x0 + 0.05 * (x1 - x0), y1 - 0.15 * (y1 - y0))]
        for a, b in zip(pts, pts[1:] + pts[:1], strict=True):
            lines.append((*a, *b))
        rects.append((bx + 0.2 * bw, by + 0.2 * bh, 0.4 * bw, 0.45 * bh))
        rects.append((bx + 0.7 * bw, by + 0.25 * bh, 0.15 * bw, 0.2 * bh))  # komplementbyggnad
        lines += [(x0, y1 - 0.05 * (y1 - y0), x1, y1 - 0.05 * (y1 - y0)), (x0, y1, x1, y1)]
        nx, ny = x1 - 30, y0 + 10
        lines += [(nx, ny + 50, nx, ny), (nx, ny, nx - 8, ny + 15), (nx, ny, nx + 8, ny + 15)]
    return lines, rects


def make_drawing_pdf(rng: random.Random, sheets: Sequence[str], *, title: str | None = None) -> bytes:
    """A vector PDF of building drawings: one A3 landscape page per entry of ``sheets``.

    The first line of each entry names the sheet (``Planritning``, ``Fasadritning mot söder``,
    ``Sektion A-A``, ``Situationsplan``) and decides what is drawn; every line of it goes
    into the title block (ritningshuvud) in the lower right corner. Line work comes from
    ``rng``, so the bytes are reproducible. Readable by :func:`verify_pdf`.
    """
    streams = []
    for n, text in enumerate(sheets or [""], start=1):
        lines, rects = _drawing_shapes(rng, _drawing_kind(text), _A3_W, _A3_H)
        ops = [b"0.8 w"]
        for x, y, w, h in rects:  # PDF's y axis points up: flip
            ops.append(b"%.1f %.1f %.1f %.1f re S" % (x, _A3_H - y - h, w, h))
        for xa, ya, xb, yb in lines:
            ops.append(b"%.1f %.1f m %.1f %.1f l S" % (xa, _A3_H - ya, xb, _A3_H - yb))
        # Sheet border and title block.
        ops.append(b"1.5 w 28 28 %d %d re S" % (_A3_W - 56, _A3_H - 56))
        tb_x, tb_w, tb_h = _A3_W - 28 - 420, 420, 170
        ops.append(b"%d 28 %d %d re S" % (tb_x, tb_w, tb_h))
        ops.append(b"BT /F1 10 Tf 13 TL %d %d Td" % (tb_x + 10, 28 + tb_h - 18))
        for line in [*text.split("\n")[:10], f"Blad {n} av {len(sheets or [''])}"]:
            ops.append(_pdf_string(line[:70]) + b" Tj T*")
        ops.append(b"ET")
        streams.append(b"\n".join(ops) + b"\n")
    return _assemble_pdf(streams, (_A3_W, _A3_H), title)


def _assemble_pdf(streams: Sequence[bytes], size: tuple[int, int], title: str | None) -> bytes:
    """A PDF 1.4 file from finished page content streams (Helvetica as /F1), with exact xref."""
    page_ids = [5 + 2 * i for i in range(len(streams))]
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % p for p in page_ids)
        + b"] /Count %d >>" % len(streams),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        4: b"<< /Producer " + _pdf_text_string("Arkivflöde demo")
        + (b" /Title " + _pdf_text_string(title) if title else b"") + b" >>",
    }
    for page_id, stream in zip(page_ids, streams, strict=True):
        objects[page_id + 1] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream"
        objects[page_id] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] " % size
            + b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (page_id + 1)
        )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objects[num] + b"\nendobj\n"
    xref_at = len(out)
    count = max(objects) + 1
    out += b"xref\n0 %d\n" % count + b"0000000000 65535 f \n"
    for num in range(1, count):
        out += b"%010d 00000 n \n" % offsets[num]
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\n" % count
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


def make_tiff(rng: random.Random, pages: Sequence[str], *, width: int = 1240, height: int = 877,
              dpi: int = 75) -> bytes:
    """A multi-page bilevel TIFF (CCITT Group 4), one page per entry: a scanned drawing.

    Each page is an A3 landscape sheet (1240 × 877 pixels is A3 at 75 dpi) drawn like
    :func:`make_drawing_pdf` — the first line of the entry picks the kind of drawing, all
    lines go into the title block — plus the dust specks and slight skew of a large-format
    scan. Group 4 is what archives and scanners use for line drawings: lossless and small.
    All randomness comes from ``rng``; Pillow writes no timestamp, so the bytes repeat.
    """
    images = []
    for n, text in enumerate(pages or [""], start=1):
        sheet = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(sheet)
        lines, rects = _drawing_shapes(rng, _drawing_kind(text), width, height)
        stroke = max(1, width // 600)
        for x, y, w, h in rects:
            draw.rectangle((x, y, x + w, y + h), outline=0, width=stroke)
        for xa, ya, xb, yb in lines:
            draw.line((xa, ya, xb, yb), fill=0, width=stroke)
        border = width // 42
        draw.rectangle((border, border, width - border, height - border), outline=0, width=stroke + 1)
        tb_w, tb_h = int(width * 0.35), int(height * 0.2)
        tb = (width - border - tb_w, height - border - tb_h, width - border, height - border)
        draw.rectangle(tb, outline=0, width=stroke + 1)
        size = max(10, tb_h // 9)
        font, full = _font(size)
        y = tb[1] + size // 2
        for line in [*text.split("\n")[:7], f"Blad {n} av {len(pages or [''])}"]:
            draw.text((tb[0] + size // 2, y), _drawable(line[:60], full), fill=0, font=font)
            y += int(size * 1.15)
        for _ in range(rng.randint(20, 60)):  # dust and specks from the scanner glass
            sx, sy, r = rng.randrange(width), rng.randrange(height), rng.randint(0, 2)
            draw.ellipse((sx, sy, sx + r, sy + r), fill=0)
        sheet = sheet.rotate(rng.uniform(-0.6, 0.6), resample=Image.Resampling.NEAREST, fillcolor=255)
        images.append(sheet.point(lambda v: 255 if v > 128 else 0).convert("1"))
    out = io.BytesIO()
    images[0].save(out, "TIFF", compression="group4", dpi=(dpi, dpi), save_all=True, append_images=images[1:])
    return out.getvalue()
