"""ERMS written one case at a time: libxml2's pretty print of the document, validated while read."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from lxml import etree

from transforms.common.xmltools import NS_ERMS, file_schema_errors
from transforms.config.systems import load_system
from transforms.packaging import erms

LEX = load_system(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
RETENTION = {"record_class": "arenden-bevaras", "action": "keep", "period": "P2Y", "basis": "IHP 3.1",
             "counted_from": "closed_date"}


def _kwargs(**extra) -> dict:
    return {"mapping": LEX.content, "system_title": "Lex <test> & \"co\"", "creator_name": "Testkommun",
            "creator_orgnr": "212000-0000", "package_id": "uuid-test", "created": NOW, "software": "arkivflode 0",
            "retention": RETENTION, **extra}


def _case(i: int, *, title: str = "Bygglov", secret: bool = False, docs: int = 2, parties: int = 1,
          closed: dt.date | None = dt.date(2025, 3, 1), missing_file: bool = False) -> erms.Case:
    fields = {"case_id": i, "diarienummer": f"KS 2025/{i}", "title": title, "unit": "Bygg" if i % 2 else None,
              "case_officer": None if i % 3 else "Handläggare", "classification_code": "1.2", "status": "Avslutad",
              "registered_date": dt.date(2025, 1, 1), "closed_date": closed, "secrecy": secret,
              "secrecy_reference": "OSL 26:1" if secret else None}
    case = erms.Case(fields=fields)
    for p in range(parties):
        case.parties.append({"party_id": p, "case_id": i, "name": f"Part {p}", "role": "sökande" if p else None,
                             "personnummer": None, "organisationsnummer": "556000-0000" if p % 2 else None})
    for d in range(docs):
        doc = {"document_id": i * 100 + d, "case_id": i, "document_number": d + 1, "title": f"Handling {d}\nrad 2",
               "direction": "Inkommande" if d % 2 else "upprättad", "document_date": dt.datetime(2025, 2, d + 1, 8),
               "registered_date": dt.date(2025, 2, 2), "file_name": f"fil {d}.pdf", "mime_type": "application/pdf",
               "secrecy": secret and d == 0, "secrecy_reference": None}
        path = "" if missing_file and d == 0 else f"../../representations/rep1/data/KS_2025_{i}/{d + 1}_fil.pdf"
        case.documents.append(erms.Document(fields=doc, package_path=path, size=10))
    return case


def _whole(cases: list[erms.Case], **extra) -> bytes:
    """libxml2's own pretty print of the document: parsed without the blank text between elements, written again."""
    tree = etree.fromstring(_streamed(cases, **extra), etree.XMLParser(remove_blank_text=True))
    return etree.tostring(tree.getroottree(), xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _streamed(cases: list[erms.Case], **extra) -> bytes:
    out = io.BytesIO()
    assert erms.write_erms(out, iter(cases), **_kwargs(**extra)) == len(cases)
    return out.getvalue()


def _awkward_cases() -> list[erms.Case]:
    # Text that a line-by-line re-indentation would break (newlines, leading spaces), markup
    # characters, secrecy, open cases (no disposal), cases without documents or parties,
    # and a document whose file was missing.
    return [
        _case(1),
        _case(2, title="Flera\n  rader\n\n  med indrag  ", secret=True, parties=3),
        _case(3, title="<a> & \"b\" 'c' ]]> åäö ÅÄÖ é", docs=0, parties=0, closed=None),
        _case(4, docs=5, missing_file=True),
        _case(5, title="   ", parties=2),
    ]


def test_streamed_erms_is_libxml2s_pretty_print():
    cases = _awkward_cases()
    whole = _whole(cases)
    assert _streamed(cases) == whole
    assert whole.count(b"<aggregation ") == len(cases)
    assert b"Flera\n  rader\n\n  med indrag  " in whole


def test_streamed_erms_without_cases_or_retention_too():
    assert _streamed([]) == _whole([])
    assert b"<aggregations/>" in _whole([])
    assert _streamed(_awkward_cases()[:1], retention=None) == _whole(_awkward_cases()[:1], retention=None)


def test_streamed_erms_validates_and_a_broken_one_is_reported(tmp_path):
    good = tmp_path / "ERMS.xml"
    good.write_bytes(_streamed(_awkward_cases()))
    assert file_schema_errors(good, NS_ERMS) == []

    # Valid XML, invalid ERMS: the schema's words, with line numbers from the tree parse.
    invalid = tmp_path / "invalid.xml"
    invalid.write_bytes(good.read_bytes().replace(b"<title>", b"<titel>", 1).replace(b"</title>", b"</titel>", 1))
    errors = file_schema_errors(invalid, NS_ERMS)
    assert errors and "titel" in errors[0] and errors[0].startswith("line ")

    # Cut off mid-document: not well-formed (the validating parser alone could let it pass).
    cut = tmp_path / "cut.xml"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    errors = file_schema_errors(cut, NS_ERMS)
    assert errors and "not well-formed" in errors[0]


@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_schema_check_reads_in_chunks(tmp_path, chunk):
    path = tmp_path / "ERMS.xml"
    path.write_bytes(_streamed(_awkward_cases()))
    assert file_schema_errors(path, NS_ERMS, chunk=chunk) == []
    path.write_bytes(path.read_bytes().replace(b'aggregationType="caseFile"', b'aggregationType="nonsense"', 1))
    assert file_schema_errors(path, NS_ERMS, chunk=chunk)


def test_build_erms_is_the_written_document_parsed():
    cases = _awkward_cases()
    tree = erms.build_erms(cases, **_kwargs())
    assert etree.tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True) == _streamed(cases)
