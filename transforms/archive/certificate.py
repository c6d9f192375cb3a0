"""Disposal certificates (gallringsbevis): what was disposed of is itself preserved.

The certificate is XML (our schema) and a readable HTML page, packed as a CSIP package of its
own (by :class:`~transforms.packaging.csip.PackageWriter`, as a folder) and kept in the slutarkiv
as an OCFL object: the record of a disposal must outlive the records it disposed of. It names
both archivists who signed the disposal list: the one who reviewed it (name, identifier, when,
their note) and the one who approved it (name, identifier, when, the justification). The
identifier is the identity provider's subject, or ``unauthenticated name:…`` for a name typed
without a provider. Its PREMIS links the approver as the one who authorised the disposal and the
reviewer as its validator.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa
from lxml import etree

from transforms.archive import ocfl
from transforms.catalogue import UNAUTHENTICATED, Catalogue, DisposalList, Record, Tombstone, utcnow
from transforms.common.errors import PackageError
from transforms.common.xmltools import NS_DISPOSAL, SCHEMA_FILES, schema_errors
from transforms.packaging import premis
from transforms.packaging.agents import SOFTWARE_LABEL, VALIDATOR, agents_of, by_person, by_software, software
from transforms.packaging.csip import PackageWriter
from transforms.packaging.fgs import Profile

CERTIFICATE = Profile(name="gallringsbevis", content_category="Textual works – Digital",
                      content_information_type="OTHER",
                      other_content_information_type="Arkivflode-Disposal-Certificate-1.0")
NAMESPACE = uuid.UUID("0b6f1c52-3a4e-5f0e-9d1c-67616c6c7269")
DISPOSAL_SCHEMA = SCHEMA_FILES[NS_DISPOSAL]


def certificate_xml(dl: DisposalList, stones: list[Tombstone], refs: dict[str, list[str]],
                    skipped: list[tuple[str, str]], now: dt.datetime) -> bytes:
    """The certificate as XML (``arkivflode-disposal-1.xsd``), checked against its schema before it is returned."""
    D = f"{{{NS_DISPOSAL}}}"
    root = etree.Element(D + "disposalCertificate", nsmap={None: NS_DISPOSAL}, list=dl.id)
    fields = [("approvedBy", dl.decided_by or ""), ("approvedById", dl.decided_by_id),
              ("approvedAt", dl.decided_at.isoformat()), ("justification", dl.justification or "")]
    if dl.reviewed_by:
        fields += [("reviewedBy", dl.reviewed_by), ("reviewedById", dl.reviewed_by_id),
                   ("reviewedAt", dl.reviewed_at.isoformat() if dl.reviewed_at else None),
                   ("reviewNote", dl.review_note)]
    fields.append(("executedAt", now.isoformat()))
    for tag, value in fields:
        if value is not None:
            etree.SubElement(root, D + tag).text = value
    for t in stones:
        el = etree.SubElement(root, D + "disposed", package=t.package_id, system=t.system, recordClass=t.record_class,
                              period=t.period, records=str(t.record_count), bytes=str(t.size), sha256=t.sha256,
                              rule=t.rule)
        for r in refs.get(t.package_id, []):
            etree.SubElement(el, D + "reference").text = r
    for pid, why in skipped:
        etree.SubElement(root, D + "notDisposed", package=pid).text = why
    errors = schema_errors(root)
    if errors:
        raise PackageError(f"disposal certificate {dl.id} does not validate: {errors[0]}")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _who(name: str | None, ident: str | None) -> str:
    """A signature as the page shows it: the name, and the identifier it was signed with (escaped)."""
    e = html.escape
    if not name:
        return "–"
    if not ident:
        return e(name)
    if ident.startswith(UNAUTHENTICATED):
        return f"{e(name)} <small>(ej autentiserat namn / unauthenticated name)</small>"
    return f"{e(name)} <small>(id <code>{e(ident)}</code>)</small>"


def certificate_html(dl: DisposalList, stones: list[Tombstone], skipped: list[tuple[str, str]],
                     now: dt.datetime) -> bytes:
    """The certificate as a page in Swedish and English: both signatures, what was disposed of and what was kept."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(t.system)}</td><td>{e(t.period)}</td><td>{e(t.record_class)}</td><td>{t.record_count}</td>"
        f"<td><code>{e(t.package_id)}</code></td><td><code>{e(t.sha256)}</code></td><td>{e(t.rule)}</td></tr>"
        for t in stones)
    kept = "".join(f"<li><code>{e(pid)}</code>: {e(why)}</li>" for pid, why in skipped)
    if dl.reviewed_by:
        reviewed = (f"{_who(dl.reviewed_by, dl.reviewed_by_id)}"
                    + (f", {e(dl.reviewed_at.isoformat())}" if dl.reviewed_at else "")
                    + (f"<br>\n<strong>Granskning / Review note:</strong> {e(dl.review_note)}" if dl.review_note
                       else ""))
    else:
        reviewed = "– <small>(ingen separat granskning / no separate review)</small>"
    page = f"""<!DOCTYPE html>
<html lang="sv"><head><meta charset="utf-8"><title>Gallringsbevis {e(dl.id)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #999;
padding:4px 8px;text-align:left}}code{{font-size:90%}}</style></head><body>
<h1>Gallringsbevis / Disposal certificate</h1>
<p><strong>Lista / List:</strong> {e(dl.id)} &nbsp; <strong>Beräknad per / As of:</strong> {e(dl.as_of)}</p>
<p id="reviewed"><strong>Granskad av / Reviewed by:</strong> {reviewed}</p>
<p id="approved"><strong>Godkänd av / Approved by:</strong> {_who(dl.decided_by, dl.decided_by_id)},
{e(dl.decided_at.isoformat())}<br>
<strong>Motivering / Justification:</strong> {e(dl.justification or "")}</p>
<p><strong>Verkställd / Executed:</strong> {e(now.isoformat())} av {e(SOFTWARE_LABEL)}</p>
<h2>Gallrat / Disposed of ({len(stones)} paket)</h2>
<table><tr><th>System</th><th>Period</th><th>Informationsklass</th><th>Poster</th><th>Paket</th><th>SHA-256</th>
<th>Regel / Rule</th></tr>{rows}</table>
<h2>Inte gallrat / Not disposed of</h2><ul>{kept or "<li>–</li>"}</ul>
</body></html>
"""
    return page.encode("utf-8")


def archive_certificate(cat: Catalogue, slutarkiv_root: Path, list_id: str, disposed: list[str],
                        skipped: list[tuple[str, str]]) -> str:
    """Write the certificate package into the slutarkiv; returns its object id."""
    now = utcnow()
    with cat.session() as s:
        dl = s.get(DisposalList, list_id)
        stones = list(s.scalars(sa.select(Tombstone).where(Tombstone.package_id.in_(disposed))))
        refs: dict[str, list[str]] = {}
        for pid, ref in s.execute(sa.select(Record.package_id, Record.reference)
                                  .where(Record.package_id.in_(disposed))):
            refs.setdefault(pid, []).append(ref)
    object_id = f"uuid-{uuid.uuid5(NAMESPACE, list_id)}"
    if ocfl.object_exists(slutarkiv_root, object_id):  # a folder or a bucket
        return object_id
    xml = certificate_xml(dl, stones, refs, skipped, now)
    page = certificate_html(dl, stones, skipped, now)
    certificate = premis.Event(f"{list_id}-certificate", "creation", now, "success",
                               detail=f"disposal certificate for {list_id}: {len(disposed)} packages disposed of",
                               agents=by_software())
    # the software carried the disposal out; the archivist who approved the list decided it, after
    # the one who reviewed it (when the list had a review of its own)
    deciders = ((by_person(dl.decided_by),) if dl.decided_by else ()) + \
        ((by_person(dl.reviewed_by, VALIDATOR),) if dl.reviewed_by and dl.reviewed_by != dl.decided_by else ())
    signed = {"approved_by": {"name": dl.decided_by, "id": dl.decided_by_id}}
    if dl.reviewed_by:
        signed["reviewed_by"] = {"name": dl.reviewed_by, "id": dl.reviewed_by_id}
    disposal = premis.Event(f"{list_id}-disposal", "deletion", now, "success",
                            detail=json.dumps({"list": list_id, "disposed": disposed, **signed}, ensure_ascii=False),
                            agents=(*by_software(), *deciders))
    with tempfile.TemporaryDirectory(prefix="arkiv-cert-") as tmp, \
            PackageWriter(Path(tmp), object_id, profile=CERTIFICATE, package_type="AIP", created=now,
                          form="folder") as writer:
        files = [(writer.add(f"representations/rep1/data/{name}", data, file_id=file_id, mime=mime), name)
                 for file_id, name, data, mime in (("file-xml", "gallringsbevis.xml", xml, "application/xml"),
                                                   ("file-html", "gallringsbevis.html", page, "text/html"))]
        writer.representation("rep1", [(ref, premis.FileObject(f"representations/rep1/data/{name}", ref.sha256,
                                                                ref.size, ref.mimetype)) for ref, name in files],
                              label=f"Gallringsbevis {list_id} (rep1)", events=[certificate], agents=[software()])
        writer.premis([disposal], agents_of([disposal]), representations=["representations/rep1"])
        writer.add("documentation/README.txt",
                   f"Gallringsbevis {list_id}. See representations/rep1/data/gallringsbevis.html.\n".encode(),
                   file_id="doc-readme", mime="text/plain", group="Documentation")
        writer.add_schemas([DISPOSAL_SCHEMA])
        written = writer.finish(label=f"Gallringsbevis {list_id}")
        ocfl.write_object(slutarkiv_root, object_id, written.path, message=f"gallringsbevis {list_id}",
                          user=SOFTWARE_LABEL, created=now)
    with cat.session() as s:
        cat.add_event(s, type="creation", outcome="success", agent=SOFTWARE_LABEL,
                      detail=f"disposal certificate {list_id} archived in the slutarkiv as {object_id}")
    return object_id
