"""Simulator of Treserva's monthly archive export, Strängnäs kommun (Socialförvaltningen).

Treserva is another supplier's social-services system; it does not let us read its database
but drops a delivery into an inbox once a month: the personakter closed that month, as
semicolon-separated CSV in windows-1252 with CRLF line ends, Swedish column names, decimal
commas in amounts and journal text that holds ';', quotes and line breaks — plus the attached
documents and a ``manifest.json`` with every file's size and SHA-256.

``generate`` writes the delivery ``<inbox>/<period>/`` (replacing an existing one). With
``bad=N`` it appends N akter of each kind in :data:`BAD_KINDS` (content errors the quality
gate must catch); ``defect`` instead breaks the delivery itself in one way of
:data:`DEFECTS` (what the reader must quarantine before a row is staged). Everything derives
from ``random.Random`` seeded with ``seed`` and ``period``; ``created`` in the manifest is
derived from the period, never the clock.

Run ``python -m demo.treserva --inbox var/inbox/treserva --period 2025-12``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
import re
import shutil
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from demo import _simulator as sim
from demo import socialtjanst as st
from demo.socialtjanst import Summary

__all__ = ["BAD_KINDS", "DEFECTS", "FILES", "Summary", "generate", "main"]

BAD_KINDS = (
    "invalid_personnummer",
    "decision_without_legal_basis",
    "closed_before_opened",
    "missing_file",
    "case_without_individual",
    "negative_amount",
)
DEFECTS = sim.DELIVERY_DEFECTS  # what the file-export reader must quarantine
MUNICIPALITY = "Strängnäs kommun"
ENCODING = "windows-1252"
AKTNUMMER_RE = r"^\d{4}-\d{2}-\d{5}$"

# Table file -> its columns, in the order of the export specification.
FILES: dict[str, tuple[str, ...]] = {
    "akter.csv": ("akt_id", "aktnummer", "klient_id", "personnr", "fodelsedag", "akttyp", "lagstiftning",
                  "placerad", "status", "oppnad", "avslutad", "senaste_anteckning", "enhet", "handlaggare",
                  "sekretess", "sekretess_lagrum"),
    "parter.csv": ("part_id", "akt_id", "klient_id", "personnr", "namn", "roll", "skyddad_identitet"),
    "journal.csv": ("anteckning_id", "akt_id", "datum", "anteckningstyp", "signerad_av", "text"),
    "beslut.csv": ("beslut_id", "akt_id", "beslutsdatum", "insats", "lagrum", "utfall", "giltig_from", "giltig_tom",
                   "belopp", "beslutsfattare"),
    "dokument.csv": ("dokument_id", "akt_id", "dokumentnummer", "titel", "riktning", "dokumentdatum", "filnamn",
                     "fil", "mimetyp"),
}
# Treserva's own words for a document's direction.
RIKTNING = {"incoming": "inkommande", "outgoing": "utgående", "internal": "upprättad"}
_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def _period_bounds(period: str) -> tuple[dt.date, dt.date]:
    m = _PERIOD.match(period)
    if not m:
        raise ValueError(f"period must be YYYY-MM, got {period!r}")
    first = dt.date(int(m[1]), int(m[2]), 1)
    return first, sim.month_end(first)


def _text(v: object) -> str:
    """A value as Treserva writes it: ISO dates, ja/nej, decimal comma, empty for null."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "ja" if v else "nej"
    if isinstance(v, Decimal):
        return f"{v:.2f}".replace(".", ",")
    if isinstance(v, dt.date):
        return v.isoformat()
    return str(v)


def _csv_bytes(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> bytes:
    out = io.StringIO(newline="")
    # QUOTE_MINIMAL: only fields holding ';', '"' or a line break are quoted, as Treserva does.
    writer = csv.writer(out, delimiter=";", quotechar='"', lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    writer.writerows([[_text(v) for v in row] for row in rows])
    return out.getvalue().encode(ENCODING)


class _Treserva:
    def __init__(self, seed: int, period: str):
        # The period is part of the seed: each month's delivery is different but reproducible.
        self.rng = random.Random(f"treserva-{seed}-{period}")
        self.first, self.last = _period_bounds(period)
        base = ((self.first.year - 2000) * 12 + self.first.month) * 10_000  # ids unique across months
        self.base = base
        self.domain = st.Domain(self.rng, municipality=MUNICIPALITY, pnr_today=self.last)
        self.serial = self.rng.randint(100, 900)
        self.closed_rows: dict[int, dt.date] = {}
        self.orphans: set[int] = set()
        self.missing_files: set[int] = set()
        self.negative: set[int] = set()  # decision ids with a sign error

    def case(self) -> st.CaseFile:
        r = self.rng
        ctype = r.choices(st.CASE_TYPES, weights=[t.weight for t in st.CASE_TYPES])[0]
        closed = sim.days_between(r, self.first, self.last)
        mean = {"EB": 150, "BOU": 120, "MIV": 240, "ÄO": 500, "LSS": 700}[ctype.code]
        opened = closed - dt.timedelta(days=min(int(r.expovariate(1 / mean)) + 7, 3650))
        self.serial += r.choice([1, 1, 2])
        number = f"{self.first.year}-{self.first.month:02d}-{self.serial:05d}"
        case_id = self.base + len(self.domain.cases) + 1
        return self.domain.case_file(case_id, number, ctype, opened, closed, until=closed)

    def tables(self) -> tuple[dict[str, list[list[object]]], dict[str, tuple[st.Document, st.CaseFile]]]:
        rows: dict[str, list[list[object]]] = {name: [] for name in FILES}
        docs: dict[str, tuple[st.Document, st.CaseFile]] = {}
        for c in self.domain.cases:
            s = c.subject
            orphan = c.id in self.orphans
            day = None if orphan else f"{int(s.personnummer[6:8]) % 60:02d}"
            placed = any(d.type in st.PLACEMENT_DECISIONS and d.outcome != "avslag" for d in c.decisions)
            rows["akter.csv"].append([
                c.id, c.number, 100_000 + c.subject_id, None if orphan else s.personnummer.replace("-", ""), day,
                c.type.title, c.type.law, "ja" if placed else "nej", "Avslutad", c.opened,
                self.closed_rows.get(c.id, c.closed), c.last_note, f"Socialförvaltningen, {c.type.unit}", c.officer,
                True, st.SECRECY_REFERENCE,
            ])
            for party_id, person, role in c.parties:
                if orphan and person is s:
                    continue
                rows["parter.csv"].append([
                    self.base + party_id, c.id, 100_000 + person.id, person.personnummer.replace("-", ""),
                    f"{person.last_name}, {person.first_name}", role, person.protected,
                ])
            for n in c.notes:
                rows["journal.csv"].append([self.base + n.id, c.id, n.date, n.kind, n.author, n.text])
            for d in c.decisions:
                amount = -d.amount if d.id in self.negative else d.amount
                rows["beslut.csv"].append([
                    self.base + d.id, c.id, d.date, d.type, d.legal_basis, d.outcome, d.valid_from, d.valid_to,
                    amount, d.decided_by,
                ])
            for doc in c.documents:
                ext = "txt" if doc.fmt == "txt" else doc.fmt
                path = f"dokument/{self.base + doc.id}.{ext}"
                rows["dokument.csv"].append([
                    self.base + doc.id, c.id, doc.number, doc.title, RIKTNING[doc.direction], doc.date,
                    doc.file_name, path, doc.mime_type,
                ])
                if doc.id not in self.missing_files:
                    docs[path] = (doc, c)
        return rows, docs


def _plant_bad(g: _Treserva, bad: int) -> None:
    r, d = g.rng, g.domain
    for kind in BAD_KINDS:
        for _ in range(bad):
            c = g.case()
            if kind == "invalid_personnummer":
                c.subject.personnummer = sim.wrong_check_digit(r, c.subject.personnummer)
            elif kind == "decision_without_legal_basis":
                d.drop_legal_basis(c)
            elif kind == "closed_before_opened":
                g.closed_rows[c.id] = c.opened - dt.timedelta(days=r.randint(1, 45))
            elif kind == "missing_file":
                g.missing_files.add(c.documents[-1].id)
            elif kind == "case_without_individual":
                g.orphans.add(c.id)
            elif kind == "negative_amount":
                # An återkrav booked as a negative bistånd: only ekonomiskt bistånd has amounts.
                dec = st.Decision(d.next_id("decision"), c.closed, "Försörjningsstöd", "4 kap. 1 § SoL", "bifall",
                                  c.closed.replace(day=1), sim.month_end(c.closed), Decimal("4250.00"), c.officer)
                c.decisions.append(dec)
                g.negative.add(dec.id)


def _apply_defect(defect: str, files: dict[str, bytes], rows: dict[str, list[list[object]]]) -> None:
    """Break the table files before the manifest is made (the manifest then agrees with them)."""
    if defect == "wrong_encoding":
        data = files["journal.csv"]
        at = data.index("ä".encode(ENCODING))
        files["journal.csv"] = data[:at] + b"\x81" + data[at + 1 :]  # 0x81 is undefined in windows-1252
    elif defect == "ragged_row":
        broken = [list(r) for r in rows["beslut.csv"]]
        broken[len(broken) // 2] = broken[len(broken) // 2][:-1]  # beslutsfattare missing
        files["beslut.csv"] = _csv_bytes(FILES["beslut.csv"], broken)
    elif defect == "unknown_column":
        extended = [[*r, "Arkiverad"] for r in rows["akter.csv"]]
        files["akter.csv"] = _csv_bytes((*FILES["akter.csv"], "arkivstatus"), extended)
    elif defect == "bad_value":
        broken = [list(r) for r in rows["beslut.csv"]]
        broken[0][FILES["beslut.csv"].index("beslutsdatum")] = "2025-02-30"
        files["beslut.csv"] = _csv_bytes(FILES["beslut.csv"], broken)


def _write_delivery(folder: Path, files: dict[str, bytes], manifest: bytes, defect: str | None) -> None:
    """Write the delivery beside its final place, break it after the manifest if asked, swap it in."""
    with sim.swapped_in(folder) as work:
        for rel, data in files.items():
            sim.write_atomic(work / rel, data)
        (work / "manifest.json").write_bytes(manifest)
        _break_after_manifest(work, sorted(rel for rel in files if rel.startswith("dokument/")), defect)


def _break_after_manifest(work: Path, docs: list[str], defect: str | None) -> None:
    """The defects only the manifest shows: a damaged, a missing or an unlisted document file."""
    if defect == "checksum_mismatch":
        path = work / docs[0]
        data = bytearray(path.read_bytes())
        data[-1] ^= 0x20  # same size, different bytes: damaged in transfer
        path.write_bytes(bytes(data))
    elif defect == "missing_file":
        (work / docs[-1]).unlink()
    elif defect == "unlisted_file":
        first = work / docs[0]
        shutil.copyfile(first, first.with_name(f"{first.stem} (2){first.suffix}"))  # a stray copy


def generate(inbox: Path, *, period: str = "2025-12", size: int = 100, seed: int = 1, bad: int = 0,
             defect: str | None = None) -> Summary:
    """Write Treserva's delivery ``<inbox>/<period>/`` and return what it holds.

    ``size`` akter (personakter) closed in the month ``period``, each with its parties,
    journal notes, decisions and documents. ``bad`` appends that many akter of each kind in
    :data:`BAD_KINDS`; ``defect`` (one of :data:`DEFECTS`) breaks the delivery itself.
    Same arguments ⇒ identical bytes in every file.
    """
    if size < 0 or bad < 0:
        raise ValueError("size and bad must not be negative")
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"defect must be one of {DEFECTS}, got {defect!r}")
    if defect and size < 2:
        raise ValueError("a defect needs at least two akter to break")
    g = _Treserva(seed, period)
    for _ in range(size):
        g.case()
    _plant_bad(g, bad)  # after every valid akt: bad=N is bad=0 plus the planted ones
    rows, docs = g.tables()

    files: dict[str, bytes] = {name: _csv_bytes(cols, rows[name]) for name, cols in FILES.items()}
    if defect:
        _apply_defect(defect, files, rows)
    for rel, (doc, c) in sorted(docs.items()):
        files[rel] = st.render_document(doc, c, municipality=MUNICIPALITY, unit=c.type.unit)
    created = dt.datetime.combine(g.last + dt.timedelta(days=1), dt.time(3, 0))
    manifest = sim.delivery_manifest("treserva", period, created, files)
    inbox = Path(inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    _write_delivery(inbox / period, files, manifest, defect)

    counts = {"akter": len(rows["akter.csv"]), "parter": len(rows["parter.csv"]),
              "journalanteckningar": len(rows["journal.csv"]), "beslut": len(rows["beslut.csv"]),
              "dokument": len(rows["dokument.csv"]), "files": len(docs)}
    return Summary("Treserva", counts, sum(len(b) for b in files.values()), dict.fromkeys(BAD_KINDS, bad), defect)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m demo.treserva --inbox DIR [--period P --size N --seed S --bad B --defect D]``."""
    parser = sim.parser("demo.treserva", __doc__)
    parser.add_argument("--inbox", default="var/inbox/treserva", type=Path, help="the inbox folder")
    parser.add_argument("--period", default="2025-12", help="the month delivered, YYYY-MM")
    parser.add_argument("--size", type=int, default=100, help="number of akter (personakter)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bad", type=int, default=0, help="bad akter of each kind to plant")
    parser.add_argument("--defect", choices=DEFECTS, help="break the delivery in this one way")
    args = parser.parse_args(argv)
    sim.report(lambda: generate(args.inbox, period=args.period, size=args.size, seed=args.seed, bad=args.bad,
                                defect=args.defect))
    return 0


if __name__ == "__main__":
    sys.exit(main())
