"""The wait for an archivist's decision, as Airflow's human-in-the-loop: one decision, three places to make it.

A batch whose quality gate failed is a quarantine case in the catalogue. While it waits, its
``await_decision`` task is deferred and carries a human-in-the-loop request (Airflow's HITL
detail), so it is listed in Airflow's *Required actions* with the case, its reasons and a
link to the report. The archivist may decide

* there, in Airflow: the answer (approve with deviation or reject, a justification, a ticked
  confirmation) is written to the catalogue by :func:`transforms.quality.quarantine.decide`, as
  the signed-in Airflow user (:func:`airflow_person`: the Airflow username is the person's
  identifier, which under an auth manager signing people in through the identity provider is
  the provider's subject, so the decision names the same person as one taken in the CLI or on
  the archive's pages);
* on the Arkivflöde page, or with ``arkiv quarantine approve|reject``: the catalogue changes,
  and the task's trigger, which watches the catalogue as well as the HITL answer, resumes the
  task; the HITL request is then marked answered with the catalogue's decision.

Either way the decision is made once, in the catalogue (a second one, from anywhere, is refused
there), and the run goes on from the catalogue's state: approved → the same batch is packaged
with its deviation; rejected → the task fails as a content problem. An answer in Airflow without
a justification or without the confirmation decides nothing: the request is asked again.

The trigger runs in the triggerer (``airflow dags test`` runs it in its own process); it reads
the catalogue with the same ``ARKIV_*`` settings as the tasks, so the triggerer needs them too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

log = logging.getLogger("arkivflode.hitl")

APPROVE = "Godkänn med avvikelse / Approve with deviation"
REJECT = "Avvisa / Reject"
OPTIONS = [APPROVE, REJECT]
#: the HITL form's fields (Airflow params): the justification and the confirmation
JUSTIFICATION, CONFIRM = "motivering", "bekraftelse"
#: how much longer than our own deadline Airflow's deferral timeout is (ours reports it in words first)
TIMEOUT_MARGIN = dt.timedelta(minutes=10)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _params() -> dict[str, dict]:
    from airflow.sdk import Param

    return {
        JUSTIFICATION: Param("", type="string", minLength=1, title="Motivering / Justification",
                             description="Varför? Sparas för alltid i paketets PREMIS. / Why? Kept for ever in the "
                                         "package's PREMIS.").serialize(),
        CONFIRM: Param(False, type="boolean", title="Jag bekräftar beslutet / I confirm this decision",
                       description="Beslutet kan inte ändras. / The decision cannot be changed.").serialize(),
    }


def request_text(case, system: str, period: str | None, base: str) -> tuple[str, str]:
    """The HITL request's subject and Markdown body: the case, its reasons, a link to the report."""
    from transforms.common.masking import safe_line

    reasons = [safe_line(r) for r in json.loads(case.reasons or "[]")]
    link = f"{base}/arkiv/case?{urlencode({'id': case.id})}"
    subject = f"Karantän / Quarantine: {system} {period or ''} — beslut krävs / decision needed".replace("  ", " ")
    items = "\n".join(f"- {r}" for r in reasons[:20]) + (f"\n- … ({len(reasons) - 20} more)" if len(reasons) > 20
                                                         else "")
    body = (f"**{system}**, period **{period or '?'}**: leveransen underkändes i kvalitetskontrollen och hålls i "
            f"karantän som ärende `{case.id}`. / The batch failed its quality gate and is held in quarantine.\n\n"
            f"**Orsaker / Reasons**\n\n{items}\n\n"
            f"[Läs rapporten / Read the report]({link}) (svenska och engelska / Swedish and English).\n\n"
            "**Godkänn med avvikelse** → leveransen arkiveras och avvikelsen skrivs i PREMIS. **Avvisa** → inget "
            "arkiveras; systemägaren rättar källan. Skriv en motivering och bekräfta. / **Approve with deviation** → "
            "the batch is archived with the deviation in its PREMIS. **Reject** → nothing is archived; the system "
            "owner corrects the source. Write a justification and confirm.\n\n"
            "Samma beslut kan fattas på Arkivflöde-sidan eller med `arkiv quarantine approve|reject`. / The same "
            "decision can be made on the Arkivflöde page or with `arkiv quarantine approve|reject`.")
    return subject, body


def answer_problem(event: dict) -> str | None:
    """Why an Airflow answer decides nothing (no option, no justification, not confirmed), or None."""
    chosen = event.get("chosen_options") or []
    params = event.get("params_input") or {}
    if len(chosen) != 1 or chosen[0] not in OPTIONS:
        return f"choose one of {OPTIONS}"
    if not str(params.get(JUSTIFICATION) or "").strip():
        return "a justification is required (it is kept for ever)"
    if params.get(CONFIRM) not in (True, "true", "True", 1):
        return "the decision was not confirmed (tick the confirmation)"
    return None


def responder(event: dict) -> str | None:
    """The username of the Airflow user who answered (Airflow's HITL user ``name``; its ``id`` is the
    auth manager's own key, a number in the FAB auth manager's table), or None."""
    user = event.get("responded_by_user") or {}
    name = user.get("name") if isinstance(user, dict) else getattr(user, "name", None)
    return str(name) if name else None


def airflow_person(username: str, *, full_name: str | None = None, may_decide: bool = True):
    """The Airflow user as the :class:`~transforms.catalogue.Person` who decides.

    The identifier is the Airflow username: the provider's subject when Airflow signs people in
    through the identity provider (docs/identity.md), the same identifier the CLI and the archive's
    pages record. The name is the user's full name when Airflow knows one, else the username. The
    person holds the archivist role only when Airflow lets them decide (edit access to the system's
    DAG, which answering in *Required actions* needs too); otherwise ``quarantine.decide`` refuses.
    """
    from transforms.catalogue import Person

    username = str(username).strip()
    if not username:
        raise ValueError("the Airflow answer names no user")
    return Person(id=username[:300], name=((full_name or "").strip() or username)[:200],
                  roles=("archivist",) if may_decide else ())


# --- steps run through steps.run (settings first, failures mapped to their kind) ------------------

def _case(settings, case_id: str):
    from transforms.pipeline import catalogue
    from transforms.quality.quarantine import get_case

    return get_case(catalogue(settings), case_id)


def _decide(settings, case_id: str, approve: bool, by, justification: str) -> str:
    """Write an answer given in Airflow to the catalogue; ``decided`` or ``already`` (decided elsewhere first)."""
    from transforms.pipeline import catalogue
    from transforms.quality import quarantine as review

    cat = catalogue(settings)
    if by.name == by.id:  # Airflow's answer carries the username (the subject), not the person's name
        from dataclasses import replace

        by = replace(by, name=(cat.person_name(by.id) or by.name)[:200])
    try:
        review.decide(cat, case_id, approve=approve, by=by, justification=justification, via="airflow")
    except ValueError:
        if review.case_status(catalogue(settings), case_id) in ("approved", "rejected"):
            return "already"
        raise
    return "decided"


def case_status_now(case_id: str) -> str | None:
    """The case's status in the catalogue this process's ``ARKIV_*`` settings name (for the trigger)."""
    from transforms.catalogue import Catalogue
    from transforms.config.settings import Settings
    from transforms.quality.quarantine import case_status

    cat = Catalogue(Settings.from_env().ensure().catalogue_url)
    try:
        return case_status(cat, case_id)
    finally:
        cat.dispose()


class DecisionTrigger(BaseTrigger):
    """Fires when the case is decided in the catalogue, when the HITL request is answered, or at the deadline."""

    def __init__(self, *, ti_id: Any, case_id: str, deadline: str, poke_interval: float = 60.0):
        super().__init__()
        self.ti_id, self.case_id, self.deadline, self.poke_interval = ti_id, case_id, deadline, poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("arkivflode_airflow.hitl.DecisionTrigger",
                {"ti_id": self.ti_id, "case_id": self.case_id, "deadline": self.deadline,
                 "poke_interval": self.poke_interval})

    def _event(self, **payload: Any) -> TriggerEvent:
        return TriggerEvent({**payload, "case_id": self.case_id, "deadline": self.deadline})

    async def _hitl_answer(self) -> dict | None:
        from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail
        from asgiref.sync import sync_to_async

        try:
            resp = await sync_to_async(get_hitl_detail_content_detail)(ti_id=self.ti_id)
        except Exception as exc:  # no request (yet); the catalogue is watched all the same
            self.log.debug("no HITL detail for %s (%s)", self.ti_id, type(exc).__name__)
            return None
        # (``airflow dags test`` runs the trigger in its own process, which cannot read HITL answers:
        # there the decision is made on the page or in the CLI, and the catalogue is what wakes the task)
        if resp is None or not (getattr(resp, "response_received", False) and resp.chosen_options):
            return None
        user = resp.responded_by_user
        return {"source": "airflow", "chosen_options": list(resp.chosen_options),
                "params_input": dict(resp.params_input or {}), "responded_at": resp.responded_at,
                "responded_by_user": {"id": user.id, "name": user.name} if user else None}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = dt.datetime.fromisoformat(self.deadline)
        while True:
            answer = await self._hitl_answer()
            if answer:
                yield self._event(**answer)
                return
            try:
                status = await asyncio.to_thread(case_status_now, self.case_id)
            except Exception as exc:  # a catalogue that does not answer now may answer at the next look
                self.log.warning("catalogue not read for case %s (%s); looking again", self.case_id,
                                 type(exc).__name__)
                status = "open"
            if status != "open":
                yield self._event(source="catalogue", status=status)
                return
            if _utcnow() >= deadline:
                yield self._event(source="timeout")
                return
            await asyncio.sleep(self.poke_interval)


class AwaitDecision(BaseOperator):
    """Wait for an archivist's decision on a quarantined batch (no wait when its gate passed).

    ``batch`` is the extract task's output. Returns ``{**batch, "decision": state}`` where
    state is :func:`transforms.pipeline.await_decision`'s (``passed`` or ``approved``).
    """

    template_fields = ("batch",)
    ui_color = "#f9a825"

    def __init__(self, *, system: str, batch: Any, poke_interval: float, timeout: float, **kwargs):
        super().__init__(**kwargs)
        self.system, self.batch = system, batch
        self.poke_interval, self.decision_timeout = float(poke_interval), float(timeout)

    # -- the catalogue's state ------------------------------------------------------------------

    def _state(self, context) -> dict:
        from arkivflode_airflow import steps
        from transforms import pipeline

        steps.skip_unless_extracted(self.batch)
        try:
            return steps.run(pipeline.await_decision, self.system, self.batch["manifest"], self.batch["batch"])
        except steps.StateFailure:
            steps.skip_when_gate_failed(context)
            raise

    def _done(self, state: dict) -> dict:
        return {**self.batch, "decision": state}

    # -- the HITL request ------------------------------------------------------------------------

    def _ask(self, context, case_id: str) -> None:
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        from arkivflode_airflow import steps
        from arkivflode_airflow.alerts import period_of, ui_base

        case = steps.run(_case, case_id)
        subject, body = request_text(case, self.system, period_of(context), ui_base())
        upsert_hitl_detail(ti_id=context["task_instance"].id, options=OPTIONS, subject=subject, body=body,
                           defaults=None, multiple=False, params=_params())

    def _mark_answered(self, context, case_id: str) -> None:
        """Show the catalogue's decision (made on the page or in the CLI) as the HITL request's answer."""
        from airflow.sdk.execution_time.hitl import update_hitl_detail_response

        from arkivflode_airflow import steps

        case = steps.run(_case, case_id)
        if case is None or case.status == "open":
            return
        try:
            update_hitl_detail_response(
                ti_id=context["task_instance"].id, chosen_options=[APPROVE if case.status == "approved" else REJECT],
                params_input={JUSTIFICATION: f"{case.justification} — {case.decided_by}", CONFIRM: True})
        except Exception as exc:  # already answered in Airflow, or no request was made: nothing to show
            log.info("HITL request not marked answered (%s)", type(exc).__name__)

    def _wait(self, context, case_id: str, deadline: dt.datetime):
        self._ask(context, case_id)
        log.info("quarantine case %s awaits an archivist's decision (Airflow's Required actions, the Arkivflöde "
                 "page or `arkiv quarantine`), until %s", case_id, f"{deadline:%Y-%m-%d %H:%M} UTC")
        self.defer(trigger=DecisionTrigger(ti_id=context["task_instance"].id, case_id=case_id,
                                           deadline=deadline.isoformat(), poke_interval=self.poke_interval),
                   method_name="resume", kwargs={"case_id": case_id, "deadline": deadline.isoformat()},
                   timeout=deadline - _utcnow() + TIMEOUT_MARGIN)

    def execute(self, context):
        state = self._state(context)
        if state["state"] != "waiting":
            return self._done(state)
        return self._wait(context, state["case"], _utcnow() + dt.timedelta(seconds=self.decision_timeout))

    def resume(self, context, event: dict | None = None, case_id: str | None = None, deadline: str | None = None):
        from arkivflode_airflow import steps

        event = dict(event or {})
        case_id = case_id or event.get("case_id")
        deadline_at = dt.datetime.fromisoformat(deadline or event.get("deadline") or _utcnow().isoformat())
        if event.get("source") == "timeout":
            raise steps.ContentFailure(
                f"CONTENT PROBLEM — no archivist decision on the quarantined batch in time (case {case_id}, waited "
                f"until {deadline_at:%Y-%m-%d %H:%M} UTC); the case stays open: decide it (Airflow's Required "
                "actions, `arkiv quarantine approve|reject` or the Arkivflöde page), then clear this task")
        if "chosen_options" in event:  # answered in Airflow's Required actions
            problem = answer_problem(event)
            who = responder(event)
            if problem is None and not who:
                problem = "the answer names no signed-in user"
            if problem is not None:
                log.warning("the answer in Airflow decides nothing: %s; asking again", problem)
                if _utcnow() >= deadline_at:
                    raise steps.ContentFailure(f"CONTENT PROBLEM — no valid archivist decision in time: {problem}")
                return self._wait(context, case_id, deadline_at)
            approve = event["chosen_options"][0] == APPROVE
            # Airflow took the answer only from a user who may edit the DAG's human-in-the-loop details
            outcome = steps.run(_decide, case_id, approve, airflow_person(who),
                                str(event["params_input"][JUSTIFICATION]).strip())
            log.info("quarantine case %s %s by %s in Airflow's Required actions%s", case_id,
                     "approved with deviation" if approve else "rejected", who,
                     "" if outcome == "decided" else " — but it had already been decided elsewhere; that decision "
                                                     "stands")
        elif case_id:  # decided on the page or in the CLI: Airflow's list shows that decision as the answer
            self._mark_answered(context, case_id)
        state = self._state(context)  # approved → go on; rejected → fails here as a content problem
        if state["state"] == "waiting":  # woken without a decision (e.g. the request was answered then cleared)
            return self._wait(context, state["case"], deadline_at)
        return self._done(state)
