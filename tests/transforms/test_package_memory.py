"""What keeps a package build's memory flat: file entries wait in the work directory, not in
memory (the spool), and Arrow gives the memory of freed tables back."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from transforms.packaging import premis
from transforms.packaging.mets import FileRef
from transforms.packaging.sip import _ENTRY_CODEC, _Spool


def _entry(i: int) -> tuple[FileRef, premis.FileObject]:
    created = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    ref = FileRef(f"file-{i}", f"data/ärende-{i}/brev {i}.pdf", "application/pdf", i, f"{i:064x}", created)
    return ref, premis.FileObject(f"representations/rep1/{ref.href}", ref.sha256, i, "application/pdf", f"brev {i}.pdf")


def test_items_come_back_in_order_every_time_they_are_read(tmp_path):
    spool = _Spool(tmp_path / "spool.pickle", *_ENTRY_CODEC)  # as plain tuples, made again on reading
    assert len(spool) == 0 and list(spool) == [] and not spool
    n = 3 * _Spool.BATCH + 17  # whole batches and a part batch still in memory
    for i in range(n):
        spool.append(_entry(i))
    assert len(spool) == n
    assert list(spool) == [_entry(i) for i in range(n)]
    spool.append(_entry(n))  # appending after a read goes on where it stopped
    assert list(spool) == [_entry(i) for i in range(n + 1)]
    assert list(spool.map(lambda e: e[1].identifier))[-1] == f"representations/rep1/data/ärende-{n}/brev {n}.pdf"
    assert len(spool.map(len)) == n + 1
    spool.close()


def test_the_entries_do_not_stay_in_memory(tmp_path):
    spool = _Spool(tmp_path / "spool.pickle", *_ENTRY_CODEC)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):
            spool.append(_entry(i))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1_000_000  # at most one batch (in a list, these 20,000 entries take 16 MB)
    assert sum(1 for _ in spool) == 20_000
    derived = premis.FileObject("representations/rep1/data/a.pdf", "0" * 64, 1, "application/pdf", None,
                                "fmt/477", "2b", "identified by fido", ("LibreOffice", "7.4"),
                                "representations/rep1-original/a.docx")
    spool.append((_entry(1)[0], derived))  # every field, optional ones included, comes back
    assert list(spool)[-1] == (_entry(1)[0], derived)
    spool.close()


@pytest.mark.parametrize(("setting", "expected"), [(None, "system"), ("mimalloc", "mimalloc")])
def test_arrow_uses_the_c_library_allocator_unless_told_otherwise(setting, expected):
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if setting:
        env["ARROW_DEFAULT_MEMORY_POOL"] = setting
    out = subprocess.run([sys.executable, "-c", "import transforms.packaging.sip, pyarrow as pa; "
                          "print(pa.default_memory_pool().backend_name)"],
                         env=env, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_a_format_row_reads_as_the_dict_the_catalogue_takes():
    from transforms.formats.identification import Decision, Identification
    from transforms.packaging.sip import _format_row

    _, obj = _entry(7)
    ident = Identification("fmt/276", "Acrobat PDF 1.7 - Portable Document Format", "1.7", "application/pdf",
                           "signature", "fido 1.6.1 (PRONOM v120)")
    decision = Decision("convert", "PDF is not PDF/A", target="pdfa-2b")
    row = _format_row(obj, "rep1-original", ident, decision, "converted", target="pdfa-2b", seconds=1.5)
    expected = {"path": obj.identifier, "representation": "rep1-original", "puid": None,
                "format_name": ident.name, "format_version": "1.7", "mime": "application/pdf", "method": "signature",
                "tool": ident.tool, "outcome": "converted", "policy": "convert", "warn": False,
                "reason": "PDF is not PDF/A", "sha256": obj.sha256, "size": 7, "target": "pdfa-2b", "seconds": 1.5}
    assert dict(row) == expected and list(row) == list(expected)  # same keys, same order
    assert row == expected and expected == row
    assert row["seconds"] == 1.5 and row.get("quarantine_copy") is None and "target" in row and len(row) == 16
    with pytest.raises(KeyError):
        row["nothing"]
    plain = _format_row(obj, "rep1", ident, decision, "accepted")
    assert len(plain) == 14 and "target" not in plain
    assert json.loads(json.dumps(dict(plain)))["outcome"] == "accepted"
    assert not hasattr(plain, "__dict__")  # slots: the point of the class


def test_the_rows_read_a_batch_of_cases_at_a_time_give_the_same_package(staged, tmp_path, monkeypatch):
    """Documents and parties are cut into one table per batch of cases (freed once written); with
    batches of 3 cases the packages are byte for byte those built with the whole package in one batch."""
    from transforms.config.systems import load_system
    from transforms.packaging import sip as package

    lex = load_system(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")
    policy = lex.formats.without_conversion()
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    built = {}
    for batch in (1000, 3):
        monkeypatch.setattr(package, "CASE_BATCH", batch)
        built[batch] = [p for rc in sorted(staged.partitions)
                        for p in package.build_packages(lex, staged, rc, tmp_path / str(batch), policy=policy, now=now)]
    assert [p.sha256 for p in built[3]] == [p.sha256 for p in built[1000]]
    assert sum(p.record_count for p in built[3]) > 3 * 3  # many batches, not one
    # and every staged case and document is in them, once
    assert sum(p.record_count for p in built[3]) == sum(part.rows["cases"] for part in staged.partitions.values())
    assert sum(p.document_count for p in built[3]) == sum(part.rows["documents"] for part in staged.partitions.values())
