"""Faults in real Airflow runs (``airflow dags test``): only the task that really failed fails and
alerts, with the kind that says who acts; downstream tasks are upstream-failed or skipped, never
failed for want of input; a missing delivery ends as ``delivery_missing`` for the system owner; a
second run of an interval that another run holds does nothing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from e2e_support import BIN, _catalogue, _env, _stored, captured

from transforms import pipeline
from transforms.catalogue import Batch, IntervalClaim
from transforms.config.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("airflow")]

#: the yearly run whose interval is Lex 2025 and the monthly one whose interval is Treserva 2025-12
RUN_DATE = "2026-01-02"


def _dags_test(env: dict, dag_id: str) -> tuple[str, str]:
    run = captured(f"airflow dags test {dag_id}", subprocess.run(
        [BIN / "airflow", "dags", "test", dag_id, RUN_DATE], env=env, capture_output=True, text=True, timeout=900))
    out = run.stdout + run.stderr
    run_ids = [w.split("=", 1)[1].rstrip(",") for w in out.split() if w.startswith("run_id=manual__")]
    assert run_ids, out[-3000:]
    return run_ids[0], out


def _states(env: dict, dag_id: str, run_id: str) -> dict[str, str]:
    run = subprocess.run([BIN / "airflow", "tasks", "states-for-dag-run", dag_id, run_id, "-o", "json"], env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    return {r["task_id"]: r["state"] for r in json.loads(run.stdout[run.stdout.index("["):])}


def _alerts(out: str) -> list[dict]:
    lines = [line for line in out.splitlines() if "arkivflode.task_failed" in line]
    return [json.loads(line[line.index("{"):line.rindex("}") + 1]) for line in lines]


@pytest.fixture
def clean_env(tmp_path, airflow_home, lex_source) -> dict:
    env = _env(tmp_path / "var", lex_source, airflow_home)
    for key in [k for k in env if k.startswith(("ARKIV_CONN_", "ARKIV_TRESERVA"))]:
        env.pop(key)
    return env


def test_a_failed_extract_fails_alone_as_a_configuration_problem_for_it(clean_env):
    env = {k: v for k, v in clean_env.items() if k != "AIRFLOW_CONN_LEX_DB"}  # the connection is not defined
    run_id, out = _dags_test(env, "lex")
    states = _states(env, "lex", run_id)
    assert states.pop("extract") == "failed"
    assert set(states.values()) == {"upstream_failed"}, states  # await_decision included: it never ran on None
    assert "NoneType" not in out
    (alert,) = _alerts(out)  # one failure, one alert
    assert alert["task_id"] == "extract" and alert["kind"] == "system", alert
    assert "connection 'lex_db' is not defined" in alert["message"] and "ARKIV_CONN_LEX_DB" in alert["message"]
    assert alert["try_number"] == 1  # a configuration problem is not retried
    with _catalogue(Path(env["ARKIV_HOME"])).session() as s:  # the failed run gave its interval back
        assert s.get(IntervalClaim, "lex/2025") is None


def test_a_quality_gate_that_could_not_run_fails_alone(clean_env, tmp_path):
    """The suite cannot be read (a configuration problem): quality fails once, for IT operations; the
    wait for a decision finds no verdict and is skipped, not failed; nothing is packaged."""
    empty = tmp_path / "no-suites"
    empty.mkdir()
    env = {**clean_env, "ARKIV_EXPECTATIONS_DIR": str(empty)}
    run_id, out = _dags_test(env, "lex")
    states = _states(env, "lex", run_id)
    assert (states.pop("extract"), states.pop("quality"), states.pop("await_decision")) == (
        "success", "failed", "skipped")
    assert set(states.values()) == {"skipped"}, states
    (alert,) = _alerts(out)
    assert alert["task_id"] == "quality" and alert["kind"] == "system", alert
    assert "cannot read quality suite" in alert["message"]
    assert not _stored(tmp_path / "var")


def test_a_missing_delivery_ends_as_delivery_missing_for_the_system_owner(clean_env, tmp_path):
    inbox = tmp_path / "treserva-inbox"
    inbox.mkdir()
    env = {**clean_env, "ARKIV_TRESERVA_INBOX": str(inbox), "ARKIV_TRESERVA_DELIVERY_TIMEOUT_HOURS": "48"}
    run_id, out = _dags_test(env, "treserva")
    states = _states(env, "treserva", run_id)
    assert states.pop("await_delivery") == "failed"
    assert set(states.values()) == {"upstream_failed"}, states
    (alert,) = _alerts(out)
    assert alert["task_id"] == "await_delivery" and alert["kind"] == "delivery_missing", alert
    assert "treserva/2025-12: delivery missing" in alert["message"] and "48 h after" in alert["message"]
    cat = _catalogue(tmp_path / "var")
    with cat.session() as s:
        assert s.get(Batch, "treserva/2025-12").status == "delivery_missing"


def test_a_second_run_of_a_held_interval_does_nothing_and_archives_once_free(clean_env, tmp_path):
    """Another DAG run of Lex 2025 is queued and holds the interval: this run is skipped whole (no
    alert, nothing stored). Then `arkiv run`'s guard holds it: skipped again. Free: archived once."""
    env = clean_env
    home = tmp_path / "var"
    settings = Settings.from_env({**os.environ, "ARKIV_HOME": str(home)}).ensure()
    other = "first_holder"
    subprocess.run([BIN / "airflow", "dags", "reserialize"], env=env, capture_output=True, timeout=600, check=True)
    subprocess.run([BIN / "airflow", "dags", "trigger", "lex", "-r", other, "-l", "2026-01-01T12:00:00+00:00"],
                   env=env, capture_output=True, text=True, timeout=300, check=True)
    pipeline.claim_interval(settings, "lex", "2025-01-01", "2026-01-01", f"dag-run:lex/{other}")

    run_id, out = _dags_test(env, "lex")
    assert set(_states(env, "lex", run_id).values()) == {"skipped"}
    assert "is being archived by dag-run:lex/first_holder" in out
    assert not _alerts(out) and not _stored(home)

    pipeline.release_interval(settings, "lex", str(settings.staging / "lex" / "2025" / "manifest.json"),
                              f"dag-run:lex/{other}")
    with pipeline.interval_guard(settings, "lex", "2025-01-01", "2026-01-01"):
        run_id, out = _dags_test(env, "lex")
    assert set(_states(env, "lex", run_id).values()) == {"skipped"}
    assert "archiving lex/2025 is already running" in out and not _stored(home)

    run_id, out = _dags_test(env, "lex")
    assert "state=success" in out, out[-3000:]
    assert _stored(home) and not _alerts(out)
    with _catalogue(home).session() as s:
        assert s.get(Batch, "lex/2025").status == "archived"
