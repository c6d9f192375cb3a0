"""Masking of sensitive values before they reach a page, a report or a log.

Two tools, used together wherever a value from a record could be shown:

* :func:`mask` hides a value of a column marked ``sensitive`` in the system YAML. A
  personnummer or samordningsnummer keeps its shape and nothing else (``19XXXXXX-XXXX``:
  an archivist can see *that* it is a personnummer, and that it is malformed, without
  learning whose); anything else is replaced by its length.
* :func:`scrub` is the last guard over any text: whatever looks like a personnummer
  (ten or twelve digits, with or without a separator) is masked even in a column nobody
  marked sensitive — a free-text title can quote one.
"""

from __future__ import annotations

import re

#: ten or twelve digits, optionally with -, + or a space before the last four; not part of a longer number
PERSONNUMMER_LIKE = re.compile(r"(?<![\d-])(\d{2})?(\d{6})([-+ ]?)(\d{4})(?![\d-])")

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
    """``text`` with everything that looks like a personnummer masked."""
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


__all__ = ["MAX_SHOWN", "PERSONNUMMER_LIKE", "mask", "scrub", "shown"]
