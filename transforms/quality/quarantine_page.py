"""The archivist's pages, as HTML: quarantine cases, one case with its report and history, an overview.

Rendering only: which user is asking, and whether they may decide, is the caller's business
(the Airflow plugin asks Airflow's auth manager). Everything here reads the catalogue and
the reports the quality gate wrote; nothing here knows about Airflow. A report (and its Data
Docs) in the working bucket is read through the working area the caller passes as ``area``.

Pages are plain server-rendered HTML with a small stylesheet and an inline SVG chart: they
load nothing from the internet and work in any browser an archive's staff may have.

The decision form is protected against cross-site request forgery twice over: it carries a
token signed for the user, the case and the time it was rendered (:func:`csrf_token`, checked
by :func:`csrf_valid`, valid for :data:`CSRF_MAX_AGE`), and the browser's own ``Origin`` and
``Sec-Fetch-Site`` headers must say the POST came from this site (:func:`same_origin`). A page
on another site can neither read the token nor fake those headers, so a forged POST decides nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import html
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import sqlalchemy as sa

from transforms.catalogue import Catalogue, Event, QuarantineCase
from transforms.common.errors import ArkivError
from transforms.common.masking import scrub
from transforms.quality.quarantine import LOCAL_FILES, References, data_docs_of, is_remote, report_page

e = html.escape

STYLE = """<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#1d1d1d;max-width:75em}
a{color:#0b4f8a}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #c5c5c5;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f1f1f1}nav a{margin-right:1em}.open{color:#a15c00;font-weight:bold}
.approved{color:#1b5e20}.rejected{color:#b00020}form.filters label{margin-right:1em}
.decision{border:1px solid #c5c5c5;padding:1em;margin:1em 0;max-width:40em}textarea{width:100%;min-height:4em}
</style>"""

STATUS_TEXT = {"open": "väntar på beslut / awaiting decision", "approved": "godkänd med avvikelse / approved",
               "rejected": "avvisad / rejected"}


@dataclass(frozen=True)
class CaseFilter:
    system: str | None = None
    status: str | None = None
    kind: str | None = None
    since: dt.date | None = None

    def query(self) -> str:
        return urlencode({k: v for k, v in self.__dict__.items() if v})


def _page(title: str, body: str, base: str) -> str:
    return (f"<!DOCTYPE html><html lang=\"sv\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>{STYLE}"
            f"</head><body><nav><a href=\"{base}/\">Karantän / Quarantine</a><a href=\"{base}/overview\">"
            f"Översikt / Overview</a><a href=\"{base}/status\">Leveranser / Deliveries due</a></nav>{body}"
            "</body></html>")


def case_url(base: str, case_id: str) -> str:
    return f"{base}/case?id={quote(case_id, safe='')}"


def list_cases(cat: Catalogue, f: CaseFilter) -> list[QuarantineCase]:
    with cat.session() as s:
        q = sa.select(QuarantineCase).order_by(QuarantineCase.created_at.desc())
        if f.system:
            q = q.where(QuarantineCase.system == f.system)
        if f.status:
            q = q.where(QuarantineCase.status == f.status)
        if f.kind:
            q = q.where(QuarantineCase.kind == f.kind)
        if f.since:
            q = q.where(QuarantineCase.created_at >= dt.datetime.combine(f.since, dt.time()))
        return list(s.scalars(q))


def cases_page(cat: Catalogue, f: CaseFilter, base: str, visible_systems: set[str] | None = None) -> str:
    """The list of quarantined and decided cases, with filters."""
    rows = []
    cases = [c for c in list_cases(cat, f) if visible_systems is None or c.system in visible_systems]
    with cat.session() as s:
        systems = sorted(set(s.scalars(sa.select(QuarantineCase.system).distinct())))
    for c in cases:
        reasons = json.loads(c.reasons)
        rows.append(
            f"<tr><td><a href=\"{case_url(base, c.id)}\">{e(c.id)}</a></td><td>{e(c.system)}</td><td>{e(c.kind)}</td>"
            f"<td>{c.created_at:%Y-%m-%d %H:%M}</td><td class=\"{e(c.status)}\">"
            f"{e(STATUS_TEXT.get(c.status, c.status))}</td><td>{len(reasons)}</td>"
            f"<td>{e(c.decided_by or '')}</td></tr>")

    def options(name: str, values: list[str], current: str | None) -> str:
        opts = "".join(f"<option value=\"{e(v)}\"{' selected' if v == current else ''}>{e(v)}</option>" for v in values)
        return f"<select name=\"{name}\"><option value=\"\">alla / all</option>{opts}</select>"

    filters = (f"<form class=\"filters\" method=\"get\" action=\"{base}/\">"
               f"<label>System {options('system', systems, f.system)}</label>"
               f"<label>Status {options('status', list(STATUS_TEXT), f.status)}</label>"
               f"<label>Slag / Kind {options('kind', ['quality', 'delivery', 'package', 'document'], f.kind)}</label>"
               f"<label>Från / Since <input type=\"date\" name=\"since\" value=\"{f.since or ''}\"></label>"
               f"<button type=\"submit\">Filtrera / Filter</button></form>")
    table = ("<table id=\"cases\"><tr><th>Ärende / Case</th><th>System</th><th>Slag / Kind</th><th>Skapat / Opened</th>"
             "<th>Status</th><th>Orsaker / Reasons</th><th>Beslutat av / Decided by</th></tr>" + "".join(rows)
             + "</table>") if rows else "<p id=\"cases\">Inga ärenden / No cases.</p>"
    return _page("Karantän / Quarantine", f"<h1>Karantän / Quarantine</h1>{filters}{table}", base)


def decision_history(cat: Catalogue, case: QuarantineCase) -> list[Event]:
    """Everything that happened to the case's batch: capture, checks, quarantine, decisions."""
    return [ev for ev in cat.events(batch_id=case.batch_id)
            if ev.type in {"capture", "validation", "quarantine", "decision", "replication"}]


#: how long a rendered decision form may be submitted (a working day)
CSRF_MAX_AGE = 12 * 3600


def _csrf_mac(key: bytes, user: str, case_id: str, issued: int) -> str:
    msg = json.dumps([user, case_id, issued], ensure_ascii=True).encode("ascii")
    return hmac.new(key, b"arkiv-decision-form\0" + msg, hashlib.sha256).hexdigest()


def csrf_token(key: bytes, user: str, case_id: str, now: float | None = None) -> str:
    """A token for one user's decision form on one case: ``<issued>.<HMAC>``, checked by :func:`csrf_valid`."""
    issued = int(time.time() if now is None else now)
    return f"{issued}.{_csrf_mac(key, user, case_id, issued)}"


def csrf_valid(key: bytes, token: str | None, user: str, case_id: str, now: float | None = None,
               max_age: int = CSRF_MAX_AGE) -> bool:
    """Whether ``token`` was issued by :func:`csrf_token` to ``user`` for ``case_id`` and has not expired."""
    issued_text, _, mac = (token or "").partition(".")
    if not issued_text.isdigit() or len(issued_text) > 12 or len(mac) != 64:
        return False
    issued = int(issued_text)
    now = time.time() if now is None else now
    if not (now - max_age <= issued <= now + 60):
        return False
    return hmac.compare_digest(mac, _csrf_mac(key, user, case_id, issued))


def same_origin(headers: Mapping[str, str], host: str | None) -> bool:
    """Whether the browser says the request came from this site: ``Sec-Fetch-Site`` (when sent) is
    ``same-origin`` or ``none``, and ``Origin`` (when sent) names ``host``. Clients that send neither
    header (curl, older browsers) are judged by the form token alone."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    if origin == "null" or not host:
        return False
    return urlsplit(origin).netloc.lower() == host.lower()


def case_page(cat: Catalogue, case: QuarantineCase, base: str, *, may_decide: bool, csrf: str = "",
              area: References | None = None) -> str:
    """One case: the bilingual report, a link to the Data Docs, the history and (if allowed) the decision form.

    ``area``: the working area, which reads a report and Data Docs kept in the working bucket."""
    docs = data_docs_of(case.report, area)
    report = report_page(case.system, case.batch_id, case.kind, json.loads(case.reasons), case.report,
                         f"{base}/datadocs?{urlencode({'id': case.id, 'page': 'index.html'})}" if docs else None,
                         area)
    body = report.split("<body>", 1)[1].rsplit("</body>", 1)[0]
    history = "".join(
        f"<tr><td>{ev.time:%Y-%m-%d %H:%M}</td><td>{e(ev.type)}</td><td>{e(ev.outcome)}</td><td>{e(ev.agent)}</td>"
        f"<td>{e(scrub(ev.detail))}</td></tr>" for ev in decision_history(cat, case))
    decided = (f" — {e(case.decided_by or '')}, {case.decided_at:%Y-%m-%d %H:%M}: {e(case.justification or '')}"
               if case.decided_at else "")
    status = (f"<p>Status: <span class=\"{e(case.status)}\" id=\"status\">"
              f"{e(STATUS_TEXT.get(case.status, case.status))}</span>{decided}</p>")
    form = ""
    if case.status == "open" and may_decide:
        form = (f"<form class=\"decision\" method=\"post\" action=\"{base}/case/decision\">"
                f"<input type=\"hidden\" name=\"id\" value=\"{e(case.id)}\">"
                f"<input type=\"hidden\" name=\"csrf\" value=\"{e(csrf)}\"><h2>Beslut / Decision</h2>"
                "<label>Motivering / Justification (sparas för alltid / kept for ever)<br>"
                "<textarea name=\"reason\" required></textarea></label><p><label><input type=\"checkbox\" "
                "name=\"confirm\" value=\"yes\" required> Jag bekräftar beslutet; det kan inte ändras. / I confirm "
                "this decision; it cannot be changed.</label></p><p>"
                "<button type=\"submit\" name=\"action\" value=\"approve\">Godkänn med avvikelse / Approve with "
                "deviation</button> <button type=\"submit\" name=\"action\" value=\"reject\">Avvisa / Reject"
                "</button></p></form>")
    elif case.status == "open":
        form = "<p><em>Du kan läsa men inte besluta. / You may read but not decide.</em></p>"
    return _page(f"Ärende / Case {case.id}", f"{status}{form}{body}<h2>Historik / History</h2><table id=\"history\">"
                 "<tr><th>Tid / Time</th><th>Händelse / Event</th><th>Utfall / Outcome</th><th>Vem / Agent</th>"
                 f"<th>Detalj / Detail</th></tr>{history}</table>", base)


#: a link from one Data Docs page to another in the same folder (a bare file name)
_SIBLING = re.compile(r'href="([A-Za-z0-9_][^"/\\:?#]*\.html)"')


def data_docs_html(case: QuarantineCase, page: str, base: str, area: References | None = None) -> str | None:
    """A page of the case's Data Docs, by file name only (nothing outside that folder is served),
    with its links to the other pages pointed back through ``base``; from the working bucket
    through ``area`` when the report is kept there."""
    docs = data_docs_of(case.report, area)
    if docs is None or "/" in page or "\\" in page or page.startswith(".") or not page.endswith(".html"):
        return None
    files = area if is_remote(docs) else LOCAL_FILES
    target = f"{docs.rsplit('/', 1)[0]}/{page}" if is_remote(docs) else str(Path(docs).parent / page)
    try:
        if files is None or not files.exists(target):
            return None
        text = files.read_text(target)
    except (OSError, ArkivError):
        return None
    return _SIBLING.sub(lambda m: f'href="{e(base)}/datadocs?{e(urlencode({"id": case.id, "page": m.group(1)}))}"',
                        text)


def quality_outcomes(cat: Catalogue, months: int = 24) -> dict[str, dict[str, Counter]]:
    """Per system and month: how many quality checks passed, failed, or passed with an approved deviation."""
    since = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=31 * months)
    out: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    with cat.session() as s:
        q = sa.select(Event.batch_id, Event.time, Event.outcome).where(
            Event.type == "validation", Event.batch_id.is_not(None), Event.package_id.is_(None),
            Event.detail.like("quality %"), Event.time >= since)
        for batch_id, time, outcome in s.execute(q):
            out[batch_id.split("/", 1)[0]][f"{time:%Y-%m}"][outcome] += 1
        q = sa.select(Event.batch_id, Event.time).where(Event.type == "validation", Event.outcome == "warning",
                                                        Event.detail.like("quality deviation approved%"),
                                                        Event.time >= since)
        for batch_id, time in s.execute(q):
            out[batch_id.split("/", 1)[0]][f"{time:%Y-%m}"]["deviation"] += 1
    return out


COLOURS = {"success": "#2e7d32", "failure": "#c62828", "deviation": "#f9a825"}


def overview_page(cat: Catalogue, base: str, visible_systems: set[str] | None = None) -> str:
    """A bar chart (inline SVG) of quality outcomes per system and month, and the counts as a table."""
    data = {k: v for k, v in quality_outcomes(cat).items() if visible_systems is None or k in visible_systems}
    months = sorted({m for per in data.values() for m in per})
    charts, rows = [], []
    for system in sorted(data):
        per = data[system]
        top = max((sum(c.values()) for c in per.values()), default=1) or 1
        bars = []
        for i, m in enumerate(months):
            y = 120
            for outcome in ("success", "deviation", "failure"):
                n = per.get(m, Counter())[outcome]
                if n:
                    h = 100 * n / top
                    y -= h
                    bars.append(f"<rect x=\"{40 + i * 36}\" y=\"{y:.1f}\" width=\"28\" height=\"{h:.1f}\" "
                                f"fill=\"{COLOURS[outcome]}\"><title>{system} {m}: {n} {outcome}</title></rect>")
            bars.append(f"<text x=\"{40 + i * 36}\" y=\"135\" font-size=\"9\">{m[2:]}</text>")
            c = per.get(m, Counter())
            if c:
                rows.append(f"<tr><td>{e(system)}</td><td>{m}</td><td>{c['success']}</td><td>{c['failure']}</td>"
                            f"<td>{c['deviation']}</td></tr>")
        width = 60 + 36 * max(len(months), 1)
        charts.append(f"<h3>{e(system)}</h3><svg class=\"chart\" role=\"img\" aria-label=\"{e(system)}\" "
                      f"width=\"{width}\" height=\"145\"><text x=\"0\" y=\"20\" font-size=\"9\">{top}</text>"
                      f"<line x1=\"36\" y1=\"120\" x2=\"{width}\" y2=\"120\" stroke=\"#999\"/>{''.join(bars)}</svg>")
    legend = " ".join(f"<span style=\"color:{c}\">■</span> {t}" for t, c in
                      (("godkänd / passed", COLOURS["success"]), ("avvikelse godkänd / deviation approved",
                       COLOURS["deviation"]), ("underkänd / failed", COLOURS["failure"])))
    table = ("<table id=\"outcomes\"><tr><th>System</th><th>Månad / Month</th><th>Godkända / Passed</th>"
             "<th>Underkända / Failed</th><th>Avvikelser / Deviations</th></tr>" + "".join(rows) + "</table>")
    body = (f"<h1>Kvalitetsutfall per system / Quality outcomes per system</h1><p>{legend}</p>"
            + ("".join(charts) + table if data else "<p>Inga kontroller ännu. / No checks yet.</p>"))
    return _page("Översikt / Overview", body, base)


__all__ = ["CaseFilter", "case_page", "cases_page", "data_docs_html", "overview_page", "quality_outcomes"]
