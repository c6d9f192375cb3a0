"""The access log: every search and every read of a record or document — who, what, when, why.

Rows are only ever inserted; the database refuses UPDATE and DELETE on the table (triggers
made by catalogue migration 6), so not even a bug here can rewrite history. Targets are
references (``lex/123``, a package ID, a query's length), never record content: a search is
logged with its filters and the number of hits, not the words searched for when they could be
a personnummer.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from ..catalogue import AccessLogEntry, Catalogue, utcnow
from .auth import AccessDenied, Principal

OUTCOMES = ("granted", "withheld", "refused", "not_found")


def log(cat: Catalogue, who: Principal, action: str, target: str, *, outcome: str = "granted",
        purpose: str = "", detail: str = "") -> None:
    """Append one entry (in its own transaction, so a failed read is logged too)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    with cat.session() as s:
        s.add(AccessLogEntry(time=utcnow(), actor=who.name, role=who.role, action=action, target=target[:500],
                             purpose=purpose or "", outcome=outcome, detail=detail))


def entries(cat: Catalogue, who: Principal, *, actor: str | None = None, target: str | None = None,
            action: str | None = None, since: dt.datetime | None = None, limit: int = 200) -> list[dict]:
    """Query the log (archivists only), newest first."""
    if not who.reads_access_log:
        raise AccessDenied("only archivists may read the access log")
    q = sa.select(AccessLogEntry).order_by(AccessLogEntry.id.desc()).limit(max(1, min(limit, 10_000)))
    if actor:
        q = q.where(AccessLogEntry.actor == actor)
    if target:
        q = q.where(AccessLogEntry.target.like(f"{target}%"))
    if action:
        q = q.where(AccessLogEntry.action == action)
    if since:
        q = q.where(AccessLogEntry.time >= since)
    with cat.session() as s:
        rows = list(s.scalars(q))
    return [{"id": r.id, "time": r.time.isoformat(), "actor": r.actor, "role": r.role, "action": r.action,
             "target": r.target, "purpose": r.purpose, "outcome": r.outcome, "detail": r.detail} for r in rows]
