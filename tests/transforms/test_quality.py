"""Tests of the data-quality gate (transforms.quality.checks) and the Lex suite.

Importing great_expectations takes seconds, so one module-scoped fixture pays for it and
every test reuses it; each check_batch call makes its own cheap ephemeral context. All
files live under tmp_path, so the module is safe under pytest-xdist.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms.common import masking
from transforms.common.errors import ConfigError
from transforms.common.identifiers import make_organisationsnummer, make_personnummer
from transforms.quality import checks as quality
from transforms.quality.checks import check_batch, load_suite

# By path, not via the expectations package: tests must not depend on how it is installed.
LEX_SUITE = Path(__file__).resolve().parents[2] / "expectations" / "lex.json"

CASES = pa.schema(
    [
        ("case_id", pa.int64()),
        ("diarienummer", pa.string()),
        ("title", pa.string()),
        ("unit", pa.string()),
        ("case_officer", pa.string()),
        ("classification_code", pa.string()),
        ("status", pa.string()),
        ("registered_date", pa.date32()),
        ("closed_date", pa.date32()),
        ("secrecy", pa.bool_()),
        ("secrecy_reference", pa.string()),
        ("updated_at", pa.timestamp("us")),
        ("record_class", pa.string()),
    ]
)
DOCUMENTS = pa.schema(
    [
        ("document_id", pa.int64()),
        ("case_id", pa.int64()),
        ("document_number", pa.int64()),
        ("title", pa.string()),
        ("direction", pa.string()),
        ("document_date", pa.date32()),
        ("registered_date", pa.date32()),
        ("file_name", pa.string()),
        ("file_path", pa.string()),
        ("mime_type", pa.string()),
        ("secrecy", pa.bool_()),
        ("secrecy_reference", pa.string()),
        ("source_path", pa.string()),
        ("record_class", pa.string()),
    ]
)
PARTIES = pa.schema(
    [
        ("party_id", pa.int64()),
        ("case_id", pa.int64()),
        ("party_type", pa.string()),
        ("name", pa.string()),
        ("personnummer", pa.string()),
        ("organisationsnummer", pa.string()),
        ("role", pa.string()),
        ("record_class", pa.string()),
    ]
)
SCHEMAS = {"cases": CASES, "documents": DOCUMENTS, "parties": PARTIES}

# Distinctive values, so a leak into the report or the log is unmistakable.
BAD_PNR_NAME = "Zelmira Läcksdotter"
SECRET_TITLE = "Omhändertagande av Zelmira"


def _flip_last_digit(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def make_lex_rows(tmp: Path, n_cases: int = 6) -> dict[str, list[dict]]:
    """A valid Lex batch: n cases, two documents (with staged files) and two parties each."""
    files = tmp / "files"
    files.mkdir(parents=True, exist_ok=True)
    cases, documents, parties = [], [], []
    for i in range(1, n_cases + 1):
        case_id = 100 + i
        closed = i % 2 == 0
        secret = i % 3 == 0
        registered = dt.date(2023, 1 + i % 12, 1 + i % 28)
        cases.append(
            {
                "case_id": case_id,
                "diarienummer": f"KS 2023/{i:04d}",
                "title": SECRET_TITLE if secret else f"Bygglov för fastighet {i}",
                "unit": "Kommunstyrelsen",
                "case_officer": "handl01",
                "classification_code": "2.3.1",
                "status": "closed" if closed else "open",
                "registered_date": registered,
                "closed_date": registered + dt.timedelta(days=30) if closed else None,
                "secrecy": secret,
                "secrecy_reference": "OSL 26:1" if secret else None,
                "updated_at": dt.datetime(2024, 1, 1, 12, 0),
                "record_class": "arende",
            }
        )
        for j in (1, 2):
            doc_id = case_id * 10 + j
            f = files / f"{doc_id}.pdf"
            f.write_bytes(b"%PDF-1.7\n")
            documents.append(
                {
                    "document_id": doc_id,
                    "case_id": case_id,
                    "document_number": j,
                    "title": f"Handling {j}",
                    "direction": ["incoming", "outgoing", "internal"][j % 3],
                    "document_date": registered,
                    "registered_date": registered,
                    "file_name": f.name,
                    "file_path": f"files/{f.name}",
                    "mime_type": "application/pdf",
                    "secrecy": False,
                    "secrecy_reference": None,
                    "source_path": str(f.resolve()),
                    "record_class": "handling",
                }
            )
        parties.append(
            {
                "party_id": case_id * 10 + 1,
                "case_id": case_id,
                "party_type": "person",
                "name": f"Person {i}",
                "personnummer": make_personnummer(dt.date(1960 + i, 1 + i % 12, 1 + i % 28), i),
                "organisationsnummer": None,
                "role": "sökande",
                "record_class": "part",
            }
        )
        parties.append(
            {
                "party_id": case_id * 10 + 2,
                "case_id": case_id,
                "party_type": "organisation",
                "name": f"Bolag {i} AB",
                "personnummer": None,
                "organisationsnummer": make_organisationsnummer(f"5566{i:05d}"),
                "role": "motpart",
                "record_class": "part",
            }
        )
    return {"cases": cases, "documents": documents, "parties": parties}


def write_tables(tmp: Path, rows: dict[str, list[dict]], *, split: int = 1) -> dict[str, list[Path]]:
    """Write each table as ``split`` Parquet files (the extractor may write several)."""
    out = tmp / "staging"
    out.mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[Path]] = {}
    for name, table_rows in rows.items():
        paths = []
        size = max(1, -(-len(table_rows) // split))
        for k in range(0, len(table_rows), size):
            p = out / f"{name}-{k // size:03d}.parquet"
            pq.write_table(pa.Table.from_pylist(table_rows[k : k + size], schema=SCHEMAS[name]), p)
            paths.append(p)
        tables[name] = paths
    return tables


def run(tmp: Path, rows: dict[str, list[dict]], **kw) -> quality.QualityResult:
    kw.setdefault("system", "lex")
    kw.setdefault("batch", "b1")
    kw.setdefault("report_dir", tmp / "reports")
    suite = kw.pop("suite", LEX_SUITE)
    return check_batch(suite, write_tables(tmp, rows, split=kw.pop("split", 1)), **kw)


def failures(result: quality.QualityResult) -> dict[tuple[str, str, str | None], list[str]]:
    return {(c.table, c.expectation, c.column): sorted(c.offending_ids) for c in result.failed()}


@pytest.fixture(scope="module")
def gx():
    """Import great_expectations (and register our expectations) once for the module."""
    return quality._import_gx()


# --- defects: each mutates a valid batch and names the one check it must fail ------------


def _dup_diarienummer(rows):
    rows["cases"][2]["diarienummer"] = rows["cases"][1]["diarienummer"]
    return {("cases", "expect_column_values_to_be_unique", "diarienummer"): ["102", "103"]}


def _bad_diarienummer(rows):
    rows["cases"][3]["diarienummer"] = "ks-2023-4"
    return {("cases", "expect_column_values_to_match_regex", "diarienummer"): ["104"]}


def _empty_title(rows):
    rows["cases"][4]["title"] = ""
    return {("cases", "expect_column_values_to_match_regex", "title"): ["105"]}


def _closed_before_registered(rows):
    case = rows["cases"][5]
    assert case["status"] == "closed"
    case["closed_date"] = case["registered_date"] - dt.timedelta(days=1)
    return {("cases", "expect_column_pair_values_a_to_be_greater_than_b", "closed_date, registered_date"): ["106"]}


def _bad_personnummer(rows):
    party = rows["parties"][0]
    party["personnummer"] = _flip_last_digit(party["personnummer"])
    party["name"] = BAD_PNR_NAME
    return {("parties", "expect_column_values_to_be_valid_personnummer", "personnummer"): ["1011"]}


def _missing_file(rows):
    doc = rows["documents"][3]
    Path(doc["source_path"]).unlink()
    return {("documents", "expect_column_values_to_be_existing_files", "source_path"): [str(doc["document_id"])]}


def _bad_orgnr(rows):
    party = rows["parties"][3]
    party["organisationsnummer"] = _flip_last_digit(party["organisationsnummer"])
    return {("parties", "expect_column_values_to_be_valid_organisationsnummer", "organisationsnummer"): ["1022"]}


DEFECTS: dict[str, Callable[[dict], dict]] = {
    "duplicate diarienummer": _dup_diarienummer,
    "malformed diarienummer": _bad_diarienummer,
    "empty title": _empty_title,
    "closed before registered": _closed_before_registered,
    "invalid personnummer checksum": _bad_personnummer,
    "missing file": _missing_file,
    "bad organisationsnummer": _bad_orgnr,
}


# --- the Lex suite on valid and defective batches -----------------------------------------


def test_valid_batch_passes_and_writes_report(gx, tmp_path):
    rows = make_lex_rows(tmp_path)
    result = run(tmp_path, rows, split=2)  # several files per table are read as one table

    assert result.success, result.summary()
    assert result.failed() == []
    assert result.tables == {"cases": 6, "documents": 12, "parties": 12}
    assert len(result.checks) == sum(len(t.expectations) for t in load_suite(LEX_SUITE).tables.values())
    assert all(c.error is None for c in result.checks)
    assert "all passed" in result.summary()

    assert result.result_path == tmp_path / "reports" / "lex-b1-quality.json"
    doc = json.loads(result.result_path.read_text(encoding="utf-8"))
    assert doc["system"] == "lex" and doc["batch"] == "b1" and doc["success"] is True
    assert doc["great_expectations_version"] == gx.__version__
    assert dt.datetime.fromisoformat(doc["timestamp"]).tzinfo is not None
    assert len(doc["checks"]) == len(result.checks)
    assert all(c["notes"] for c in doc["checks"])
    # Atomic writes: no temp file is left beside the report and the Data Docs.
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["lex-b1-datadocs", "lex-b1-quality.json"]
    docs = result.data_docs
    assert docs == tmp_path / "reports" / "lex-b1-datadocs" / "index.html" and doc["data_docs"] == str(docs)
    assert sorted(p.name for p in docs.parent.iterdir()) == ["cases.html", "documents.html", "index.html",
                                                             "parties.html"]


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_each_defect_fails_exactly_its_check(gx, tmp_path, defect):
    rows = make_lex_rows(tmp_path)
    expected = DEFECTS[defect](rows)

    result = run(tmp_path, rows)

    assert not result.success
    assert failures(result) == expected
    (failed,) = result.failed()
    assert failed.unexpected_count == len(expected[next(iter(expected))])
    assert failed.error is None
    assert str(failed.unexpected_count) in result.summary()


def test_all_defects_together_and_no_values_leak(gx, tmp_path, caplog, capfd):
    rows = make_lex_rows(tmp_path)
    expected: dict = {}
    for apply in DEFECTS.values():
        expected.update(apply(rows))
    bad_pnr = rows["parties"][0]["personnummer"]
    bad_orgnr = rows["parties"][3]["organisationsnummer"]
    missing_path = rows["documents"][3]["source_path"]
    caplog.set_level(logging.DEBUG)  # every logger, every level: GX's own logs included

    result = run(
        tmp_path,
        rows,
        sensitive_columns={"parties": ["personnummer", "name"], "cases": ["title"]},
    )

    assert failures(result) == expected
    written = result.result_path.read_text(encoding="utf-8")
    out, err = capfd.readouterr()
    outputs = {"report": written, "summary": result.summary(), "log": caplog.text, "stdout+stderr": out + err}
    data_docs = "".join(f.read_text(encoding="utf-8") for f in result.data_docs.parent.glob("*.html"))
    outputs["data docs"] = data_docs
    # Values of sensitive columns (and anything shaped like a personnummer) appear nowhere ...
    leaked = [bad_pnr, BAD_PNR_NAME, SECRET_TITLE, bad_orgnr, "Person 2"]
    for where, text in outputs.items():
        for value in leaked:
            assert value not in text, f"{value!r} leaked into the {where}"
    # ... and values of the non-sensitive checked columns are neither logged nor summarised,
    for where in ("summary", "log", "stdout+stderr"):
        for value in ("ks-2023-4", missing_path):
            assert value not in outputs[where], f"{value!r} leaked into the {where}"
    # while the report names offending records by ID and shows masked examples for the archivist.
    doc = json.loads(written)
    pnr_check = next(c for c in doc["checks"] if c["expectation"].endswith("valid_personnummer"))
    assert pnr_check["offending_ids"] == ["1011"] and pnr_check["unexpected_count"] == 1
    assert pnr_check["sensitive"] is True
    assert pnr_check["examples"] == [{"value": masking.mask(bad_pnr), "count": 1}]
    assert set(masking.mask(bad_pnr)) <= set("0123456789X-+ ") and masking.mask(bad_pnr).count("X") == 10
    assert "1011" in written and "104" in written
    diarie = next(c for c in doc["checks"] if c["column"] == "diarienummer" and c["expectation"].endswith("regex"))
    assert diarie["examples"] == [{"value": "ks-2023-4", "count": 1}] and diarie["sensitive"] is False
    # GX's own value lists went into the Data Docs only after masking.
    assert masking.mask(bad_pnr) in data_docs
    loads = re.findall(r"(?:src=|<link[^>]*href=|url\()['\"]?https?://", data_docs)
    assert loads == [], "Data Docs must not load anything from the internet"


def test_masking_keeps_the_shape_of_a_personnummer_and_nothing_else():
    assert masking.mask("19850101-1234") == "19XXXXXX-XXXX"
    assert masking.mask("8501011234") == "XXXXXXXXXX"
    assert masking.mask("Anna Andersson") == "(dolt / masked: 14 tecken / characters)"
    assert masking.mask(None) == masking.mask(float("nan")) == "(tomt / empty)"
    assert masking.scrub("ärende om 19850101-1234 och 850101+1234, dnr KS 2025/17") == (
        "ärende om 19XXXXXX-XXXX och XXXXXX+XXXX, dnr KS 2025/17")
    assert masking.scrub("telefon 016-710 10 00, belopp 1234567890123") == "telefon 016-710 10 00, belopp 1234567890123"
    long = masking.shown("x" * 200, sensitive=False)
    assert long.endswith("…") and len(long) == 80


def test_missing_table_is_a_failure_not_a_crash(gx, tmp_path):
    rows = make_lex_rows(tmp_path)
    del rows["parties"]

    result = run(tmp_path, rows)

    assert not result.success
    (failed,) = result.failed()
    assert (failed.table, failed.expectation) == ("parties", quality.TABLE_STAGED)
    assert "parties" in result.summary()
    assert result.tables == {"cases": 6, "documents": 12}


# --- the gate's own behaviour on small suites ---------------------------------------------


def write_suite(tmp: Path, tables: dict, name: str = "t") -> Path:
    p = tmp / f"{name}.json"
    p.write_text(json.dumps({"name": name, "tables": tables}), encoding="utf-8")
    return p


def test_extra_staged_table_is_counted_but_not_checked(gx, tmp_path, caplog):
    rows = make_lex_rows(tmp_path)
    suite = write_suite(tmp_path, {"cases": {"id_column": "case_id", "expectations": []}})

    result = run(tmp_path, rows, suite=suite)

    assert result.success and result.checks == []
    assert result.tables == {"cases": 6, "documents": 12, "parties": 12}
    assert "documents is staged but suite t has no expectations" in caplog.text


@pytest.mark.parametrize("batch", ["", "..", "a/b"])
def test_batch_must_be_usable_as_a_file_name(tmp_path, batch):
    with pytest.raises(ValueError, match="batch"):
        check_batch(LEX_SUITE, {}, system="lex", batch=batch, report_dir=tmp_path)


def test_missing_column_is_reported_not_crashed(gx, tmp_path):
    suite = write_suite(
        tmp_path,
        {"cases": {"id_column": "case_id", "expectations": [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "no_such_column"}},
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "title"}},
        ]}},
    )
    rows = make_lex_rows(tmp_path)

    result = run(tmp_path, {"cases": rows["cases"]}, suite=suite)

    assert [c.success for c in result.checks] == [False, True]
    assert "no_such_column" in result.checks[0].error


def test_check_that_raises_is_a_failure_without_its_message(gx, tmp_path):
    # A timestamp column compared with date bounds makes GX's metric raise: a GX pitfall.
    suite = write_suite(
        tmp_path,
        {"cases": {"id_column": "case_id", "expectations": [
            {"type": "expect_column_values_to_be_between",
             "kwargs": {"column": "updated_at", "min_value": "1970-01-01", "max_value": "2100-01-01"}},
        ]}},
    )
    rows = make_lex_rows(tmp_path)

    result = run(tmp_path, {"cases": rows["cases"]}, suite=suite)

    (check,) = result.checks
    assert not check.success and check.error == "could not be evaluated (TypeError)"
    written = result.result_path.read_text(encoding="utf-8")
    assert "Traceback" not in written and "2024-01-01" not in written


def test_offending_ids_are_capped(gx, tmp_path):
    suite = write_suite(
        tmp_path,
        {"parties": {"id_column": "party_id", "expectations": [
            {"type": "expect_column_values_to_be_valid_personnummer", "kwargs": {"column": "personnummer"}},
        ]}},
    )
    many = [
        {"party_id": i, "case_id": 1, "party_type": "person", "name": "x", "personnummer": "19000101-0000"}
        for i in range(quality.MAX_OFFENDING_IDS + 200)
    ]

    (check,) = run(tmp_path, {"parties": many}, suite=suite).checks

    assert check.unexpected_count == len(many)
    assert len(check.offending_ids) == quality.MAX_OFFENDING_IDS
    assert check.offending_ids[:3] == ["0", "1", "2"]


def test_id_equal_to_a_sensitive_value_is_withheld(gx, tmp_path, caplog):
    # A source system that uses the personnummer as the party id: then the id is the secret.
    pnr = make_personnummer(dt.date(1980, 5, 17), 1)
    suite = write_suite(
        tmp_path,
        {"p": {"id_column": "pid", "expectations": [
            {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "name", "regex": "^B"}},
        ]}},
    )
    pq.write_table(
        pa.table({"pid": [pnr, "p2", "p3"], "name": ["Anna", "Bo", "Cecilia"], "pnr": [pnr, None, None]}),
        tmp_path / "p.parquet",
    )
    caplog.set_level(logging.DEBUG)

    result = check_batch(
        suite, {"p": [tmp_path / "p.parquet"]}, system="s", batch="1", report_dir=tmp_path,
        sensitive_columns={"p": ["name", "pnr"]},
    )

    assert result.checks[0].offending_ids == ["[withheld]", "p3"]
    assert pnr not in result.result_path.read_text(encoding="utf-8")
    assert pnr not in caplog.text and pnr not in result.summary()


# --- configuration errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tables", "key"),
    [
        ("cases", "tables"),
        ({"cases": {"expectations": []}}, "tables.cases.id_column"),
        ({"cases": {"id_column": "case_id", "expectation": []}}, "tables.cases.expectation"),
        ({"cases": {"id_column": "case_id", "expectations": [{"kwargs": {}}]}}, "tables.cases.expectations[0].type"),
        (
            {"cases": {"id_column": "case_id", "expectations": [
                {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x", "result_format": "COMPLETE"}}
            ]}},
            "tables.cases.expectations[0].kwargs.result_format",
        ),
        (
            {"cases": {"id_column": "case_id", "expectations": [
                {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"}, "meta": {"notes": 3}}
            ]}},
            "tables.cases.expectations[0].meta.notes",
        ),
    ],
)
def test_malformed_suite_names_file_and_key(tmp_path, tables, key):
    path = write_suite(tmp_path, tables)
    with pytest.raises(ConfigError) as exc:
        load_suite(path)
    assert str(path) in str(exc.value)
    assert f": {key}:" in str(exc.value)


def test_invalid_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "tables": {', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.json: not valid JSON \(line 1"):
        load_suite(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_suite(tmp_path / "absent.json")


def test_unknown_expectation_type_is_a_clear_config_error(gx, tmp_path):
    suite = write_suite(
        tmp_path,
        {"cases": {"id_column": "case_id", "expectations": [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "title"}},
            {"type": "expect_column_values_to_be_valid_diarienummer", "kwargs": {"column": "diarienummer"}},
        ]}},
    )
    with pytest.raises(ConfigError) as exc:
        # Not even staged: the suite is rejected before any data is read.
        check_batch(suite, {"cases": [tmp_path / "absent.parquet"]}, system="s", batch="b", report_dir=tmp_path)
    msg = str(exc.value)
    assert str(suite) in msg
    assert "tables.cases.expectations[1].type" in msg
    assert "expect_column_values_to_be_valid_diarienummer" in msg
    assert "expect_column_values_to_be_valid_personnummer" in msg  # points at what does exist


def test_invalid_kwargs_are_a_config_error(gx, tmp_path):
    suite = write_suite(
        tmp_path,
        {"cases": {"id_column": "case_id", "expectations": [
            {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "title", "regex": "x"}},
            {"type": "expect_column_values_to_match_regex", "kwargs": {"colum": "title", "regex": "x"}},
        ]}},
    )
    with pytest.raises(ConfigError, match=r"tables\.cases\.expectations\[1\]\.kwargs"):
        check_batch(suite, {}, system="s", batch="b", report_dir=tmp_path)


def test_sensitive_id_column_is_a_config_error(gx, tmp_path):
    with pytest.raises(ConfigError, match=r"tables\.parties\.id_column"):
        check_batch(
            LEX_SUITE, {}, system="lex", batch="b", report_dir=tmp_path, sensitive_columns={"parties": ["party_id"]}
        )


def test_lex_suite_loads_and_every_check_explains_itself():
    suite = load_suite(LEX_SUITE)
    assert set(suite.tables) == {"cases", "documents", "parties"}
    for table in suite.tables.values():
        for spec in table.expectations:
            assert spec.notes.strip(), spec.key


def test_importing_the_module_does_not_import_gx():
    # The DAG processor imports transforms.quality.checks; GX must stay out until check_batch runs.
    code = (
        "import sys, transforms.quality.checks as q; "
        "q.load_suite(q.Path(sys.argv[1])); "
        "assert 'great_expectations' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code, str(LEX_SUITE)], check=True, cwd=Path(__file__).parents[2])
