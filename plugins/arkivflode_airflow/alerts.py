"""Alerts for IT operations: every failed task says whether it is a content problem or a system error.

Always a structured log line (JSON on the ``arkivflode.alerts`` logger, which any log shipper
can route); and, when ``ARKIV_ALERT_EMAIL`` names recipients, an e-mail through Airflow's SMTP
notifier (configured with the ``smtp_default`` connection). Content problems go to the
archivists and the system owner; system errors to IT operations, who can rerun or clear.
"""

from __future__ import annotations

import json
import logging
import os

log = logging.getLogger("arkivflode.alerts")


def classify(exception: BaseException | None) -> str:
    """``content`` (bad data; not retried) or ``system`` (infrastructure; retried) — from the message we raise."""
    text = str(exception or "")
    if text.startswith(("CONTENT PROBLEM", "CONFIGURATION PROBLEM", "FIXITY FAILURE")):
        return "content" if not text.startswith("FIXITY") else "fixity"
    return "system"


def _safe(text: str) -> str:
    from transforms.masking import safe_line

    return safe_line(text)


def alert_line(context: dict) -> dict:
    ti = context.get("task_instance") or context.get("ti")
    exc = context.get("exception")
    kind = classify(exc)
    if getattr(ti, "task_id", None) == "await_decision" and type(exc).__name__ == "AirflowSensorTimeout":
        # Nobody decided on a quarantined batch in time: the archivists must act, not IT.
        kind = "content"
        exc = f"CONTENT PROBLEM — no archivist decision on the quarantined batch in time ({exc}); the case " \
              "stays open: decide it (`arkiv quarantine approve|reject` or the Arkivflöde page), then clear this task"
    return {
        "event": "arkivflode.task_failed", "kind": kind,
        "dag_id": getattr(ti, "dag_id", None), "task_id": getattr(ti, "task_id", None),
        "run_id": getattr(ti, "run_id", None), "map_index": getattr(ti, "map_index", None),
        "try_number": getattr(ti, "try_number", None),
        # the message names batches, packages, rules and counts — never record content; a delivery's
        # file name in it is escaped and anything shaped like a personnummer masked all the same
        "message": _safe(str(exc or ""))[:2000],
        "who_acts": {"content": "archivist / system owner", "fixity": "IT operations + archivist",
                     "system": "IT operations"}[kind],
    }


def on_failure(context: dict) -> None:
    """Task failure callback: log a structured line, and e-mail when recipients are configured."""
    line = alert_line(context)
    log.error(json.dumps(line, ensure_ascii=False))
    recipients = os.environ.get("ARKIV_ALERT_EMAIL")
    if not recipients:
        return
    try:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        subject = f"[Arkivflöde] {line['kind']} failure in {line['dag_id']}.{line['task_id']}"
        SmtpNotifier(to=recipients, subject=subject,
                     html_content=f"<pre>{json.dumps(line, ensure_ascii=False, indent=2)}</pre>").notify(context)
    except Exception as exc:  # an unreachable mail server must not hide the original failure
        log.error(json.dumps({"event": "arkivflode.alert_not_sent", "reason": type(exc).__name__}))
