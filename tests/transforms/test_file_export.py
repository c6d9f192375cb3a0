"""File-export deliveries: read exactly what the system declares, quarantine whatever does not match."""

import datetime as dt
import hashlib
import json
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from transforms.common.errors import ContentError
from transforms.config.systems import load_system
from transforms.intake.file_export import DeliveryMissing, FileExportSource, check_delivery
from transforms.staging.batch import stage

COLUMNS = {
    "klient_id": {"type": "int64", "description": "id"},
    "personnr": {"type": "string", "description": "personnummer"},
    "namn": {"type": "string", "description": "name"},
    "belopp": {"type": "decimal", "description": "amount"},
    "beslutsdatum": {"type": "date", "description": "decision date"},
    "aktiv": {"type": "bool", "description": "active"},
    "anteckning": {"type": "string", "description": "journal note"},
}


def _system(tmp_path: Path, fmt: str, encoding: str, **csv_opts) -> Path:
    doc = {
        "system": "export", "title": "Export test", "schedule": "0 4 1 * *", "start_date": "2024-01-01",
        "agreement": {"archive_creator": {"name": "Strängnäs kommun", "organisationsnummer": "212000-0357"},
                      "submitter": {"name": "Socialnämnden", "organisationsnummer": "212000-0357"},
                      "submission_agreement": "LA-1", "reference_code": "SE/X"},
        "extract": {"kind": "file_export", "inbox_env": "ARKIV_EXPORT_INBOX", "format": fmt, "encoding": encoding,
                    "tables": {"klienter": {"key": "klient_id", "file": f"klienter.{fmt}", "columns": COLUMNS}}},
        "record_classes": [{"name": "alla", "title": "Alla", "match": {"default": True},
                            "retention": {"action": "keep", "counted_from": "beslutsdatum", "period": "P0D",
                                          "basis": "test"}}],
        "content": {"kind": "tabular"}, "quality": {"suite": "x.json"},
    }
    if csv_opts:
        doc["extract"]["csv"] = csv_opts
    path = tmp_path / "export.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def _deliver(folder: Path, files: dict[str, bytes], *, manifest_extra: list | None = None) -> Path:
    folder.mkdir(parents=True)
    entries = []
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        entries.append({"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"system": "export", "period": folder.name, "files": entries + (manifest_extra or [])}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def _rows(system, folder, tmp_path):
    staged = stage(system, FileExportSource(system, folder), dt.datetime(2025, 12, 1), dt.datetime(2026, 1, 1),
                   tmp_path / "staging")
    return pq.read_table(staged.table_files()["klienter"]).to_pylist()


MESSY_CSV = (
    'klient_id;personnr;namn;belopp;beslutsdatum;aktiv;anteckning\r\n'
    '1;19811218-9876;Åsa Öberg;12345,50;2025-12-03;ja;"Besök; samtal om ""boende""\r\nfortsätter nästa vecka"\r\n'
    '2;;Per Ähl;0,05;2025-12-04;nej;\r\n'
)


def test_windows_1252_csv_with_semicolons_crlf_quoted_newlines_and_decimal_commas(tmp_path):
    system = load_system(_system(tmp_path, "csv", "windows-1252", delimiter=";", decimal=","))
    folder = _deliver(tmp_path / "inbox" / "2025-12", {"klienter.csv": MESSY_CSV.encode("cp1252")})
    check_delivery(folder, "export")
    rows = _rows(system, folder, tmp_path)
    assert rows[0]["namn"] == "Åsa Öberg" and rows[1]["namn"] == "Per Ähl"
    assert rows[0]["belopp"] == Decimal("12345.50") and rows[1]["belopp"] == Decimal("0.05")
    assert rows[0]["anteckning"] == 'Besök; samtal om "boende"\r\nfortsätter nästa vecka'
    assert rows[0]["aktiv"] is True and rows[1]["aktiv"] is False
    assert rows[1]["personnr"] is None and rows[1]["anteckning"] is None
    assert rows[0]["beslutsdatum"] == dt.date(2025, 12, 3)


def test_utf8_with_bom_is_read_when_declared_and_refused_when_not(tmp_path):
    data = "\ufeff" + MESSY_CSV
    folder = _deliver(tmp_path / "inbox" / "2025-12", {"klienter.csv": data.encode("utf-8")})
    declared = load_system(_system(tmp_path, "csv", "utf-8-sig", delimiter=";", decimal=","))
    assert _rows(declared, folder, tmp_path / "a")[0]["namn"] == "Åsa Öberg"
    undeclared = load_system(_system(tmp_path, "csv", "utf-8", delimiter=";", decimal=","))
    with pytest.raises(ContentError, match="byte-order mark"):
        _rows(undeclared, folder, tmp_path / "b")


def test_latin1_file_declared_as_utf8_is_refused_not_garbled(tmp_path):
    system = load_system(_system(tmp_path, "csv", "utf-8", delimiter=";", decimal=","))
    folder = _deliver(tmp_path / "inbox" / "2025-12", {"klienter.csv": MESSY_CSV.encode("latin-1")})
    with pytest.raises(ContentError, match="not valid utf-8"):
        _rows(system, folder, tmp_path)
    assert not list((tmp_path / "staging" / "export").glob("2025-12*")), "nothing half-staged"


@pytest.mark.parametrize("text, message", [
    ("klient_id;personnr;namn;belopp;beslutsdatum;aktiv;anteckning\r\n1;x;y;1,0;2025-12-01;ja\r\n", "line 2: 6 fields"),
    ("klient_id;personnr;namn;belopp;beslutsdatum;aktiv;anteckning;extra\r\n", "unknown column 'extra'"),
    ("klient_id;personnr;namn;belopp;beslutsdatum;aktiv\r\n", "missing: anteckning"),
    ("klient_id;personnr;namn;belopp;beslutsdatum;aktiv;anteckning\r\n1;x;y;12.345,50;2025-12-01;ja;\r\n",
     "column belopp does not hold a decimal"),
    ("klient_id;personnr;namn;belopp;beslutsdatum;aktiv;anteckning\r\n1;x;y;1,0;3/12/2025;ja;\r\n",
     "column beslutsdatum does not hold a date"),
    ("klient_id;personnr;namn;belopp;beslutsdatum;aktiv;anteckning\r\n1;x;y;1,0;2025-12-01;kanske;\r\n",
     "column aktiv does not hold a bool"),
    ('klient_id;personnr;namn;belopp;beslutsdatum;aktiv;anteckning\r\n1;x;"y;1,0;2025-12-01;ja;\r\n', "not valid CSV"),
])
def test_malformed_csv_names_file_line_and_column_never_the_value(tmp_path, text, message):
    system = load_system(_system(tmp_path, "csv", "windows-1252", delimiter=";", decimal=","))
    folder = _deliver(tmp_path / "inbox" / "2025-12", {"klienter.csv": text.encode("cp1252")})
    with pytest.raises(ContentError) as err:
        _rows(system, folder, tmp_path)
    assert message in str(err.value)
    assert "klienter.csv" in str(err.value)  # the file, and for rows the line
    assert "12.345,50" not in str(err.value) and "3/12/2025" not in str(err.value)


def test_jsonl_and_xml_deliveries(tmp_path):
    lines = [{"klient_id": 1, "personnr": "19811218-9876", "namn": "Åsa", "belopp": "10.5",
              "beslutsdatum": "2025-12-01", "aktiv": True, "anteckning": None}]
    jsonl = load_system(_system(tmp_path, "jsonl", "utf-8"))
    folder = _deliver(tmp_path / "j" / "2025-12", {"klienter.jsonl": "\n".join(json.dumps(x) for x in lines).encode()})
    assert _rows(jsonl, folder, tmp_path / "sj")[0]["belopp"] == Decimal("10.5")

    xml = ('<?xml version="1.0" encoding="UTF-8"?><klienter><row><klient_id>1</klient_id><personnr/>'
           '<namn>Åsa &amp; Per</namn><belopp>10.50</belopp><beslutsdatum>2025-12-01</beslutsdatum><aktiv>1</aktiv>'
           '</row></klienter>')
    xsys = load_system(_system(tmp_path, "xml", "utf-8"))
    folder = _deliver(tmp_path / "x" / "2025-12", {"klienter.xml": xml.encode()})
    row = _rows(xsys, folder, tmp_path / "sx")[0]
    assert row["namn"] == "Åsa & Per" and row["personnr"] is None and row["anteckning"] is None


@pytest.mark.parametrize("xml, message", [
    ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><k><row><klient_id>1</klient_id></row></k>', "DOCTYPE"),
    ('<k><row><klient_id>1</klient_id><skostorlek>44</skostorlek></row></k>', "unknown column 'skostorlek'"),
    ('<k><row><klient_id>1</klient_id></row>', "not well-formed"),
    ('<?xml version="1.0" encoding="ISO-8859-1"?><k/>', "declares encoding"),
])
def test_bad_xml_is_refused(tmp_path, xml, message):
    system = load_system(_system(tmp_path, "xml", "utf-8"))
    folder = _deliver(tmp_path / "inbox" / "2025-12", {"klienter.xml": xml.encode()})
    with pytest.raises(ContentError, match=message):
        _rows(system, folder, tmp_path)


def test_manifest_must_match_the_folder(tmp_path):
    ok = {"klienter.csv": b"a", "dokument/1.pdf": b"%PDF-"}
    folder = _deliver(tmp_path / "d1" / "2025-12", ok)
    check_delivery(folder, "export")

    folder = _deliver(tmp_path / "d2" / "2025-12", ok)
    (folder / "dokument" / "1.pdf").write_bytes(b"%PDF-changed")
    (folder / "extra.txt").write_bytes(b"not listed")
    (folder / "klienter.csv").unlink()
    with pytest.raises(ContentError) as err:
        check_delivery(folder, "export")
    details = "\n".join(err.value.details)
    assert "klienter.csv: listed in the manifest but not in the delivery" in details
    assert "dokument/1.pdf: size" in details
    assert "extra.txt: in the delivery but not listed" in details

    with pytest.raises(DeliveryMissing):
        check_delivery(tmp_path / "nowhere" / "2025-12", "export")

    folder = _deliver(tmp_path / "d3" / "2025-12", ok, manifest_extra=[{"path": "../../etc/passwd"}])
    with pytest.raises(ContentError, match="does not match its manifest"):
        check_delivery(folder, "export")


# --- no value of the delivery in any message ------------------------------------------------------

PNR = "19811218-9876"
NAME = "Åsa Öberg"


def _message(system, folder, tmp_path) -> str:
    with pytest.raises(ContentError) as err:
        _rows(system, folder, tmp_path)
    return str(err.value) + "\n" + "\n".join(err.value.details)


def test_a_csv_that_lost_its_header_row_names_the_expected_columns_never_the_first_row(tmp_path):
    system = load_system(_system(tmp_path, "csv", "windows-1252", delimiter=";", decimal=","))
    body = MESSY_CSV.split("\r\n", 1)[1]  # the export job skipped the header line
    folder = _deliver(tmp_path / "inbox" / "2025-12", {"klienter.csv": body.encode("cp1252")})
    text = _message(system, folder, tmp_path)
    assert "the header row does not match" in text and "is the header row missing?" in text
    assert "expected columns aktiv, anteckning, belopp" in text and "found 7 column(s), none of them" in text
    assert "7 column name(s) that are not declared (not shown" in text
    for value in (PNR, NAME, "12345,50", "Besök", "2025-12-03", "'1'"):
        assert value not in text


def test_a_header_with_a_few_data_like_names_shows_only_declared_ones(tmp_path):
    system = load_system(_system(tmp_path, "csv", "utf-8", delimiter=";", decimal=","))
    header = f"klient_id;{PNR};{NAME};belopp;beslutsdatum;aktiv;anteckning;personnr;namn;tolvan\r\n"
    folder = _deliver(tmp_path / "inbox" / "2025-12", {"klienter.csv": header.encode()})
    text = _message(system, folder, tmp_path)
    assert "unknown column 'tolvan'" in text  # plainly a column name among declared ones
    assert PNR not in text and NAME not in text and "2 column name(s) that are not declared" in text


def test_jsonl_keys_and_xml_elements_that_are_data_are_not_quoted(tmp_path):
    jsonl = load_system(_system(tmp_path, "jsonl", "utf-8"))
    line = json.dumps({PNR: NAME, "Tolvan Tolvansson": "x"}, ensure_ascii=False)
    folder = _deliver(tmp_path / "j" / "2025-12", {"klienter.jsonl": line.encode()})
    text = _message(jsonl, folder, tmp_path / "sj")
    assert "klienter.jsonl: line 1" in text and "none of them a declared column" in text
    assert PNR not in text and NAME not in text and "Tolvan" not in text

    xml = load_system(_system(tmp_path, "xml", "utf-8"))
    doc = f"<k><row><Tolvan_Tolvansson>{PNR}</Tolvan_Tolvansson></row></k>"
    folder = _deliver(tmp_path / "x" / "2025-12", {"klienter.xml": doc.encode()})
    text = _message(xml, folder, tmp_path / "sx")
    assert "an element that is not a declared column" in text and "Tolvan" not in text and PNR not in text

    # libxml2's own message quotes the mismatched names; only its error type is kept.
    doc = f"<k><row><klient_id>1</klient_id><Tolvan>{PNR}</Tolvansson></row></k>"
    folder = _deliver(tmp_path / "x2" / "2025-12", {"klienter.xml": doc.encode()})
    text = _message(xml, folder, tmp_path / "sx2")
    assert "not well-formed XML" in text and "ERR_TAG_NAME_MISMATCH, line 1" in text
    assert "Tolvan" not in text and PNR not in text


def test_an_undecodable_byte_is_located_by_line_never_shown(tmp_path):
    system = load_system(_system(tmp_path, "csv", "utf-8", delimiter=";", decimal=","))
    data = MESSY_CSV.encode("utf-8").replace("Per Ähl".encode(), "Per \xc4hl".encode("latin-1"))
    folder = _deliver(tmp_path / "inbox" / "2025-12", {"klienter.csv": data})
    text = _message(system, folder, tmp_path)
    assert "not valid utf-8 at line 4, byte 8 of the line" in text
    assert "0xC4" not in text and "\\xc4" not in text and "Per" not in text


def test_manifest_problems_quote_neither_entries_nor_their_fields(tmp_path):
    folder = _deliver(tmp_path / "inbox" / "2025-12", {"klienter.csv": b"a"},
                      manifest_extra=[{"path": None, "note": f"{NAME} {PNR}"}, f"{PNR}"])
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"][0]["size"] = f"{PNR}"
    (folder / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ContentError) as err:
        check_delivery(folder, "export")
    text = str(err.value)
    assert "manifest entry 2: the path needs a relative 'path'" in text and "manifest entry 3" in text
    assert "klienter.csv: the manifest's size is not a whole number" in text
    assert PNR not in text and NAME not in text


def test_delivered_file_names_are_escaped_and_masked(tmp_path):
    name = f"dokument/{PNR}\nERROR forged log line.pdf"
    folder = _deliver(tmp_path / "inbox" / "2025-12", {"klienter.csv": b"a"})
    (folder / "dokument").mkdir()
    (folder / name).write_bytes(b"%PDF-")
    with pytest.raises(ContentError) as err:
        check_delivery(folder, "export")
    text = str(err.value)
    assert "not listed in the manifest" in text and "\\nERROR forged" in text
    assert PNR not in text and "\nERROR" not in text


def test_a_manifest_or_row_nested_without_end_is_a_content_error_not_a_crash(tmp_path):
    folder = _deliver(tmp_path / "m" / "2025-12", {"klienter.jsonl": b"{}\n"})
    (folder / "manifest.json").write_bytes(b"[" * 200_000)
    with pytest.raises(ContentError, match="nested too deeply"):
        check_delivery(folder, "export")

    system = load_system(_system(tmp_path, "jsonl", "utf-8"))
    deep = b'{"klient_id": ' + b"[" * 200_000 + b"\n"
    folder = _deliver(tmp_path / "j" / "2025-12", {"klienter.jsonl": deep})
    with pytest.raises(ContentError, match="line 1"):
        _rows(system, folder, tmp_path / "sj")


def test_folders_nested_without_end_are_refused(tmp_path):
    folder = _deliver(tmp_path / "inbox" / "2025-12", {"klienter.csv": b"a"})
    deep = folder
    for _ in range(40):
        deep = deep / "d"
    deep.mkdir(parents=True)
    with pytest.raises(ContentError, match="nested deeper than 32"):
        check_delivery(folder, "export")
