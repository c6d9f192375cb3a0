"""The benchmark corpus, generated deterministically from a seed.

A Lex registry from :mod:`demo.lex` (many small PDF/DOCX/JPEG/TXT documents, 1–4 per case)
plus a few large documents (seeded incompressible bytes standing in for scanned drawings),
registered as extra documents of cases closed in 2025. It is staged once with the real
extractor (``transforms.intake.database.extract_database`` from SQLite); document files that the
extraction does not take (cases of other years) are removed, so the document folder holds
exactly the files the packages carry and every baseline copies the same bytes.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import pyarrow.parquet as pq

from bench.common import PROJECT
from demo import lex as lexsim
from transforms.config.systems import RecordClass, System, load_system
from transforms.intake.database import extract_database
from transforms.staging.batch import StagedBatch

LEX = load_system(PROJECT / "dags" / "systems" / "lex.yaml")
START, END = dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1)
FILES_ENV = "ARKIV_LEX_FILES"


@dataclass
class Corpus:
    root: Path
    db: Path
    files: Path
    staged: StagedBatch
    documents: list[str]  # absolute paths of every document file the packages carry
    doc_bytes: int

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"


def write_random_file(path: Path, size: int, seed: int) -> None:
    """A PDF of ``size`` bytes whose one stream is seeded pseudo-random (incompressible) bytes, as a
    scanned drawing would be: format identification sees a PDF (header, objects, trailer), so the
    document is packaged like any other rather than held back as unidentified."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    def head_for(n: int) -> bytes:
        return (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
                b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n3 0 obj\n<< /Length "
                + str(n).encode() + b" >>\nstream\n")

    tail = b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    body = max(0, size - len(head_for(size)) - len(tail))
    head = head_for(body)
    left = body
    with open(path, "wb") as f:
        f.write(head)
        while left:
            n = min(left, 1 << 22)
            f.write(rng.randbytes(n))
            left -= n
        f.write(tail)


def add_large_documents(db: Path, files: Path, sizes: list[int], seed: int) -> None:
    """Register one extra large document on each of the first cases closed in 2025."""
    con = sqlite3.connect(db)
    try:
        cases = [r[0] for r in con.execute(
            "SELECT case_id FROM cases WHERE closed_date >= '2025-01-01' AND closed_date < '2026-01-01' "
            "ORDER BY case_id LIMIT ?", (len(sizes),))]
        next_id = con.execute("SELECT COALESCE(MAX(document_id), 0) + 1 FROM documents").fetchone()[0]
        for i, (case_id, size) in enumerate(zip(cases, sizes, strict=False)):
            number = con.execute("SELECT COALESCE(MAX(document_number), 0) + 1 FROM documents WHERE case_id = ?",
                                 (case_id,)).fetchone()[0]
            closed = con.execute("SELECT closed_date FROM cases WHERE case_id = ?", (case_id,)).fetchone()[0]
            # in the case's own folder, as Lex files every document of a case (a file in another
            # case's folder would be refused: a document belongs to one record)
            first = con.execute("SELECT file_path FROM documents WHERE case_id = ? ORDER BY document_id LIMIT 1",
                                (case_id,)).fetchone()
            folder = str(PurePosixPath(first[0]).parent) if first and "/" in first[0] else f"large/{case_id}"
            rel = f"{folder}/ritning-{i + 1:02d}-stor.pdf"
            write_random_file(files / rel, size, seed * 1000 + i)
            con.execute(
                "INSERT INTO documents (document_id, case_id, document_number, title, direction, document_date, "
                "registered_date, file_name, file_path, mime_type, secrecy, secrecy_reference) "
                "VALUES (?, ?, ?, ?, 'incoming', ?, ?, ?, ?, 'application/pdf', 0, NULL)",
                (next_id + i, case_id, number, f"Bygglovsritning {i + 1} (skannad)", closed, closed,
                 f"Ritning {i + 1}.pdf", rel))
        con.commit()
    finally:
        con.close()


def replicate(src: Path, dst: Path, factor: int, *, max_case: int | None = None, small_only: bool = False,
              files: Path | None = None) -> None:
    """Copy a Lex SQLite database with every case (and its documents and parties) ``factor`` times.

    The copies get fresh ids. Copy ``k`` > 0 points at ``files/kopia-<k>/…``, hard links to the
    original document files (a document belongs to one record, so two cases may not name the
    same file), so a package of the copy holds ``factor`` times the records, files and bytes
    without writing more bytes. ``max_case`` keeps only the cases up to that id; ``small_only``
    leaves the large documents out. :func:`remove_copies` removes the links again.
    """
    if factor > 1 and files is None:
        raise ValueError("replicate: copies need the document folder (files=) to link their documents in")
    keep_case = f"case_id <= {int(max_case)}" if max_case is not None else "1 = 1"
    keep_doc = "file_path NOT LIKE '%-stor.pdf'" if small_only else "1 = 1"
    dst.unlink(missing_ok=True)
    con = sqlite3.connect(dst)
    try:
        con.execute("ATTACH DATABASE ? AS src", (str(src),))
        for (sql,) in con.execute("SELECT sql FROM src.sqlite_master WHERE type = 'table'").fetchall():
            con.execute(sql)
        con.execute("INSERT INTO classification SELECT * FROM src.classification")
        off_c, off_d, off_p = (con.execute(f"SELECT COALESCE(MAX({k}), 0) FROM src.{t}").fetchone()[0]  # noqa: S608
                               for t, k in (("cases", "case_id"), ("documents", "document_id"),
                                            ("parties", "party_id")))
        for k in range(factor):
            con.execute(
                "INSERT INTO cases SELECT case_id + ?, diarienummer, title, unit, case_officer, classification_code, "
                f"status, registered_date, closed_date, secrecy, secrecy_reference, updated_at FROM src.cases "
                f"WHERE {keep_case}", (k * off_c,))
            prefix = f"kopia-{k}/" if k else ""
            con.execute(
                "INSERT INTO documents SELECT document_id + ?, case_id + ?, document_number, title, direction, "
                "document_date, registered_date, file_name, ? || file_path, mime_type, secrecy, secrecy_reference "
                f"FROM src.documents WHERE {keep_case} AND {keep_doc}", (k * off_d, k * off_c, prefix))
            if prefix:
                for (rel,) in con.execute(f"SELECT file_path FROM src.documents WHERE {keep_case} AND {keep_doc}"):
                    target = files / prefix / rel
                    if not target.exists() and (files / rel).is_file():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.link(files / rel, target)
            con.execute(
                "INSERT INTO parties SELECT party_id + ?, case_id + ?, party_type, name, personnummer, "
                f"organisationsnummer, role FROM src.parties WHERE {keep_case}", (k * off_p, k * off_c))
        con.commit()
    finally:
        con.close()


def remove_copies(files: Path) -> None:
    """Remove the linked documents :func:`replicate` made for its copies."""
    for copy in files.glob("kopia-*"):
        shutil.rmtree(copy, ignore_errors=True)


def single_document(src: Path, dst: Path, files: Path, size: int, seed: int) -> None:
    """A Lex database with one case closed in 2025 and one document: a file of ``size`` bytes."""
    replicate(src, dst, 1)
    con = sqlite3.connect(dst)
    try:
        case_id = con.execute("SELECT case_id FROM cases WHERE closed_date >= '2025-01-01' "
                              "AND closed_date < '2026-01-01' ORDER BY case_id LIMIT 1").fetchone()[0]
        doc_id = con.execute("SELECT MIN(document_id) FROM documents WHERE case_id = ?", (case_id,)).fetchone()[0]
        con.execute("DELETE FROM cases WHERE case_id <> ?", (case_id,))
        con.execute("DELETE FROM parties WHERE case_id <> ?", (case_id,))
        con.execute("DELETE FROM documents WHERE document_id <> ?", (doc_id,))
        rel = "huge/single-document.pdf"
        write_random_file(files / rel, size, seed)
        con.execute("UPDATE documents SET file_path = ?, file_name = 'Ritning, hela planen.pdf', "
                    "mime_type = 'application/pdf'", (rel,))
        con.commit()
    finally:
        con.close()


def stage_sqlite(system: System, db: Path, files: Path, staging: Path) -> StagedBatch:
    return extract_database(system, f"sqlite:///{db}", START, END, staging, env={FILES_ENV: str(files)})


def staged_documents(staged: StagedBatch) -> list[str]:
    paths: list[str] = []
    for part in staged.partitions.values():
        for f in part.files.get("documents", []):
            paths += [p for p in pq.read_table(f, columns=["source_path"]).column(0).to_pylist() if p]
    return paths


def make_corpus(root: Path, *, cases: int, large: list[int], seed: int) -> Corpus:
    """Generate the Lex corpus under ``root`` and stage it (extraction from SQLite, not timed)."""
    root.mkdir(parents=True, exist_ok=True)
    db, files = root / "lex.sqlite", root / "files"
    lexsim.generate(f"sqlite:///{db}", files, cases=cases, seed=seed)
    add_large_documents(db, files, large, seed)
    staged = stage_sqlite(LEX, db, files, root / "staging")
    docs = staged_documents(staged)
    keep = set(docs)
    for p in list(files.rglob("*")):
        if p.is_file() and str(p.resolve()) not in keep:
            p.unlink()
    for d in sorted((p for p in files.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(d.iterdir()):
            d.rmdir()
    size = sum(Path(p).stat().st_size for p in docs)
    return Corpus(root, db, files, staged, docs, size)


def fine_grained(system: System) -> System:
    """Lex with one record class per classification leaf (1.1 … 4.3): many partitions of one batch.

    Used to process one extraction's partitions as parallel mapped tasks; retention rules are
    Lex's own (4.x disposed of after 10 years, the rest kept).
    """
    keep, dispose = system.record_classes[0], system.record_classes[1]
    classes = []
    for code, title in lexsim.CLASSIFICATION:
        if "." not in code:
            continue
        base = dispose if code.startswith("4.") else keep
        classes.append(RecordClass(name=f"arenden-{code.replace('.', '-')}", title=title, column=base.column,
                                   prefixes=(code,), retention=base.retention))
    return replace(system, record_classes=tuple(classes))
