"""The ProCapita simulator: deterministic, realistic, valid by default, bad exactly where asked,
and its YAML + quality suite catch each planted defect with the intended expectation."""

from __future__ import annotations

import collections
import datetime as dt
import io
import zipfile
from decimal import Decimal
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import simulator_output
from simulator_output import read_files

from demo import procapita
from demo.documents import verify_pdf
from transforms.common.identifiers import is_valid_personnummer
from transforms.config.systems import load_system
from transforms.intake.database import extract_database
from transforms.quality.checks import check_batch

PROJECT = Path(__file__).resolve().parents[2]
SYSTEM = load_system(PROJECT / "dags" / "systems" / "procapita.yaml")
SUITE = PROJECT / "expectations" / "procapita.json"
YEAR = 2025
SIZE = 120
BAD = 2
Y2025 = (dt.datetime(YEAR, 1, 1), dt.datetime(YEAR + 1, 1, 1))

# Each planted defect and the one check of the suite that must catch it.
INTENDED = {
    "invalid_personnummer": "clients.expect_column_values_to_be_valid_personnummer(personnummer)",
    "decision_without_legal_basis": "decisions.expect_column_values_to_not_be_null(legal_basis)",
    "plan_before_decision": "care_plans.expect_column_pair_values_a_to_be_greater_than_b(plan_date, decision_date)",
    "negative_hours": "decisions.expect_column_values_to_be_between(hours_per_month)",
    "missing_file": "documents.expect_column_values_to_be_existing_files(source_path)",
    "closed_before_opened": "cases.expect_column_pair_values_a_to_be_greater_than_b(closed_date, opened_date)",
}


def read_rows(url: str) -> dict[str, list[dict]]:
    """Every row of every table, in primary-key order."""
    return simulator_output.read_rows(url, procapita.TABLES)


def run(tmp: Path, name: str, **kw):
    url = f"sqlite:///{tmp / name}.sqlite"
    files = tmp / f"{name}-files"
    summary = procapita.generate(url, files, **kw)
    return summary, read_rows(url), files, url


def extract(url: str, files: Path, staging: Path):
    return extract_database(SYSTEM, url, *Y2025, staging, env={"ARKIV_PROCAPITA_FILES": str(files)})


def quality(staged, report_dir: Path):
    return check_batch(SUITE, staged.table_files(), system="procapita", batch=staged.batch, report_dir=report_dir,
                       sensitive_columns={t: list(c) for t, c in SYSTEM.sensitive.items()})


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("procapita")


@pytest.fixture(scope="module")
def clean(tmp):
    return run(tmp, "clean", size=SIZE, seed=1, year=YEAR)


@pytest.fixture(scope="module")
def dirty(tmp):
    return run(tmp, "dirty", size=SIZE, seed=1, year=YEAR, bad=BAD)


def closed_in_year(case: dict) -> bool:
    return case["closed_date"] is not None and case["closed_date"].year == YEAR


# ------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_rows_and_files(tmp, clean):
    summary, rows, files, _ = clean
    summary2, rows2, files2, _ = run(tmp, "again", size=SIZE, seed=1, year=YEAR)
    assert summary2 == summary
    assert rows2 == rows
    assert read_files(files2) == read_files(files)


def test_different_seed_differs(tmp, clean):
    _, rows, _, _ = clean
    _, rows2, _, _ = run(tmp, "seed2", size=SIZE, seed=2, year=YEAR)
    assert rows2["clients"] != rows["clients"]
    assert rows2["notes"] != rows["notes"]


def test_bad_rows_only_add_to_the_valid_ones(clean, dirty):
    _, rows, files, _ = clean
    _, bad_rows, bad_files, _ = dirty
    for table in rows:
        assert bad_rows[table][: len(rows[table])] == rows[table], table
    dirty_files = read_files(bad_files)
    assert all(dirty_files[k] == v for k, v in read_files(files).items() if k != procapita.MANIFEST)


def test_regeneration_removes_the_previous_runs_files(tmp):
    url, files = f"sqlite:///{tmp / 'regen.sqlite'}", tmp / "regen-files"
    files.mkdir()
    (files / "keep-me.txt").write_text("not the simulator's")
    procapita.generate(url, files, size=25, seed=5, year=YEAR)
    summary = procapita.generate(url, files, size=15, seed=6, year=YEAR)
    on_disk = set(read_files(files)) - {procapita.MANIFEST, "keep-me.txt"}
    assert on_disk == {d["file_path"] for d in read_rows(url)["documents"]}
    assert len(on_disk) == summary.counts["files"]


# ------------------------------------------------------------- counts and realism


def test_summary_and_proportions(clean):
    summary, rows, files, _ = clean
    assert summary.counts == {**{t: len(r) for t, r in rows.items()}, "files": len(rows["documents"])}
    assert summary.counts["cases"] == SIZE
    assert summary.bad_rows == dict.fromkeys(procapita.BAD_KINDS, 0)
    on_disk = read_files(files)
    on_disk.pop(procapita.MANIFEST)
    assert sum(map(len, on_disk.values())) == summary.bytes
    assert summary.describe().startswith(f"ProCapita: {SIZE} cases, ")
    cases = rows["cases"]
    assert 0.70 <= sum(map(closed_in_year, cases)) / len(cases) <= 0.90
    # Some clients return with a second case; every client has one.
    per_client = collections.Counter(c["client_id"] for c in cases)
    assert max(per_client.values()) >= 2 and set(per_client) == {c["client_id"] for c in rows["clients"]}
    insatser = collections.Counter(d["insats"] for d in rows["decisions"])
    assert set(insatser) == set(procapita.INSATSER)
    titles = collections.Counter(c["title"] for c in cases)
    assert titles.most_common(1)[0][0] == "Ansökan om hemtjänst"  # the most common application
    outcomes = collections.Counter(d["outcome"] for d in rows["decisions"])
    assert 0.02 <= outcomes["avslag"] / len(rows["decisions"]) <= 0.20
    # About one in ten is in the bevarandeurval (born on the 5th, 15th or 25th).
    urval = [c for c in rows["clients"] if c["personnummer"][6:8] in ("05", "15", "25", "65", "75", "85")]
    assert 0.03 <= len(urval) / len(rows["clients"]) <= 0.2
    assert {n["note_type"] for n in rows["notes"]} == {"Utredning", "Genomförande", "Händelse", "Avvikelse"}


def test_rows_are_valid_and_consistent(clean):
    _, rows, _, _ = clean
    cases = {c["case_id"]: c for c in rows["cases"]}
    decisions = {d["decision_id"]: d for d in rows["decisions"]}
    for c in rows["clients"]:
        assert is_valid_personnummer(c["personnummer"]), c["personnummer"]
        born = int(c["personnummer"][:4])
        assert YEAR - 107 <= born <= YEAR - 65  # äldreomsorg
    assert any("+" in c["personnummer"] for c in rows["clients"])
    assert any(int(c["personnummer"][6:8]) > 60 for c in rows["clients"])
    assert any(ch in c["name"] for c in rows["clients"] for ch in "åäöÅÄÖ")
    numbers = [c["case_number"] for c in cases.values()]
    assert len(set(numbers)) == len(numbers)
    for c in cases.values():
        assert procapita.CASE_NUMBER_RE.match(c["case_number"]) and c["case_number"][4:8] == str(c["opened_date"].year)
        assert (c["status"] == "Avslutat") == (c["closed_date"] is not None)
        if c["closed_date"]:
            assert c["closed_date"] >= c["opened_date"]
        assert c["title"].startswith("Ansökan om ")
    for d in decisions.values():
        case = cases[d["case_id"]]
        assert d["legal_basis"] == procapita.LEGAL_BASIS
        assert d["decision_date"] >= case["opened_date"]
        if d["insats"] == "hemtjänst" and d["outcome"] == "beviljad":
            assert isinstance(d["hours_per_month"], Decimal) and d["hours_per_month"] > 0
        else:
            assert d["hours_per_month"] is None
        if d["outcome"] == "beviljad":
            assert d["valid_from"] >= d["decision_date"]
            assert d["valid_to"] is None or d["valid_to"] >= d["valid_from"]
        else:
            assert d["valid_from"] is None and d["valid_to"] is None
    for p in rows["care_plans"]:
        assert p["plan_date"] >= decisions[p["decision_id"]]["decision_date"]
        assert decisions[p["decision_id"]]["insats"] in ("hemtjänst", "särskilt boende", "korttidsvistelse")
        assert p["goals"].strip()
    for n in rows["notes"]:
        case = cases[n["case_id"]]
        assert n["note_date"] >= case["opened_date"]
        assert case["closed_date"] is None or n["note_date"] <= case["closed_date"]


def test_documents_are_real_files(clean):
    _, rows, files, _ = clean
    by_case = collections.defaultdict(list)
    for d in rows["documents"]:
        by_case[d["case_id"]].append(d["document_number"])
        data = (files / d["file_path"]).read_bytes()
        if d["mime_type"] == "application/pdf":
            assert verify_pdf(data) >= 1
        else:
            assert d["mime_type"] == procapita.docs.MIME_DOCX
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                ET.fromstring(zf.read("word/document.xml"))
    assert all(sorted(n) == list(range(1, len(n) + 1)) for n in by_case.values())
    assert {d["title"] for d in rows["documents"]} >= {"Ansökan om bistånd", "Utredning enligt SoL"}


# ------------------------------------------------------------------ bad rows


def test_each_bad_kind_is_present(dirty, tmp):
    summary, rows, files, _ = dirty
    assert summary.bad_rows == dict.fromkeys(procapita.BAD_KINDS, BAD)
    assert summary.counts["cases"] == SIZE + BAD * len(procapita.BAD_KINDS)
    cases = {c["case_id"]: c for c in rows["cases"]}
    decisions = {d["decision_id"]: d for d in rows["decisions"]}
    found = collections.Counter()
    found["invalid_personnummer"] = sum(not is_valid_personnummer(c["personnummer"]) for c in rows["clients"])
    found["decision_without_legal_basis"] = sum(d["legal_basis"] is None for d in decisions.values())
    found["plan_before_decision"] = sum(
        p["plan_date"] < decisions[p["decision_id"]]["decision_date"] for p in rows["care_plans"])
    found["negative_hours"] = sum(d["hours_per_month"] is not None and d["hours_per_month"] < 0
                                  for d in decisions.values())
    found["missing_file"] = sum(not (files / d["file_path"]).is_file() for d in rows["documents"])
    found["closed_before_opened"] = sum(c["closed_date"] is not None and c["closed_date"] < c["opened_date"]
                                        for c in cases.values())
    assert found == dict.fromkeys(procapita.BAD_KINDS, BAD)
    # Every bad case is closed in YEAR, where the yearly extraction looks.
    assert all(closed_in_year(c) for c in list(cases.values())[SIZE:])


def test_negative_size_is_refused(tmp):
    with pytest.raises(ValueError):
        procapita.generate(f"sqlite:///{tmp / 'neg.sqlite'}", tmp / "neg", size=-1)


# ------------------------------------------------- extraction and the quality suite


def test_yaml_record_classes_follow_the_bevarandeurval(clean, tmp):
    _, rows, files, url = clean
    staged = extract(url, files, tmp / "stage-classes")
    import pyarrow.parquet as pq

    cases = pq.read_table(staged.table_files()["cases"]).to_pylist()
    assert len(cases) == sum(map(closed_in_year, rows["cases"]))
    assert set(staged.partitions) == {"bistandsakter-bevaras", "bistandsakter-gallras-5ar"}
    for c in cases:
        kept = c["birth_day"] in ("05", "15", "25", "65", "75", "85")
        assert c["record_class"] == ("bistandsakter-bevaras" if kept else "bistandsakter-gallras-5ar")
        assert c["status"] == "closed" and c["secrecy"] is True
    assert staged.tables["clients"] == staged.tables["cases"]


def test_suite_passes_on_clean_data(clean, tmp):
    _, _, files, url = clean
    result = quality(extract(url, files, tmp / "stage-clean"), tmp / "report-clean")
    assert result.success, result.summary()
    assert len(result.checks) > 60


def test_suite_catches_each_bad_kind_with_the_intended_check(dirty, tmp):
    _, _, files, url = dirty
    result = quality(extract(url, files, tmp / "stage-dirty"), tmp / "report-dirty")
    assert not result.success
    failed = {c.describe(): c for c in result.failed()}
    assert set(failed) == set(INTENDED.values()), result.summary()
    for check in failed.values():
        assert check.unexpected_count == BAD, check.describe()
    # The report names record ids only, never a personnummer or a note.
    report = result.result_path.read_text(encoding="utf-8")
    _, rows, _, _ = dirty
    assert not any(c["personnummer"] in report for c in rows["clients"])


# ------------------------------------------------------- PostgreSQL, MariaDB, CLI


def _same_extraction(other_url: str, files: Path, clean_url: str, tmp: Path, name: str) -> None:
    a = extract(clean_url, files, tmp / f"{name}-sqlite")
    b = extract(other_url, files, tmp / f"{name}-other")
    assert b.tables == a.tables
    assert {k: (p.rows, p.digest) for k, p in b.partitions.items()} == {
        k: (p.rows, p.digest) for k, p in a.partitions.items()}


@pytest.mark.integration
def test_same_extraction_on_postgresql(tmp, clean, pg_url):
    _, rows, files, url = clean
    pg_files = tmp / "pg-files"
    procapita.generate(pg_url, pg_files, size=SIZE, seed=1, year=YEAR)
    summary = procapita.generate(pg_url, pg_files, size=SIZE, seed=1, year=YEAR)  # drop + create on a filled db
    assert summary.counts["cases"] == SIZE
    assert read_rows(pg_url) == rows
    _same_extraction(pg_url, files, url, tmp, "pg")


@pytest.mark.integration
def test_same_extraction_on_mariadb(tmp, clean, mariadb_url):
    _, rows, files, url = clean
    summary = procapita.generate(mariadb_url, tmp / "maria-files", size=SIZE, seed=1, year=YEAR)
    assert summary.counts["cases"] == SIZE
    assert read_rows(mariadb_url) == rows
    _same_extraction(mariadb_url, files, url, tmp, "maria")


def test_cli(tmp, capsys):
    url, files = f"sqlite:///{tmp / 'cli' / 'pc.sqlite'}", tmp / "cli-files"
    assert procapita.main(["--url", url, "--files", str(files), "--size", "12", "--seed", "3", "--bad", "1"]) == 0
    out = capsys.readouterr().out
    assert "ProCapita: 18 cases" in out and "missing_file=1" in out
    assert len(read_rows(url)["cases"]) == 18
