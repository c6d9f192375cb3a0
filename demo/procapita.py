"""Simulator of ProCapita, the social-services system of Enköping kommun (äldreomsorg).

``generate`` (re)creates a ProCapita-like schema in any SQLAlchemy database (the same Core
DDL on SQLite, PostgreSQL and MariaDB) and fills it with synthetic but realistic data from
Vård- och omsorgsförvaltningen's biståndsenhet: clients (brukare), assistance cases
(biståndsärenden) with their decisions (biståndsbeslut enligt 4 kap. 1 § SoL), the
implementation plans (genomförandeplaner) and social documentation the home-care and
nursing-home staff write, and the case documents as real PDF and DOCX files.

Everything derives from ``random.Random(seed)``: one seed gives identical rows and file
bytes on every run. With ``bad=N`` it plants N rows of each kind in :data:`BAD_KINDS`, each
on a case of its own closed in ``year``, after all valid rows (so bad=N is bad=0 plus them).

Run ``python -m demo.procapita --url sqlite:///var/demo/procapita.sqlite --files var/demo/procapita-files``.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from demo import _simulator as sim
from demo import documents as docs
from demo import names
from transforms.common.identifiers import make_personnummer

BAD_KINDS = (
    "invalid_personnummer",
    "decision_without_legal_basis",
    "plan_before_decision",
    "negative_hours",
    "missing_file",
    "closed_before_opened",
)

MUNICIPALITY = "Enköping kommun"
UNIT = "Vård- och omsorgsförvaltningen, Biståndsenheten"
LEGAL_BASIS = "4 kap. 1 § SoL"
SECRECY_REFERENCE = "OSL 26 kap. 1 §"  # socialtjänstsekretess: every case is secret
CLASSIFICATION_CODE = "4.2.1"  # KLASSA: Omsorg och stöd / Äldreomsorg / Handlägga bistånd
CASE_NUMBER_RE = re.compile(r"^BIS-\d{4}-\d{5}$")

# Lists the files written by the last run, so a rerun removes exactly those (a stale file
# could otherwise sit where a "missing_file" row points) and never touches anything else.
MANIFEST = ".procapita-simulator-files"

# ---------------------------------------------------------------------------- schema

metadata = sa.MetaData()

clients_table = sa.Table(
    "clients",
    metadata,
    sa.Column("client_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("personnummer", sa.String(13), nullable=False, index=True),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("address", sa.String(120), nullable=True),
    sa.Column("locality", sa.String(60), nullable=True),
)

cases_table = sa.Table(
    "cases",
    metadata,
    sa.Column("case_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("case_number", sa.String(20), nullable=False, unique=True),
    sa.Column("client_id", sa.Integer, sa.ForeignKey("clients.client_id"), nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("unit", sa.String(120), nullable=False),
    sa.Column("case_officer", sa.String(120), nullable=False),
    sa.Column("classification_code", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # ProCapita's own words: Pågående / Avslutat
    sa.Column("opened_date", sa.Date, nullable=False),
    sa.Column("closed_date", sa.Date, nullable=True, index=True),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

decisions_table = sa.Table(
    "decisions",
    metadata,
    sa.Column("decision_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.case_id"), nullable=False),
    sa.Column("decision_date", sa.Date, nullable=False),
    sa.Column("insats", sa.String(60), nullable=False),
    sa.Column("legal_basis", sa.String(40), nullable=True),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("hours_per_month", sa.Numeric(7, 2), nullable=True),
    sa.Column("valid_from", sa.Date, nullable=True),
    sa.Column("valid_to", sa.Date, nullable=True),
    sa.Column("decided_by", sa.String(120), nullable=False),
    sa.Column("reasoning", sa.Text, nullable=True),
)

care_plans_table = sa.Table(
    "care_plans",
    metadata,
    sa.Column("plan_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.case_id"), nullable=False),
    sa.Column("decision_id", sa.Integer, sa.ForeignKey("decisions.decision_id"), nullable=False),
    sa.Column("plan_date", sa.Date, nullable=False),
    sa.Column("performer", sa.String(120), nullable=False),
    sa.Column("participants", sa.String(200), nullable=False),
    sa.Column("goals", sa.Text, nullable=True),
    sa.Column("follow_up_date", sa.Date, nullable=True),
)

notes_table = sa.Table(
    "notes",
    metadata,
    sa.Column("note_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.case_id"), nullable=False),
    sa.Column("note_date", sa.Date, nullable=False),
    sa.Column("note_type", sa.String(40), nullable=False),
    sa.Column("author", sa.String(120), nullable=False),
    sa.Column("author_title", sa.String(60), nullable=False),
    sa.Column("note_text", sa.Text, nullable=False),
)

documents_table = sa.Table(
    "documents",
    metadata,
    sa.Column("document_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.case_id"), nullable=False),
    sa.Column("document_number", sa.Integer, nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("direction", sa.String(20), nullable=False),
    sa.Column("document_date", sa.Date, nullable=False),
    sa.Column("registered_date", sa.Date, nullable=False),
    sa.Column("file_name", sa.String(200), nullable=False),
    sa.Column("file_path", sa.String(300), nullable=False),
    sa.Column("mime_type", sa.String(100), nullable=False),
)

TABLES = (clients_table, cases_table, decisions_table, care_plans_table, notes_table, documents_table)

# ---------------------------------------------------------------- vocabulary

# Main insats of a case, with its share of the applications an äldreomsorg unit receives.
INSATSER: dict[str, int] = {
    "hemtjänst": 48,
    "trygghetslarm": 18,
    "särskilt boende": 14,
    "korttidsvistelse": 10,
    "matdistribution": 10,
}
# Refusal rate per insats: särskilt boende is the one most often refused.
_AVSLAG = {"hemtjänst": 0.05, "trygghetslarm": 0.02, "särskilt boende": 0.22, "korttidsvistelse": 0.08,
           "matdistribution": 0.03}
# Insatser for which the performer writes a genomförandeplan and social documentation.
_PLANNED = {"hemtjänst", "särskilt boende", "korttidsvistelse"}

LOCALITIES = ["Enköping", "Enköping", "Enköping", "Fjärdhundra", "Grillby", "Örsundsbro", "Hummelsta",
              "Lillkyrka", "Bredsand", "Litslena", "Boglösa", "Enköpings-Näs"]
STREETS = ["Kungsgatan", "Rådhusgatan", "Torggatan", "Västra Ringgatan", "Östra Ringgatan", "Kyrkogatan",
           "Munksundsgatan", "Sandbrogatan", "Gånsta", "Korsängsgatan", "Åkerbyvägen", "Ekolsundsvägen",
           "Vårfrugatan", "Lundsgatan", "Stora Vägen", "Bangårdsgatan"]
PERFORMERS = {
    "hemtjänst": ["Hemtjänsten Centrum", "Hemtjänsten Väster", "Hemtjänsten Öster", "Hemtjänsten Fjärdhundra",
                  "Attendo Hemtjänst Enköping"],
    "särskilt boende": ["Ekbackens vård- och omsorgsboende", "Sjukhemmet Linden", "Gånsta vård- och omsorgsboende",
                        "Solgärdets äldreboende"],
    "korttidsvistelse": ["Korttidsenheten Bredsand", "Korttidsboendet Ekbacken"],
}
STAFF_TITLES = ["undersköterska", "undersköterska", "undersköterska", "vårdbiträde", "kontaktman"]

_REASONS_BEVILJAD = [
    "{first} har efter en höftfraktur svårt att klara den personliga omvårdnaden och hushållet på egen hand.",
    "{first} har en minnessjukdom och behöver stöd och tillsyn för att kunna bo kvar i sin bostad.",
    "Behovet kan inte tillgodoses på annat sätt och insatsen bedöms ge {first} en skälig levnadsnivå.",
    "{first} har ett omfattande omvårdnadsbehov dygnet runt som inte kan tillgodoses i ordinärt boende.",
    "Anhöriga har hittills gett stöd men orkar inte längre; {first} upplever stor otrygghet nattetid.",
]
_REASONS_AVSLAG = [
    "Utredningen visar att {first} klarar sin dagliga livsföring med befintliga insatser i hemmet.",
    "Behovet bedöms kunna tillgodoses genom utökad hemtjänst; rätt till särskilt boende föreligger inte.",
    "{first} har själv uppgett att hon eller han klarar inköp och måltider; behov av insatsen saknas.",
]
_GOALS = [
    "{first} vill kunna bo kvar hemma och känna sig trygg. Personalen hjälper till med dusch två gånger i veckan.",
    "Målet är att {first} ska äta minst tre mål om dagen och behålla sin vikt. Vikten följs upp varje månad.",
    "{first} önskar promenera varje dag när vädret tillåter. Personalen följer med på eftermiddagen.",
    "{first} vill fortsätta sköta sin egen medicin med stöd av dosett. Sjuksköterskan stämmer av varje vecka.",
    "{first} ska få hjälp att komma upp kl. 08 och lägga sig kl. 21, med sin egen tid för frukost.",
    "Målet är att {first} ska återfå sin förmåga att gå med rollator efter vistelsen och kunna återvända hem.",
    "{first} vill ha kontakt med sin dotter varje vecka; personalen hjälper till med telefonsamtal.",
    "{first} tycker om att lyssna på radio och läsa tidningen. Personalen läser högt på fredagar.",
]
_NOTES = {
    "Genomförande": [
        "Hjälp med dusch och hårtvätt. {first} var på gott humör och pratade om barnbarnen.",
        "Hjälp med frukost och medicin enligt dosett. {first} åt bra och ville sitta kvar i köket.",
        "Promenad runt kvarteret med rollator, cirka 20 minuter. Inga besvär.",
        "Städning av kök och badrum enligt plan. Tvätt hängd på tork.",
        "{first} var trött i dag och ville inte gå upp till lunch. Maten serverades i sängen.",
        "Inköp gjorda enligt lista. Kvitto och växel lämnade till {first}.",
        "Kvällsbesök: hjälp med av- och påklädning och tillsyn. Larmet testat och fungerar.",
    ],
    "Händelse": [
        "{first} hade ramlat i hallen men var inte skadad. Sjuksköterska kontaktad, anhörig underrättad.",
        "{first} uttryckte oro inför julhelgen. Samtal med kontaktmannen om önskemål.",
        "Dottern har ringt och önskar att besöken flyttas till förmiddag. Meddelat planeringen.",
    ],
    "Avvikelse": [
        "Planerat besök kl. 12 uteblev på grund av personalbrist. {first} informerad, besöket gjort kl. 14.",
        "Dosetten var inte påfylld vid besöket. Sjuksköterska kontaktad samma dag.",
    ],
}
_UTREDNING_NOTES = [
    "Hembesök gjort tillsammans med {first}. {first} beskriver sina behov och önskemål.",
    "Telefonsamtal med anhörig som bekräftar att behovet av stöd har ökat det senaste halvåret.",
    "Kontakt med distriktssköterskan om {first}s hälsotillstånd, med samtycke.",
    "Ansökan mottagen. Utredning påbörjad enligt 11 kap. 1 § SoL.",
]
_PARTICIPANTS = ["{first} och kontaktman", "{first}, dotter och kontaktman", "{first}, son och kontaktman",
                 "{first}, god man och kontaktman", "{first}, make och kontaktman", "{first}, sambo och kontaktman"]

_MIME = {"pdf": docs.MIME_PDF, "docx": docs.MIME_DOCX}

# --------------------------------------------------------------------------- data types


@dataclass
class ProCapitaSummary:
    """What one ``generate`` run produced (row counts are totals, bad rows included)."""

    counts: dict[str, int]
    bytes: int
    bad_rows: dict[str, int] = field(default_factory=dict)  # kind -> count

    def describe(self) -> str:
        """One line, e.g. ``ProCapita: 100 cases, 96 clients, … (2.1 MB)``."""
        c = self.counts
        text = (
            f"ProCapita: {c['cases']} cases, {c['clients']} clients, {c['decisions']} decisions, "
            f"{c['care_plans']} care plans, {c['notes']} notes, {c['documents']} documents, "
            f"{c['files']} files ({self.bytes / 1e6:.1f} MB)"
        )
        if any(self.bad_rows.values()):
            text += "; bad rows: " + ", ".join(f"{k}={v}" for k, v in self.bad_rows.items())
        return text


@dataclass
class _Case:
    case_id: int
    client: dict
    insats: str
    opened: dt.date
    closed: dt.date | None
    outcome: str = "beviljad"
    officer: str = ""
    number: str = ""
    rows: dict = field(default_factory=dict)
    last_event: dt.date | None = None


# ---------------------------------------------------------------------------- helpers


def _person_name(rng: random.Random, female: bool) -> str:
    first = rng.choice(names.FIRST_NAMES_FEMALE if female else names.FIRST_NAMES_MALE)
    return f"{first} {rng.choice(names.LAST_NAMES)}"


def _first(client: dict) -> str:
    return client["name"].split(" ")[0]


def _add_months(d: dt.date, months: int) -> dt.date:
    y, m = divmod(d.month - 1 + months, 12)
    return dt.date(d.year + y, m + 1, min(d.day, 28))


# --------------------------------------------------------------------------- the model


class _Generator:
    """Draws all rows from one rng, in a fixed order; files are rendered afterwards."""

    def __init__(self, seed: int, year: int) -> None:
        self.rng = random.Random(seed)
        self.year = year
        self.snapshot = dt.date(year + 1, 3, 31)  # the notional extraction day
        self.pnr_today = dt.date(year + 1, 1, 1)  # make_personnummer's "today": never the clock
        r = self.rng
        self.officers = [_person_name(r, r.random() < 0.8) for _ in range(6)]
        self.staff = [_person_name(r, r.random() < 0.85) for _ in range(24)]
        self.rows: dict[str, list[dict]] = {t.name: [] for t in TABLES}
        self.renders: list[tuple[str, str, dict]] = []  # (file_path, format, context)
        self.serials: dict[int, int] = {}
        self.persons_made = 0

    # -- clients

    def client(self) -> dict:
        r, y = self.rng, self.year
        female = r.random() < 0.62  # most äldreomsorg clients are women
        index = self.persons_made
        self.persons_made += 1
        if index % 30 == 13:  # a few centenarians: the '+' separator
            birth = sim.days_between(r, dt.date(y + 1 - 106, 1, 1), dt.date(y + 1 - 101, 12, 31))
        else:
            age = min(max(int(r.gauss(84, 7)), 65), 99)
            birth = sim.days_between(r, dt.date(y - age, 1, 1), dt.date(y - age, 12, 31))
        samordning = index % 47 == 29  # rare in äldreomsorg, but they exist
        serial = r.randrange(100) * 10 + r.choice([0, 2, 4, 6, 8] if female else [1, 3, 5, 7, 9])
        row = {
            "client_id": 10_000 + index + 1,
            "personnummer": make_personnummer(birth, serial, samordning=samordning, today=self.pnr_today),
            "name": _person_name(r, female),
            "address": f"{r.choice(STREETS)} {r.randint(1, 48)}",
            "locality": r.choice(LOCALITIES),
        }
        self.rows["clients"].append(row)
        return row

    # -- cases

    def draft(self, mode: str, client: dict | None = None) -> _Case:
        """Dates and insats of one case; ``mode`` is closed_in_year, closed_next_year or open."""
        r, y = self.rng, self.year
        insats = r.choices(list(INSATSER), weights=list(INSATSER.values()))[0]
        outcome = "avslag" if r.random() < _AVSLAG[insats] else "beviljad"
        client = client or self.client()
        if mode == "closed_in_year":
            closed = sim.days_between(r, dt.date(y, 1, 1), dt.date(y, 12, 31))
            # Refused cases close within weeks; granted ones when the insats ends (death,
            # move to a nursing home, recovery), months or years later.
            if outcome == "avslag":
                duration = r.randint(21, 70)
            elif insats == "korttidsvistelse":
                duration = r.randint(30, 120)
            else:
                duration = min(30 + int(r.expovariate(1 / 330)), 4 * 365)
            return _Case(0, client, insats, closed - dt.timedelta(days=duration), closed, outcome)
        opened = sim.days_between(r, dt.date(y - 2, 1, 1), dt.date(y, 11, 30))
        closed = sim.days_between(r, dt.date(y + 1, 1, 1), self.snapshot) if mode == "closed_next_year" else None
        return _Case(0, client, insats, opened, closed, outcome)

    def complete(self, c: _Case) -> None:
        r = self.rng
        serial = self.serials[c.opened.year] = self.serials.get(c.opened.year, r.randint(0, 30)) + r.choice([1, 1, 2])
        c.number = f"BIS-{c.opened.year}-{serial:05d}"
        c.officer = r.choice(self.officers)
        c.last_event = c.opened

    def case_row(self, c: _Case) -> dict:
        end = c.closed if c.closed is not None else max(c.last_event or c.opened, c.opened)
        seconds = self.rng.randint(7 * 3600 + 1800, 16 * 3600 + 1800)
        row = {
            "case_id": c.case_id,
            "case_number": c.number,
            "client_id": c.client["client_id"],
            "title": f"Ansökan om {c.insats}",
            "unit": UNIT,
            "case_officer": c.officer,
            "classification_code": CLASSIFICATION_CODE,
            "status": "Avslutat" if c.closed is not None else "Pågående",
            "opened_date": c.opened,
            "closed_date": c.closed,
            "updated_at": dt.datetime.combine(end, dt.time()) + dt.timedelta(seconds=seconds),
        }
        self.rows["cases"].append(row)
        return row

    # -- decisions, plans, notes

    def decision(self, c: _Case, insats: str, outcome: str, decided: dt.date, *, hours: Decimal | None = None,
                 legal_basis: str | None = LEGAL_BASIS, valid_from: dt.date | None = None) -> dict:
        r = self.rng
        end = c.closed or self.snapshot
        valid_to = None
        if outcome == "beviljad":
            valid_from = valid_from or min(decided + dt.timedelta(days=r.choice([0, 0, 1, 3, 7])), end)
            if insats == "korttidsvistelse":
                valid_to = min(valid_from + dt.timedelta(days=r.randint(14, 60)), end)
            elif insats in ("särskilt boende", "trygghetslarm"):
                valid_to = c.closed  # tills vidare: ends when the case does
            else:  # hemtjänst and matdistribution are time-limited and reviewed
                valid_to = min(_add_months(valid_from, r.choice([6, 12, 12])), end) if c.closed else None
        if insats == "hemtjänst" and outcome == "beviljad" and hours is None:
            # Hours per month to one decimal quarter: a few visits a week up to daily care.
            hours = Decimal(r.choice([4, 6, 8, 10, 12, 16, 20, 25, 30, 40, 55, 70, 90, 120])) + Decimal(
                r.choice(["0", "0.25", "0.5", "0.75"]))
        reasons = _REASONS_BEVILJAD if outcome == "beviljad" else _REASONS_AVSLAG
        row = {
            "decision_id": len(self.rows["decisions"]) + 1,
            "case_id": c.case_id,
            "decision_date": decided,
            "insats": insats,
            "legal_basis": legal_basis,
            "outcome": outcome,
            "hours_per_month": hours,
            "valid_from": valid_from,
            "valid_to": valid_to,
            "decided_by": c.officer,
            "reasoning": r.choice(reasons).format(first=_first(c.client)),
        }
        self.rows["decisions"].append(row)
        c.last_event = max(c.last_event or decided, decided)
        return row

    def plan(self, c: _Case, decision: dict, plan_date: dt.date) -> dict:
        r = self.rng
        first = _first(c.client)
        row = {
            "plan_id": len(self.rows["care_plans"]) + 1,
            "case_id": c.case_id,
            "decision_id": decision["decision_id"],
            "plan_date": plan_date,
            "performer": r.choice(PERFORMERS[decision["insats"]]),
            "participants": r.choice(_PARTICIPANTS).format(first=first),
            "goals": " ".join(g.format(first=first) for g in r.sample(_GOALS, r.randint(2, 3))),
            "follow_up_date": _add_months(plan_date, 6),
        }
        self.rows["care_plans"].append(row)
        return row

    def note(self, c: _Case, note_date: dt.date, note_type: str, text: str, author: str, title: str) -> None:
        self.rows["notes"].append({
            "note_id": len(self.rows["notes"]) + 1,
            "case_id": c.case_id,
            "note_date": note_date,
            "note_type": note_type,
            "author": author,
            "author_title": title,
            "note_text": text.format(first=_first(c.client)),
        })

    def fill_case(self, c: _Case, *, notes: bool = True) -> list[dict]:
        """Decisions (main insats, often with larm and mat), plans, notes and documents of a case."""
        r = self.rng
        end = c.closed or self.snapshot
        decided = min(c.opened + dt.timedelta(days=r.randint(10, 35)), end)
        if notes:
            for d in sorted(sim.days_between(r, c.opened, decided) for _ in range(r.randint(1, 3))):
                self.note(c, d, "Utredning", r.choice(_UTREDNING_NOTES), c.officer, "biståndshandläggare")
        decisions = [self.decision(c, c.insats, c.outcome, decided)]
        # Time-limited hemtjänst and matdistribution are re-examined (omprövning) before they
        # run out, for as long as the case lasts: a new decision takes over the next day.
        last = decisions[0]
        renewals: set[int] = set()  # the genomförandeplan of the first decision is followed up instead
        while last["valid_to"] is not None and c.closed is not None and last["valid_to"] < c.closed \
                and c.insats in ("hemtjänst", "matdistribution"):
            review = max(last["valid_to"] - dt.timedelta(days=r.randint(7, 21)), last["decision_date"])
            last = self.decision(c, c.insats, "beviljad", review, valid_from=last["valid_to"] + dt.timedelta(days=1))
            decisions.append(last)
            renewals.add(last["decision_id"])
        if c.insats == "hemtjänst" and c.outcome == "beviljad":
            for extra, p in (("trygghetslarm", 0.45), ("matdistribution", 0.25)):
                if r.random() < p:
                    decisions.append(self.decision(c, extra, "beviljad", decided))
        for d in decisions:
            if d["outcome"] != "beviljad" or d["insats"] not in _PLANNED or not notes or d["decision_id"] in renewals:
                continue
            first_plan = min(d["valid_from"] + dt.timedelta(days=r.randint(7, 28)), end)
            plan = self.plan(c, d, first_plan)
            # A plan is followed up every six months while the insats lasts.
            follow = plan["follow_up_date"]
            while follow < end and follow < self.snapshot:
                plan = self.plan(c, d, follow)
                follow = plan["follow_up_date"]
            performer = plan["performer"]
            for day in sorted(sim.days_between(r, first_plan, end) for _ in range(r.randint(1, 6))):
                kind = r.choices(["Genomförande", "Händelse", "Avvikelse"], weights=[80, 14, 6])[0]
                title = r.choice(STAFF_TITLES) if "Hemtjänst" in performer or r.random() < 0.8 else "sjuksköterska"
                self.note(c, day, kind, r.choice(_NOTES[kind]), r.choice(self.staff), title)
        return decisions

    def add_documents(self, c: _Case, decisions: Sequence[dict], *, missing: bool = False) -> None:
        r = self.rng
        first = _first(c.client)
        main = decisions[0]
        planned = [
            ("Ansökan om bistånd", "incoming", c.opened, "pdf",
             [f"Jag ansöker om {c.insats}.", f"Sökande: {c.client['name']}, {c.client['personnummer']}",
              f"Adress: {c.client['address']}, {c.client['locality']}"]),
            ("Utredning enligt SoL", "internal", main["decision_date"], "docx",
             [f"Utredning av {first}s behov av {c.insats}.", main["reasoning"],
              "Den enskildes önskemål har beaktats i utredningen."]),
        ]
        for d in decisions:
            verdict = "beviljas" if d["outcome"] == "beviljad" else "avslås"
            text = [f"Ansökan om {d['insats']} {verdict} med stöd av {d['legal_basis'] or '[lagrum saknas]'}.",
                    d["reasoning"],
                    "Beslutet kan överklagas till förvaltningsrätten inom tre veckor från den dag ni tog del av det."]
            if d["hours_per_month"] is not None:
                text.insert(1, f"Beviljad omfattning: {d['hours_per_month']} timmar per månad.")
            planned.append((f"Beslut om {d['insats']}", "outgoing", d["decision_date"], "pdf", text))
        if r.random() < 0.3:
            planned.append(("Läkarintyg", "incoming", sim.days_between(r, c.opened, main["decision_date"]), "pdf",
                            ["Intyget avser patientens funktionsförmåga.", "Bedömningen grundar sig på besök."]))
        for number, (title, direction, date, fmt, paragraphs) in enumerate(planned, start=1):
            ext = "pdf" if fmt == "pdf" else "docx"
            file_name = f"{title}.{ext}" if r.random() < 0.85 else f"Skannat dokument {date.isoformat()}.{ext}"
            path = f"{c.opened.year}/{c.number}/{number} {sim.safe_filename(file_name)}"
            self.rows["documents"].append({
                "document_id": len(self.rows["documents"]) + 1,
                "case_id": c.case_id,
                "document_number": number,
                "title": title,
                "direction": direction,
                "document_date": date,
                "registered_date": min(date + dt.timedelta(days=r.choice([0, 0, 1, 2])), max(c.closed or date, date)),
                "file_name": file_name,
                "file_path": path,
                "mime_type": _MIME[fmt],
            })
            # missing=True: the row points at a file that was never written (the planted defect).
            if not (missing and number == len(planned)):
                header = [MUNICIPALITY, UNIT, f"Ärende: {c.number}", f"Datum: {date.isoformat()}",
                          f"SEKRETESS enligt {SECRECY_REFERENCE}"]
                self.renders.append((path, fmt, {"title": title, "header": header, "paragraphs": paragraphs}))


def _render(fmt: str, ctx: dict) -> bytes:
    if fmt == "pdf":
        return docs.make_pdf(["\n".join([*ctx["header"], "", ctx["title"], "", *ctx["paragraphs"]])],
                             title=ctx["title"])
    return docs.make_docx(["\n".join(ctx["header"]), *ctx["paragraphs"]], title=ctx["title"])


# ------------------------------------------------------------------------------ public


def generate(url: str, files_dir: Path, *, size: int = 100, seed: int = 1, year: int = 2025,
             bad: int = 0) -> ProCapitaSummary:
    """(Re)create the ProCapita database at ``url`` and its document files under ``files_dir``.

    ``size`` assistance cases: about 80 % closed in ``year`` (what a yearly extraction of
    ``year`` takes), the rest still open or closed early in ``year + 1``. About one client
    in ten has a second case. ``bad`` adds that many rows of every kind in
    :data:`BAD_KINDS`, each on an extra case closed in ``year``. Same arguments ⇒ identical
    rows and identical file bytes.
    """
    if size < 0 or bad < 0:
        raise ValueError("size and bad must not be negative")
    files_dir = Path(files_dir)
    g = _Generator(seed, year)
    r = g.rng

    modes = r.choices(["closed_in_year", "open", "closed_next_year"], weights=[80, 10, 10], k=size)
    drafts: list[_Case] = []
    for m in modes:
        # A returning client: a second application, e.g. särskilt boende after hemtjänst.
        again = drafts and r.random() < 0.1
        drafts.append(g.draft(m, client=r.choice(drafts).client if again else None))
    drafts.sort(key=lambda c: (c.opened, c.client["client_id"]))  # ids follow registration order
    for i, c in enumerate(drafts, start=1):
        c.case_id = i
        g.complete(c)
    for c in drafts:
        g.add_documents(c, g.fill_case(c))
        g.case_row(c)

    # Everything bad comes after everything valid, each defect on a case of its own so that
    # exactly one expectation of the suite catches it.
    next_id = len(drafts) + 1

    def bad_case(**kw) -> _Case:
        nonlocal next_id
        c = g.draft("closed_in_year", **kw)
        c.case_id = next_id
        next_id += 1
        g.complete(c)
        return c

    def hemtjanst_case() -> _Case:
        c = bad_case()
        c.insats, c.outcome = "hemtjänst", "beviljad"
        c.opened = min(c.opened, c.closed - dt.timedelta(days=120))
        return c

    for _ in range(bad):  # invalid_personnummer: a typo in the check digit
        c = bad_case()
        c.client["personnummer"] = sim.wrong_check_digit(r, c.client["personnummer"])
        g.add_documents(c, g.fill_case(c))
        g.case_row(c)
    for _ in range(bad):  # decision_without_legal_basis: a decision that cites no lagrum
        c = bad_case()
        c.insats, c.outcome = "trygghetslarm", "beviljad"
        decided = c.opened + dt.timedelta(days=r.randint(10, 20))
        g.add_documents(c, [g.decision(c, "trygghetslarm", "beviljad", decided, legal_basis=None)])
        g.case_row(c)
    for _ in range(bad):  # plan_before_decision: the plan predates the decision it implements
        c = hemtjanst_case()
        decided = c.opened + dt.timedelta(days=r.randint(20, 40))
        d = g.decision(c, "hemtjänst", "beviljad", decided)
        g.plan(c, d, decided - dt.timedelta(days=r.randint(1, 14)))
        g.add_documents(c, [d])
        g.case_row(c)
    for _ in range(bad):  # negative_hours: a sign error in the granted hours
        c = hemtjanst_case()
        decided = c.opened + dt.timedelta(days=r.randint(10, 30))
        hours = -Decimal(r.choice([8, 12, 20, 30])) - Decimal("0.5")
        g.add_documents(c, [g.decision(c, "hemtjänst", "beviljad", decided, hours=hours)])
        g.case_row(c)
    for _ in range(bad):  # missing_file: the last document's file is not in the store
        c = bad_case()
        g.add_documents(c, g.fill_case(c), missing=True)
        g.case_row(c)
    for _ in range(bad):  # closed_before_opened: a refusal whose closing date precedes the application
        c = bad_case()
        c.insats, c.outcome = "särskilt boende", "avslag"
        c.opened = sim.days_between(r, dt.date(year, 3, 1), dt.date(year, 11, 30))
        c.closed = c.opened - dt.timedelta(days=r.randint(1, 40))
        decided = c.opened + dt.timedelta(days=r.randint(10, 25))
        g.add_documents(c, [g.decision(c, c.insats, c.outcome, decided)])
        g.case_row(c)

    # Database: drop and recreate, then batched executemany inserts, parents first.
    sim.replace_tables(url, metadata, (
        (table, sorted(g.rows[table.name], key=lambda row, k=table.primary_key.columns[0].name: row[k]))
        for table in TABLES))
    total = sim.write_listed(files_dir, MANIFEST, ((rel, _render(fmt, ctx)) for rel, fmt, ctx in g.renders))

    counts = {t.name: len(g.rows[t.name]) for t in TABLES}
    counts["files"] = len(g.renders)
    return ProCapitaSummary(counts=counts, bytes=total, bad_rows=dict.fromkeys(BAD_KINDS, bad))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m demo.procapita --url URL --files DIR [--size N --seed S --year Y --bad B]``."""
    parser = sim.parser("demo.procapita", __doc__)
    parser.add_argument("--url", default="sqlite:///var/demo/procapita.sqlite", help="SQLAlchemy database URL")
    parser.add_argument("--files", default="var/demo/procapita-files", type=Path, help="folder for the documents")
    parser.add_argument("--size", type=int, default=100, help="number of assistance cases (biståndsärenden)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--year", type=int, default=2025, help="the year whose closed cases an extraction takes")
    parser.add_argument("--bad", type=int, default=0, help="bad rows of each kind to plant")
    args = parser.parse_args(argv)
    sim.report(lambda: generate(args.url, args.files, size=args.size, seed=args.seed, year=args.year, bad=args.bad))
    return 0


if __name__ == "__main__":
    sys.exit(main())
