"""Child rows of a package's cases read from the staged Parquet parts: the same rows the dataset scan gave."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from transforms.packaging.sip import _by_case, _pieces_by_case, _read_children, _rows_by_case


def _dataset_rows(files, column, keys) -> pa.Table:
    return ds.dataset([str(f) for f in files], format="parquet").to_table(filter=ds.field(column).isin(keys))


@pytest.fixture
def parts(tmp_path):
    a = pa.table({"document_id": [1, 2, 3, 4], "case_id": [10, 11, 10, 12], "title": ["a", "b", None, "d"]})
    b = pa.table({"document_id": [5, 6, 7], "case_id": [12, 13, 10], "title": ["e", "f", "g"]})
    files = [tmp_path / "part-00000.parquet", tmp_path / "part-00001.parquet"]
    pq.write_table(a, files[0], row_group_size=2)
    pq.write_table(b, files[1])
    return files


def test_children_are_the_rows_the_dataset_filter_selects(parts):
    keys = pa.chunked_array([[10, 12], [99]])
    got = _read_children([str(p) for p in parts], "case_id", keys)
    assert got.equals(_dataset_rows(parts, "case_id", keys))
    assert got["document_id"].to_pylist() == [1, 3, 4, 5, 7]
    assert _read_children([str(p) for p in parts], "case_id", pa.array([42])).num_rows == 0


def test_parts_with_different_schemas_are_unified_as_before(tmp_path, parts):
    # A part whose title column is all null has type null: the dataset scan casts it.
    odd = tmp_path / "part-00002.parquet"
    pq.write_table(pa.table({"document_id": [8], "case_id": [10], "title": pa.nulls(1)}), odd)
    files = [str(p) for p in [*parts, odd]]
    got = _read_children(files, "case_id", pa.array([10]))
    assert got.equals(_dataset_rows(files, "case_id", pa.array([10])))
    assert got["document_id"].to_pylist() == [1, 3, 7, 8]


def test_rows_per_case_are_the_grouped_rows_in_key_order(parts):
    t = _read_children([str(p) for p in parts], "case_id", pa.array([10, 11, 12, 13])).sort_by("document_id")
    grouped: dict[object, list[dict]] = {}
    for row in t.to_pylist():
        grouped.setdefault(row["case_id"], []).append(row)
    by_case, where = _by_case(t, "case_id", "document_id")

    def rows_of(cases):
        [(piece, at)] = _pieces_by_case(by_case, where, [cases])
        return _rows_by_case(piece, at)

    for case in (10, 11, 12, 13, 99):
        assert rows_of([case]).get(case, []) == grouped.get(case, [])
    assert [r["document_id"] for r in rows_of([10])[10]] == [1, 3, 7]
    # a batch of cases, in any order and with unknown ones, gives each case exactly its rows
    batch = rows_of([12, 99, 10, 13, 11])
    assert batch == {case: rows for case, rows in grouped.items()}
    assert rows_of([99]) == {}
    # several batches at once: each piece holds its own cases' rows, and only those
    pieces = _pieces_by_case(by_case, where, [[10, 11], [12], [13, 99]])
    assert [_rows_by_case(piece, at) for piece, at in pieces] == [
        {10: grouped[10], 11: grouped[11]}, {12: grouped[12]}, {13: grouped[13]}]
    assert [piece.num_rows for piece, _ in pieces] == [4, 2, 1]
