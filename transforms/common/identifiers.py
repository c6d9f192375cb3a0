"""Swedish identity numbers: personnummer, samordningsnummer and organisationsnummer.

A personnummer is ``YYYYMMDD-NNNC`` (or the 10-digit ``YYMMDD-NNNC``); ``C`` is a Luhn
check digit over the ten digits ``YYMMDDNNN``. The separator becomes ``+`` in the year a
person turns 100. A samordningsnummer adds 60 to the day. An organisationsnummer is
``NNNNNN-NNNC`` with the same Luhn digit and a third digit of at least 2.
"""

from __future__ import annotations

import datetime as dt
import re

_PNR = re.compile(r"^(?P<century>\d{2})?(?P<yy>\d{2})(?P<mm>\d{2})(?P<dd>\d{2})(?P<sep>[-+]?)(?P<nnn>\d{3})(?P<c>\d)$")
_ORGNR = re.compile(r"^(?:16)?(?P<digits>\d{6})-?(?P<rest>\d{4})$")


def luhn_digit(digits: str) -> int:
    """The Luhn check digit for a string of digits (weights 2,1,2,1,… from the left)."""
    total = 0
    for i, ch in enumerate(digits):
        n = int(ch) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return (10 - total % 10) % 10


def is_valid_personnummer(value: object, *, allow_samordningsnummer: bool = True) -> bool:
    """True for a well-formed personnummer (or samordningsnummer) with a valid date and check digit."""
    if not isinstance(value, str):
        return False
    m = _PNR.match(value.strip())
    if not m:
        return False
    day = int(m["dd"])
    if day > 60:
        if not allow_samordningsnummer:
            return False
        day -= 60
    century = m["century"]
    if century:
        year = int(century + m["yy"])
        # A 12-digit number carries its century, so "+" (100 or older) must agree with it.
        if m["sep"] == "+" and year > dt.date.today().year - 100:
            return False
    else:
        year = 2000  # century unknown: any leap year accepts 29 February, as the number may
    if not _valid_date(year, int(m["mm"]), day):
        return False
    return luhn_digit(m["yy"] + m["mm"] + m["dd"] + m["nnn"]) == int(m["c"])


def _valid_date(year: int, month: int, day: int) -> bool:
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def is_valid_organisationsnummer(value: object) -> bool:
    """True for ``NNNNNN-NNNC`` (optionally with the ``16`` prefix) with a valid Luhn digit."""
    if not isinstance(value, str):
        return False
    m = _ORGNR.match(value.strip())
    if not m:
        return False
    digits = m["digits"] + m["rest"]
    if int(digits[2]) < 2:
        return False
    return luhn_digit(digits[:9]) == int(digits[9])


def make_personnummer(birth: dt.date, serial: int, *, samordning: bool = False, today: dt.date | None = None) -> str:
    """Build a valid 12-digit personnummer ``YYYYMMDD-NNNC`` (``+`` when 100 or older)."""
    day = birth.day + (60 if samordning else 0)
    nnn = f"{serial % 1000:03d}"
    body = f"{birth:%y%m}{day:02d}{nnn}"
    check = luhn_digit(body)
    today = today or dt.date.today()
    sep = "+" if (today.year - birth.year) >= 100 else "-"
    return f"{birth.year:04d}{birth.month:02d}{day:02d}{sep}{nnn}{check}"


def make_organisationsnummer(seed9: str) -> str:
    """Complete nine digits (third digit ≥ 2) with a Luhn digit: ``NNNNNN-NNNC``."""
    if len(seed9) != 9 or not seed9.isdigit() or int(seed9[2]) < 2:
        raise ValueError("need nine digits whose third digit is at least 2")
    return f"{seed9[:6]}-{seed9[6:]}{luhn_digit(seed9)}"


def mask_personnummer(value: str) -> str:
    """Mask a personnummer for reports: keep the century only (``19XXXXXX-XXXX``)."""
    v = value.strip() if isinstance(value, str) else ""
    century = v[:2] if len(v) >= 12 and v[:2].isdigit() else ""
    return f"{century}XXXXXX-XXXX" if century else "XXXXXX-XXXX"
