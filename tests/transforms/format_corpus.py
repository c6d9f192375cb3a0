"""A small corpus of real files for the format tests, made in the test's own folder.

Office files and the PDF/A come from the installed LibreOffice (one invocation per target,
with a private profile), images from Pillow, PDF and DOCX from the demo's own writers; the
encrypted PDF is LibreOffice's (password-protected export), the corrupt files are cut or
scrambled copies of valid ones.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
from pathlib import Path

from PIL import Image

from demo.documents import make_damaged_docx, make_docx, make_pdf

SOFFICE = "/usr/bin/soffice"


def _soffice(profile: Path, convert_to: str, out: Path, *inputs: Path) -> None:
    subprocess.run([SOFFICE, f"-env:UserInstallation={profile.as_uri()}", "--headless", "--norestore",
                    "--convert-to", convert_to, "--outdir", str(out), *map(str, inputs)],
                   check=True, capture_output=True, timeout=300)


def broken_docx() -> bytes:
    """A DOCX whose container is intact (fido identifies it) but whose document.xml is garbage."""
    return make_damaged_docx(["Ett stycke"], title="Skadad")


def make_corpus(root: Path) -> dict[str, Path]:
    """Every kind of file the format tests need, by a short key."""
    root.mkdir(parents=True, exist_ok=True)
    src = root / "src"
    src.mkdir()
    files: dict[str, Path] = {}

    def put(key: str, name: str, data: bytes) -> Path:
        p = root / name
        p.write_bytes(data)
        files[key] = p
        return p

    put("pdf", "brev.pdf", make_pdf(["Beslut om bygglov\nSida ett"], title="Beslut"))
    put("docx", "yttrande.docx", make_docx(["Yttrande", "Nämnden har inget att invända."], title="Yttrande"))
    put("txt", "anteckning.txt", "Tjänsteanteckning: samtal med sökande.\n".encode())
    put("csv", "tabell.csv", b"id,belopp\r\n1,100\r\n2,250\r\n")
    put("xml", "data.xml", b'<?xml version="1.0" encoding="UTF-8"?>\n<arende id="1"><titel>Test</titel></arende>\n')
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    for key, name, fmt in (("jpeg", "foto.jpg", "JPEG"), ("tiff", "ritning.tif", "TIFF"), ("png", "karta.png", "PNG")):
        buf = io.BytesIO()
        image.save(buf, fmt)
        put(key, name, buf.getvalue())
    put("corrupt", "trasig.docx", make_docx(["Trasig " * 400])[:700])  # cut mid-zip
    put("broken_docx", "skadad.docx", broken_docx())
    put("unknown", "okand", bytes(random.Random(8).randrange(256) for _ in range(512)))

    # LibreOffice: XLSX from CSV, DOC from text, PDF/A-2b and an encrypted PDF from text.
    profile = root / "lo-profile"
    (src / "kalkyl.csv").write_bytes(b"post,belopp\r\nhyra,1200\r\nel,300\r\n")
    (src / "gammal.txt").write_text("Ett gammalt Word-dokument.\n", encoding="utf-8")
    (src / "arkivbar.txt").write_text("Ett dokument i PDF/A.\n", encoding="utf-8")
    (src / "hemlig.txt").write_text("Krypterat dokument.\n", encoding="utf-8")
    _soffice(profile, "xlsx", root, src / "kalkyl.csv")
    _soffice(profile, "doc", root, src / "gammal.txt")
    pdfa = json.dumps({"SelectPdfVersion": {"type": "long", "value": "2"}})
    _soffice(profile, f"pdf:writer_pdf_Export:{pdfa}", root, src / "arkivbar.txt")
    secret = json.dumps({"EncryptFile": {"type": "boolean", "value": "true"},
                         "DocumentOpenPassword": {"type": "string", "value": "hemligt"}})
    _soffice(profile, f"pdf:writer_pdf_Export:{secret}", root, src / "hemlig.txt")
    files["xlsx"] = root / "kalkyl.xlsx"
    files["doc"] = root / "gammal.doc"
    files["pdfa"] = root / "arkivbar.pdf"
    files["encrypted"] = root / "hemlig.pdf"
    for key in ("xlsx", "doc", "pdfa", "encrypted"):
        assert files[key].is_file(), f"LibreOffice did not make {files[key].name}"
    return files
