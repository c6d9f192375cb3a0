"""Simulator of Visual Arkiv, the archival description (arkivförteckning) of the municipalities.

Visual Arkiv is the register of what the archive holds: the archive creators (arkivbildare:
the municipalities' boards, committees and companies, and the historical landskommuner and
städer they succeeded), their archives (arkiv, one fonds per creator), the series of each
archive ordered by the *allmänna arkivschemat* (signum ``A 1`` Protokoll … ``F 2``
Bygglovsakter … ``G 1`` Lönelistor) and the volumes (volymer) of each series with their date
range, content and where they are kept (närarkiv, mellanarkiv, slutarkiv).

``generate`` (re)creates the schema in any SQLAlchemy database (Core DDL that works on
SQLite, PostgreSQL and MariaDB) and fills it deterministically from ``random.Random(seed)``.
``size`` is the number of archives (the package unit); about 85 % of them have something
changed (a new volume, a revised series, a revised description) in ``year``, which is what a
yearly extraction takes. The archives of the other systems' series (Viva, Treserva,
ProCapita, Castor, HR+, Lex) always come first, so the series named in their submission
agreements exist. With ``bad=N`` it also plants N rows of each kind in :data:`BAD_KINDS`,
all in archives changed in ``year``.

Run ``python -m demo.visualarkiv --url sqlite:///var/demo/visualarkiv.sqlite``.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from demo import _simulator as sim
from transforms.common.identifiers import make_organisationsnummer

BAD_KINDS = ("invalid_organisationsnummer", "orphan_series", "malformed_signum", "volume_dates_reversed",
             "duplicate_signum")

# Allmänna arkivschemat: the main divisions (huvudavdelningar) a series signum starts with,
# then a running number and an optional sub-series letter: "A 1", "F 2", "F 2 a".
HUVUDAVDELNINGAR = {
    "A": "Protokoll", "B": "Koncept och utgående skrivelser", "C": "Diarier och register",
    "D": "Liggare och längder", "E": "Inkomna handlingar", "F": "Ämnesordnade handlingar",
    "G": "Räkenskaper", "H": "Statistik och utredningar", "K": "Kartor och ritningar", "L": "Fotografier och bilder",
    "M": "Ljud- och bildupptagningar", "Ö": "Övrigt",
}
SIGNUM_RE = re.compile(r"^[A-HKLMÖ] [1-9][0-9]{0,2}(?: [a-z])?$")
FORVARINGSPLATSER = ("närarkiv", "mellanarkiv", "slutarkiv")
MEDIA = ("papper", "digitalt")
KOMMUNER = {"Eskilstuna": "212000-0340", "Strängnäs": "212000-0357", "Enköping": "212000-0308"}
_KOMMUN_NAMES = {"Eskilstuna": "Eskilstuna kommun", "Strängnäs": "Strängnäs kommun", "Enköping": "Enköpings kommun"}

# Malformed signa as they turn up in old registers typed in by hand.
_MALFORMED = ("F2", "f 2", "F:2", "2 F", "FF 1", "F 02", "I 1", "F 2a", "A  1", "Ö1")

# ---------------------------------------------------------------------------- schema

metadata = sa.MetaData()

arkivbildare_table = sa.Table(
    "arkivbildare", metadata,
    sa.Column("arkivbildare_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("namn", sa.String(200), nullable=False),
    sa.Column("kortnamn", sa.String(30), nullable=False),
    sa.Column("kommun", sa.String(40), nullable=False),
    sa.Column("typ", sa.String(40), nullable=False),
    sa.Column("organisationsnummer", sa.String(11), nullable=True),
    sa.Column("verksam_fran", sa.Integer, nullable=False),
    sa.Column("verksam_till", sa.Integer, nullable=True),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

arkiv_table = sa.Table(
    "arkiv", metadata,
    sa.Column("arkiv_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("arkivbildare_id", sa.Integer, sa.ForeignKey("arkivbildare.arkivbildare_id"), nullable=False),
    sa.Column("referenskod", sa.String(80), nullable=False),
    sa.Column("namn", sa.String(250), nullable=False),
    sa.Column("tidsomfang_fran", sa.Integer, nullable=False),
    sa.Column("tidsomfang_till", sa.Integer, nullable=True),
    sa.Column("forteckning_upprattad", sa.Date, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

# No foreign key from serier.arkivbildare_id: Visual Arkiv's own data model links a series
# to its creator loosely (series taken over from a predecessor), so a deleted creator can
# leave orphans behind; the quality suite is what catches them.
serier_table = sa.Table(
    "serier", metadata,
    sa.Column("serie_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("arkiv_id", sa.Integer, sa.ForeignKey("arkiv.arkiv_id"), nullable=False),
    sa.Column("arkivbildare_id", sa.Integer, nullable=False),
    sa.Column("signum", sa.String(20), nullable=False),
    sa.Column("rubrik", sa.String(200), nullable=False),
    sa.Column("beskrivning", sa.String(500), nullable=True),
    sa.Column("bevarande", sa.String(10), nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

volymer_table = sa.Table(
    "volymer", metadata,
    sa.Column("volym_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("serie_id", sa.Integer, sa.ForeignKey("serier.serie_id"), nullable=False),
    sa.Column("volymnummer", sa.Integer, nullable=False),
    sa.Column("datum_fran", sa.Date, nullable=False),
    sa.Column("datum_till", sa.Date, nullable=False),
    sa.Column("innehall", sa.String(300), nullable=False),
    sa.Column("forvaringsplats", sa.String(20), nullable=False),
    sa.Column("medium", sa.String(20), nullable=False),
    sa.Column("anmarkning", sa.String(500), nullable=True),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

# ---------------------------------------------------------------------- vocabulary

# Series every board's archive has (signum, rubrik, kept?).
_BASE_SERIES = [
    ("A 1", "Protokoll", True),
    ("A 2", "Arbetsutskottets protokoll", True),
    ("B 1", "Utgående skrivelser", True),
    ("C 1", "Diarier", True),
    ("E 1", "Inkomna skrivelser", True),
    ("G 1", "Verifikationer", False),
    ("H 1", "Statistik och uppföljning", True),
]
_HISTORIC_SERIES = [
    ("A 1", "Protokoll", True),
    ("B 1", "Koncept", True),
    ("C 1", "Diarier", True),
    ("D 1", "Längder", True),
    ("E 1", "Inkomna handlingar", True),
    ("F 1", "Ämnesordnade handlingar", True),
    ("G 1", "Huvudböcker", True),
    ("K 1", "Kartor och ritningar", True),
]

# The archives that hold the series named in the other systems' submission agreements:
# (kommun, creator name, short name, type, active from, special series).
_CORE = [
    ("Eskilstuna", "Miljö- och byggnämnden", "MBN", "nämnd", 2003,
     [("F 1", "Miljö- och hälsoskyddsakter", True), ("F 2", "Bygglovsakter", True), ("K 1", "Ritningar", True)]),
    ("Eskilstuna", "Socialnämnden", "SN", "nämnd", 1971,
     [("F 1", "Personakter", True), ("F 2", "Utredningar enligt LVU", True)]),
    ("Strängnäs", "Socialnämnden", "SN", "nämnd", 1971,
     [("F 1", "Personakter", True), ("F 2", "Avtal om familjehem", True)]),
    ("Strängnäs", "Kommunstyrelsen", "KS", "styrelse", 1971,
     [("F 1", "Styrdokument", True), ("F 2", "Diarieförda handlingar", True), ("G 1", "Lönelistor", True)]),
    ("Enköping", "Vård- och omsorgsnämnden", "VON", "nämnd", 1999,
     [("F 1", "Avtal med utförare", True), ("F 2", "Avvikelserapporter", False), ("F 3", "Biståndsakter", True)]),
    ("Eskilstuna", "Kommunstyrelsen", "KS", "styrelse", 1971,
     [("F 1", "Styrdokument", True), ("Ö 1", "Arkivredovisning", True)]),  # Visual Arkiv's own series
    ("Eskilstuna", "Kommunfullmäktige", "KF", "fullmäktige", 1971, [("F 1", "Motioner och medborgarförslag", True)]),
    ("Strängnäs", "Kommunfullmäktige", "KF", "fullmäktige", 1971, [("F 1", "Motioner", True)]),
]

_BOARDS = [
    ("Barn- och utbildningsnämnden", "BUN", [("F 1", "Elevakter", True), ("F 2", "Betygskataloger", True)]),
    ("Kultur- och fritidsnämnden", "KFN", [("F 1", "Föreningsbidrag", False), ("L 1", "Fotografier", True)]),
    ("Tekniska nämnden", "TN", [("F 1", "Trafikärenden", True), ("K 1", "Gaturitningar", True)]),
    ("Vård- och omsorgsnämnden", "VON", [("F 1", "Personakter", True)]),
    ("Arbetsmarknads- och vuxenutbildningsnämnden", "AVN", [("F 1", "Deltagarakter", False)]),
    ("Överförmyndarnämnden", "ÖFN", [("F 1", "Akter för huvudmän", True)]),
    ("Valnämnden", "VN", [("F 1", "Valhandlingar", False)]),
    ("Byggnadsnämnden", "BN", [("F 1", "Bygglovsakter", True), ("K 1", "Ritningar", True)]),
    ("Räddningsnämnden", "RN", [("F 1", "Tillsynsakter", True)]),
    ("Revisionen", "REV", [("F 1", "Revisionsrapporter", True)]),
]
_HISTORIC_UNITS = {
    "Eskilstuna": ["Torshälla stad", "Kjula landskommun", "Ärla landskommun", "Västra Rekarne landskommun",
                   "Husby-Rekarne landskommun", "Stenkvista landskommun", "Näshulta landskommun",
                   "Hällby landskommun", "Eskilstuna stad"],
    "Strängnäs": ["Strängnäs stad", "Mariefreds stad", "Stallarholmens landskommun", "Åkers landskommun",
                  "Fogdö landskommun", "Länna landskommun"],
}
_HISTORIC_BODIES = [
    ("Kommunalfullmäktige", "KF"), ("Kommunalnämnden", "KN"), ("Byggnadsnämnden", "BN"), ("Skolstyrelsen", "SKS"),
    ("Socialnämnden", "SN"), ("Fattigvårdsstyrelsen", "FVS"), ("Hälsovårdsnämnden", "HVN"),
    ("Barnavårdsnämnden", "BVN"), ("Taxeringsnämnden", "TAX"), ("Brandstyrelsen", "BS"),
]
_COMPANIES = [
    ("Eskilstuna", "Eskilstuna Energi och Miljö AB", "EEM"),
    ("Eskilstuna", "Kommunfastigheter i Eskilstuna AB", "KFAB"),
    ("Eskilstuna", "Eskilstunahem AB", "EHEM"), ("Eskilstuna", "Eskilstuna Logistik och Etablering AB", "ELE"),
    ("Strängnäs", "Strängnäs Bostads AB", "SBAB"), ("Strängnäs", "Strängnäs Fastighets AB", "SFAB"),
    ("Strängnäs", "Strängnäs Business Park AB", "SBP"),
]
_NOTES = [
    "Innehåller handlingar som omfattas av sekretess enligt OSL 26 kap. 1 §",
    "Vattenskadad 1998, konserverad",
    "Levererad som e-arkivpaket från verksamhetssystemet",
    "Gallrad enligt dokumenthanteringsplan",
    "Luckor i serien 1974–1975",
    "Överlämnad från förvaltningen vid omorganisation",
]


@dataclass
class VisualArkivSummary:
    """What :func:`generate` wrote: rows per table, and the bad rows planted."""

    counts: dict[str, int]
    bytes: int  # no files: the register is all rows
    bad_rows: dict[str, int]

    def describe(self) -> str:
        """``Visual Arkiv: 100 archives of 100 creators, 812 series, 3 204 volumes``."""
        c = self.counts
        return (f"Visual Arkiv: {c['arkiv']} archives of {c['arkivbildare']} creators, {c['serier']} series, "
                f"{c['volymer']} volumes")


def _ts(r: random.Random, year: int) -> dt.datetime:
    """A working-hours timestamp in ``year``."""
    day = dt.date(year, 1, 2) + dt.timedelta(days=r.randint(0, 360))
    return dt.datetime.combine(day, dt.time(r.randint(8, 16), r.randint(0, 59), r.randint(0, 59)))


class _Generator:
    def __init__(self, seed: int, year: int):
        self.rng = random.Random(seed)
        self.year = year
        self.creators: list[dict] = []
        self.archives: list[dict] = []
        self.series: list[dict] = []
        self.volumes: list[dict] = []
        self.in_year: list[dict] = []  # archives with a change in `year`
        self.volume_counts: dict[int, int] = {}  # serie_id -> volumes so far (volymnummer)

    def pool(self) -> list[tuple]:
        """Every (kommun, name, short, type, from, till, orgnr, series) beyond the core, shuffled."""
        r = self.rng
        out = []
        for kommun, orgnr in (("Eskilstuna", KOMMUNER["Eskilstuna"]), ("Strängnäs", KOMMUNER["Strängnäs"])):
            for name, short, special in _BOARDS:
                start = r.choice([1971, 1971, 1983, 1995, 2003, 2011, 2015, 2019])
                till = r.choice([None, None, None, start + r.randint(4, 20)])
                till = till if till is None or till < self.year else None
                out.append((kommun, name, short, "nämnd", start, till, orgnr, special))
            for unit in _HISTORIC_UNITS[kommun]:
                founded = 1863 if "landskommun" in unit else r.choice([1863, 1863, 1902])
                for body, short in _HISTORIC_BODIES:
                    start = max(founded, r.choice([1863, 1919, 1919, 1931, 1952]))
                    place = unit.split()[0]
                    out.append((kommun, f"{body} i {unit}", f"{place.upper()}-{short}", "historisk",
                                start, 1970, None, []))
        for kommun, name, short in _COMPANIES:
            seed9 = "556" + f"{r.randrange(0, 10**6):06d}"
            out.append((kommun, name, short, "kommunalt bolag", r.choice([1990, 1997, 2006]), None,
                        make_organisationsnummer(seed9), [("F 1", "Styrelseprotokoll med bilagor", True)]))
        r.shuffle(out)
        return out

    def add(self, kommun: str, name: str, short: str, typ: str, start: int, till: int | None, orgnr: str | None,
            special: list[tuple[str, str, bool]], *, changed: bool) -> dict:
        r = self.rng
        cid = len(self.creators) + 1
        last_change = self.year if changed else self.year - r.randint(1, 6)
        full_name = name if typ in ("historisk", "kommunalt bolag", "skolenhet") else f"{name}, {_KOMMUN_NAMES[kommun]}"
        self.creators.append({
            "arkivbildare_id": cid, "namn": full_name,
            "kortnamn": short, "kommun": kommun, "typ": typ, "organisationsnummer": orgnr,
            "verksam_fran": start, "verksam_till": till, "updated_at": _ts(r, min(last_change, self.year - 1)),
        })
        # Volumes are registered when delivered: an active creator's last delivered year is
        # two years back, and a change in `year` delivers last year's volume.
        end = till or self.year - 2
        if till is not None:
            made = r.randint(1972, 1995) if till <= 1975 else r.randint(till, self.year - 1)
            upprattad = dt.date(made, r.randint(1, 12), 1)
        else:
            upprattad = dt.date(r.randint(max(start, 1975), self.year - 1), r.randint(1, 12), 1)
        arkiv = {
            "arkiv_id": cid, "arkivbildare_id": cid,
            "referenskod": f"SE/{KOMMUNER[kommun]}/{short}" + (f"-{cid}" if typ == "historisk" else ""),
            "namn": self.creators[-1]["namn"],  # Visual Arkiv names an archive after its creator
            "tidsomfang_fran": start, "tidsomfang_till": till, "forteckning_upprattad": upprattad,
            "updated_at": _ts(r, last_change - (1 if changed and typ != "historisk" else 0)),
        }
        self.archives.append(arkiv)
        template = _HISTORIC_SERIES if typ == "historisk" else _BASE_SERIES
        chosen = {s: (s, t, k) for s, t, k in template if typ != "kommunalt bolag" or s in ("A 1", "G 1")}
        if typ == "historisk":
            chosen = dict(list(chosen.items())[: r.randint(3, len(template))])
        for s, t, k in special:
            chosen[s] = (s, t, k)
        for signum, rubrik, keep in sorted(chosen.values(), key=lambda x: _signum_key(x[0])):
            self.add_series(arkiv, cid, signum, rubrik, keep, start, end, typ, changed=False)
        if changed:
            # Something in this archive changed in `year`: new volumes delivered (active
            # creators) or the description revised (historical ones).
            if till is None and self.series and self.series[-1]["arkiv_id"] == cid:
                for s in r.sample([s for s in self.series if s["arkiv_id"] == cid], k=1):
                    s["updated_at"] = _ts(r, self.year)
                self.new_volume(r.choice([s for s in self.series if s["arkiv_id"] == cid]), self.year)
            else:
                arkiv["updated_at"] = _ts(r, self.year)
            self.in_year.append(arkiv)
        return arkiv

    def add_series(self, arkiv: dict, creator_id: int, signum: str, rubrik: str, keep: bool, start: int, end: int,
                   typ: str, *, changed: bool) -> dict:
        r = self.rng
        row = {
            "serie_id": len(self.series) + 1, "arkiv_id": arkiv["arkiv_id"], "arkivbildare_id": creator_id,
            "signum": signum, "rubrik": rubrik,
            "beskrivning": r.choice([None, None, f"{HUVUDAVDELNINGAR.get(signum[0], 'Övrigt')}: {rubrik.lower()}",
                                     f"Ordnade kronologiskt. {rubrik} {start}–{end}."]),
            "bevarande": "bevaras" if keep else "gallras",
            "updated_at": _ts(r, self.year if changed else self.year - r.randint(1, 8)),
        }
        self.series.append(row)
        # Volumes: consecutive spans of 1–5 years over the creator's active years (the last
        # two decades only for long-lived boards: older volumes sit in other series).
        first = max(start, end - r.randint(6, 30))
        y = first
        while y <= end and self.volume_counts.get(row["serie_id"], 0) < 8:
            span = r.choice([1, 1, 2, 3, 5]) if signum[0] in "ACDG" else r.choice([2, 4, 5, 10])
            last = min(y + span - 1, end)
            self.add_volume(row, y, last, typ)
            y = last + 1
        return row

    def add_volume(self, serie: dict, y0: int, y1: int, typ: str, *, updated: dt.datetime | None = None) -> dict:
        r = self.rng
        # Where a volume is kept follows its age: the office keeps the last years (närarkiv),
        # then the mellanarkiv until transfer to the slutarkiv after about ten years.
        age = self.year - y1
        if typ == "historisk" or age > 15:
            place = "slutarkiv"
        elif age <= 2:
            place = r.choice(["närarkiv", "närarkiv", "mellanarkiv"])
        elif age <= 10:
            place = r.choice(["mellanarkiv", "mellanarkiv", "närarkiv"])
        else:
            place = r.choice(["mellanarkiv", "slutarkiv"])
        digital = y0 >= 2016 and place == "mellanarkiv" and r.random() < 0.6
        vol = {
            "volym_id": len(self.volumes) + 1, "serie_id": serie["serie_id"],
            "volymnummer": self.volume_counts.get(serie["serie_id"], 0) + 1,
            "datum_fran": dt.date(y0, 1, 1), "datum_till": dt.date(y1, 12, 31),
            "innehall": f"{serie['rubrik']} {y0}" + (f"–{y1}" if y1 != y0 else ""),
            "forvaringsplats": place, "medium": "digitalt" if digital else "papper",
            "anmarkning": (_NOTES[2] if digital else r.choice(_NOTES[:2] + _NOTES[3:])) if r.random() < 0.08 else None,
            "updated_at": updated or _ts(r, min(y1 + 1, self.year - 1)),
        }
        self.volumes.append(vol)
        self.volume_counts[serie["serie_id"]] = vol["volymnummer"]
        return vol

    def new_volume(self, serie: dict, year: int) -> dict:
        """A volume delivered in ``year`` (last year's records, handed over from the office)."""
        return self.add_volume(serie, year - 1, year - 1, "nämnd", updated=_ts(self.rng, year))


def _signum_key(signum: str) -> tuple:
    letter, _, rest = signum.partition(" ")
    order = "ABCDEFGHKLMÖ"
    num = rest.split(" ")[0]
    return (order.index(letter) if letter in order else 99, int(num) if num.isdigit() else 0, rest)


# ------------------------------------------------------------------------------ public


def generate(url: str, files_dir: Path | None = None, *, size: int = 100, seed: int = 1, year: int = 2025,
             bad: int = 0) -> VisualArkivSummary:
    """(Re)create the Visual Arkiv register at ``url`` with ``size`` archives (fonds).

    Drops and recreates the four tables and fills them: the core archives (whose series the
    other systems deliver into) first, then boards, historical municipalities' bodies and
    municipal companies; each creator has one archive with series by the allmänna
    arkivschemat and volumes over its active years. About 85 % of the archives change in
    ``year``. ``bad`` adds that many rows of every kind in :data:`BAD_KINDS`, all in archives
    changed in ``year``. ``files_dir`` is accepted for the common simulator signature; the
    register has no document files. Same arguments ⇒ identical rows.
    """
    if size < 0 or bad < 0:
        raise ValueError("size and bad must not be negative")
    g = _Generator(seed, year)
    r = g.rng
    pool = g.pool()
    plan = [(k, n, s, t, f, None, KOMMUNER[k], sp) for k, n, s, t, f, sp in _CORE] + pool
    if size > len(plan):
        # Beyond the named bodies: the school units (rektorsområden) of the 1990s and 2000s.
        for i in range(size - len(plan)):
            kommun = ("Eskilstuna", "Strängnäs")[i % 2]
            start = r.choice([1991, 1995, 2000])
            plan.append((kommun, f"Rektorsområde {i + 1}, {kommun}", f"RO{i + 1}", "skolenhet", start,
                         start + r.randint(5, 15), KOMMUNER[kommun], [("F 1", "Elevakter", True)]))
    for i, (kommun, name, short, typ, start, till, orgnr, special) in enumerate(plan[:size]):
        g.add(kommun, name, short, typ, start, till, orgnr, special, changed=i < len(_CORE) or r.random() < 0.85)
    if bad and not g.in_year:
        raise ValueError(f"bad={bad} needs at least one archive changed in {year}; raise size")

    # Bad rows, drawn after every valid one: bad=N is exactly bad=0 plus the planted rows.
    for i in range(bad):
        seed9 = "556" + f"{r.randrange(0, 10**6):06d}"
        wrong = sim.wrong_check_digit(r, make_organisationsnummer(seed9))
        g.add("Eskilstuna", f"Eskilstuna Kommunföretag {i + 1} AB", f"EKF{i + 1}", "kommunalt bolag", 2008, None,
              wrong, [("F 1", "Styrelseprotokoll med bilagor", True)], changed=True)
    targets = list(g.in_year)
    missing_creator = max(c["arkivbildare_id"] for c in g.creators) + 1000
    for i in range(bad):
        a = r.choice(targets)
        s = g.add_series(a, missing_creator + i, f"Ö {20 + i}", "Handlingar från upphörd förvaltning", True, year - 3,
                         year - 1, "nämnd", changed=True)
        s["beskrivning"] = "Överförd från arkivbildare som avregistrerats"
    for i in range(bad):
        a = r.choice(targets)
        g.add_series(a, a["arkivbildare_id"], _MALFORMED[i % len(_MALFORMED)] + ("" if i < len(_MALFORMED) else
                     f" x{i}"), "Handlingar rörande kommunala bidrag", True, year - 2, year - 1, "nämnd", changed=True)
    for _ in range(bad):
        serie = r.choice([s for s in g.series if s["arkiv_id"] in {a["arkiv_id"] for a in targets}
                          and SIGNUM_RE.match(s["signum"])])
        v = g.add_volume(serie, year - 1, year - 1, "nämnd", updated=_ts(r, year))
        v["datum_fran"], v["datum_till"] = dt.date(year - 1, r.randint(7, 12), 1), dt.date(year - 1, r.randint(1, 6), 1)
    for _ in range(bad):
        a = r.choice(targets)
        own = [s for s in g.series if s["arkiv_id"] == a["arkiv_id"] and SIGNUM_RE.match(s["signum"])
               and s["arkivbildare_id"] == a["arkivbildare_id"] and not s["rubrik"].endswith("(dubblett)")]
        twin = r.choice(own)
        g.add_series(a, a["arkivbildare_id"], twin["signum"], f"{twin['rubrik']} (dubblett)",
                     twin["bevarande"] == "bevaras", year - 1, year - 1, "nämnd", changed=True)

    sim.replace_tables(url, metadata, ((arkivbildare_table, g.creators), (arkiv_table, g.archives),
                                       (serier_table, g.series), (volymer_table, g.volumes)))
    counts = {"arkivbildare": len(g.creators), "arkiv": len(g.archives), "serier": len(g.series),
              "volymer": len(g.volumes), "files": 0}
    return VisualArkivSummary(counts=counts, bytes=0, bad_rows={k: bad for k in BAD_KINDS})


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m demo.visualarkiv --url URL [--size N --seed S --year Y --bad B]``."""
    parser = sim.parser("demo.visualarkiv", __doc__)
    parser.add_argument("--url", default="sqlite:///var/demo/visualarkiv.sqlite", help="SQLAlchemy database URL")
    parser.add_argument("--files", default=None, type=Path, help="unused: the register has no document files")
    parser.add_argument("--size", type=int, default=100, help="archives (fonds)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--year", type=int, default=2025, help="the year whose changes an extraction takes")
    parser.add_argument("--bad", type=int, default=0, help="bad rows of each kind to plant")
    args = parser.parse_args(argv)
    summary = sim.report(
        lambda: generate(args.url, args.files, size=args.size, seed=args.seed, year=args.year, bad=args.bad))
    if any(summary.bad_rows.values()):
        print("bad rows: " + ", ".join(f"{k}={v}" for k, v in summary.bad_rows.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
