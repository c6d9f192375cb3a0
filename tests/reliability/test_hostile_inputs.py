"""Hostile and careless deliveries, configurations and requests, by class of fault.

Each case is something a careless supplier or an attacker could send. It runs through the same
public entry points a real delivery reaches (``validate_package``, the prepared-system intake,
``load_system`` and the extraction, the file-export reader, the archive API) and must end
safely: refused or quarantined with a reason, no exception escaping, and none of the planted
sensitive values (a personnummer in every written form, a name) in anything the case wrote
(reports, error texts, quarantine reasons, logs). Every case adds a row to the ``make
reliability`` table (tests/reliability/conftest.py): class, tried, refused cleanly, crashed,
leaks, half-archived batches.

The per-class tests beside the code (tests/transforms, tests/access) go deeper into each rule;
this file is the cross-check that the classes hold at the front door, on inputs shaped like
the outside world's.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import logging
import re
import shutil
import sqlite3
import struct
import tarfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import yaml
from security_support import HOSTILE

from transforms.common.errors import ArkivError, ConfigError
from transforms.common.safe_archive import Limits
from transforms.validation.validator import validate_package

#: Skatteverket's published test personnummer (Tolvan Tolvansson): planted wherever a careless
#: delivery could carry one, and searched for in every form it could be written in
PNR = "19121212-1212"
NAME = "Tolvan Tolvansson"


def planted_forms(pnr: str = PNR) -> list[str]:
    """Every written form of the planted personnummer (12 and 10 digits; dash, en dash, plus, space, none)."""
    digits = pnr.replace("-", "")
    forms = set()
    for body in (digits, digits[2:]):
        for sep in ("-", "\u2013", "+", " ", ""):
            forms.add(f"{body[:-4]}{sep}{body[-4:]}")
    return sorted(forms)


FORMS = [*planted_forms(), NAME, "Tolvansson, Tolvan"]


def leaks(texts: Iterable[str]) -> list[str]:
    """Which planted forms occur in ``texts`` (the forms themselves: this runs on test data only)."""
    found = []
    for text in texts:
        found += [f for f in FORMS if f in text]
    return found


def judge(klass: str, case: str, run: Callable[[], tuple[bool, list[str]]], *, half_archived: int = 0) -> None:
    """Run one hostile case and record its outcome; fail the test unless it ended safely.

    ``run`` returns (refused: the safe outcome happened, texts: everything the case wrote that a
    person or a log would see). An exception escaping ``run`` is a crash.
    """
    refused, crashed, texts = False, False, []
    try:
        refused, texts = run()
    except Exception as exc:  # noqa: BLE001 - a crash is exactly what this records
        crashed = True
        texts = [f"{type(exc).__name__}: {exc}"]
    found = leaks(texts)
    HOSTILE.append({"class": klass, "case": case, "refused": refused, "crashed": crashed,
                    "leaks": len(found), "half_archived": half_archived})
    assert not crashed, f"{case}: an exception escaped: {texts[0][:300]}"
    assert refused, f"{case}: not refused"
    assert not found, f"{case}: {len(found)} planted sensitive value(s) in the output"
    assert not half_archived, f"{case}: {half_archived} half-archived batch(es)"


# --- packages -------------------------------------------------------------------------------------------

def _builder():
    path = Path(__file__).resolve().parents[1] / "transforms" / "test_validate.py"
    spec = importlib.util.spec_from_file_location("arkiv_validate_fixture_hostile", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_package


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    """A valid package as a folder, a tar and a zip (the zip written the way most tools do: deflated)."""
    base = tmp_path_factory.mktemp("hostile-good")
    folder = _builder()(base, "pkg-1")
    assert validate_package(folder).valid
    tar = base / "pkg-1.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as t:
        t.add(folder, arcname="pkg-1")
    zpath = base / "pkg-1.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f"pkg-1/{f.relative_to(folder).as_posix()}")
    assert validate_package(tar).valid and validate_package(zpath).valid
    return {"folder": folder, "tar": tar, "zip": zpath}


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def _report_texts(report) -> list[str]:
    return [json.dumps(report.to_dict(), ensure_ascii=False)]


def _invalid(path: Path, **kw) -> Callable[[], tuple[bool, list[str]]]:
    def run():
        report = validate_package(path, **kw)
        return (not report.valid), _report_texts(report)
    return run


def _patch_zip_method(data: bytes, method: int) -> bytes:
    """Set the compression method of every member, in the local and the central headers alike."""
    b = bytearray(data)
    for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        i = b.find(sig)
        while i >= 0:
            b[i + off:i + off + 2] = struct.pack("<H", method)
            i = b.find(sig, i + 4)
    return bytes(b)


def _flip_in_first_member_data(data: bytes) -> bytes:
    """Flip a byte inside the first zip member's (compressed) data: a corrupt deflate stream or a bad CRC."""
    b = bytearray(data)
    n, m = struct.unpack("<HH", b[26:30])
    start = 30 + n + m
    size = struct.unpack("<I", b[18:22])[0]
    b[start + size // 2] ^= 0x5A
    return bytes(b)


def _rename_local(data: bytes) -> bytes:
    """Change the first member's name in its local header only: local and central directory disagree."""
    b = bytearray(data)
    n = struct.unpack("<H", b[26:28])[0]
    name = bytes(b[30:30 + n])
    b[30:30 + n] = name[:-1] + (b"X" if name[-1:] != b"X" else b"Y")
    return bytes(b)


CONTAINER_CASES = {
    # name in the inbox -> how its bytes are made from the good package
    "polyglot-tar-then-zip.tar": lambda g: _tar_bytes({"pkg-1/README.txt": b"no METS here\n"}) + g["zip"].read_bytes(),
    "zip-inside-tar.tar": lambda g: _tar_bytes({"pkg-1.zip": g["zip"].read_bytes()}),
    "gzip-bytes-named.tar": lambda g: gzip.compress(g["tar"].read_bytes(), mtime=0),
    "tar-bytes-named.zip": lambda g: g["tar"].read_bytes(),
    "junk-before-zip.zip": lambda g: b"MZ" + bytes(4094) + g["zip"].read_bytes(),
    "zip-then-trailing-tar.zip": lambda g: g["zip"].read_bytes() + _tar_bytes({"x/METS.xml": b"<x/>"}),
    "empty.tar": lambda g: b"",
    "random-bytes.zip": lambda g: bytes((i * 7919 + 13) % 256 for i in range(10_000)),
    "only-zero-blocks.tar": lambda g: bytes(10240),
}

DAMAGED_CASES = {
    "zip-corrupt-deflate.zip": lambda g: _flip_in_first_member_data(g["zip"].read_bytes()),
    "zip-bad-crc-stored.zip": lambda g: _flip_in_first_member_data(
        _zip_bytes({f"pkg-1/{p.relative_to(g['folder']).as_posix()}": p.read_bytes()
                    for p in sorted(g["folder"].rglob("*")) if p.is_file()}, zipfile.ZIP_STORED)),
    "zip-unsupported-method.zip": lambda g: _patch_zip_method(g["zip"].read_bytes(), 99),
    "zip-local-central-name-mismatch.zip": lambda g: _rename_local(g["zip"].read_bytes()),
    "zip-truncated.zip": lambda g: g["zip"].read_bytes()[: len(g["zip"].read_bytes()) * 2 // 3],
    "tar-truncated.tar": lambda g: g["tar"].read_bytes()[: len(g["tar"].read_bytes()) * 3 // 5],
    "tar-bad-header-checksum.tar": lambda g: (lambda b: b[:1536] + bytes([b[1536] ^ 0x20]) + b[1537:])(
        g["tar"].read_bytes()),
}


@pytest.mark.parametrize("name", sorted(CONTAINER_CASES))
def test_a_container_is_what_its_first_bytes_say(good, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(CONTAINER_CASES[name](good))
    judge("containers: first bytes decide", name, _invalid(path))


@pytest.mark.parametrize("name", sorted(DAMAGED_CASES))
def test_a_damaged_container_is_a_report_not_a_crash(good, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(DAMAGED_CASES[name](good))
    judge("damaged containers and parsers", name, _invalid(path))


BILLION_LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa">'
                  b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">'
                  b'<!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]><mets>&d;&d;&d;&d;</mets>')
METS_CASES = {
    "mets-cut-in-half": lambda b: b[: len(b) // 2],
    "mets-entity-expansion": lambda b: BILLION_LAUGHS,
    "mets-external-entity": lambda b: (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                                       b"<mets>&x;</mets>"),
    "mets-unknown-encoding": lambda b: b.replace(b'encoding="UTF-8"', b'encoding="x-no-such"', 1)
    if b'encoding="UTF-8"' in b else b'<?xml version="1.0" encoding="x-no-such"?>' + b,
    "mets-nul-bytes": lambda b: b.replace(b">", b">\x00", 3),
    "mets-personnummer-in-bad-attribute": lambda b: b.replace(b"<mets:mets ", f'<mets:mets x="{PNR}" '.encode(), 1)
    .replace(b"OBJID=", b"OBJID=\"\" BAD=", 1),
}


@pytest.mark.parametrize("name", sorted(METS_CASES))
def test_a_broken_mets_is_a_report_not_a_crash(good, tmp_path, name):
    folder = tmp_path / "pkg-1"
    shutil.copytree(good["folder"], folder)
    mets = folder / "METS.xml"
    mets.write_bytes(METS_CASES[name](mets.read_bytes()))

    def run():
        report = validate_package(folder)
        texts = _report_texts(report)
        assert "root:x:0:0" not in texts[0], "an external entity was resolved"
        return (not report.valid), texts
    judge("damaged containers and parsers", name, run)


def _sparse_tar(members: dict[str, int]) -> bytes:
    """A PAX 1.0 sparse tar (as GNU tar writes for sparse files): each member stores 512 bytes of
    data but declares ``realsize`` bytes once expanded."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, realsize in members.items():
            body = b"1\n0\n512\n".ljust(512, b"\x00") + b"x" * 512
            info = tarfile.TarInfo(f"pkg/GNUSparseFile.0/{name.rsplit('/', 1)[-1]}")
            info.size = len(body)
            info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": name,
                                "GNU.sparse.realsize": str(realsize)}
            t.addfile(info, io.BytesIO(body))
    return out.getvalue()


def _zip_bomb() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("pkg/METS.xml", b"<mets/>")
        with z.open("pkg/representations/rep1/data/zeros.bin", "w") as f:
            chunk = bytes(1 << 20)
            for _ in range(64):
                f.write(chunk)
    return out.getvalue()


LIMIT_CASES: dict[str, tuple[Callable[[dict], bytes], str, dict]] = {
    "names-collide-after-nfc.tar": (lambda g: _tar_bytes({
        "pkg/METS.xml": b"<mets/>", unicodedata.normalize("NFC", "pkg/data/år.txt"): b"a",
        unicodedata.normalize("NFD", "pkg/data/år.txt"): b"b"}), "tar", {}),
    "names-differ-only-in-case.zip": (lambda g: _zip_bytes({
        "pkg/METS.xml": b"<mets/>", "pkg/data/Beslut.pdf": b"a", "pkg/data/beslut.PDF": b"b"}), "zip", {}),
    "sparse-members-expand-past-limit.tar": (lambda g: _sparse_tar({
        "pkg/data/a.img": 40 * 1024**3, "pkg/data/b.img": 40 * 1024**3}), "tar", {}),
    "one-sparse-member-past-member-limit.tar": (lambda g: _sparse_tar({"pkg/data/a.img": 3 * 1024**2}), "tar",
                                                {"limits": Limits(max_member_bytes=1024**2)}),
    "zip-bomb.zip": (lambda g: _zip_bomb(), "zip", {}),
    "too-many-members.tar": (lambda g: _tar_bytes({f"pkg/data/{i}.txt": b"x" for i in range(50)}), "tar",
                             {"limits": Limits(max_members=20)}),
    "tar-expands-past-total-limit.tar": (lambda g: _tar_bytes({f"pkg/data/{i}.bin": bytes(4096) for i in range(8)}),
                                         "tar", {"limits": Limits(max_total_bytes=16 * 1024)}),
    "personnummer-in-member-name.tar": (lambda g: _tar_bytes({
        "pkg/METS.xml": b"<mets/>", f"pkg/data/{PNR} utredning.txt\n[fake] line": b"x"}), "tar", {}),
}


@pytest.mark.parametrize("name", sorted(LIMIT_CASES))
def test_limits_count_what_would_be_written(tmp_path, good, name):
    make, _, kw = LIMIT_CASES[name]
    path = tmp_path / name
    path.write_bytes(make(good))
    judge("limits and names", name, _invalid(path, **kw))


def test_one_bad_delivery_never_blocks_the_others(good, tmp_path, caplog):
    """Every hostile container in one inbox beside one good package: the good one is taken in,
    each bad one is quarantined on its own with a reason, and nothing escapes."""
    from transforms.intake.prepared import take_in

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copyfile(good["tar"], inbox / "pkg-1.tar")
    bad = {**CONTAINER_CASES, **DAMAGED_CASES}
    for name, make in bad.items():
        (inbox / name).write_bytes(make(good))
    caplog.set_level(logging.DEBUG)

    def run():
        intakes = take_in(inbox, tmp_path / "build", tmp_path / "quarantine")
        by_source = {i.source: i for i in intakes}
        assert by_source["pkg-1.tar"].outcome in ("valid", "repaired"), by_source["pkg-1.tar"].findings
        refused = all(by_source[n].outcome == "quarantined" and by_source[n].findings
                      for n in bad if n in by_source)
        # every delivery was judged (a name the intake does not take, e.g. no known suffix, stays in the inbox)
        judged = set(by_source) | {p.name for p in inbox.iterdir()}
        texts = [json.dumps([i.__dict__ for i in intakes], ensure_ascii=False, default=str), caplog.text]
        texts += [p.read_text("utf-8", "replace") for p in (tmp_path / "quarantine").rglob("*.json")]
        return refused and set(bad) <= judged, texts
    judge("one bad delivery among good ones", "inbox with 16 hostile containers and one good package", run)


# --- system configuration: sources are read, never written ---------------------------------------------

LEX_YAML = Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml"
WRITING_SQL = {
    "drop-table": "DROP TABLE cases",
    "two-statements": "SELECT case_id FROM cases ORDER BY case_id; DELETE FROM cases",
    "delete-returning": "DELETE FROM cases WHERE closed_date >= :start AND closed_date < :end RETURNING *",
    "update-returning": "UPDATE cases SET title = 'x' WHERE closed_date >= :start RETURNING *",
    "writing-cte": ("WITH gone AS (DELETE FROM cases RETURNING *) SELECT * FROM gone "
                    "WHERE closed_date >= :start AND closed_date < :end"),
    "select-into": "SELECT * INTO stolen FROM cases",
    "comment-hides-second-statement": "SELECT case_id FROM cases /* ; */ ORDER BY case_id;\nDROP TABLE documents",
}


def _table_digest(db: Path) -> list:
    with sqlite3.connect(db) as c:
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return [(t, c.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables]  # noqa: S608


@pytest.mark.parametrize("case", sorted(WRITING_SQL))
def test_a_system_yaml_that_would_write_is_refused(tmp_path, small_lex, case):
    doc = yaml.safe_load(LEX_YAML.read_text(encoding="utf-8"))
    doc["extract"]["tables"]["cases"]["query"] = WRITING_SQL[case]
    systems = tmp_path / "systems"
    systems.mkdir()
    (systems / "lex.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    db = Path(small_lex["url"].removeprefix("sqlite:///"))
    copy = tmp_path / "lex.sqlite"
    shutil.copyfile(db, copy)
    before = _table_digest(copy)

    def run():
        from transforms.config.systems import load_system

        try:
            load_system(systems / "lex.yaml")
        except ConfigError as exc:
            text = str(exc)
            named = "lex" in text and "cases" in text
            return named and _table_digest(copy) == before, [text]
        # not refused at load: the first run must refuse it and leave the source as it was
        import datetime as dt

        from transforms.config.systems import load_system as load
        from transforms.intake.database import extract_database

        try:
            extract_database(load(systems / "lex.yaml"), f"sqlite:///{copy}", dt.datetime(2025, 1, 1),
                             dt.datetime(2026, 1, 1), tmp_path / "staging", env={})
        except ArkivError as exc:
            return _table_digest(copy) == before, [str(exc)]
        return False, []
    judge("sources are read, never written", case, run)


def test_planted_values_are_searched_in_every_form():
    """The leak check itself: it must see a personnummer however it is written."""
    for text in ("a 121212-1212 b", "191212121212", "c 19121212\u20131212", "1212121212", "d Tolvan Tolvansson"):
        assert leaks([text]), text
    assert not leaks(["19XXXXXX-XXXX, (dolt / masked: 17 tecken / characters)"])
    assert re.fullmatch(r"\d{8}-\d{4}", PNR)


# --- file-export deliveries: confined, whole, text as declared, no values in messages ------------------

TRESERVA_PERIOD = "2025-12"
#: what a link in a delivery would let us read if it were followed
OUTSIDE_SECRET = "HEMLIG-UTANFÖR-LEVERANSEN"


def _csv_rows(path: Path) -> list[str]:
    return path.read_bytes().decode("windows-1252").splitlines()


def _write_listed(folder: Path, rel: str, data: bytes, *, listed: bool = True) -> None:
    """Write ``rel`` in the delivery and make the manifest's size and SHA-256 agree with it."""
    import hashlib

    target = folder / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    entry = {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    files = [f for f in manifest["files"] if f["path"] != rel]
    manifest["files"] = files + ([entry] if listed else [])
    (folder / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")


def _plant(folder: Path) -> None:
    """Put the planted personnummer and name into the first case and party, as a real export would hold them."""
    akter = _csv_rows(folder / "akter.csv")
    cells = akter[1].split(";")
    cells[3] = PNR.replace("-", "")
    akter[1] = ";".join(cells)
    _write_listed(folder, "akter.csv", ("\r\n".join(akter) + "\r\n").encode("windows-1252"))
    parter = _csv_rows(folder / "parter.csv")
    cells = parter[1].split(";")
    cells[3], cells[4] = PNR.replace("-", ""), f'"{NAME.split()[1]}, {NAME.split()[0]}"'
    parter[1] = ";".join(cells)
    _write_listed(folder, "parter.csv", ("\r\n".join(parter) + "\r\n").encode("windows-1252"))


def _journal_with(folder: Path, text_bytes: bytes) -> None:
    """Replace the first journal note's text with ``text_bytes`` (written as they are)."""
    raw = (folder / "journal.csv").read_bytes()
    lines = raw.split(b"\r\n")
    head, rest = lines[1].rsplit(b";", 1)
    lines[1] = head + b';"' + text_bytes + b'"'
    _write_listed(folder, "journal.csv", b"\r\n".join(lines))


def _cut_header(folder: Path) -> None:
    _write_listed(folder, "akter.csv", (folder / "akter.csv").read_bytes().split(b"\r\n", 1)[1])


def _link_document(folder: Path) -> None:
    doc = sorted((folder / "dokument").iterdir())[0]
    secret = folder.parent.parent / "elsewhere" / "secret.pdf"
    data = doc.read_bytes()
    doc.unlink()
    doc.symlink_to(secret)
    assert secret.read_bytes() != data


def _link_folder(folder: Path) -> None:
    outside = folder.parent.parent / "elsewhere" / "dokument"
    shutil.copytree(folder / "dokument", outside)
    for f in outside.iterdir():
        f.write_text(OUTSIDE_SECRET, encoding="utf-8")
    shutil.rmtree(folder / "dokument")
    (folder / "dokument").symlink_to(outside, target_is_directory=True)


def _manifest_escapes(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"].append({"path": "../../elsewhere/secret.pdf", "size": len(OUTSIDE_SECRET.encode()),
                              "sha256": "0" * 64})
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def _unused_listed_file(folder: Path) -> None:
    _write_listed(folder, "dokument/bilaga-utan-rad.pdf", b"%PDF-1.4\n% not used by any row\n%%EOF\n")


def _row_names_file(target: str) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        rows = _csv_rows(folder / "dokument.csv")
        cells = rows[2].split(";")
        cells[7] = target if target != "first-document" else rows[1].split(";")[7]
        rows[2] = ";".join(cells)
        _write_listed(folder, "dokument.csv", ("\r\n".join(rows) + "\r\n").encode("windows-1252"))
    return mutate


EXPORT_CASES: dict[str, Callable[[Path], None]] = {
    "csv-without-header-row": _cut_header,
    "utf8-bytes-in-windows-1252-file": lambda f: _journal_with(f, f"Samtal med {NAME} på kontoret".encode()),
    "byte-order-mark-mid-file": lambda f: _journal_with(f, "\ufeffSamtal".encode()),
    "nul-in-a-value": lambda f: _journal_with(f, b"Samtal\x00 med klienten"),
    "escape-character-in-a-value": lambda f: _journal_with(f, b"Samtal \x1b[31m med klienten"),
    "document-is-a-symlink": _link_document,
    "document-folder-is-a-symlink": _link_folder,
    "manifest-path-leaves-delivery": _manifest_escapes,
    "manifest-lists-a-file-no-row-uses": _unused_listed_file,
    "row-names-the-manifest": _row_names_file("manifest.json"),
    "row-names-a-table-file": _row_names_file("akter.csv"),
    "two-rows-share-one-document": _row_names_file("first-document"),
}


def _readable_outputs(home: Path) -> list[str]:
    """Everything a run wrote that people and logs read: not the delivery kept in quarantine (records by
    design) and not staging or packages (records too); the catalogue as every row of every table."""
    import sqlalchemy as sa

    texts = []
    skip = ("staging", "mellanarkiv", "slutarkiv", "build")
    for p in home.rglob("*"):
        rel = p.relative_to(home).parts
        if not p.is_file() or rel[0] in skip or "delivery" in rel or p.suffix in (".sqlite", ".parquet"):
            continue
        texts.append(p.read_bytes().decode("utf-8", "replace"))
    db = home / "catalogue" / "catalogue.sqlite"
    if db.is_file():
        eng = sa.create_engine(f"sqlite:///{db}")
        with eng.connect() as c:
            for (table,) in c.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'"):
                texts += [repr(tuple(r)) for r in c.exec_driver_sql(f'SELECT * FROM "{table}"')]  # noqa: S608
        eng.dispose()
    return texts


@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_a_hostile_file_export_is_quarantined_whole(tmp_path, monkeypatch, capsys, caplog, case):
    from demo import treserva
    from transforms.catalogue import Catalogue
    from transforms.cli import main

    inbox = tmp_path / "inbox"
    treserva.generate(inbox, period=TRESERVA_PERIOD, size=6, seed=3)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.pdf").write_text(OUTSIDE_SECRET, encoding="utf-8")
    folder = inbox / TRESERVA_PERIOD
    _plant(folder)
    EXPORT_CASES[case](folder)
    home = tmp_path / "var"
    monkeypatch.setenv("ARKIV_HOME", str(home))
    monkeypatch.setenv("ARKIV_TRESERVA_INBOX", str(inbox))
    caplog.set_level(logging.INFO)

    def run():
        code = main(["run", "treserva", "--start", "2025-12-01", "--end", "2026-01-01"])
        out = capsys.readouterr()
        cat = Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")
        from transforms.quality import quarantine as review

        refused = code != 0 and not cat.packages() and bool(review.cases(cat))
        texts = [out.out, out.err, caplog.text, *_readable_outputs(home)]
        everywhere = texts + [p.read_bytes().decode("utf-8", "replace") for p in home.rglob("*")
                              if p.is_file() and "delivery" not in p.relative_to(home).parts]
        assert not any(OUTSIDE_SECRET in t for t in everywhere), "a file outside the delivery was read"
        return refused, texts
    judge("file-export deliveries", case, run)


# --- a prepared system's inbox, end to end: bad containers beside good ones, a zip read like a tar -----

def test_prepared_inbox_archives_the_good_and_quarantines_each_bad_one(tmp_path, monkeypatch, capsys):
    """Castor's inbox with three valid packages (one a zip) and five hostile containers made from a
    valid one: ``arkiv run castor`` archives the three, quarantines the five, and the zip's records
    are searched, read and downloaded, with a receipt, exactly as a tar's are."""
    import hashlib

    from fastapi.testclient import TestClient

    from demo import castor
    from transforms.access.api import create_app
    from transforms.access.auth import add_credential
    from transforms.catalogue import Catalogue
    from transforms.cli import main
    from transforms.config.settings import Settings

    inbox = tmp_path / "inbox"
    castor.generate(inbox, size=3, seed=4, as_zip=1)
    zipped = next(inbox.glob("*.zip"))
    good_tar = next(inbox.glob("*.tar"))
    hostile = {
        "polyglot.tar": _tar_bytes({"x/README.txt": b"no METS\n"}) + zipped.read_bytes(),
        "zip-in-tar.tar": _tar_bytes({zipped.name: zipped.read_bytes()}),
        "gzip-named.tar": gzip.compress(good_tar.read_bytes(), mtime=0),
        "corrupt.zip": _flip_in_first_member_data(zipped.read_bytes()),
        "cut-short.tar": good_tar.read_bytes()[: good_tar.stat().st_size // 2],
    }
    for name, data in hostile.items():
        (inbox / name).write_bytes(data)
    home = tmp_path / "var"
    monkeypatch.setenv("ARKIV_HOME", str(home))
    monkeypatch.setenv("ARKIV_CASTOR_INBOX", str(inbox))

    def run():
        main(["run", "castor", "--start", "2026-01-01", "--end", "2026-01-02"])
        out = capsys.readouterr()
        cat = Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")
        packages = cat.packages()
        assert len(packages) == 3, [p.location for p in packages]
        quarantined = [p.name for p in (home / "quarantine" / "castor").rglob("*") if p.name in hostile]
        assert sorted(quarantined) == sorted(hostile), quarantined
        zip_pkg = next(p for p in packages if p.location.lower().endswith(".zip"))

        settings = Settings.from_env().ensure()
        client = TestClient(create_app(settings))
        token = add_credential(cat, "anna-arkivarie", "archivist", by="test")
        auth = {"Authorization": f"Bearer {token}", "X-Purpose": "kontroll"}
        hits = client.post("/api/v1/search", json={"system": "castor", "limit": 100}, headers=auth)
        assert hits.status_code == 200, hits.text
        in_zip = [h for h in hits.json()["hits"] if h.get("package_id") == zip_pkg.id]
        assert in_zip, "the zip package's records are not found by search"
        rec = client.get(f"/api/v1/records/castor/{in_zip[0]['source_id']}", headers=auth)
        assert rec.status_code == 200, rec.text
        docs = [d for d in rec.json()["documents"] if d.get("sha256")]
        assert docs, "a record of the zip package without documents"
        got = client.get(f"/api/v1/records/castor/{in_zip[0]['source_id']}/documents/{docs[0]['document_id']}",
                         headers=auth)
        assert got.status_code == 200, got.text[:300]
        assert hashlib.sha256(got.content).hexdigest() == docs[0]["sha256"]
        receipt = client.get(f"/api/v1/receipts/{zip_pkg.id}", headers=auth)
        assert receipt.status_code == 200, receipt.text[:300]
        return True, [out.out, out.err]
    judge("one bad delivery among good ones", "castor inbox: 3 good packages (one zip) and 5 hostile ones", run)


# --- a delivered package's records point at files that are not theirs -----------------------------------

def _repoint_appendix(tar_path: Path, out: Path, target: Callable[[list[str]], str]) -> None:
    """Rewrite a delivered Castor package so the last case's first appendix names ``target(paths)``
    (paths: every appendix path of the ERMS, in order), with the METS checksum of the ERMS made to
    match: a package that is internally consistent and still points a record at a file not its own."""
    import hashlib

    work = out.parent / f"{out.stem}-work"
    with tarfile.open(tar_path) as t:
        t.extractall(work, filter="data")
    (root,) = list(work.iterdir())
    erms = root / "metadata" / "descriptive" / "ERMS.xml"
    text = erms.read_text(encoding="utf-8")
    paths = re.findall(r'<appendix [^>]*path="([^"]+)"', text)
    last = text.rindex("<aggregation ")
    first_in_last = last + text[last:].index('path="') + len('path="')
    end = text.index('"', first_in_last)
    text = text[:first_in_last] + target(paths) + text[end:]
    erms.write_text(text, encoding="utf-8")
    data = erms.read_bytes()
    mets = root / "METS.xml"
    m = mets.read_text(encoding="utf-8")
    m = re.sub(r'(xlink:href="metadata/descriptive/ERMS.xml"[^>]*?SIZE=")\d+', rf"\g<1>{len(data)}", m)
    m = re.sub(r'(xlink:href="metadata/descriptive/ERMS.xml"[^>]*?CHECKSUM=")[0-9a-f]+',
               rf"\g<1>{hashlib.sha256(data).hexdigest()}", m)
    mets.write_text(m, encoding="utf-8")
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        t.add(root, arcname=root.name)
    shutil.rmtree(work)


CROSS_RECORD = {
    "appendix-names-another-cases-file": lambda paths: paths[0],
    "appendix-names-the-mets": lambda paths: "../../METS.xml",
    "appendix-names-premis": lambda paths: "../preservation/premis.xml",
    "appendix-leaves-the-package": lambda paths: "../../../other-package/representations/rep1/data/x.pdf",
    "appendix-is-absolute": lambda paths: "/etc/passwd",
}


@pytest.mark.parametrize("case", sorted(CROSS_RECORD))
def test_a_delivered_record_pointing_at_a_file_not_its_own_is_quarantined(tmp_path, case):
    from demo import castor
    from transforms.intake.prepared import take_in

    source = tmp_path / "made"
    castor.generate(source, size=1, seed=4, as_zip=0)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (delivered,) = list(source.glob("*.tar"))
    _repoint_appendix(delivered, inbox / delivered.name, CROSS_RECORD[case])

    def run():
        (intake,) = take_in(inbox, tmp_path / "build", tmp_path / "quarantine")
        texts = [json.dumps(intake.__dict__, ensure_ascii=False, default=str)]
        texts += [p.read_text("utf-8", "replace") for p in (tmp_path / "quarantine").rglob("*.json")]
        named = any("belongs to its record" in f for f in intake.findings)
        return intake.outcome == "quarantined" and named and not list((tmp_path / "build").glob("*.tar")), texts
    judge("a file belongs to its record", case, run)


# --- requests to the archive API ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api(small_lex, tmp_path_factory):
    """An archived and indexed Lex behind the archive API, with an archivist's and a client's token."""
    import datetime as dt

    import sqlalchemy as sa
    from fastapi.testclient import TestClient

    from transforms.access.api import create_app
    from transforms.access.auth import add_credential
    from transforms.catalogue import Catalogue
    from transforms.cli import main
    from transforms.config.settings import Settings

    home = tmp_path_factory.mktemp("hostile-api") / "var"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARKIV_HOME", str(home))
        mp.setenv("ARKIV_LEX_FILES", str(small_lex["files"]))
        mp.setenv("ARKIV_CONN_LEX_DB", small_lex["url"])
        mp.delenv("ARKIV_CATALOGUE_URL", raising=False)
        assert main(["run", "lex", "--start", "2025-01-01", "--end", "2026-01-01"]) == 0
        settings = Settings.from_env().ensure()
    cat = Catalogue(settings.catalogue_url)
    eng = sa.create_engine(small_lex["url"])
    with eng.connect() as c:
        archived = {r[0] for r in cat.engine.connect().exec_driver_sql("SELECT source_id FROM records")}
        cases = [r for r in c.execute(sa.text("SELECT case_id, secrecy FROM cases")) if str(r[0]) in archived]
        docs = list(c.execute(sa.text("SELECT document_id, case_id, secrecy FROM documents")))
    eng.dispose()
    public = next(str(cid) for cid, sec in cases if not sec)
    secret_doc = next((str(d), str(cid)) for d, cid, dsec in docs
                      if str(cid) in archived and (dsec or dict(cases).get(cid)))
    import time

    expired = add_credential(cat, "gammal", "client", system="lex", by="test", ttl=dt.timedelta(seconds=1))
    time.sleep(1.2)
    return {"client": TestClient(create_app(settings), raise_server_exceptions=False), "cat": cat,
            "archivist": add_credential(cat, "anna-arkivarie", "archivist", by="test"),
            "lex": add_credential(cat, "lex-client", "client", system="lex", by="test"),
            "expired": expired, "public": public, "secret_doc": secret_doc}


def _requests(a: dict) -> dict[str, tuple[Callable, set[int]]]:
    c = a["client"]
    arch = {"Authorization": f"Bearer {a['archivist']}"}
    lex = {"Authorization": f"Bearer {a['lex']}"}
    doc, owner = a["secret_doc"]
    return {
        "personnummer-in-search-url": (lambda: c.get(f"/api/v1/search?personnummer={PNR}", headers=arch), {400}),
        "free-text-in-search-url": (lambda: c.get(f"/api/v1/search?q={NAME}", headers=arch), {400}),
        "purpose-in-url": (lambda: c.get(f"/api/v1/records/lex/{a['public']}?purpose={NAME}", headers=arch),
                           {400}),
        "token-in-url": (lambda: c.get(f"/api/v1/packages?access_token={a['archivist']}"), {400, 401}),
        "basic-auth": (lambda: c.get("/api/v1/packages", headers={"Authorization": "Basic YTpi"}), {401}),
        "two-tokens": (lambda: c.get("/api/v1/packages", headers={"Authorization": f"Bearer {a['lex']} x"}),
                       {400, 401}),
        "expired-token": (lambda: c.get("/api/v1/packages", headers={"Authorization": f"Bearer {a['expired']}"}),
                          {401}),
        "nul-in-path": (lambda: c.get("/api/v1/records/lex/1%00", headers=arch), {400, 404}),
        "limit-out-of-range": (lambda: c.get(f"/api/v1/search?limit={10**30}", headers=arch), {422}),
        "negative-offset": (lambda: c.get("/api/v1/search?offset=-5", headers=arch), {422}),
        "oversized-body": (lambda: c.post("/api/v1/search", content=b'{"q": "' + b"a" * (2 << 20) + b'"}',
                                          headers={**arch, "Content-Type": "application/json"}), {413, 422}),
        "invalid-utf8-body": (lambda: c.post("/api/v1/search", content=b'{"q": "\xff\xfe"}',
                                             headers={**arch, "Content-Type": "application/json"}), {400, 422}),
        "secret-document-through-a-public-case": (
            lambda: c.get(f"/api/v1/records/lex/{a['public']}/documents/{doc}", headers=lex), {403, 404}),
        "secret-document-through-its-own-case": (
            lambda: c.get(f"/api/v1/records/lex/{owner}/documents/{doc}", headers=lex), {403, 404}),
        "path-traversal-as-document-id": (
            lambda: c.get(f"/api/v1/records/lex/{a['public']}/documents/..%2F..%2FMETS.xml", headers=lex),
            {400, 403, 404, 422}),
        "forged-log-line-in-purpose": (
            lambda: c.get(f"/api/v1/records/lex/{a['public']}",
                          headers={**lex, "X-Purpose": "kontroll%0D%0A2026-01-01 granted anna lex/1"}),
            {200, 400}),
    }


REQUEST_CASES = ["personnummer-in-search-url", "free-text-in-search-url", "purpose-in-url", "token-in-url",
                 "basic-auth", "two-tokens", "expired-token", "nul-in-path", "limit-out-of-range",
                 "negative-offset", "oversized-body", "invalid-utf8-body", "secret-document-through-a-public-case",
                 "secret-document-through-its-own-case", "path-traversal-as-document-id",
                 "forged-log-line-in-purpose"]


@pytest.mark.parametrize("case", REQUEST_CASES)
def test_a_hostile_request_gets_a_4xx_and_leaves_no_value_behind(api, case):
    send, allowed = _requests(api)[case]

    def run():
        answer = send()
        with api["cat"].engine.connect() as c:
            rows = [tuple(r) for r in c.exec_driver_sql("SELECT * FROM access_log")]
        assert not any("\r" in str(v) or "\n" in str(v) for r in rows for v in r), "a raw line break in the log"
        log = [repr(r) for r in rows]
        safe = answer.status_code in allowed and answer.status_code != 500
        return safe, [answer.text[:20000], *log]
    judge("requests to the archive API", case, run)


# --- a batch whose second package cannot be stored -------------------------------------------------------

def test_a_batch_stopped_half_way_is_reported_and_completed_by_a_rerun(small_lex, tmp_path, monkeypatch, capsys):
    """The second package of a Lex interval is damaged on disk between build and ship (the store's
    checksum check refuses it) after the first was stored: the batch must not read as archived,
    `arkiv reconcile` must report it, and a rerun must archive it with every package once. A batch
    left partly stored and not reported, or not completed by the rerun, counts as half-archived."""
    import os

    from transforms import pipeline
    from transforms.catalogue import Batch
    from transforms.cli import main
    from transforms.config.settings import Settings

    for k in list(os.environ):
        if k.startswith("ARKIV_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("ARKIV_LEX_FILES", str(small_lex["files"]))
    monkeypatch.setenv("ARKIV_CONN_LEX_DB", small_lex["url"])
    settings = Settings.from_env().ensure()

    def chain(damage: int | None):
        batch = pipeline.extract(settings, "lex", "2025-01-01", "2026-01-01", small_lex["url"])
        pipeline.check_quality(settings, "lex", batch["manifest"])
        built = [p for rc in batch["record_classes"] for p in pipeline.package(settings, "lex", batch["manifest"], rc)]
        results = []
        for n, pkg in enumerate(built):
            if n == damage:
                with open(pkg["path"], "r+b") as fh:
                    fh.seek(os.path.getsize(pkg["path"]) // 2)
                    fh.write(b"\xff" * 64)
            results.append(pipeline.record(settings, pipeline.verify(settings, pipeline.ship(settings, pkg))))
        return pipeline.finish_batch(settings, "lex", batch["manifest"], results)

    def reconcile() -> dict:
        capsys.readouterr()
        main(["reconcile", "--json", "--grace", "0"])
        return json.loads(capsys.readouterr().out)

    half = 0
    texts: list[str] = []
    try:
        chain(damage=1)
    except ArkivError as exc:
        texts.append(str(exc))
    cat = pipeline.catalogue(settings)
    with cat.session() as s:
        status = s.get(Batch, "lex/2025").status
    stored = len(cat.packages("lex"))
    report = reconcile()
    texts.append(json.dumps(report, ensure_ascii=False))
    reported = any(f["kind"] == "partial_batch" and f["key"] == "lex/2025" for f in report["findings"])
    if stored and status != "archived" and not reported:
        half += 1
    if status == "archived":
        half += 1  # archived with a package missing
    chain(damage=None)
    with cat.session() as s:
        status = s.get(Batch, "lex/2025").status
    ids = [p.id for p in cat.packages("lex")]
    if status != "archived" or len(ids) != len(set(ids)) or not reconcile()["consistent"]:
        half += 1
    judge("a batch is archived whole or not at all", "second of two packages refused by the store",
          lambda: (stored == 1 and reported, texts), half_archived=half)
