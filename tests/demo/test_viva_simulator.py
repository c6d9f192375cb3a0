"""The Viva simulator (social services, Eskilstuna): deterministic, realistic, valid by default,
bad exactly where asked, and caught by its quality suite after a real extraction (SQLite and
MariaDB)."""

from __future__ import annotations

import collections
import datetime as dt
import io
import re
import shutil
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import pyarrow.parquet as pq
import pytest
import simulator_output
from simulator_output import read_files

from demo import socialtjanst as st
from demo import viva
from demo.documents import verify_pdf
from transforms.common.identifiers import is_valid_personnummer
from transforms.config.systems import load_system
from transforms.intake.database import extract_database
from transforms.quality.checks import check_batch

PROJECT = Path(__file__).resolve().parents[2]
YAML = PROJECT / "dags" / "systems" / "viva.yaml"
SUITE = PROJECT / "expectations" / "viva.json"
YEAR = 2025
SIZE = 150
BAD = 2
START, END = dt.datetime(YEAR, 1, 1), dt.datetime(YEAR + 1, 1, 1)

PKS = {t.name: next(iter(t.primary_key.columns)).name for t in viva.TABLES}


def read_rows(url: str) -> dict[str, list[dict]]:
    """Every row of every table, in primary-key order, as typed Python values."""
    return simulator_output.read_rows(url, viva.TABLES)


def run(tmp: Path, name: str, **kw) -> tuple[st.Summary, dict[str, list[dict]], Path, str]:
    url = f"sqlite:///{tmp / name}.sqlite"
    files = tmp / f"{name}-files"
    summary = viva.generate(url, files, **kw)
    return summary, read_rows(url), files, url


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("viva")


@pytest.fixture(scope="module")
def clean(tmp):
    return run(tmp, "clean", size=SIZE, seed=1, year=YEAR)


@pytest.fixture(scope="module")
def dirty(tmp):
    return run(tmp, "dirty", size=SIZE, seed=1, year=YEAR, bad=BAD)


@pytest.fixture(scope="module")
def system():
    return load_system(YAML)


def bad_case_ids(kind: str) -> set[int]:
    """The planted case files of one kind: appended after the SIZE valid ones, kind by kind."""
    first = SIZE + 1 + viva.BAD_KINDS.index(kind) * BAD
    return set(range(first, first + BAD))


# ------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_rows_and_files(tmp, clean):
    summary, rows, files, _ = clean
    summary2, rows2, files2, _ = run(tmp, "clean-again", size=SIZE, seed=1, year=YEAR)
    assert summary2 == summary
    assert rows2 == rows
    assert read_files(files2) == read_files(files)


def test_different_seed_differs(tmp, clean):
    _, rows, _, _ = clean
    _, rows2, _, _ = run(tmp, "seed2", size=40, seed=2, year=YEAR)
    assert rows2["individuals"][:40] != rows["individuals"][:40]


def test_bad_rows_only_add_to_the_valid_ones(clean, dirty):
    _, rows, files, _ = clean
    _, bad_rows, bad_files, _ = dirty
    for table in ("case_files", "case_parties", "journal_notes", "decisions", "documents"):
        assert bad_rows[table][: len(rows[table])] == rows[table], table
    clean_files, dirty_files = read_files(files), read_files(bad_files)
    assert all(dirty_files[k] == v for k, v in clean_files.items() if k != viva.MANIFEST)


def test_regeneration_removes_the_previous_runs_files(tmp):
    url, files = f"sqlite:///{tmp / 'regen.sqlite'}", tmp / "regen-files"
    files.mkdir()
    (files / "keep-me.txt").write_text("not the simulator's")
    viva.generate(url, files, size=20, seed=5, year=YEAR)
    summary = viva.generate(url, files, size=10, seed=6, year=YEAR)
    on_disk = set(read_files(files)) - {viva.MANIFEST, "keep-me.txt"}
    assert on_disk == {d["file_path"] for d in read_rows(url)["documents"]}
    assert len(on_disk) == summary.counts["files"]


# ------------------------------------------------------------- counts and shape


def test_summary_matches_the_tables(clean):
    summary, rows, files, _ = clean
    assert summary.counts == {**{t: len(r) for t, r in rows.items()}, "files": len(rows["documents"])}
    assert summary.counts["case_files"] == SIZE
    assert summary.bad_rows == dict.fromkeys(viva.BAD_KINDS, 0)
    on_disk = read_files(files)
    on_disk.pop(viva.MANIFEST)
    assert sum(map(len, on_disk.values())) == summary.bytes
    line = summary.describe()
    assert line.startswith(f"Viva: {len(rows['individuals'])} individuals, {SIZE} case files, ") and "MB)" in line


def test_proportions(clean):
    _, rows, _, _ = clean
    cases = rows["case_files"]
    closed_in_year = [c for c in cases if c["closed_date"] and c["closed_date"].year == YEAR]
    assert 0.70 <= len(closed_in_year) / len(cases) <= 0.90
    assert {c["case_type"] for c in cases} == set(st.CASE_TYPE_TITLES)
    assert 0.08 <= sum(c["law"] == "LSS" for c in cases) / len(cases) <= 0.30
    for table in ("journal_notes", "documents", "case_parties"):
        assert {r["case_id"] for r in rows[table]} == {c["case_id"] for c in cases}, table
    assert collections.Counter(d["outcome"] for d in rows["decisions"]).most_common(1)[0][0] == "bifall"
    assert {d["mime_type"] for d in rows["documents"]} == set(st.MIME_TYPES)
    assert any(p["protected_identity"] for p in rows["individuals"])
    assert any(int(p["personnummer"][6:8]) > 60 for p in rows["individuals"])  # samordningsnummer
    assert any(ch in p["name"] for p in rows["individuals"] for ch in "åäöÅÄÖ")
    assert any(";" in n["note_text"] and "\n" in n["note_text"] for n in rows["journal_notes"])


# ------------------------------------------------------------------ validity


def test_rows_are_valid(clean):
    _, rows, _, _ = clean
    people = {p["individual_id"]: p for p in rows["individuals"]}
    assert len({p["personnummer"] for p in people.values()}) == len(people)
    assert all(is_valid_personnummer(p["personnummer"]) for p in people.values())
    cases = {c["case_id"]: c for c in rows["case_files"]}
    for c in cases.values():
        assert c["individual_id"] in people
        assert re.match(viva.CASE_NUMBER_RE, c["case_number"]), c["case_number"]
        assert c["secrecy"] is True and c["secrecy_reference"] == "OSL 26 kap. 1 §"
        assert (c["status"] == "avslutad") == (c["closed_date"] is not None)
        assert c["closed_date"] is None or c["closed_date"] >= c["opened_date"]
    for n in rows["journal_notes"]:
        c = cases[n["case_id"]]
        assert c["opened_date"] <= n["note_date"] <= (c["closed_date"] or dt.date(YEAR + 1, 3, 31))
        assert n["note_text"].strip() and n["author"]
    for c in cases.values():  # the closing note is the last note, on the closing day
        if c["closed_date"]:
            last = max(n["note_date"] for n in rows["journal_notes"] if n["case_id"] == c["case_id"])
            assert last == c["closed_date"]
    for d in rows["decisions"]:
        c = cases[d["case_id"]]
        assert st.LEGAL_BASIS_RE.match(d["legal_basis"]), d["legal_basis"]
        assert d["legal_basis"].endswith(c["law"])
        assert d["outcome"] in st.OUTCOMES
        assert (d["valid_from"] is None) == (d["outcome"] == "avslag")
        assert d["valid_to"] is None or d["valid_to"] >= d["valid_from"]
        assert (d["amount"] is not None) == (c["case_type"] == "Ekonomiskt bistånd" and d["outcome"] != "avslag")
        if d["amount"] is not None:
            assert 0 < d["amount"] < 20_000
    lss = {d["decision_type"]: d["legal_basis"] for d in rows["decisions"] if d["legal_basis"].endswith("LSS")}
    assert lss.get("Ledsagarservice", "9 § 3 LSS") == "9 § 3 LSS"


def check_file(path: Path, mime: str) -> None:
    data = path.read_bytes()
    assert 0 < len(data) < 100_000, (path, len(data))
    if mime == "application/pdf":
        verify_pdf(data)
    elif mime == st.docs.MIME_DOCX:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            ET.fromstring(zf.read("word/document.xml"))
    else:
        assert mime == "text/plain"
        data.decode("utf-8")


def test_documents_and_files_are_valid(clean):
    _, rows, files, _ = clean
    for d in rows["documents"]:
        assert not d["file_path"].startswith("/") and ".." not in d["file_path"].split("/")
        check_file(files / d["file_path"], d["mime_type"])
    numbers = collections.defaultdict(list)
    for d in rows["documents"]:
        numbers[d["case_id"]].append(d["document_number"])
    assert all(sorted(n) == list(range(1, len(n) + 1)) for n in numbers.values())


# ------------------------------------------------------------------ bad rows


def test_each_bad_kind_is_present(dirty):
    summary, rows, files, _ = dirty
    assert summary.bad_rows == dict.fromkeys(viva.BAD_KINDS, BAD)
    assert len(rows["case_files"]) == SIZE + BAD * len(viva.BAD_KINDS)
    people = {p["individual_id"]: p for p in rows["individuals"]}
    cases = {c["case_id"]: c for c in rows["case_files"]}
    found: dict[str, set[int]] = collections.defaultdict(set)
    for c in cases.values():
        if c["individual_id"] not in people:
            found["case_without_individual"].add(c["case_id"])
        elif not is_valid_personnummer(people[c["individual_id"]]["personnummer"]):
            found["invalid_personnummer"].add(c["case_id"])
        if c["closed_date"] and c["closed_date"] < c["opened_date"]:
            found["closed_before_opened"].add(c["case_id"])
    for n in rows["journal_notes"]:
        if n["note_date"] < cases[n["case_id"]]["opened_date"]:
            found["note_before_case_opened"].add(n["case_id"])
    for d in rows["decisions"]:
        if d["legal_basis"] is None:
            found["decision_without_legal_basis"].add(d["case_id"])
    for d in rows["documents"]:
        if not (files / d["file_path"]).is_file():
            found["missing_file"].add(d["case_id"])
    for kind in viva.BAD_KINDS:
        assert found[kind] == bad_case_ids(kind), kind
        assert all(cases[i]["closed_date"].year == YEAR for i in found[kind]), kind


# ------------------------------------------- extraction, record classes, quality suite


def extract(system, url: str, files: Path, staging: Path):
    return extract_database(system, url, START, END, staging, env={"ARKIV_VIVA_FILES": str(files)})


def staged_ids(batch, table: str, key: str) -> dict[str, set[int]]:
    """Record class -> the keys of ``table`` staged in it."""
    out: dict[str, set[int]] = {}
    for name, part in batch.partitions.items():
        out[name] = {k for f in part.files.get(table, []) for k in pq.read_table(f, columns=[key])[key].to_pylist()}
    return out


def expected_class(case: dict, person: dict | None, placed: bool) -> str:
    if case["law"] == "LSS":
        return "personakter-lss-bevaras"
    if placed:
        return "personakter-placerade-barn-bevaras"
    day = int(person["personnummer"][6:8]) % 60 if person else 0
    return "personakter-sol-urval-bevaras" if day in (5, 15, 25) else "personakter-sol-gallras-5ar"


def test_yaml_loads_with_the_agreed_classes(system):
    assert system.extract_kind == "database"
    assert system.agreement.archive_creator.organisationsnummer == "212000-0340"
    assert system.agreement.series == "F 1 Personakter"
    assert [rc.name for rc in system.record_classes][0] == "personakter-lss-bevaras"
    assert system.record_classes[-1].default and system.record_classes[-1].retention.action == "dispose"
    assert system.record_classes[-1].retention.counted_from == "last_note_date"


def test_clean_batch_extracts_into_the_right_classes_and_passes(tmp, clean, system):
    _, rows, files, url = clean
    batch = extract(system, url, files, tmp / "staging-clean")
    in_year = {c["case_id"]: c for c in rows["case_files"] if c["closed_date"] and c["closed_date"].year == YEAR}
    assert batch.tables["case_files"] == len(in_year)
    people = {p["individual_id"]: p for p in rows["individuals"]}
    placed = {d["case_id"] for d in rows["decisions"]
              if d["decision_type"] in st.PLACEMENT_DECISIONS and d["outcome"] != "avslag"}
    expected: dict[str, set[int]] = collections.defaultdict(set)
    for c in in_year.values():
        expected[expected_class(c, people.get(c["individual_id"]), c["case_id"] in placed)].add(c["case_id"])
    assert staged_ids(batch, "case_files", "case_id") == expected
    assert {"personakter-lss-bevaras", "personakter-sol-urval-bevaras", "personakter-sol-gallras-5ar"} <= set(expected)

    result = check_batch(SUITE, batch.table_files(), system="viva", batch=batch.batch, report_dir=tmp / "reports",
                         sensitive_columns={t: list(c) for t, c in system.sensitive.items()})
    assert result.success, result.summary()


# kind -> (table, expectation, column label) that must catch it
INTENDED = {
    "invalid_personnummer": ("case_files", "expect_column_values_to_be_valid_personnummer", "personnummer"),
    "decision_without_legal_basis": ("decisions", "expect_column_values_to_not_be_null", "legal_basis"),
    "note_before_case_opened": ("journal_notes", "expect_column_pair_values_a_to_be_greater_than_b",
                                "note_date, case_opened_date"),
    "missing_file": ("documents", "expect_column_values_to_be_existing_files", "source_path"),
    "case_without_individual": ("case_files", "expect_column_values_to_not_be_null", "personnummer"),
    "closed_before_opened": ("case_files", "expect_column_pair_values_a_to_be_greater_than_b",
                             "closed_date, opened_date"),
}


def test_dirty_batch_fails_each_bad_kind_at_its_intended_check(tmp, dirty, system):
    _, rows, files, url = dirty
    batch = extract(system, url, files, tmp / "staging-dirty")
    result = check_batch(SUITE, batch.table_files(), system="viva", batch=batch.batch, report_dir=tmp / "reports",
                         sensitive_columns={t: list(c) for t, c in system.sensitive.items()})
    assert not result.success
    case_of = {t: {r[PKS[t]]: r["case_id"] for r in rows[t]} for t in ("journal_notes", "decisions", "documents")}
    case_of["case_files"] = {c["case_id"]: c["case_id"] for c in rows["case_files"]}
    case_of["parties"] = {p["party_id"]: p["case_id"] for p in rows["case_parties"]}
    failed = {(c.table, c.expectation, c.column): c for c in result.failed()}
    planted = set().union(*(bad_case_ids(k) for k in viva.BAD_KINDS))
    for kind, key in INTENDED.items():
        assert key in failed, kind
        hit = {case_of[key[0]][int(i)] for i in failed[key].offending_ids}
        assert bad_case_ids(kind) <= hit, kind
    for check in failed.values():  # nothing valid is flagged
        assert {case_of[check.table][int(i)] for i in check.offending_ids} <= planted, check.describe()


# ------------------------------------------------------------------ MariaDB, CLI


@pytest.mark.integration
@pytest.mark.parametrize("mariadb_url", ["utf8mb4_swedish_ci"], indirect=True)  # as Viva's own server
def test_mariadb_extracts_the_same_rows_and_digests_as_sqlite(tmp, dirty, system, mariadb_url):
    _, rows, files, url = dirty
    maria_files = tmp / "maria-files"
    viva.generate(mariadb_url, maria_files, size=SIZE, seed=1, year=YEAR, bad=BAD)
    viva.generate(mariadb_url, maria_files, size=SIZE, seed=1, year=YEAR, bad=BAD)  # drop + create on a filled db
    assert read_rows(mariadb_url) == rows
    lite = extract(system, url, files, tmp / "staging-lite")
    maria = extract(system, mariadb_url, maria_files, tmp / "staging-maria")
    assert maria.tables == lite.tables
    assert {n: p.digest for n, p in maria.partitions.items()} == {n: p.digest for n, p in lite.partitions.items()}
    assert {n: p.rows for n, p in maria.partitions.items()} == {n: p.rows for n, p in lite.partitions.items()}


def test_cli(tmp, capsys):
    url, files = f"sqlite:///{tmp / 'cli' / 'viva.sqlite'}", tmp / "cli-files"
    assert viva.main(["--url", url, "--files", str(files), "--size", "12", "--seed", "3", "--bad", "1"]) == 0
    out = capsys.readouterr().out
    assert "18 case files" in out and "missing_file=1" in out
    assert len(read_rows(url)["case_files"]) == 18
    shutil.rmtree(files)
