"""Text is what its declaration says, or it is not archived.

UTF-8 bytes in a file declared windows-1252 or ISO-8859-1 (mojibake: ``Ã¥`` for ``å``), a
byte-order mark after the first bytes of a file (two Excel exports concatenated), NUL and
other control characters (a C program's fixed-size buffer, a terminal escape pasted into a
database) are refused: a file-export delivery by its reader, naming file, line, column and
rule; any staged batch, a database's too, by the quality gate as failed checks naming the
table, column, rule and the offending records' ids. Never with the value itself.
"""

from __future__ import annotations

import codecs
import datetime as dt
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml

from demo import treserva
from transforms.catalogue import Catalogue
from transforms.cli import main
from transforms.common.errors import ContentError
from transforms.config.systems import load_system
from transforms.intake.file_export import FileExportSource, check_delivery
from transforms.quality import checks as quality
from transforms.quality.checks import TEXT_BOM, TEXT_CONTROL, TEXT_MOJIBAKE, text_faults
from transforms.staging.batch import stage

ROOT = Path(__file__).resolve().parents[2]
PNR = "19811218-9876"
NAME = "Åsa Öberg-Lindqvist"
COLUMNS = {
    "klient_id": {"type": "int64", "description": "id"},
    "personnr": {"type": "string", "description": "personnummer"},
    "namn": {"type": "string", "description": "name"},
    "anteckning": {"type": "string", "description": "journal note"},
}
HEADER = "klient_id;personnr;namn;anteckning\r\n"


def _system(tmp_path: Path, fmt: str, encoding: str):
    doc = {
        "system": "export", "title": "Export test", "schedule": "0 4 1 * *", "start_date": "2024-01-01",
        "agreement": {"archive_creator": {"name": "Strängnäs kommun", "organisationsnummer": "212000-0357"},
                      "submitter": {"name": "Socialnämnden", "organisationsnummer": "212000-0357"},
                      "submission_agreement": "LA-1", "reference_code": "SE/X"},
        "extract": {"kind": "file_export", "inbox_env": "ARKIV_EXPORT_INBOX", "format": fmt, "encoding": encoding,
                    "tables": {"klienter": {"key": "klient_id", "file": f"klienter.{fmt}", "columns": COLUMNS}}},
        "record_classes": [{"name": "alla", "title": "Alla", "match": {"default": True},
                            "retention": {"action": "keep", "counted_from": "klient_id", "period": "P0D",
                                          "basis": "test"}}],
        "content": {"kind": "tabular"}, "quality": {"suite": "x.json"},
    }
    if fmt == "csv":
        doc["extract"]["csv"] = {"delimiter": ";", "decimal": ","}
    path = tmp_path / "export.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return load_system(path)


def _deliver(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    entries = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        entries.append({"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    (folder / "manifest.json").write_text(json.dumps({"files": entries}), encoding="utf-8")
    return folder


def _refused(system, folder: Path, staging: Path) -> str:
    check_delivery(folder, system.name)  # the delivery itself is in order: only its text is not
    with pytest.raises(ContentError) as err:
        stage(system, FileExportSource(system, folder), dt.datetime(2025, 12, 1), dt.datetime(2026, 1, 1), staging)
    assert not list(staging.rglob("*.parquet")), "nothing staged"
    return str(err.value) + "\n" + "\n".join(err.value.details)


def _no_values(text: str, *values: str) -> None:
    for v in values:
        assert v not in text, f"a planted value reached the message: {v!r}"
        for enc in ("cp1252", "latin-1"):  # nor its mojibake
            try:
                garbled = v.encode("utf-8").decode(enc)
            except UnicodeDecodeError:
                continue
            assert garbled not in text


# --- the rules themselves ------------------------------------------------------------------------


@pytest.mark.parametrize("text, rules", [
    ("Ã¥sa", (TEXT_MOJIBAKE,)),
    ("Ã…ke Ã–berg", (TEXT_MOJIBAKE,)),  # Å and Ö read as windows-1252
    ("Ã\x85ke", (TEXT_CONTROL, TEXT_MOJIBAKE)),  # Å read as ISO-8859-1: a C1 control appears
    ("Barn och unga â€“ utredning", (TEXT_MOJIBAKE,)),
    ("Ã©tÃ©", (TEXT_MOJIBAKE,)),
    ("JoviÄ‡", (TEXT_MOJIBAKE,)),  # ć
    ("Å‚ukasz", (TEXT_MOJIBAKE,)),  # ł
    ("Åsa\x00\x00\x00\x00", (TEXT_CONTROL,)),
    ("\x1b[31mröd\x1b[0m", (TEXT_CONTROL,)),
    ("rad\x85rad", (TEXT_CONTROL,)),
    ("id\ufeff", (TEXT_BOM,)),
    ("\ufeffklient_id", (TEXT_BOM,)),
])
def test_faulty_text_breaks_its_rule(text, rules):
    assert text_faults(text) == rules
    assert quality.may_be_faulty(text)


@pytest.mark.parametrize("text", [
    NAME, "räksmörgås ÅÄÖ åäö", "Besök; samtal om \"boende\"\r\nfortsätter\tnästa vecka", "«citat» – “så” 5 €",
    "Ærø, naïve café, São Paulo, Müller, Øresund", "12345,50", "", "Ü½ ¼ ¾ °C ± µ §",
    "Hon skrev ”NÄ” och ”GÅ…”", "Jović, Łukasz, Božić, Šimić",
])
def test_clean_swedish_and_european_text_passes(text):
    assert text_faults(text) == ()


# --- file-export deliveries -----------------------------------------------------------------------


def test_utf8_in_a_delivery_declared_windows_1252_is_refused_by_rule_line_and_column(tmp_path):
    system = _system(tmp_path, "csv", "windows-1252")
    text = HEADER + f"1;{PNR};Per Persson;\r\n2;;{NAME};Möte på kontoret\r\n3;;Ärlig Åkesson;\r\n"
    folder = _deliver(tmp_path / "inbox" / "2025-12", {"klienter.csv": text.encode("utf-8")})
    message = _refused(system, folder, tmp_path / "staging")
    assert TEXT_MOJIBAKE in message and "declared windows-1252" in message
    assert "2025-12/klienter.csv: column namn: 2 value(s)" in message and "line 3, 4" in message
    assert "column anteckning: 1 value(s)" in message
    _no_values(message, PNR, NAME, "Ärlig Åkesson", "Möte på kontoret")


def test_a_treserva_export_saved_as_utf8_is_refused(tmp_path):
    # Treserva's real shape (CRLF, quoted journal text, decimal commas), but the supplier's job
    # wrote UTF-8 while the agreement and the YAML say windows-1252.
    treserva.generate(tmp_path / "inbox", period="2025-12", size=6, seed=5)
    folder = tmp_path / "inbox" / "2025-12"
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    values: set[str] = set()
    for entry in manifest["files"]:
        if entry["path"].endswith(".csv"):
            text = (folder / entry["path"]).read_bytes().decode("cp1252")
            values.update(v for line in text.split("\r\n")[1:] for v in line.split(";") if len(v) >= 8)
            data = text.encode("utf-8")
            (folder / entry["path"]).write_bytes(data)
            entry["size"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    system = load_system(ROOT / "dags" / "systems" / "treserva.yaml")
    message = _refused(system, folder, tmp_path / "staging")
    assert TEXT_MOJIBAKE in message or "not valid windows-1252 at line" in message
    _no_values(message, *values)


def test_utf8_in_a_jsonl_delivery_declared_iso_8859_1_is_refused(tmp_path):
    system = _system(tmp_path, "jsonl", "iso-8859-1")
    lines = [{"klient_id": 1, "personnr": PNR, "namn": NAME}, {"klient_id": 2, "namn": "Per"}]
    data = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode("utf-8")
    folder = _deliver(tmp_path / "inbox" / "2025-12", {"klienter.jsonl": data})
    message = _refused(system, folder, tmp_path / "staging")
    assert "column namn" in message and TEXT_MOJIBAKE in message and "line 1" in message
    _no_values(message, PNR, NAME)


def test_an_excel_bom_at_the_start_is_read_but_one_mid_file_is_refused(tmp_path):
    system = _system(tmp_path, "csv", "utf-8-sig")
    first = codecs.BOM_UTF8 + (HEADER + f"1;{PNR};{NAME};\r\n").encode("utf-8")
    folder = _deliver(tmp_path / "ok" / "2025-12", {"klienter.csv": first})
    staged = stage(system, FileExportSource(system, folder), dt.datetime(2025, 12, 1), dt.datetime(2026, 1, 1),
                   tmp_path / "s1")
    assert pq.read_table(staged.table_files()["klienter"]).column("namn").to_pylist() == [NAME]

    # `copy /b a.csv + b.csv` of two Excel exports: the second BOM and header land mid-file.
    second = codecs.BOM_UTF8 + (HEADER + "2;;Per Persson;\r\n").encode("utf-8")
    folder = _deliver(tmp_path / "cat" / "2025-12", {"klienter.csv": first + second})
    message = _refused(system, folder, tmp_path / "s2")
    assert "column klient_id: 1 value(s)" in message and TEXT_BOM in message and "line 3" in message
    _no_values(message, PNR, NAME)


def test_nul_padding_from_a_c_program_is_refused(tmp_path):
    system = _system(tmp_path, "csv", "windows-1252")
    # A fixed 32-byte name field written with fwrite: the rest of the buffer is NUL.
    padded = NAME.encode("cp1252").ljust(32, b"\x00")
    data = HEADER.encode("cp1252") + b"1;" + PNR.encode() + b";" + padded + b";\r\n"
    folder = _deliver(tmp_path / "inbox" / "2025-12", {"klienter.csv": data})
    message = _refused(system, folder, tmp_path / "staging")
    assert "column namn: 1 value(s)" in message and TEXT_CONTROL in message and "line 2" in message
    _no_values(message, PNR, NAME)


def test_control_characters_in_jsonl_and_xml_are_refused(tmp_path):
    jsonl = _system(tmp_path, "jsonl", "utf-8")
    data = json.dumps({"klient_id": 1, "personnr": PNR, "namn": NAME + "\u0007\u001b[2J"}).encode() + b"\n"
    folder = _deliver(tmp_path / "j" / "2025-12", {"klienter.jsonl": data})
    message = _refused(jsonl, folder, tmp_path / "sj")
    assert "column namn" in message and TEXT_CONTROL in message
    _no_values(message, PNR, NAME)

    xml = _system(tmp_path, "xml", "utf-8")
    body = f"<rows><row><klient_id>1</klient_id><personnr>{PNR}</personnr><namn>{NAME}&#x1;</namn></row></rows>"
    folder = _deliver(tmp_path / "x" / "2025-12", {"klienter.xml": body.encode()})
    message = _refused(xml, folder, tmp_path / "sx")
    assert "not well-formed XML" in message  # XML 1.0 has no place for it at all
    _no_values(message, PNR, NAME)

    body = f"<rows><row><klient_id>1</klient_id><namn>\ufeff{NAME}</namn></row></rows>"
    folder = _deliver(tmp_path / "x2" / "2025-12", {"klienter.xml": body.encode()})
    message = _refused(xml, folder, tmp_path / "sx2")
    assert "column namn" in message and TEXT_BOM in message
    _no_values(message, NAME)


# --- the quality gate, over any staged batch ----------------------------------------------------


def _gate(tmp_path: Path, table: pa.Table, sensitive: list[str]) -> quality.QualityResult:
    path = tmp_path / "klienter.parquet"
    pq.write_table(table, path)
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"name": "t", "tables": {"klienter": {"id_column": "klient_id", "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "klient_id"}}]}}}), encoding="utf-8")
    return quality.check_batch(suite, {"klienter": [path]}, system="export", batch="2025-12",
                               report_dir=tmp_path / "reports", sensitive_columns={"klienter": sensitive})


def test_the_gate_fails_text_faults_by_table_column_rule_and_record(tmp_path, caplog):
    table = pa.table({
        "klient_id": [1, 2, 3, 4, 5],
        "personnr": [PNR, None, "19121212-1212", None, None],
        "namn": ["Ã…sa Ã–berg", NAME + "\x00", "Per", "\ufeffTolvan", "Ärlig Åkesson"],
        "anteckning": ["ok", "rad\x0bflikar", None, "Barn och unga â€“ utredning", "ok"],
    })
    result = _gate(tmp_path, table, ["personnr", "namn"])
    assert not result.success
    failed = {(c.table, c.expectation, c.column): (c.unexpected_count, c.offending_ids) for c in result.failed()}
    assert failed == {
        ("klienter", TEXT_MOJIBAKE, "namn"): (1, ["1"]),
        ("klienter", TEXT_CONTROL, "namn"): (1, ["2"]),
        ("klienter", TEXT_BOM, "namn"): (1, ["4"]),
        ("klienter", TEXT_CONTROL, "anteckning"): (1, ["2"]),
        ("klienter", TEXT_MOJIBAKE, "anteckning"): (1, ["4"]),
    }
    written = result.result_path.read_text(encoding="utf-8") + result.summary() + caplog.text
    _no_values(written, NAME, "Ã…sa Ã–berg", "Tolvan", "rad\\u000bflikar", "utredning", PNR)


def test_the_gate_checks_tables_the_suite_does_not_name(tmp_path):
    table = pa.table({"klient_id": [1], "namn": ["Per"]})
    path = tmp_path / "k.parquet"
    pq.write_table(table, path)
    extra = tmp_path / "extra.parquet"
    pq.write_table(pa.table({"rad": ["Ã¥terkrav"], "n": [1]}), extra)
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"name": "t", "tables": {"klienter": {"id_column": "klient_id",
                                                                       "expectations": []}}}), encoding="utf-8")
    result = quality.check_batch(suite, {"klienter": [path], "bilagor": [extra]}, system="export", batch="b",
                                 report_dir=tmp_path / "reports")
    assert [(c.table, c.expectation, c.column, c.offending_ids) for c in result.failed()] == [
        ("bilagor", TEXT_MOJIBAKE, "rad", ["row 1"])]
    assert result.tables["bilagor"] == 1


def test_a_clean_batch_gets_no_text_checks(tmp_path):
    table = pa.table({"klient_id": [1, 2], "namn": [NAME, "Ærø «citat» – “så”"], "personnr": [PNR, None]})
    result = _gate(tmp_path, table, ["personnr"])
    assert result.success and all(not c.expectation.startswith("arkiv_text") for c in result.checks)


def test_control_characters_and_mojibake_from_postgresql_stop_the_batch_at_the_gate(
        pg_url, tmp_path, monkeypatch, capsys):
    """Lex in PostgreSQL: an escape sequence pasted into a case title and a double-encoded officer's name."""
    from demo import lex

    files = tmp_path / "files"
    lex.generate(pg_url, files, cases=12, seed=4, year=2025)
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        ids = [r[0] for r in conn.execute(sa.text("SELECT case_id FROM cases ORDER BY case_id"))]
        conn.execute(sa.text("UPDATE cases SET title = :t WHERE case_id = :i"),
                     {"t": f"Ansökan om bistånd {NAME}\x1b[0m", "i": ids[0]})
        conn.execute(sa.text("UPDATE cases SET case_officer = :t WHERE case_id = :i"),
                     {"t": "Ã…sa HandlÃ¤ggare", "i": ids[1]})
    engine.dispose()
    home = tmp_path / "var"
    monkeypatch.setenv("ARKIV_HOME", str(home))
    monkeypatch.setenv("ARKIV_LEX_FILES", str(files))
    monkeypatch.setenv("ARKIV_CONN_LEX_DB", pg_url)
    assert main(["run", "lex", "--start", "2025-01-01", "--end", "2026-01-01"]) == 1
    out = capsys.readouterr()
    assert "failed its quality gate" in out.err
    report = json.loads((home / "reports" / "lex" / "lex-2025-quality.json").read_text(encoding="utf-8"))
    failed = {(c["table"], c["expectation"], c["column"]): c["offending_ids"] for c in report["checks"]
              if not c["success"]}
    assert failed[("cases", TEXT_CONTROL, "title")] == [str(ids[0])]
    assert failed[("cases", TEXT_MOJIBAKE, "case_officer")] == [str(ids[1])]
    assert Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}").packages() == []
    written = json.dumps(report, ensure_ascii=False) + out.err + out.out
    _no_values(written, NAME, "Ansökan om bistånd", "Ã…sa HandlÃ¤ggare", "HandlÃ")


KALLA_YAML = """
system: kalla
title: Källa
schedule: "0 4 1 * *"
start_date: 2024-01-01
agreement:
  archive_creator: {name: Strängnäs kommun, organisationsnummer: "212000-0357"}
  submitter: {name: Strängnäs kommun, organisationsnummer: "212000-0357"}
  submission_agreement: LA-1
  reference_code: SE/X
extract:
  kind: database
  connection: kalla_db
  tables:
    cases:
      key: id
      query: SELECT id, title, officer FROM cases ORDER BY id
      columns:
        id: {type: int64}
        title: {type: string}
        officer: {type: string}
record_classes:
  - {name: alla, title: Alla, match: {default: true},
     retention: {action: keep, counted_from: id, period: P0D, basis: t}}
content: {kind: tabular}
quality: {suite: kalla.json}
sensitive:
  cases: [title]
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_text_faults_from_each_kind_of_database_fail_the_gate(request, tmp_path, backend):
    from transforms.intake.database import extract_database

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'kalla.sqlite'}"
    else:
        url = request.getfixturevalue("pg_url" if backend == "postgresql" else "mariadb_url")
    nul = "\x01" if backend == "postgresql" else "\x00"  # PostgreSQL's text cannot hold NUL at all
    rows = [(1, f"Överklagande {NAME}", "Per Ähl"), (2, f"{NAME}{nul}{nul}", "Per Ähl"),
            (3, f"\ufeff{NAME}", "Per Ähl"), (4, "Ansökan", "Ã…sa HandlÃ¤ggare")]
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE cases (id bigint PRIMARY KEY, title varchar(200), officer varchar(200))")
        c.execute(sa.text("INSERT INTO cases VALUES (:i, :t, :o)"), [{"i": i, "t": t, "o": o} for i, t, o in rows])
    engine.dispose()
    (tmp_path / "kalla.yaml").write_text(KALLA_YAML, encoding="utf-8")
    system = load_system(tmp_path / "kalla.yaml")
    staged = extract_database(system, url, dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1), tmp_path / "out", env={})
    suite = tmp_path / "kalla.json"
    suite.write_text(json.dumps({"name": "kalla", "tables": {"cases": {"id_column": "id", "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}}]}}}), encoding="utf-8")
    result = quality.check_batch(suite, staged.table_files(), system="kalla", batch=staged.batch,
                                 report_dir=tmp_path / "reports", sensitive_columns={"cases": ["title"]})
    assert not result.success
    assert {(c.expectation, c.column): c.offending_ids for c in result.failed()} == {
        (TEXT_CONTROL, "title"): ["2"], (TEXT_BOM, "title"): ["3"], (TEXT_MOJIBAKE, "officer"): ["4"]}
    _no_values(result.result_path.read_text(encoding="utf-8") + result.summary(), NAME, "Ã…sa HandlÃ¤ggare")
