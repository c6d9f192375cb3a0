import datetime as dt

import pytest

from transforms.common.periods import add_period


@pytest.mark.parametrize("start, period, due", [
    (dt.date(2025, 3, 14), "P10Y", dt.date(2035, 3, 14)),
    (dt.date(2024, 2, 29), "P1Y", dt.date(2025, 2, 28)),   # no 29 February: the month's last day
    (dt.date(2025, 5, 31), "P1M", dt.date(2025, 6, 30)),
    (dt.date(2025, 12, 31), "P2M", dt.date(2026, 2, 28)),
    (dt.date(2025, 1, 1), "P1Y6M10D", dt.date(2026, 7, 11)),
    (dt.date(2025, 1, 1), "P0D", dt.date(2025, 1, 1)),
])
def test_add_period(start, period, due):
    assert add_period(start, period) == due


@pytest.mark.parametrize("bad", ["P", "10Y", "P1W", "PT5H", "P-1Y", ""])
def test_bad_periods(bad):
    with pytest.raises(ValueError):
        add_period(dt.date(2025, 1, 1), bad)
