"""Masking of sensitive values before they reach a page, a report or a log.

Two tools, used together wherever a value from a record could be shown:

* :func:`mask` hides a value of a column marked ``sensitive`` in the system YAML. A
  personnummer or samordningsnummer keeps its shape and nothing else (``19XXXXXX-XXXX``:
  an archivist can see *that* it is a personnummer, and that it is malformed, without
  learning whose); anything else is replaced by its length.
* :func:`scrub` is the last guard over any text: whatever looks like a personnummer
  (ten or twelve digits, with or without a separator) is masked even in a column nobody
  marked sensitive — a free-text title can quote one.

:func:`safe_name` is for names that come from a delivery (file and member names, headers):
they are not record values, but they are chosen by whoever made the delivery, so a newline
or another control character in one must not be able to forge a log line or a report row.
"""

from __future__ import annotations

import re

#: ten or twelve digits: date part, then the last four after nothing, a space, or a dash of any kind
#: or a plus (spaces around it allowed); not part of a longer number
PERSONNUMMER_LIKE = re.compile(
    r"(?<![\d-])(\d{2})?(\d{6})([\s\u00a0]*[-+\u2010-\u2015\u2212][\s\u00a0]*|[ \u00a0]?)(\d{4})(?![\d-])")

#: longest value shown from a non-sensitive column (a report is not a data dump)
MAX_SHOWN = 80


def _masked_number(m: re.Match[str]) -> str:
    century = m.group(1) or ""
    return f"{century}XXXXXX{m.group(3)}XXXX"


def mask(value: object) -> str:
    """A sensitive value as it may be shown: a personnummer keeps its shape, anything else its length."""
    if value is None:
        return "(tomt / empty)"
    text = str(value)
    if text.lower() in {"nan", "none", "nat", "<na>"}:
        return "(tomt / empty)"
    if PERSONNUMMER_LIKE.fullmatch(text.strip()):
        return PERSONNUMMER_LIKE.sub(_masked_number, text.strip())
    return f"(dolt / masked: {len(text)} tecken / characters)"


def scrub(text: str) -> str:
    """``text`` with everything that looks like a personnummer masked, keeping its shape
    (``19XXXXXX-XXXX``, ``XXXXXX–XXXX``): any dash, a plus, a space or nothing before the last four.

    Narrower than :func:`mask_numbers` (the access log's), which also masks digits grouped in other
    ways: a report keeps a phone number such as ``016-710 10 00`` readable."""
    return PERSONNUMMER_LIKE.sub(_masked_number, text)


def shown(value: object, *, sensitive: bool) -> str:
    """How a value from a record is shown in a report: masked, or scrubbed and shortened."""
    if sensitive:
        return mask(value)
    if value is None:
        return "(tomt / empty)"
    text = scrub(str(value))
    if text.lower() in {"nan", "none", "nat", "<na>"}:
        return "(tomt / empty)"
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


_SEP = r"[\s\u00a0\u2007\u202f\-+\u2010-\u2015\u2212]"
#: ten or twelve digits with at most a few separators (any dash, plus, spaces) between them, not part
#: of a longer number; a date range ("2025-01-01 2025-12-31") is not one since a separator and a digit
#: follow (nor part of a UUID, a checksum or another hex identifier: a package ID is not a person)
IDENTITY_NUMBER = re.compile(rf"(?<![0-9A-Fa-f])(?<!\d{_SEP})(?<![0-9a-fA-F]-)\d(?:{_SEP}{{0,3}}\d){{9,11}}"
                             rf"(?![0-9A-Fa-f])(?!{_SEP}\d)(?!-[0-9a-fA-F])")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")

#: longest delivery-chosen name shown in a message (paths in real packages stay far below)
MAX_NAME = 300


def mask_numbers(text: str) -> str:
    """``text`` with everything shaped like a personnummer or samordningsnummer, in any written form
    (10 or 12 digits; dash, en or em dash, plus, spaces, no-break spaces or nothing between the
    groups), replaced by ``[personnummer]``."""
    return IDENTITY_NUMBER.sub("[personnummer]", text or "")


def one_line(text: object) -> str:
    """``text`` as one printable line: control characters, line and paragraph separators, zero-width
    characters and bidirectional overrides written as ``\\xNN``/``\\uNNNN`` escapes, undecodable
    bytes as ``\\xNN``."""
    text = text if isinstance(text, str) else str(text)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def safe_line(text: object) -> str:
    """One line of a message as a reason, an event, a log line or an alert may carry it: one printable
    line (:func:`one_line`) with whatever looks like a personnummer masked (:func:`scrub`)."""
    return scrub(one_line(text))


def safe_message(text: object) -> str:
    """A multi-line message (an error with its details) with each line made safe by :func:`safe_line`."""
    return "\n".join(safe_line(line) for line in str(text).split("\n"))


def safe_name(name: object) -> str:
    """A delivery-chosen name as it may appear in a message or log: a :func:`safe_line`, kept short."""
    text = safe_line(name)
    return text if len(text) <= MAX_NAME else text[: MAX_NAME - 1] + "…"


__all__ = ["IDENTITY_NUMBER", "MAX_SHOWN", "PERSONNUMMER_LIKE", "mask", "mask_numbers", "one_line", "safe_line",
           "safe_message", "safe_name", "scrub", "shown"]
