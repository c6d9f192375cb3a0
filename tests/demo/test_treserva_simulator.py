"""The Treserva simulator (social services, Strängnäs): a monthly windows-1252 CSV delivery that is
deterministic, valid by default, bad exactly where asked, caught by its quality suite after the
real file-export reader, and broken in exactly the declared way for each defect."""

from __future__ import annotations

import collections
import csv
import datetime as dt
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from simulator_output import read_files as read_delivery

from demo import socialtjanst as st
from demo import treserva
from demo.documents import verify_pdf
from transforms.common.errors import ContentError
from transforms.common.identifiers import is_valid_personnummer
from transforms.config.systems import load_system
from transforms.intake.file_export import FileExportSource, check_delivery
from transforms.quality.checks import check_batch
from transforms.staging.batch import stage

PROJECT = Path(__file__).resolve().parents[2]
YAML = PROJECT / "dags" / "systems" / "treserva.yaml"
SUITE = PROJECT / "expectations" / "treserva.json"
PERIOD = "2025-12"
SIZE = 120
BAD = 2
START, END = dt.datetime(2025, 12, 1), dt.datetime(2026, 1, 1)
KEYS = {"akter.csv": "akt_id", "parter.csv": "part_id", "journal.csv": "anteckning_id", "beslut.csv": "beslut_id",
        "dokument.csv": "dokument_id"}


def read_table(folder: Path, name: str) -> list[dict[str, str]]:
    with open(folder / name, encoding="windows-1252", newline="") as f:
        return list(csv.DictReader(f, delimiter=";", quotechar='"'))


def tables(folder: Path) -> dict[str, list[dict[str, str]]]:
    return {name: read_table(folder, name) for name in treserva.FILES}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("treserva")


@pytest.fixture(scope="module")
def clean(tmp):
    summary = treserva.generate(tmp / "clean", period=PERIOD, size=SIZE, seed=1)
    return summary, tmp / "clean" / PERIOD


@pytest.fixture(scope="module")
def dirty(tmp):
    summary = treserva.generate(tmp / "dirty", period=PERIOD, size=SIZE, seed=1, bad=BAD)
    return summary, tmp / "dirty" / PERIOD


@pytest.fixture(scope="module")
def system():
    return load_system(YAML)


def bad_akt_ids(kind: str) -> set[int]:
    """The planted akter of one kind: appended after the SIZE valid ones, kind by kind."""
    base = ((2025 - 2000) * 12 + 12) * 10_000
    first = base + SIZE + 1 + treserva.BAD_KINDS.index(kind) * BAD
    return set(range(first, first + BAD))


# ------------------------------------------------------------------ determinism


def test_same_arguments_give_identical_bytes(tmp, clean):
    summary, folder = clean
    again = treserva.generate(tmp / "again", period=PERIOD, size=SIZE, seed=1)
    assert again == summary
    assert read_delivery(tmp / "again" / PERIOD) == read_delivery(folder)


def test_seed_and_period_change_the_data(tmp, clean):
    _, folder = clean
    treserva.generate(tmp / "other", period=PERIOD, size=30, seed=2)
    treserva.generate(tmp / "other", period="2025-11", size=30, seed=1)
    original = read_table(folder, "parter.csv")[:5]
    assert read_table(tmp / "other" / PERIOD, "parter.csv")[:5] != original
    november = read_table(tmp / "other" / "2025-11", "akter.csv")
    assert all(a["avslutad"].startswith("2025-11") for a in november)
    assert not {a["akt_id"] for a in november} & {a["akt_id"] for a in read_table(folder, "akter.csv")}


def test_bad_rows_only_add_to_the_valid_ones(clean, dirty):
    good, bad = tables(clean[1]), tables(dirty[1])
    for name in treserva.FILES:
        assert bad[name][: len(good[name])] == good[name], name


def test_a_new_delivery_replaces_the_old_one(tmp):
    treserva.generate(tmp / "replace", period=PERIOD, size=20, seed=3)
    summary = treserva.generate(tmp / "replace", period=PERIOD, size=5, seed=4)
    folder = tmp / "replace" / PERIOD
    check_delivery(folder, "treserva")  # nothing of the first delivery is left over
    assert len(read_table(folder, "akter.csv")) == 5 == summary.counts["akter"]
    assert [p.name for p in (tmp / "replace").iterdir()] == [PERIOD]


# ------------------------------------------------------------- the delivery's form


def test_manifest_lists_every_file_exactly(clean):
    summary, folder = clean
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["system"] == "treserva" and manifest["period"] == PERIOD
    assert manifest["created"] == "2026-01-01T03:00:00"
    on_disk = read_delivery(folder)
    on_disk.pop("manifest.json")
    assert {f["path"] for f in manifest["files"]} == set(on_disk)
    for f in manifest["files"]:
        assert f["size"] == len(on_disk[f["path"]])
        assert f["sha256"] == hashlib.sha256(on_disk[f["path"]]).hexdigest()
    assert summary.bytes == sum(map(len, on_disk.values()))
    assert check_delivery(folder, "treserva") == manifest


def test_csv_dialect_is_treservas(clean):
    _, folder = clean
    for name, columns in treserva.FILES.items():
        raw = (folder / name).read_bytes()
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")  # windows-1252 åäö are not UTF-8
        text = raw.decode("windows-1252")
        assert text.split("\r\n", 1)[0] == ";".join(columns)
        assert text.endswith("\r\n") and "\r\n" in text
    journal = (folder / "journal.csv").read_bytes().decode("windows-1252")
    assert re.search(r';"[^"]*;[^"]*"\r\n', journal), "a quoted note with ';'"
    notes = read_table(folder, "journal.csv")
    assert any("\n" in n["text"] for n in notes) and any(";" in n["text"] for n in notes)
    amounts = [b["belopp"] for b in read_table(folder, "beslut.csv") if b["belopp"]]
    assert amounts and all(re.fullmatch(r"\d+,\d\d", a) for a in amounts)
    assert {a["sekretess"] for a in read_table(folder, "akter.csv")} == {"ja"}


# ------------------------------------------------------------------ validity


def test_rows_are_valid(clean):
    summary, folder = clean
    t = tables(folder)
    assert summary.counts == {
        "akter": SIZE, "parter": len(t["parter.csv"]), "journalanteckningar": len(t["journal.csv"]),
        "beslut": len(t["beslut.csv"]), "dokument": len(t["dokument.csv"]), "files": len(t["dokument.csv"])}
    assert summary.describe().startswith(f"Treserva: {SIZE} akter, ")
    for name, key in KEYS.items():
        ids = [r[key] for r in t[name]]
        assert len(set(ids)) == len(ids), name
    akter = {a["akt_id"]: a for a in t["akter.csv"]}
    for a in akter.values():
        assert is_valid_personnummer(a["personnr"]) and len(a["personnr"]) == 12
        assert a["fodelsedag"] == f"{int(a['personnr'][6:8]) % 60:02d}"
        assert a["avslutad"].startswith(PERIOD) and a["oppnad"] <= a["avslutad"]
        assert a["senaste_anteckning"] == a["avslutad"]
        assert a["akttyp"] in st.CASE_TYPE_TITLES and a["lagstiftning"] in ("SoL", "LSS")
    assert {a["akt_id"] for a in akter.values()} == {p["akt_id"] for p in t["parter.csv"]}
    for p in t["parter.csv"]:
        assert is_valid_personnummer(p["personnr"]) and re.fullmatch(r"[^,]+, [^,]+", p["namn"])
    for b in t["beslut.csv"]:
        assert st.LEGAL_BASIS_RE.match(b["lagrum"]) and b["lagrum"].endswith(akter[b["akt_id"]]["lagstiftning"])
        assert (b["utfall"] == "avslag") == (b["giltig_from"] == "")
    assert any(ch in p["namn"] for p in t["parter.csv"] for ch in "åäöÅÄÖ")
    assert collections.Counter(a["fodelsedag"] in st.KEPT_BIRTH_DAYS for a in akter.values())[True] >= 3


def test_documents_are_valid_files(clean):
    _, folder = clean
    for d in read_table(folder, "dokument.csv"):
        data = (folder / d["fil"]).read_bytes()
        assert d["fil"].startswith("dokument/") and d["riktning"] in ("inkommande", "utgående", "upprättad")
        if d["mimetyp"] == "application/pdf":
            verify_pdf(data)
        elif d["mimetyp"] == st.docs.MIME_DOCX:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                ET.fromstring(zf.read("word/document.xml"))
        else:
            assert d["mimetyp"] == "text/plain"
            data.decode("utf-8")


def test_each_bad_kind_is_present(dirty):
    summary, folder = dirty
    assert summary.bad_rows == dict.fromkeys(treserva.BAD_KINDS, BAD)
    t = tables(folder)
    found: dict[str, set[int]] = collections.defaultdict(set)
    for a in t["akter.csv"]:
        if not a["personnr"]:
            found["case_without_individual"].add(int(a["akt_id"]))
        elif not is_valid_personnummer(a["personnr"]):
            found["invalid_personnummer"].add(int(a["akt_id"]))
        if a["avslutad"] < a["oppnad"]:
            found["closed_before_opened"].add(int(a["akt_id"]))
    for b in t["beslut.csv"]:
        if not b["lagrum"]:
            found["decision_without_legal_basis"].add(int(b["akt_id"]))
        if b["belopp"].startswith("-"):
            found["negative_amount"].add(int(b["akt_id"]))
    for d in t["dokument.csv"]:
        if not (folder / d["fil"]).is_file():
            found["missing_file"].add(int(d["akt_id"]))
    for kind in treserva.BAD_KINDS:
        assert found[kind] == bad_akt_ids(kind), kind
    check_delivery(folder, "treserva")  # content errors, not a broken delivery


# ------------------------------------------- reader, record classes, quality suite


def sensitive(system) -> dict[str, list[str]]:
    return {t: list(c) for t, c in system.sensitive.items()}


def staged(system, folder: Path, staging: Path):
    return stage(system, FileExportSource(system, folder), START, END, staging)


def test_yaml_loads(system):
    assert system.extract_kind == "file_export"
    fe = system.file_export
    assert (fe.format, fe.encoding, fe.delimiter, fe.decimal) == ("csv", "windows-1252", ";", ",")
    assert {t.file for t in system.tables.values()} == set(treserva.FILES)
    for t in system.tables.values():
        assert tuple(t.column_names) == treserva.FILES[t.file]
    assert system.agreement.archive_creator.organisationsnummer == "212000-0357"


def test_clean_delivery_reads_into_the_right_classes_and_passes(tmp, clean, system):
    _, folder = clean
    check_delivery(folder, "treserva")
    batch = staged(system, folder, tmp / "staging-clean")
    assert batch.tables["akter"] == SIZE
    expected = collections.Counter()
    placed = {a["akt_id"] for a in read_table(folder, "akter.csv") if a["placerad"] == "ja"}
    for a in read_table(folder, "akter.csv"):
        if a["lagstiftning"] == "LSS":
            expected["personakter-lss-bevaras"] += 1
        elif a["akt_id"] in placed:
            expected["personakter-placerade-barn-bevaras"] += 1
        elif a["fodelsedag"] in st.KEPT_BIRTH_DAYS:
            expected["personakter-sol-urval-bevaras"] += 1
        else:
            expected["personakter-sol-gallras-5ar"] += 1
    assert {n: p.rows["akter"] for n, p in batch.partitions.items()} == dict(expected)
    result = check_batch(SUITE, batch.table_files(), system="treserva", batch=batch.batch,
                         report_dir=tmp / "reports", sensitive_columns=sensitive(system))
    assert result.success, result.summary()


INTENDED = {
    "invalid_personnummer": ("akter", "expect_column_values_to_be_valid_personnummer", "personnr"),
    "decision_without_legal_basis": ("beslut", "expect_column_values_to_not_be_null", "lagrum"),
    "closed_before_opened": ("akter", "expect_column_pair_values_a_to_be_greater_than_b", "avslutad, oppnad"),
    "missing_file": ("dokument", "expect_column_values_to_be_existing_files", "source_path"),
    "case_without_individual": ("akter", "expect_column_values_to_not_be_null", "personnr"),
    "negative_amount": ("beslut", "expect_column_values_to_be_between", "belopp"),
}


def test_dirty_delivery_fails_each_bad_kind_at_its_intended_check(tmp, dirty, system):
    _, folder = dirty
    batch = staged(system, folder, tmp / "staging-dirty")
    result = check_batch(SUITE, batch.table_files(), system="treserva", batch=batch.batch,
                         report_dir=tmp / "reports", sensitive_columns=sensitive(system))
    assert not result.success
    akt_of = {t.removesuffix(".csv"): {int(r[k]): int(r["akt_id"]) for r in read_table(folder, t)}
              for t, k in KEYS.items()}
    failed = {(c.table, c.expectation, c.column): c for c in result.failed()}
    planted = set().union(*(bad_akt_ids(k) for k in treserva.BAD_KINDS))
    for kind, key in INTENDED.items():
        assert key in failed, kind
        assert bad_akt_ids(kind) <= {akt_of[key[0]][int(i)] for i in failed[key].offending_ids}, kind
    for check in failed.values():  # nothing valid is flagged
        assert {akt_of[check.table][int(i)] for i in check.offending_ids} <= planted, check.describe()


# (defect, where the reader must stop, words its reason must contain)
DEFECT_REASONS = {
    "wrong_encoding": ("read", "journal.csv", "not valid windows-1252 at line"),
    "ragged_row": ("read", "beslut.csv", "fields"),
    "unknown_column": ("read", "akter.csv", "arkivstatus"),
    "bad_value": ("read", "beslut", "beslutsdatum"),
    "checksum_mismatch": ("manifest", "dokument/", "SHA-256"),
    "missing_file": ("manifest", "dokument/", "not in the delivery"),
    "unlisted_file": ("manifest", "(2)", "not listed"),
}


@pytest.mark.parametrize("defect", treserva.DEFECTS)
def test_each_defect_breaks_the_delivery_in_its_own_way(tmp, system, defect):
    summary = treserva.generate(tmp / f"defect-{defect}", period=PERIOD, size=8, seed=1, defect=defect)
    assert summary.defect == defect and f"defect: {defect}" in summary.describe()
    folder = tmp / f"defect-{defect}" / PERIOD
    stage_at, where, words = DEFECT_REASONS[defect]
    with pytest.raises(ContentError) as caught:
        check_delivery(folder, "treserva")
        staged(system, folder, tmp / f"staging-{defect}")
    message = str(caught.value)  # with its details
    assert where in message and words in message, message
    if stage_at == "read":
        check_delivery(folder, "treserva")  # the manifest agrees: only the content is broken


def test_unknown_defect_is_refused(tmp):
    with pytest.raises(ValueError, match="defect"):
        treserva.generate(tmp / "nope", defect="on_fire")


def test_cli(tmp, capsys):
    inbox = tmp / "cli"
    assert treserva.main(["--inbox", str(inbox), "--period", "2025-10", "--size", "6", "--bad", "1"]) == 0
    out = capsys.readouterr().out
    assert "Treserva: 12 akter" in out and "negative_amount=1" in out
    assert len(read_table(inbox / "2025-10", "akter.csv")) == 12
