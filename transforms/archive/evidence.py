"""Transfers and disposals, and the documents that prove them, where people look: ``arkiv transfers``,
``arkiv receipt PACKAGE --transfer``, ``arkiv gallring list|show`` and ``arkiv certificate LIST``.

The transfer receipt (``metadata/preservation/kvittens.xml``, schema ``arkivflode-receipt-1.xsd``)
is read from the AIP in the slutarkiv and checked against the SHA-256 the catalogue recorded at
the transfer; the disposal certificate (gallringsbevis, schema ``arkivflode-disposal-1.xsd``) from
its own object there. Both are shown in Swedish and English, or as the XML they are. They hold
identifiers, references, counts and checksums, never record content.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from transforms.archive import ocfl
from transforms.catalogue import Catalogue, DisposalList, Tombstone
from transforms.common.errors import StorageError
from transforms.common.xmltools import NS_DISPOSAL, NS_RECEIPT, parse_bytes, schema_errors
from transforms.packaging.aip import RECEIPT

CERTIFICATE_XML = "representations/rep1/data/gallringsbevis.xml"


def object_file(root, object_id: str, rel: str) -> bytes:
    """A file of an OCFL object's head version (``rel`` from the package root), checked against its SHA-512."""
    inv = ocfl.read_inventory(root, object_id)
    for digest, logicals in inv["versions"][inv["head"]]["state"].items():
        if any(lg == rel or lg.split("/", 1)[-1] == rel for lg in logicals):
            content = inv["manifest"][digest][0]
            if isinstance(root, (str, Path)):
                data = (ocfl.object_path(Path(root), object_id) / content).read_bytes()
            else:
                with root.open(f"{object_id}/{content}") as f:
                    data = f.read()
            if hashlib.sha512(data).hexdigest() != digest:
                raise StorageError(f"slutarkiv: {object_id}/{content} does not match its inventory digest")
            return data
    raise StorageError(f"slutarkiv: object {object_id} has no file {rel}")


def transfers(cat: Catalogue, system: str | None = None) -> list[dict]:
    """Every package transferred to the slutarkiv, with when, its object and its receipt's checksum."""
    out = []
    for p in cat.packages(system):
        if p.storage != "slutarkiv" or not p.location.startswith("ocfl:"):
            continue
        events = cat.events(package_id=p.id)
        moved = next((e for e in reversed(events) if e.type == "transfer" and e.outcome == "success"), None)
        digest = next((m[1] for e in reversed(events) if e.type == "receipt"
                       and (m := re.search(r"kvittens \S+ \(SHA-256 ([0-9a-f]{64})\)", e.detail))), None)
        out.append({"package_id": p.id, "system": p.system, "period": p.period, "record_class": p.record_class,
                    "records": p.record_count, "object": p.location.removeprefix("ocfl:"),
                    "transferred_at": moved.time.isoformat() if moved else None, "receipt_sha256": digest})
    return out


def transfer_receipt(cat: Catalogue, slutarkiv, package_id: str) -> tuple[bytes, dict]:
    """The AIP's transfer receipt as stored, and its fields; refused when it is not the one recorded at transfer."""
    rows = [t for t in transfers(cat) if t["package_id"] == package_id]
    if not rows:
        raise StorageError(f"package {package_id} has not been transferred to the slutarkiv (see `arkiv transfers`)")
    t = rows[0]
    data = object_file(slutarkiv, t["object"], RECEIPT)
    if t["receipt_sha256"] and hashlib.sha256(data).hexdigest() != t["receipt_sha256"]:
        raise StorageError(f"package {package_id}: the AIP's receipt does not match the SHA-256 the catalogue "
                           "recorded at the transfer")
    root = parse_bytes(data, name="kvittens.xml").getroot()
    errors = schema_errors(root)
    if errors:
        raise StorageError(f"package {package_id}: the AIP's receipt does not validate: {errors[0]}")
    fields = {el.tag.split("}")[1]: el.text or "" for el in root if el.tag.startswith(f"{{{NS_RECEIPT}}}")}
    return data, fields | {"kind": root.get("kind", "")}


def transfer_receipt_text(fields: dict) -> str:
    f = fields
    return "\n".join([
        f"Kvittens på överföring / Transfer receipt — paket / package {f['package']}",
        f"  System: {f['system']}  Informationsklass / Record class: {f['recordClass']}",
        f"  Mottagen från / Received from: {f['receivedFrom']} (SHA-256 {f['sourceSha256']})",
        f"  Mottagen av / Received by: {f['receivedBy']}, {f['receivedAt']}",
        f"  {f['files']} filer / files, {int(f['bytes']):,} bytes, {f['records']} poster / records",
        f"  Grund / Basis: {f['basis']}",
        "  Slutarkivet har tagit emot paketet och kontrollerat varje fil mot dess kontrollsumma. / The slutarkiv "
        "received the package and checked every file against its checksum.",
    ])


def disposals(cat: Catalogue) -> list[dict]:
    """Every disposal list with its decision, and for executed ones what was disposed of: records and rules."""
    out = []
    with cat.session() as s:
        lists = list(s.query(DisposalList).order_by(DisposalList.created_at))
        stones = list(s.query(Tombstone).order_by(Tombstone.package_id))
    for d in lists:
        mine = [t for t in stones if t.disposal_list == d.id]
        out.append({"list": d.id, "status": d.status, "as_of": d.as_of, "packages": len(json.loads(d.items)),
                    "decided_by": d.decided_by, "decided_at": d.decided_at.isoformat() if d.decided_at else None,
                    "certificate": d.certificate,
                    "disposed": [{"package_id": t.package_id, "system": t.system, "period": t.period,
                                  "record_class": t.record_class, "records": t.record_count, "rule": t.rule,
                                  "disposed_at": t.disposed_at.isoformat()} for t in mine]})
    return out


def certificate(cat: Catalogue, slutarkiv, list_id: str) -> tuple[bytes, dict]:
    """The disposal certificate as archived in the slutarkiv, and its fields."""
    with cat.session() as s:
        d = s.get(DisposalList, list_id)
        object_id = d.certificate if d is not None else None
        status = d.status if d is not None else None
    if d is None:
        raise StorageError(f"no disposal list {list_id} (see `arkiv gallring list`)")
    if not object_id:
        raise StorageError(f"disposal list {list_id} is {status}: a certificate is written when it is executed")
    data = object_file(slutarkiv, object_id, CERTIFICATE_XML)
    root = parse_bytes(data, name="gallringsbevis.xml").getroot()
    errors = schema_errors(root)
    if errors:
        raise StorageError(f"disposal certificate {list_id} does not validate: {errors[0]}")
    D = f"{{{NS_DISPOSAL}}}"
    fields = {"list": root.get("list"), "object": object_id,
              **{tag: root.findtext(D + tag) or "" for tag in ("approvedBy", "approvedById", "approvedAt",
                                                                "justification", "reviewedBy", "reviewedById",
                                                                "reviewedAt", "reviewNote", "executedAt")},
              "disposed": [dict(el.attrib) | {"references": len(el.findall(D + "reference"))}
                           for el in root.findall(D + "disposed")],
              "not_disposed": [(el.get("package"), el.text or "") for el in root.findall(D + "notDisposed")]}
    return data, fields


def _ident(identifier: str) -> str:
    return f" [{identifier}]" if identifier else ""


def certificate_text(f: dict) -> str:
    lines = [f"Gallringsbevis / Disposal certificate — lista / list {f['list']} (slutarkivet, OCFL {f['object']})",
             *([f"  Granskad av / Reviewed by: {f['reviewedBy']}{_ident(f['reviewedById'])}, {f['reviewedAt']}"
                + (f" — {f['reviewNote']}" if f["reviewNote"] else "")] if f.get("reviewedBy") else []),
             f"  Godkänd av / Approved by: {f['approvedBy']}{_ident(f.get('approvedById', ''))}, {f['approvedAt']}",
             f"  Motivering / Justification: {f['justification']}",
             f"  Verkställd / Executed: {f['executedAt']}",
             f"  Gallrat / Disposed of: {len(f['disposed'])} paket / packages, "
             f"{sum(int(x['records']) for x in f['disposed'])} poster / records"]
    for x in f["disposed"]:
        lines.append(f"    {x['system']} {x['period']} {x['recordClass']}: {x['records']} poster / records, paket / "
                     f"package {x['package']}, regel / rule: {x['rule']}")
    for pid, why in f["not_disposed"]:
        lines.append(f"  Inte gallrat / Not disposed of: {pid}: {why}")
    return "\n".join(lines)
