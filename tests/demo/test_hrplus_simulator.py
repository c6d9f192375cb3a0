"""The HR+ simulator: a deterministic monthly XML delivery that the file-export reader accepts,
realistic payroll, bad rows the quality suite catches with the intended check, and each
delivery defect the reader must quarantine."""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from lxml import etree
from simulator_output import read_files

from demo import hrplus
from transforms.common.errors import ContentError
from transforms.common.identifiers import is_valid_personnummer
from transforms.config.systems import load_system
from transforms.intake.file_export import FileExportSource, check_delivery
from transforms.quality.checks import check_batch
from transforms.staging.batch import stage

PROJECT = Path(__file__).resolve().parents[2]
SYSTEM = load_system(PROJECT / "dags" / "systems" / "hrplus.yaml")
SUITE = PROJECT / "expectations" / "hrplus.json"
PERIOD = "2025-12"
INTERVAL = (dt.datetime(2025, 12, 1), dt.datetime(2026, 1, 1))
SIZE = 150
BAD = 2

INTENDED = {
    "invalid_personnummer": "employees.expect_column_values_to_be_valid_personnummer(personnummer)",
    "employment_rate_out_of_range": "employments.expect_column_values_to_be_between(employment_rate)",
    "ended_before_started": "employments.expect_column_pair_values_a_to_be_greater_than_b(end_date, start_date)",
    "unknown_wage_type": "salary_lines.expect_column_values_to_be_in_set(wage_type)",
    "missing_amount": "salary_lines.expect_column_values_to_not_be_null(amount)",
}


def xml_rows(folder: Path, table: str) -> list[dict[str, str | None]]:
    """The rows of one table file as element name -> text (None for an empty element)."""
    root = etree.parse(str(folder / hrplus.FILES[table][0])).getroot()
    return [{child.tag: child.text for child in row} for row in root]


def staged(folder: Path, staging: Path):
    check_delivery(folder, "hrplus")
    return stage(SYSTEM, FileExportSource(SYSTEM, folder), *INTERVAL, staging)


def quality(batch, report_dir: Path):
    return check_batch(SUITE, batch.table_files(), system="hrplus", batch=batch.batch, report_dir=report_dir,
                       sensitive_columns={t: list(c) for t, c in SYSTEM.sensitive.items()})


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hrplus")


@pytest.fixture(scope="module")
def clean(tmp):
    summary = hrplus.generate(tmp / "clean", period=PERIOD, size=SIZE, seed=1)
    return summary, tmp / "clean" / PERIOD


@pytest.fixture(scope="module")
def dirty(tmp):
    summary = hrplus.generate(tmp / "dirty", period=PERIOD, size=SIZE, seed=1, bad=BAD)
    return summary, tmp / "dirty" / PERIOD


# ------------------------------------------------------------------ determinism and shape


def test_same_seed_gives_identical_bytes(tmp, clean):
    summary, folder = clean
    summary2 = hrplus.generate(tmp / "again", period=PERIOD, size=SIZE, seed=1)
    assert summary2 == summary
    assert read_files(tmp / "again" / PERIOD) == read_files(folder)


def test_seed_and_period_change_the_data(tmp, clean):
    _, folder = clean
    hrplus.generate(tmp / "seed2", period=PERIOD, size=SIZE, seed=2)
    assert xml_rows(tmp / "seed2" / PERIOD, "employees") != xml_rows(folder, "employees")
    hrplus.generate(tmp / "nov", period="2025-11", size=SIZE, seed=1)
    (period,) = xml_rows(tmp / "nov" / "2025-11", "pay_periods")
    assert period["period_id"] == "2025-11" and period["payment_date"] == "2025-11-25"


def test_bad_rows_only_add_to_the_valid_ones(clean, dirty):
    _, folder = clean
    _, bad_folder = dirty
    for table in hrplus.FILES:
        rows, bad_rows = xml_rows(folder, table), xml_rows(bad_folder, table)
        assert bad_rows[: len(rows)] == rows, table


def test_regeneration_replaces_the_delivery(tmp):
    inbox = tmp / "regen"
    hrplus.generate(inbox, size=30, seed=1, defect="unlisted_file")
    hrplus.generate(inbox, size=10, seed=1)
    check_delivery(inbox / PERIOD, "hrplus")  # no leftover file from the first run
    assert len(xml_rows(inbox / PERIOD, "employees")) == 10
    assert sorted(p.name for p in inbox.iterdir()) == [PERIOD]  # no temporary folders left behind


def test_manifest_lists_every_file(clean):
    summary, folder = clean
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["system"] == "hrplus" and manifest["period"] == PERIOD
    assert manifest["created"] == "2026-01-01T02:00:00"
    files = read_files(folder)
    listed = {e["path"]: e for e in manifest["files"]}
    assert set(listed) == set(files) - {"manifest.json"} == {f for f, _ in hrplus.FILES.values()}
    for path, entry in listed.items():
        assert entry["size"] == len(files[path])
        assert entry["sha256"] == hashlib.sha256(files[path]).hexdigest()
    assert summary.counts["files"] == len(files)
    assert summary.bytes == sum(map(len, files.values()))


def test_xml_follows_the_yaml(clean):
    _, folder = clean
    for table in SYSTEM.tables.values():
        data = (folder / table.file).read_bytes()
        assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
        data.decode("utf-8")
        for row in xml_rows(folder, table.name):
            assert set(row) <= set(table.column_names), table.name
            assert row[table.key]


# ------------------------------------------------------------------ realism


def test_summary_counts_and_payroll_realism(clean):
    summary, folder = clean
    rows = {t: xml_rows(folder, t) for t in hrplus.FILES}
    assert summary.counts == {**{t: len(r) for t, r in rows.items()}, "files": 5}
    assert summary.counts["employees"] == SIZE
    assert summary.describe().startswith(f"HR+ {PERIOD}: {SIZE} employees, ")
    (period,) = rows["pay_periods"]
    assert period["payment_date"] == "2025-12-23"  # the 25th is juldagen, the 24th julafton
    employees = {e["employee_id"]: e for e in rows["employees"]}
    assert len(employees) == SIZE
    for e in employees.values():
        assert is_valid_personnummer(e["personnummer"]), e["personnummer"]
        assert 1957 <= int(e["personnummer"][:4]) <= 2007  # of working age
    assert any(ch in e["name"] for e in employees.values() for ch in "åäöÅÄÖ")
    forms = collections.Counter(e["employment_form"] for e in rows["employments"])
    assert set(forms) == set(hrplus.EMPLOYMENT_FORMS)
    assert forms["Tillsvidareanställning"] / len(rows["employments"]) > 0.6
    employments = {e["employment_id"]: e for e in rows["employments"]}
    for e in employments.values():
        assert e["employee_id"] in employees
        if e["employment_form"] == "Timavlönad":
            assert e["employment_rate"] is None and e["monthly_salary"] is None and Decimal(e["hourly_rate"]) > 100
        else:
            assert Decimal("0") < Decimal(e["employment_rate"]) <= 100 and Decimal(e["monthly_salary"]) >= 20_000
    net = collections.Counter()
    codes = collections.Counter()
    for line in rows["salary_lines"]:
        assert line["employment_id"] in employments
        assert line["wage_type"] in hrplus.WAGE_TYPES
        assert line["wage_type_text"] == hrplus.WAGE_TYPES[line["wage_type"]][0]
        amount = Decimal(line["amount"])
        assert amount == amount.quantize(Decimal("0.01"))  # kronor and öre
        if line.get("quantity") and line.get("unit_price"):
            product = Decimal(line["quantity"]) * Decimal(line["unit_price"])
            assert amount == product.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)  # öre rounded half up
        if line["wage_type"] == "9010":
            assert amount < 0
        codes[line["wage_type"]] += 1
        net[line["employment_id"]] += amount
    assert {"1101", "1201", "1310", "1410", "9010"} <= set(codes)
    assert codes["9010"] == len(employments)  # one tax line per salary slip
    assert all(0 < v < 80_000 for v in net.values())  # every slip nets a positive, plausible amount


# ------------------------------------------------------------------ bad rows and the suite


def test_each_bad_kind_is_present(dirty):
    summary, folder = dirty
    assert summary.bad_rows == dict.fromkeys(hrplus.BAD_KINDS, BAD)
    rows = {t: xml_rows(folder, t) for t in hrplus.FILES}
    found = collections.Counter()
    found["invalid_personnummer"] = sum(not is_valid_personnummer(e["personnummer"]) for e in rows["employees"])
    found["employment_rate_out_of_range"] = sum(
        e["employment_rate"] is not None and not 0 < Decimal(e["employment_rate"]) <= 100 for e in rows["employments"])
    found["ended_before_started"] = sum(e["end_date"] is not None and e["end_date"] < e["start_date"]
                                        for e in rows["employments"])
    found["unknown_wage_type"] = sum(line["wage_type"] not in hrplus.WAGE_TYPES for line in rows["salary_lines"])
    found["missing_amount"] = sum("amount" not in line for line in rows["salary_lines"])
    assert found == dict.fromkeys(hrplus.BAD_KINDS, BAD)


def test_the_reader_stages_the_delivery_into_one_kept_class(clean, tmp):
    summary, folder = clean
    batch = staged(folder, tmp / "stage-classes")
    assert batch.batch == PERIOD
    assert batch.tables == {t: summary.counts[t] for t in SYSTEM.tables}
    assert set(batch.partitions) == {"lonelistor-bevaras"}
    lines = pq.read_table(batch.table_files()["salary_lines"])
    assert str(lines.schema.field("amount").type).startswith("decimal128")


def test_suite_passes_on_clean_data(clean, tmp):
    _, folder = clean
    result = quality(staged(folder, tmp / "stage-clean"), tmp / "report-clean")
    assert result.success, result.summary()


def test_suite_catches_each_bad_kind_with_the_intended_check(dirty, tmp):
    _, folder = dirty
    result = quality(staged(folder, tmp / "stage-dirty"), tmp / "report-dirty")
    failed = {c.describe(): c for c in result.failed()}
    assert set(failed) == set(INTENDED.values()), result.summary()
    assert all(c.unexpected_count == BAD for c in failed.values())
    report = result.result_path.read_text(encoding="utf-8")
    assert not any(e["personnummer"] in report for e in xml_rows(folder, "employees"))


# ------------------------------------------------------------------ delivery defects


@pytest.mark.parametrize(
    ("defect", "message"),
    [
        ("wrong_encoding", "anstallda.xml"),
        ("ragged_row", "not well-formed XML"),
        ("unknown_column", "unknown column 'fackforbund'"),
        ("bad_value", "column amount"),
        ("checksum_mismatch", "SHA-256 differs"),
        ("missing_file", "listed in the manifest but not in the delivery"),
        ("unlisted_file", "not listed in the manifest"),
    ],
)
def test_each_defect_is_refused_by_the_reader(tmp, defect, message):
    assert defect in hrplus.DEFECTS
    inbox = tmp / f"defect-{defect}"
    summary = hrplus.generate(inbox, size=20, seed=4, defect=defect)
    assert summary.defect == defect and defect in summary.describe()
    with pytest.raises(ContentError) as caught:
        staged(inbox / PERIOD, tmp / f"stage-{defect}")
    assert message in str(caught.value) + " ".join(map(str, getattr(caught.value, "details", None) or [])), (
        caught.value)


def test_defects_are_exactly_what_they_say(tmp):
    inbox = tmp / "defects"
    folders = {}
    for defect in ("wrong_encoding", "ragged_row", "bad_value"):
        hrplus.generate(inbox / defect, size=20, seed=4, defect=defect)
        folders[defect] = inbox / defect / PERIOD
    with pytest.raises(UnicodeDecodeError):
        (folders["wrong_encoding"] / "anstallda.xml").read_bytes().decode("utf-8")
    assert b"\xff" in (folders["wrong_encoding"] / "anstallda.xml").read_bytes()
    with pytest.raises(etree.XMLSyntaxError):
        etree.parse(str(folders["ragged_row"] / "anstallda.xml"))
    amounts = [line["amount"] for line in xml_rows(folders["bad_value"], "salary_lines") if "amount" in line]
    assert "," in amounts[0] and all("," not in a for a in amounts[1:])
    with pytest.raises(ValueError, match="defect"):
        hrplus.generate(inbox / "unknown", defect="no_such_defect")
    with pytest.raises(ValueError, match="period"):
        hrplus.generate(inbox / "unknown", period="2025-13")


def test_cli(tmp, capsys):
    inbox = tmp / "cli"
    assert hrplus.main(["--inbox", str(inbox), "--size", "12", "--seed", "3", "--bad", "1"]) == 0
    out = capsys.readouterr().out
    assert "HR+ 2025-12: 17 employees" in out and "missing_amount=1" in out
    check_delivery(inbox / PERIOD, "hrplus")
