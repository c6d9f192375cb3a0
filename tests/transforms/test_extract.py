import datetime as dt
import hashlib
import json
import os
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.common.errors import ContentError
from transforms.config.systems import load_system
from transforms.intake.database import extract_database
from transforms.staging.batch import (
    WHERE,
    RowSource,
    StagedBatch,
    _digest_batch,
    _digest_rows,
    _DocumentStore,
    _resolve_file,
    _RootClassifier,
    period_label,
    stage,
)

LEX = load_system(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")
Y2025 = (dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1))


def _extract(source, staging, system=LEX, interval=Y2025):
    return extract_database(system, source["url"], *interval, staging, env={"ARKIV_LEX_FILES": str(source["files"])})


def test_period_labels():
    d = dt.datetime
    assert period_label(d(2025, 1, 1), d(2026, 1, 1)) == "2025"
    assert period_label(d(2025, 12, 1), d(2026, 1, 1)) == "2025-12"
    assert period_label(d(2025, 3, 14), d(2025, 3, 15)) == "2025-03-14"
    assert period_label(d(2025, 3, 1), d(2025, 6, 1)) == "2025-03-01--2025-06-01"


def test_extracts_the_interval_into_partitions(lex_source, tmp_path):
    staged = _extract(lex_source, tmp_path)
    assert staged.batch == "2025"
    assert staged.tables["cases"] > 0 and staged.tables["documents"] > 0
    assert set(staged.partitions) <= {rc.name for rc in LEX.record_classes}
    # every row lands in exactly one partition
    for table, total in staged.tables.items():
        assert sum(p.rows.get(table, 0) for p in staged.partitions.values()) == total
    cases = pq.read_table(staged.table_files()["cases"]).to_pylist()
    assert all(dt.date(2025, 1, 1) <= c["closed_date"] < dt.date(2026, 1, 1) for c in cases)
    assert all(c["record_class"] == LEX.record_class_of(c["classification_code"]) for c in cases)
    # declared types, not whatever SQLite handed back
    schema = pq.read_schema(staged.table_files()["cases"][0])
    assert str(schema.field("registered_date").type) == "date32[day]"
    assert str(schema.field("secrecy").type) == "bool"
    docs = pq.read_table(staged.table_files()["documents"]).to_pylist()
    assert all(os.path.isabs(d["source_path"]) and os.path.isfile(d["source_path"]) for d in docs)
    # children inherit their case's record class
    case_class = {c["case_id"]: c["record_class"] for c in cases}
    assert all(d["record_class"] == case_class[d["case_id"]] for d in docs)
    assert StagedBatch.load(staged.manifest_path).partitions.keys() == staged.partitions.keys()


def test_extraction_is_deterministic_and_independent_of_batch_size(lex_source, tmp_path):
    a = _extract(lex_source, tmp_path / "a")
    b = _extract(lex_source, tmp_path / "b", system=replace(LEX, batch_rows=3))
    assert {k: p.rows for k, p in a.partitions.items()} == {k: p.rows for k, p in b.partitions.items()}
    for k in a.partitions:
        ta = pq.read_table(a.partitions[k].files["cases"]).drop(["record_class"])
        tb = pq.read_table(b.partitions[k].files["cases"]).drop(["record_class"])
        assert ta.equals(tb)
    assert {k: p.digest for k, p in a.partitions.items()} == {k: p.digest for k, p in b.partitions.items()}
    again = _extract(lex_source, tmp_path / "a")
    assert {k: p.digest for k, p in again.partitions.items()} == {k: p.digest for k, p in a.partitions.items()}


def test_rerun_replaces_the_staged_batch_without_leftovers(lex_source, tmp_path):
    _extract(lex_source, tmp_path)
    _extract(lex_source, tmp_path)
    entries = sorted(p.name for p in (tmp_path / "lex").iterdir())
    assert entries == ["2025"]  # no .tmp or .old folders left behind


def test_empty_interval_stages_empty_tables(lex_source, tmp_path):
    staged = _extract(lex_source, tmp_path, interval=(dt.datetime(1990, 1, 1), dt.datetime(1991, 1, 1)))
    assert staged.is_empty and staged.partitions == {}
    files = staged.table_files()
    assert set(files) == set(LEX.tables)
    assert all(pq.read_table(f[0]).num_rows == 0 for f in files.values())


def test_rows_matching_no_record_class_are_a_content_error(lex_source, tmp_path):
    narrow = replace(LEX, record_classes=LEX.record_classes[:1])
    with pytest.raises(ContentError, match="match no record class"):
        _extract(lex_source, tmp_path, system=narrow)
    assert not any((tmp_path / "lex").iterdir())  # the half-written batch was removed


def test_document_paths_cannot_escape_the_document_store(tmp_path):
    root = (tmp_path / "store").resolve()
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("x")
    (root / "sub" / "b.txt").write_text("x")
    (tmp_path / "secret.txt").write_text("outside")
    (root / "sub" / "link.txt").symlink_to(tmp_path / "secret.txt")  # a link inside pointing out
    (root / "sub" / "inner.txt").symlink_to(root / "a.txt")  # a link that stays inside
    (root / "out").symlink_to(tmp_path)  # a folder link pointing out
    assert _resolve_file(root, "a.txt") == str(root / "a.txt")
    assert _resolve_file(root, "sub/b.txt") == str(root / "sub" / "b.txt")
    assert _resolve_file(root, "sub/inner.txt") == str(root / "a.txt")
    assert _resolve_file(root, "sub/./b.txt") == str(root / "sub" / "b.txt")
    for hostile in ("../etc/passwd", "/etc/passwd", "sub/../../x", "", None, "a\x00b", "sub/link.txt",
                    "out/secret.txt", "sub/..", ".."):
        assert _resolve_file(root, hostile) == "", hostile
    cache: dict[str, str] = {}
    assert [_resolve_file(root, p, cache) for p in ("sub/b.txt", "sub/link.txt")] == [str(root / "sub" / "b.txt"), ""]


def test_digest_does_not_depend_on_where_the_document_store_is_mounted(lex_source, tmp_path):
    import shutil

    moved = tmp_path / "elsewhere"
    shutil.copytree(lex_source["files"], moved)
    a = _extract(lex_source, tmp_path / "a")
    b = extract_database(LEX, lex_source["url"], *Y2025, tmp_path / "b", env={"ARKIV_LEX_FILES": str(moved)})
    assert {k: p.digest for k, p in a.partitions.items()} == {k: p.digest for k, p in b.partitions.items()}


# --- Column-wise staging gives what row-by-row staging gave ------------------------------------
#
# Staging converts, classifies and digests whole columns at a time. The tests below pin what it
# must produce: the digests the row-by-row code computed (they make package IDs, so they must
# not move), the same Parquet whether values arrive typed (PostgreSQL) or as text (SQLite), and
# the same errors naming the same row and column.

MIXED_YAML = """
system: mixed
title: Mixed types
schedule: "0 4 1 * *"
start_date: 2024-01-01
agreement:
  archive_creator: {name: Strängnäs kommun, organisationsnummer: "212000-0357"}
  submitter: {name: Strängnäs kommun, organisationsnummer: "212000-0357"}
  submission_agreement: LA-1
  reference_code: SE/X
extract:
  kind: database
  connection: mixed_db
  batch_rows: 3
  tables:
    cases:
      key: id
      query: SELECT 1
      columns:
        id: {type: int64}
        code: {type: string}
        opened: {type: date}
        changed: {type: timestamp}
        amount: {type: decimal}
        score: {type: float64}
        secret: {type: bool}
        note: {type: string}
    notes:
      key: note_id
      parent: {table: cases, column: case_id}
      query: SELECT 1
      columns:
        note_id: {type: int64}
        case_id: {type: int64}
        text: {type: string}
        path: {type: string}
      files: {root_env: MIXED_FILES, path_column: path}
record_classes:
  - {name: ett, title: Ett, match: {column: code, prefixes: ["1."]},
     retention: {action: keep, counted_from: opened, period: P0D, basis: t}}
  - {name: hemliga, title: Hemliga, match: {column: secret, values: ["True"]},
     retention: {action: keep, counted_from: opened, period: P0D, basis: t}}
  - {name: ovriga, title: Övriga, match: {default: true},
     retention: {action: keep, counted_from: opened, period: P0D, basis: t}}
content: {kind: tabular}
quality: {suite: x.json}
"""

_D, _T = dt.date, dt.datetime
TRICKY = ['citat "så" och \\ snedstreck', "rad\nny\r\ttab", "\x00\x01\x08\x0c\x1f\x7f", "\u2028 å ä ö 😀", "", None]
MIXED_CASES = [  # as PostgreSQL hands them back: Python types
    {"id": 1, "code": "1.2", "opened": _D(2025, 1, 2), "changed": _T(2025, 1, 2, 3, 4, 5), "amount": Decimal("12.5"),
     "score": 0.1, "secret": False, "note": TRICKY[0]},
    {"id": 2, "code": "2.1", "opened": _D(999, 12, 31), "changed": _T(2025, 6, 1, 0, 0, 0, 1),
     "amount": Decimal("0"), "score": float("nan"), "secret": True, "note": TRICKY[1]},
    {"id": 3, "code": None, "opened": None, "changed": None, "amount": None, "score": None, "secret": None,
     "note": None},
    {"id": 2**62, "code": "1.", "opened": _D(1, 1, 1), "changed": _T(9999, 12, 31, 23, 59, 59, 500000),
     "amount": Decimal("-0.0000001"), "score": 1e20, "secret": False, "note": TRICKY[2]},
    {"id": -5, "code": "4.4", "opened": _D(2025, 12, 31), "changed": _T(1, 1, 1),
     "amount": Decimal("1234567890123456789012345678.1234567891"), "score": -0.0, "secret": False, "note": TRICKY[3]},
    {"id": 6, "code": "3", "opened": _D(2024, 2, 29), "changed": _T(2024, 2, 29, 12), "amount": Decimal("7"),
     "score": float("inf"), "secret": None, "note": TRICKY[4]},
    {"id": 7, "code": "1.9", "opened": _D(2025, 3, 3), "changed": _T(2025, 3, 3), "amount": Decimal("1E+3"),
     "score": 1e-7, "secret": True, "note": TRICKY[5]},
]
MIXED_NOTES = [
    {"note_id": 10, "case_id": 1, "text": TRICKY[1], "path": "a/x.txt"},
    {"note_id": 11, "case_id": 2, "text": None, "path": "a/y.txt"},
    {"note_id": 12, "case_id": 99, "text": "no such case", "path": None},  # an orphan: staged in no partition
    {"note_id": 13, "case_id": 2**62, "text": TRICKY[3], "path": "b/outside.txt"},  # no such folder
    {"note_id": 14, "case_id": 7, "text": "", "path": "a/missing.txt"},
]
#: the digests the row-by-row code (before column-wise staging) computed for the rows above; "ett"
#: by the row-wise reference (_digest_rows), since note 13's path no longer leaves the store (that
#: is now a ContentError of its own, see test_a_document_path_out_of_the_store_stops_staging)
MIXED_DIGESTS = {
    "ett": "40b634cf7e567e180ded788d3535cf9ce4ba7c4d93b5a109327d6e660140c733",
    "hemliga": "f68b61a090ff1c963b93b425110b958cdff8537bae9d9ce40d339776fa9eb5d4",
    "ovriga": "ab1ff6c29b9fcaf912dcb6a853f24aea8976259ac45a55e25dcca8576218f44b",
}


def _as_text(row: dict) -> dict:
    """The row as SQLite would hand it back: dates and decimals as text, booleans as 0/1."""
    out = {}
    for k, v in row.items():
        if isinstance(v, bool):
            v = int(v)
        elif isinstance(v, dt.date | Decimal) and k != "score":
            v = v.isoformat(sep=" ") if isinstance(v, dt.datetime) else str(v)
        out[k] = v
    return out


class ListSource(RowSource):
    """Rows from lists of mappings, in chunks of ``batch_rows``: the simplest possible source."""

    def __init__(self, system, rows: dict[str, list[dict]], files: Path):
        self.system, self.rows, self.files = system, rows, files

    def chunks(self, table):
        rows = self.rows[table.name]
        for i in range(0, len(rows), self.system.batch_rows):
            yield rows[i:i + self.system.batch_rows]

    def files_root(self, table):
        return self.files.resolve() if table.files_path_column else None


@pytest.fixture
def mixed(tmp_path):
    (tmp_path / "mixed.yaml").write_text(MIXED_YAML, encoding="utf-8")
    files = tmp_path / "files"
    (files / "a").mkdir(parents=True)
    (files / "a" / "x.txt").write_text("x")
    (files / "a" / "y.txt").write_text("y")
    return load_system(tmp_path / "mixed.yaml"), files


def _stage_rows(system, rows, files, out):
    return stage(system, ListSource(system, rows, files), *Y2025, out)


def _parquet_bytes(staged) -> dict[str, bytes]:
    root = Path(staged.directory)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_digests_are_those_of_the_row_by_row_code(mixed, tmp_path):
    system, files = mixed
    staged = _stage_rows(system, {"cases": MIXED_CASES, "notes": MIXED_NOTES}, files, tmp_path / "out")
    assert {k: p.digest for k, p in staged.partitions.items()} == MIXED_DIGESTS
    assert staged.tables == {"cases": 7, "notes": 5}
    assert {k: p.rows for k, p in staged.partitions.items()} == {
        "ett": {"cases": 3, "notes": 3}, "hemliga": {"cases": 1, "notes": 1}, "ovriga": {"cases": 3, "notes": 0}}
    notes = pq.read_table(staged.partitions["ett"].files["notes"]).to_pylist()
    store = files.resolve() / "a"
    assert [n["source_path"] for n in notes] == [str(store / "x.txt"), str(store.parent / "b" / "outside.txt"),
                                                 str(store / "missing.txt")]


def test_typed_and_text_values_stage_the_same_bytes_whatever_the_batch_size(mixed, tmp_path):
    system, files = mixed
    typed = _stage_rows(system, {"cases": MIXED_CASES, "notes": MIXED_NOTES}, files, tmp_path / "typed")
    text = _stage_rows(system, {"cases": [_as_text(r) for r in MIXED_CASES], "notes": MIXED_NOTES}, files,
                       tmp_path / "text")
    assert _parquet_bytes(typed) == _parquet_bytes(text)
    assert {k: p.digest for k, p in text.partitions.items()} == MIXED_DIGESTS
    one_batch = _stage_rows(replace(system, batch_rows=1000), {"cases": MIXED_CASES, "notes": MIXED_NOTES}, files,
                            tmp_path / "one")
    assert {k: p.digest for k, p in one_batch.partitions.items()} == MIXED_DIGESTS
    cases = pq.read_table(typed.table_files()["cases"]).to_pylist()
    assert {c["id"]: c["amount"] for c in cases}[1] == Decimal("12.5")
    assert {c["id"]: c["changed"] for c in cases}[2] == _T(2025, 6, 1, 0, 0, 0, 1)


def test_a_bad_value_is_named_by_its_row_and_column_in_reading_order(mixed, tmp_path):
    system, files = mixed
    cases = [dict(r) for r in MIXED_CASES[:3]]
    cases[2]["opened"] = "not a date"  # an earlier column, a later row
    cases[1]["secret"] = "kanske"  # a later column, an earlier row: the one a reader meets first
    with pytest.raises(ContentError, match=r"^mixed\.cases: row 2: column secret does not hold a bool \(ValueError\)$"):
        _stage_rows(system, {"cases": cases, "notes": []}, files, tmp_path / "out")
    cases[1][WHERE] = "cases.csv: line 3"
    with pytest.raises(ContentError, match=r"^cases\.csv: line 3: column secret does not hold a bool"):
        _stage_rows(system, {"cases": cases, "notes": []}, files, tmp_path / "out")
    assert not any((tmp_path / "out" / "mixed").iterdir())


def test_lossy_values_are_converted_not_passed_through(mixed, tmp_path):
    """Arrow would truncate 1.9 into an int64 column; the converter decides, as it always did."""
    system, files = mixed
    cases = [dict(MIXED_CASES[0], id=True), dict(MIXED_CASES[2], id=3.0)]
    staged = _stage_rows(system, {"cases": cases, "notes": []}, files, tmp_path / "out")
    assert sorted(r["id"] for r in pq.read_table(staged.table_files()["cases"]).to_pylist()) == [1, 3]


@given(st.lists(st.fixed_dictionaries({
    "i": st.none() | st.integers(-2**63, 2**63 - 1),
    "s": st.none() | st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
    "f": st.none() | st.floats(allow_nan=True, allow_infinity=True),
    "b": st.none() | st.booleans(),
    "d": st.none() | st.dates(),
    "t": st.none() | st.datetimes(),
    "m": st.none() | st.decimals(allow_nan=False, allow_infinity=False, places=10,
                                 min_value=Decimal("-1e27"), max_value=Decimal("1e27")),
}), max_size=40))
@settings(max_examples=150, deadline=None)
def test_column_wise_digest_equals_the_canonical_lines(rows):
    schema = pa.schema([("i", pa.int64()), ("s", pa.string()), ("f", pa.float64()), ("b", pa.bool_()),
                        ("d", pa.date32()), ("t", pa.timestamp("us")), ("m", pa.decimal128(38, 10)),
                        ("source_path", pa.string()), ("record_class", pa.string())])
    cols = {n: [r[n] for r in rows] for n in "isfbdtm"}
    batch = pa.RecordBatch.from_pydict({**cols, "source_path": ["/x"] * len(rows),
                                        "record_class": ["rc"] * len(rows)}, schema=schema)
    expected = hashlib.sha256()
    for row in rows:  # the canonical line, written out here once more
        line = {n: row[n] for n in "isfbdtm"} | {"record_class": "rc"}
        expected.update(b"t\t" + json.dumps(line, default=str, ensure_ascii=False, separators=(",", ":")).encode()
                        + b"\n")
    for part in (batch, batch.slice(len(rows) // 2)):
        reference, column_wise = hashlib.sha256(), hashlib.sha256()
        _digest_rows(reference, "t", part)
        _digest_batch(column_wise, "t", part)
        assert column_wise.hexdigest() == reference.hexdigest()
    column_wise = hashlib.sha256()
    _digest_batch(column_wise, "t", batch)
    assert column_wise.hexdigest() == expected.hexdigest()


def test_digest_of_a_batch_too_large_for_one_array_is_taken_in_slices(monkeypatch):
    batch = pa.RecordBatch.from_pydict({"s": ["a\"b", None, "ö" * 50, "\n"] * 25, "record_class": ["rc"] * 100})
    whole = hashlib.sha256()
    _digest_batch(whole, "t", batch)
    monkeypatch.setattr("transforms.staging.batch._DIGEST_SLICE_BYTES", 64)
    sliced = hashlib.sha256()
    _digest_batch(sliced, "t", batch)
    reference = hashlib.sha256()
    _digest_rows(reference, "t", batch)
    assert sliced.hexdigest() == whole.hexdigest() == reference.hexdigest()


def test_a_listed_folder_still_refuses_links_that_leave_the_store(tmp_path):
    root = (tmp_path / "store").resolve()
    (root / "many").mkdir(parents=True)
    for i in range(10):
        (root / "many" / f"{i}.txt").write_text("x")
    (tmp_path / "secret.txt").write_text("outside")
    (root / "many" / "link.txt").symlink_to(tmp_path / "secret.txt")
    (root / "many" / "inner.txt").symlink_to(root / "many" / "0.txt")
    store = _DocumentStore(root)
    for _ in range(3):  # the first lookups lstat each file, the later ones use the folder's listing
        assert [store.resolve(f"many/{i}.txt") for i in range(10)] == [str(root / "many" / f"{i}.txt")
                                                                        for i in range(10)]
        assert store.resolve("many/link.txt") == ""
        assert store.resolve("many/inner.txt") == str(root / "many" / "0.txt")
        assert store.resolve("many/absent.txt") == str(root / "many" / "absent.txt")  # the quality gate checks it
    assert store.folders[str(root / "many")].links == frozenset({"link.txt", "inner.txt"})


def test_a_listed_folder_still_follows_folder_links(tmp_path):
    root = (tmp_path / "store").resolve()
    for i in range(8):
        (root / f"d{i}").mkdir(parents=True)
        (root / f"d{i}" / "f.txt").write_text("x")
    (tmp_path / "secret.txt").write_text("outside")
    (root / "escape").symlink_to(tmp_path)  # a folder link out of the store
    (root / "alias").symlink_to(root / "d0")  # a folder link that stays inside
    store = _DocumentStore(root)
    assert [store.resolve(f"d{i}/f.txt") for i in range(8)] == [str(root / f"d{i}" / "f.txt") for i in range(8)]
    assert isinstance(store.folders[str(root)].links, frozenset)  # the store's folder is listed by now
    assert store.resolve("escape/secret.txt") == ""
    assert store.resolve("escape/../store/d1/f.txt") == ""  # ".." after a link: resolved as the system does
    assert store.resolve("alias/f.txt") == str(root / "d0" / "f.txt")
    assert store.resolve("d1/../d2/f.txt") == str(root / "d2" / "f.txt")


def test_record_classes_are_decided_per_row_as_the_rules_say(mixed):
    system, _ = mixed
    classify = _RootClassifier(system, system.tables["cases"])
    classify.MAX_CACHED = 2  # the cache is emptied as it fills: still the same answers
    rows = MIXED_CASES * 3
    cols = {n: [r[n] for r in rows] for n in rows[0]}
    assert classify(cols, len(rows)) == [system.record_class_of(r) for r in rows]


def test_postgresql_stages_what_sqlite_stages(lex_source, pg_url, tmp_path):
    from demo import lex

    lex.generate(pg_url, tmp_path / "pg-files", cases=40, seed=2, year=2025)  # as the lex_source fixture
    lite = _extract(lex_source, tmp_path / "sqlite")
    pg = extract_database(LEX, pg_url, *Y2025, tmp_path / "pg", env={"ARKIV_LEX_FILES": str(tmp_path / "pg-files")})
    assert pg.tables == lite.tables
    assert {k: p.digest for k, p in pg.partitions.items()} == {k: p.digest for k, p in lite.partitions.items()}
    for k, part in lite.partitions.items():
        for table, files in part.files.items():
            a = pq.read_table(files).drop(["source_path"] if table == "documents" else [])
            b = pq.read_table(pg.partitions[k].files[table]).drop(["source_path"] if table == "documents" else [])
            assert a.equals(b)


def test_document_paths_resolve_as_realpath_would(tmp_path):
    """Thousands of hostile paths through the per-folder cache, against plain ``os.path.realpath``."""
    import random

    root = (tmp_path / "store").resolve()
    for i in range(4):
        (root / f"d{i}" / "s").mkdir(parents=True)
        for j in range(6):
            (root / f"d{i}" / "s" / f"f{j}").write_text("x")
    (tmp_path / "secret").write_text("x")
    (root / "escape").symlink_to(tmp_path)
    (root / "alias").symlink_to(root / "d0")
    (root / "d1" / "s" / "out").symlink_to(tmp_path / "secret")
    (root / "d1" / "s" / "in").symlink_to(root / "d2" / "s" / "f1")
    (root / "d3" / "loop").symlink_to(root / "d3" / "loop")

    def reference(rel: str) -> str:
        folder, _, name = os.path.join(str(root), rel).rpartition(os.sep)
        if not rel or rel.startswith("/") or name in ("", ".", ".."):
            return ""
        candidate = os.path.join(os.path.realpath(folder), name)
        candidate = os.path.realpath(candidate) if os.path.islink(candidate) else candidate
        return candidate if candidate == str(root) or candidate.startswith(str(root) + os.sep) else ""

    parts = ["d0", "d1", "d2", "s", "f1", "out", "in", "escape", "alias", "..", ".", "", "secret", "store", "loop"]
    rng = random.Random(7)
    store = _DocumentStore(root)
    for _ in range(3000):
        rel = "/".join(rng.choice(parts) for _ in range(rng.randint(1, 5)))
        assert store.resolve(rel) == reference(rel), rel
    assert any(isinstance(f.links, frozenset) for f in store.folders.values())


# --- PostgreSQL: COPY parsed by Arrow gives what the cursor gives --------------------------------

PG_TRICKY = ["tab\there", "rad\nny\r", "back\\slash \\N \\t \\\\", "\x01\x08\x0c\x1f\x7f", "\\N", "", None,
             "citat \"så\" 😀 \u2028"]


def _pg_system(tmp_path: Path, *, numeric: bool):
    """The mixed system reading PostgreSQL tables; ``numeric`` adds numeric/float columns (no COPY for those)."""
    import yaml

    doc = yaml.safe_load(MIXED_YAML)
    cases = doc["extract"]["tables"]["cases"]
    if not numeric:
        del cases["columns"]["amount"], cases["columns"]["score"]
    cases["query"] = f"SELECT {', '.join(cases['columns'])} FROM cases ORDER BY id"
    notes = doc["extract"]["tables"]["notes"]
    notes["query"] = ("SELECT n.note_id, n.case_id, n.text, n.path FROM notes n JOIN cases c ON c.id = n.case_id "
                      "WHERE c.opened >= :start OR c.opened IS NULL OR c.opened < :end ORDER BY n.note_id")
    path = tmp_path / f"pg-{numeric}" / "mixed.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return load_system(path)


@pytest.fixture
def mixed_pg(pg_url, tmp_path):
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE cases (id bigint, code text, opened date, changed timestamp, "
                          "amount numeric, score float8, secret boolean, note text)")
        c.exec_driver_sql("CREATE TABLE notes (note_id integer, case_id bigint, text varchar(200), path text)")
        rows = []
        for i, r in enumerate(MIXED_CASES):
            rows.append({**r, "note": PG_TRICKY[i % len(PG_TRICKY)]})
        rows.append({"id": 100, "code": "1.5", "opened": None, "changed": None, "amount": None, "score": None,
                     "secret": True, "note": PG_TRICKY[7]})
        c.execute(sa.text("INSERT INTO cases VALUES (:id, :code, :opened, :changed, :amount, :score, :secret, :note)"),
                  rows)
        # values psycopg2 turns into date.max / datetime.max, which Arrow's casts refuse
        c.exec_driver_sql("UPDATE cases SET opened = 'infinity', changed = 'infinity' WHERE id = 100")
        notes = [dict(n, text=PG_TRICKY[i % len(PG_TRICKY)]) for i, n in enumerate(MIXED_NOTES)]
        notes += [{"note_id": 20 + i, "case_id": 100, "text": t, "path": f"a/{i}.txt"} for i, t in enumerate(PG_TRICKY)]
        c.execute(sa.text("INSERT INTO notes VALUES (:note_id, :case_id, :text, :path)"), notes)
    engine.dispose()
    files = tmp_path / "files"
    (files / "a").mkdir(parents=True)
    (files / "a" / "x.txt").write_text("x")
    return pg_url, files


@pytest.mark.parametrize("numeric", [False, True], ids=["copy", "cursor-for-numeric"])
def test_postgresql_copy_stages_what_the_cursor_stages(mixed_pg, tmp_path, monkeypatch, numeric):
    from transforms.intake import database as extract

    url, files = mixed_pg
    system = _pg_system(tmp_path, numeric=numeric)
    used: list[str] = []
    plan = extract._PostgresCopy.plan

    def spy(source, table):
        copy = plan(source, table)
        used.append(f"{table.name}:{'copy' if copy else 'cursor'}")
        return copy

    monkeypatch.setattr(extract._PostgresCopy, "plan", staticmethod(spy))
    copied = extract_database(system, url, *Y2025, tmp_path / "copy", env={"MIXED_FILES": str(files)})
    assert used == ["cases:cursor" if numeric else "cases:copy", "notes:copy"]
    monkeypatch.setattr(extract._PostgresCopy, "plan", staticmethod(lambda source, table: None))
    cursor = extract_database(system, url, *Y2025, tmp_path / "cursor", env={"MIXED_FILES": str(files)})
    assert copied.tables == cursor.tables == {"cases": 8, "notes": 12}  # the join leaves the orphan out
    assert {k: p.digest for k, p in copied.partitions.items()} == {k: p.digest for k, p in cursor.partitions.items()}
    assert _parquet_bytes(copied) == _parquet_bytes(cursor)
    texts = {r["note_id"]: r["text"] for r in pq.read_table(copied.table_files()["notes"]).to_pylist()}
    assert [texts[20 + i] for i in range(len(PG_TRICKY))] == PG_TRICKY
    infinite = [r for r in pq.read_table(copied.table_files()["cases"]).to_pylist() if r["id"] == 100]
    assert infinite[0]["opened"] == dt.date.max and infinite[0]["changed"] == dt.datetime.max


def test_an_unfinished_copy_ends_with_the_source(pg_url):
    """A table abandoned half-way (an error in staging) must not leave the COPY thread hanging."""
    import threading

    from transforms.config.systems import Column, Table
    from transforms.intake.database import DatabaseSource

    table = Table(name="t", key="i", columns=(Column("i", "int64", ""), Column("s", "string", "")),
                  query="SELECT i, repeat('x', 300) AS s FROM generate_series(1, 300000) AS i ORDER BY i")
    source = DatabaseSource(replace(LEX, batch_rows=1000), pg_url, *Y2025, env={})
    chunks = source.column_chunks(table)
    first = next(chunks)
    assert first.length == 1000 and isinstance(first.columns["i"], pa.Array)  # read through COPY
    closing = threading.Thread(target=source.close)
    closing.start()
    closing.join(60)
    assert not closing.is_alive()
    chunks.close()


def test_an_empty_postgresql_result_stages_empty_tables(mixed_pg, tmp_path):
    url, files = mixed_pg
    system = _pg_system(tmp_path, numeric=False)
    nothing = {"cases": "SELECT id, code, opened, changed, secret, note FROM cases WHERE false",
               "notes": "SELECT note_id, case_id, text, path FROM notes WHERE false"}
    empty = replace(system, tables={n: replace(t, query=nothing[n]) for n, t in system.tables.items()})
    staged = extract_database(empty, url, *Y2025, tmp_path / "out", env={"MIXED_FILES": str(files)})
    assert staged.is_empty and set(staged.table_files()) == {"cases", "notes"}
