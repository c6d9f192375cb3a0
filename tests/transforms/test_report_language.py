"""The quality report and the quarantine page in an archivist's words.

A failed quality gate is planted on a Lex batch; the JSON report and the page review.py
writes must name each failed check in Swedish and English with why it matters, show values
as a person reads them, name the records by their diarienummer, and leak no Python repr,
no GX headline and no personnummer.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from test_quality import make_lex_rows, run

from transforms.quality import checks as quality
from transforms.quality import quarantine as review
from transforms.quality.checks import check_texts, readable

LEX_SENSITIVE = {"parties": ["name", "personnummer"], "cases": ["title"], "documents": ["title", "file_name"]}


@pytest.fixture(scope="module")
def gx():
    return quality._import_gx()


@pytest.fixture()
def failed(gx, tmp_path):
    rows = make_lex_rows(tmp_path)
    case = rows["cases"][1]  # closed, diarienummer KS 2023/0002
    case["closed_date"] = dt.date(2023, 2, 5)
    case["registered_date"] = dt.date(2023, 3, 1)
    planted_pnr = rows["parties"][0]["personnummer"]
    rows["parties"][0]["personnummer"] = planted_pnr[:-1] + str((int(planted_pnr[-1]) + 1) % 10)
    (tmp_path / "files" / "1032.pdf").unlink()  # a document of KS 2023/0003 whose file is missing
    result = run(tmp_path, rows, sensitive_columns=LEX_SENSITIVE)
    assert not result.success
    report = json.loads(result.result_path.read_text(encoding="utf-8"))
    page = review.report_page("lex", "lex/b1", "quality",
                              [f"{c.table}: {c.expectation}: {c.unexpected_count} record(s)" for c in result.failed()],
                              str(result.result_path), "file:///docs/index.html")
    return {"report": report, "page": page, "raw": result.result_path.read_text(encoding="utf-8"),
            "pnr": rows["parties"][0]["personnummer"], "files": str(tmp_path / "files")}


def _check(report, expectation):
    return next(c for c in report["checks"] if c["expectation"] == expectation and not c["success"])


def test_failed_check_in_swedish_and_english_with_why(failed):
    pair = _check(failed["report"], "expect_column_pair_values_a_to_be_greater_than_b")
    assert pair["title"] == {"sv": "Slutdatum ligger före registreringsdatum",
                             "en": "The closing date is before the registration date"}
    assert pair["why"]["sv"].startswith("Ett ärende kan inte avslutas innan det registrerades")
    assert pair["why"]["en"].startswith("A case cannot be closed before it was registered")
    page = failed["page"]
    assert "Slutdatum ligger före registreringsdatum" in page
    assert "The closing date is before the registration date" in page
    assert "Ett ärende kan inte avslutas innan det registrerades" in page
    # the GX type is a small technical note, never the headline
    assert "<strong>expect_" not in page
    assert not re.search(r"<li>[^<]*expect_", page), "reasons list leads with a GX identifier"
    assert "Slutdatum ligger före registreringsdatum / The closing date is before the registration date" in page


def test_values_are_formatted_as_a_person_reads_them(failed):
    pair = _check(failed["report"], "expect_column_pair_values_a_to_be_greater_than_b")
    values = [x["value"] for x in pair["examples"]]
    assert values == ["closed_date: 2023-02-05, registered_date: 2023-03-01"]
    for text in (failed["raw"], failed["page"]):
        assert "datetime.date(" not in text and "Timestamp(" not in text and "numpy." not in text


def test_records_are_named_by_diarienummer_and_files_relative(failed):
    report = failed["report"]
    assert _check(report, "expect_column_pair_values_a_to_be_greater_than_b")["records"] == ["KS 2023/0002"]
    missing = _check(report, "expect_column_values_to_be_existing_files")
    assert missing["records"] == ["KS 2023/0003 (document_id 1032)"]
    # the file's name is sensitive in Lex, so the path relative to the store (its name) stays masked
    assert [x["value"] for x in missing["examples"]] == ["(dolt / masked: 8 tecken / characters)"]
    assert failed["files"] not in failed["raw"]
    assert "KS 2023/0002" in failed["page"] and "KS 2023/0003 (document_id 1032)" in failed["page"]
    assert failed["files"] not in failed["page"]


def test_no_planted_personnummer_anywhere(failed):
    pnr = failed["pnr"]
    assert _check(failed["report"], "expect_column_values_to_be_valid_personnummer")["records"] != []
    for text in (failed["raw"], failed["page"]):
        assert pnr not in text and pnr.replace("-", "") not in text and pnr[-4:] + '"' not in text


def test_readable_values():
    assert readable(dt.date(2025, 2, 5)) == "2025-02-05"
    assert readable(dt.datetime(2025, 2, 5, 0, 0)) == "2025-02-05"
    assert readable(dt.datetime(2025, 2, 5, 14, 30)) == "2025-02-05 14:30"
    assert readable(True) == "ja" and readable(False) == "nej"
    assert readable(12345) == "12\u00a0345" and readable(2024) == "2024"
    assert readable(1.5) == "1,5" and readable(float("nan")) is None
    assert readable(None) is None


def test_suite_entry_overrides_the_table_and_unknown_types_still_read():
    texts = check_texts("expect_column_values_to_not_be_null", {"column": "unit"}, {"title_sv": "Enhet saknas"},
                        column="unit")
    assert texts["title"] == {"sv": "Enhet saknas", "en": "Missing value: unit"}
    other = check_texts("expect_table_row_count_to_equal", {"value": 3}, {})
    assert other["title"]["sv"] and other["why"]["en"] and "expect_" not in other["title"]["sv"]


def test_every_type_in_our_suites_has_its_own_words():
    from pathlib import Path

    types = set()
    for p in (Path(__file__).resolve().parents[2] / "expectations").glob("*.json"):
        for t in quality.load_suite(p).tables.values():
            types.update(s.type for s in t.expectations)
    assert types <= set(quality.CHECK_TEXTS), types - set(quality.CHECK_TEXTS)


def test_data_docs_are_an_unbranded_technical_appendix(failed):
    docs = __import__("pathlib").Path(failed["report"]["data_docs"]).parent
    pages = {p.name: p.read_text(encoding="utf-8") for p in docs.glob("*.html")}
    assert {"index.html", "cases.html", "parties.html"} <= set(pages)
    for name, text in pages.items():
        low = text.lower()
        assert "newsletter" not in low and "greatexpectations.io" not in low and "<footer" not in low, name
        assert "Teknisk bilaga / Technical appendix" in text, name
        assert "compiled by Great Expectations" not in text, name
    # the technical detail is still there
    assert "closed_date" in pages["cases.html"] and "registered_date" in pages["cases.html"]


def test_a_sensitive_reference_is_not_used_the_key_is(gx, tmp_path):
    rows = make_lex_rows(tmp_path)
    rows["cases"][1]["closed_date"] = rows["cases"][1]["registered_date"] - dt.timedelta(days=3)
    result = run(tmp_path, rows, sensitive_columns={**LEX_SENSITIVE, "cases": ["title", "diarienummer"]})
    pair = next(c for c in result.failed() if c.expectation == "expect_column_pair_values_a_to_be_greater_than_b")
    assert pair.records == ["case_id 102"]
    assert "KS 2023/0002" not in result.result_path.read_text(encoding="utf-8")


def test_the_system_yaml_names_the_reference_and_overrides_the_suite(gx, tmp_path):
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2] / "dags" / "systems"
    lex = yaml.safe_load((root / "lex.yaml").read_text(encoding="utf-8"))
    assert quality.reference_columns_of(lex["content"]) == {"cases": "diarienummer"}
    treserva = yaml.safe_load((root / "treserva.yaml").read_text(encoding="utf-8"))
    assert quality.reference_columns_of(treserva["content"])["akter"] == "aktnummer"
    rows = make_lex_rows(tmp_path)
    rows["cases"][1]["closed_date"] = rows["cases"][1]["registered_date"] - dt.timedelta(days=3)
    result = run(tmp_path, rows, sensitive_columns=LEX_SENSITIVE, reference_columns={"cases": "classification_code"})
    pair = next(c for c in result.failed() if c.expectation == "expect_column_pair_values_a_to_be_greater_than_b")
    assert pair.records == ["2.3.1"]


def test_reasons_already_in_words_are_not_repeated(gx, tmp_path):
    rows = make_lex_rows(tmp_path)
    rows["cases"][1]["closed_date"] = rows["cases"][1]["registered_date"] - dt.timedelta(days=3)
    result = run(tmp_path, rows, sensitive_columns=LEX_SENSITIVE)
    worded = [f"{c.table}: {c.texts['title']['sv']} / {c.texts['title']['en']}: {c.unexpected_count} post(er)"
              for c in result.failed()]
    page = review.report_page("lex", "lex/b1", "quality", [*worded, "documents: 1 file not its record's own"],
                              str(result.result_path))
    assert page.count("<li>cases: Slutdatum ligger före registreringsdatum") == 1
    assert "<li>documents: 1 file not its record&#x27;s own</li>" in page
