"""Airflow listeners: each DAG run says which period it archives.

When the scheduler starts a DAG run (scheduled, triggered by hand or by a backfill), the run gets
a note naming its period in the system's own time zone — ``lex · period 2025`` — unless
someone already wrote a note. Airflow's run lists show the note beside the run, so nobody has
to work out from a UTC "run after" time which year or month a run archives.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from zoneinfo import ZoneInfo

from airflow.listeners import hookimpl

log = logging.getLogger("arkivflode.listeners")


def _system_timezone(dag_id: str) -> tuple[str, bool]:
    """The time zone of the system a DAG archives, and whether it is a source system's DAG."""
    from transforms.config.settings import Settings

    try:
        folder = Settings.from_env().systems_dir
    except Exception:  # no Arkivflöde settings in this process: Airflow's default zone
        folder = None
    path = Path(folder) / f"{dag_id}.yaml" if folder else None
    if path is not None and path.is_file():
        from transforms.config.systems import load_system

        return load_system(path).timezone, True
    try:
        from airflow.configuration import conf

        return conf.get("core", "default_timezone", fallback="UTC") or "UTC", False
    except Exception:
        return os.environ.get("TZ") or "UTC", False


def _local(value: dt.datetime, tz: str) -> dt.datetime:
    zone = dt.UTC if tz.lower() in ("utc", "system", "") else ZoneInfo(tz)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(zone).replace(tzinfo=None)


def run_note(dag_id: str, start: dt.datetime | None, end: dt.datetime | None) -> str | None:
    """``<system> · period <label>`` for a run's data interval (label as batches are named), or None."""
    from transforms.staging.batch import period_label

    if start is None or end is None or end <= start:
        return None
    tz, is_system = _system_timezone(dag_id)
    period = period_label(_local(start, tz), _local(end, tz))
    return f"{dag_id} · period {period}" + ("" if is_system else f" ({tz})")


@hookimpl
def on_dag_run_running(dag_run, msg: str):
    """Write the period into the run's note when the run starts (an existing note is kept)."""
    try:
        if dag_run.note:
            return
        note = run_note(dag_run.dag_id, dag_run.data_interval_start, dag_run.data_interval_end)
        if note:
            dag_run.note = note  # saved with the scheduler's own transaction
    except Exception as exc:  # a note is a help, never a reason for a run not to start
        log.warning("no period note for %s (%s)", getattr(dag_run, "run_id", "?"), type(exc).__name__)
