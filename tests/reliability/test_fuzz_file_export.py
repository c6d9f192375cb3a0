"""Fuzzed file-export deliveries: encodings, dialects, truncated rows and arbitrary bytes.

A system owner's export may be in the wrong encoding, cut off mid-row or simply garbage. The
reader (transforms/intake/file_export.py, through ``extract.stage``) must then stop with a
:class:`ContentError` naming the file and line — never another exception, never a hang, and
never a staged batch that silently holds other values than were delivered.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from fault_support import FUZZ
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.common.errors import ContentError
from transforms.config.systems import load_system
from transforms.intake.file_export import FileExportSource
from transforms.staging.batch import stage

FUZZ_SETTINGS = settings(max_examples=100, deadline=3000,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
COLUMNS = {"klient_id": {"type": "int64", "description": "id"},
           "namn": {"type": "string", "description": "name"},
           "belopp": {"type": "decimal", "description": "amount"},
           "beslutsdatum": {"type": "date", "description": "decision date"},
           "aktiv": {"type": "bool", "description": "active"}}
DIALECTS = [("csv", "utf-8", ",", "."), ("csv", "windows-1252", ";", ","), ("csv", "utf-8-sig", "\t", "."),
            ("csv", "iso-8859-1", "|", ","), ("jsonl", "utf-8", ",", "."), ("xml", "utf-8", ",", "."),
            ("xml", "iso-8859-1", ",", ".")]


def _system(folder: Path, fmt: str, encoding: str, delimiter: str, decimal: str):
    doc = {
        "system": "export", "title": "Fuzz", "schedule": "0 4 1 * *", "start_date": "2024-01-01",
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
    if fmt == "csv":
        doc["extract"]["csv"] = {"delimiter": delimiter, "decimal": decimal}
    path = folder / "export.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return load_system(path)


ROW = st.fixed_dictionaries({
    "klient_id": st.integers(1, 10**9),
    "namn": st.text(alphabet=st.characters(codec="latin-1", exclude_categories=("Cs", "Cc")), max_size=20),
    "belopp": st.decimals(min_value=-10**6, max_value=10**6, places=2, allow_nan=False),
    "beslutsdatum": st.dates(min_value=dt.date(2025, 1, 1), max_value=dt.date(2025, 12, 31)),
    "aktiv": st.booleans(),
})


def _render(fmt: str, encoding: str, delimiter: str, decimal: str, rows: list[dict]) -> bytes:
    if fmt == "csv":
        import csv
        import io

        out = io.StringIO()
        w = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([r["klient_id"], r["namn"], str(r["belopp"]).replace(".", decimal),
                        r["beslutsdatum"].isoformat(), "ja" if r["aktiv"] else "nej"])
        return out.getvalue().encode(encoding)
    if fmt == "jsonl":
        return "".join(json.dumps({**r, "belopp": str(r["belopp"]), "beslutsdatum": r["beslutsdatum"].isoformat()},
                                  ensure_ascii=False) + "\n" for r in rows).encode(encoding)
    from xml.sax.saxutils import escape

    body = "".join("<row>" + "".join(f"<{k}>{escape(str(v).lower() if isinstance(v, bool) else str(v))}</{k}>"
                                     for k, v in r.items()) + "</row>" for r in rows)
    return f'<?xml version="1.0" encoding="{encoding}"?>\n<rows>{body}</rows>\n'.encode(encoding)


MUTATION = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("reencode"), st.sampled_from(["utf-16", "utf-8", "cp1252", "latin-1"])),
    st.tuples(st.just("garbage"), st.binary(max_size=200)),
    st.tuples(st.just("none")),
)


def _mutate(data: bytes, mutation: tuple, encoding: str) -> bytes:
    kind = mutation[0]
    at = int(len(data) * mutation[1]) if kind in ("truncate", "flip", "insert") else 0
    if kind == "truncate":
        return data[:at]
    if kind == "flip" and data:
        at = min(at, len(data) - 1)
        return data[:at] + bytes([data[at] ^ mutation[2]]) + data[at + 1:]
    if kind == "insert":
        return data[:at] + mutation[2] + data[at:]
    if kind == "reencode":
        try:
            return data.decode(encoding.replace("-sig", "")).encode(mutation[1])
        except (UnicodeError, LookupError):
            return data
    if kind == "garbage":
        return mutation[1]
    return data


@FUZZ_SETTINGS
@given(dialect=st.sampled_from(DIALECTS), rows=st.lists(ROW, min_size=1, max_size=6,
                                                         unique_by=lambda r: r["klient_id"]),
       mutation=MUTATION)
def test_a_delivery_is_read_exactly_or_refused_with_a_content_error(tmp_path, dialect, rows, mutation):
    fmt, encoding, delimiter, decimal = dialect
    FUZZ[f"file export: {fmt}"] += 1
    work = tmp_path / "w"
    shutil.rmtree(work, ignore_errors=True)
    (work / "inbox").mkdir(parents=True)
    system = _system(work, fmt, encoding, delimiter, decimal)
    clean = _render(fmt, encoding, delimiter, decimal, rows)
    data = _mutate(clean, mutation, encoding)
    (work / "inbox" / f"klienter.{fmt}").write_bytes(data)
    try:
        staged = stage(system, FileExportSource(system, work / "inbox"), dt.datetime(2025, 1, 1),
                       dt.datetime(2026, 1, 1), work / "staging")
    except ContentError:
        return  # refused, with file and line
    got = [r for f in staged.table_files().values() for r in pq.read_table(f).to_pylist()] \
        if staged.table_files().get("klienter") else []
    if data == clean:  # unchanged: every value arrives exactly as delivered
        assert sorted(r["klient_id"] for r in got) == sorted(r["klient_id"] for r in rows)
        by_id = {r["klient_id"]: r for r in got}
        for r in rows:
            assert by_id[r["klient_id"]]["belopp"] == r["belopp"]
            assert by_id[r["klient_id"]]["beslutsdatum"] == r["beslutsdatum"]
            assert (by_id[r["klient_id"]]["namn"] or "") == r["namn"].strip() or by_id[r["klient_id"]]["namn"] == \
                r["namn"]
    else:  # a mutated file that still reads loses no row its bytes hold, and invents none
        assert sorted(r["klient_id"] for r in got) == sorted(_rows_in(fmt, encoding, delimiter, data))


def _rows_in(fmt: str, encoding: str, delimiter: str, data: bytes) -> list[int]:
    """The klient_id of every row the bytes hold, read by the standard library and lxml directly."""
    import csv
    import io

    from lxml import etree

    from transforms.common.xmltools import SAFE_PARSE
    from transforms.intake.file_export import _xml_declared_encoding

    if fmt == "csv":
        text = io.TextIOWrapper(io.BytesIO(data), encoding=encoding, newline="").read()
        lines = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True) if r]
        return [int(r[0].strip()) for r in lines[1:]]
    if fmt == "jsonl":
        lines = io.TextIOWrapper(io.BytesIO(data), encoding=encoding, newline="")
        return [int(json.loads(line)["klient_id"]) for line in lines if line.strip()]
    declared = _xml_declared_encoding(data[:4096])
    root = etree.fromstring(data, etree.XMLParser(**SAFE_PARSE, encoding=None if declared else encoding))
    return [int(row.findtext("klient_id").strip()) for row in root.iter("row")]


@pytest.mark.parametrize("declared", ["no-such-codec", "utf-32-xx"])
def test_an_xml_declaring_an_unknown_encoding_is_a_content_error(tmp_path, declared):
    FUZZ["file export: xml unknown encoding"] += 1
    system = _system(tmp_path, "xml", "utf-8", ",", ".")
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "klienter.xml").write_bytes(
        f'<?xml version="1.0" encoding="{declared}"?>\n<rows></rows>\n'.encode())
    with pytest.raises(ContentError):
        stage(system, FileExportSource(system, tmp_path / "inbox"), dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1),
              tmp_path / "staging")


FAULTS = st.sampled_from(["\x00", "\x01", "\x1b[2J", "\x7f", "\ufeff", "Ã¥", "Ã–", "â€“", "Ä‡"])


@FUZZ_SETTINGS
@given(dialect=st.sampled_from([d for d in DIALECTS if d[0] != "xml"]),
       rows=st.lists(ROW, min_size=1, max_size=6, unique_by=lambda r: r["klient_id"]),
       which=st.integers(0, 5), fault=FAULTS, at=st.floats(0, 1))
def test_a_value_whose_text_breaks_its_declaration_refuses_the_file_and_is_not_quoted(
        tmp_path, dialect, rows, which, fault, at):
    fmt, encoding, delimiter, decimal = dialect
    FUZZ[f"file export: text fault in {fmt}"] += 1
    work = tmp_path / "t"
    shutil.rmtree(work, ignore_errors=True)
    (work / "inbox").mkdir(parents=True)
    system = _system(work, fmt, encoding, delimiter, decimal)
    row = rows[which % len(rows)]
    cut = int(len(row["namn"]) * at)
    planted = "Tolvan Tolvansson 19121212-1212 "
    row["namn"] = planted + row["namn"][:cut] + fault + row["namn"][cut:]
    try:
        data = _render(fmt, encoding, delimiter, decimal, rows)
    except UnicodeEncodeError:  # the fault has no bytes in this encoding: it can only arrive as mojibake
        data = _render(fmt, "utf-8", delimiter, decimal, rows)
    (work / "inbox" / f"klienter.{fmt}").write_bytes(data)
    with pytest.raises(ContentError) as err:
        stage(system, FileExportSource(system, work / "inbox"), dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1),
              work / "staging")
    text = str(err.value) + "\n".join(err.value.details)
    assert "klienter" in text
    assert "Tolvan" not in text and "19121212" not in text
    assert not list((work / "staging").rglob("*.parquet"))
