"""Quarantine as a state: cases an archivist can read, decide and close.

A batch that fails its quality gate, a file-export delivery that does not match its
declaration and a delivered package that is invalid each become a case in the catalogue,
with the held data's location, the reasons (checks and counts, never record values) and a
report page in Swedish and English. An archivist approves with a deviation (the batch may
then be packaged, and the deviation is written into its PREMIS) or rejects (the system owner
fixes the source; a later run picks the corrected data up). Every decision is an event.

The held material, the quality report and its Data Docs are named by references: a local path,
or (with a working bucket) an ``s3://`` URL read through the working area the caller passes as
``area`` (anything with ``read_text``, ``exists`` and ``write_text``, see :class:`References`).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa

from transforms import SOFTWARE_LABEL, SOFTWARE_NAME
from transforms.catalogue import Catalogue, Person, QuarantineCase, utcnow
from transforms.common.errors import ArkivError
from transforms.common.masking import safe_line, scrub

AGENT = SOFTWARE_LABEL


class References(Protocol):
    """Where held material and reports are read and written: the working area
    (:class:`transforms.archive.workarea.WorkArea`) or, by default, the local files."""

    def read_text(self, ref: str) -> str: ...

    def exists(self, ref: str) -> bool: ...

    def write_text(self, ref: str, text: str) -> None: ...


class _LocalFiles:
    def read_text(self, ref: str) -> str:
        return Path(ref).read_text(encoding="utf-8")

    def exists(self, ref: str) -> bool:
        return Path(ref).is_file()

    def write_text(self, ref: str, text: str) -> None:
        Path(ref).write_text(text, encoding="utf-8")


LOCAL_FILES: References = _LocalFiles()


def is_remote(ref: str | Path | None) -> bool:
    """Whether a reference names an object in a bucket (``s3://…``) rather than a local path."""
    return isinstance(ref, str) and ref.startswith("s3://")


def _files(ref: str, area: References | None) -> References | None:
    """What reads ``ref``: the area for an object in a bucket (None without one), else the local files."""
    return area if is_remote(ref) else LOCAL_FILES


def read_report(report: str | None, area: References | None = None) -> dict | None:
    """A quality report's JSON, None when there is none or it cannot be read here."""
    files = _files(report, area) if report else None
    if files is None:
        return None
    try:
        if not files.exists(report):
            return None
        return json.loads(files.read_text(report))
    except (OSError, ArkivError, ValueError):
        return None


class DecisionRefused(ArkivError):
    """This person may not take this decision: not an archivist, or (a disposal) the second signature is the first's."""


def open_case(cat: Catalogue, *, system: str, batch_id: str, kind: str, reasons: list[str], path: Path | str,
              report: str | None = None, content_state: dict | None = None, area: References | None = None) -> str:
    """Register a quarantined batch, delivery or package; writes its report page beside the data.

    ``path`` is the held folder (or file): a local path, or the reference of a folder in the
    working bucket, where the page is written through ``area``."""
    reasons = [safe_line(r) for r in reasons]
    remote = is_remote(str(path))
    folder_name = str(path).rstrip("/").rsplit("/", 1)[-1] if remote else Path(path).name
    # The held folder is named "<period>-<time stamp>"; the period is already in the batch ID, and
    # left joined to the stamp the digits would read as a personnummer and be masked in the ID.
    period = batch_id.rsplit("/", 1)[-1]
    name = folder_name.removeprefix(f"{period}-") if folder_name.startswith(f"{period}-") else folder_name
    case_id = safe_line(f"{batch_id}/{name}")
    docs = data_docs_of(report, area)
    href = docs if is_remote(docs) else Path(docs).as_uri() if docs else None
    text = report_page(system, batch_id, kind, reasons, report, href, area)
    if remote:
        if area is None:
            raise ArkivError(f"case {case_id}: its material is in a bucket ({path}) and no working area was given")
        area.write_text(f"{str(path).rstrip('/')}/rapport.html", text)
    else:
        path = Path(path)
        page = path / "rapport.html" if path.is_dir() else path.with_name(path.name + ".rapport.html")
        page.write_text(text, encoding="utf-8")
    with cat.session() as s:
        s.add(QuarantineCase(id=case_id, system=system, batch_id=batch_id, kind=kind,
                             reasons=json.dumps(reasons, ensure_ascii=False), path=str(path), report=report,
                             content_state=json.dumps(content_state or {}, sort_keys=True)))
        cat.add_event(s, type="quarantine", outcome="failure", agent=AGENT, batch_id=batch_id,
                      detail=f"{kind} held in quarantine as case {case_id}: {len(reasons)} reason(s)")
    return case_id


def data_docs_of(report: str | None, area: References | None = None) -> str | None:
    """The reference of the GX Data Docs index a quality report names, if it is there to be read."""
    docs = (read_report(report, area) or {}).get("data_docs")
    files = _files(docs, area) if docs else None
    try:
        return docs if files is not None and files.exists(docs) else None
    except (OSError, ArkivError):
        return None


WHAT_HAPPENED = {
    "quality": "Leveransen har hållits kvar och inte arkiverats. En arkivarie beslutar: godkänn med avvikelse eller "
               "avvisa (<code>arkiv quarantine approve|reject</code>).<br>The batch was held back and nothing was "
               "archived. An archivist decides: approve with a deviation or reject.",
    "document": "Dokumentet kunde inte bevaras i ett godkänt format och hölls tillbaka från bevarandeformen; "
                "originalet finns kvar i paketet (<code>rep1-original</code>) och här i karantänen.<br>The document "
                "could not be preserved in an accepted format and was held back from the preservation "
                "representation; the original is kept in the package (<code>rep1-original</code>) and here.",
}


def report_page(system: str, batch_id: str, kind: str, reasons: list[str], report: str | None,
                data_docs_href: str | None = None, area: References | None = None) -> str:
    """A readable page in Swedish and English: what failed, how many records, which IDs, masked examples.

    ``report`` is read through ``area`` when it is an object in the working bucket."""
    e = html.escape
    checks = []
    plain: list[str] = []
    data = read_report(report, area)
    if data is not None:
        failed = [c for c in data.get("checks", []) if not c.get("success")]
        for c in failed:
            title, why = _in_words(c)
            names = c.get("records") or c.get("offending_ids") or []
            ids = ", ".join(e(scrub(str(i))) for i in names[:200])
            # Examples were masked when the report was written; scrubbed again here in case
            # the report came from an older version.
            examples = "<br>".join(f"{e(scrub(str(x.get('value'))))}" + (f" ({x['count']})" if x.get("count")
                                                                            else "")
                                   for x in c.get("examples") or [])
            mark = " <em>(känslig / sensitive)</em>" if c.get("sensitive") else ""
            technical = e(c.get("expectation", "")) + (f" ({e(c['kwargs'])})" if c.get("kwargs") else "")
            checks.append(f"<tr><td>{e(c.get('table', ''))}</td><td><strong>{e(title['sv'])}</strong><br>"
                          f"{e(title['en'])}<br><small class=\"tech\">{technical}</small></td>"
                          f"<td>{e(str(c.get('column') or ''))}{mark}</td><td>{c.get('unexpected_count', 0)}</td>"
                          f"<td>{e(why['sv'])}<br><em>{e(why['en'])}</em></td><td><code>{ids}</code></td>"
                          f"<td><code>{examples}</code></td></tr>")
            plain.append(f"{c.get('table', '')}: {title['sv']} / {title['en']}: {c.get('unexpected_count', 0)} "
                         "post(er) / record(s)")
        # The checks' own reasons are told in words above; any other reason (a document that is
        # not its record's own) is kept as given.
        told = {f"{c.get('table')}: {c.get('expectation')}" for c in failed}
        told |= {f"{c.get('table')}: {_in_words(c)[0]['sv']}" for c in failed}
        reasons = plain + [r for r in reasons if not any(r.startswith(t) for t in told)]
    rows = "".join(checks)
    items = "".join(f"<li>{e(scrub(r))}</li>" for r in reasons)
    docs_link = (f'<p><small>Teknisk bilaga / Technical appendix: <a href="{e(data_docs_href)}">alla kontroller i '
                 f"detalj / every check in detail</a></small></p>" if data_docs_href else "")
    return f"""<!DOCTYPE html>
<html lang="sv"><head><meta charset="utf-8"><title>Karantän / Quarantine: {e(batch_id)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #999;
padding:4px 8px;text-align:left;vertical-align:top}}</style></head><body>
<h1>Karantän / Quarantine</h1>
<p><strong>System:</strong> {e(system)} &nbsp; <strong>Leverans / Batch:</strong> {e(batch_id)} &nbsp;
<strong>Slag / Kind:</strong> {e(kind)}</p>
<p>{WHAT_HAPPENED.get(kind, WHAT_HAPPENED["quality"])}</p>
<h2>Orsaker / Reasons</h2><ul>{items}</ul>
{"<h2>Kontroller som inte uppfylldes / Failed checks</h2><table><tr><th>Tabell / Table</th><th>Kontroll / Check</th>"
 "<th>Kolumn / Column</th><th>Antal poster / Records</th><th>Varför / Why it matters</th>"
 "<th>Vilka poster / Which records</th><th>Exempel (antal) / Examples (count)</th></tr>" + rows + "</table>"
 if rows else ""}
{docs_link}
<p><small>Rapporten visar postidentiteter, antal och några exempelvärden; värden i känsliga kolumner och allt
som liknar ett personnummer är maskerade. / The report shows record IDs, counts and a few example values;
values of sensitive columns and anything shaped like a personnummer are masked.</small></p>
</body></html>
"""


def _in_words(check: dict) -> tuple[dict[str, str], dict[str, str]]:
    """A failed check's headline and why it matters, in Swedish and English; a report written before the
    report carried its own wording gets it from the same table the quality gate uses."""
    title, why = check.get("title"), check.get("why")
    if not (isinstance(title, dict) and isinstance(why, dict)):
        from transforms.quality.checks import check_texts

        texts = check_texts(str(check.get("expectation", "")), {}, table=str(check.get("table", "")),
                            column=check.get("column"))
        title = title if isinstance(title, dict) else texts["title"]
        why = why if isinstance(why, dict) else {"sv": texts["why"]["sv"], "en": check.get("notes") or
                                                 texts["why"]["en"]}
    return ({"sv": str(title.get("sv", "")), "en": str(title.get("en", ""))},
            {"sv": str(why.get("sv", "")), "en": str(why.get("en", ""))})


def cases(cat: Catalogue, status: str | None = None) -> list[QuarantineCase]:
    with cat.session() as s:
        q = sa.select(QuarantineCase).order_by(QuarantineCase.created_at)
        if status:
            q = q.where(QuarantineCase.status == status)
        return list(s.scalars(q))


#: where a decision was made, as its event names it
SURFACES = {"cli": "with `arkiv quarantine`", "page": f"on the {SOFTWARE_NAME} page",
            "airflow": "in Airflow's Required actions"}


def decide(cat: Catalogue, case_id: str, *, approve: bool, by: str | Person, justification: str,
           via: str | None = None) -> QuarantineCase:
    """Approve with a deviation, or reject; the decision is an event and is kept with the case.

    Every surface (the CLI, the Arkivflöde page, Airflow's *Required actions*) decides through
    here, so a case is decided once: the status changes from ``open`` in one conditional update,
    and a second decision, from wherever, finds the case no longer open and is refused with
    ValueError. ``by`` is who decides: a :class:`Person` (the signed-in person, the Airflow user),
    whose identifier is kept on the case (``decided_by_id``) and who is the event's agent (name,
    identifier, roles then), the software its executing agent; an authenticated person without the
    archivist role is refused with :class:`DecisionRefused`. A bare name is kept as it is given,
    without an identifier (callers that know no more than a name). ``via`` (a key of
    :data:`SURFACES`) is named in the event.
    """
    justification = justification.strip()
    name = by.name if isinstance(by, Person) else (by or "")
    if not justification or not name.strip():
        what = "approval with a deviation" if approve else "a rejection"
        raise ValueError(f"{what} needs who decided (--by) and a justification (--reason): it is kept for ever")
    who = by if isinstance(by, Person) else None
    if who is not None and who.authenticated and "archivist" not in who.roles:
        raise DecisionRefused(f"{who.name} does not hold the archivist role; deciding quarantine case {case_id} is "
                              "an archivist's decision")
    now = utcnow()
    status = "approved" if approve else "rejected"
    with cat.session() as s:
        done = s.execute(sa.update(QuarantineCase)
                         .where(QuarantineCase.id == case_id, QuarantineCase.status == "open")
                         .values(status=status, decided_by=name.strip(), decided_by_id=who.id if who else None,
                                 decided_at=now, justification=justification))
        if done.rowcount != 1:
            raise ValueError(f"quarantine case {case_id} is not awaiting a decision")
        case = s.get(QuarantineCase, case_id)
        what = ("approved with deviation — the batch may be archived; the deviation is recorded in its PREMIS"
                if approve else "rejected — the system owner must correct the source; a later run picks it up")
        where = f" {SURFACES[via]}" if via in SURFACES else ""
        signed = f" by {who.name} ({who.id})" if who is not None and who.authenticated else ""
        cat.add_event(s, type="decision", outcome="success" if approve else "failure", agent=who or name.strip(),
                      executing_agent=AGENT, batch_id=case.batch_id,
                      detail=safe_line(f"quarantine case {case_id} {what}{where}{signed}. Reasons: "
                                       f"{'; '.join(json.loads(case.reasons))}. Justification: {justification}"))
        return case


def case_status(cat: Catalogue, case_id: str) -> str | None:
    """A case's status (``open``, ``approved``, ``rejected``), None when there is no such case."""
    with cat.session() as s:
        return s.scalar(sa.select(QuarantineCase.status).where(QuarantineCase.id == case_id))


def get_case(cat: Catalogue, case_id: str) -> QuarantineCase | None:
    with cat.session() as s:
        return s.get(QuarantineCase, case_id)


def latest_case(cat: Catalogue, batch_id: str, content_state: dict, kind: str = "quality") -> QuarantineCase | None:
    """The newest case of ``kind`` for exactly this content of this batch, whatever its status."""
    state = json.dumps(content_state, sort_keys=True)
    with cat.session() as s:
        q = (sa.select(QuarantineCase).where(QuarantineCase.batch_id == batch_id, QuarantineCase.kind == kind,
                                             QuarantineCase.content_state == state)
             .order_by(QuarantineCase.created_at.desc()))
        return s.scalars(q).first()


def approved_deviation(cat: Catalogue, batch_id: str, content_state: dict) -> QuarantineCase | None:
    """An approved case for exactly this content of this batch (a changed source needs a new decision)."""
    state = json.dumps(content_state, sort_keys=True)
    with cat.session() as s:
        q = (sa.select(QuarantineCase).where(QuarantineCase.batch_id == batch_id, QuarantineCase.status == "approved",
                                             QuarantineCase.kind == "quality", QuarantineCase.content_state == state)
             .order_by(QuarantineCase.decided_at.desc()))
        return s.scalars(q).first()
