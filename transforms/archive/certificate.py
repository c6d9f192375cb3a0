"""Disposal certificates (gallringsbevis): what was disposed of is itself preserved.

The certificate is XML (our schema) and a readable HTML page, packed as a CSIP package of its
own and kept in the slutarkiv as an OCFL object: the record of a disposal must outlive the
records it disposed of.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa
from lxml import etree

from transforms import __version__
from transforms.archive import ocfl
from transforms.catalogue import Catalogue, DisposalList, Record, Tombstone, utcnow
from transforms.common.errors import PackageError
from transforms.common.xmltools import NS_DISPOSAL, SCHEMA_DIR, schema_errors, schemas_used
from transforms.packaging import premis
from transforms.packaging.aip import CSIP_PROFILE_URL
from transforms.packaging.fgs import SOFTWARE_NAME, Profile
from transforms.packaging.mets import FileGroup, FileRef, MetadataRef, build_mets

CERTIFICATE = Profile(name="gallringsbevis", content_category="Textual works – Digital",
                      content_information_type="OTHER",
                      other_content_information_type="Arkivflode-Disposal-Certificate-1.0")
NAMESPACE = uuid.UUID("0b6f1c52-3a4e-5f0e-9d1c-67616c6c7269")


def _ref(file_id: str, href: str, data: bytes, mime: str, now: dt.datetime) -> FileRef:
    return FileRef(file_id, href, mime, len(data), hashlib.sha256(data).hexdigest(), now)


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
<p><strong>Verkställd / Executed:</strong> {e(now.isoformat())} av {e(SOFTWARE_NAME)} {e(__version__)}</p>
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
    with tempfile.TemporaryDirectory(prefix="arkiv-cert-") as tmp:
        root = Path(tmp) / object_id
        data = root / "representations" / "rep1" / "data"
        data.mkdir(parents=True)
        (data / "gallringsbevis.xml").write_bytes(xml)
        (data / "gallringsbevis.html").write_bytes(page)
        software = premis.Agent("arkivflode", SOFTWARE_NAME, "software", __version__)
        files = [_ref("file-xml", "data/gallringsbevis.xml", xml, "application/xml", now),
                 _ref("file-html", "data/gallringsbevis.html", page, "text/html", now)]
        rep_premis = premis.build_premis(
            [premis.FileObject(f"representations/rep1/{f.href}", f.sha256, f.size, f.mimetype) for f in files],
            [premis.Event(f"{list_id}-certificate", "creation", now, "success",
                          detail=f"disposal certificate for {list_id}: {len(disposed)} packages disposed of",
                          agents=(("arkivflode", "executing program"),))],
            [software], schema_prefix="../../../../")
        rep_premis_bytes = etree.tostring(rep_premis, xml_declaration=True, encoding="UTF-8", pretty_print=True)
        (root / "representations/rep1/metadata/preservation").mkdir(parents=True)
        (root / "representations/rep1/metadata/preservation/premis.xml").write_bytes(rep_premis_bytes)
        rep = build_mets(objid="rep1", label=f"Gallringsbevis {list_id} (rep1)", profile=CERTIFICATE,
                         package_type="AIP", created=now, agents=[CERTIFICATE.software_agent()],
                         metadata=[MetadataRef("digiprovMD", _ref("digiprov-rep1", "metadata/preservation/premis.xml",
                                                                  rep_premis_bytes, "application/xml", now), "PREMIS")],
                         groups=[FileGroup("Representations/rep1/data", files, "OTHER",
                                           CERTIFICATE.other_content_information_type)],
                         schema_prefix="../../", profile_url=CSIP_PROFILE_URL)
        rep_bytes = etree.tostring(rep, xml_declaration=True, encoding="UTF-8", pretty_print=True)
        (root / "representations/rep1/METS.xml").write_bytes(rep_bytes)
        pkg_premis = premis.build_premis([], [premis.Event(f"{list_id}-disposal", "deletion", now, "success",
                                                           detail=json.dumps({"list": list_id, "disposed": disposed}),
                                                           agents=(("arkivflode", "executing program"),))],
                                         [software], representations=["representations/rep1"])
        pkg_premis_bytes = etree.tostring(pkg_premis, xml_declaration=True, encoding="UTF-8", pretty_print=True)
        (root / "metadata/preservation").mkdir(parents=True)
        (root / "metadata/preservation/premis.xml").write_bytes(pkg_premis_bytes)
        (root / "schemas").mkdir()
        schema_refs = []
        used = set(schemas_used(rep)) | set(schemas_used(pkg_premis)) | {"arkivflode-disposal-1.xsd", "xlink.xsd",
                                                                         "mets.xsd", "DILCISExtensionMETS.xsd"}
        for i, name in enumerate(sorted(used)):
            blob = (SCHEMA_DIR / name).read_bytes()
            (root / "schemas" / name).write_bytes(blob)
            schema_refs.append(_ref(f"schema-{i}", f"schemas/{name}", blob, "application/xml", now))
        (root / "documentation").mkdir()
        readme = (f"Gallringsbevis {list_id}. See representations/rep1/data/gallringsbevis.html.\n").encode()
        (root / "documentation" / "README.txt").write_bytes(readme)
        mets = build_mets(
            objid=object_id, label=f"Gallringsbevis {list_id}", profile=CERTIFICATE, package_type="AIP", created=now,
            agents=[CERTIFICATE.software_agent()],
            metadata=[MetadataRef("digiprovMD", _ref("digiprov-premis", "metadata/preservation/premis.xml",
                                                     pkg_premis_bytes, "application/xml", now), "PREMIS")],
            groups=[FileGroup("Documentation", [_ref("doc-readme", "documentation/README.txt", readme, "text/plain",
                                                     now)]),
                    FileGroup("Schemas", schema_refs),
                    FileGroup("Representations/rep1", [_ref("mets-rep1", "representations/rep1/METS.xml", rep_bytes,
                                                            "application/xml", now)], "OTHER",
                              CERTIFICATE.other_content_information_type)],
            representations=[("rep1", "representations/rep1/METS.xml")], profile_url=CSIP_PROFILE_URL)
        errors = schema_errors(mets) + schema_errors(rep)
        if errors:
            raise PackageError(f"certificate package METS does not validate: {errors[0]}")
        (root / "METS.xml").write_bytes(etree.tostring(mets, xml_declaration=True, encoding="UTF-8",
                                                       pretty_print=True))
        ocfl.write_object(slutarkiv_root, object_id, root, message=f"gallringsbevis {list_id}",
                          user=f"{SOFTWARE_NAME} {__version__}", created=now)
    with cat.session() as s:
        cat.add_event(s, type="creation", outcome="success", agent=f"{SOFTWARE_NAME} {__version__}",
                      detail=f"disposal certificate {list_id} archived in the slutarkiv as {object_id}")
    return object_id
