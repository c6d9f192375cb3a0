"""A file belongs to its record: a case's metadata that points at another case's file, at a
metadata file or outside its own documents is refused at intake and can never be built.

Each test plants one such reference in a copy of the generated Lex (a document row added to a
case, the way a careless or hostile export would write it) and runs the real chain.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tarfile
from pathlib import Path, PurePosixPath

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from transforms import pipeline
from transforms.catalogue import Batch
from transforms.common.errors import ContentError
from transforms.config.settings import Settings
from transforms.config.systems import load_system
from transforms.intake.database import extract_database
from transforms.packaging.sip import _case_folder, _unique, build_packages, document_ownership_problems
from transforms.quality import quarantine as review

LEX = load_system(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")
START, END = "2025-01-01", "2026-01-01"


@pytest.fixture
def lex(tmp_path, lex_source, monkeypatch) -> dict:
    """A private copy of the generated Lex (database and document store) to plant faults in."""
    root = tmp_path / "lex"
    root.mkdir()
    db = root / "lex.sqlite"
    shutil.copy(lex_source["url"].removeprefix("sqlite:///"), db)
    shutil.copytree(lex_source["files"], root / "files")
    for k in list(os.environ):
        if k.startswith("ARKIV_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("ARKIV_LEX_FILES", str(root / "files"))
    url = f"sqlite:///{db}"
    monkeypatch.setenv("ARKIV_CONN_LEX_DB", url)
    return {"url": url, "files": root / "files", "engine": sa.create_engine(url)}


def _two_cases(lex: dict, *, same_class: bool = False) -> tuple[dict, dict]:
    """A document of one case closed in 2025 (``a``) and another case of that year (``b``)."""
    with lex["engine"].connect() as c:
        docs = [dict(r._mapping) for r in c.execute(sa.text(
            "SELECT d.*, c.classification_code AS code, c.diarienummer FROM documents d "
            "JOIN cases c ON c.case_id = d.case_id "
            "WHERE c.closed_date >= '2025-01-01' AND c.closed_date < '2026-01-01' ORDER BY d.document_id"))]
    a = docs[0]
    b = next(d for d in docs if d["case_id"] != a["case_id"]
             and (not same_class or d["code"].split(".")[0] == a["code"].split(".")[0]))
    return a, b


def _add_document(lex: dict, case: dict, file_path: str) -> int:
    """A new document row on ``case`` (copied from one of its documents) naming ``file_path``."""
    with lex["engine"].begin() as c:
        new_id = c.execute(sa.text("SELECT max(document_id) + 1 FROM documents")).scalar()
        number = c.execute(sa.text("SELECT max(document_number) + 1 FROM documents WHERE case_id = :c"),
                           {"c": case["case_id"]}).scalar()
        row = {k: v for k, v in case.items() if k not in ("code", "diarienummer")}
        row.update(document_id=new_id, document_number=number, file_path=file_path,
                   file_name=PurePosixPath(file_path.replace("\\", "/")).name or "x.pdf")
        cols = ", ".join(row)
        c.execute(sa.text(f"INSERT INTO documents ({cols}) VALUES ({', '.join(':' + k for k in row)})"), row)
    return new_id


def _folder(doc: dict) -> str:
    return str(PurePosixPath(doc["file_path"]).parent)


def _intake(lex: dict) -> tuple[Settings, ContentError]:
    """Extract and gate the interval; returns the refusal (from staging or from the gate)."""
    settings = Settings.from_env().ensure()
    with pytest.raises(ContentError) as refused:
        batch = pipeline.extract(settings, "lex", START, END, lex["url"])
        pipeline.check_quality(settings, "lex", batch["manifest"])
    return settings, refused.value


PLANTS = {
    # name: (how the new row's file_path is made from case a's document and case b's, the rule expected)
    "another record's file": (lambda a, b, files: a["file_path"], "also the document of another record"),
    "ERMS.xml in its folder": (lambda a, b, files: _copy(files, a, f"{_folder(b)}/ERMS.xml"), "metadata file"),
    "METS.xml": (lambda a, b, files: _copy(files, a, f"{_folder(b)}/METS.xml"), "metadata file"),
    "premis.xml, other case": (lambda a, b, files: _copy(files, a, f"{_folder(b)}/PREMIS.XML"), "metadata file"),
    "under metadata/": (lambda a, b, files: _copy(files, a, f"{_folder(b)}/metadata/descriptive/x.pdf"),
                        "metadata file"),
    "under schemas/": (lambda a, b, files: _copy(files, a, f"schemas/{PurePosixPath(a['file_path']).name}"),
                       "metadata file"),
    "in another case's folder": (lambda a, b, files: _copy(files, a, f"{_folder(a)}/99 Bilaga.pdf"),
                                 "in the folder of another record"),
}


def _copy(files: Path, doc: dict, rel: str) -> str:
    """A real file at ``rel`` in the document store (so only the rule, not a missing file, refuses it)."""
    dest = files / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(files / doc["file_path"], dest)
    return rel


@pytest.mark.parametrize("plant", list(PLANTS))
def test_a_reference_outside_the_records_own_documents_quarantines_the_batch(lex, plant):
    a, b = _two_cases(lex)
    make, rule = PLANTS[plant]
    rel = make(a, b, lex["files"])
    new_id = _add_document(lex, b, rel)
    settings, refused = _intake(lex)

    text = str(refused)
    assert f"documents row document_id={new_id}: " in text and rule in text
    assert "failed its quality gate" in text and "quarantined" in text
    for value in (rel, PurePosixPath(rel).name, a["file_path"]):
        assert value not in text, "the reason names table, row and rule, never the path"
    cat = pipeline.catalogue(settings)
    with cat.session() as s:
        assert s.get(Batch, "lex/2025").status == "quality_failed"
    (case,) = review.cases(cat, "open")
    assert any(f"document_id={new_id}" in r for r in json.loads(case.reasons))
    assert rel not in case.reasons
    assert not list(settings.mellanarkiv.rglob("*")) and cat.packages() == []
    assert not (settings.staging / "lex" / "2025").exists(), "the staged batch went to quarantine"


def test_an_approved_deviation_cannot_let_such_a_batch_be_packaged(lex):
    a, b = _two_cases(lex)
    new_id = _add_document(lex, b, a["file_path"])
    settings, _ = _intake(lex)
    cat = pipeline.catalogue(settings)
    (case,) = review.cases(cat, "open")
    review.decide(cat, case.id, approve=True, by="arkivarie", justification="testing the last line of defence")
    manifest = str(settings.staging / "lex" / "2025" / "manifest.json")
    with pytest.raises(ContentError, match="cannot cover documents that do not belong"):
        pipeline.await_decision(settings, "lex", manifest, "2025")
    with pytest.raises(ContentError, match=f"document_id={new_id}"):
        for rc in pipeline.StagedBatch.load(manifest).partitions:
            pipeline.package(settings, "lex", manifest, rc)
    assert not list(settings.build.rglob("*.tar")) and cat.packages() == []


@pytest.mark.parametrize("rel", ["../outside.pdf", "{a_folder}/../../../../etc/passwd", "/etc/passwd",
                                 "{abs_a}", "C:\\Windows\\win.ini", "{a_folder}/../{b_folder_name}/x.pdf"])
def test_a_path_leaving_the_document_store_is_refused_at_intake(lex, tmp_path, rel):
    a, b = _two_cases(lex)
    (tmp_path / "outside.pdf").write_bytes((lex["files"] / a["file_path"]).read_bytes())
    rel = rel.format(a_folder=_folder(a), abs_a=str(lex["files"] / a["file_path"]),
                     b_folder_name=PurePosixPath(_folder(b)).name)
    new_id = _add_document(lex, b, rel)
    settings, refused = _intake(lex)
    text = str(refused)
    assert rel not in text and "passwd" not in text and "outside.pdf" not in text
    if "failed its quality gate" in text:  # (staging may refuse it first, which is as good)
        assert f"documents row document_id={new_id}: document path" in text
    assert pipeline.catalogue(settings).packages() == [] and not list(settings.mellanarkiv.rglob("*"))


def test_the_builder_refuses_before_writing_even_without_the_gate(lex, tmp_path):
    """The last line of defence: a staged batch that never met the gate still cannot be built."""
    a, b = _two_cases(lex)
    new_id = _add_document(lex, b, a["file_path"])
    staged = extract_database(LEX, lex["url"], dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1), tmp_path / "st",
                              env={"ARKIV_LEX_FILES": str(lex["files"])})
    out = tmp_path / "build"
    for rc in staged.partitions:
        with pytest.raises(ContentError, match=f"documents row document_id={new_id}: document file is also"):
            build_packages(LEX, staged, rc, out)
    assert not [p for p in out.rglob("*") if p.is_file()], "nothing written, not even a temporary file"


def test_a_clean_batch_and_a_flat_store_have_no_problems(lex, tmp_path):
    staged = extract_database(LEX, lex["url"], dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1), tmp_path / "st",
                              env={"ARKIV_LEX_FILES": str(lex["files"])})
    assert document_ownership_problems(LEX, staged.table_files()) == []
    # A flat store (every document in one folder, as Treserva delivers them) has no per-record folders.
    with lex["engine"].begin() as c:
        c.execute(sa.text("UPDATE documents SET file_path = 'flat/' || document_id || '.pdf'"))
    (lex["files"] / "flat").mkdir()
    with lex["engine"].connect() as c:
        for (doc_id,) in c.execute(sa.text("SELECT document_id FROM documents")):
            (lex["files"] / "flat" / f"{doc_id}.pdf").write_bytes(b"%PDF-1.4\n")
    flat = extract_database(LEX, lex["url"], dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1), tmp_path / "flat",
                            env={"ARKIV_LEX_FILES": str(lex["files"])})
    assert document_ownership_problems(LEX, flat.table_files()) == []


def test_two_cases_never_share_a_folder_in_the_package(lex, tmp_path):
    """References that make the same portable folder name ("KS 2025/0142" and "KS 2025-0142") must
    not put one case's documents into the other's folder."""
    a, b = _two_cases(lex, same_class=True)
    with lex["engine"].begin() as c:
        c.execute(sa.text("UPDATE cases SET diarienummer = :d WHERE case_id = :b"),
                  {"d": a["diarienummer"].replace("/", "-"), "b": b["case_id"]})
    staged = extract_database(LEX, lex["url"], dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1), tmp_path / "st",
                              env={"ARKIV_LEX_FILES": str(lex["files"])})
    rc = next(rc for rc, part in staged.partitions.items()
              if a["case_id"] in pq.read_table(part.files["cases"], columns=["case_id"])["case_id"].to_pylist())
    (pkg,) = build_packages(LEX, staged, rc, tmp_path / "build")
    with tarfile.open(pkg.path) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile() and "/data/" in m.name and "/tables/" not in m.name]
    folders = {PurePosixPath(n.split("/data/", 1)[1]).parts[0] for n in names}
    base = _case_folder({}, a["diarienummer"], a["case_id"])
    assert base in folders and f"{base}-{b['case_id']}" in folders
    assert len(names) == len(set(names)), "no two documents at one path"


def test_unique_paths_and_case_folders():
    used: set[str] = set()
    got = [_unique(used, "f", "a.pdf", 7) for _ in range(4)]
    assert got == ["f/a.pdf", "f/7-a.pdf", "f/7-2-a.pdf", "f/7-3-a.pdf"]
    folders: dict = {}
    assert _case_folder(folders, "KS 2025/1", 1) == "KS_2025-1"
    assert _case_folder(folders, "KS 2025-1", 2) == "KS_2025-1-2"
    assert _case_folder(folders, "KS 2025/1", 1) == "KS_2025-1", "the same case keeps its folder"
    assert _case_folder(folders, "KS_2025-1-2", 3) == "KS_2025-1-2-3"


def _staged_documents(tmp_path: Path, rows: list[tuple]) -> dict[str, list[Path]]:
    """A documents table as staging writes it (the row's path as delivered, and where it resolved to)."""
    import pyarrow as pa

    path = tmp_path / "documents.parquet"
    cols = ("document_id", "case_id", "file_path", "source_path")
    pq.write_table(pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)}), path)
    return {"documents": [path]}


def test_one_document_id_filed_under_two_cases_is_refused(tmp_path):
    files = _staged_documents(tmp_path, [(1, 10, "a/1.pdf", "/s/a/1.pdf"), (1, 11, "b/1.pdf", "/s/b/1.pdf"),
                                         (2, 11, "b/2.pdf", "/s/b/2.pdf")])
    problems = document_ownership_problems(LEX, files)
    assert problems == ["documents row document_id=1: the same document id is filed under two records (case_id=10 "
                        "and another); a document belongs to exactly one record"]


@pytest.mark.parametrize(("rel", "rule"), [
    ("a/../b/1.pdf", "contains '..'"), ("..\\b\\1.pdf", "contains '..'"), ("/srv/x.pdf", "absolute"),
    ("\\\\server\\share\\x.pdf", "absolute"), ("c:/x.pdf", "absolute"), ("a/Erms.XML", "metadata file"),
    ("a/mets.xml", "metadata file"), ("Metadata/x.pdf", "metadata file"), ("a/schemas/x.xsd", "metadata file"),
    ("manifest.json", "delivery's own files"), ("./", "names no file"),
])
def test_path_rules_name_the_rule_never_the_path(tmp_path, rel, rule):
    files = _staged_documents(tmp_path, [(1, 10, rel, "/s/a/1.pdf"), (2, 11, "b/2.pdf", "/s/b/2.pdf")])
    (problem,) = document_ownership_problems(LEX, files)
    assert problem.startswith("documents row document_id=1: document path") and rule in problem
    assert rel not in problem


def test_a_delivered_erms_naming_another_cases_file_or_a_metadata_file_is_found(lex, tmp_path):
    """What a prepared delivery's intake can ask of its ERMS (transforms.packaging.erms.appendix_problems):
    our own packages have no such appendix; a case pointing at another case's file, at the METS
    or PREMIS, or out of the package, is named by line and case, never by path."""
    from transforms.packaging.erms import appendix_problems

    staged = extract_database(LEX, lex["url"], dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1), tmp_path / "st",
                              env={"ARKIV_LEX_FILES": str(lex["files"])})
    rc = max(staged.partitions, key=lambda r: staged.partitions[r].rows.get("cases", 0))
    (pkg,) = build_packages(LEX, staged, rc, tmp_path / "build")
    with tarfile.open(pkg.path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("metadata/descriptive/ERMS.xml"))
        data = tar.extractfile(member).read()
    assert appendix_problems(data) == []

    paths = re.findall(rb'path="([^"]+)"', data)
    assert len(paths) >= 3
    first, second = paths[0], next(p for p in paths if p.rsplit(b"/", 2)[-2] != paths[0].rsplit(b"/", 2)[-2])
    third = next(p for p in paths[1:-1] if p != second)
    cases = {
        second: (first, "names the document of another case"),
        third: (b"../../METS.xml", "points at a metadata file"),
        paths[-1]: (b"../../../../../etc/passwd", "leads out of the package"),
    }
    planted = data
    for old, (new, _) in cases.items():
        planted = planted.replace(b'path="' + old + b'"', b'path="' + new + b'"', 1)
    problems = appendix_problems(planted)
    for _, rule in cases.values():
        assert any(rule in p for p in problems), (rule, problems)
    assert all(p.startswith("metadata/descriptive/ERMS.xml line ") for p in problems)
    assert not any(b"passwd".decode() in p or first.decode() in p for p in problems)
    for href, rule in [("/etc/passwd", "absolute or a URL"), ("https://example.org/x.pdf", "absolute or a URL"),
                       ("../preservation/premis.xml", "metadata file"), ("../../schemas/x.pdf", "metadata file"),
                       ("../../representations/rep1/METS.xml", "metadata file"),
                       ("../../representations/rep1/x.pdf", "not a document of the package")]:
        (problem,) = appendix_problems(data.replace(b'path="' + paths[0] + b'"', f'path="{href}"'.encode(), 1))
        assert rule in problem and href not in problem


def test_a_link_swapped_in_after_staging_is_never_copied_into_a_package(tmp_path):
    """Staging checked the document store; a document replaced by a link to a file outside it
    afterwards (someone with write access to the store) stops the build, and nothing behind the
    link reaches a package."""
    import datetime as dt

    import pyarrow.parquet as pq

    from demo import lex
    from transforms.common.errors import ArkivError
    from transforms.config.systems import load_system
    from transforms.formats.identification import default_policy
    from transforms.intake.database import extract_database
    from transforms.packaging.sip import build_packages

    system = load_system(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")
    url = f"sqlite:///{tmp_path / 'lex.sqlite'}"
    lex.generate(url, tmp_path / "files", cases=8, seed=5, year=2025)
    staged = extract_database(system, url, dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1), tmp_path / "staging",
                              env={"ARKIV_LEX_FILES": str(tmp_path / "files")})
    rc = next(name for name, part in staged.partitions.items() if part.files.get("documents"))
    paths = [p for f in staged.table_files()["documents"] for p in pq.read_table(f, columns=["source_path"])
             .column("source_path").to_pylist() if p]
    victim = Path(sorted(paths)[0])
    secret = tmp_path / "elsewhere.txt"
    secret.write_bytes(b"HEMLIGT UTANFOR DOKUMENTARKIVET")
    victim.unlink()
    victim.symlink_to(secret)
    with pytest.raises(ArkivError):
        build_packages(system, staged, rc, tmp_path / "build", policy=default_policy().without_conversion())
    for built in (tmp_path / "build").rglob("*"):
        assert not built.is_file() or b"HEMLIGT UTANFOR" not in built.read_bytes(), built
