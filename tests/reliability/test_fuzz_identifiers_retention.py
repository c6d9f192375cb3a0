"""Property-based tests of personnummer/organisationsnummer validation and the retention date arithmetic.

The quality gate's expectations (expectations/custom.py) call
``transforms.common.identifiers.is_valid_personnummer``/``is_valid_organisationsnummer`` on every
value of a column, and the retention schedule dates every record with
``transforms.common.periods.add_period``. Both see whatever a source system delivers, so: any input
gives a clear answer (a bool, a date or a ValueError), and the answers obey the rules.
"""

from __future__ import annotations

import datetime as dt

from fault_support import FUZZ
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.common.identifiers import (
    is_valid_organisationsnummer,
    is_valid_personnummer,
    luhn_digit,
    make_organisationsnummer,
    make_personnummer,
)
from transforms.common.periods import add_period

FAST = settings(max_examples=400, deadline=200)
TODAY = dt.date(2026, 6, 1)
BIRTH = st.dates(min_value=dt.date(1900, 1, 1), max_value=TODAY)
NUMBERISH = st.one_of(
    st.text(max_size=20),
    st.text(alphabet="0123456789-+ ", max_size=16),
    st.from_regex(r"\A(19|20)?\d{6}[-+]?\d{4}\Z"),
    st.integers(), st.none(), st.floats(), st.binary(max_size=12),
)


@FAST
@given(value=NUMBERISH)
def test_any_value_gets_a_yes_or_no(value):
    FUZZ["identifiers: arbitrary values"] += 1
    assert is_valid_personnummer(value) in (True, False)
    assert is_valid_organisationsnummer(value) in (True, False)


@FAST
@given(birth=BIRTH, serial=st.integers(0, 999), samordning=st.booleans())
def test_generated_personnummer_are_valid_in_every_written_form(birth, serial, samordning):
    FUZZ["identifiers: personnummer forms"] += 1
    pnr = make_personnummer(birth, serial, samordning=samordning, today=TODAY)
    short = pnr[2:]  # YYMMDD-NNNC
    digits = pnr.replace("-", "").replace("+", "")
    assert is_valid_personnummer(pnr) and is_valid_personnummer(short) and is_valid_personnummer(digits)
    assert is_valid_personnummer(f"  {pnr} ")
    assert is_valid_personnummer(pnr, allow_samordningsnummer=False) is not samordning


@FAST
@given(birth=BIRTH, serial=st.integers(0, 999), position=st.integers(0, 11), delta=st.integers(1, 9))
def test_one_wrong_digit_is_always_caught(birth, serial, position, delta):
    """The Luhn digit catches every single-digit error (the date may also become impossible)."""
    FUZZ["identifiers: single-digit errors"] += 1
    digits = make_personnummer(birth, serial, today=TODAY).replace("-", "").replace("+", "")
    if position < 2:  # the century is not covered by the check digit: it only has to form a real date
        return
    changed = digits[:position] + str((int(digits[position]) + delta) % 10) + digits[position + 1:]
    assert not is_valid_personnummer(changed)


@FAST
@given(seed=st.from_regex(r"\A\d\d[2-9]\d{6}\Z"), prefix=st.booleans(), dash=st.booleans(),
       wrong=st.integers(1, 9))
def test_organisationsnummer_check_digit_and_forms(seed, prefix, dash, wrong):
    FUZZ["identifiers: organisationsnummer"] += 1
    orgnr = make_organisationsnummer(seed)
    body = orgnr if dash else orgnr.replace("-", "")
    assert is_valid_organisationsnummer(("16" if prefix else "") + body)
    bad = orgnr[:-1] + str((int(orgnr[-1]) + wrong) % 10)
    assert not is_valid_organisationsnummer(bad)
    assert luhn_digit(seed) == int(orgnr[-1])


# --- retention date arithmetic -------------------------------------------------------------------------

PERIOD = st.builds(lambda y, m, d: "P" + (f"{y}Y" if y else "") + (f"{m}M" if m else "") + (f"{d}D" if d else ""),
                   st.integers(0, 200), st.integers(0, 400), st.integers(0, 4000)).filter(lambda p: p != "P")
START = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2200, 12, 31))


@FAST
@given(start=START, period=PERIOD)
def test_a_period_never_ends_before_it_starts_and_days_are_exact(start, period):
    FUZZ["retention: add_period"] += 1
    due = add_period(start, period)
    assert due >= start
    if period.endswith("D") and "Y" not in period and "M" not in period:
        assert (due - start).days == int(period[1:-1])


@FAST
@given(start=START, years=st.integers(0, 100), months=st.integers(0, 24))
def test_years_are_twelve_months_and_months_are_monotonic(start, years, months):
    FUZZ["retention: years and months"] += 1
    assert add_period(start, f"P{years}Y") == add_period(start, f"P{years * 12}M") if years else True
    one_more = add_period(start, f"P{months + 1}M")
    assert one_more > add_period(start, f"P{months}M") if months else one_more > start
    # a month later keeps the day of the month, or the last day of a shorter month
    target = add_period(start, f"P{months + 1}M")
    assert target.day == start.day or (target.day < start.day and (target + dt.timedelta(days=1)).day == 1)


@FAST
@given(text=st.one_of(st.text(max_size=12), st.from_regex(r"\AP\d{0,12}[YMDW]?\d{0,12}[YMD]?\Z")))
def test_any_period_text_gives_a_date_or_a_value_error(text):
    FUZZ["retention: arbitrary period text"] += 1
    try:
        due = add_period(dt.date(2025, 6, 30), text)
    except ValueError:
        return
    assert isinstance(due, dt.date)
