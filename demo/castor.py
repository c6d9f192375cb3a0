"""Simulator of Castor, Eskilstuna's bygg- och miljösystem: a system *prepared* for e-archiving.

Castor exports finished FGS packages itself (FGS Paketstruktur 2.0 = E-ARK CSIP 2.1.0 + SIP
2.1.0, descriptive metadata in FGS Ärendehantering 2.0 = CITS ERMS, PREMIS 3, SHA-256) and
drops them into an inbox, one ``.tar`` or ``.zip`` per package. Each package holds a handful
of closed bygglovsärenden (building-permit cases) of Miljö- och byggnämnden: the ansökan,
the drawings (vector PDF from the architect's CAD, or a multi-page Group 4 TIFF where the
drawings came in on paper and were scanned), the kontrollplan, the beslut, the protocols
of tekniskt samråd and arbetsplatsbesök (tillsyn/besiktning) and the slutbesked.

The packages are built the way a supplier's exporter would: with the project's XML
builders (they follow the specifications) but as the supplier's software agent ("Castor
e-arkivexport 4.2.1"), with the supplier's own package IDs (UUIDv5 of the seed), and without
Arkivflöde's retention extension. Besides ``size`` valid packages, ``bad`` writes packages
broken in one unrepairable way each (:data:`BAD_KINDS`, in rotation) and ``repairable``
packages with only safely repairable faults (:data:`REPAIRABLE_KINDS`, in rotation).

Everything derives from ``random.Random(seed)`` and ``year``, never the clock: one seed
gives byte-identical packages. Run ``python -m demo.castor --inbox var/demo/castor-inbox``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import random
import re
import sys
import tarfile
import unicodedata
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from demo import _simulator as sim
from demo import documents as docs
from demo import names
from transforms.common.identifiers import make_organisationsnummer, make_personnummer
from transforms.common.xmltools import NS_METS, NS_PREMIS, SCHEMA_DIR, schema_errors, schemas_used
from transforms.packaging import erms, premis
from transforms.packaging.fgs import FGS_ERMS, MetsAgent
from transforms.packaging.mets import FileGroup, FileRef, MetadataRef, build_mets

#: Unrepairable faults; ``bad=N`` writes N packages, the kinds taken in this order.
BAD_KINDS = ("checksum_mismatch", "mets_not_well_formed", "path_traversal", "missing_objid")
#: Faults a receiving archive may safely repair (the content is untouched and complete).
REPAIRABLE_KINDS = ("schemas_missing", "file_attributes_missing")

SOFTWARE = "Castor e-arkivexport"
SOFTWARE_VERSION = "4.2.1"
ARCHIVE_CREATOR = ("Eskilstuna kommun", "212000-0340")
SUBMITTER = ("Miljö- och byggnämnden, Eskilstuna kommun", "212000-0340")
SUBMISSION_AGREEMENT = "FGS-CASTOR-2026-01"
REFERENCE_CODE = "SE/212000-0340/MBN/CASTOR"
UNIT = "Miljö- och byggnämnden"
PREFIX = "MBN"
CLASSIFICATION = "2.1"  # Bygglov, in the municipality's klassificeringsstruktur

#: Castor's own namespace for package IDs (the supplier's, not Arkivflöde's)
CASTOR_NAMESPACE = uuid.UUID("c4570a00-2b1e-5e57-9d1c-657369727475")
REP = "rep1"

# Lists the packages written by the last run, so a rerun replaces exactly those.
MANIFEST = ".castor-simulator-files"

DIARIENUMMER_RE = re.compile(r"^MBN \d{4}/\d{4}$")

# How the package's ERMS is filled: the same mapping keys as a YAML ``content`` section.
ERMS_MAPPING = {
    "case": {"table": "arenden", "id": "arende_id", "reference": "diarienummer", "title": "rubrik", "unit": "enhet",
             "officer": "handlaggare", "classification": "klass", "status": "status", "opened": "inkom",
             "closed": "avslutat"},
    "document": {"table": "handlingar", "id": "handling_id", "number": "lopnummer", "title": "rubrik",
                 "direction": "riktning", "date": "datum", "registered": "registrerad", "file_name": "filnamn",
                 "mime_type": "mimetyp"},
    "party": {"table": "intressenter", "name": "namn", "personnummer": "personnummer",
              "organisationsnummer": "organisationsnummer", "role": "roll"},
}

# ------------------------------------------------------------------------- vocabulary

# (ärendetyp, åtgärd, weight, drawings?, kontrollplan?, tekniskt samråd?)
_ATGARDER: list[tuple[str, str, int, bool, bool, bool]] = [
    ("Bygglov", "Nybyggnad av enbostadshus", 16, True, True, True),
    ("Bygglov", "Tillbyggnad av enbostadshus", 14, True, True, False),
    ("Bygglov", "Nybyggnad av garage/carport", 10, True, True, False),
    ("Bygglov", "Nybyggnad av komplementbyggnad", 8, True, True, False),
    ("Bygglov", "Fasadändring, byte av fasadmaterial", 6, True, False, False),
    ("Bygglov", "Nybyggnad av flerbostadshus", 3, True, True, True),
    ("Bygglov", "Ändrad användning från kontor till bostäder", 3, True, True, True),
    ("Bygglov", "Uppsättning av skylt", 5, True, False, False),
    ("Rivningslov", "Rivning av ekonomibyggnad", 5, False, True, False),
    ("Marklov", "Marklov för uppfyllnad av tomtmark", 3, True, True, False),
    ("Anmälan", "Installation av eldstad och rökkanal", 12, False, True, False),
    ("Anmälan", "Nybyggnad av attefallshus", 10, True, True, False),
    ("Anmälan", "Ändring av bärande konstruktion", 5, True, True, True),
]
_WEIGHTS = [a[2] for a in _ATGARDER]

_OUTCOMES = [("Beviljas", 88), ("Avslås", 5), ("Avskrivs", 7)]

_HANDLAGGARE_TITLES = ("bygglovshandläggare", "bygglovsarkitekt", "byggnadsinspektör")

_SENTENCES = [
    "Ansökan avser {atgard_lower} på fastigheten {fastighet}.",
    "Fastigheten omfattas av detaljplan som vann laga kraft {planar}.",
    "Åtgärden bedöms vara förenlig med detaljplanens bestämmelser om byggnadsarea och byggnadshöjd.",
    "Grannar har underrättats och beretts tillfälle att yttra sig; inga erinringar har inkommit.",
    "Kontrollansvarig enligt PBL är {ka}, certifierad med behörighet N.",
    "Avgift tas ut enligt taxa fastställd av kommunfullmäktige.",
    "Beslutet har fattats med stöd av delegation enligt nämndens delegeringsordning.",
    "Åtgärden får påbörjas tidigast fyra veckor efter att beslutet kungjorts i Post- och Inrikes Tidningar.",
    "Vid arbetsplatsbesöket kontrollerades grundläggning, bärande konstruktion och brandskydd.",
    "Relationsritningar och intyg om täthetsprovning ska lämnas in före slutsamrådet.",
    "Byggnaden placeras minst 4,5 meter från tomtgräns mot granne.",
    "Dagvatten ska omhändertas inom den egna fastigheten.",
]

_FORMAT_MIME = {"pdf": docs.MIME_PDF, "tiff": docs.MIME_TIFF}


# ------------------------------------------------------------------------------ data


@dataclass
class CastorSummary:
    """What :func:`generate` wrote: counts, bytes, and the kind of every package."""

    counts: dict[str, int]
    bytes: int
    bad_rows: dict[str, int]  # packages per bad or repairable kind
    kinds: dict[str, str] = field(default_factory=dict)  # file name -> "valid" or the fault's kind

    def describe(self) -> str:
        """``Castor: 6 packages (26 cases, 180 files), 2 bad, 1 repairable (3.1 MB)``."""
        c = self.counts
        bad = sum(self.bad_rows.get(k, 0) for k in BAD_KINDS)
        rep = sum(self.bad_rows.get(k, 0) for k in REPAIRABLE_KINDS)
        return (f"Castor: {c['valid']} packages ({c['cases']} cases, {c['documents']} documents, "
                f"{c['files']} files), {bad} bad, {rep} repairable ({self.bytes / 1e6:.1f} MB)")


@dataclass
class _Doc:
    handling_id: int
    lopnummer: int
    rubrik: str
    riktning: str
    datum: dt.date
    fmt: str
    filnamn: str
    pages: list[str]
    seed: int


@dataclass
class _Case:
    arende_id: int
    diarienummer: str
    rubrik: str
    arendetyp: str
    atgard: str
    fastighet: str
    handlaggare: str
    inkom: dt.date
    beslut: dt.date
    beslut_text: str
    avslutat: dt.date
    parties: list[dict]
    besiktningar: list[tuple[str, dt.date]]
    docs: list[_Doc] = field(default_factory=list)


def _days(r: random.Random, lo: dt.date, hi: dt.date) -> dt.date:
    # Unlike sim.days_between this draws even when the span is empty: Castor's sequence depends on it.
    return lo + dt.timedelta(days=r.randint(0, max((hi - lo).days, 0)))


def _workday(d: dt.date) -> dt.date:
    while d.weekday() >= 5:
        d += dt.timedelta(days=1)
    return d


def _safe(name: str) -> str:
    """ASCII file name, as Castor writes them into a package (the original stays in ERMS)."""
    ascii_only = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_only).strip("._")[:100] or "fil"


class _Generator:
    def __init__(self, seed: int, year: int):
        self.rng = random.Random(seed)
        self.year = year
        self.serials: dict[int, int] = {}
        self.next_case = 1
        self.next_doc = 1

    def fastighet(self) -> str:
        r = self.rng
        if r.random() < 0.3:
            return f"Torshälla {r.choice(names.PROPERTY_TRACTS[1:])} {r.randint(1, 30)}:{r.randint(1, 250)}"
        trakt = r.choice(names.PROPERTY_TRACTS + names.LOCALITIES[2:])
        return f"Eskilstuna {trakt} {r.randint(1, 40)}:{r.randint(1, 400)}"

    def person(self, role: str) -> dict:
        r = self.rng
        female = r.random() < 0.5
        first = r.choice(names.FIRST_NAMES_FEMALE if female else names.FIRST_NAMES_MALE)
        birth = _days(r, dt.date(1945, 1, 1), dt.date(1998, 12, 31))
        serial = r.randrange(0, 1000, 2) + (0 if female else 1)  # the ninth digit's parity is the sex
        pnr = make_personnummer(birth, serial, today=dt.date(self.year, 12, 31))
        return {"namn": f"{first} {r.choice(names.LAST_NAMES)}", "personnummer": pnr, "organisationsnummer": None,
                "roll": role}

    def organisation(self, role: str) -> dict:
        r = self.rng
        name = f"{r.choice(names.ORGANISATION_STEMS)} Bygg AB" if role != "Sökande" or r.random() < 0.5 else (
            f"Brf {r.choice(names.PROPERTY_TRACTS)}")
        seed9 = ("556" if name.endswith("AB") else "769") + f"{r.randrange(0, 10**6):06d}"
        return {"namn": name, "personnummer": None, "organisationsnummer": make_organisationsnummer(seed9),
                "roll": role}

    def case(self) -> _Case:
        r = self.rng
        arendetyp, atgard, _, drawings, kontrollplan, samrad = r.choices(_ATGARDER, weights=_WEIGHTS)[0]
        # Closed (slutbesked or final decision) in `year`; the application came in up to two
        # years earlier, the decision within the ten weeks PBL allows (sometimes more).
        avslutat = _workday(_days(r, dt.date(self.year, 1, 2), dt.date(self.year, 12, 18)))
        outcome = r.choices([o for o, _ in _OUTCOMES], weights=[w for _, w in _OUTCOMES])[0]
        lead = r.randint(20, 70) if outcome != "Beviljas" else r.randint(30, 75)
        beslut = avslutat - dt.timedelta(days=0 if outcome != "Beviljas" else r.randint(60, 500))
        inkom = _workday(beslut - dt.timedelta(days=lead))
        beslut = _workday(max(beslut, inkom + dt.timedelta(days=5)))
        avslutat = max(avslutat, beslut)
        serial = self.serials[inkom.year] = self.serials.get(inkom.year, r.randint(80, 200)) + r.randint(1, 9)
        fastighet = self.fastighet()
        sokande = self.person("Sökande") if r.random() < 0.8 else self.organisation("Sökande")
        parties = [sokande]
        if kontrollplan and outcome == "Beviljas":
            parties.append(self.person("Kontrollansvarig"))
        officer = f"{r.choice(names.FIRST_NAMES_FEMALE + names.FIRST_NAMES_MALE)} {r.choice(names.LAST_NAMES)}"
        besiktningar: list[tuple[str, dt.date]] = []
        if outcome == "Beviljas" and kontrollplan:
            if samrad:
                besiktningar.append(("Tekniskt samråd", _workday(beslut + dt.timedelta(days=r.randint(7, 30)))))
            if r.random() < 0.6:
                besiktningar.append(("Arbetsplatsbesök", _workday(_days(r, beslut + dt.timedelta(days=40),
                                                                       avslutat - dt.timedelta(days=10)))))
            besiktningar.append(("Slutsamråd", _workday(avslutat - dt.timedelta(days=r.randint(3, 14)))))
            besiktningar = [(k, min(d, avslutat)) for k, d in sorted(besiktningar, key=lambda b: b[1])]
        c = _Case(
            arende_id=self.next_case, diarienummer=f"{PREFIX} {inkom.year}/{serial:04d}",
            rubrik=f"{atgard}, {fastighet}", arendetyp=arendetyp, atgard=atgard, fastighet=fastighet,
            handlaggare=officer, inkom=inkom, beslut=beslut,
            beslut_text=_decision(arendetyp, outcome),
            avslutat=avslutat, parties=parties, besiktningar=besiktningar,
        )
        self.next_case += 1
        self.add_documents(c, drawings, kontrollplan, outcome)
        return c

    def add_doc(self, c: _Case, rubrik: str, riktning: str, datum: dt.date, fmt: str, pages: list[str]) -> None:
        ext = "tif" if fmt == "tiff" else "pdf"
        d = _Doc(self.next_doc, len(c.docs) + 1, rubrik, riktning, datum, fmt, f"{rubrik}.{ext}", pages,
                 self.rng.getrandbits(64))
        self.next_doc += 1
        c.docs.append(d)

    def text(self, c: _Case, k: int) -> str:
        r = self.rng
        fill = {"atgard_lower": c.atgard[0].lower() + c.atgard[1:], "fastighet": c.fastighet,
                "planar": str(r.randint(1958, 2015)),
                "ka": next((p["namn"] for p in c.parties if p["roll"] == "Kontrollansvarig"), "ej utsedd")}
        return "\n\n".join(s.format(**fill) for s in r.sample(_SENTENCES, k))

    def add_documents(self, c: _Case, drawings: bool, kontrollplan: bool, outcome: str) -> None:
        r = self.rng
        head = f"{names.MUNICIPALITY}\n{UNIT}\nDiarienummer: {c.diarienummer}\nFastighet: {c.fastighet}\n"
        sok = c.parties[0]["namn"]
        self.add_doc(c, f"Ansökan om {c.arendetyp.lower()}" if c.arendetyp != "Anmälan" else "Anmälan",
                     "incoming", c.inkom, "pdf",
                     [f"{head}\nSökande: {sok}\nÅtgärd: {c.atgard}\nInkom: {c.inkom.isoformat()}\n\n{self.text(c, 2)}"])
        if drawings:
            sheets = ["Situationsplan", "Planritning", "Fasadritning mot söder", "Fasadritning mot norr",
                      "Sektion A-A"][: r.randint(2, 5)]
            sheets = [f"{s}\n{c.atgard}\n{c.fastighet}\nSkala 1:100 (A3)\n{c.diarienummer}" for s in sheets]
            # Drawings handed in on paper are scanned (TIFF); the rest come from CAD (PDF).
            fmt = "tiff" if r.random() < 0.35 else "pdf"
            title = "Ritningar, inskannade" if fmt == "tiff" else "Ritningar"
            self.add_doc(c, title, "incoming", c.inkom, fmt, sheets)
        if kontrollplan and outcome == "Beviljas":
            self.add_doc(c, "Förslag till kontrollplan", "incoming", c.inkom + dt.timedelta(days=r.randint(0, 10)),
                         "pdf", [f"{head}\nKontrollplan enligt PBL 10 kap. 6 §\n\n{self.text(c, 3)}"])
        self.add_doc(c, f"Beslut: {c.beslut_text}", "outgoing", c.beslut, "pdf",
                     [f"{head}\nBESLUT {c.beslut.isoformat()}\n{c.beslut_text}\n\n{self.text(c, 4)}"])
        for kind, when in c.besiktningar:
            title = {"Tekniskt samråd": "Protokoll från tekniskt samråd",
                     "Arbetsplatsbesök": "Protokoll från arbetsplatsbesök",
                     "Slutsamråd": "Protokoll från slutsamråd"}[kind]
            self.add_doc(c, title, "internal", when, "pdf",
                         [f"{head}\n{title}, {when.isoformat()}\nNärvarande: {c.handlaggare}, {sok}\n\n"
                          f"{self.text(c, 3)}"])
        if outcome == "Beviljas" and kontrollplan:
            self.add_doc(c, "Slutbesked", "outgoing", c.avslutat, "pdf",
                         [f"{head}\nSLUTBESKED {c.avslutat.isoformat()}\nByggnadsverket får tas i bruk.\n\n"
                          f"{self.text(c, 2)}"])


def _decision(arendetyp: str, outcome: str) -> str:
    """The decision as the beslut states it: an anmälan gets a startbesked, not a lov."""
    if outcome == "Avskrivs":
        return "Ärendet avskrivs"
    if arendetyp == "Anmälan":
        return "Startbesked lämnas" if outcome == "Beviljas" else "Startbesked vägras"
    return f"{arendetyp} {outcome.lower()}"


def _render(d: _Doc, c: _Case) -> bytes:
    rng = random.Random(d.seed)
    if d.fmt == "tiff":
        return docs.make_tiff(rng, d.pages)
    if d.rubrik.startswith("Ritningar"):
        return docs.make_drawing_pdf(rng, d.pages, title=f"{d.rubrik} – {c.diarienummer}")
    return docs.make_pdf(d.pages, title=f"{d.rubrik} – {c.diarienummer}")


# ------------------------------------------------------------------------ packaging


def _ref(file_id: str, href: str, data: bytes, mime: str, created: dt.datetime) -> FileRef:
    return FileRef(file_id, href, mime, len(data), hashlib.sha256(data).hexdigest(), created)


def _xml(tree: etree._ElementTree, what: str) -> bytes:
    # Castor checks its own XML against the schemas before it exports (a supplier's duty).
    errors = schema_errors(tree)
    if errors:
        raise RuntimeError(f"{what}: {'; '.join(errors[:3])}")
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _castor_agent() -> MetsAgent:
    return MetsAgent("CREATOR", "OTHER", SOFTWARE, SOFTWARE_VERSION, "SOFTWARE VERSION", other_type="SOFTWARE")


def _own_elements(agg: etree._Element, c: _Case) -> None:
    """Castor's bygglov fields as ERMS ownElements, placed where the schema's sequence wants them."""
    e = agg.nsmap.get(None) or erms.NS_ERMS
    q = f"{{{e}}}"
    info = etree.Element(q + "additionalInformation")
    own = etree.SubElement(info, q + "ownElement")
    etree.SubElement(own, q + "ownElementDescription").text = f"Bygglovsuppgifter ur {SOFTWARE}"
    fields = [("arendetyp", c.arendetyp), ("atgard", c.atgard), ("fastighetsbeteckning", c.fastighet),
              ("beslut", c.beslut_text), ("beslutsdatum", c.beslut.isoformat())]
    fields += [("besiktning", f"{kind} {when.isoformat()}") for kind, when in c.besiktningar]
    for name, value in fields:
        el = etree.SubElement(own, q + "ownElement", name=name, dataType="date" if name == "beslutsdatum" else "string")
        etree.SubElement(el, q + "value").text = value
    status = agg.find(q + "status")
    anchor = status if status is not None else agg.find(q + "title")
    anchor.addnext(info)


def _build(objid: str, cases: list[_Case], created: dt.datetime, *, schemas: bool = True,
           drop_attrs: bool = False) -> dict[str, bytes]:
    """The members of one package, relative to its root folder, in the order they are written."""
    members: dict[str, bytes] = {}
    data_refs: list[FileRef] = []
    objects: list[premis.FileObject] = []
    erms_cases = []
    for c in cases:
        folder = _safe(c.diarienummer.replace("/", "-"))
        ec = erms.Case(fields={"arende_id": c.arende_id, "diarienummer": c.diarienummer, "rubrik": c.rubrik,
                               "enhet": UNIT, "handlaggare": c.handlaggare, "klass": CLASSIFICATION,
                               "status": "closed", "inkom": c.inkom, "avslutat": c.avslutat},
                       parties=c.parties)
        for d in c.docs:
            data = _render(d, c)
            rel = f"{folder}/{d.lopnummer:02d}_{_safe(d.filnamn)}"
            arc = f"representations/{REP}/data/{rel}"
            members[arc] = data
            mime = _FORMAT_MIME[d.fmt]
            when = dt.datetime.combine(d.datum, dt.time(9, 0), dt.UTC) + dt.timedelta(minutes=d.handling_id % 480)
            data_refs.append(_ref(f"file-{d.handling_id}", f"data/{rel}", data, mime, when))
            objects.append(premis.FileObject(arc, hashlib.sha256(data).hexdigest(), len(data), mime, d.filnamn))
            ec.documents.append(erms.Document(
                fields={"handling_id": d.handling_id, "lopnummer": d.lopnummer, "rubrik": d.rubrik,
                        "riktning": d.riktning, "datum": d.datum, "registrerad": d.datum, "filnamn": d.filnamn,
                        "mimetyp": mime},
                package_path=f"../../{arc}", size=len(data)))
        erms_cases.append((ec, c))

    retention = {"record_class": "bygglov-bevaras", "action": "keep", "period": "P10Y",
                 "basis": "Informationshanteringsplan Miljö- och byggnämnden, 2.3: bygglov bevaras"}
    erms_tree = erms.build_erms([ec for ec, _ in erms_cases], mapping=ERMS_MAPPING,
                                system_title="Castor – bygg och miljö", creator_name=ARCHIVE_CREATOR[0],
                                creator_orgnr=ARCHIVE_CREATOR[1], package_id=objid, created=created,
                                software=f"{SOFTWARE} {SOFTWARE_VERSION}", retention=retention)
    aggs = erms_tree.getroot().iter(f"{{{erms.NS_ERMS}}}aggregation")
    for agg, (_, c) in zip(aggs, erms_cases, strict=True):
        _own_elements(agg, c)
    erms_bytes = _xml(erms_tree, "ERMS.xml")

    software = premis.Agent("castor-e-arkivexport", SOFTWARE, "software", SOFTWARE_VERSION)
    creator = premis.Agent(ARCHIVE_CREATOR[1], ARCHIVE_CREATOR[0], "organization",
                           identifier_type="organisationsnummer")
    creation = premis.Event(f"{objid}-creation", "creation", created, "success",
                            f"Exported by {SOFTWARE} {SOFTWARE_VERSION}: {len(cases)} bygglovsärenden, "
                            f"{len(objects)} files", agents=(("castor-e-arkivexport", "executing program"),),
                            objects=tuple(o.identifier for o in objects))
    digest = premis.Event(f"{objid}-digest", "message digest calculation", created, "success",
                          "SHA-256 of every file at export", agents=(("castor-e-arkivexport", "executing program"),))
    premis_tree = premis.build_premis([], [creation], [software, creator], representations=[f"representations/{REP}"])
    rep_premis_tree = premis.build_premis(objects, [digest], [software], schema_prefix="../../../../")
    for el in rep_premis_tree.getroot().iter(f"{{{NS_PREMIS}}}messageDigestOriginator"):
        el.text = SOFTWARE  # the checksums are Castor's, computed at export
    premis_bytes = _xml(premis_tree, "premis.xml")
    rep_premis_bytes = _xml(rep_premis_tree, "rep premis.xml")

    label = f"Castor – bygglovsärenden, {SUBMITTER[0]}"
    rep_mets = build_mets(
        objid=REP, label=f"{label} ({REP})", profile=FGS_ERMS, package_type="SIP", created=created,
        agents=[_castor_agent()],
        metadata=[MetadataRef("digiprovMD", _ref("digiprov-premis-rep1", "metadata/preservation/premis.xml",
                                                 rep_premis_bytes, "application/xml", created), "PREMIS")],
        groups=[FileGroup(f"Representations/{REP}/data", data_refs, FGS_ERMS.content_information_type)],
        schema_prefix="../../",
    )
    if drop_attrs:
        _drop_file_attributes(rep_mets)
    rep_bytes = _xml(rep_mets, "rep METS.xml")

    documentation = docs.make_pdf([
        f"{SOFTWARE} {SOFTWARE_VERSION}\nLeveransbeskrivning\n\n{SUBMITTER[0]}\n"
        f"Leveransöverenskommelse {SUBMISSION_AGREEMENT}\nReferenskod {REFERENCE_CODE}\n\n"
        f"Paketet innehåller {len(cases)} avslutade bygglovsärenden med handlingar i PDF och TIFF. "
        "Beskrivande metadata enligt FGS Ärendehantering 2.0 (CITS ERMS); Castors egna fält "
        "(ärendetyp, åtgärd, fastighetsbeteckning, beslut, besiktningar) ligger som ownElement."
    ], title="Leveransbeskrivning")

    used = sorted(set(schemas_used(erms_tree)) | set(schemas_used(premis_tree)) | set(schemas_used(rep_mets))
                  | {"mets.xsd", "xlink.xsd", "DILCISExtensionMETS.xsd", "DILCISExtensionSIPMETS.xsd"})
    schema_refs = []
    if schemas:
        for i, name in enumerate(used):
            data = (SCHEMA_DIR / name).read_bytes()
            members[f"schemas/{name}"] = data
            schema_refs.append(_ref(f"schema-{i}", f"schemas/{name}", data, "application/xml", created))
    members["documentation/leveransbeskrivning.pdf"] = documentation
    members["metadata/descriptive/ERMS.xml"] = erms_bytes
    members["metadata/preservation/premis.xml"] = premis_bytes
    members[f"representations/{REP}/metadata/preservation/premis.xml"] = rep_premis_bytes
    members[f"representations/{REP}/METS.xml"] = rep_bytes

    groups = [FileGroup("Documentation", [_ref("doc-leveransbeskrivning", "documentation/leveransbeskrivning.pdf",
                                               documentation, docs.MIME_PDF, created)])]
    if schemas:
        groups.append(FileGroup("Schemas", schema_refs))
    groups.append(FileGroup(f"Representations/{REP}", [_ref(f"mets-{REP}", f"representations/{REP}/METS.xml",
                                                             rep_bytes, "application/xml", created)],
                            FGS_ERMS.content_information_type))
    agents = [_castor_agent(),
              MetsAgent("ARCHIVIST", "ORGANIZATION", ARCHIVE_CREATOR[0], ARCHIVE_CREATOR[1], "IDENTIFICATIONCODE"),
              MetsAgent("CREATOR", "ORGANIZATION", SUBMITTER[0], SUBMITTER[1], "IDENTIFICATIONCODE")]
    root_mets = build_mets(
        objid=objid, label=label, profile=FGS_ERMS, package_type="SIP", created=created, agents=agents,
        alt_record_ids=FGS_ERMS.alt_record_ids(SUBMISSION_AGREEMENT, REFERENCE_CODE),
        metadata=[
            MetadataRef("dmdSec", _ref("dmd-erms", "metadata/descriptive/ERMS.xml", erms_bytes, "application/xml",
                                       created), "OTHER", "ERMS"),
            MetadataRef("digiprovMD", _ref("digiprov-premis", "metadata/preservation/premis.xml", premis_bytes,
                                           "application/xml", created), "PREMIS"),
        ],
        groups=groups,
        representations=[(REP, f"representations/{REP}/METS.xml")],
    )
    if drop_attrs:
        _drop_file_attributes(root_mets)
    members["METS.xml"] = _xml(root_mets, "METS.xml")
    return members


def _drop_file_attributes(tree: etree._ElementTree) -> None:
    """Castor 4.2.0's bug, for the repairable packages: SIZE left off even files, CREATED off odd ones."""
    for i, el in enumerate(tree.getroot().iter(f"{{{NS_METS}}}file")):
        del el.attrib["SIZE" if i % 2 == 0 else "CREATED"]


def _break(kind: str, members: dict[str, bytes], rng: random.Random) -> dict[str, bytes]:
    """Damage a valid package in one unrepairable way."""
    if kind == "checksum_mismatch":
        # A document changed after the export computed its checksum (same size: only the
        # checksum can tell); nobody can say which bytes are the record.
        arc = rng.choice(sorted(a for a in members if a.endswith(".pdf") and "/data/" in a))
        data = bytearray(members[arc])
        at = data.index(b"stream\n") + 12
        data[at] = ord("X") if data[at] != ord("X") else ord("Y")
        members[arc] = bytes(data)
    elif kind == "mets_not_well_formed":
        # An export interrupted while writing METS.xml: the document stops mid-element.
        mets = members.pop("METS.xml")
        members["METS.xml"] = mets[: len(mets) * 2 // 3]
    elif kind == "path_traversal":
        # A member whose path leaves the package folder: never unpacked, never repaired.
        members["../../castor-export.log"] = b"export ok\n"
    elif kind == "missing_objid":
        # The package's identity (mets/@OBJID, CSIP1) is missing and cannot be inferred.
        root = etree.fromstring(members.pop("METS.xml"))
        del root.attrib["OBJID"]
        members["METS.xml"] = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(kind)
    return members


def _write_package(path: Path, objid: str, members: dict[str, bytes], created: dt.datetime) -> int:
    """Write the package atomically as .tar or .zip (by suffix); deterministic bytes."""
    buf = io.BytesIO()
    mtime = int(created.timestamp())
    if path.suffix == ".zip":
        stamp = created.timetuple()[:6]
        with zipfile.ZipFile(buf, "w") as zf:
            for arc, data in members.items():
                info = zipfile.ZipInfo(f"{objid}/{arc}", date_time=stamp)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)
    else:
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for arc, data in members.items():
                info = tarfile.TarInfo(f"{objid}/{arc}")
                info.size, info.mtime, info.mode = len(data), mtime, 0o644
                info.uname = info.gname = "castor"
                tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    sim.write_atomic(path, data)  # the inbox never shows a half-written package
    return len(data)


# ------------------------------------------------------------------------------ public


def generate(inbox: Path, *, size: int = 6, seed: int = 1, year: int = 2025, bad: int = 0, repairable: int = 0,
             as_zip: int = 1) -> CastorSummary:
    """Write Castor's export of ``year`` into ``inbox``: ``size`` valid packages, plus faulty ones.

    Each package holds 3–6 bygglovsärenden closed in ``year``, exported in January of the
    following year. ``as_zip`` of the valid packages are ``.zip``, the rest ``.tar``; the
    ``bad`` packages are broken in one unrepairable way each (:data:`BAD_KINDS` in turn), the
    ``repairable`` ones only in ways a receiver may safely repair (:data:`REPAIRABLE_KINDS`
    in turn). Packages of a previous run listed in the inbox's manifest are replaced; other
    files in the inbox are left alone. Same arguments ⇒ identical bytes.
    """
    if min(size, bad, repairable, as_zip) < 0:
        raise ValueError("size, bad, repairable and as_zip must not be negative")
    if as_zip > size:
        raise ValueError("as_zip cannot exceed size (it counts valid packages)")
    inbox = Path(inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    sim.clear_listed(inbox, MANIFEST)
    g = _Generator(seed, year)
    r = g.rng

    plan = [("valid", None)] * size + [("bad", BAD_KINDS[i % len(BAD_KINDS)]) for i in range(bad)]
    plan += [("repairable", REPAIRABLE_KINDS[i % len(REPAIRABLE_KINDS)]) for i in range(repairable)]
    counts = {"packages": len(plan), "valid": size, "cases": 0, "documents": 0, "files": 0}
    bad_rows = {k: 0 for k in (*BAD_KINDS, *REPAIRABLE_KINDS)}
    kinds: dict[str, str] = {}
    total = 0
    written: list[str] = []
    for n, (cls, kind) in enumerate(plan):
        cases = sorted((g.case() for _ in range(r.randint(3, 6))), key=lambda c: c.diarienummer)
        objid = "uuid-" + str(uuid.uuid5(CASTOR_NAMESPACE, f"castor|{seed}|{year}|{n}|{cls}|{kind}"))
        # The export runs at night in the first weeks of the next year, one package a night.
        created = dt.datetime(year + 1, 1, 8, 1, 30, tzinfo=dt.UTC) + dt.timedelta(days=n, minutes=r.randint(0, 50))
        members = _build(objid, cases, created, schemas=kind != "schemas_missing",
                         drop_attrs=kind == "file_attributes_missing")
        if cls == "bad":
            members = _break(kind, members, r)
        suffix = ".zip" if cls == "valid" and n >= size - as_zip else ".tar"
        name = f"{objid}{suffix}"
        total += _write_package(inbox / name, objid, members, created)
        written.append(name)
        kinds[name] = kind or "valid"
        if kind:
            bad_rows[kind] += 1
        if cls == "valid":
            counts["cases"] += len(cases)
            counts["documents"] += sum(len(c.docs) for c in cases)
            counts["files"] += len(members)
    sim.write_listing(inbox, MANIFEST, written)
    return CastorSummary(counts=counts, bytes=total, bad_rows=bad_rows, kinds=kinds)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m demo.castor --inbox DIR [--size N --seed S --year Y --bad B --repairable R]``."""
    parser = sim.parser("demo.castor", __doc__)
    parser.add_argument("--inbox", default="var/demo/castor-inbox", type=Path, help="the inbox folder")
    parser.add_argument("--size", type=int, default=6, help="valid packages")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--year", type=int, default=2025, help="the year whose closed cases are exported")
    parser.add_argument("--bad", type=int, default=0, help="packages with an unrepairable fault")
    parser.add_argument("--repairable", type=int, default=0, help="packages with only repairable faults")
    parser.add_argument("--as-zip", type=int, default=1, help="how many of the valid packages are .zip")
    args = parser.parse_args(argv)
    sim.report(lambda: generate(args.inbox, size=args.size, seed=args.seed, year=args.year, bad=args.bad,
                                repairable=args.repairable, as_zip=min(args.as_zip, args.size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
