import datetime as dt
import os
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from transforms.errors import ContentError
from transforms.extract import StagedBatch, _resolve_file, extract_database, period_label
from transforms.systems import load_system

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
