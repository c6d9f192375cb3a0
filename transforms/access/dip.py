"""Delivery for requests for public documents (utlämnande): an E-ARK DIP of a selection of records.

The DIP is a CSIP package (``OAISPACKAGETYPE="DIP"``) written in one pass::

    <OBJID>/METS.xml                            root METS
    <OBJID>/metadata/descriptive/ERMS.xml       the selected cases, secret parts masked
    <OBJID>/metadata/preservation/premis.xml    the dissemination event and who asked for it
    <OBJID>/representations/rep1/METS.xml
    <OBJID>/representations/rep1/data/…         the documents handed out (copied by ranged reads): each
                                                original and, beside it, its preservation copy (PDF/A)
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
import hashlib
import io
import json
import os
import tarfile
import uuid
from pathlib import Path

from lxml import etree

from transforms import __version__
from transforms.access import accesslog, index
from transforms.access import packages as pk
from transforms.access.auth import AccessDenied, NotFound, Principal, Withheld
from transforms.catalogue import AccessEntry
from transforms.common.errors import ContentError
from transforms.common.hashing import HashingWriter, fsync_dir
from transforms.common.xmltools import NS_ERMS, NS_XSI, SCHEMA_DIR, schema_errors, schemas_used
from transforms.packaging import premis
from transforms.packaging.fgs import FGS_ERMS, SOFTWARE_NAME
from transforms.packaging.mets import FileGroup, FileRef, MetadataRef, build_mets

E = f"{{{NS_ERMS}}}"
CSIP_PROFILE_URL = "https://earkcsip.dilcis.eu/profile/E-ARK-CSIP.xml"
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
        if entry is None or not who.in_scope(sys_):
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
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / f"{objid}.tar"
    tmp = dest / f".{objid}.tar.part"
    control = None
    aggregations = []
    erms_cache: dict[str, etree._ElementTree | None] = {}
    delivered = []
    used: set[str] = set()
    try:
        with open(tmp, "wb") as raw:
            out = HashingWriter(raw)
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[arg-type]
                data_refs: list[FileRef] = []
                data_objs: list[premis.FileObject] = []
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
                        arcname = _add_copy(tar, objid, arc, e, d, used, data_refs, data_objs, formats, now)
                        app.set("path", f"../../{arcname}")
                        pres = preserved.get(doc_id)
                        if pres is not None and pres.path is not None and arc.file_allowed(who, e, pres):
                            _add_copy(tar, objid, arc, e, pres, used, data_refs, data_objs, formats, now,
                                      derived_from=arcname)
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
                if not data_refs:
                    # A DIP needs a representation with at least one file (CSIP114); when every document
                    # of the selection is withheld from this reader there is none to give.
                    accesslog.log(arc.cat, who, "export", "dip", outcome="withheld", purpose=purpose,
                                  detail=f"every document of {len(delivered)} record(s) is withheld from role "
                                         f"{who.role}")
                    raise Withheld(f"every document of the selection ({len(delivered)} record(s))", "OSL")
                _write_metadata(tar, objid, who, purpose, control, aggregations, data_refs, data_objs, withheld,
                                delivered, now)
            raw.flush()
            os.fsync(raw.fileno())
        from transforms.validation.validator import validate_package

        os.replace(tmp, final)
        fsync_dir(dest)
        report = validate_package(final, "dip")
        if not report.valid:
            errors = [f"{f.requirement}: {f.message}" for f in report.findings if f.severity == "ERROR"]
            final.unlink(missing_ok=True)
            raise ContentError(f"DIP {objid} does not validate; not delivered", errors[:10])
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for d in delivered:
        accesslog.log(arc.cat, who, "export", d["record"], purpose=purpose,
                      outcome="withheld" if d["masked"] else "granted", detail=f"in DIP {objid}")
    accesslog.log(arc.cat, who, "export", objid, purpose=purpose,
                  detail=f"DIP of {len(delivered)} record(s), {len(withheld)} withholding(s); sha256 {out.hexdigest()}")
    return {"path": str(final), "package_id": objid, "sha256": out.hexdigest(), "size": out.size,
            "records": delivered, "withheld": withheld}


def _document_chunks(arc, e: AccessEntry, d):
    yield from arc.document_chunks(e, d)


def _add_copy(tar, objid: str, arc, e: AccessEntry, d, used: set[str], data_refs: list, data_objs: list,
              formats: dict, now: dt.datetime, derived_from: str | None = None) -> str:
    """Stream one stored copy of a document into the DIP's representation; returns its path in the DIP."""
    rel = d.path.split("/data/", 1)[1] if "/data/" in d.path else d.path
    if rel in used:
        rel = f"{e.package_id}/{rel}"
    used.add(rel)
    arcname = f"representations/{REP}/data/{rel}"
    _add_stream(tar, objid, arcname, d.size, _document_chunks(arc, e, d))
    f = formats.get(d.path, {})
    data_refs.append(FileRef(f"file-{len(data_refs) + 1}", f"data/{rel}", d.mimetype, d.size, d.sha256 or "", now))
    data_objs.append(premis.FileObject(arcname, d.sha256 or "", d.size, f.get("format_name") or d.mimetype, d.name,
                                       puid=f.get("puid"), format_version=f.get("format_version") or "",
                                       derived_from=derived_from))
    return arcname


class _ChunkReader(io.RawIOBase):
    """A file-like view of an iterator of chunks (what tarfile.addfile reads from)."""

    def __init__(self, chunks):
        self.chunks, self.buf = iter(chunks), b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buf) < n:
            try:
                self.buf += next(self.chunks)
            except StopIteration:
                break
        if n < 0:
            data, self.buf = self.buf, b""
        else:
            data, self.buf = self.buf[:n], self.buf[n:]
        return data


def _add_stream(tar: tarfile.TarFile, objid: str, arcname: str, size: int, chunks) -> None:
    info = tarfile.TarInfo(f"{objid}/{arcname}")
    info.size, info.mode, info.mtime = size, 0o644, int(dt.datetime.now(dt.UTC).timestamp())
    tar.addfile(info, _ChunkReader(chunks))  # type: ignore[arg-type]


def _add_bytes(tar: tarfile.TarFile, objid: str, arcname: str, data: bytes, now: dt.datetime) -> None:
    info = tarfile.TarInfo(f"{objid}/{arcname}")
    info.size, info.mode, info.mtime = len(data), 0o644, int(now.timestamp())
    tar.addfile(info, io.BytesIO(data))


def _ref(file_id: str, href: str, data: bytes, mime: str, now: dt.datetime) -> FileRef:
    return FileRef(file_id, href, mime, len(data), hashlib.sha256(data).hexdigest(), now)


def _xml(tree, what: str) -> bytes:
    errors = schema_errors(tree)
    if errors:
        raise ContentError(f"DIP {what} does not validate against its schema", errors[:5])
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _write_metadata(tar, objid: str, who: Principal, purpose: str, control, aggregations, data_refs, data_objs,
                    withheld: list[dict], delivered: list[dict], now: dt.datetime) -> None:
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
    erms_bytes = _xml(root.getroottree(), "ERMS.xml")

    manifest = {"dip": objid, "created": now.isoformat(), "requested_by": who.name, "role": who.role,
                "purpose": purpose, "records": delivered, "withheld": withheld,
                "note": "Everything the requester's role may not receive was left out or masked before the "
                        "package was written; each entry says what, why and how."}
    manifest_bytes = json.dumps(manifest, ensure_ascii=False, indent=2).encode("utf-8")

    software = premis.Agent("arkivflode", SOFTWARE_NAME, "software", __version__)
    requester = premis.Agent(f"requester-{who.name}", who.name, "person")
    event = premis.Event(identifier=f"{objid}-dissemination", type="dissemination", time=now, outcome="success",
                         detail=f"DIP of {len(delivered)} record(s) for {who.name} ({who.role}); "
                                f"{len(withheld)} withholding(s), see documentation/withheld.json",
                         agents=(("arkivflode", "executing program"), (f"requester-{who.name}", "authorizer")))
    premis_tree = premis.build_premis([], [event], [software, requester], representations=[f"representations/{REP}"])
    premis_bytes = _xml(premis_tree, "premis.xml")
    rep_premis_tree = premis.build_premis(data_objs, [], [software], schema_prefix="../../../../") \
        if data_objs else None

    profile = FGS_ERMS
    rep_md = []
    if rep_premis_tree is not None:
        rep_premis_bytes = _xml(rep_premis_tree, "representation premis.xml")
        rep_md = [MetadataRef("digiprovMD", _ref("digiprov-premis-rep1", "metadata/preservation/premis.xml",
                                                 rep_premis_bytes, "application/xml", now), "PREMIS")]
    rep_mets = build_mets(objid=REP, label=f"DIP {objid} ({REP})", profile=profile, package_type="DIP",
                          created=now, agents=[profile.software_agent()], metadata=rep_md,
                          groups=[FileGroup(f"Representations/{REP}/data", data_refs,
                                            profile.content_information_type)] if data_refs else [],
                          schema_prefix="../../", profile_url=CSIP_PROFILE_URL)
    rep_bytes = _xml(rep_mets, "representation METS.xml")
    used = set(schemas_used(rep_mets)) | set(schemas_used(premis_tree)) | {"ERMS.xsd", "mets.xsd", "xlink.xsd",
                                                                          "DILCISExtensionMETS.xsd"}
    schema_refs = []
    for i, name in enumerate(sorted(used)):
        data = (SCHEMA_DIR / name).read_bytes()
        _add_bytes(tar, objid, f"schemas/{name}", data, now)
        schema_refs.append(_ref(f"schema-{i}", f"schemas/{name}", data, "application/xml", now))
    _add_bytes(tar, objid, "documentation/withheld.json", manifest_bytes, now)
    _add_bytes(tar, objid, "metadata/descriptive/ERMS.xml", erms_bytes, now)
    _add_bytes(tar, objid, "metadata/preservation/premis.xml", premis_bytes, now)
    if rep_premis_tree is not None:
        _add_bytes(tar, objid, f"representations/{REP}/metadata/preservation/premis.xml", rep_premis_bytes, now)
    _add_bytes(tar, objid, f"representations/{REP}/METS.xml", rep_bytes, now)
    root_mets = build_mets(
        objid=objid, label=f"Utlämnande: {purpose}"[:200], profile=profile, package_type="DIP", created=now,
        agents=[profile.software_agent()],
        metadata=[MetadataRef("dmdSec", _ref("dmd-erms", "metadata/descriptive/ERMS.xml", erms_bytes,
                                             "application/xml", now), "OTHER", "ERMS"),
                  MetadataRef("digiprovMD", _ref("digiprov-premis", "metadata/preservation/premis.xml",
                                                 premis_bytes, "application/xml", now), "PREMIS")],
        groups=[FileGroup("Documentation", [_ref("doc-withheld", "documentation/withheld.json", manifest_bytes,
                                                 "application/json", now)]),
                FileGroup("Schemas", schema_refs),
                FileGroup(f"Representations/{REP}", [_ref(f"mets-{REP}", f"representations/{REP}/METS.xml",
                                                          rep_bytes, "application/xml", now)],
                          profile.content_information_type)],
        representations=[(REP, f"representations/{REP}/METS.xml")], profile_url=CSIP_PROFILE_URL)
    _add_bytes(tar, objid, "METS.xml", _xml(root_mets, "METS.xml"), now)


__all__ = ["export"]
