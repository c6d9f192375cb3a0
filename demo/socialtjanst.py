"""Shared social-services (socialtjänst) domain for the Viva and Treserva simulators.

Both systems hold the same kind of records — personakter under SoL and LSS with journal
notes (journalanteckningar), decisions (beslut) and attached documents — and differ only in
how their supplier stores or exports them. This module holds what they share: the code
lists (case types, decision types with their legal basis, journal templates, document
types), a :class:`Domain` that draws complete case files from one ``random.Random``, the
renderer of the attached document files, and the :class:`Summary` both ``generate``
functions return.

The legal references follow socialtjänstlagen (2001:453) and LSS (1993:387) as cited in
case files of 2023–2025: bistånd "4 kap. 1 § SoL", utredning av barn "11 kap. 1 § SoL",
LSS insatser "9 § <punkt> LSS". Everything here is synthetic; personnummer are valid in
form and check digit but drawn at random.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from dataclasses import dataclass, field
from decimal import Decimal

from demo import documents as docs
from demo import names
from demo._simulator import days_between, month_end, safe_filename
from transforms.common.identifiers import make_personnummer

SECRECY_REFERENCE = "OSL 26 kap. 1 §"  # socialtjänstsekretess: every personakt is covered

# A decision's legal basis: "4 kap. 1 § SoL", "11 kap. 1 § SoL" or "9 § 3 LSS".
LEGAL_BASIS_RE = re.compile(r"^(?:\d{1,2} kap\. \d{1,2} § SoL|\d{1,2} § \d{1,2} LSS)$")
OUTCOMES = ("bifall", "delvis bifall", "avslag")
# Days of birth whose personakter are kept for research (7 kap. 1 § SoF, SKR/Riksarkivet).
KEPT_BIRTH_DAYS = ("05", "15", "25")
PLACEMENT_DECISIONS = ("Placering i familjehem", "Placering i HVB")


@dataclass(frozen=True)
class CaseType:
    """One kind of personakt: its code, title, law, handling unit and the subject's ages."""

    code: str
    title: str
    law: str  # "SoL" or "LSS"
    unit: str
    weight: int
    ages: tuple[int, int]
    officer_title: str


CASE_TYPES: tuple[CaseType, ...] = (
    CaseType("EB", "Ekonomiskt bistånd", "SoL", "Försörjningsstöd", 36, (18, 67), "socialsekreterare"),
    CaseType("BOU", "Barn och unga – utredning enligt 11 kap. 1 § SoL", "SoL", "Barn och unga", 18, (0, 17),
             "socialsekreterare"),
    CaseType("MIV", "Missbruk vuxna", "SoL", "Vuxenenheten", 10, (20, 68), "socialsekreterare"),
    CaseType("ÄO", "Äldreomsorg – bistånd enligt 4 kap. 1 § SoL", "SoL", "Biståndsenheten äldre", 18, (66, 98),
             "biståndshandläggare"),
    CaseType("LSS", "LSS insatser", "LSS", "Myndighetsenheten LSS", 18, (4, 74), "LSS-handläggare"),
)
CASE_TYPE_TITLES = tuple(t.title for t in CASE_TYPES)

# Decision types (insatser) per case type with their legal basis; weights in the third place.
DECISION_TYPES: dict[str, list[tuple[str, str, int]]] = {
    "EB": [
        ("Försörjningsstöd", "4 kap. 1 § SoL", 80),
        ("Livsföring i övrigt – tandvård", "4 kap. 1 § SoL", 8),
        ("Livsföring i övrigt – glasögon", "4 kap. 1 § SoL", 4),
        ("Bistånd till hyresskuld", "4 kap. 2 § SoL", 8),
    ],
    "BOU": [
        ("Kontaktfamilj", "4 kap. 1 § SoL", 25),
        ("Öppenvårdsinsats – familjebehandling", "4 kap. 1 § SoL", 40),
        ("Kontaktperson", "4 kap. 1 § SoL", 15),
        ("Placering i familjehem", "4 kap. 1 § SoL", 12),
        ("Placering i HVB", "4 kap. 1 § SoL", 8),
    ],
    "MIV": [
        ("Öppenvård – samtalsbehandling", "4 kap. 1 § SoL", 45),
        ("Vård i HVB – missbruk", "4 kap. 1 § SoL", 20),
        ("Boendestöd", "4 kap. 1 § SoL", 20),
        ("Stödboende", "4 kap. 1 § SoL", 15),
    ],
    "ÄO": [
        ("Hemtjänst – service och omsorg", "4 kap. 1 § SoL", 50),
        ("Trygghetslarm", "4 kap. 1 § SoL", 20),
        ("Matdistribution", "4 kap. 1 § SoL", 10),
        ("Korttidsvistelse", "4 kap. 1 § SoL", 10),
        ("Särskilt boende", "4 kap. 1 § SoL", 10),
    ],
    "LSS": [
        ("Personlig assistans", "9 § 2 LSS", 12),
        ("Ledsagarservice", "9 § 3 LSS", 20),
        ("Kontaktperson", "9 § 4 LSS", 15),
        ("Avlösarservice i hemmet", "9 § 5 LSS", 8),
        ("Korttidsvistelse utanför det egna hemmet", "9 § 6 LSS", 15),
        ("Bostad med särskild service för vuxna", "9 § 9 LSS", 12),
        ("Daglig verksamhet", "9 § 10 LSS", 18),
    ],
}

# Other people in a case file besides the person it is about, with the share of case files
# that have them.
CO_PARTIES: dict[str, tuple[str, float, tuple[int, int]]] = {
    "EB": ("medsökande", 0.3, (18, 67)),
    "BOU": ("vårdnadshavare", 0.95, (22, 55)),
    "MIV": ("anhörig", 0.15, (20, 80)),
    "ÄO": ("anhörig", 0.35, (35, 75)),
    "LSS": ("god man", 0.3, (30, 75)),
}
SUBJECT_ROLE = {"EB": "sökande", "BOU": "barnet", "MIV": "den enskilde", "ÄO": "den enskilde", "LSS": "den enskilde"}
PARTY_ROLES = ("sökande", "medsökande", "barnet", "vårdnadshavare", "den enskilde", "anhörig", "god man")

NOTE_KINDS = ("Journalanteckning", "Telefonsamtal", "Besök", "Hembesök", "Samverkansmöte", "Utredning",
              "Avslut")

# Journal-note templates per case type ({first} is the subject's first name). Some carry
# ';' on purpose: a CSV export must quote them.
NOTE_TEMPLATES: dict[str, list[tuple[str, str]]] = {
    "EB": [
        ("Telefonsamtal", "{first} ringer och frågar om beslutet för {month}. Informerad om att ansökan "
                          "behandlas inom fem arbetsdagar."),
        ("Besök", "Nybesök. {first} berättar om sin situation; arbetslös sedan {month} och inskriven hos "
                  "Arbetsförmedlingen. Underlag: hyresavtal, kontoutdrag och lönebesked."),
        ("Journalanteckning", "Ansökan om försörjningsstöd för {month} inkommen via e-tjänst. Normberäkning "
                              "gjord; inkomster under riksnormen med {amount} kr."),
        ("Journalanteckning", "Kontroll mot Försäkringskassan och CSN via SSBTEK. Inga ersättningar utöver "
                              "uppgivna."),
        ("Samverkansmöte", "Trepartssamtal med Arbetsförmedlingen; planering mot arbetsmarknadsinsats "
                           "inom kommunens jobbcenter."),
    ],
    "BOU": [
        ("Journalanteckning", "Orosanmälan inkommen från {reporter} enligt 14 kap. 1 § SoL. "
                              "Skyddsbedömning gjord samma dag; inget akut skyddsbehov."),
        ("Utredning", "Beslut att inleda utredning enligt 11 kap. 1 § SoL. Vårdnadshavare underrättade."),
        ("Hembesök", "Hembesök hos familjen. {first} visade sitt rum; samtal med {first} enskilt och "
                     "med vårdnadshavare."),
        ("Samverkansmöte", "Nätverksmöte med skolan och elevhälsan. Skolan beskriver hög frånvaro "
                           "under hösten."),
        ("Telefonsamtal", "Samtal med vårdnadshavare om förslag till insats; positiva till "
                          "familjebehandling."),
    ],
    "MIV": [
        ("Besök", "{first} kommer på besök och berättar om sitt alkoholbruk; AUDIT genomförd. "
                  "Önskar stöd för att bli nykter."),
        ("Samverkansmöte", "SIP-möte med beroendemottagningen och {first}. Samordnad individuell plan "
                           "upprättad."),
        ("Telefonsamtal", "Samtal med behandlingshemmet; {first} följer planeringen och har lämnat "
                          "negativa prover."),
        ("Journalanteckning", "Uppföljning av genomförandeplan; mål delvis uppnådda."),
    ],
    "ÄO": [
        ("Hembesök", "Hembesök för utredning av behov. {first} bor ensam i lägenhet på {gata}; klarar "
                     "personlig hygien med visst stöd; behöver hjälp med inköp och städning."),
        ("Telefonsamtal", "Dotter ringer och berättar att {first} fallit i hemmet. Trygghetslarm "
                          "diskuteras."),
        ("Journalanteckning", "Uppföljning med hemtjänstgruppen; insatserna fungerar väl; "
                              "tiderna justeras."),
        ("Samverkansmöte", "Samordnad vårdplanering inför utskrivning från sjukhuset."),
    ],
    "LSS": [
        ("Besök", "Besök med {first} och god man. Ansökan om insats enligt 9 § LSS; "
                  "personkretstillhörighet enligt 1 § LSS styrkt genom intyg."),
        ("Telefonsamtal", "Samtal med daglig verksamhet om schema och resor."),
        ("Journalanteckning", "Uppföljning av beslut och genomförandeplan; {first} trivs med insatsen."),
        ("Samverkansmöte", "Möte med habiliteringen om stöd i boendet."),
    ],
}
REPORTERS = ("skolan", "förskolan", "polisen", "BVC", "hälso- och sjukvården", "en anhörig", "en granne")

# Attached document types per case type: (title, format) with weights.
DOCUMENT_TYPES: dict[str, list[tuple[str, str, int]]] = {
    "EB": [("Ansökan om ekonomiskt bistånd", "pdf", 30), ("Kontoutdrag", "pdf", 20), ("Hyresavtal", "pdf", 10),
           ("Beslutsmeddelande", "pdf", 20), ("Läkarintyg", "pdf", 10), ("Arbetsplan", "docx", 10)],
    "BOU": [("Orosanmälan", "pdf", 25), ("Utredning enligt 11 kap. 1 § SoL", "docx", 30),
            ("Vårdplan", "docx", 15), ("Beslutsmeddelande", "pdf", 15), ("Anteckning från skolan", "txt", 15)],
    "MIV": [("Genomförandeplan", "docx", 30), ("Samordnad individuell plan (SIP)", "docx", 20),
            ("Beslutsmeddelande", "pdf", 25), ("Provsvar", "txt", 25)],
    "ÄO": [("Ansökan om bistånd", "pdf", 25), ("Utredning av behov", "docx", 30), ("Beslutsmeddelande", "pdf", 25),
           ("Meddelande från hemtjänsten", "txt", 20)],
    "LSS": [("Ansökan om insats enligt LSS", "pdf", 25), ("Läkarintyg", "pdf", 20),
            ("Utredning enligt LSS", "docx", 25), ("Beslutsmeddelande", "pdf", 20),
            ("Genomförandeplan", "txt", 10)],
}
# Direction of a document as registered (inkommande, utgående, upprättad).
_OUTGOING_TITLES = {"Beslutsmeddelande"}
_INTERNAL_TITLES = {"Arbetsplan", "Utredning enligt 11 kap. 1 § SoL", "Vårdplan", "Genomförandeplan",
                    "Samordnad individuell plan (SIP)", "Utredning av behov", "Utredning enligt LSS"}
DIRECTIONS = ("incoming", "outgoing", "internal")


def direction_of(title: str) -> str:
    """``incoming``, ``outgoing`` or ``internal`` for a document title of :data:`DOCUMENT_TYPES`."""
    if title in _OUTGOING_TITLES:
        return "outgoing"
    return "internal" if title in _INTERNAL_TITLES else "incoming"


MIME = {"pdf": docs.MIME_PDF, "docx": docs.MIME_DOCX, "txt": docs.MIME_TEXT}
MIME_TYPES = tuple(MIME.values())

_SWEDISH_MONTHS = ("januari", "februari", "mars", "april", "maj", "juni", "juli", "augusti", "september",
                   "oktober", "november", "december")


# --------------------------------------------------------------------------- the model


@dataclass
class Person:
    """An individual (enskild) as the social services register them."""

    id: int
    personnummer: str
    first_name: str
    last_name: str
    birth: dt.date
    protected: bool = False  # skyddade personuppgifter (sekretessmarkering / skyddad folkbokföring)

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass
class Note:
    id: int
    date: dt.date
    kind: str
    author: str
    text: str


@dataclass
class Decision:
    id: int
    date: dt.date
    type: str
    legal_basis: str | None
    outcome: str
    valid_from: dt.date | None
    valid_to: dt.date | None
    amount: Decimal | None
    decided_by: str


@dataclass
class Document:
    id: int
    number: int
    title: str
    date: dt.date
    fmt: str
    file_name: str
    write_file: bool = True

    @property
    def mime_type(self) -> str:
        return MIME[self.fmt]

    @property
    def direction(self) -> str:
        return direction_of(self.title)


@dataclass
class CaseFile:
    """A personakt: the person it is about, its co-parties and everything filed in it."""

    id: int
    number: str
    type: CaseType
    subject: Person | None
    subject_id: int
    opened: dt.date
    closed: dt.date | None
    officer: str
    parties: list[tuple[int, Person, str]] = field(default_factory=list)  # (party id, person, role)
    notes: list[Note] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)

    @property
    def last_note(self) -> dt.date | None:
        return max((n.date for n in self.notes), default=None)


@dataclass
class Summary:
    """What one ``generate`` run produced; ``counts`` are totals with bad rows included."""

    system: str
    counts: dict[str, int]
    bytes: int
    bad_rows: dict[str, int] = field(default_factory=dict)  # kind -> count
    defect: str | None = None

    def describe(self) -> str:
        """One line, e.g. ``Viva: 120 individuals, 300 case files, … (2.1 MB)``."""
        parts = ", ".join(f"{n} {label.replace('_', ' ')}" for label, n in self.counts.items())
        line = f"{self.system}: {parts} ({self.bytes / 1e6:.1f} MB)"
        bad = ", ".join(f"{k}={v}" for k, v in self.bad_rows.items() if v)
        if bad:
            line += f"; bad rows: {bad}"
        if self.defect:
            line += f"; defect: {self.defect}"
        return line


class Domain:
    """Draws persons and complete case files from one rng, in a fixed order.

    ``pnr_today`` is the notional "today" that decides '-' or '+' in a personnummer (never
    the clock); ids are handed out in creation order so that rows come out sorted.
    """

    def __init__(self, rng: random.Random, *, municipality: str, pnr_today: dt.date, officers_per_unit: int = 4):
        self.rng = rng
        self.municipality = municipality
        self.pnr_today = pnr_today
        self.persons: list[Person] = []
        self.cases: list[CaseFile] = []
        self._pnr_seen: set[str] = set()
        self._ids = {"person": 0, "party": 0, "note": 0, "decision": 0, "document": 0}
        self.officers = {t.code: [self.person_name()[0] + " " + self.person_name()[1]
                                  for _ in range(officers_per_unit)] for t in CASE_TYPES}

    def next_id(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def person_name(self, female: bool | None = None) -> tuple[str, str]:
        r = self.rng
        if female is None:
            female = r.random() < 0.5
        first = r.choice(names.FIRST_NAMES_FEMALE if female else names.FIRST_NAMES_MALE)
        last = r.choice(names.LAST_NAMES)
        if r.random() < 0.06:  # double surnames
            last = f"{last}-{r.choice(names.LAST_NAMES)}"
        return first, last

    def person(self, ages: tuple[int, int], at: dt.date) -> Person:
        """A new individual aged within ``ages`` on ``at``, with a unique valid personnummer."""
        r = self.rng
        female = r.random() < 0.5
        first, last = self.person_name(female)
        age = r.randint(*ages)
        birth = days_between(r, dt.date(at.year - age - 1, at.month, 1), dt.date(at.year - age, at.month, 1))
        samordning = r.random() < 0.02  # e.g. EU citizens and newly arrived without personnummer yet
        while True:
            # The third digit of the birth number is odd for men, even for women.
            serial = r.randint(0, 99) * 10 + r.choice([0, 2, 4, 6, 8] if female else [1, 3, 5, 7, 9])
            pnr = make_personnummer(birth, serial, samordning=samordning, today=self.pnr_today)
            if pnr not in self._pnr_seen:
                break
        self._pnr_seen.add(pnr)
        p = Person(self.next_id("person"), pnr, first, last, birth, protected=r.random() < 0.02)
        self.persons.append(p)
        return p

    def case_file(self, case_id: int, number: str, ctype: CaseType, opened: dt.date, closed: dt.date | None,
                  *, until: dt.date, subject: Person | None = None) -> CaseFile:
        """A complete case file: subject, co-parties, notes, decisions and documents.

        Notes and decisions fall in [opened, closed] (or [opened, until] for an open file);
        the last note of a closed file is the closing note on the closing day, which starts
        the gallringsfrist (12 kap. 1 § SoL: five years after the last note).
        """
        r = self.rng
        end = closed or until
        subject = subject or self.person(ctype.ages, opened)
        officer = r.choice(self.officers[ctype.code])
        c = CaseFile(case_id, number, ctype, subject, subject.id, opened, closed, officer)
        c.parties.append((self.next_id("party"), subject, SUBJECT_ROLE[ctype.code]))
        role, share, ages = CO_PARTIES[ctype.code]
        if r.random() < share:
            for _ in range(2 if role == "vårdnadshavare" and r.random() < 0.6 else 1):
                c.parties.append((self.next_id("party"), self.person(ages, opened), role))
        self._notes(c, end)
        self._decisions(c, end)
        self._documents(c, end)
        self.cases.append(c)
        return c

    def drop_legal_basis(self, c: CaseFile) -> None:
        """Plant "decision_without_legal_basis": the first decision cites no lagrum (a refusal if there was none)."""
        if not c.decisions:
            dtype, basis, _ = DECISION_TYPES[c.type.code][0]
            c.decisions.append(Decision(self.next_id("decision"), c.opened, dtype, basis, "avslag",
                                        None, None, None, c.officer))
        c.decisions[0].legal_basis = None

    def _fill(self, template: str, c: CaseFile, when: dt.date) -> str:
        r = self.rng
        return template.format(
            first=c.subject.first_name if c.subject else "den enskilde",
            month=f"{_SWEDISH_MONTHS[when.month - 1]} {when.year}",
            amount=f"{r.randint(800, 9000):,}".replace(",", " "),
            reporter=r.choice(REPORTERS),
            gata=f"{r.choice(names.STREETS)} {r.randint(1, 60)}",
        )

    def _notes(self, c: CaseFile, end: dt.date) -> None:
        r = self.rng
        templates = NOTE_TEMPLATES[c.type.code]
        dates = sorted(days_between(r, c.opened, end) for _ in range(r.randint(2, 7)))
        dates[0] = c.opened  # the file is opened with its first note
        for d in dates:
            (kind, template), (_, second) = r.sample(templates, 2)
            text = self._fill(template, c, d)
            if r.random() < 0.35:  # a second paragraph: multi-line free text
                text += "\n" + self._fill(second, c, d)
            c.notes.append(Note(self.next_id("note"), d, kind, c.officer, text))
        if c.closed:
            reason = r.choice(["Insatsen avslutad enligt plan", "Den enskilde har flyttat från kommunen",
                               "Behov av stöd upphört", "Utredningen avslutad; ingen ytterligare åtgärd"])
            c.notes.append(Note(self.next_id("note"), c.closed, "Avslut", c.officer,
                                f"{reason}. Akten avslutas {c.closed.isoformat()}."))

    def _decisions(self, c: CaseFile, end: dt.date) -> None:
        r = self.rng
        types = DECISION_TYPES[c.type.code]
        count = r.choices([0, 1, 2, 3, 4], weights=[8 if c.type.code == "BOU" else 1, 45, 30, 15, 9])[0]
        # Dates first, ids after sorting: decision ids follow the decision dates, as in the source.
        for date in sorted(days_between(r, c.opened, end) for _ in range(count)):
            dtype, basis, _w = r.choices(types, weights=[t[2] for t in types])[0]
            outcome = r.choices(OUTCOMES, weights=[78, 8, 14])[0]
            valid_from = valid_to = amount = None
            if outcome != "avslag":
                valid_from = date if c.type.code != "EB" else date.replace(day=1)
                if c.type.code == "EB":
                    valid_to = month_end(valid_from)  # försörjningsstöd is decided month by month
                    amount = Decimal(r.randint(150_000, 1_600_000)) / 100
                    if dtype != "Försörjningsstöd":
                        amount = Decimal(r.randint(40_000, 900_000)) / 100
                else:
                    valid_to = valid_from + dt.timedelta(days=r.choice([90, 180, 365, 730]))
            c.decisions.append(Decision(self.next_id("decision"), date, dtype, basis, outcome, valid_from, valid_to,
                                        amount, c.officer))

    def _documents(self, c: CaseFile, end: dt.date) -> None:
        r = self.rng
        types = DOCUMENT_TYPES[c.type.code]
        count = r.choices([1, 2, 3, 4], weights=[30, 35, 22, 13])[0]
        # Numbered in date order, as filed in the personakt.
        for number, date in enumerate(sorted(days_between(r, c.opened, end) for _ in range(count)), start=1):
            title, fmt, _w = r.choices(types, weights=[t[2] for t in types])[0]
            ext = "txt" if fmt == "txt" else fmt
            file_name = safe_filename(f"{title} {date.isoformat()}") + f".{ext}"
            c.documents.append(Document(self.next_id("document"), number, title, date, fmt, file_name))


def render_document(doc: Document, c: CaseFile, *, municipality: str, unit: str) -> bytes:
    """The bytes of one attached document (deterministic: depends on its fields only)."""
    subject = c.subject.name if c.subject else "(okänd)"
    pnr = c.subject.personnummer if c.subject else ""
    header = [
        municipality,
        f"Socialförvaltningen, {unit}",
        f"Akt: {c.number} – {c.type.title}",
        f"Avser: {subject} {pnr}".rstrip(),
        f"Datum: {doc.date.isoformat()}",
        f"SEKRETESS enligt {SECRECY_REFERENCE}",
    ]
    body = [n.text.replace("\n", " ") for n in c.notes[:3]]
    decided = [f"{d.type} ({d.legal_basis}): {d.outcome}" for d in c.decisions if d.legal_basis]
    if doc.title == "Beslutsmeddelande" and decided:
        body = ["Socialnämnden har fattat följande beslut:", *decided,
                "Beslutet kan överklagas till förvaltningsrätten inom tre veckor från den dag du fick del av det."]
    if doc.fmt == "pdf":
        return docs.make_pdf(["\n".join([*header, "", doc.title, "", *body])], title=doc.title)
    if doc.fmt == "docx":
        return docs.make_docx(["\n".join(header), doc.title, *body], title=doc.title)
    return docs.make_text(doc.title, body or ["(ingen text)"], header=header)
