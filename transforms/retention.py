"""Retention arithmetic: when a record class's rule falls due (ISO 8601 periods on dates)."""

from __future__ import annotations

import calendar
import datetime as dt
import re

_PERIOD = re.compile(r"^P(?:(?P<y>\d+)Y)?(?:(?P<m>\d+)M)?(?:(?P<d>\d+)D)?$")


def add_period(start: dt.date, period: str) -> dt.date:
    """``start`` plus an ISO 8601 period of years, months and days (``P10Y``, ``P1Y6M``, ``P30D``).

    Months are calendar months; a day that does not exist in the target month (31 May + P1M)
    becomes that month's last day, as archivists count "one month later".
    """
    m = _PERIOD.match(period)
    if not m or period == "P":
        raise ValueError(f"not an ISO 8601 period of years, months and days: {period!r}")
    years, months, days = (int(m[k] or 0) for k in ("y", "m", "d"))
    total = start.year * 12 + (start.month - 1) + years * 12 + months
    year, month = divmod(total, 12)
    day = min(start.day, calendar.monthrange(year, month + 1)[1])
    return dt.date(year, month + 1, day) + dt.timedelta(days=days)
