"""Alerts: every failed task says what kind of problem it is and who acts on it, where they look.

Always one structured log line (JSON on the ``arkivflode.alerts`` logger, which any log shipper
can route); and, where configured, an e-mail and a webhook POST through Airflow notifiers
(``notifiers.py``; docs/operations.md, "Alerts"). The kinds and who acts:

- ``content`` (a batch failed its gate, a delivery or package is invalid): the archivists;
- ``system`` (infrastructure, and configuration: a bad YAML or a missing variable): IT operations;
- ``delivery_missing`` (the period's export never arrived): the system owner;
- ``fixity`` (a stored package no longer matches its checksums): IT operations and archivists.

Every text goes through ``masking.safe_line``: an alert names the system, the period, the
rule and counts, and links to the run and the quarantine case — never a record's value.
"""

from __future__ import annotations

import json
import logging
import os
import re
from urllib.parse import quote, urlencode

log = logging.getLogger("arkivflode.alerts")

WHO_ACTS = {
    "content": "archivists",
    "system": "IT operations",
    "delivery_missing": "system owner",
    "fixity": "IT operations and archivists",
}
#: the page the API server mounts for the archivists (ui.py)
PAGE = "/arkiv"


def classify(exception: BaseException | str | None) -> str:
    """The kind of a failure, from the exception our task glue (steps.py) raises: its ``kind`` when it
    carries one, else the prefix of its message."""
    if getattr(exception, "kind", None) in WHO_ACTS:
        return exception.kind
    text = str(exception or "")
    name = type(exception).__name__ if isinstance(exception, BaseException) else ""
    if text.startswith("CONTENT PROBLEM"):
        return "content"
    if text.startswith("FIXITY FAILURE"):
        return "fixity"
    if text.startswith(("DELIVERY MISSING", "DeliveryMissing")) or name == "DeliveryMissing":
        return "delivery_missing"
    # CONFIGURATION PROBLEM and STATE PROBLEM are IT's too: a YAML or a variable to fix, a task to rerun
    return "system"


def _safe(text: str) -> str:
    from transforms.common.masking import safe_line

    return safe_line(text)


def ui_base() -> str:
    """The Airflow UI's address as links should show it (``[api] base_url``)."""
    try:
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback="") or ""
    except Exception:  # no Airflow configuration here: links still read right on the default port
        base = ""
    return (base or "http://localhost:8080").rstrip("/")


def period_of(context: dict) -> str | None:
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        return None
    from transforms.staging.batch import period_label

    return period_label(start, end)


def system_of(context: dict, dag_id: str | None) -> str | None:
    """The source system a DAG archives (its id), or None for the shared DAGs (retention, fixity)."""
    dag = context.get("dag")
    tags = set(getattr(dag, "tags", None) or ())
    if dag is not None and "source-system" not in tags:
        return None
    return dag_id


def run_url(base: str, ti) -> str | None:
    dag_id, run_id, task_id = (getattr(ti, a, None) for a in ("dag_id", "run_id", "task_id"))
    if not dag_id or not run_id:
        return None
    url = f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    if task_id:
        url += f"/tasks/{quote(task_id, safe='')}"
        map_index = getattr(ti, "map_index", None)
        if isinstance(map_index, int) and map_index >= 0:
            url += f"/mapped/{map_index}"
    return url


def open_case_ids(system: str, period: str) -> list[str]:
    """The open quarantine cases of the batch, when the catalogue is configured here."""
    if not (os.environ.get("ARKIV_CATALOGUE_URL") or os.environ.get("ARKIV_HOME")):
        return []
    from transforms.config.settings import Settings
    from transforms.pipeline import catalogue
    from transforms.quality.quarantine_page import CaseFilter, list_cases

    cases = list_cases(catalogue(Settings.from_env()), CaseFilter(system=system, status="open"))
    return [c.id for c in cases if c.batch_id == f"{system}/{period}"]


def case_url(base: str, system: str | None, period: str | None, kind: str) -> str | None:
    """The quarantine case on the Arkivflöde page; the system's open cases when it is not known."""
    if kind != "content" or not system:
        return None
    ids: list[str] = []
    if period:
        try:
            ids = open_case_ids(system, period)
        except Exception as exc:  # an unreachable catalogue must not stop the alert: link the list
            log.warning("quarantine case not looked up for the alert (%s)", type(exc).__name__)
    if len(ids) == 1:
        return f"{base}{PAGE}/case?{urlencode({'id': ids[0]})}"
    return f"{base}{PAGE}/?{urlencode({'system': system, 'status': 'open'})}"


def alert_line(context: dict) -> dict:
    ti = context.get("task_instance") or context.get("ti")
    exc = context.get("exception")
    kind = classify(exc)
    task_id = getattr(ti, "task_id", None)
    if type(exc).__name__ == "TaskDeferralTimeout" and task_id == "await_decision":
        # The wait's own trigger reports a missed deadline as a content problem before this fires; Airflow's
        # deferral timeout means no triggerer looked after the wait: IT's to fix (the case stays open).
        kind = "system"
        exc = f"SYSTEM PROBLEM — the wait for an archivist's decision was not looked after ({exc}); is the " \
              "triggerer running? The quarantine case stays open; start the triggerer, then clear this task"
    if type(exc).__name__ == "AirflowSensorTimeout":
        if task_id == "await_decision":
            # Nobody decided on a quarantined batch in time: the archivists must act, not IT.
            kind = "content"
            exc = f"CONTENT PROBLEM — no archivist decision on the quarantined batch in time ({exc}); the " \
                  "case stays open: decide it (`arkiv quarantine approve|reject` or the Arkivflöde page), " \
                  "then clear this task"
        elif "delivery" in (task_id or ""):
            kind = "delivery_missing"
            exc = f"DELIVERY MISSING — the period's export did not arrive before the deadline ({exc}); the " \
                  "system owner exports it into the inbox, then this task is cleared"
    dag_id = getattr(ti, "dag_id", None)
    system = system_of(context, dag_id)
    period = period_of(context)
    base = ui_base()
    return {
        "event": "arkivflode.task_failed", "kind": kind, "who_acts": WHO_ACTS[kind],
        "system": system, "period": period,
        "dag_id": dag_id, "task_id": task_id,
        "run_id": getattr(ti, "run_id", None), "map_index": getattr(ti, "map_index", None),
        "try_number": getattr(ti, "try_number", None),
        # the message names batches, packages, rules and counts — never record content; a delivery's
        # file name in it is escaped and anything shaped like a personnummer masked all the same
        "message": _safe(str(exc or ""))[:2000],
        "run_url": run_url(base, ti),
        "case_url": case_url(base, system, period, kind),
    }


def on_failure(context: dict) -> None:
    """Task failure callback: log a structured line, then send it to every configured channel."""
    from arkivflode_airflow.notifiers import notifiers_for

    try:
        line = alert_line(context)
    except Exception as exc:  # the alert must go out even when a link or the period cannot be worked out
        kind = classify(context.get("exception"))
        line = {"event": "arkivflode.task_failed", "kind": kind, "who_acts": WHO_ACTS[kind],
                "message": str(context.get("exception") or "")[:2000], "alert_incomplete": type(exc).__name__}
    line = {k: _safe(v) if isinstance(v, str) else v for k, v in line.items()}
    log.error(json.dumps(line, ensure_ascii=False))
    try:
        channels = notifiers_for(line)
    except Exception as exc:
        channels = []
        log.error(json.dumps({"event": "arkivflode.alert_not_sent", "channel": "setup",
                              "reason": type(exc).__name__}))
    for channel, notifier in channels:
        try:
            # notify(), not the notifier's __call__: our text is finished and must not be rendered
            # as a Jinja template (a brace in a message is text, not an expression)
            notifier.notify(context)
        except Exception as exc:  # an unreachable mail server must not hide the original failure
            log.error(json.dumps({"event": "arkivflode.alert_not_sent", "channel": channel,
                                  "reason": type(exc).__name__}))


def apply_namespace_levels(value: str | None = None) -> dict[str, int]:
    """Airflow's ``[logging] namespace_levels`` for the standard library's loggers as well.

    In a task process Airflow 3.3 applies those levels to its own structured loggers only; a
    library that logs through ``logging`` (Great Expectations logs some two hundred INFO lines
    while it imports) still reaches the task log at the root level. Every DAG file imports this
    module (the failure callback), so the levels hold in each task process before its task runs.
    """
    if value is None:
        value = os.environ.get("AIRFLOW__LOGGING__NAMESPACE_LEVELS")
    if value is None:
        try:
            from airflow.configuration import conf

            value = conf.get("logging", "namespace_levels", fallback="") or ""
        except Exception:  # no Airflow configuration here: nothing to apply
            value = ""
    applied = {}
    for entry in re.split(r"[\s,]+", value.strip()):
        name, sep, level = entry.partition("=")
        number = logging.getLevelName(level.strip().upper()) if sep else None
        if name.strip() and isinstance(number, int):
            logging.getLogger(name.strip()).setLevel(number)
            applied[name.strip()] = number
    if applied:
        # a library may set a level of its own on a child logger when it is imported (GX does):
        # the root's handlers filter by namespace as well, whatever the child says
        for handler in logging.getLogger().handlers:
            present = next((f for f in handler.filters if isinstance(f, _NamespaceFilter)), None)
            if present is None:
                handler.addFilter(_NamespaceFilter(applied))
            else:
                present.levels.update(applied)
    return applied


class _NamespaceFilter(logging.Filter):
    def __init__(self, levels: dict[str, int]):
        super().__init__()
        self.levels = dict(levels)

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        while name:
            if name in self.levels:
                return record.levelno >= self.levels[name]
            name = name.rpartition(".")[0]
        return True


apply_namespace_levels()
