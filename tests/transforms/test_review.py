"""The wait for an archivist's decision (pipeline.await_decision), without Airflow, and the pages' rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transforms import pipeline
from transforms.catalogue import Batch
from transforms.common.errors import ContentError, StateError
from transforms.config.settings import Settings
from transforms.quality import quarantine as review
from transforms.quality import quarantine_page as review_web


@pytest.fixture
def bad_batch(monkeypatch, tmp_path, lex_bad_source) -> tuple[Settings, dict]:
    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("ARKIV_LEX_FILES", str(lex_bad_source["files"]))
    settings = Settings.from_env().ensure()
    batch = pipeline.extract(settings, "lex", "2025-01-01", "2026-01-01", lex_bad_source["url"])
    return settings, batch


def test_a_gate_that_did_not_finish_is_never_passed_over(bad_batch):
    settings, batch = bad_batch
    with pytest.raises(StateError, match="quality check did not finish"):
        pipeline.await_decision(settings, "lex", batch["manifest"], batch["batch"])


def test_waiting_then_approved_restores_the_batch_and_passes_it_with_the_deviation(bad_batch):
    settings, batch = bad_batch
    with pytest.raises(ContentError, match="failed its quality gate"):
        pipeline.check_quality(settings, "lex", batch["manifest"])
    assert not Path(batch["manifest"]).exists()  # moved into the quarantine
    state = pipeline.await_decision(settings, "lex", batch["manifest"], batch["batch"])
    assert state["state"] == "waiting"
    assert pipeline.await_decision(settings, "lex", batch["manifest"], batch["batch"]) == state  # still waiting

    cat = pipeline.catalogue(settings)
    review.decide(cat, state["case"], approve=True, by="Anna Arkivarie", justification="kända fel")
    decided = pipeline.await_decision(settings, "lex", batch["manifest"], batch["batch"])

    assert decided == {"state": "approved", "batch": "lex/2025", "case": state["case"]}
    assert Path(batch["manifest"]).is_file()  # back in staging, for the same run to package
    (case,) = review.cases(cat)
    assert Path(case.path, "rapport.html").is_file()  # the quarantined copy and its report are kept
    with cat.session() as s:
        assert s.get(Batch, "lex/2025").status == "quality_passed"
    details = [e.detail for e in cat.events(batch_id="lex/2025")]
    assert any(d.startswith("quality deviation approved by Anna Arkivarie") for d in details)
    assert any("copied back from quarantine" in d for d in details)
    # the same run goes on: the record classes package
    built = [p for rc in batch["record_classes"] for p in pipeline.package(settings, "lex", batch["manifest"], rc)]
    assert built and all(not p["already_archived"] for p in built)


def test_rejected_fails_with_the_reason(bad_batch):
    settings, batch = bad_batch
    with pytest.raises(ContentError):
        pipeline.check_quality(settings, "lex", batch["manifest"])
    cat = pipeline.catalogue(settings)
    (case,) = review.cases(cat, status="open")
    review.decide(cat, case.id, approve=False, by="Anna Arkivarie", justification="rättas i Lex")
    with pytest.raises(ContentError, match="rejected by Anna Arkivarie .rättas i Lex"):
        pipeline.await_decision(settings, "lex", batch["manifest"], batch["batch"])


def test_pages_list_filter_and_chart(bad_batch):
    settings, batch = bad_batch
    with pytest.raises(ContentError):
        pipeline.check_quality(settings, "lex", batch["manifest"])
    cat = pipeline.catalogue(settings)
    (case,) = review.cases(cat)
    listing = review_web.cases_page(cat, review_web.CaseFilter(), "/arkiv")
    assert case.id in listing and "awaiting decision" in listing
    assert case.id not in review_web.cases_page(cat, review_web.CaseFilter(status="approved"), "/arkiv")
    assert case.id not in review_web.cases_page(cat, review_web.CaseFilter(), "/arkiv", visible_systems={"viva"})
    page = review_web.case_page(cat, case, "/arkiv", may_decide=True)
    assert 'name="reason"' in page and "/arkiv/datadocs?id=" in page
    assert 'name="reason"' not in review_web.case_page(cat, case, "/arkiv", may_decide=False)
    docs = review_web.data_docs_html(case, "index.html", "/arkiv")
    assert "/arkiv/datadocs?id=" in docs and "page=parties.html" in docs
    assert review_web.data_docs_html(case, "../../etc/passwd.html", "/arkiv") is None
    outcomes = review_web.quality_outcomes(cat)
    assert sum(c["failure"] for c in outcomes["lex"].values()) == 1
    assert 'aria-label="lex"' in review_web.overview_page(cat, "/arkiv")
    report = json.loads(Path(case.report).read_text(encoding="utf-8"))
    assert report["data_docs"].endswith("index.html")


class _Terminal:
    """Standard input as a person's terminal, for the confirmation question."""

    def isatty(self) -> bool:
        return True


def test_deciding_at_the_command_line_says_what_was_decided_and_asks_first(bad_batch, monkeypatch, capsys):
    from transforms import cli

    settings, batch = bad_batch
    with pytest.raises(ContentError):
        pipeline.check_quality(settings, "lex", batch["manifest"])
    cat = pipeline.catalogue(settings)
    (case,) = review.cases(cat, status="open")

    # an approval without a justification is refused before anything is asked or decided
    assert cli.main(["quarantine", "approve", case.id, "--by", "Anna Arkivarie", "--yes"]) == 2
    assert "--reason" in capsys.readouterr().err
    # at a terminal the decision is asked for; anything but yes decides nothing
    monkeypatch.setattr("sys.stdin", _Terminal())
    answers = iter(["n", "ja"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    decide = ["quarantine", "reject", case.id, "--by", "Anna Arkivarie", "--reason", "rättas i Lex"]
    assert cli.main(decide) == 2
    assert "not confirmed" in capsys.readouterr().err
    assert review.cases(cat, status="open")[0].id == case.id
    assert cli.main(decide) == 0
    out = capsys.readouterr().out
    assert f"quarantine case {case.id} rejected by Anna Arkivarie / karantänärendet avvisad av Anna Arkivarie" in out
    assert "rejectd" not in out
    (decided,) = review.cases(cat, status="rejected")
    assert decided.decided_by == "Anna Arkivarie" and decided.justification == "rättas i Lex"
