"""Delivery for requests for public documents (utlämnande): an E-ARK DIP of a selection of records.

The DIP is a CSIP package (``OAISPACKAGETYPE="DIP"``) written in one pass by
:class:`~transforms.packaging.csip.PackageWriter`::

    <OBJID>/METS.xml                            root METS
    <OBJID>/metadata/descriptive/ERMS.xml       the selected cases, secret parts masked
    <OBJID>/metadata/preservation/premis.xml    the dissemination event and who asked for it
    <OBJID>/representations/rep1/METS.xml
    <OBJID>/representations/rep1/data/…         the documents handed out (copied by ranged reads and
                                                checked against the catalogue's SHA-256): each original
                                                and, beside it, its preservation copy (PDF/A)
    <OBJID>/documentation/withheld.json         what was left out or masked, and why
    <OBJID>/schemas/*.xsd

What the requester's role may not see is never copied: a secret case keeps its diarienummer,
dates and the provision that covers it, nothing else; a secret document is listed without its
title or file; personnummer are left out for roles that may not search them. The DIP is
validated (``arkiv validate``) before it is handed over.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from pathlib import Path

from lxml import etree

from transforms.access import accesslog, index
from transforms.access import packages as pk
from transforms.access.auth import AccessDenied, NotFound, Principal, Withheld
from transforms.catalogue import AccessEntry
from transforms.common.errors import ContentError, StorageError
from transforms.common.xmltools import NS_ERMS, NS_XSI
from transforms.packaging import premis
from transforms.packaging.agents import agents_of, by_person, by_software, software
from transforms.packaging.csip import PackageWriter, Written
from transforms.packaging.fgs import FGS_ERMS
from transforms.packaging.mets import FileRef

E = f"{{{NS_ERMS}}}"
REP = "rep1"
MASK = "Uppgiften omfattas av sekretess och lämnas inte ut / withheld: covered by secrecy"


def _regulation(el) -> str:
    r = el.find(f"{E}restriction/{E}regulation")
    return r.text if r is not None and r.text else "OSL"


def _select(arc, who: Principal, records: list[str], q: str | None, system: str | None,
            purpose: str) -> tuple[list[AccessEntry], list[dict]]:
    chosen: dict[int, AccessEntry] = {}
    missing = []
    for link in records:
        sys_, _, source_id = link.strip().strip("/").removeprefix("api/v1/records/").partition("/")
        entry = index.find_entry(arc.cat, sys_, source_id)
        if entry is None or not who.in_scope(sys_) or not index.entry_covered(arc.cat, who, entry):
            missing.append({"record": link, "what": "the record", "why": "not in the archive (or outside the "
                            "requester's scope)", "how": "not included"})
            continue
        chosen[entry.id] = entry
    if q:
        hits = arc.search(who, q, purpose=purpose, system=system, limit=500).hits
        for h in hits:
            entry = index.find_entry(arc.cat, h["system"], h["source_id"])
            if entry is not None:
                chosen[entry.id] = entry
    return sorted(chosen.values(), key=lambda e: (e.system, e.reference, e.id)), missing


def _mask_case(agg, who: Principal, link: str, withheld: list[dict]) -> tuple[bool, set[str]]:
    """Mask what ``who`` may not see in one copied aggregation; returns (whole case withheld, documents withheld)."""
    secret = agg.findtext(E + "securityClass") == "secret"
    hidden_docs: set[str] = set()
    if secret and not who.sees_secret:
        reg = _regulation(agg)
        agg.find(E + "title").text = MASK
        for a in agg.findall(f"{E}agents/{E}agent"):
            if a.get("agentType") == "counterpart":
                a.getparent().remove(a)
        for r in agg.findall(E + "record"):
            hidden_docs.add(r.get("systemIdentifier", ""))
            agg.remove(r)
        withheld.append({"record": link, "what": "title, parties and every document of the case",
                         "why": f"the case is covered by secrecy ({reg}); the requester's role is not cleared",
                         "how": "left out; the case is listed with its diarienummer and dates only"})
        return True, hidden_docs
    for r in agg.findall(E + "record"):
        if r.findtext(E + "securityClass") == "secret" and not who.sees_secret:
            reg = _regulation(r)
            r.find(E + "title").text = MASK
            info = r.find(E + "additionalInformation")
            if info is not None:
                r.remove(info)
            hidden_docs.add(r.get("systemIdentifier", ""))
            withheld.append({"record": link, "document": r.get("systemIdentifier"),
                             "what": "the document's title and file",
                             "why": f"the document is covered by secrecy ({reg}); the requester's role is not cleared",
                             "how": "title masked, file left out"})
    if not who.may_search_personnummer:
        removed = 0
        for idn in agg.findall(f"{E}agents/{E}agent/{E}idNumber"):
            if idn.get("idNumberType") == "personnummer":
                idn.getparent().remove(idn)
                removed += 1
        if removed:
            withheld.append({"record": link, "what": f"personnummer of {removed} party(ies)",
                             "why": "personal identity numbers are handed out only after a secrecy review by "
                                    "an archivist", "how": "left out"})
    return False, hidden_docs


def export(arc, who: Principal, *, records: list[str] = (), q: str | None = None, system: str | None = None,
           purpose: str, dest: Path, now: dt.datetime | None = None) -> dict:
    """Write a DIP TAR of the selection to ``dest``; returns its path, ID and withheld manifest."""
    if not who.may_export:
        accesslog.log(arc.cat, who, "export", "dip", outcome="refused", purpose=purpose)
        raise AccessDenied(f"role {who.role} may not export deliveries")
    if not purpose.strip():
        raise ContentError("a delivery needs a purpose (the request it answers, e.g. its diarienummer)")
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    entries, withheld = _select(arc, who, list(records), q, system, purpose)
    if not entries:
        accesslog.log(arc.cat, who, "export", "dip", outcome="not_found", purpose=purpose,
                      detail=f"no record the requester may receive among {len(records)} link(s)"
                             + (" and a search" if q else ""))
        raise NotFound("the selection holds no record the requester may receive")
    objid = "uuid-" + str(uuid.uuid4())
    control = None
    aggregations = []
    erms_cache: dict[str, etree._ElementTree | None] = {}
    delivered = []
    used: set[str] = set()
    with PackageWriter(dest, objid, profile=FGS_ERMS, package_type="DIP", created=now) as writer:
        data_files: list[tuple[FileRef, premis.FileObject]] = []
        for e in entries:
            link = f"{e.system}/{e.source_id}"
            if e.storage == "disposed":
                withheld.append({"record": link, "reference": e.reference, "what": "the whole record",
                                 "why": "disposed of (gallrad) under the retention schedule; only its "
                                        "tombstone remains", "how": "not included"})
                continue
            if e.package_id not in erms_cache:
                row = index.indexed_package(arc.cat, e.package_id)
                data = arc.member_bytes(e.package_id, row.erms_path) if row and row.erms_path else None
                erms_cache[e.package_id] = pk.parse_xml(data, "ERMS.xml") if data else None
            tree = erms_cache[e.package_id]
            agg = None
            if tree is not None:
                agg = next((a for a in tree.iter(E + "aggregation")
                            if a.get("systemIdentifier") == e.source_id), None)
            if agg is None:
                withheld.append({"record": link, "reference": e.reference, "what": "the whole record",
                                 "why": "its package has no case description (tabular records are "
                                        "delivered by an archivist)", "how": "not included"})
                continue
            if control is None:
                control = copy.deepcopy(tree.getroot().find(E + "control"))
            agg = copy.deepcopy(agg)
            whole, hidden = _mask_case(agg, who, link, withheld)
            originals, preserved = index.copies_of(arc.cat, e.id)
            docs = {d.document_id: d for d in originals}
            formats = index.package_formats(arc.cat, e.package_id) if preserved else {}
            for r in agg.findall(E + "record"):
                doc_id = r.get("systemIdentifier", "")
                app = r.find(f"{E}additionalInformation/{E}appendix")
                d = docs.get(doc_id)
                if app is None or doc_id in hidden or d is None or d.path is None:
                    continue
                if not arc.file_allowed(who, e, d):
                    # the file is another record's (or not a document at all): the same rule as a
                    # download, judged by the records that own the file, not the one selected
                    app.getparent().remove(app)
                    withheld.append({"record": link, "document": doc_id, "what": "the document's file",
                                     "why": "the file belongs to a record the requester may not receive",
                                     "how": "left out"})
                    continue
                # the original as registered (the ERMS appendix points at it) and, beside it, the
                # preservation copy the archive made, each keeping its path below data/
                arcname = _add_copy(writer, arc, e, d, used, data_files, formats)
                app.set("path", f"../../{arcname}")
                pres = preserved.get(doc_id)
                if pres is not None and pres.path is not None and arc.file_allowed(who, e, pres):
                    _add_copy(writer, arc, e, pres, used, data_files, formats, derived_from=arcname)
                elif pres is not None and pres.path is not None:
                    withheld.append({"record": link, "document": doc_id,
                                     "what": "the document's preservation copy",
                                     "why": "the file belongs to a record the requester may not receive",
                                     "how": "left out"})
            aggregations.append(agg)
            delivered.append({"record": link, "reference": e.reference, "storage": e.storage,
                              "masked": whole})
        if not aggregations:
            accesslog.log(arc.cat, who, "export", "dip", outcome="not_found", purpose=purpose,
                          detail="nothing in the selection can be handed out")
            raise NotFound("nothing in the selection can be handed out to this requester")
        if not data_files:
            # A DIP needs a representation with at least one file (CSIP114); when every document
            # of the selection is withheld from this reader there is none to give.
            accesslog.log(arc.cat, who, "export", "dip", outcome="withheld", purpose=purpose,
                          detail=f"every document of {len(delivered)} record(s) is withheld from role "
                                 f"{who.role}")
            raise Withheld(f"every document of the selection ({len(delivered)} record(s))", "OSL")
        written = _write_metadata(writer, who, purpose, control, aggregations, data_files, withheld,
                                  delivered)
    from transforms.validation.validator import validate_package

    final = written.path
    report = validate_package(final, "dip")
    if not report.valid:
        errors = [f"{f.requirement}: {f.message}" for f in report.findings if f.severity == "ERROR"]
        final.unlink(missing_ok=True)
        raise ContentError(f"DIP {objid} does not validate; not delivered", errors[:10])
    for d in delivered:
        accesslog.log(arc.cat, who, "export", d["record"], purpose=purpose,
                      outcome="withheld" if d["masked"] else "granted", detail=f"in DIP {objid}")
    accesslog.log(arc.cat, who, "export", objid, purpose=purpose,
                  detail=f"DIP of {len(delivered)} record(s), {len(withheld)} withholding(s); sha256 {written.sha256}")
    return {"path": str(final), "package_id": objid, "sha256": written.sha256, "size": written.size,
            "records": delivered, "withheld": withheld}


def _document_chunks(arc, e: AccessEntry, d):
    yield from arc.document_chunks(e, d)


def _add_copy(writer: PackageWriter, arc, e: AccessEntry, d, used: set[str],
              data_files: list[tuple[FileRef, premis.FileObject]], formats: dict,
              derived_from: str | None = None) -> str:
    """Stream one stored copy of a document into the DIP's representation; returns its path in the DIP.

    The copy is hashed as it is read (by ranged reads from the store) and must be the bytes the
    catalogue recorded: a copy that is not is never handed out."""
    rel = d.path.split("/data/", 1)[1] if "/data/" in d.path else d.path
    if rel in used:
        rel = f"{e.package_id}/{rel}"
    used.add(rel)
    arcname = f"representations/{REP}/data/{rel}"
    ref = writer.add(arcname, _document_chunks(arc, e, d), file_id=f"file-{len(data_files) + 1}", mime=d.mimetype,
                     size=d.size)
    if d.sha256 and ref.sha256 != d.sha256:
        raise StorageError(f"{e.package_id}: a stored copy of document {d.document_id} does not match the SHA-256 "
                           "the catalogue recorded; the DIP is not written")
    f = formats.get(d.path, {})
    data_files.append((ref, premis.FileObject(arcname, ref.sha256, d.size, f.get("format_name") or d.mimetype, d.name,
                                              puid=f.get("puid"), format_version=f.get("format_version") or "",
                                              derived_from=derived_from)))
    return arcname


def _write_metadata(writer: PackageWriter, who: Principal, purpose: str, control, aggregations,
                    data_files: list[tuple[FileRef, premis.FileObject]], withheld: list[dict],
                    delivered: list[dict]) -> Written:
    """The DIP's ERMS (the selected cases, masked), what was withheld, PREMIS and METS; the finished package."""
    objid, now = writer.objid, writer.created
    root = etree.Element(E + "erms", nsmap={None: NS_ERMS, "xsi": NS_XSI})
    root.set(f"{{{NS_XSI}}}schemaLocation", f"{NS_ERMS} ../../schemas/ERMS.xsd")
    if control is not None:
        for ident in control.findall(E + "identification"):
            if ident.get("identificationType") == "package":
                ident.text = objid
        root.append(control)
    aggs = etree.SubElement(root, E + "aggregations")
    for a in aggregations:
        aggs.append(a)
    writer.add_metadata("metadata/descriptive/ERMS.xml", writer.xml(root.getroottree(), "ERMS.xml"),
                        file_id="dmd-erms", mdtype="OTHER", other_mdtype="ERMS")

    manifest = {"dip": objid, "created": now.isoformat(), "requested_by": who.name, "role": who.role,
                "purpose": purpose, "records": delivered, "withheld": withheld,
                "note": "Everything the requester's role may not receive was left out or masked before the "
                        "package was written; each entry says what, why and how."}
    writer.add("documentation/withheld.json", json.dumps(manifest, ensure_ascii=False, indent=2).encode("utf-8"),
               file_id="doc-withheld", mime="application/json", group="Documentation")
    event = premis.Event(identifier=f"{objid}-dissemination", type="dissemination", time=now, outcome="success",
                         detail=f"DIP of {len(delivered)} record(s) for {who.name} ({who.role}); "
                                f"{len(withheld)} withholding(s), see documentation/withheld.json",
                         agents=(*by_software(), by_person(who.name)))
    writer.representation(REP, data_files, label=f"DIP {objid} ({REP})", agents=[software()])
    writer.premis([event], agents_of([event]), representations=[f"representations/{REP}"])
    return writer.finish(label=f"Utlämnande: {purpose}"[:200])


__all__ = ["export"]
