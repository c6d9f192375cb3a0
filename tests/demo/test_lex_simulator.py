"""The Lex simulator: deterministic, realistic, valid by default, and bad exactly where asked."""

from __future__ import annotations

import collections
import datetime as dt
import io
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import simulator_output
from PIL import Image
from simulator_output import read_files

from demo import lex
from demo.documents import verify_pdf
from transforms.common.identifiers import is_valid_organisationsnummer, is_valid_personnummer

YEAR = 2025
CASES = 200
BAD = 3
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"



def read_rows(url: str) -> dict[str, list[dict]]:
    """Every row of the four tables, in primary-key order, as typed Python values."""
    return simulator_output.read_rows(url, lex.metadata.sorted_tables)


def run(tmp: Path, name: str, **kw) -> tuple[lex.LexSummary, dict[str, list[dict]], Path]:
    url = f"sqlite:///{tmp / name}.sqlite"
    files = tmp / f"{name}-files"
    summary = lex.generate(url, files, **kw)
    return summary, read_rows(url), files


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lex")


@pytest.fixture(scope="module")
def clean(tmp):
    """200 valid cases, seed 1."""
    return run(tmp, "clean", cases=CASES, seed=1, year=YEAR)


@pytest.fixture(scope="module")
def dirty(tmp):
    """The same 200 cases plus BAD rows of every bad kind."""
    return run(tmp, "dirty", cases=CASES, seed=1, year=YEAR, bad=BAD)


def closed_in_year(case: dict) -> bool:
    return case["status"] == "closed" and case["closed_date"] is not None and case["closed_date"].year == YEAR


# ------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_rows_and_files(tmp, clean):
    summary, rows, files = clean
    summary2, rows2, files2 = run(tmp, "clean-again", cases=CASES, seed=1, year=YEAR)
    assert summary2 == summary
    assert rows2 == rows
    assert read_files(files2) == read_files(files)


def test_different_seed_differs(tmp, clean):
    _, rows, files = clean
    _, rows2, files2 = run(tmp, "seed2", cases=CASES, seed=2, year=YEAR)
    assert rows2["cases"] != rows["cases"]
    assert rows2["parties"] != rows["parties"]
    assert read_files(files2) != read_files(files)


def test_bad_rows_only_add_to_the_valid_ones(clean, dirty):
    _, rows, files = clean
    _, bad_rows, bad_files = dirty
    for table in ("cases", "documents", "parties"):
        assert bad_rows[table][: len(rows[table])] == rows[table]
    clean_files, dirty_files = read_files(files), read_files(bad_files)
    assert all(dirty_files[k] == v for k, v in clean_files.items() if k != lex.MANIFEST)


def test_regeneration_removes_the_previous_runs_files(tmp):
    url, files = f"sqlite:///{tmp / 'regen.sqlite'}", tmp / "regen-files"
    files.mkdir()
    (files / "keep-me.txt").write_text("not the simulator's")
    lex.generate(url, files, cases=30, seed=5, year=YEAR)
    summary = lex.generate(url, files, cases=20, seed=6, year=YEAR)
    on_disk = set(read_files(files)) - {lex.MANIFEST, "keep-me.txt"}
    assert on_disk == {d["file_path"] for d in read_rows(url)["documents"]}
    assert len(on_disk) == summary.files


# ------------------------------------------------------------- counts and shape


def test_summary_matches_the_tables(clean):
    summary, rows, files = clean
    assert summary.cases == len(rows["cases"]) == CASES
    assert summary.documents == len(rows["documents"]) == summary.files
    assert summary.parties == len(rows["parties"])
    assert summary.bad_rows == dict.fromkeys(lex.BAD_KINDS, 0)
    on_disk = read_files(files)
    on_disk.pop(lex.MANIFEST)
    assert len(on_disk) == summary.files
    assert sum(map(len, on_disk.values())) == summary.bytes


def test_proportions(clean):
    _, rows, _ = clean
    cases = rows["cases"]
    assert 0.70 <= sum(map(closed_in_year, cases)) / len(cases) <= 0.90
    assert 0.04 <= sum(c["secrecy"] for c in cases) / len(cases) <= 0.18
    docs_per_case = collections.Counter(d["case_id"] for d in rows["documents"])
    assert set(docs_per_case) == {c["case_id"] for c in cases}
    assert set(docs_per_case.values()) == {1, 2, 3, 4}
    parties_per_case = collections.Counter(p["case_id"] for p in rows["parties"])
    assert max(parties_per_case.values()) == 3
    assert len(parties_per_case) < len(cases)  # some cases have no party
    mimes = collections.Counter(d["mime_type"] for d in rows["documents"])
    n = len(rows["documents"])
    assert 0.40 <= mimes["application/pdf"] / n <= 0.62
    assert 0.12 <= mimes[lex.docs.MIME_DOCX] / n <= 0.28
    assert 0.08 <= mimes["image/jpeg"] / n <= 0.22
    assert 0.08 <= mimes["text/plain"] / n <= 0.22
    directions = {d["direction"] for d in rows["documents"]}
    assert directions == {"incoming", "outgoing", "internal"}


def test_classification_scheme(clean):
    _, rows, _ = clean
    codes = {c["code"] for c in rows["classification"]}
    leaves = {c for c in codes if "." in c}
    assert 10 <= len(leaves) <= 16
    assert 3 <= len({c.split(".")[0] for c in leaves}) <= 4
    assert {c["classification_code"] for c in rows["cases"]} <= leaves


# ------------------------------------------------------------------ validity


def test_cases_are_valid(clean):
    _, rows, _ = clean
    numbers = [c["diarienummer"] for c in rows["cases"]]
    assert len(set(numbers)) == len(numbers)
    for c in rows["cases"]:
        assert lex.DIARIENUMMER_RE.match(c["diarienummer"]), c["diarienummer"]
        prefix, rest = c["diarienummer"].split(" ")
        assert lex.names.UNITS[prefix] == c["unit"]
        assert int(rest[:4]) == c["registered_date"].year
        assert c["registered_date"].year in (YEAR - 1, YEAR)
        assert c["title"].strip()
        assert c["case_officer"]
        assert (c["status"] == "open") == (c["closed_date"] is None)
        if c["closed_date"]:
            assert c["closed_date"] >= c["registered_date"]
            assert c["closed_date"].year in (YEAR, YEAR + 1)
        assert c["secrecy"] == (c["secrecy_reference"] is not None)
        if c["secrecy"]:
            assert c["secrecy_reference"].startswith("OSL ") and c["secrecy_reference"].endswith(" §")
        assert isinstance(c["updated_at"], dt.datetime)
        assert c["updated_at"].date() >= c["registered_date"]
    titles = " ".join(c["title"] for c in rows["cases"])
    for ch in 'åäö&"<>':
        assert ch in titles, ch


def test_parties_have_valid_identity_numbers(clean):
    _, rows, _ = clean
    persons = [p for p in rows["parties"] if p["party_type"] == "person"]
    orgs = [p for p in rows["parties"] if p["party_type"] == "organisation"]
    assert persons and orgs
    assert len(persons) + len(orgs) == len(rows["parties"])
    for p in persons:
        assert is_valid_personnummer(p["personnummer"]), p["personnummer"]
        assert len(p["personnummer"]) == 13 and p["organisationsnummer"] is None
    for p in orgs:
        assert is_valid_organisationsnummer(p["organisationsnummer"]), p["organisationsnummer"]
        assert p["personnummer"] is None
    assert any("+" in p["personnummer"] for p in persons)
    assert any(int(p["personnummer"][6:8]) > 60 for p in persons)  # samordningsnummer
    assert any(ch in p["name"] for p in persons for ch in "åäöÅÄÖ")


def check_file(path: Path, mime: str) -> None:
    data = path.read_bytes()
    assert 0 < len(data) < 150_000, (path, len(data))
    if mime == "application/pdf":
        verify_pdf(data)
    elif mime == lex.docs.MIME_DOCX:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            ET.fromstring(zf.read("word/document.xml"))
    elif mime == "image/jpeg":
        with Image.open(path) as img:
            img.load()
            assert img.format == "JPEG"
    else:
        assert mime == "text/plain"
        data.decode("utf-8")


def test_documents_and_files_are_valid(clean):
    _, rows, files = clean
    cases = {c["case_id"]: c for c in rows["cases"]}
    by_case = collections.defaultdict(list)
    for d in rows["documents"]:
        by_case[d["case_id"]].append(d["document_number"])
        case = cases[d["case_id"]]
        prefix, rest = case["diarienummer"].split(" ")
        assert d["file_path"].startswith(f"{rest[:4]}/{prefix}/{rest[5:]}/{d['document_number']} ")
        assert not d["file_path"].startswith("/") and ".." not in d["file_path"].split("/")
        assert d["title"] and d["file_name"]
        assert d["registered_date"] >= d["document_date"] or d["document_number"] > 1
        check_file(files / d["file_path"], d["mime_type"])
        if d["secrecy"]:
            assert d["secrecy_reference"]
    assert all(sorted(nums) == list(range(1, len(nums) + 1)) for nums in by_case.values())
    assert any(" " in d["file_name"] and any(ch in d["file_name"] for ch in "åäö") for d in rows["documents"])


def test_pdfs_carry_the_case_title(clean):
    _, rows, files = clean
    cases = {c["case_id"]: c for c in rows["cases"]}
    pdfs = [d for d in rows["documents"] if d["mime_type"] == "application/pdf"]
    pages = []
    for d in pdfs:
        data = (files / d["file_path"]).read_bytes()
        pages.append(verify_pdf(data))
        title = cases[d["case_id"]]["title"]
        escaped = title.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        assert escaped.encode("cp1252", errors="replace") in data
    assert max(pages) > 1  # some are multi-page


# ------------------------------------------------------------------ bad rows


def test_each_bad_kind_is_present_exactly(dirty):
    summary, rows, files = dirty
    assert summary.bad_rows == dict.fromkeys(lex.BAD_KINDS, BAD)
    cases = {c["case_id"]: c for c in rows["cases"]}
    found: dict[str, list[int]] = collections.defaultdict(list)  # kind -> case ids

    counts = collections.Counter(c["diarienummer"] for c in cases.values())
    for c in cases.values():
        if counts[c["diarienummer"]] > 1:
            found["duplicate_diarienummer"].append(c["case_id"])
        if not lex.DIARIENUMMER_RE.match(c["diarienummer"]):
            found["malformed_diarienummer"].append(c["case_id"])
        if c["closed_date"] and c["closed_date"] < c["registered_date"]:
            found["closed_before_registered"].append(c["case_id"])
        if c["title"] == "":
            found["missing_title"].append(c["case_id"])
    for p in rows["parties"]:
        if p["party_type"] == "person" and not is_valid_personnummer(p["personnummer"]):
            found["invalid_personnummer"].append(p["case_id"])
        if p["party_type"] == "organisation":
            assert is_valid_organisationsnummer(p["organisationsnummer"])
    for d in rows["documents"]:
        if not (files / d["file_path"]).is_file():
            found["missing_file"].append(d["case_id"])

    assert len(found["duplicate_diarienummer"]) == 2 * BAD  # the original and its copy
    for kind in lex.BAD_KINDS:
        if kind != "duplicate_diarienummer":
            assert len(found[kind]) == BAD, kind
        # Every bad row sits on a case closed in YEAR, where an extraction of YEAR looks.
        assert all(closed_in_year(cases[i]) for i in found[kind]), kind
    assert len(rows["cases"]) == CASES + 4 * BAD


def test_too_many_bad_rows_is_refused(tmp):
    with pytest.raises(ValueError, match="bad=50"):
        lex.generate(f"sqlite:///{tmp / 'refused.sqlite'}", tmp / "refused", cases=10, bad=50)


# ------------------------------------------------------- PostgreSQL, CLI, speed


@pytest.mark.integration
def test_same_rows_on_postgresql(tmp, clean, pg_url):
    _, rows, _ = clean
    pg_files = tmp / "pg-files"
    summary = lex.generate(pg_url, pg_files, cases=CASES, seed=1, year=YEAR)
    lex.generate(pg_url, pg_files, cases=CASES, seed=1, year=YEAR)  # drop + create works on a filled db
    assert summary.cases == CASES
    assert read_rows(pg_url) == rows


def test_cli(tmp, capsys):
    url, files = f"sqlite:///{tmp / 'cli' / 'lex.sqlite'}", tmp / "cli-files"
    assert lex.main(["--url", url, "--files", str(files), "--cases", "15", "--seed", "3", "--bad", "1"]) == 0
    out = capsys.readouterr().out
    assert "Lex: 19 cases" in out and "missing_file=1" in out
    assert len(read_rows(url)["cases"]) == 19


