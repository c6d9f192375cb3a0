"""Disposal certificates (gallringsbevis): what was disposed of is itself preserved.

The certificate is XML (our schema) and a readable HTML page, packed as a CSIP package of its
own (by :class:`~transforms.packaging.csip.PackageWriter`, as a folder) and kept in the slutarkiv
as an OCFL object: the record of a disposal must outlive the records it disposed of. Its PREMIS
names the archivist who approved the disposal list as the one who authorised the disposal.
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
from transforms.catalogue import Catalogue, DisposalList, Record, Tombstone, utcnow
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
    D = f"{{{NS_DISPOSAL}}}"
    root = etree.Element(D + "disposalCertificate", nsmap={None: NS_DISPOSAL}, list=dl.id)
    for tag, value in (("approvedBy", dl.decided_by or ""), ("approvedAt", dl.decided_at.isoformat()),
                       ("justification", dl.justification or ""), ("executedAt", now.isoformat())):
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


def certificate_html(dl: DisposalList, stones: list[Tombstone], skipped: list[tuple[str, str]],
                     now: dt.datetime) -> bytes:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(t.system)}</td><td>{e(t.period)}</td><td>{e(t.record_class)}</td><td>{t.record_count}</td>"
        f"<td><code>{e(t.package_id)}</code></td><td><code>{e(t.sha256)}</code></td><td>{e(t.rule)}</td></tr>"
        for t in stones)
    kept = "".join(f"<li><code>{e(pid)}</code>: {e(why)}</li>" for pid, why in skipped)
    page = f"""<!DOCTYPE html>
<html lang="sv"><head><meta charset="utf-8"><title>Gallringsbevis {e(dl.id)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #999;
padding:4px 8px;text-align:left}}code{{font-size:90%}}</style></head><body>
<h1>Gallringsbevis / Disposal certificate</h1>
<p><strong>Lista / List:</strong> {e(dl.id)} &nbsp; <strong>Beräknad per / As of:</strong> {e(dl.as_of)}</p>
<p><strong>Godkänd av / Approved by:</strong> {e(dl.decided_by or "")}, {e(dl.decided_at.isoformat())}<br>
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
    disposal = premis.Event(f"{list_id}-disposal", "deletion", now, "success",
                            detail=json.dumps({"list": list_id, "disposed": disposed}),
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
