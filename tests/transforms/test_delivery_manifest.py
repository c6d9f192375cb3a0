"""A file-export delivery is confined to its folder and kept whole.

Deliveries come from Treserva's simulator (windows-1252 CSV, documents, a manifest) and are
then damaged the way a careless or hostile supplier would: a document or a folder that is a
symbolic link, a manifest that names ``..`` or an absolute path, a FIFO in place of a file,
a document the manifest lists that no row uses, a row that names the manifest itself. Each
must be refused with a ContentError naming the file and the rule — before a byte behind a
link is read — and never with a value of the records in the text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from demo import treserva
from transforms.catalogue import Catalogue
from transforms.cli import main
from transforms.common.errors import ContentError
from transforms.config.systems import load_system
from transforms.intake.file_export import FileExportSource, check_delivery
from transforms.quality import quarantine as review
from transforms.staging.batch import stage

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = load_system(ROOT / "dags" / "systems" / "treserva.yaml")
PERIOD = "2025-12"
START, END = dt.datetime(2025, 12, 1), dt.datetime(2026, 1, 1)
#: a secret that sits outside every delivery; reading it through a link would be the fault
SECRET = "HEMLIGT-19121212-1212-Tolvan-Tolvansson"
PLANTED_PNR = "19811218-9876"


@pytest.fixture
def delivery(tmp_path) -> Path:
    treserva.generate(tmp_path / "inbox", period=PERIOD, size=6, seed=3)
    return tmp_path / "inbox" / PERIOD


@pytest.fixture
def secret(tmp_path) -> Path:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.pdf").write_text(SECRET, encoding="utf-8")
    return outside / "secret.pdf"


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def _write_manifest(folder: Path, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")


def _list(folder: Path, rel: str, data: bytes) -> None:
    """Add ``rel`` to the manifest with the size and SHA-256 of ``data``."""
    manifest = _manifest(folder)
    manifest["files"].append({"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    _write_manifest(folder, manifest)


def _documents(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in (folder / "dokument").iterdir())


def _stage(folder: Path, staging: Path):
    return stage(SYSTEM, FileExportSource(SYSTEM, folder), START, END, staging)


def _text(err: pytest.ExceptionInfo) -> str:
    return str(err.value) + "\n" + "\n".join(err.value.details)


# --- class 7: files in a delivery are confined ---------------------------------------------------


def test_a_document_that_is_a_link_out_of_the_delivery_is_refused_before_reading(delivery, secret):
    doc = delivery / _documents(delivery)[0]
    size, digest = len(SECRET.encode()), hashlib.sha256(SECRET.encode()).hexdigest()
    doc.unlink()
    doc.symlink_to(secret)
    # The manifest even agrees with the secret's bytes: only refusing the link itself keeps it out.
    manifest = _manifest(delivery)
    for entry in manifest["files"]:
        if entry["path"] == doc.relative_to(delivery).as_posix():
            entry["size"], entry["sha256"] = size, digest
    _write_manifest(delivery, manifest)
    with pytest.raises(ContentError) as err:
        check_delivery(delivery, "treserva")
    text = _text(err)
    assert "symbolic link" in text and doc.name in text and "rule: no links" in text
    assert "was not read" in text
    assert SECRET not in text and "SHA-256" not in text  # refused before it was hashed
    with pytest.raises(ContentError, match="links or special files"):
        FileExportSource(SYSTEM, delivery)


def test_a_folder_of_the_delivery_that_is_a_link_is_refused(delivery, secret):
    real = delivery / "dokument"
    moved = delivery.parent / "dokument-elsewhere"
    shutil.move(real, moved)
    real.symlink_to(moved, target_is_directory=True)
    with pytest.raises(ContentError) as err:
        check_delivery(delivery, "treserva")
    assert "dokument: a symbolic link" in _text(err)


def test_the_delivery_folder_itself_may_not_be_a_link(tmp_path, delivery):
    inbox = tmp_path / "other-inbox"
    inbox.mkdir()
    (inbox / PERIOD).symlink_to(delivery, target_is_directory=True)
    with pytest.raises(ContentError, match="is a symbolic link"):
        check_delivery(inbox / PERIOD, "treserva")
    with pytest.raises(ContentError, match="is a symbolic link"):
        FileExportSource(SYSTEM, inbox / PERIOD)


def test_a_table_file_that_is_a_link_is_refused_by_the_reader(delivery, secret, tmp_path):
    # Without the manifest check in front (as a tool reading deliveries directly would be).
    (delivery / "akter.csv").unlink()
    (delivery / "akter.csv").symlink_to(secret)
    with pytest.raises(ContentError) as err:
        _stage(delivery, tmp_path / "staging")
    assert "akter.csv" in _text(err) and SECRET not in _text(err)
    assert not list((tmp_path / "staging").rglob("*.parquet"))


def test_a_manifest_that_is_a_link_is_refused(delivery, tmp_path):
    outside = tmp_path / "manifest-elsewhere.json"
    shutil.move(delivery / "manifest.json", outside)
    (delivery / "manifest.json").symlink_to(outside)
    with pytest.raises(ContentError, match="manifest.json: a symbolic link"):
        check_delivery(delivery, "treserva")


def test_a_fifo_in_place_of_a_document_is_refused_without_opening_it(delivery):
    # Opening a FIFO for reading waits for a writer: a reader that opened it would hang here.
    doc = delivery / _documents(delivery)[0]
    doc.unlink()
    os.mkfifo(doc)
    with pytest.raises(ContentError, match="not a regular file"):
        check_delivery(delivery, "treserva")


@pytest.mark.parametrize("path", ["../elsewhere/secret.pdf", "/etc/passwd", "dokument/../../elsewhere/secret.pdf",
                                  "./akter.csv", "dokument//x.pdf", "C:/Windows/win.ini"])
def test_manifest_paths_outside_the_delivery_are_refused(delivery, secret, path):
    _list(delivery, path, SECRET.encode())
    with pytest.raises(ContentError) as err:
        check_delivery(delivery, "treserva")
    text = _text(err)
    assert "manifest entry" in text and "the path" in text
    assert SECRET not in text


@pytest.mark.parametrize("fil", ["../elsewhere/secret.pdf", "/etc/passwd", "manifest.json", "akter.csv"])
def test_a_row_naming_a_path_outside_its_documents_is_refused(delivery, tmp_path, fil):
    rows = (delivery / "dokument.csv").read_bytes().decode("cp1252").split("\r\n")
    header = rows[0].split(";")
    first = rows[1].split(";")
    first[header.index("fil")] = fil
    rows[1] = ";".join(first)
    data = "\r\n".join(rows).encode("cp1252")
    (delivery / "dokument.csv").write_bytes(data)
    manifest = _manifest(delivery)
    for entry in manifest["files"]:
        if entry["path"] == "dokument.csv":
            entry["size"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    _write_manifest(delivery, manifest)
    check_delivery(delivery, "treserva")
    with pytest.raises(ContentError) as err:
        _stage(delivery, tmp_path / "staging")
    text = _text(err)
    assert "dokument.csv: line 2: column fil" in text and "rule: a record's files" in text
    assert fil not in text or fil in ("manifest.json", "akter.csv") and "names the delivery's manifest" in text


def test_two_rows_naming_one_document_are_refused(delivery, tmp_path):
    rows = (delivery / "dokument.csv").read_bytes().decode("cp1252").split("\r\n")
    header = rows[0].split(";")
    first, second = rows[1].split(";"), rows[2].split(";")
    taken = second[header.index("fil")]
    second[header.index("fil")] = first[header.index("fil")]
    rows[2] = ";".join(second)
    data = "\r\n".join(rows).encode("cp1252")
    (delivery / "dokument.csv").write_bytes(data)
    (delivery / taken).unlink()
    manifest = _manifest(delivery)
    manifest["files"] = [e for e in manifest["files"] if e["path"] != taken]
    for entry in manifest["files"]:
        if entry["path"] == "dokument.csv":
            entry["size"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    _write_manifest(delivery, manifest)
    check_delivery(delivery, "treserva")
    with pytest.raises(ContentError) as err:
        _stage(delivery, tmp_path / "staging")
    text = _text(err)
    assert "dokument.csv: line 3: column fil" in text and "belongs to exactly one record" in text
    assert first[header.index("fil")] not in text


# --- class 8: the manifest is kept whole --------------------------------------------------------


def test_a_listed_document_that_no_row_uses_refuses_the_delivery(delivery, tmp_path):
    # A supplier's stray file, named after a person: listed and checksummed, but no row uses it.
    data = b"%PDF-1.7\n% a document that belongs to no record\n"
    stray = f"dokument/{PLANTED_PNR} Åsa Öberg.pdf"
    (delivery / stray).write_bytes(data)
    _list(delivery, stray, data)
    _list(delivery, "bilagor/readme.txt", b"utan rad")
    (delivery / "bilagor").mkdir()
    (delivery / "bilagor" / "readme.txt").write_bytes(b"utan rad")
    check_delivery(delivery, "treserva")  # the manifest and the folder agree
    with pytest.raises(ContentError) as err:
        _stage(delivery, tmp_path / "staging")
    text = _text(err)
    assert "the manifest lists 2 file(s) no record uses" in text
    assert "bilagor/readme.txt" in text and "XXXXXX-XXXX Åsa Öberg.pdf" in text
    assert PLANTED_PNR not in text
    assert not (tmp_path / "staging" / "treserva" / PERIOD).exists(), "nothing staged"


def test_every_used_file_is_accounted_for_in_a_clean_delivery(delivery, tmp_path):
    staged = _stage(delivery, tmp_path / "staging")
    paths = {r["fil"] for f in staged.table_files()["dokument"] for r in pq.read_table(f).to_pylist()}
    assert paths == set(_documents(delivery))


def test_a_row_naming_a_document_missing_from_the_delivery_reaches_the_quality_gate(tmp_path):
    # The simulator's own "missing_file": the gate names the record (see test_treserva_simulator).
    treserva.generate(tmp_path / "inbox", period=PERIOD, size=6, seed=3, bad=1)
    folder = tmp_path / "inbox" / PERIOD
    check_delivery(folder, "treserva")
    staged = _stage(folder, tmp_path / "staging")
    missing = [r for f in staged.table_files()["dokument"] for r in pq.read_table(f).to_pylist()
               if not Path(r["source_path"]).is_file()]
    assert len(missing) == 1


def test_the_pipeline_quarantines_a_delivery_with_an_unused_file_and_opens_a_case(tmp_path, monkeypatch, capsys):
    inbox = tmp_path / "inbox"
    treserva.generate(inbox, period=PERIOD, size=6, seed=3)
    data = b"%PDF-1.7\n"
    stray = f"dokument/{PLANTED_PNR}.pdf"
    (inbox / PERIOD / stray).write_bytes(data)
    _list(inbox / PERIOD, stray, data)
    home = tmp_path / "var"
    monkeypatch.setenv("ARKIV_HOME", str(home))
    monkeypatch.setenv("ARKIV_TRESERVA_INBOX", str(inbox))
    assert main(["run", "treserva", "--start", "2025-12-01", "--end", "2026-01-01"]) == 1
    out = capsys.readouterr()
    assert "no record uses" in out.err and "quarantined" in out.err
    assert not (inbox / PERIOD).exists(), "the delivery left the inbox"
    held = list((home / "quarantine" / "treserva").iterdir())
    assert len(held) == 1 and (held[0] / "delivery" / stray).is_file(), "kept whole, with the unused file"
    cat = Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")
    cases = review.cases(cat)
    assert [c.kind for c in cases] == ["delivery"]
    written = (held[0] / "reason.txt").read_text(encoding="utf-8") + cases[0].reasons + out.err + out.out
    assert "no record uses" in written and PLANTED_PNR not in written
    assert cat.packages() == []
