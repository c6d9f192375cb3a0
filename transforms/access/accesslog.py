"""The access log: every search and every read of a record or document — who, what, when, why.

Who: the credential's name, or for a person signed in through the identity provider their
subject (``actor``), name and every archive role they held at the time, and the issuer.

Rows are only ever inserted; the database refuses UPDATE and DELETE on the table (triggers
made by catalogue migration 6), so not even a bug here can rewrite history. Targets are
references (``lex/123``, a package ID), never record content.

What is written, field by field (:func:`log` applies it to every entry, whoever calls it):

* **personnummer and samordningsnummer** are masked wherever they appear (purpose, target,
  detail, actor), in every written form: 10 or 12 digits, with ``-``, ``+``, an en or em dash,
  spaces (also no-break spaces) or nothing between the groups (:func:`mask_numbers`).
* **search text** is never stored: a search is logged with its filters, the number of hits and
  ``query hmac:<16 hex>`` — a keyed HMAC-SHA256 (the personnummer key, ``ARKIV_ACCESS_KEY``) of
  the normalised text (:func:`query_digest`). Whoever holds the key can answer "who searched for
  this name?" by computing the digest of the name; the log alone never tells what was searched.
* **party names** are therefore never in the log from a search; a purpose that repeats the
  record's party names or the words searched for has them replaced by ``[namn]``.
* **control characters** (CR, LF, NUL, the rest of C0/C1, line separators, bidi overrides) in
  any field are written as ``\\xNN``/``\\uNNNN`` escapes, so a header can never forge an entry
  or a line in an export of the log; fields are cut to their column's length.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable

import sqlalchemy as sa

from transforms.access.auth import AccessDenied, Principal
from transforms.catalogue import AccessLogEntry, Catalogue, utcnow
from transforms.common.masking import mask_numbers, one_line

OUTCOMES = ("granted", "withheld", "refused", "not_found")
_log = logging.getLogger("arkivflode.access")

def clean(text: str, limit: int, names: Iterable[str] = ()) -> str:
    """A field as stored: names and numbers masked, escaped, at most ``limit`` characters."""
    text = mask_names(mask_numbers(text or ""), names)
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mask_names(text: str, names: Iterable[str]) -> str:
    """``text`` with every word (three letters or more) of ``names`` replaced by ``[namn]``, any case."""
    words = {w for n in names if n for w in re.findall(r"\w{3,}", n) if not w.isdigit()}
    if not words or not text:
        return text
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b",
                         re.IGNORECASE)
    return pattern.sub("[namn]", text)


def query_digest(key: bytes, q: str) -> str:
    """A keyed digest of a search text (case and spacing normalised): what the log keeps instead of it."""
    norm = " ".join((q or "").lower().split())
    return hmac.new(key, norm.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:16]


def log(cat: Catalogue, who: Principal, action: str, target: str, *, outcome: str = "granted",
        purpose: str = "", detail: str = "", names: Iterable[str] = ()) -> None:
    """Append one entry (in its own transaction, so a failed read is logged too).

    ``names`` are party names (or searched words) to be masked out of the purpose if it repeats them.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    names = list(names)
    with cat.session() as s:
        s.add(AccessLogEntry(time=utcnow(), actor=clean(who.name, 200), role=clean(who.role, 20),
                             action=clean(action, 40), target=clean(target, 500), purpose=clean(purpose, 1000, names),
                             outcome=outcome, detail=clean(detail, 2000, names),
                             person_name=clean(who.display_name, 200) if who.display_name else None,
                             roles=clean(",".join(who.roles), 200) if who.roles else None,
                             issuer=clean(who.issuer, 300) if who.issuer else None))


def refusal(cat: Catalogue | None, who: Principal | None, action: str, target: str, detail: str) -> None:
    """A refused request: in the access log when the caller is known, else in the server's log (never values)."""
    if who is not None and cat is not None:
        try:
            log(cat, who, action, target, outcome="refused", detail=detail)
            return
        except Exception:  # noqa: BLE001 - the refusal must still be told somewhere
            _log.exception("access log unavailable; refusal logged here instead")
    _log.warning("refused %s %s: %s", clean(action, 40), clean(target, 300), clean(detail, 500))


def entries(cat: Catalogue, who: Principal, *, actor: str | None = None, target: str | None = None,
            action: str | None = None, since: dt.datetime | None = None, limit: int = 200) -> list[dict]:
    """Query the log (archivists only), newest first."""
    if not who.reads_access_log:
        raise AccessDenied("only archivists may read the access log")
    q = sa.select(AccessLogEntry).order_by(AccessLogEntry.id.desc()).limit(max(1, min(limit, 10_000)))
    if actor:
        q = q.where(AccessLogEntry.actor == actor)
    if target:
        escaped = target.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        q = q.where(AccessLogEntry.target.like(f"{escaped}%", escape="\\"))
    if action:
        q = q.where(AccessLogEntry.action == action)
    if since:
        q = q.where(AccessLogEntry.time >= since)
    with cat.session() as s:
        rows = list(s.scalars(q))
    return [{"id": r.id, "time": r.time.isoformat(), "actor": r.actor, "name": r.person_name,
             "roles": r.roles.split(",") if r.roles else [], "role": r.role, "action": r.action,
             "target": r.target, "purpose": r.purpose, "outcome": r.outcome, "detail": r.detail} for r in rows]
