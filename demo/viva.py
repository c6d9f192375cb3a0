"""Simulator of Viva, Eskilstuna kommun's social-services case system (Socialförvaltningen).

``generate`` (re)creates Viva's schema in any SQLAlchemy database (the same Core DDL on
SQLite, PostgreSQL and MariaDB/MySQL) and fills it with synthetic personakter under SoL and
LSS: individuals, case files, their parties, journal notes, decisions and attached
documents, the latter written as real PDF/DOCX/TXT files under ``files_dir``. Everything
derives from ``random.Random(seed)``: one seed gives identical rows and file bytes.

With ``bad=N`` it appends N extra case files (closed in ``year``) for each kind in
:data:`BAD_KINDS`, each with exactly that one defect; the valid rows are the same as with
``bad=0``.

Run ``python -m demo.viva --url sqlite:///var/demo/viva.sqlite --files var/demo/viva-files``.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from demo import _simulator as sim
from demo import socialtjanst as st
from demo.socialtjanst import Summary

__all__ = ["BAD_KINDS", "Summary", "generate", "main", "metadata"]

BAD_KINDS = (
    "invalid_personnummer",
    "decision_without_legal_basis",
    "note_before_case_opened",
    "missing_file",
    "case_without_individual",
    "closed_before_opened",
)
MUNICIPALITY = "Eskilstuna kommun"
# Lists the files written by the last run, so a rerun removes exactly those.
MANIFEST = ".viva-simulator-files"
CASE_NUMBER_RE = r"^(?:EB|BOU|MIV|ÄO|LSS)-\d{4}-\d{5}$"

# ---------------------------------------------------------------------------- schema

metadata = sa.MetaData()

individuals_table = sa.Table(
    "individuals",
    metadata,
    sa.Column("individual_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("personnummer", sa.String(13), nullable=False, unique=True),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("protected_identity", sa.Boolean, nullable=False),  # skyddad identitet
)

case_files_table = sa.Table(
    "case_files",
    metadata,
    sa.Column("case_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("case_number", sa.String(20), nullable=False, unique=True),
    # No foreign key: Viva's migration from the previous system left this reference
    # unenforced, which is how case files without an individual can exist at all.
    sa.Column("individual_id", sa.Integer, nullable=False),
    sa.Column("case_type", sa.String(80), nullable=False),
    sa.Column("law", sa.String(3), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("opened_date", sa.Date, nullable=False),
    sa.Column("closed_date", sa.Date, nullable=True, index=True),
    sa.Column("unit", sa.String(120), nullable=False),
    sa.Column("case_officer", sa.String(120), nullable=False),
    sa.Column("secrecy", sa.Boolean, nullable=False),
    sa.Column("secrecy_reference", sa.String(40), nullable=True),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

case_parties_table = sa.Table(
    "case_parties",
    metadata,
    sa.Column("party_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("case_files.case_id"), nullable=False),
    sa.Column("individual_id", sa.Integer, sa.ForeignKey("individuals.individual_id"), nullable=False),
    sa.Column("role", sa.String(30), nullable=False),
)

journal_notes_table = sa.Table(
    "journal_notes",
    metadata,
    sa.Column("note_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("case_files.case_id"), nullable=False),
    sa.Column("note_date", sa.Date, nullable=False),
    sa.Column("note_type", sa.String(40), nullable=False),
    sa.Column("author", sa.String(120), nullable=False),
    sa.Column("note_text", sa.Text, nullable=False),
)

decisions_table = sa.Table(
    "decisions",
    metadata,
    sa.Column("decision_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("case_files.case_id"), nullable=False),
    sa.Column("decision_date", sa.Date, nullable=False),
    sa.Column("decision_type", sa.String(120), nullable=False),
    sa.Column("legal_basis", sa.String(40), nullable=True),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("valid_from", sa.Date, nullable=True),
    sa.Column("valid_to", sa.Date, nullable=True),
    sa.Column("amount", sa.Numeric(12, 2), nullable=True),
    sa.Column("decided_by", sa.String(120), nullable=False),
)

documents_table = sa.Table(
    "documents",
    metadata,
    sa.Column("document_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("case_files.case_id"), nullable=False),
    sa.Column("document_number", sa.Integer, nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("direction", sa.String(10), nullable=False),
    sa.Column("document_date", sa.Date, nullable=False),
    sa.Column("file_name", sa.String(200), nullable=False),
    sa.Column("file_path", sa.String(300), nullable=False),
    sa.Column("mime_type", sa.String(100), nullable=False),
)

TABLES = (individuals_table, case_files_table, case_parties_table, journal_notes_table, decisions_table,
          documents_table)

# --------------------------------------------------------------------------- generation


class _Viva:
    """Draws Viva's case files from one rng and turns them into rows and files."""

    def __init__(self, seed: int, year: int):
        self.rng = random.Random(seed)
        self.year = year
        self.until = dt.date(year + 1, 3, 31)  # the notional extraction day
        self.domain = st.Domain(self.rng, municipality=MUNICIPALITY, pnr_today=dt.date(year + 1, 1, 1))
        self.serials: dict[tuple[str, int], int] = {}
        self.missing_files: set[int] = set()  # document ids whose file is never written
        self.orphans: dict[int, int] = {}  # case id -> the individual id it points to
        self.closed_rows: dict[int, dt.date] = {}  # case id -> closed_date as (mis)registered

    def draft(self, mode: str) -> tuple[st.CaseType, dt.date, dt.date | None]:
        """Case type and dates for ``mode``: closed_in_year, closed_next_year or open."""
        r, y = self.rng, self.year
        ctype = r.choices(st.CASE_TYPES, weights=[t.weight for t in st.CASE_TYPES])[0]
        # Försörjningsstöd and investigations are short; LSS and elderly care run for years.
        mean = {"EB": 150, "BOU": 120, "MIV": 240, "ÄO": 500, "LSS": 700}[ctype.code]
        earliest = dt.date(y - 4, 1, 1)
        if mode == "closed_in_year":
            closed = sim.days_between(r, dt.date(y, 1, 1), dt.date(y, 12, 31))
        elif mode == "closed_next_year":
            closed = sim.days_between(r, dt.date(y + 1, 1, 1), self.until)
        else:
            closed = None
        anchor = closed or sim.days_between(r, dt.date(y, 1, 1), dt.date(y, 12, 31))
        duration, span = int(r.expovariate(1 / mean)) + 7, (anchor - earliest).days
        if duration > span:  # files older than Viva's migration were opened within it, spread out
            duration = r.randint(7, span)
        return ctype, anchor - dt.timedelta(days=duration), closed

    def number(self, ctype: st.CaseType, opened: dt.date) -> str:
        key = (ctype.code, opened.year)
        self.serials[key] = self.serials.get(key, self.rng.randint(0, 40)) + self.rng.choice([1, 1, 2, 3])
        return f"{ctype.code}-{opened.year}-{self.serials[key]:05d}"

    def case(self, case_id: int, mode: str, *, ctype: st.CaseType | None = None,
             opened: dt.date | None = None, closed: dt.date | None = None) -> st.CaseFile:
        drawn_type, drawn_opened, drawn_closed = self.draft(mode)
        ctype, opened = ctype or drawn_type, opened or drawn_opened
        closed = closed or drawn_closed
        return self.domain.case_file(case_id, self.number(ctype, opened), ctype, opened, closed, until=self.until)

    # -- rows

    def rows(self, files: dict[str, tuple[st.Document, st.CaseFile]]) -> dict[str, list[dict]]:
        d = self.domain
        persons = sorted(d.persons, key=lambda p: p.id)
        out: dict[str, list[dict]] = {t.name: [] for t in TABLES}
        out["individuals"] = [
            {"individual_id": p.id, "personnummer": p.personnummer, "name": p.name, "protected_identity": p.protected}
            for p in persons
        ]
        for c in sorted(d.cases, key=lambda c: c.id):
            last = c.last_note or c.opened
            minute = (c.id * 37) % 600  # a working-day time, derived rather than drawn
            out["case_files"].append({
                "case_id": c.id,
                "case_number": c.number,
                "individual_id": self.orphans.get(c.id, c.subject_id),
                "case_type": c.type.title,
                "law": c.type.law,
                "status": "avslutad" if c.closed else "aktiv",
                "opened_date": c.opened,
                "closed_date": self.closed_rows.get(c.id, c.closed),
                "unit": f"Socialförvaltningen, {c.type.unit}",
                "case_officer": c.officer,
                "secrecy": True,
                "secrecy_reference": st.SECRECY_REFERENCE,
                "updated_at": dt.datetime.combine(last, dt.time(8 + minute // 60, minute % 60)),
            })
            for party_id, person, role in c.parties:
                if c.id in self.orphans and person is c.subject:
                    continue  # the individual is gone; so is the link
                out["case_parties"].append(
                    {"party_id": party_id, "case_id": c.id, "individual_id": person.id, "role": role})
            for n in c.notes:
                out["journal_notes"].append({"note_id": n.id, "case_id": c.id, "note_date": n.date,
                                             "note_type": n.kind, "author": n.author, "note_text": n.text})
            for dec in c.decisions:
                out["decisions"].append({
                    "decision_id": dec.id, "case_id": c.id, "decision_date": dec.date, "decision_type": dec.type,
                    "legal_basis": dec.legal_basis, "outcome": dec.outcome, "valid_from": dec.valid_from,
                    "valid_to": dec.valid_to, "amount": dec.amount, "decided_by": dec.decided_by,
                })
            for doc in c.documents:
                path = f"{c.opened.year}/{c.number}/{doc.number:02d} {doc.file_name}"
                out["documents"].append({
                    "document_id": doc.id, "case_id": c.id, "document_number": doc.number, "title": doc.title,
                    "direction": doc.direction, "document_date": doc.date, "file_name": doc.file_name,
                    "file_path": path, "mime_type": doc.mime_type,
                })
                if doc.id not in self.missing_files:
                    files[path] = (doc, c)
        for t in out.values():
            t.sort(key=lambda row: next(iter(row.values())))  # by primary key (the first column)
        return out


def _plant_bad(g: _Viva, bad: int, next_id: int) -> None:
    """Append ``bad`` case files of each kind in BAD_KINDS, closed in ``g.year``."""
    r, y, d = g.rng, g.year, g.domain
    for kind in BAD_KINDS:
        for i in range(bad):
            if kind == "closed_before_opened":
                # Opened in spring or later; the closing date was typed as a day before it.
                opened = sim.days_between(r, dt.date(y, 3, 1), dt.date(y, 10, 31))
                c = g.case(next_id, "closed_in_year", opened=opened,
                           closed=sim.days_between(r, opened + dt.timedelta(days=7), dt.date(y, 12, 31)))
                g.closed_rows[c.id] = opened - dt.timedelta(days=r.randint(1, 45))
            else:
                c = g.case(next_id, "closed_in_year")
            next_id += 1
            if kind == "invalid_personnummer":
                c.subject.personnummer = sim.wrong_check_digit(r, c.subject.personnummer)
            elif kind == "decision_without_legal_basis":
                d.drop_legal_basis(c)
            elif kind == "note_before_case_opened":
                when = c.opened - dt.timedelta(days=r.randint(1, 60))
                c.notes.insert(0, st.Note(d.next_id("note"), when, "Telefonsamtal", c.officer,
                                          "Anteckning registrerad i fel akt vid migreringen."))
            elif kind == "missing_file":
                g.missing_files.add(c.documents[-1].id)
            elif kind == "case_without_individual":
                d.persons.remove(c.subject)
                g.orphans[c.id] = 900_000 + i
            # closed_before_opened is set above through closed_rows.


def generate(url: str, files_dir: Path, *, size: int = 100, seed: int = 1, year: int = 2025,
             bad: int = 0) -> Summary:
    """(Re)create the Viva database at ``url`` and its document files under ``files_dir``.

    ``size`` case files (personakter): about 80 % closed in ``year`` (what a yearly
    extraction takes), 10 % still open and 10 % closed early in ``year + 1``; each with its
    individual and co-parties, 2–8 journal notes, 0–4 decisions and 1–4 documents. ``bad``
    appends that many case files of each kind in :data:`BAD_KINDS`. Same arguments ⇒
    identical rows and file bytes.
    """
    if size < 0 or bad < 0:
        raise ValueError("size and bad must not be negative")
    files_dir = Path(files_dir)
    g = _Viva(seed, year)
    modes = g.rng.choices(["closed_in_year", "open", "closed_next_year"], weights=[80, 10, 10], k=size)
    drafts = [g.draft(m) for m in modes]
    # Case ids follow the opening order, as in the source system.
    drafts.sort(key=lambda t: t[1])
    for case_id, (ctype, opened, closed) in enumerate(drafts, start=1):
        g.domain.case_file(case_id, g.number(ctype, opened), ctype, opened, closed, until=g.until)
    # Everything bad is drawn after everything valid: bad=N is bad=0 plus the planted rows.
    _plant_bad(g, bad, size + 1)

    files: dict[str, tuple[st.Document, st.CaseFile]] = {}
    rows = g.rows(files)

    sim.replace_tables(url, metadata, ((table, rows[table.name]) for table in TABLES))
    total = sim.write_listed(files_dir, MANIFEST, (
        (rel, st.render_document(doc, c, municipality=MUNICIPALITY, unit=c.type.unit))
        for rel, (doc, c) in sorted(files.items())))

    counts = {"individuals": len(rows["individuals"]), "case_files": len(rows["case_files"]),
              "case_parties": len(rows["case_parties"]), "journal_notes": len(rows["journal_notes"]),
              "decisions": len(rows["decisions"]), "documents": len(rows["documents"]), "files": len(files)}
    return Summary("Viva", counts, total, dict.fromkeys(BAD_KINDS, bad))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m demo.viva --url URL --files DIR [--size N --seed S --year Y --bad B]``."""
    parser = sim.parser("demo.viva", __doc__)
    parser.add_argument("--url", default="sqlite:///var/demo/viva.sqlite", help="SQLAlchemy database URL")
    parser.add_argument("--files", default="var/demo/viva-files", type=Path, help="folder for the document files")
    parser.add_argument("--size", type=int, default=100, help="number of case files (personakter)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--year", type=int, default=2025, help="the year whose closed case files an extraction takes")
    parser.add_argument("--bad", type=int, default=0, help="bad case files of each kind to plant")
    args = parser.parse_args(argv)
    sim.report(lambda: generate(args.url, args.files, size=args.size, seed=args.seed, year=args.year, bad=args.bad))
    return 0


if __name__ == "__main__":
    sys.exit(main())
