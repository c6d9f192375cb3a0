"""``arkiv summary`` tells each batch's real history: a failed gate approved with a deviation is not
"passed", and a document held back in quarantine explains why fewer documents were archived."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from transforms import cli
from transforms.config.settings import Settings
from transforms.quality import quarantine as review


@pytest.fixture
def damaged_bad_lex(tmp_path) -> dict:
    """A Lex with one bad row of every kind and one Word file no office suite can open."""
    import demo
    from demo import lex

    root = tmp_path / "source"
    places = {"db": root / "lex.sqlite", "files": root / "files"}
    root.mkdir()
    lex.generate(f"sqlite:///{places['db']}", places["files"], cases=40, seed=2, year=2025, bad=1)
    damaged = demo.damage_one_document(places)
    assert damaged.endswith(".docx")
    return {"url": f"sqlite:///{places['db']}", "files": places["files"]}


def test_a_failed_gate_approved_with_deviation_and_a_held_document_are_told_as_they_happened(
        monkeypatch, tmp_path, damaged_bad_lex, capsys):
    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("ARKIV_LEX_FILES", str(damaged_bad_lex["files"]))
    run = ["run", "lex", "--start", "2025-01-01", "--end", "2026-01-01", "--source-url", damaged_bad_lex["url"]]
    assert cli.main(run) == 1  # the quality gate fails: a content problem
    settings = Settings.from_env()
    cat = cli._catalogue(settings)
    (case,) = review.cases(cat, "open")
    assert "[personnummer]" not in case.id  # the held folder's time stamp is not taken for one

    capsys.readouterr()
    assert cli.main(["summary"]) == 0
    waiting = capsys.readouterr().out
    assert f"FAILED → waiting for an archivist's decision (open case {case.id})" in waiting
    assert "quality gate: passed" not in waiting

    assert cli.main(["quarantine", "approve", case.id, "--by", "Anna Arkivarie", "--reason", "kända fel",
                     "--yes"]) == 0
    assert cli.main(run) == 0
    capsys.readouterr()
    assert cli.main(["summary"]) == 0
    out = capsys.readouterr().out
    assert "quality gate: passed" not in out
    (decided,) = [c for c in review.cases(cat) if c.kind == "quality"]
    assert (f"failed → approved with deviation by Anna Arkivarie on {decided.decided_at:%Y-%m-%d} "
            f"(case {case.id})") in out
    assert "underkänd → godkänd med avvikelse av Anna Arkivarie" in out
    (held,) = [c for c in review.cases(cat) if c.kind == "document"]
    # the counts disagree and the line says by how much and why
    m = re.search(r"difference: (\d+) documents extracted, (\d+) archived: (.*)", out)
    # one damaged Word file held back, one registered document without a file let through by the deviation
    assert m and int(m[1]) - int(m[2]) == 2
    assert m[3].startswith(f"1 document(s) held back in quarantine case {held.id}")
    assert f"1 registered document(s) had no file, archived as records without a file under the deviation " \
           f"approved in case {case.id}" in m[3]
    assert "not explained" not in out

    assert cli.main(["summary", "--json"]) == 0
    (batch,) = json.loads(capsys.readouterr().out)
    assert batch["quality_gate"].startswith("failed → approved with deviation by Anna Arkivarie")
    assert {c["kind"] for c in batch["cases"]} == {"quality", "document"}
    cat.dispose()


def test_an_unexplained_difference_is_not_hidden(monkeypatch, tmp_path, lex_source, capsys):
    """A package missing from the catalogue's count is named as unexplained, never passed over."""
    from transforms.catalogue import Package

    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("ARKIV_LEX_FILES", str(lex_source["files"]))
    assert cli.main(["run", "lex", "--start", "2025-01-01", "--end", "2026-01-01",
                     "--source-url", lex_source["url"]]) == 0
    cat = cli._catalogue(Settings.from_env())
    with cat.session() as s:
        p = s.query(Package).first()
        p.document_count -= 2  # the fault: the catalogue says fewer documents than were extracted
    capsys.readouterr()
    assert cli.main(["summary"]) == 0
    out = capsys.readouterr().out
    assert "quality gate: passed" in out
    assert "not explained by any quarantine case; run `arkiv reconcile`" in out
    cat.dispose()


def test_no_record_value_in_the_summary(monkeypatch, tmp_path, capsys):
    """Reasons and justifications stay in the case; the summary prints counts and case numbers."""
    from transforms.catalogue import Batch, Catalogue

    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "var"))
    settings = Settings.from_env().ensure()
    cat = Catalogue(settings.catalogue_url)
    cat.migrate()
    cat.upsert_batch(batch_id="lex/2025", system="lex", period="2025", interval_start="2025-01-01",
                     interval_end="2026-01-01", status="quality_failed", rows={"tables": {"cases": 3}})
    held = Path(tmp_path / "held")
    held.mkdir()
    review.open_case(cat, system="lex", batch_id="lex/2025", kind="quality",
                     reasons=["cases: title must not be 19121212-1212 Tolvan: 1 record(s)"], path=held)
    with cat.session() as s:
        assert s.get(Batch, "lex/2025").status == "quality_failed"
    cat.dispose()
    assert cli.main(["summary"]) == 0
    out = capsys.readouterr().out
    assert "1212" not in out and "Tolvan" not in out
    assert "open case lex/2025/held" in out
