"""A source system's schedule whose run IDs name the period each run archives.

The same data intervals as Airflow's ``CronDataIntervalTimetable`` (a cron schedule in the
system's time zone, each interval from one tick to the next); only the run ID differs: the
period, in the system's own time zone and named as batches are (``2025``, ``2025-12``,
``2025-12-31``), goes between the run type and the time, so Airflow's run lists, grid and links
read ``scheduled__period-2025__2026-01-01T01:00:00+00:00`` rather than a UTC time alone. Airflow
asks the timetable for the ID of scheduled runs, runs triggered in the UI or through the API
without an ID of their own, and backfill runs.

Registered with Airflow by plugins/arkivflode_plugin.py (a timetable that is not built in must
be, for the scheduler to read it back).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from airflow.timetables.interval import CronDataIntervalTimetable


def period_of(start: dt.datetime, end: dt.datetime, timezone: Any) -> str:
    """The period label of an interval (``2025``, ``2025-03``, ``2025-03-14`` or ``start--end``), read in
    ``timezone``."""
    from transforms.staging.batch import period_label

    name = getattr(timezone, "name", None) or str(timezone)
    zone = dt.UTC if name.upper() == "UTC" else ZoneInfo(name)
    return period_label(start.astimezone(zone).replace(tzinfo=None), end.astimezone(zone).replace(tzinfo=None))


class PeriodTimetable(CronDataIntervalTimetable):
    """``CronDataIntervalTimetable`` whose run IDs carry the period: ``<type>__period-<label>__<run after>``."""

    description_prefix = "period"

    def generate_run_id(self, *, run_type, run_after, data_interval, **extra) -> str:
        run_id = super().generate_run_id(run_type=run_type, run_after=run_after, data_interval=data_interval,
                                         **extra)
        if data_interval is None or data_interval.end <= data_interval.start:
            return run_id
        kind, sep, rest = run_id.partition("__")
        if not sep:
            return run_id
        return f"{kind}__period-{period_of(data_interval.start, data_interval.end, self._timezone)}__{rest}"
