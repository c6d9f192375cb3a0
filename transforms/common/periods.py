"""Retention periods: ISO 8601 periods of years, months and days added to dates.

Its own small module because the system configuration checks every retention period when a
YAML is loaded (at DAG parse time), which must not import the retention code and its catalogue.
"""

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
    try:
        day = min(start.day, calendar.monthrange(year, month + 1)[1])
        return dt.date(year, month + 1, day) + dt.timedelta(days=days)
    except (ValueError, OverflowError):
        raise ValueError(f"{start.isoformat()} + {period} is past the last date a calendar can hold (9999-12-31); "
                         "a retention period this long means keep, not dispose") from None
