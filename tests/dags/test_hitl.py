"""One decision, three places: the catalogue decides once, the HITL trigger sees a decision made
elsewhere, an answer in Airflow without justification or confirmation decides nothing, and each
DAG run's note names its period. (The whole flow in a real Airflow, Required actions included,
is tests/ui/test_roles.py; with `airflow dags test` it is tests/e2e/test_quality_review.py.)"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from types import SimpleNamespace

import pytest
from arkivflode_airflow import hitl, listeners

from transforms.catalogue import Catalogue
from transforms.quality import quarantine as review


@pytest.fixture
def case(monkeypatch, tmp_path) -> tuple[Catalogue, str]:
    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "var"))
    monkeypatch.delenv("ARKIV_CATALOGUE_URL", raising=False)
    from transforms.config.settings import Settings

    settings = Settings.from_env().ensure()
    cat = Catalogue(settings.catalogue_url)
    cat.migrate()
    held = tmp_path / "var" / "quarantine" / "lex" / "2025-20260101T000000"
    held.mkdir(parents=True)
    case_id = review.open_case(cat, system="lex", batch_id="lex/2025", kind="quality", path=held,
                               reasons=["parties: Ogiltigt personnummer / Invalid personnummer: 3 record(s)"])
    return cat, case_id


def test_a_case_is_decided_once_whichever_surface_comes_first(case):
    cat, case_id = case
    review.decide(cat, case_id, approve=True, by="archivist", justification="Kända fel", via="airflow")
    for via in ("page", "cli", "airflow"):
        with pytest.raises(ValueError, match="not awaiting a decision"):
            review.decide(cat, case_id, approve=False, by="someone else", justification="för sent", via=via)
    (decided,) = review.cases(cat)
    assert (decided.status, decided.decided_by, decided.justification) == ("approved", "archivist", "Kända fel")
    decisions = [e for e in cat.events(batch_id="lex/2025") if e.type == "decision"]
    assert len(decisions) == 1 and decisions[0].agent == "archivist"
    assert "in Airflow's Required actions" in decisions[0].detail


@pytest.mark.parametrize("approve", [True, False])
def test_a_decision_without_a_justification_or_a_person_is_refused(case, approve):
    cat, case_id = case
    for by, why in (("archivist", "  "), ("", "Kända fel")):
        with pytest.raises(ValueError, match="justification"):
            review.decide(cat, case_id, approve=approve, by=by, justification=why)
    assert review.case_status(cat, case_id) == "open"


def test_a_person_decides_in_their_own_name_and_only_as_an_archivist(case):
    from transforms.catalogue import Person

    cat, case_id = case
    with pytest.raises(review.DecisionRefused, match="archivist role"):
        review.decide(cat, case_id, approve=True, by=Person("rut", "Rut Forskare", ("researcher",)),
                      justification="Kända fel", via="page")
    assert review.case_status(cat, case_id) == "open"
    review.decide(cat, case_id, approve=False, by=Person("anna", "Anna Arkivarie", ("archivist", "researcher")),
                  justification="Rättas i Lex", via="page")
    (decided,) = review.cases(cat)
    assert (decided.status, decided.decided_by, decided.decided_by_id) == ("rejected", "Anna Arkivarie", "anna")
    (event,) = [e for e in cat.events(batch_id="lex/2025") if e.type == "decision"]
    assert (event.agent, event.agent_id, event.agent_roles, event.executing_agent, event.outcome) == (
        "Anna Arkivarie", "anna", "archivist,researcher", review.AGENT, "failure")
    assert "by Anna Arkivarie (anna)" in event.detail


def test_a_bare_name_is_recorded_as_given_without_an_identifier(case):
    cat, case_id = case
    review.decide(cat, case_id, approve=True, by=" Anna Arkivarie ", justification="Kända fel", via="cli")
    (decided,) = review.cases(cat)
    assert (decided.decided_by, decided.decided_by_id) == ("Anna Arkivarie", None)
    (event,) = [e for e in cat.events(batch_id="lex/2025") if e.type == "decision"]
    assert (event.agent, event.agent_id) == ("Anna Arkivarie", None)


def test_the_airflow_user_is_the_person_who_decides():
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from arkivflode_airflow import ui

    who = hitl.airflow_person(hitl.responder(_answer(user="c3f1-subject")))
    assert (who.id, who.name, who.roles, who.authenticated) == ("c3f1-subject", "c3f1-subject", ("archivist",), True)
    assert hitl.airflow_person("anna", may_decide=False).roles == ()
    with pytest.raises(ValueError, match="no user"):
        hitl.airflow_person(" ")
    # the simple auth manager's user: the username is all there is
    simple = ui.decider(SimpleAuthManagerUser(username="archivist", role="user"), may_decide=True)
    assert (simple.id, simple.name, simple.roles) == ("archivist", "archivist", ("archivist",))
    # a user of an auth manager that signs in through the provider (the FAB auth manager's user has a row
    # number as get_id(), the provider's subject as username and the person's names): its shape, as data
    fab_like = SimpleNamespace(id=7, username="9f2c-subject", first_name="Anna", last_name="Arkivarie",
                               get_id=lambda: 7, get_name=lambda: "9f2c-subject")
    person = ui.decider(fab_like, may_decide=False)
    assert (person.id, person.name, person.roles) == ("9f2c-subject", "Anna Arkivarie", ())


def _answer(option=hitl.APPROVE, why="Kända fel", confirmed=True, user="archivist") -> dict:
    return {"chosen_options": [option], "params_input": {hitl.JUSTIFICATION: why, hitl.CONFIRM: confirmed},
            "responded_by_user": {"id": user, "name": user} if user else None}


def test_an_answer_in_airflow_names_the_person_as_the_provider_last_named_their_subject(case):
    """Airflow's answer carries only the username (the provider's subject); the decision is recorded with the
    person's name as the catalogue last saw it from the provider, else with the subject alone."""
    from transforms.catalogue import AccessLogEntry, Person
    from transforms.config.settings import Settings

    cat, case_id = case
    with cat.session() as s:
        s.add(AccessLogEntry(actor="c3f1-subject", role="archivist", action="search", target="lex", outcome="granted",
                             person_name="Anna Arkivarie", roles="archivist"))
        s.commit()
    settings = Settings.from_env().ensure()
    assert cat.person_name("c3f1-subject") == "Anna Arkivarie" and cat.person_name("nobody") is None
    assert hitl._decide(settings, case_id, True, hitl.airflow_person("c3f1-subject"), "Kända fel") == "decided"
    (decided,) = review.cases(cat)
    assert (decided.decided_by, decided.decided_by_id) == ("Anna Arkivarie", "c3f1-subject")
    (event,) = [e for e in cat.events(batch_id="lex/2025") if e.type == "decision"]
    assert (event.agent, event.agent_id) == ("Anna Arkivarie", "c3f1-subject")
    # a later decision event is the newest name the catalogue holds for that subject
    assert cat.person_name("c3f1-subject") == "Anna Arkivarie"
    # a subject the catalogue never saw signed in keeps the subject as its name
    assert hitl.airflow_person("x") == Person("x", "x", ("archivist",))


def test_an_answer_in_airflow_needs_an_option_a_justification_and_the_confirmation():
    assert hitl.answer_problem(_answer()) is None
    assert hitl.answer_problem(_answer(hitl.REJECT)) is None
    assert "justification" in hitl.answer_problem(_answer(why=" "))
    assert "confirm" in hitl.answer_problem(_answer(confirmed=False))
    assert "choose" in hitl.answer_problem({**_answer(), "chosen_options": []})
    assert "choose" in hitl.answer_problem({**_answer(), "chosen_options": [hitl.APPROVE, hitl.REJECT]})
    assert hitl.responder(_answer()) == "archivist" and hitl.responder(_answer(user=None)) is None


def test_the_request_names_the_case_its_reasons_and_links_the_report(case):
    cat, case_id = case
    subject, body = hitl.request_text(review.get_case(cat, case_id), "lex", "2025", "http://localhost:8080")
    assert "lex 2025" in subject and "decision needed" in subject
    assert case_id in body and "Invalid personnummer: 3 record(s)" in body
    assert "http://localhost:8080/arkiv/case?id=" in body and "arkiv quarantine approve|reject" in body


def _run_trigger(trigger: hitl.DecisionTrigger) -> dict:
    async def first():
        return await anext(trigger.run())

    return asyncio.run(asyncio.wait_for(first(), timeout=60)).payload


def test_the_trigger_wakes_the_task_when_the_case_is_decided_on_the_page_or_in_the_cli(case):
    cat, case_id = case
    deadline = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    trigger = hitl.DecisionTrigger(ti_id="no-such-task-instance", case_id=case_id, deadline=deadline,
                                   poke_interval=0.2)

    def decide_later():
        time.sleep(1)
        review.decide(cat, case_id, approve=False, by="Arkivarie CLI", justification="rättas i Lex", via="cli")

    started = time.monotonic()
    t = threading.Thread(target=decide_later)
    t.start()
    payload = _run_trigger(trigger)
    t.join()
    assert payload == {"source": "catalogue", "status": "rejected", "case_id": case_id, "deadline": deadline}
    assert time.monotonic() - started >= 1  # it waited for the decision, it did not fire at once
    classpath, kwargs = trigger.serialize()
    assert classpath == "arkivflode_airflow.hitl.DecisionTrigger" and kwargs["case_id"] == case_id


def test_the_trigger_fires_at_the_deadline_when_nobody_decides(case):
    _, case_id = case
    deadline = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat()
    payload = _run_trigger(hitl.DecisionTrigger(ti_id="x", case_id=case_id, deadline=deadline, poke_interval=0.2))
    assert payload["source"] == "timeout" and payload["case_id"] == case_id


def test_each_run_note_names_the_period_in_the_systems_time_zone():
    # Lex runs at 02:00 on 1 January, Stockholm time: its 2025 interval starts 2024-12-31 23:00 UTC
    start, end = dt.datetime(2024, 12, 31, 23, tzinfo=dt.UTC), dt.datetime(2025, 12, 31, 23, tzinfo=dt.UTC)
    assert listeners.run_note("lex", start, end) == "lex · period 2025"
    month = listeners.run_note("treserva", dt.datetime(2025, 2, 28, 23, tzinfo=dt.UTC),
                               dt.datetime(2025, 3, 31, 22, tzinfo=dt.UTC))
    assert month == "treserva · period 2025-03"
    assert listeners.run_note("lex", None, end) is None

    run = SimpleNamespace(dag_id="lex", run_id="manual__x", data_interval_start=start, data_interval_end=end, note=None)
    listeners.on_dag_run_running(dag_run=run, msg="started")
    assert run.note == "lex · period 2025"
    run.note = "Omkörning efter rättad export"  # a note someone wrote is kept
    listeners.on_dag_run_running(dag_run=run, msg="started")
    assert run.note == "Omkörning efter rättad export"


PERIOD_SCRIPT = r"""
import json, sys
import pendulum
from airflow.sdk import DAG
from airflow.serialization.serialized_objects import DagSerialization
from airflow.timetables.base import DataInterval, TimeRestriction
from airflow.timetables.interval import CronDataIntervalTimetable
from airflow.utils.types import DagRunType
from arkivflode_airflow.timetable import PeriodTimetable

out = {}
for name, cron in (("lex", "0 2 1 1 *"), ("treserva", "0 4 1 * *")):
    dag = DAG(name, schedule=PeriodTimetable(cron, timezone="Europe/Stockholm"),
              start_date=pendulum.datetime(2025, 1, 1, tz="Europe/Stockholm"))
    back = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable  # as the scheduler reads it
    plain = CronDataIntervalTimetable(cron, timezone="Europe/Stockholm")
    restriction = TimeRestriction(earliest=pendulum.datetime(2025, 1, 1, tz="Europe/Stockholm"), latest=None,
                                  catchup=True)
    ours = back.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    theirs = plain.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    out[name] = {"type": type(back).__name__, "same": ours == theirs,
                 "scheduled": back.generate_run_id(run_type=DagRunType.SCHEDULED, run_after=ours.run_after,
                                                   data_interval=ours.data_interval),
                 "backfill": back.generate_run_id(run_type=DagRunType.BACKFILL_JOB, run_after=ours.run_after,
                                                  data_interval=ours.data_interval),
                 "no_interval": back.generate_run_id(run_type=DagRunType.MANUAL, run_after=ours.run_after,
                                                     data_interval=None)}
print(json.dumps(out))
"""


def test_run_ids_name_the_period_and_the_timetable_survives_the_schedulers_reading(tmp_path):
    """The run lists show run IDs: the systems' timetable puts the period there, with the same intervals as
    CronDataIntervalTimetable, and (registered by the plugin) it is read back from the serialized DAG."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    project = Path(__file__).resolve().parents[2]
    env = {**os.environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(project / "plugins"),
           "PYTHONPATH": os.pathsep.join([str(project / "plugins"), str(project)])}
    run = subprocess.run([sys.executable, "-c", PERIOD_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["lex"] == {"type": "PeriodTimetable", "same": True,
                          "scheduled": "scheduled__period-2025__2026-01-01T01:00:00+00:00",
                          "backfill": "backfill__period-2025__2026-01-01T01:00:00+00:00",
                          "no_interval": "manual__2026-01-01T01:00:00+00:00"}
    assert got["treserva"]["same"] and got["treserva"]["scheduled"] == \
        "scheduled__period-2025-01__2025-02-01T03:00:00+00:00"


def test_each_system_waits_for_its_decision_as_a_deferrable_hitl_task(monkeypatch):
    """The factory's await_decision is the HITL wait: after extract and quality, whatever the gate said, reading
    the extract's output, with the poke interval and deadline from the environment."""
    from pathlib import Path

    from arkivflode_airflow.factory import build_system_dag

    monkeypatch.setenv("ARKIV_DECISION_POKE_SECONDS", "7")
    monkeypatch.setenv("ARKIV_DECISION_TIMEOUT_HOURS", "2")
    dag = build_system_dag(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")
    wait = dag.get_task("await_decision")
    assert isinstance(wait, hitl.AwaitDecision)
    assert (wait.poke_interval, wait.decision_timeout) == (7.0, 7200.0)
    assert wait.trigger_rule == "all_done_min_one_success"
    assert wait.upstream_task_ids == {"extract", "quality"}
    assert "partitions" in wait.downstream_task_ids and "finish" in wait.downstream_task_ids
    assert wait.on_failure_callback, "a failed wait alerts like every task"


@pytest.mark.parametrize("option", [hitl.APPROVE, hitl.REJECT])
def test_an_answer_in_airflow_is_written_to_the_catalogue_and_the_run_goes_on_or_fails_clearly(
        monkeypatch, tmp_path, lex_bad_source, option):
    """What the resumed task does with an answer from Required actions: the catalogue records it (as the Airflow
    user, once), then approve packages the same batch with its deviation and reject fails as a content problem."""
    from arkivflode_airflow import steps

    from transforms import pipeline
    from transforms.common.errors import ContentError
    from transforms.config.settings import Settings

    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "var"))
    monkeypatch.delenv("ARKIV_CATALOGUE_URL", raising=False)
    monkeypatch.setenv("ARKIV_LEX_FILES", str(lex_bad_source["files"]))
    settings = Settings.from_env().ensure()
    batch = pipeline.extract(settings, "lex", "2025-01-01", "2026-01-01", lex_bad_source["url"])
    with pytest.raises(ContentError):
        pipeline.check_quality(settings, "lex", batch["manifest"])
    case_id = pipeline.await_decision(settings, "lex", batch["manifest"], batch["batch"])["case"]

    op = hitl.AwaitDecision(task_id="await_decision", system="lex", batch=batch, poke_interval=1, timeout=60)
    event = {**_answer(option, why="Beslut i Airflow"), "source": "airflow", "case_id": case_id,
             "deadline": (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()}
    context = {"task_instance": SimpleNamespace(id="ti"), "ti": None, "dag_run": None}
    if option == hitl.APPROVE:
        done = op.resume(context, event=event)
        assert done["decision"] == {"state": "approved", "batch": "lex/2025", "case": case_id}
    else:
        with pytest.raises(steps.ContentFailure, match="was rejected by archivist"):
            op.resume(context, event=event)
    cat = pipeline.catalogue(settings)
    (case,) = review.cases(cat)
    assert (case.status, case.decided_by, case.justification) == (
        "approved" if option == hitl.APPROVE else "rejected", "archivist", "Beslut i Airflow")
    # the Airflow user is the person who decided (identifier: the username), the software carried it out
    assert case.decided_by_id == "archivist"
    (decision,) = [e for e in cat.events(batch_id="lex/2025") if e.type == "decision"]
    assert (decision.agent, decision.agent_id, decision.agent_roles, decision.executing_agent) == (
        "archivist", "archivist", "archivist", review.AGENT)
    # the same answer again (a resumed task retried) decides nothing more
    if option == hitl.APPROVE:
        op.resume(context, event=event)
    assert len([e for e in cat.events(batch_id="lex/2025") if e.type == "decision"]) == 1
