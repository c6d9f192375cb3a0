"""Simulator of Lex, the municipal registry (allmänna diariet): cases, documents, parties.

``generate`` (re)creates the Lex schema in any SQLAlchemy database (the same Core DDL on
SQLite and PostgreSQL) and fills it with synthetic but realistic Swedish data, and writes
the registered documents as real files (PDF, DOCX, JPEG, UTF-8 text) under ``files_dir``.
Everything derives from ``random.Random(seed)``: one seed gives identical rows and
identical file bytes on every run, which the extractor tests rely on.

With ``bad=N`` it also plants N rows of each kind in :data:`BAD_KINDS`, all on cases
closed in ``year`` so that an extraction of that year meets them.

Run ``python -m demo.lex --url sqlite:///var/demo/lex.sqlite --files var/demo/lex-files``.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from demo import _simulator as sim
from demo import documents as docs
from demo import names
from transforms.common.identifiers import make_organisationsnummer, make_personnummer

BAD_KINDS = (
    "duplicate_diarienummer",
    "malformed_diarienummer",
    "closed_before_registered",
    "invalid_personnummer",
    "missing_file",
    "missing_title",
)

DIARIENUMMER_RE = re.compile(r"^[A-ZÅÄÖ]{2,4} \d{4}/\d{4}$")

# Lists the files written by the last run, so a rerun removes exactly those (a stale file
# could otherwise sit where a "missing_file" row points) and never touches anything else.
MANIFEST = ".lex-simulator-files"

# ---------------------------------------------------------------------------- schema

metadata = sa.MetaData()

classification_table = sa.Table(
    "classification",
    metadata,
    sa.Column("code", sa.Text, primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
)

cases_table = sa.Table(
    "cases",
    metadata,
    sa.Column("case_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("diarienummer", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("unit", sa.Text, nullable=False),
    sa.Column("case_officer", sa.Text, nullable=False),
    sa.Column("classification_code", sa.Text, sa.ForeignKey("classification.code"), nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("registered_date", sa.Date, nullable=False),
    sa.Column("closed_date", sa.Date, nullable=True),
    sa.Column("secrecy", sa.Boolean, nullable=False),
    sa.Column("secrecy_reference", sa.Text, nullable=True),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

documents_table = sa.Table(
    "documents",
    metadata,
    sa.Column("document_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.case_id"), nullable=False),
    sa.Column("document_number", sa.Integer, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("direction", sa.Text, nullable=False),
    sa.Column("document_date", sa.Date, nullable=False),
    sa.Column("registered_date", sa.Date, nullable=False),
    sa.Column("file_name", sa.Text, nullable=False),
    sa.Column("file_path", sa.Text, nullable=False),
    sa.Column("mime_type", sa.Text, nullable=False),
    sa.Column("secrecy", sa.Boolean, nullable=False),
    sa.Column("secrecy_reference", sa.Text, nullable=True),
)

parties_table = sa.Table(
    "parties",
    metadata,
    sa.Column("party_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.case_id"), nullable=False),
    sa.Column("party_type", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("personnummer", sa.Text, nullable=True),
    sa.Column("organisationsnummer", sa.Text, nullable=True),
    sa.Column("role", sa.Text, nullable=False),
)

# ---------------------------------------------------------------- vocabulary (Lex only)

# KLASSA-style scheme: verksamhetsområde (top level) and processgrupp (leaf). Cases are
# classified on leaves; the top levels are rows too so a finding aid can show the tree.
CLASSIFICATION: list[tuple[str, str]] = [
    ("1", "Styra och leda verksamheten"),
    ("1.1", "Ledning och styrning"),
    ("1.2", "Planering och uppföljning"),
    ("1.3", "Ekonomi och upphandling"),
    ("1.4", "Personal och arbetsmiljö"),
    ("2", "Samhällsbyggnad"),
    ("2.1", "Bygglov"),
    ("2.2", "Detaljplanering"),
    ("2.3", "Miljö- och hälsoskyddstillsyn"),
    ("2.4", "Gator, parker och trafik"),
    ("3", "Utbildning, kultur och fritid"),
    ("3.1", "Förskola och grundskola"),
    ("3.2", "Gymnasieskola och vuxenutbildning"),
    ("3.3", "Kultur och fritid"),
    ("4", "Omsorg och stöd"),
    ("4.1", "Individ- och familjeomsorg"),
    ("4.2", "Äldreomsorg och funktionsstöd"),
    ("4.3", "Bostadsanpassning och färdtjänst"),
]

UNIT_CODES: dict[str, list[str]] = {
    "KS": ["1.1", "1.1", "1.2", "1.3", "1.3", "1.4"],
    "BN": ["2.1", "2.1", "2.1", "2.1", "2.2"],
    "MN": ["2.3"],
    "SN": ["4.1", "4.1", "4.2", "4.3"],
    "UN": ["3.1", "3.1", "3.2"],
    "KFN": ["3.3"],
    "TN": ["2.4"],
}

# Case titles per classification code. Some carry XML-special characters (& < > ") on
# purpose: they must survive extraction into METS/EAD without double escaping.
CASE_TITLES: dict[str, list[str]] = {
    "1.1": [
        "Motion om {topic}",
        "Medborgarförslag om {topic}",
        'Medborgarförslag: "{topic}"',
        "Revidering av {policy}",
        "Yttrande över remiss & samråd – {topic}",
        "Interpellation angående {topic}",
    ],
    "1.2": [
        "Verksamhetsplan {year} för {unit}",
        "Uppföljning av internkontrollplan {year}",
        "Delårsrapport januari–augusti {year}",
        "Årsredovisning {year}",
    ],
    "1.3": [
        "Upphandling av {goods}",
        "Inköp av {goods} > 100 000 kr",
        "Avtal med {org}",
        "Direktupphandling av {goods}",
    ],
    "1.4": [
        "Rekrytering av {staff}",
        "Arbetsmiljöutredning, {place}",
        "Löneöversyn {year} – {unit}",
    ],
    "2.1": [
        'Ansökan om bygglov för "{fastighet}" & rivning',
        "Ansökan om bygglov för nybyggnad av enbostadshus, {fastighet}",
        "Anmälan om attefallshus, {fastighet}",
        "Rivningslov för förråd, {fastighet}",
        "Förhandsbesked för {fastighet}",
        "Tillbyggnad < 15 kvm, {fastighet}",
        "Ansökan om marklov för {fastighet}",
        "Strandskyddsdispens för brygga, {fastighet}",
    ],
    "2.2": [
        "Detaljplan för {ort} centrum",
        "Planbesked för {fastighet}",
        "Samråd om detaljplan för kvarteret {tract}",
    ],
    "2.3": [
        "Klagomål på buller från {org}",
        "Tillsyn av {org}",
        "Anmälan om värmepump, {fastighet}",
        "Ansökan om enskilt avlopp, {fastighet}",
        "Livsmedelskontroll – {org}",
        "Klagomål på fukt & mögel i lägenhet, {gata}",
    ],
    "2.4": [
        "Trafikfrågor på {gata}, {ort}",
        "Ansökan om upplåtelse av offentlig plats, {gata}",
        "Parkeringstillstånd för rörelsehindrade",
        "Felanmälan: gatubelysning & hål i vägen på {gata}",
    ],
    "3.1": [
        "Ansökan om skolskjuts",
        "Anmälan om kränkande behandling, {skola}",
        "Placering i förskola, {ort}",
        "Ansökan om mottagande i anpassad grundskola",
    ],
    "3.2": [
        "Ansökan om interkommunal ersättning",
        "Antagning till vuxenutbildning {year}",
        "Prövning av betyg, {skola}",
    ],
    "3.3": [
        'Föreningsbidrag till "{org}"',
        "Ansökan om kulturstipendium {year}",
        "Offentlig konst i {ort} – {topic}",
        "Ansökan om arrangemangsbidrag, {org}",
    ],
    "4.1": [
        "Anmälan enligt 14 kap. 1 § SoL",
        "Utredning av ekonomiskt bistånd",
        "Ansökan om familjehem",
        "Tillsyn av {org}",
    ],
    "4.2": [
        "Ansökan om särskilt boende",
        "Lex Sarah-rapport, {place}",
        "Ansökan om insats enligt LSS",
    ],
    "4.3": [
        "Ansökan om bostadsanpassning, {gata}",
        "Ansökan om färdtjänst",
        "Överklagande av beslut om färdtjänst",
    ],
}

_TOPICS = [
    "fler papperskorgar i {ort}",
    "belysning på gång- och cykelvägen i {ort}",
    "en hundrastgård i {ort}",
    "öppettider för biblioteket",
    "solceller på kommunens byggnader",
    "trygghetsvandringar",
    "gratis kollektivtrafik för äldre",
    "renovering av badhuset",
    "fler förskoleplatser i {ort}",
    "en ny skatepark",
    "farthinder på {gata}",
]
_POLICIES = [
    "delegationsordningen",
    "informationshanteringsplanen",
    "arkivreglementet",
    "dataskyddspolicyn",
    "riktlinjer för representation",
    "attestreglementet",
]
_GOODS = [
    "IT-utrustning",
    "skolmåltider",
    "snöröjning",
    "konsulttjänster inom arkiv",
    "möbler till {skola}",
    "städtjänster",
    "e-arkiv",
    "leasingbilar",
    "skolskjutsar",
    "trafiksignaler",
]
_SCHOOLS = [
    "Slottsskolan",
    "Skogsängsskolan",
    "Årbyskolan",
    "Ärla skola",
    "Hällbybrunnsskolan",
    "Rekarnegymnasiet",
    "Fröslundaskolan",
    "Kjula skola",
]
_PLACES = [
    "Ekbackens äldreboende",
    "Stadshuset",
    "Tunafors förskola",
    "Torshälla vårdcentral",
    "Lagersbergs gruppbostad",
    "Munktellbadet",
    "Årby fritidsgård",
]

SECRECY_REFERENCES: dict[str, str] = {
    "SN": "OSL 26 kap. 1 §",  # socialtjänst
    "UN": "OSL 23 kap. 2 §",  # elevhälsa and pupils' personal circumstances
    "KS": "OSL 19 kap. 3 §",  # procurement: tenders until the award
}
_DEFAULT_SECRECY_REFERENCE = "OSL 21 kap. 1 §"  # health and personal circumstances
# Social-services cases are mostly secret, the rest seldom: about 10 % overall.
_SECRECY_RATE = {"SN": 0.6}
_DEFAULT_SECRECY_RATE = 0.04

# Document titles by direction; the first document of a case is incoming, the last of a
# closed case is the decision (outgoing).
_INCOMING = [
    "Ansökan",
    "Komplettering",
    "Skrivelse från {party}",
    "Yttrande från {party}",
    "Ritningar",
    "Överklagande",
    "Synpunkter från granne",
    "Remissvar från {org}",
    "E-post från {party}",
    "Anmälan",
]
_OUTGOING = [
    "Föreläggande om komplettering",
    "Underrättelse till grannar",
    "Mottagningsbevis",
    "Remiss till {org}",
    "Begäran om yttrande",
    "Kommunicering inför beslut",
]
_INTERNAL = [
    "Tjänsteskrivelse",
    "Minnesanteckningar från platsbesök",
    "Protokollsutdrag",
    "Utredning",
    "Journalanteckning",
    "Checklista för handläggning",
]
_IMAGE_TITLES = [
    "Fotografier från platsbesök",
    "Inskannad ansökan",
    "Inskannat brev",
    "Situationsplan (skannad)",
    "Foto före åtgärd",
    "Inskannad fullmakt",
]
_DECISIONS = {"1": "Beslut", "2": "Beslut", "3": "Beslut", "4": "Beslut om bistånd"}
_DECISIONS_BY_CODE = {
    "1.1": "Protokollsutdrag med beslut",
    "1.3": "Tilldelningsbeslut",
    "2.1": "Beslut om bygglov",
    "2.2": "Beslut om antagande av detaljplan",
    "2.3": "Beslut om föreläggande",
    "3.1": "Beslut om placering",
    "3.3": "Beslut om bidrag",
    "4.3": "Beslut om bostadsanpassningsbidrag",
}

_SENTENCES = [
    "Ärendet avser {case_lower}.",
    "Handlingen inkom till {unit} den {date} och har registrerats i diariet.",
    "Sökanden har kompletterat ansökan med efterfrågade uppgifter.",
    "Förvaltningen har gjort platsbesök på {gata} i {ort} och dokumenterat förhållandena.",
    "Enligt gällande riktlinjer ska ärendet avgöras inom tio veckor från att det är komplett.",
    "Synpunkter har lämnats av berörda grannar och sakägare.",
    "Handläggare är {officer}, som kan nås via kommunens kontaktcenter.",
    "Beslutet kan överklagas skriftligen inom tre veckor från den dag ni tog del av det.",
    "Nämnden bedömer att åtgärden är förenlig med gällande bestämmelser.",
    "Förvaltningen föreslår att nämnden bifaller ansökan med de villkor som framgår nedan.",
    "Avgift tas ut enligt fastställd taxa för {year}.",
    "Underlaget har stämts av med ekonomienheten och med {org}.",
    "Den enskildes önskemål har beaktats i utredningen.",
    "Ärendet har beretts i samverkan med berörda förvaltningar.",
    "Vid frågor, kontakta {officer} på {unit}.",
    "Åtgärden påbörjas tidigast fyra veckor efter att beslutet kungjorts i Post- och Inrikes Tidningar.",
]

_PERSON_ROLES = [
    "sökande",
    "sökande",
    "fastighetsägare",
    "granne",
    "ombud",
    "klagande",
    "anmälare",
    "vårdnadshavare",
    "enskild",
    "motionär",
    "förslagsställare",
]
_ORG_ROLES = ["sökande", "leverantör", "remissinstans", "verksamhetsutövare", "motpart", "ombud"]

# File format shares: PDF 50 %, DOCX 20 %, JPEG 15 %, TXT 15 %.
_FORMATS = ["pdf", "docx", "jpeg", "txt"]
_FORMAT_WEIGHTS = [50, 20, 15, 15]
_MIME = {"pdf": docs.MIME_PDF, "docx": docs.MIME_DOCX, "jpeg": docs.MIME_JPEG, "txt": docs.MIME_TEXT}
_EXT = {"pdf": "pdf", "docx": "docx", "jpeg": "jpg", "txt": "txt"}

_MALFORMED = ["{p}{y}-{n}", "{pl} {y}/{n4}", "{p} {yy}/{n4}", "{p}-{y}-{n4}", "{p} {y}:{n}"]

# --------------------------------------------------------------------------- data types


@dataclass
class LexSummary:
    """What one ``generate`` run produced (row counts are totals, bad rows included)."""

    cases: int
    documents: int
    parties: int
    files: int
    bytes: int
    bad_rows: dict[str, int] = field(default_factory=dict)  # kind -> count

    def describe(self) -> str:
        """One line for the demo's output."""
        bad = sum(self.bad_rows.values())
        return (f"Lex: {self.cases} cases, {self.documents} documents, {self.parties} parties, {self.files} files "
                f"({self.bytes / 1e6:.1f} MB)" + (f", {bad} deliberately bad rows" if bad else ""))


@dataclass
class _Case:
    case_id: int
    prefix: str
    code: str
    registered: dt.date
    status: str
    closed: dt.date | None
    title: str = ""
    diarienummer: str = ""
    reg_serial: int = 0
    officer: str = ""
    secrecy: bool = False
    secrecy_reference: str | None = None
    folder: str = ""
    last_event: dt.date | None = None


# ---------------------------------------------------------------------------- helpers


def _person_name(rng: random.Random, female: bool) -> str:
    first = rng.choice(names.FIRST_NAMES_FEMALE if female else names.FIRST_NAMES_MALE)
    last = rng.choice(names.LAST_NAMES)
    if rng.random() < 0.08:  # double surnames exist and break naive "first last" splitting
        last = f"{last}-{rng.choice(names.LAST_NAMES)}"
    return f"{first} {last}"


def _fastighet(rng: random.Random) -> str:
    return f"{rng.choice(names.PROPERTY_TRACTS)} {rng.randint(1, 30)}:{rng.randint(1, 250)}"


def _org_name(rng: random.Random) -> tuple[str, str]:
    """An organisation name and the first three digits of its organisationsnummer."""
    stem = rng.choice(names.ORGANISATION_STEMS)
    if "förening" in stem.lower():
        return stem, rng.choice(["802", "716", "769"])  # ideella and bostadsrättsföreningar
    suffix = rng.choice(names.ORGANISATION_SUFFIXES)
    prefix = {"AB": rng.choice(["556", "559"]), "HB": "969", "Ekonomisk förening": "769"}.get(suffix, "556")
    return (f"{stem} {suffix}".strip(), prefix)


def _orgnr(rng: random.Random, prefix3: str) -> str:
    return make_organisationsnummer(prefix3 + "".join(str(rng.randrange(10)) for _ in range(6)))


class _Filler(dict):
    """Fills ``{placeholders}`` in templates, drawing each value lazily from the rng."""

    def __init__(self, rng: random.Random, **fixed: str) -> None:
        super().__init__(fixed)
        self.rng = rng

    def __missing__(self, key: str) -> str:
        r = self.rng
        value = {
            "ort": lambda: r.choice(names.LOCALITIES),
            "gata": lambda: f"{r.choice(names.STREETS)} {r.randint(1, 60)}",
            "tract": lambda: r.choice(names.PROPERTY_TRACTS),
            "fastighet": lambda: _fastighet(r),
            "org": lambda: _org_name(r)[0],
            "party": lambda: _person_name(r, r.random() < 0.5),
            "skola": lambda: r.choice(_SCHOOLS),
            "place": lambda: r.choice(_PLACES),
            "staff": lambda: r.choice(names.STAFF_TITLES),
            "topic": lambda: r.choice(_TOPICS),
            "policy": lambda: r.choice(_POLICIES),
            "goods": lambda: r.choice(_GOODS),
        }[key]()
        # Templates nest one level ({topic} may contain {ort}).
        return value.format_map(self) if "{" in value else value


def _fill(rng: random.Random, template: str, **fixed: str) -> str:
    return template.format_map(_Filler(rng, **fixed))


# --------------------------------------------------------------------------- the model


class _Generator:
    """Draws all rows from one rng, in a fixed order, then renders the files."""

    def __init__(self, seed: int, year: int) -> None:
        self.rng = random.Random(seed)
        self.year = year
        # The notional extraction day: after year end, so some cases closed early next year.
        self.snapshot = dt.date(year + 1, 3, 31)
        # make_personnummer needs "today" to choose '-' or '+'; never the real clock.
        self.pnr_today = dt.date(year + 1, 1, 1)
        self.serials: dict[tuple[str, int], int] = {}
        self.folders: set[str] = set()
        self.staff = {p: [_person_name(self.rng, self.rng.random() < 0.6) for _ in range(4)] for p in names.UNITS}
        self.case_rows: list[dict] = []
        self.doc_rows: list[dict] = []
        self.party_rows: list[dict] = []
        self.renders: list[tuple[str, str, int, dict]] = []  # (file_path, format, seed, context)
        self.persons_made = 0

    # -- cases

    def draft_case(self, mode: str) -> _Case:
        """Dates and unit of one case; ``mode`` is closed_in_year, closed_next_year or open."""
        r, y = self.rng, self.year
        prefix = r.choices(list(names.UNIT_WEIGHTS), weights=list(names.UNIT_WEIGHTS.values()))[0]
        code = r.choice(UNIT_CODES[prefix])
        if mode == "closed_in_year":
            # Draw the closing day first so every such case really closes in `year`.
            closed = sim.days_between(r, dt.date(y, 1, 1), dt.date(y, 12, 31))
            duration = min(int(r.expovariate(1 / 75)), (closed - dt.date(y - 1, 1, 1)).days)
            return _Case(0, prefix, code, closed - dt.timedelta(days=duration), "closed", closed)
        registered = sim.days_between(r, dt.date(y - 1, 7, 1), dt.date(y, 12, 31))
        if mode == "closed_next_year":
            closed = sim.days_between(r, max(registered, dt.date(y + 1, 1, 1)), self.snapshot)
            return _Case(0, prefix, code, registered, "closed", closed)
        return _Case(0, prefix, code, registered, "open", None)

    def next_serial(self, prefix: str, reg_year: int) -> int:
        key = (prefix, reg_year)
        # Gaps, as in a real diarium where other case types share the series.
        self.serials[key] = self.serials.get(key, self.rng.randint(0, 15)) + self.rng.choice([1, 1, 1, 2, 3])
        return self.serials[key]

    def complete_case(
        self, c: _Case, *, diarienummer: str | None = None, serial: int | None = None, title: str | None = None
    ) -> None:
        r = self.rng
        c.reg_serial = serial if serial is not None else self.next_serial(c.prefix, c.registered.year)
        c.diarienummer = diarienummer or f"{c.prefix} {c.registered.year}/{c.reg_serial:04d}"
        c.title = (
            title
            if title is not None
            else _fill(r, r.choice(CASE_TITLES[c.code]), year=str(c.registered.year), unit=names.UNITS[c.prefix])
        )
        c.officer = r.choice(self.staff[c.prefix])
        c.secrecy = r.random() < _SECRECY_RATE.get(c.prefix, _DEFAULT_SECRECY_RATE)
        c.secrecy_reference = SECRECY_REFERENCES.get(c.prefix, _DEFAULT_SECRECY_REFERENCE) if c.secrecy else None
        folder = f"{c.registered.year}/{c.prefix}/{c.reg_serial:04d}"
        if folder in self.folders:  # a reused diarienummer must not overwrite the other case's files
            folder = f"{folder}-{c.case_id}"
        self.folders.add(folder)
        c.folder = folder
        c.last_event = c.closed or c.registered

    def case_row(self, c: _Case) -> dict:
        last = max(c.last_event or c.registered, c.registered)
        seconds = self.rng.randint(7 * 3600 + 1800, 17 * 3600)
        return {
            "case_id": c.case_id,
            "diarienummer": c.diarienummer,
            "title": c.title,
            "unit": names.UNITS[c.prefix],
            "case_officer": c.officer,
            "classification_code": c.code,
            "status": c.status,
            "registered_date": c.registered,
            "closed_date": c.closed,
            "secrecy": c.secrecy,
            "secrecy_reference": c.secrecy_reference,
            "updated_at": dt.datetime.combine(last, dt.time()) + dt.timedelta(seconds=seconds),
        }

    # -- parties

    def person(self, case_id: int, role: str | None = None) -> dict:
        r, y = self.rng, self.year
        female = r.random() < 0.5
        index = self.persons_made
        self.persons_made += 1
        # A fixed rhythm rather than chance guarantees a few of each special kind even in
        # small runs: about 4 % aged 100+ ('+' separator), 3 % samordningsnummer.
        if index % 25 == 11:
            birth = sim.days_between(r, dt.date(y + 1 - 110, 1, 1), dt.date(y + 1 - 101, 12, 31))
        elif r.random() < 0.12:  # children: pupils, placements
            birth = sim.days_between(r, dt.date(y - 17, 1, 1), dt.date(y - 2, 12, 31))
        else:
            birth = sim.days_between(r, dt.date(y + 1 - 95, 1, 1), dt.date(y - 18, 12, 31))
        samordning = index % 33 == 7
        # The second-to-last digit is odd for men and even for women.
        serial = r.randrange(100) * 10 + r.choice([0, 2, 4, 6, 8] if female else [1, 3, 5, 7, 9])
        pnr = make_personnummer(birth, serial, samordning=samordning, today=self.pnr_today)
        return {
            "party_id": len(self.party_rows) + 1,
            "case_id": case_id,
            "party_type": "person",
            "name": _person_name(r, female),
            "personnummer": pnr,
            "organisationsnummer": None,
            "role": role or r.choice(_PERSON_ROLES),
        }

    def organisation(self, case_id: int) -> dict:
        name, prefix3 = _org_name(self.rng)
        return {
            "party_id": len(self.party_rows) + 1,
            "case_id": case_id,
            "party_type": "organisation",
            "name": name,
            "personnummer": None,
            "organisationsnummer": _orgnr(self.rng, prefix3),
            "role": self.rng.choice(_ORG_ROLES),
        }

    def add_parties(self, c: _Case) -> list[dict]:
        added = []
        for _ in range(self.rng.choices([0, 1, 2, 3], weights=[15, 45, 28, 12])[0]):
            row = self.person(c.case_id) if self.rng.random() < 0.7 else self.organisation(c.case_id)
            self.party_rows.append(row)
            added.append(row)
        return added

    # -- documents

    def add_documents(self, c: _Case, case_parties: Sequence[dict]) -> None:
        r = self.rng
        n = r.choices([1, 2, 3, 4], weights=[20, 35, 30, 15])[0]
        end = max(c.closed or self.snapshot, c.registered)
        middle = sorted(sim.days_between(r, c.registered, end) for _ in range(max(n - 2, 0)))
        party_name = case_parties[0]["name"] if case_parties else None
        for number in range(1, n + 1):
            fmt = r.choices(_FORMATS, weights=_FORMAT_WEIGHTS)[0]
            if number == 1:
                direction = "incoming"
                registered = c.registered
                doc_date = registered - dt.timedelta(days=r.randint(0, 7))
            elif number == n and c.closed is not None:
                direction = "outgoing"
                doc_date = registered = c.closed
            else:
                direction = r.choice(["incoming", "outgoing", "internal"])
                doc_date = middle.pop(0) if middle else c.registered
                registered = min(doc_date + dt.timedelta(days=r.randint(0, 3)), end)
            if fmt == "jpeg":
                title = r.choice(_IMAGE_TITLES)
            elif direction == "outgoing" and number == n and c.closed is not None:
                title = _DECISIONS_BY_CODE.get(c.code, _DECISIONS[c.code[0]])
            else:
                pool = {"incoming": _INCOMING, "outgoing": _OUTGOING, "internal": _INTERNAL}[direction]
                title = _fill(r, r.choice(pool), **({"party": party_name} if party_name else {}))
            self.add_document(c, number, title, direction, doc_date, registered, fmt, case_parties)
            c.last_event = max(c.last_event or registered, registered)

    def file_name(self, title: str, fmt: str, doc_date: dt.date) -> str:
        r, ext = self.rng, _EXT[fmt]
        roll = r.random()
        if fmt == "jpeg" and roll < 0.5:
            return f"IMG_{r.randint(1000, 9999)}.jpg"  # straight from a phone or camera
        if fmt == "pdf" and roll < 0.12:
            return f"Skannat dokument {doc_date.isoformat()}.pdf"
        if roll > 0.85:  # the old-style names some systems produced
            return f"{title.lower().replace(' ', '_')}.{ext}"
        return f"{title}.{ext}"

    def add_document(
        self,
        c: _Case,
        number: int,
        title: str,
        direction: str,
        doc_date: dt.date,
        registered: dt.date,
        fmt: str,
        case_parties: Sequence[dict],
        *,
        write_file: bool = True,
    ) -> dict:
        r = self.rng
        file_name = self.file_name(title, fmt, doc_date)
        file_path = f"{c.folder}/{number} {sim.safe_filename(file_name)}"
        # Most documents of a secret case are secret; elsewhere, now and then a single
        # sensitive document sits in an otherwise public case.
        secret = r.random() < (0.75 if c.secrecy else 0.02)
        row = {
            "document_id": len(self.doc_rows) + 1,
            "case_id": c.case_id,
            "document_number": number,
            "title": title,
            "direction": direction,
            "document_date": doc_date,
            "registered_date": registered,
            "file_name": file_name,
            "file_path": file_path,
            "mime_type": _MIME[fmt],
            "secrecy": secret,
            "secrecy_reference": (c.secrecy_reference or SECRECY_REFERENCES.get(c.prefix, _DEFAULT_SECRECY_REFERENCE))
            if secret
            else None,
        }
        self.doc_rows.append(row)
        # Draw the content's words now (so rows and files come from one sequence) but
        # render later; each file gets its own sub-seed for the image noise.
        sentences = r.sample(_SENTENCES, r.randint(3, 7))
        pages = r.choices([1, 2, 3], weights=[75, 18, 7])[0] if fmt == "pdf" else 1
        extra = [r.sample(_SENTENCES, r.randint(6, 12)) for _ in range(pages - 1)]
        filler = _Filler(
            r,
            case_lower=c.title[:1].lower() + c.title[1:] if c.title else "ett ärende utan rubrik",
            unit=names.UNITS[c.prefix],
            date=registered.isoformat(),
            officer=c.officer,
            year=str(doc_date.year),
        )
        context = {
            "title": title,
            "case_title": c.title,
            "diarienummer": c.diarienummer,
            "unit": names.UNITS[c.prefix],
            "date": doc_date.isoformat(),
            "number": number,
            "parties": [p["name"] for p in case_parties],
            "secrecy": row["secrecy_reference"],
            "paragraphs": [s.format_map(filler) for s in sentences],
            "pages": [[s.format_map(filler) for s in page] for page in extra],
            "photo": title.startswith("Foto"),
        }
        if write_file:
            self.renders.append((file_path, fmt, r.getrandbits(64), context))
        return row


def _header(ctx: dict) -> list[str]:
    lines = [
        names.MUNICIPALITY,
        ctx["unit"],
        f"Diarienummer: {ctx['diarienummer']}",
        f"Ärende: {ctx['case_title']}",
        f"Handling nr {ctx['number']}, daterad {ctx['date']}",
    ]
    if ctx["parties"]:
        lines.append("Part: " + "; ".join(ctx["parties"]))
    if ctx["secrecy"]:
        lines.append(f"SEKRETESS enligt {ctx['secrecy']}")
    return lines


def _render(fmt: str, seed: int, ctx: dict) -> bytes:
    """The bytes of one document file."""
    header = _header(ctx)
    if fmt == "pdf":
        first = "\n".join([*header, "", ctx["title"], "", *ctx["paragraphs"]])
        rest = ["\n\n".join(page) for page in ctx["pages"]]
        return docs.make_pdf([first, *rest], title=ctx["title"])
    if fmt == "docx":
        return docs.make_docx(["\n".join(header), *ctx["paragraphs"]], title=ctx["title"])
    if fmt == "txt":
        return docs.make_text(ctx["title"], ctx["paragraphs"], header=header)
    rng = random.Random(seed)
    caption = "\n".join([ctx["title"], ctx["case_title"], ctx["diarienummer"], ctx["date"]])
    if ctx["photo"]:
        return docs.make_jpeg(rng, 480, 360, caption, photo=True)
    return docs.make_jpeg(rng, 496, 702, caption)  # A4 at 60 dpi


# ------------------------------------------------------------------------------ public


def generate(
    url: str, files_dir: Path, *, cases: int = 200, seed: int = 1, year: int = 2025, bad: int = 0
) -> LexSummary:
    """(Re)create the Lex database at ``url`` and its document files under ``files_dir``.

    Drops and recreates the four tables, then inserts ``cases`` valid cases registered in
    ``year - 1`` and ``year`` (about 80 % closed in ``year``, the rest open or closed early
    in ``year + 1``), 1–4 documents each with a real file, and 0–3 parties each. ``bad``
    adds that many rows of every kind in :data:`BAD_KINDS`, all on cases closed in ``year``.
    Same arguments ⇒ identical rows and identical file bytes.
    """
    if cases < 0 or bad < 0:
        raise ValueError("cases and bad must not be negative")
    files_dir = Path(files_dir)
    g = _Generator(seed, year)
    r = g.rng

    modes = r.choices(["closed_in_year", "open", "closed_next_year"], weights=[80, 10, 10], k=cases)
    drafts = [g.draft_case(m) for m in modes]
    # Case ids and serial numbers follow the registration order, as in a real diarium.
    drafts.sort(key=lambda c: c.registered)
    for i, c in enumerate(drafts, start=1):
        c.case_id = i
        g.complete_case(c)
    closed_in_year = [c for c in drafts if c.status == "closed" and c.closed and c.closed.year == year]
    if bad and len(closed_in_year) < bad:
        raise ValueError(f"bad={bad} needs at least {bad} cases closed in {year}; raise cases")

    for c in drafts:
        case_parties = g.add_parties(c)
        g.add_documents(c, case_parties)
        g.case_rows.append(g.case_row(c))

    # Everything bad is drawn after everything valid, so the valid rows and files are the
    # same whatever `bad` is: bad=N is exactly bad=0 plus the planted rows.
    bad_cases: list[_Case] = []
    next_id = len(drafts) + 1

    def new_bad_case() -> _Case:
        nonlocal next_id
        c = g.draft_case("closed_in_year")
        c.case_id = next_id
        next_id += 1
        bad_cases.append(c)
        return c

    for original in r.sample(closed_in_year, bad):
        c = new_bad_case()
        # Same unit, series and registration day as the original, so the number is the
        # only defect; it closes on a day of its own within `year`.
        c.prefix, c.code, c.registered = original.prefix, original.code, original.registered
        c.closed = sim.days_between(r, max(c.registered, dt.date(year, 1, 1)), dt.date(year, 12, 31))
        g.complete_case(c, diarienummer=original.diarienummer, serial=original.reg_serial)
    for i in range(bad):
        c = new_bad_case()
        g.complete_case(c)
        p = c.prefix
        c.diarienummer = _MALFORMED[i % len(_MALFORMED)].format(
            p=p,
            pl=p.lower(),
            y=c.registered.year,
            yy=f"{c.registered.year % 100:02d}",
            n=c.reg_serial,
            n4=f"{c.reg_serial:04d}",
        )
    for _ in range(bad):
        c = new_bad_case()
        # Registered in spring or later, closed up to 60 days *before* that, still in `year`.
        c.registered = sim.days_between(r, dt.date(year, 3, 2), dt.date(year, 12, 31))
        c.closed = c.registered - dt.timedelta(days=r.randint(1, 60))
        g.complete_case(c)
    for _ in range(bad):
        g.complete_case(new_bad_case(), title="")

    for c in bad_cases:
        case_parties = g.add_parties(c)
        g.add_documents(c, case_parties)
        g.case_rows.append(g.case_row(c))

    for _ in range(bad):
        c = r.choice(closed_in_year)
        row = g.person(c.case_id)
        row["personnummer"] = sim.wrong_check_digit(r, row["personnummer"])
        g.party_rows.append(row)
    for _ in range(bad):
        c = r.choice(closed_in_year)
        number = 1 + max(d["document_number"] for d in g.doc_rows if d["case_id"] == c.case_id)
        g.add_document(c, number, "Komplettering", "incoming", c.closed, c.closed, "pdf", [], write_file=False)

    # Database: drop and recreate, then batched executemany inserts.
    sim.replace_tables(url, metadata, (
        (classification_table, [{"code": k, "title": t} for k, t in CLASSIFICATION]),
        (cases_table, g.case_rows), (documents_table, g.doc_rows), (parties_table, g.party_rows)))
    # Files: clear what the last run wrote, then write this run's and list them.
    total = sim.write_listed(files_dir, MANIFEST, (
        (rel, _render(fmt, file_seed, ctx)) for rel, fmt, file_seed, ctx in g.renders))

    return LexSummary(
        cases=len(g.case_rows),
        documents=len(g.doc_rows),
        parties=len(g.party_rows),
        files=len(g.renders),
        bytes=total,
        bad_rows={kind: bad for kind in BAD_KINDS},
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m demo.lex --url URL --files DIR [--cases N --seed S --year Y --bad B]``."""
    parser = sim.parser("demo.lex", __doc__)
    parser.add_argument("--url", default="sqlite:///var/demo/lex.sqlite", help="SQLAlchemy database URL")
    parser.add_argument("--files", default="var/demo/lex-files", type=Path, help="folder for the document files")
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--year", type=int, default=2025, help="the year whose closed cases an extraction takes")
    parser.add_argument("--bad", type=int, default=0, help="bad rows of each kind to plant")
    args = parser.parse_args(argv)
    summary, elapsed = sim.timed(
        lambda: generate(args.url, args.files, cases=args.cases, seed=args.seed, year=args.year, bad=args.bad))
    print(
        f"Lex: {summary.cases} cases, {summary.documents} documents, {summary.parties} parties, "
        f"{summary.files} files ({summary.bytes / 1e6:.1f} MB) in {elapsed:.1f} s",
    )
    if any(summary.bad_rows.values()):
        print("bad rows: " + ", ".join(f"{k}={v}" for k, v in summary.bad_rows.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
