"""A failed quality gate in a real Airflow run: quarantine, the archivist's decision, and what follows.

The Lex DAG runs with ``airflow dags test`` on a source with one bad row of every kind. The
run stops at the gate (a red, non-retried task and a content alert) and waits for a decision
in the catalogue; the tests decide through ``arkiv quarantine`` as an archivist would:

* approve → the same run goes on and archives the batch; the package's PREMIS carries the
  deviation (which checks failed, who approved, why);
* reject → the run fails; the system owner corrects the source; a rerun archives the
  corrected batch, once;
* no decision → the wait times out and the run fails as a content problem.

Nowhere — reports, Data Docs, quarantine page, task logs, XComs — does a personnummer of the
source appear in clear text.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from e2e_support import BIN, LOGICAL_DATE, _catalogue, _env, _stored, captured, dags_test

from transforms.catalogue import Record
from transforms.quality import quarantine as review

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("airflow")]


def _personnummer(source: dict) -> set[str]:
    db = sqlite3.connect(source["url"].removeprefix("sqlite:///"))
    try:
        return {r[0] for r in db.execute("SELECT personnummer FROM parties WHERE personnummer IS NOT NULL")}
    finally:
        db.close()


def _start(env: dict) -> subprocess.Popen:
    # Output goes to a file, not a pipe: nobody reads a pipe while the run waits, and a full
    # pipe would block the run itself.
    log = open(Path(env["ARKIV_HOME"]).parent / "dags-test.log", "w+", encoding="utf-8")  # noqa: SIM115
    proc = subprocess.Popen([BIN / "airflow", "dags", "test", "lex", LOGICAL_DATE], env=env, text=True,
                            stdout=log, stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _output(proc: subprocess.Popen) -> str:
    proc.log.flush()
    proc.log.seek(0)
    return proc.log.read()


def _wait_for_open_case(home: Path, proc: subprocess.Popen, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    db = home / "catalogue" / "catalogue.sqlite"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("the run ended before it waited for a decision:\n" + _output(proc)[-5000:])
        if db.exists():
            cases = review.cases(_catalogue(home), status="open")
            if cases:
                return cases[0].id
        time.sleep(2)
    proc.kill()
    raise AssertionError("no quarantine case appeared:\n" + _output(proc)[-5000:])


def _finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the run did not end after the decision:\n" + _output(proc)[-5000:]) from None
    out = _output(proc)
    proc.log.close()
    return out


def _arkiv(env: dict, *args: str) -> subprocess.CompletedProcess:
    return captured(f"arkiv {args[0]}", subprocess.run([BIN / "arkiv", *args], env=env, capture_output=True,
                                                       text=True, timeout=120))


def _no_clear_personnummer(numbers: set[str], texts: dict[str, str]) -> None:
    assert numbers
    for where, text in texts.items():
        for pnr in numbers:
            assert pnr not in text, f"a personnummer is in clear text in {where}"


def _xcom_text(airflow_home: Path) -> str:
    db = sqlite3.connect(airflow_home / "airflow.db")
    try:
        return "\n".join(str(r[0]) for r in db.execute("SELECT value FROM xcom"))
    finally:
        db.close()


def _files_text(root: Path) -> dict[str, str]:
    return {str(p): p.read_text(encoding="utf-8", errors="replace")
            for p in root.rglob("*") if p.is_file() and p.suffix in {".html", ".json", ".log", ".txt"}}


@pytest.fixture
def review_env(tmp_path, airflow_home, lex_bad_source) -> dict:
    env = _env(tmp_path / "var", lex_bad_source, airflow_home)
    env["ARKIV_DECISION_POKE_SECONDS"] = "2"
    return env


def test_approve_lets_the_same_run_archive_the_batch_with_its_deviation(tmp_path, airflow_home, lex_bad_source,
                                                                        review_env):
    home = tmp_path / "var"
    proc = _start(review_env)
    case_id = _wait_for_open_case(home, proc)

    listed = _arkiv(review_env, "quarantine", "list")
    assert listed.returncode == 0 and case_id in listed.stdout
    shown = _arkiv(review_env, "quarantine", "show", case_id)
    assert shown.returncode == 0 and "personnummer" in shown.stdout

    # What the archivist reads: the report names the failed checks and offending record IDs.
    report = json.loads((home / "reports" / "lex" / "lex-2025-quality.json").read_text(encoding="utf-8"))
    failed = [c for c in report["checks"] if not c["success"]]
    assert {c["expectation"] for c in failed} >= {"expect_column_values_to_be_valid_personnummer"}
    assert all(c["offending_ids"] for c in failed if c["unexpected_count"])
    page = next((home / "quarantine" / "lex").glob("*/rapport.html")).read_text(encoding="utf-8")
    assert "Ogiltigt personnummer" in page and "Invalid personnummer" in page, "the check in words"
    assert "valid_personnummer" in page, "the GX type stays as a technical note"
    assert "datetime.date(" not in page and "Timestamp(" not in page
    assert "XXXXXX-XXXX" in page, "the offending personnummer is shown masked, keeping its shape"
    assert (home / "reports" / "lex" / "lex-2025-datadocs" / "index.html").is_file()

    decided = _arkiv(review_env, "quarantine", "approve", case_id, "--by", "Arkivarie Test",
                     "--reason", "Kända fel i källsystemet, dokumenterade i ärende 2026/17")
    assert decided.returncode == 0, decided.stderr
    out = _finish(proc)

    assert "state=success" in out, out[-5000:]
    assert "CONTENT PROBLEM" in out  # the gate's task is red and said why
    packages = _catalogue(home).packages()
    assert packages and len(_stored(home)) == len(packages)
    with tarfile.open(_stored(home)[0]) as t:
        premis = "".join(t.extractfile(m).read().decode("utf-8") for m in t.getmembers()
                         if m.name.endswith("premis.xml"))
    assert "deviation approved by Arkivarie Test" in premis
    assert "dokumenterade i ärende 2026/17" in premis and "valid_personnummer" in premis
    events = [e.type for e in _catalogue(home).events(batch_id="lex/2025")]
    assert "decision" in events and "quarantine" in events

    _no_clear_personnummer(_personnummer(lex_bad_source), {
        "task logs": out, "XComs": _xcom_text(airflow_home), **_files_text(home / "reports"),
        **_files_text(home / "quarantine"), **_files_text(airflow_home / "logs")})


def test_reject_then_corrected_source_is_archived_once(tmp_path, airflow_home, review_env):
    from demo import lex

    home = tmp_path / "var"
    proc = _start(review_env)
    case_id = _wait_for_open_case(home, proc)
    decided = _arkiv(review_env, "quarantine", "reject", case_id, "--by", "Arkivarie Test",
                     "--reason", "Felaktiga personnummer: rättas i Lex")
    assert decided.returncode == 0, decided.stderr
    out = _finish(proc)
    assert "state=failed" in out and "was rejected by Arkivarie Test" in out
    assert _stored(home) == [] and _catalogue(home).packages() == []

    # The system owner corrects the source (the same data without the planted bad rows).
    fixed = tmp_path / "lex-fixed"
    url = f"sqlite:///{fixed / 'lex.sqlite'}"
    fixed.mkdir()
    lex.generate(url, fixed / "files", cases=40, seed=2, year=2025, bad=0)
    env = {**_env(home, {"url": url, "files": fixed / "files"}, airflow_home), "ARKIV_DECISION_POKE_SECONDS": "2"}
    rerun = dags_test(env)
    assert "state=success" in rerun.stdout + rerun.stderr, (rerun.stdout + rerun.stderr)[-5000:]
    packages = _catalogue(home).packages()
    assert packages and len(_stored(home)) == len(packages)
    with _catalogue(home).session() as s:
        ids = list(s.scalars(sa.select(Record.source_id)))
    assert ids and len(ids) == len(set(ids))  # each record in exactly one package
    # (That a further run of an archived interval ships nothing is test_lex_dag's rerun test.)


def test_without_a_decision_the_wait_times_out_as_a_content_problem(tmp_path, airflow_home, review_env):
    home = tmp_path / "var"
    env = {**review_env, "ARKIV_DECISION_TIMEOUT_HOURS": str(20 / 3600)}
    run = captured("airflow dags test lex", subprocess.run([BIN / "airflow", "dags", "test", "lex", LOGICAL_DATE],
                                                            env=env, capture_output=True, text=True, timeout=900))
    out = run.stdout + run.stderr
    assert "state=failed" in out
    assert "CONTENT PROBLEM" in out and "failed its quality gate" in out
    # IT operations get a structured alert line that says it is a content problem (not retried)
    assert '"event": "arkivflode.task_failed", "kind": "content"' in out
    assert "no archivist decision on the quarantined batch in time" in out
    assert "up_for_retry" not in out
    assert _stored(home) == [] and _catalogue(home).packages() == []
    (case,) = review.cases(_catalogue(home), status="open")  # still open: a decision can come later
    assert case.kind == "quality"

