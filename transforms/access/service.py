"""The archive as its readers see it: search, records, documents, history — each access logged.

:class:`Archive` is what both the HTTP API (:mod:`transforms.access.api`) and the ``arkiv`` CLI
call, so that the rules (scope, secrecy, logging) live in one place. Every answer names the
storage the record sits in: ``mellanarkiv``, ``slutarkiv`` or ``disposed`` (a tombstone).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from transforms.access import accesslog, index, receipts
from transforms.access import packages as pk
from transforms.access.auth import SCOPED_ROLES, AccessDenied, NotFound, Principal, Withheld, personnummer_key
from transforms.archive import ocfl
from transforms.catalogue import AccessDocument, AccessEntry, Catalogue
from transforms.common.masking import safe_message
from transforms.config.settings import Settings

log = logging.getLogger(__name__)


def mellanarkiv_store(settings: Settings):
    """The mellanarkiv storage the pipeline writes to (whichever backend it is configured with)."""
    from transforms.archive.storage import mellanarkiv

    return mellanarkiv(settings)


def slutarkiv_root(settings: Settings):
    """The slutarkiv's OCFL storage root: a folder, or a bucket read through the same verbs."""
    from transforms.archive.storage import slutarkiv

    return slutarkiv(settings)


@dataclass
class Download:
    """A document ready to stream: its metadata and an iterator over its bytes."""

    name: str
    mimetype: str
    size: int
    sha256: str | None
    storage: str
    chunks: Iterator[bytes]


class Archive:
    """Search and read the archive on behalf of a :class:`Principal`; every access is logged."""

    def __init__(self, settings: Settings, catalogue: Catalogue | None = None, store=None, slutarkiv=None):
        self.settings = settings
        self._slutarkiv = slutarkiv
        if catalogue is None:
            catalogue = Catalogue(settings.catalogue_url)
            catalogue.migrate()
        self.cat = catalogue
        self._store = store
        self.key = personnummer_key(settings.home)

    @property
    def store(self):
        if self._store is None:
            self._store = mellanarkiv_store(self.settings)
        return self._store

    @property
    def slutarkiv(self):
        """The slutarkiv's storage root (a Path or an S3Storage), read like the mellanarkiv: by key, never by path."""
        if self._slutarkiv is None:
            self._slutarkiv = slutarkiv_root(self.settings)
        return self._slutarkiv

    # --- index maintenance (no principal: the pipeline and the retention runs call these) --------------

    def index_package(self, package_id: str) -> dict:
        return index.index_package(self.cat, self.store, self.slutarkiv, package_id, self.key)

    def sync(self) -> dict:
        return index.sync(self.cat, self.store, self.slutarkiv, self.key)

    # --- reads ----------------------------------------------------------------------------------------

    def search(self, who: Principal, q: str = "", *, purpose: str = "", **filters) -> index.SearchResult:
        pnr = filters.get("personnummer")
        target = "search" + (f" system={filters['system']}" if filters.get("system") else "")
        words = [q or ""]
        try:
            result = index.search(self.cat, who, q, key=self.key, **filters)
        except AccessDenied as exc:
            accesslog.log(self.cat, who, "search", target, outcome="refused", purpose=purpose, detail=str(exc),
                          names=words)
            raise
        # Neither the words searched for nor a personnummer are logged: a name or a number identifies a
        # person. The keyed digest lets whoever holds the key check what a logged search was for.
        detail = f"{result.total} hit(s)"
        if pnr:
            detail += "; by personnummer (exact)"
        if (q or "").strip():
            detail += f"; query hmac:{accesslog.query_digest(self.key, q)} ({len(q.split())} word(s))"
        accesslog.log(self.cat, who, "search", target, purpose=purpose, detail=detail, names=words)
        return result

    def _entry(self, who: Principal, system: str, source_id: str, action: str, purpose: str) -> AccessEntry:
        target = f"{system}/{source_id}"
        entry = index.find_entry(self.cat, system, source_id)
        outside = None
        if entry is not None and not who.in_scope(system):
            outside = f"outside the credential's scope ({who.system})"
        elif entry is not None and not index.entry_covered(self.cat, who, entry):
            outside = _outside_creators(who)
        if entry is None or outside:
            # a record outside the reader's scope answers like one that does not exist
            accesslog.log(self.cat, who, action, target, purpose=purpose,
                          outcome="not_found" if entry is None else "refused", detail=outside or "")
            raise NotFound(f"no record {_shown(target)} in the archive")
        return entry

    def record(self, who: Principal, system: str, source_id: str, *, purpose: str = "") -> dict:
        """A record with its metadata and documents; a secret one, to an uncleared reader, only as classified."""
        e = self._entry(who, system, source_id, "record", purpose)
        target = f"{system}/{source_id}"
        out = index.summary(e, who)
        out["deep_link"] = index.deep_link(system, source_id)
        if e.storage == "disposed":
            accesslog.log(self.cat, who, "record", target, purpose=purpose, detail="tombstone")
            out.update({"documents": [], "parties": [], "disposed": True})
            return out
        if e.secret and not who.sees_secret:
            accesslog.log(self.cat, who, "record", target, purpose=purpose, outcome="withheld",
                          detail=f"classified ({e.secrecy_reference or 'OSL'})")
            out.update({"withheld": f"the record is classified ({e.secrecy_reference or 'OSL'}); "
                                    "its content is withheld", "documents": None, "parties": None})
            return out
        docs, preserved = index.copies_of(self.cat, e.id)
        formats = index.package_formats(self.cat, e.package_id)
        out["parties"] = [p for p in (e.parties or "").split("; ") if p]
        out["documents"] = [self._doc_view(who, e, d, self.file_allowed(who, e, d), preserved.get(d.document_id),
                                           formats) for d in docs]
        pkg = index.indexed_package(self.cat, e.package_id)
        out["package"] = {"id": e.package_id, "storage": e.storage, "verified": bool(pkg and pkg.verified),
                          "history": f"/api/v1/packages/{e.package_id}/history"}
        withheld = sum(1 for d in docs if d.secret and not who.sees_secret)
        accesslog.log(self.cat, who, "record", target, purpose=purpose, names=out["parties"],
                      detail=f"{len(docs)} document(s) listed" + (f", {withheld} classified" if withheld else ""))
        return out

    def _doc_view(self, who: Principal, e: AccessEntry, d: AccessDocument, file_ok: bool = True,
                  preserved: AccessDocument | None = None, formats: dict | None = None) -> dict:
        """A document as listed in a record: the top-level fields describe the copy a plain download gives
        (the preservation copy when there is one), ``copies`` lists each copy with its own link."""
        hidden = d.secret and not who.sees_secret
        formats = formats or {}
        link = f"{index.deep_link(e.system, e.source_id)}/documents/{d.document_id}"
        copies = []
        for kind, c in (("preservation", preserved), ("original", d)):
            if c is None:
                continue
            ok = c.path is not None and (file_ok if c is d else self.file_allowed(who, e, c))
            f = formats.get(c.path or "", {})
            copy = {"copy": kind, "name": None if hidden else c.name, "format_name": f.get("format_name") or None,
                    "format_version": f.get("format_version") or None, "puid": f.get("puid"),
                    "mimetype": f.get("mime") or c.mimetype, "size": c.size, "sha256": c.sha256,
                    "available": ok}
            if ok and not hidden:
                copy["content"] = f"{link}?copy={kind}"
            copies.append(copy)
        main = preserved if preserved is not None and preserved.path is not None else d
        view = {"document_id": d.document_id, "number": d.number, "classified": bool(d.secret),
                "secrecy_reference": d.secrecy_reference, "title": None if hidden else d.title,
                "name": None if hidden else main.name, "mimetype": main.mimetype, "size": main.size,
                "sha256": main.sha256, "storage": e.storage, "available": d.path is not None and file_ok,
                "default_copy": "preservation" if main is preserved else "original", "copies": copies}
        if d.path and not hidden and file_ok:
            view["content"] = link
        return view

    def file_allowed(self, who: Principal, e: AccessEntry, doc: AccessDocument) -> bool:
        """Whether ``who`` may have the file ``doc`` points at, judged by every record that owns it.

        The record a URL (or a DIP selection) names is only where the reader came from: a document of
        a public case whose metadata points at a secret case's file, at a metadata file or outside the
        package's documents must not hand that file out. The file is served only to a reader who may
        read each record and document of the package with a claim on it (:func:`index.file_owners`).
        """
        if not index.is_document_path(doc.path):
            return False
        for owner, owner_doc in index.file_owners(self.cat, e.package_id, doc.path or ""):
            if not who.in_scope(owner.system) or owner.storage == "disposed":
                return False
            if not index.entry_covered(self.cat, who, owner):
                return False
            if owner.secret and not who.sees_secret:
                return False
            if owner_doc is not None and owner_doc.secret and not who.sees_secret:
                return False
        return True

    def document(self, who: Principal, system: str, source_id: str, document_id: str, *,
                 purpose: str = "", copy: str | None = None) -> Download:
        """A document's bytes, streamed from the stored package (a range of the TAR, or the OCFL file).

        ``copy`` is ``preservation`` (the PDF/A the archive made and keeps) or ``original`` (as delivered);
        without it the preservation copy when there is one, else the original.
        """
        if copy not in (None, "", "preservation", "original"):
            raise ValueError("copy must be 'preservation' or 'original'")
        e = self._entry(who, system, source_id, "document", purpose)
        target = f"{system}/{source_id}/documents/{document_id}"
        names = [p for p in (e.parties or "").split("; ") if p]
        docs, preserved = index.copies_of(self.cat, e.id)
        original = next((d for d in docs if d.document_id == document_id), None)
        doc = original
        if original is not None and copy != "original" and document_id in preserved:
            doc = preserved[document_id]
            copy = "preservation"
        elif copy == "preservation":
            doc = None  # asked for a copy this document does not have
        else:
            copy = "original"
        target += f"?copy={copy}"
        if doc is None or doc.path is None:
            accesslog.log(self.cat, who, "document", target, purpose=purpose, outcome="not_found", names=names)
            raise NotFound(f"no document {_shown(document_id)} with a file in record "
                           f"{_shown(system)}/{_shown(source_id)}")
        if (e.secret or doc.secret) and not who.sees_secret:
            reg = e.secrecy_reference if e.secret else doc.secrecy_reference
            accesslog.log(self.cat, who, "document", target, purpose=purpose, outcome="withheld",
                          detail=f"classified ({reg or 'OSL'})", names=names)
            raise Withheld(f"document {target}", reg)
        if not self.file_allowed(who, e, doc) or (doc is not original and not self.file_allowed(who, e, original)):
            # answered as a classified document: the reader learns nothing about whose file it is
            accesslog.log(self.cat, who, "document", target, purpose=purpose, outcome="withheld", names=names,
                          detail="the file belongs to another record the reader may not read, or is not a "
                                 "document of the package")
            raise Withheld(f"document {target}", None)
        pkg = self.cat.package(e.package_id)
        chunks = self.document_chunks(e, doc)
        accesslog.log(self.cat, who, "document", target, purpose=purpose, names=names,
                      detail=f"{copy} copy, {doc.size} bytes from the {pkg.storage}")
        return Download(doc.name or doc.path.rsplit("/", 1)[-1], doc.mimetype, doc.size, doc.sha256, pkg.storage,
                        chunks)

    def document_chunks(self, e: AccessEntry, doc: AccessDocument) -> Iterator[bytes]:
        """The document's bytes, verified against its checksum while they stream (no access check here)."""
        pkg = self.cat.package(e.package_id)
        if pkg.storage == "slutarkiv" and pkg.location.startswith("ocfl:"):
            root, object_id = self.slutarkiv, pkg.location.removeprefix("ocfl:")
            content = pk.ocfl_content(root, object_id, doc.path)
            return pk.stream_range(lambda: ocfl.open_content(root, object_id, content), 0, doc.size, doc.sha256)
        if doc.tar_offset is None:
            if pkg.location.lower().endswith(".zip"):  # a deflated member of a delivered zip has no byte range
                return pk.zip_member_chunks(lambda: self.store.open(pkg.location), doc.path, doc.size, doc.sha256)
            raise NotFound(f"document {doc.document_id}: its place in the package is not indexed; run `arkiv index`")
        return self._tar_range(pkg.location, doc.tar_offset, doc.size, doc.sha256)

    def _tar_range(self, location: str, offset: int, size: int, sha256: str | None) -> Iterator[bytes]:
        """Bytes of a stored TAR: by a ranged read when the storage offers one (``open_range``), else by
        seeking (a file) or reading past the preceding bytes (a plain stream)."""
        ranged = getattr(self.store, "open_range", None)
        if ranged is not None:
            return pk.stream_range(lambda: ranged(location, offset, size), 0, size, sha256)
        return pk.stream_range(lambda: self.store.open(location), offset, size, sha256)

    def history(self, who: Principal, package_id: str, *, purpose: str = "") -> dict:
        """A package's validation and PREMIS history from the catalogue."""
        if who.role == "researcher":
            # refused by role before the lookup: the answer must not tell whether the package exists
            accesslog.log(self.cat, who, "history", package_id, purpose=purpose, outcome="refused",
                          detail="role researcher")
            raise AccessDenied("researchers do not read package histories")
        pkg = self.cat.package(package_id)
        outside = self._package_outside(who, pkg, who.may_read_history)
        if pkg is None or outside:
            accesslog.log(self.cat, who, "history", package_id, purpose=purpose,
                          outcome="not_found" if pkg is None else "refused", detail=outside or "")
            raise NotFound(f"no package {_shown(package_id)}")
        events = self.cat.events(package_id=package_id)
        batch = [e for e in self.cat.events(batch_id=pkg.batch_id) if e.package_id is None]
        accesslog.log(self.cat, who, "history", package_id, purpose=purpose)
        storage = "disposed" if pkg.status == "disposed" else pkg.storage
        return {"package_id": package_id, "system": pkg.system, "storage": storage, "status": pkg.status,
                "sha256": pkg.sha256, "validation": [_event(e) for e in events if e.type == "validation"],
                "events": [_event(e) for e in sorted(batch + events, key=lambda e: e.id)]}

    def packages(self, who: Principal, system: str | None = None) -> list[dict]:
        """Packages the principal may see (their own system's for scoped roles, their archive creators' when
        they are limited to some)."""
        target = "packages" + (f" system={system}" if system else "")
        if who.role == "researcher":
            accesslog.log(self.cat, who, "packages", target, outcome="refused", detail="role researcher")
            raise AccessDenied("researchers search records; package lists are for archivists and systems")
        rows = self.cat.packages(who.system or system)
        if who.creators:
            names = index.creator_names(self.cat, who)
            rows = [p for p in rows if index.package_covered(self.cat, who, p, names)]
        accesslog.log(self.cat, who, "packages", target, detail=f"{len(rows)} package(s) listed")
        return [{"id": p.id, "system": p.system, "record_class": p.record_class, "period": p.period,
                 "status": p.status, "storage": "disposed" if p.status == "disposed" else p.storage,
                 "records": p.record_count, "receipt": f"/api/v1/receipts/{p.id}"} for p in rows]

    def _package_outside(self, who: Principal, pkg, allowed) -> str | None:
        """Why ``who`` may not see package ``pkg`` (``allowed``: the role's test by system), or None."""
        if pkg is None:
            return None
        if not allowed(pkg.system):
            return f"outside the credential's scope ({who.system})"
        if not index.package_covered(self.cat, who, pkg):
            return _outside_creators(who)
        return None

    def access_log(self, who: Principal, **filters) -> list[dict]:
        try:
            rows = accesslog.entries(self.cat, who, **filters)
        except AccessDenied:
            accesslog.log(self.cat, who, "access-log", "access_log", outcome="refused")
            raise
        accesslog.log(self.cat, who, "access-log", "access_log", detail=f"{len(rows)} entries read")
        return rows

    def receipt(self, who: Principal, package_id: str, *, purpose: str = "") -> dict:
        """The kvittens for a package, for its own system's credentials (and archivists)."""
        if who.role not in ("archivist", *SCOPED_ROLES):
            # refused by role before the lookup: the answer must not tell whether the package exists
            accesslog.log(self.cat, who, "receipt", package_id, purpose=purpose, outcome="refused",
                          detail=f"role {who.role}")
            raise AccessDenied(f"role {who.role} does not receive receipts")
        pkg = self.cat.package(package_id)
        outside = self._package_outside(who, pkg, who.may_fetch_receipt)
        if pkg is None or outside:
            accesslog.log(self.cat, who, "receipt", package_id, purpose=purpose,
                          outcome="not_found" if pkg is None else "refused", detail=outside or "")
            raise NotFound(f"no package {_shown(package_id)}")
        try:
            # a transferred package's receipt re-reads its AIP in the slutarkiv, folder or bucket
            r = receipts.issue(self.cat, self.store, package_id, issued_to=who.name, agent=f"access API ({who.name})",
                               slutarkiv=self.slutarkiv)
        except receipts.ReceiptRefused as exc:
            accesslog.log(self.cat, who, "receipt", package_id, purpose=purpose, outcome="refused", detail=str(exc))
            raise
        accesslog.log(self.cat, who, "receipt", package_id, purpose=purpose,
                      detail=f"{r['record_count']} record(s) listed")
        return r

    def member_bytes(self, package_id: str, rel: str, limit: int = 512 * 1024 * 1024) -> bytes | None:
        """A metadata file of a package (its ERMS document), by ranged read or from the OCFL object."""
        pkg = self.cat.package(package_id)
        row = index.indexed_package(self.cat, package_id)
        if pkg is None or row is None:
            return None
        if pkg.storage == "slutarkiv" and pkg.location.startswith("ocfl:"):
            root, object_id = self.slutarkiv, pkg.location.removeprefix("ocfl:")
            with ocfl.open_content(root, object_id, pk.ocfl_content(root, object_id, rel)) as f:
                data = f.read(limit + 1)
            return data if len(data) <= limit else None
        if rel != row.erms_path or (row.erms_size or 0) > limit:
            return None
        if row.erms_offset is None:
            if pkg.location.lower().endswith(".zip"):
                return b"".join(pk.zip_member_chunks(lambda: self.store.open(pkg.location), rel, row.erms_size or 0))
            return None
        return b"".join(self._tar_range(pkg.location, row.erms_offset, row.erms_size or 0, None))


def _outside_creators(who: Principal) -> str:
    return f"outside the reader's archive creators ({', '.join(who.creators)})"


def _shown(value: str) -> str:
    """A value from the URL as an answer may repeat it: numbers shaped like a personnummer masked, escaped."""
    return accesslog.clean(value, 300)


def _mask(q: str) -> str:
    """A text as logged: anything shaped like a personnummer replaced (every written form)."""
    return accesslog.mask_numbers(q or "")


def _event(e) -> dict:
    return {"id": e.id, "type": e.type, "time": e.time.isoformat(), "outcome": e.outcome, "agent": e.agent,
            "detail": e.detail}


# --- hooks for the pipeline and the retention runs --------------------------------------------------------

def index_recorded_package(settings: Settings, package_id: str) -> dict:
    """Index a package just recorded in the catalogue (call after ``pipeline.record``); idempotent."""
    arc = Archive(settings)
    try:
        return arc.index_package(package_id)
    finally:
        arc.cat.dispose()


def step_sync_index(settings: Settings) -> dict:
    """The search index step after a retention run: transferred records answer from the slutarkiv,
    disposed ones only as tombstones. The index is derived data, so a failure here is logged and
    leaves the archive as it is; ``arkiv index`` catches up."""
    try:
        return sync_index(settings)
    except Exception as exc:
        log.error("search index not brought up to date (%s: %s); run `arkiv index`",
                  type(exc).__name__, safe_message(exc))
        return {"error": type(exc).__name__}


def sync_index(settings: Settings) -> dict:
    """Bring the index up to date after transfers and disposals (call after a retention run)."""
    arc = Archive(settings)
    try:
        return arc.sync()
    finally:
        arc.cat.dispose()
