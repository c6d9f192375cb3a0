"""``arkiv status [SYSTEM]``: what each system's schedule says is due, against what was delivered and archived.

The intervals are the DAG's own: a cron schedule in the system's time zone, a data interval
running from one tick to the next (Airflow's CronDataIntervalTimetable), from the YAML's
``start_date`` up to now; an interval is due once it has ended. Each interval's state comes
from the catalogue (batch, quarantine cases, interval claim) and, for systems that deliver
files, from the inbox:

``archived``, ``quarantined`` (with its open case), ``rejected`` (case rejected, the system
owner corrects the source), ``waiting for delivery`` (before the deadline), ``delivery
missing``, ``running`` (a run holds the interval), ``failed`` (a run started and stopped before
archiving), ``not yet run``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass
from zoneinfo import ZoneInfo

from croniter import croniter

from transforms.catalogue import Batch, BatchStatus, Catalogue, IntervalClaim, QuarantineCase
from transforms.config.settings import S3Config, Settings
from transforms.config.systems import System, load_system, load_systems
from transforms.intake.delivery import delivery_for
from transforms.staging.batch import period_label

#: how many due intervals are listed per system at most (a daily schedule since years ago is long)
DEFAULT_LIMIT = 60

STATE_SV = {"archived": "arkiverad", "quarantined": "i karantän", "rejected": "avvisad",
            "waiting for delivery": "väntar på leverans", "delivery missing": "leverans saknas", "running": "pågår",
            "failed": "misslyckad", "not yet run": "inte körd än"}


@dataclass
class IntervalStatus:
    system: str
    period: str
    start: str
    end: str
    state: str
    tillstand: str
    case: str | None
    packages: int
    records: int
    detail: str


def due_intervals(system: System, now: dt.datetime, limit: int | None = None) -> list[tuple[dt.datetime, dt.datetime]]:
    """Every data interval of ``system`` that has ended by ``now``, as naive local datetimes, oldest first.

    As the DAG's timetable: the first interval starts at the first cron tick at or after
    ``start_date`` (midnight in the system's time zone) and each ends at the next tick. With
    ``limit``, only the newest ``limit`` are returned.
    """
    tz = ZoneInfo(system.timezone)
    begin = dt.datetime.combine(system.start_date, dt.time(), tzinfo=tz)
    now = now.astimezone(tz)
    ticks = croniter(system.schedule, begin - dt.timedelta(seconds=1))
    first = ticks.get_next(dt.datetime)
    out: list[tuple[dt.datetime, dt.datetime]] = []
    start = first
    while True:
        end = ticks.get_next(dt.datetime)
        if end > now:
            break
        out.append((start.replace(tzinfo=None), end.replace(tzinfo=None)))
        if limit and len(out) > limit:
            out.pop(0)
        start = end
    return out


def _delivery_hours(system: str) -> float:
    for name in (f"ARKIV_{system.upper()}_DELIVERY_TIMEOUT_HOURS", "ARKIV_DELIVERY_TIMEOUT_HOURS"):
        value = os.environ.get(name)
        if value:
            try:
                return float(value)
            except ValueError:
                continue
    return 72.0


def _delivered(system: System, period: str, s3: S3Config | None = None) -> bool | None:
    """Whether the interval's delivery is in the inbox (None: nothing to wait for, or no inbox configured here)."""
    delivery = delivery_for(system, s3)
    if not delivery.waits or not system.inbox_env or not os.environ.get(system.inbox_env):
        return None
    expected = delivery.expected(period)
    return None if expected is None else expected.exists()


def system_status(cat: Catalogue, system: System, now: dt.datetime, limit: int | None = DEFAULT_LIMIT,
                  s3: S3Config | None = None) -> list[IntervalStatus]:
    """Each due interval of one system with its state, packages and records."""
    with cat.session() as s:
        batches = {b.id: b for b in s.query(Batch).filter(Batch.system == system.name)}
        cases = list(s.query(QuarantineCase).filter(QuarantineCase.system == system.name)
                     .order_by(QuarantineCase.created_at))
        claims = {c.key: c for c in s.query(IntervalClaim).filter(IntervalClaim.key.like(f"{system.name}/%"))}
    packages = cat.packages(system.name)
    local_now = now.astimezone(ZoneInfo(system.timezone)).replace(tzinfo=None)
    out = []
    for start, end in due_intervals(system, now, limit):
        period = period_label(start, end)
        key = f"{system.name}/{period}"
        b = batches.get(key)
        mine = [c for c in cases if c.batch_id == key]
        open_case = next((c for c in reversed(mine) if c.status == "open"), None)
        claim = claims.get(key)
        pk = [p for p in packages if p.batch_id == key]
        case, detail = None, ""
        if b is not None and b.status == BatchStatus.ARCHIVED:
            state = "archived"
            held = [c for c in mine if c.kind != "quality" and c.status == "open"]
            if held:
                case, detail = held[0].id, f"{len(held)} open quarantine case(s) on parts of it"
            approved = [c for c in mine if c.kind == "quality" and c.status == "approved"]
            if approved:
                detail = "; ".join(filter(None, [f"with deviation approved by {approved[-1].decided_by} "
                                                 f"(case {approved[-1].id})", detail]))
        elif open_case is not None:
            state, case = "quarantined", open_case.id
            detail = f"{open_case.kind}: {len(json.loads(open_case.reasons or '[]'))} reason(s); an archivist decides"
        elif claim is not None and getattr(claim, "released_at", None) is None:
            # a claim is held until its run finishes the interval; one that died keeps it until the next run asks
            state, detail = "running", (f"held by {claim.holder} since {claim.claimed_at:%Y-%m-%d %H:%M} UTC; if that "
                                        "run has ended, its next run takes over")
        elif b is not None and b.status == BatchStatus.DELIVERY_MISSING:
            state, detail = "delivery missing", "nothing delivered by the deadline; the system owner delivers"
        elif mine and mine[-1].status == "rejected":
            state, case = "rejected", mine[-1].id
            detail = f"rejected by {mine[-1].decided_by}; the system owner corrects the source, then it is rerun"
        elif b is not None:
            state, detail = "failed", f"stopped at {b.status.replace('_', ' ')}; see `arkiv events` and the run's log"
        else:
            delivered = _delivered(system, period, s3)
            if delivered is False:
                deadline = end + dt.timedelta(hours=_delivery_hours(system.name))
                if local_now < deadline:
                    state, detail = "waiting for delivery", f"deadline {deadline:%Y-%m-%d %H:%M}"
                else:
                    state, detail = "delivery missing", f"nothing delivered by {deadline:%Y-%m-%d %H:%M}"
            else:
                state = "not yet run"
                detail = ("delivered, waiting for its run" if delivered else
                          f"delivery not checked: {system.inbox_env} is not set here"
                          if delivered is None and delivery_for(system).waits else "")
        out.append(IntervalStatus(system.name, period, start.isoformat(), end.isoformat(), state, STATE_SV[state],
                                  case, len(pk), sum(p.record_count for p in pk), detail))
    return out


def status(settings: Settings, system: str | None = None, *, now: dt.datetime | None = None,
           limit: int | None = DEFAULT_LIMIT) -> list[IntervalStatus]:
    """Every due interval of one system, or of every configured system."""
    now = now or dt.datetime.now(dt.UTC)
    if system:
        path = settings.systems_dir / f"{system}.yaml"
        if not path.is_file():
            from transforms.common.errors import ConfigError

            raise ConfigError(f"no system {system} (no {path.name} in {settings.systems_dir})")
        systems = {system: load_system(path)}
    else:
        systems = load_systems(settings.systems_dir)
    settings.ensure()  # a fresh home has no catalogue folder yet: an empty catalogue, not an error
    cat = Catalogue(settings.catalogue_url)
    cat.migrate()
    try:
        return [row for s in systems.values() for row in system_status(cat, s, now, limit, settings.s3)]
    finally:
        cat.dispose()


def table(rows: list[IntervalStatus]) -> str:
    """A plain text table, one line per interval."""
    head = ("SYSTEM", "PERIOD", "STATE / TILLSTÅND", "PACKAGES", "RECORDS", "CASE / DETAIL")
    body = [(r.system, r.period, f"{r.state} / {r.tillstand}", str(r.packages), str(r.records),
             " — ".join(filter(None, [r.case, r.detail]))) for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(5)]
    lines = ["  ".join(x[i].rjust(widths[i]) if i in (3, 4) else x[i].ljust(widths[i]) for i in range(5))
             + "  " + x[5] for x in [head, *body]]
    if not body:
        lines.append("(no interval is due yet)")
    return "\n".join(line.rstrip() for line in lines)


def to_json(rows: list[IntervalStatus]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2, ensure_ascii=False)


#: how each state looks on the page (a CSS class); the states an owner must act on stand out
STATE_CLASS = {"archived": "ok", "quarantined": "wait", "rejected": "bad", "waiting for delivery": "wait",
               "delivery missing": "bad", "running": "run", "failed": "bad", "not yet run": "idle"}
PAGE_STYLE = ("<style>td.ok{color:#1b5e20}td.wait{color:#a15c00;font-weight:bold}td.bad{color:#b00020;"
              "font-weight:bold}td.run{color:#0b4f8a}td.idle{color:#666}td.num{text-align:right}</style>")


def html_page(rows: list[IntervalStatus], base: str, systems: list[str], current: str | None,
              now: dt.datetime | None = None) -> str:
    """The system owner's page: every due interval with its state, case, packages and records.

    ``base`` is where the Arkivflöde pages are mounted (case links go to their case page);
    ``systems`` are the ones the reader may see (the filter's choices)."""
    import html

    from transforms.quality.quarantine_page import _page, case_url

    e = html.escape
    local_now = (now or dt.datetime.now(dt.UTC)).astimezone(ZoneInfo("Europe/Stockholm"))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    body = []
    newest_first = sorted(sorted(rows, key=lambda x: x.start, reverse=True), key=lambda x: x.system)
    for r in newest_first:
        case = f"<a href=\"{case_url(base, r.case)}\">{e(r.case)}</a>" if r.case else ""
        body.append(f"<tr data-system=\"{e(r.system)}\" data-period=\"{e(r.period)}\"><td>{e(r.system)}</td>"
                    f"<td>{e(r.period)}</td><td class=\"{STATE_CLASS.get(r.state, '')} state\">{e(r.tillstand)} / "
                    f"{e(r.state)}</td><td class=\"num\">{r.packages}</td><td class=\"num\">{r.records}</td>"
                    f"<td>{case}</td><td>{e(r.detail)}</td></tr>")
    opts = "".join(f"<option value=\"{e(s)}\"{' selected' if s == current else ''}>{e(s)}</option>" for s in systems)
    summary = ", ".join(f"{n} {e(STATE_SV[s])} / {e(s)}" for s, n in sorted(counts.items()))
    table = ("<table id=\"intervals\"><tr><th>System</th><th>Period</th><th>Tillstånd / State</th><th>Paket / "
             "Packages</th><th>Poster / Records</th><th>Ärende / Case</th><th>Detalj / Detail</th></tr>"
             + "".join(body) + "</table>") if body else "<p id=\"intervals\">Inget intervall har förfallit än. / " \
                                                       "No interval is due yet.</p>"
    text = (f"{PAGE_STYLE}<h1>Leveranser och arkivering / Deliveries and archiving</h1>"
            "<p>Varje period som schemat säger ska vara levererad, och var den står. / Every period the schedule "
            f"says is due, and where it stands. (Läget / as of {local_now:%Y-%m-%d %H:%M} Europe/Stockholm.)</p>"
            f"<form class=\"filters\" method=\"get\" action=\"{base}/status\"><label>System <select name=\"system\">"
            f"<option value=\"\">alla / all</option>{opts}</select></label> <button type=\"submit\">Visa / Show"
            f"</button></form><p id=\"summary\">{summary}</p>{table}"
            "<p><small>Saknas en leverans: exportera perioden till inkorgen och kör om intervallet (docs/operations.md"
            "). / A delivery missing: export the period into the inbox and rerun the interval.</small></p>")
    return _page("Leveranser / Deliveries", text, base)
