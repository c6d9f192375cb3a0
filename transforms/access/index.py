"""The search index over the catalogue and the packages' descriptive metadata.

One row per record (:class:`~transforms.catalogue.AccessEntry`) with diarienummer, title, dates,
record class, system, archive creator, series and party names; its documents with their place
in the package; keyed hashes of the parties' personnummer. Full-text search is SQLite FTS5 on
the embedded default and PostgreSQL ``tsvector`` (Swedish configuration) in production, behind
the one :func:`search` below.

Kept current by :func:`index_package` (call it when a package is recorded) and :func:`sync`
(after transfers to the slutarkiv and disposals: a disposed record stays findable only as a
tombstone — reference, system, class and period — with nothing else of it left in the index).
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from lxml import etree

from transforms.access import packages as pk
from transforms.access.auth import AccessDenied, Principal, personnummer_digest
from transforms.catalogue import (
    AccessDocument,
    AccessEntry,
    AccessPackage,
    AccessPersonnummer,
    ArchiveCreator,
    Catalogue,
    FileFormat,
    Package,
    Record,
    Series,
    Tombstone,
    utcnow,
)
from transforms.common.errors import ArkivError, StorageError
from transforms.common.xmltools import NS_ERMS

E = f"{{{NS_ERMS}}}"


@dataclass
class ParsedDocument:
    document_id: str
    number: int | None
    title: str | None
    path: str | None
    name: str | None
    mimetype: str
    secret: bool
    regulation: str | None


@dataclass
class ParsedRecord:
    source_id: str
    reference: str
    title: str | None = None
    opened: str | None = None
    closed: str | None = None
    secret: bool = False
    regulation: str | None = None
    parties: list[str] = field(default_factory=list)
    personnummer: list[str] = field(default_factory=list)
    documents: list[ParsedDocument] = field(default_factory=list)


def _text(el, tag: str) -> str | None:
    child = el.find(E + tag)
    return child.text if child is not None and child.text is not None else None


def _regulation(el) -> str | None:
    r = el.find(f"{E}restriction/{E}regulation")
    return r.text if r is not None else None


def parse_erms(data: bytes) -> dict[str, ParsedRecord]:
    """Cases (aggregations) of an ERMS document by their system identifier."""
    tree = pk.parse_xml(data, "ERMS.xml")
    out: dict[str, ParsedRecord] = {}
    for agg in tree.iter(E + "aggregation"):
        rec = ParsedRecord(source_id=agg.get("systemIdentifier", ""), reference=_text(agg, "objectId") or "",
                           title=_text(agg, "title"), secret=_text(agg, "securityClass") == "secret",
                           regulation=_regulation(agg))
        for d in agg.findall(f"{E}dates/{E}date"):
            if d.get("dateType") == "opened":
                rec.opened = (d.text or "")[:10] or None
            elif d.get("dateType") == "closed":
                rec.closed = (d.text or "")[:10] or None
        for a in agg.findall(f"{E}agents/{E}agent"):
            if a.get("agentType") != "counterpart":
                continue
            if _text(a, "name"):
                rec.parties.append(_text(a, "name"))
            idn = a.find(E + "idNumber")
            if idn is not None and idn.get("idNumberType") == "personnummer" and idn.text:
                rec.personnummer.append(idn.text)
        for r in agg.findall(E + "record"):
            app = r.find(f"{E}additionalInformation/{E}appendix")
            number = _text(r, "runningNumber")
            rec.documents.append(ParsedDocument(
                document_id=r.get("systemIdentifier") or _text(r, "objectId") or "",
                number=int(number) if number and number.isdigit() else None, title=_text(r, "title"),
                path=pk._join("metadata/descriptive/", app.get("path")) if app is not None else None,
                name=app.get("name") if app is not None else None,
                mimetype=(app.get("fileFormat") if app is not None else None) or "application/octet-stream",
                secret=_text(r, "securityClass") == "secret", regulation=_regulation(r)))
        out[rec.source_id] = rec
    return out


# --- building the index ---------------------------------------------------------------------------------

def _structure(cat: Catalogue, pkg: Package) -> tuple[str | None, str | None]:
    """(archive creator name, series "code title") for a package, from the archival description."""
    with cat.session() as s:
        if pkg.series_id:
            row = s.execute(sa.select(Series, ArchiveCreator.name).join(
                ArchiveCreator, Series.creator_id == ArchiveCreator.id).where(Series.id == pkg.series_id)).first()
            if row:
                return row[1], f"{row[0].code} {row[0].title}"
        name = None
        if pkg.archive_creator:
            name = s.scalars(sa.select(ArchiveCreator.name).where(
                ArchiveCreator.organisationsnummer == pkg.archive_creator).order_by(ArchiveCreator.id)).first()
        return name or pkg.archive_creator, pkg.series_code


def _texts(system: str, record_class: str, period: str | None, reference: str, opened, closed, creator, series,
           title, parties, doc_titles_public, doc_titles_all, secret: bool) -> tuple[str, str]:
    base = [reference, system, record_class, period or "", opened or "", closed or "", creator or "", series or ""]
    full = base + [title or "", *parties, *doc_titles_all]
    public = base if secret else base + [title or "", *parties, *doc_titles_public]
    return " ".join(p for p in public if p), " ".join(p for p in full if p)


def _delete_package_rows(s, package_id: str) -> None:
    ids = [i for (i,) in s.execute(sa.select(AccessEntry.id).where(AccessEntry.package_id == package_id))]
    if not ids:
        return
    s.execute(sa.delete(AccessDocument).where(AccessDocument.entry_id.in_(ids)))
    s.execute(sa.delete(AccessPersonnummer).where(AccessPersonnummer.entry_id.in_(ids)))
    if s.get_bind().dialect.name == "sqlite":
        for i in ids:
            s.execute(sa.text("DELETE FROM access_fts WHERE rowid = :i"), {"i": i})
    s.execute(sa.delete(AccessEntry).where(AccessEntry.id.in_(ids)))


def _add_entry(s, entry: AccessEntry) -> None:
    s.add(entry)
    s.flush()
    if s.get_bind().dialect.name == "sqlite":
        s.execute(sa.text("INSERT INTO access_fts(rowid, public_text, full_text) VALUES (:i, :p, :f)"),
                  {"i": entry.id, "p": entry.public_text, "f": entry.full_text})


def scan_package(pkg: Package, store, slutarkiv_root) -> pk.Scan:
    """One pass over the stored package, wherever it is: the mellanarkiv ``store``, or the slutarkiv's
    storage root (a folder or an :class:`~transforms.archive.storage.S3Storage`)."""
    if pkg.storage == "slutarkiv" and pkg.location.startswith("ocfl:"):
        root = Path(slutarkiv_root) if isinstance(slutarkiv_root, str) else slutarkiv_root
        return pk.scan_ocfl(root, pkg.location.removeprefix("ocfl:"))
    with store.open(pkg.location) as f:
        return pk.scan_tar(f)


def index_package(cat: Catalogue, store, slutarkiv_root, package_id: str, key: bytes) -> dict:
    """(Re)index one catalogued package from its stored bytes; idempotent.

    ``store`` is the mellanarkiv storage (anything with ``open(key)``); ``key`` the personnummer HMAC key.
    A package whose stored bytes do not match the catalogue is indexed from the catalogue alone and
    marked unverified — it can be found, but no receipt will list its records.
    """
    pkg = cat.package(package_id)
    if pkg is None:
        raise StorageError(f"no package {package_id} in the catalogue")
    if pkg.status == "disposed":
        return index_tombstone(cat, package_id)
    scan = scan_package(pkg, store, slutarkiv_root)
    in_mellanarkiv = pkg.storage == "mellanarkiv"
    verified = (scan.sha256 == pkg.sha256 if in_mellanarkiv else True) and not scan.unverified()
    erms_at = pk.erms_path(scan)
    parsed = parse_erms(scan.metadata[erms_at]) if erms_at and erms_at in scan.metadata else {}
    creator, series = _structure(cat, pkg)
    if creator == pkg.archive_creator and erms_at in scan.metadata:
        # not in the archival description (yet): the name the package itself gives
        agency = pk.parse_xml(scan.metadata[erms_at], "ERMS.xml").find(f".//{E}maintenanceAgency/{E}agencyName")
        creator = agency.text if agency is not None and agency.text else creator
    formats = package_formats(cat, package_id)
    derivatives = {path: f["derivative"] for path, f in formats.items()
                   if f["outcome"] == "converted" and f["derivative"]}
    with cat.session() as s:
        records = list(s.scalars(sa.select(Record).where(Record.package_id == package_id).order_by(Record.id)))
        _delete_package_rows(s, package_id)
        n_docs = 0
        for r in records:
            p = parsed.get(r.source_id) or ParsedRecord(r.source_id, r.reference)
            public_docs = [d.title for d in p.documents if d.title and not d.secret]
            all_docs = [d.title for d in p.documents if d.title]
            public, full = _texts(pkg.system, pkg.record_class, pkg.period, r.reference, r.opened or p.opened,
                                  r.closed or p.closed, creator, series, p.title, p.parties, public_docs, all_docs,
                                  p.secret)
            entry = AccessEntry(system=pkg.system, source_id=r.source_id, package_id=package_id,
                                reference=r.reference, title=p.title, record_class=pkg.record_class,
                                period=pkg.period, opened=(r.opened or p.opened or None),
                                closed=(r.closed or p.closed or None), archive_creator=creator, series=series,
                                parties="; ".join(p.parties) or None, secret=p.secret,
                                secrecy_reference=p.regulation if p.secret else None, storage=pkg.storage,
                                public_text=public, full_text=full, indexed_at=utcnow())
            _add_entry(s, entry)
            for d in p.documents:
                m = scan.members.get(d.path) if is_document_path(d.path) else None
                s.add(AccessDocument(entry_id=entry.id, document_id=d.document_id, number=d.number, title=d.title,
                                     path=d.path if m else None, name=d.name, mimetype=d.mimetype,
                                     size=m.size if m else 0, sha256=m.sha256 if m else None,
                                     tar_offset=m.offset if m and in_mellanarkiv else None, secret=d.secret,
                                     secrecy_reference=d.regulation if d.secret else None))
                n_docs += 1
                # the preservation copy gets a row of its own under the same document id, so that its place
                # in the TAR is indexed like the original's; documents_of tells the two apart
                dpath = derivatives.get(d.path or "") if m else None
                dm = scan.members.get(dpath) if dpath and is_document_path(dpath) else None
                if dm is not None:
                    stem = (d.name or "").rsplit(".", 1)[0] if d.name and "." in d.name else (d.name or "")
                    s.add(AccessDocument(entry_id=entry.id, document_id=d.document_id, number=d.number,
                                         title=d.title, path=dpath, name=(stem + ".pdf") if stem else None,
                                         mimetype=formats.get(dpath, {}).get("mime") or "application/pdf",
                                         size=dm.size, sha256=dm.sha256,
                                         tar_offset=dm.offset if in_mellanarkiv else None, secret=d.secret,
                                         secrecy_reference=d.regulation if d.secret else None))
            for number in p.personnummer:
                digest = personnummer_digest(key, number)
                if digest:
                    s.add(AccessPersonnummer(entry_id=entry.id, digest=digest))
        row = s.get(AccessPackage, package_id) or AccessPackage(package_id=package_id)
        row.storage, row.location, row.sha256 = pkg.storage, pkg.location, pkg.sha256
        row.verified, row.members, row.indexed_at = verified, len(scan.members), utcnow()
        erms_member = scan.members.get(erms_at) if erms_at else None
        row.erms_path = erms_at if erms_member else None
        row.erms_offset = erms_member.offset if erms_member and in_mellanarkiv else None
        row.erms_size = erms_member.size if erms_member else None
        s.add(row)
    return {"package_id": package_id, "records": len(records), "documents": n_docs, "verified": verified,
            "storage": pkg.storage}


def index_tombstone(cat: Catalogue, package_id: str) -> dict:
    """Replace a disposed package's index rows by tombstones: reference, system, class, period — nothing more."""
    with cat.session() as s:
        t = s.get(Tombstone, package_id)
        if t is None:
            raise StorageError(f"package {package_id} is disposed of but has no tombstone")
        refs = json.loads(t.references)
        old = {e.reference: e.source_id for e in s.scalars(
            sa.select(AccessEntry).where(AccessEntry.package_id == package_id))}
        _delete_package_rows(s, package_id)
        for i, ref in enumerate(refs):
            text = " ".join([ref, t.system, t.record_class, t.period, "gallrad disposed"])
            _add_entry(s, AccessEntry(system=t.system, source_id=old.get(ref) or f"{package_id}#{i}",
                                      package_id=package_id, reference=ref, title=None, record_class=t.record_class,
                                      period=t.period, storage="disposed", secret=False, public_text=text,
                                      full_text=text, indexed_at=utcnow()))
        row = s.get(AccessPackage, package_id) or AccessPackage(package_id=package_id, location="", sha256=t.sha256)
        row.storage, row.location, row.verified, row.members, row.indexed_at = "disposed", "", False, 0, utcnow()
        s.add(row)
    return {"package_id": package_id, "records": len(refs), "documents": 0, "verified": False, "storage": "disposed"}


def sync(cat: Catalogue, store, slutarkiv_root, key: bytes) -> dict:
    """Bring the index in line with the catalogue: new packages, moves to the slutarkiv, disposals.

    Cheap when nothing changed (one query per table); safe to run after every retention run.
    """
    with cat.session() as s:
        indexed = {a.package_id: (a.storage, a.location) for a in s.scalars(sa.select(AccessPackage))}
    done = {"indexed": 0, "moved": 0, "tombstoned": 0, "failed": []}
    for p in cat.packages():
        now = ("disposed", "") if p.status == "disposed" else (p.storage, p.location)
        if indexed.get(p.id) == now:
            continue
        try:
            index_package(cat, store, slutarkiv_root, p.id, key)
        except (ArkivError, OSError, ValueError, tarfile.TarError, etree.LxmlError) as exc:
            # one unreadable package must not stop the rest; it is reported and retried next time
            done["failed"].append({"package_id": p.id, "error": str(exc)})
            continue
        kind = "tombstoned" if p.status == "disposed" else ("moved" if p.id in indexed else "indexed")
        done[kind] += 1
    return done


# --- searching --------------------------------------------------------------------------------------------

_TERM = re.compile(r"\S+")


def _fts5_query(column: str, q: str) -> str:
    """Each word as a quoted prefix term, all required: user input can never be FTS5 syntax."""
    terms = ['"' + t.replace('"', '""') + '"*' for t in _TERM.findall(q)]
    return f"{column} : ({' AND '.join(terms)})"


def _dates(opened: str | None, closed: str | None) -> dict:
    return {"opened": opened, "closed": closed}


def deep_link(system: str, source_id: str) -> str:
    """The stable address of a record, independent of package and storage (documented in docs/access-api.md)."""
    return f"/api/v1/records/{system}/{source_id}"


def summary(e: AccessEntry, who: Principal) -> dict:
    """A search hit: never party names, never personnummer; a secret record says only that it is classified."""
    withheld = e.secret and not who.sees_secret
    out = {"system": e.system, "source_id": e.source_id, "reference": e.reference, "link": deep_link(e.system,
           e.source_id), "record_class": e.record_class, "period": e.period, **_dates(e.opened, e.closed),
           "archive_creator": e.archive_creator, "series": e.series, "storage": e.storage,
           "package_id": e.package_id, "classified": bool(e.secret),
           "secrecy_reference": e.secrecy_reference if e.secret else None,
           "title": None if withheld or e.storage == "disposed" else e.title}
    if e.storage == "disposed":
        out["tombstone"] = True
    return out


@dataclass
class SearchResult:
    total: int
    hits: list[dict]


def search(cat: Catalogue, who: Principal, q: str = "", *, system: str | None = None,
           record_class: str | None = None, closed_from: str | None = None, closed_to: str | None = None,
           storage: str | None = None, personnummer: str | None = None, key: bytes | None = None,
           limit: int = 20, offset: int = 0) -> SearchResult:
    """Search the index as ``who``: scoped to their system and archive creators, secret titles and parties
    searchable only when cleared, personnummer only by roles allowed to and only as an exact match."""
    query = sa.select(AccessEntry)
    if not who.in_scope(system or who.system or ""):
        return SearchResult(0, [])
    if who.system:
        query = query.where(AccessEntry.system == who.system)
    names = creator_names(cat, who)
    if names is not None:
        query = query.where(_creator_clause(names))
    if system:
        query = query.where(AccessEntry.system == system)
    if record_class:
        query = query.where(AccessEntry.record_class == record_class)
    if storage:
        query = query.where(AccessEntry.storage == storage)
    if closed_from:
        query = query.where(AccessEntry.closed >= closed_from)
    if closed_to:
        query = query.where(AccessEntry.closed <= closed_to)
    if personnummer:
        if not who.may_search_personnummer:
            raise AccessDenied(f"role {who.role} may not search by personnummer")
        digest = personnummer_digest(key or b"", personnummer)
        if digest is None:
            return SearchResult(0, [])
        query = query.where(AccessEntry.id.in_(sa.select(AccessPersonnummer.entry_id)
                                               .where(AccessPersonnummer.digest == digest)))
    q = (q or "").strip()
    column = "full" if who.sees_secret else "public"
    if q:
        exact = sa.func.lower(AccessEntry.reference) == q.lower()
        if cat.engine.dialect.name == "postgresql":
            tsv = sa.literal_column(f"access_entries.{column}_tsv")
            match = tsv.op("@@")(sa.func.websearch_to_tsquery(sa.literal_column("'swedish'"), q))
        else:
            match = AccessEntry.id.in_(sa.select(sa.literal_column("rowid")).select_from(sa.table("access_fts"))
                                       .where(sa.text("access_fts MATCH :m").bindparams(
                                           m=_fts5_query(f"{column}_text", q))))
        query = query.where(sa.or_(exact, match))
    with cat.session() as s:
        total = s.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
        rows = list(s.scalars(query.order_by(AccessEntry.closed.desc(), AccessEntry.reference, AccessEntry.id)
                              .limit(max(1, min(limit, 500))).offset(max(0, offset))))
    return SearchResult(total, [summary(e, who) for e in rows])


# --- archive creators -------------------------------------------------------------------------------------

def creator_names(cat: Catalogue, who: Principal) -> frozenset[str] | None:
    """What the principal's archive creators are known by: each as given (organisationsnummer or name) and,
    through the archival description, its other one. None when the principal is not limited by creator."""
    if not who.creators:
        return None
    given = set(who.creators)
    with cat.session() as s:
        for name, number in s.execute(sa.select(ArchiveCreator.name, ArchiveCreator.organisationsnummer).where(
                sa.or_(ArchiveCreator.name.in_(given), ArchiveCreator.organisationsnummer.in_(given)))):
            given.update(x for x in (name, number) if x)
    return frozenset(given)


def _creator_clause(names: frozenset[str]):
    """Entries made by one of ``names``: by their package's organisationsnummer or the name they were indexed with
    (a tombstone keeps its package's organisationsnummer)."""
    return sa.or_(AccessEntry.archive_creator.in_(names),
                  AccessEntry.package_id.in_(sa.select(Package.id).where(Package.archive_creator.in_(names))))


def entry_covered(cat: Catalogue, who: Principal, e: AccessEntry) -> bool:
    """Whether ``who`` may read record ``e`` as far as its archive creator goes."""
    names = creator_names(cat, who)
    if names is None:
        return True
    if e.archive_creator in names:
        return True
    pkg = cat.package(e.package_id)
    return pkg is not None and pkg.archive_creator in names


def package_covered(cat: Catalogue, who: Principal, pkg: Package, names: frozenset[str] | None = None) -> bool:
    """Whether ``who`` may see package ``pkg`` as far as its archive creator goes (``names``: from
    :func:`creator_names`, when the caller judges many packages)."""
    if not who.creators:
        return True
    names = creator_names(cat, who) if names is None else names
    return pkg.archive_creator in names or _structure(cat, pkg)[0] in names


def find_entry(cat: Catalogue, system: str, source_id: str) -> AccessEntry | None:
    """The record a deep link names: the copy that is stored (the newest if the source delivered it twice)."""
    with cat.session() as s:
        rows = list(s.scalars(sa.select(AccessEntry).where(AccessEntry.system == system,
                                                           AccessEntry.source_id == source_id)
                              .order_by(AccessEntry.id.desc())))
    live = [e for e in rows if e.storage != "disposed"]
    return (live or rows or [None])[0]


def package_formats(cat: Catalogue, package_id: str) -> dict[str, dict]:
    """The format policy's verdict on each file of a package, by path (empty for a package no builder of ours
    identified, e.g. one another tool wrote)."""
    with cat.session() as s:
        rows = list(s.scalars(sa.select(FileFormat).where(FileFormat.package_id == package_id)))
    return {r.path: {"puid": r.puid, "format_name": r.format_name, "format_version": r.format_version,
                     "mime": r.mime, "outcome": r.outcome, "derivative": r.derivative,
                     "derived_from": r.derived_from, "sha256": r.sha256, "size": r.size} for r in rows}


def _derivatives(cat: Catalogue, package_id: str | None) -> dict[str, str]:
    """Original path → the path of the PDF/A made of it, for a package's converted files."""
    if not package_id:
        return {}
    with cat.session() as s:
        return {p: d for p, d in s.execute(sa.select(FileFormat.path, FileFormat.derivative).where(
            FileFormat.package_id == package_id, FileFormat.outcome == "converted",
            FileFormat.derivative.is_not(None)))}


def _all_documents(cat: Catalogue, entry_id: int) -> tuple[str | None, list[AccessDocument]]:
    with cat.session() as s:
        package_id = s.scalar(sa.select(AccessEntry.package_id).where(AccessEntry.id == entry_id))
        return package_id, list(s.scalars(sa.select(AccessDocument).where(AccessDocument.entry_id == entry_id)
                                          .order_by(AccessDocument.number, AccessDocument.id)))


def documents_of(cat: Catalogue, entry_id: int) -> list[AccessDocument]:
    """A record's documents as the business system registered them (the original copy of each)."""
    return copies_of(cat, entry_id)[0]


def copies_of(cat: Catalogue, entry_id: int) -> tuple[list[AccessDocument], dict[str, AccessDocument]]:
    """A record's documents (originals) and, by document id, the preservation copy (PDF/A) made of each one
    the format policy converted, as the catalogue's ``file_formats`` links them; a package without that
    table's rows (one another tool wrote) has originals only."""
    package_id, rows = _all_documents(cat, entry_id)
    derivatives = _derivatives(cat, package_id)
    # a row is the preservation copy only beside the original it was made from (same document, the
    # path the catalogue names as that original's derivative); any other row is listed as it claims
    wanted = {(d.document_id, derivatives[d.path]) for d in rows if d.path in derivatives}
    originals: list[AccessDocument] = []
    preservation: dict[str, AccessDocument] = {}
    made = set(derivatives.values())
    for d in rows:
        if (d.document_id, d.path) in wanted and d.document_id not in preservation:
            preservation[d.document_id] = d
    seen: set[str] = set()
    for d in rows:
        if preservation.get(d.document_id) is d:
            continue
        if d.document_id in seen and d.path in made and d.document_id not in preservation:
            # a PDF/A whose original row no longer names its source: still the second copy, never
            # a second original (one document id has one original)
            preservation[d.document_id] = d
            continue
        seen.add(d.document_id)
        originals.append(d)
    return originals, preservation


_DOCUMENT_PATH = re.compile(r"representations/[^/]+/data/[^/].*")


def is_document_path(path: str | None) -> bool:
    """Whether ``path`` (from the package root) is where a record's file may be: below a representation's data/.

    Metadata (METS, PREMIS, ERMS, schemas, documentation) and anything else is never a document.
    """
    if not path or not _DOCUMENT_PATH.fullmatch(path):
        return False
    parts = path.split("/")
    return ".." not in parts and "." not in parts and "" not in parts and not any(ord(c) < 32 for c in path)


def _in_case_folder(e: AccessEntry, folder: str) -> bool:
    """Whether ``folder`` is the one the package builder gives case ``e``'s files: the reference as a portable
    name, or that name and the case's key when two references made the same name (see package._case_folder)."""
    from transforms.packaging.sip import safe_name as portable

    base = portable(str(e.reference).replace("/", "-"))
    keyed = f"{base}-{portable(str(e.source_id))}"
    return folder in (base, keyed) or folder.startswith(keyed + "-")


def file_owners(cat: Catalogue, package_id: str, path: str) -> list[tuple[AccessEntry, AccessDocument | None]]:
    """Every record of the package with a claim on the file at ``path``: those whose documents point at it,
    and the case whose folder it sits in. A file is served only to a reader who may read every one."""
    with cat.session() as s:
        rows = list(s.execute(sa.select(AccessEntry, AccessDocument).join(
            AccessDocument, AccessDocument.entry_id == AccessEntry.id).where(
            AccessEntry.package_id == package_id, AccessDocument.path == path)).tuples())
        # a preservation copy belongs to whoever owns the original it was made from
        origin = s.scalar(sa.select(FileFormat.derived_from).where(
            FileFormat.package_id == package_id, FileFormat.path == path, FileFormat.outcome == "derivative"))
        if origin and origin != path:
            seen = {(e.id, d.id if d else None) for e, d in rows}
            rows += [(e, d) for e, d in s.execute(sa.select(AccessEntry, AccessDocument).join(
                AccessDocument, AccessDocument.entry_id == AccessEntry.id).where(
                AccessEntry.package_id == package_id, AccessDocument.path == origin)).tuples()
                if (e.id, d.id) not in seen]
        parts = path.split("/")
        folder = parts[3] if len(parts) > 4 else None
        if folder is not None:
            claimed = {e.id for e, _ in rows}
            for e in s.scalars(sa.select(AccessEntry).where(AccessEntry.package_id == package_id)):
                if e.id not in claimed and _in_case_folder(e, folder):
                    rows.append((e, None))
    return rows


def indexed_package(cat: Catalogue, package_id: str) -> AccessPackage | None:
    with cat.session() as s:
        return s.get(AccessPackage, package_id)


__all__ = ["SearchResult", "deep_link", "find_entry", "index_package", "index_tombstone", "parse_erms", "search",
           "sync"]
