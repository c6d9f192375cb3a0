"""The receipt (kvittens) a business system fetches before it removes archived records from its database.

A receipt is issued only for a package that the catalogue has recorded as stored and validated
in the mellanarkiv, and only after reading the stored package again: its SHA-256 must match the
catalogue and every file must match the checksum its METS declares. A record is listed only when
it is in the catalogue, described in the package, and every one of its documents verified — so
the receipt never names a record that is not verifiably stored. When the package itself does
not verify, no receipt is issued at all.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

import sqlalchemy as sa
from lxml import etree

from transforms import SOFTWARE_LABEL, SOFTWARE_NAME
from transforms.access import packages as pk
from transforms.access.index import parse_erms
from transforms.catalogue import Catalogue, Record, utcnow
from transforms.common.errors import StorageError
from transforms.common.xmltools import SCHEMA_DIR, parse_bytes

RECEIPT_VERSION = "arkivflode-kvittens-1"
NS_KVITTENS = "https://arkivflode.se/xml/kvittens/1"


class ReceiptRefused(StorageError):
    """No receipt: the package is not (or no longer) verifiably stored."""


def _record_digest(docs: list[dict]) -> str:
    """One checksum per record: SHA-256 over its documents' ``path sha256`` lines, sorted."""
    lines = sorted(f"{d['path']} {d['sha256']}\n" for d in docs)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def _transfer(cat: Catalogue, package_id: str) -> dict | None:
    """The catalogue's record of a package's transfer to the slutarkiv and of the receipt written into its AIP."""
    events = cat.events(package_id=package_id)
    moved = next((e for e in reversed(events) if e.type == "transfer" and e.outcome == "success"), None)
    if moved is None:
        return None
    digest = next((m[1] for e in reversed(events) if e.type == "receipt" and e.agent.startswith(SOFTWARE_NAME)
                   and (m := re.search(r"kvittens \S+ \(SHA-256 ([0-9a-f]{64})\)", e.detail))), None)
    return {"transferred_at": moved.time.isoformat(), "aip_receipt_sha256": digest}


def _scan_slutarkiv(pkg, slutarkiv) -> pk.Scan | None:
    """The AIP as the slutarkiv holds it — a folder or a bucket — every file re-read against its inventory
    (None: no slutarkiv given)."""
    from transforms.archive import ocfl

    object_id = pkg.location.removeprefix("ocfl:")
    if slutarkiv is None:
        return None
    root = Path(slutarkiv) if isinstance(slutarkiv, str) else slutarkiv
    try:
        problems = ocfl.verify_object(root, object_id)
    except (OSError, StorageError) as exc:
        raise ReceiptRefused(f"package {pkg.id} cannot be read from the slutarkiv: {exc}") from None
    if problems:
        raise ReceiptRefused(f"package {pkg.id}: the slutarkiv's object does not verify ({len(problems)} "
                             "problem(s)); no receipt")
    return pk.scan_ocfl(root, object_id)


def build_receipt(cat: Catalogue, store, package_id: str, *, issued_to: str, slutarkiv=None) -> dict:
    """Verify the stored package again and list exactly the records it verifiably holds.

    A package transferred to the slutarkiv keeps its receipt: with ``slutarkiv`` (its storage
    root, a folder or a bucket) the AIP is re-read and verified like a SIP in the mellanarkiv; without it the
    receipt is issued from the catalogue's record of the verified transfer (its records, and
    the SHA-256 of the receipt written into the AIP), with no per-document checksums.
    """
    pkg = cat.package(package_id)
    if pkg is None:
        raise ReceiptRefused(f"no package {package_id} in the catalogue")
    transferred = pkg.status == "transferred" and pkg.storage == "slutarkiv" and pkg.location.startswith("ocfl:")
    if not transferred and (pkg.status != "stored" or pkg.storage != "mellanarkiv"):
        raise ReceiptRefused(f"package {package_id} is {pkg.status} ({pkg.storage}); receipts are issued for "
                             "packages verified in the mellanarkiv or transferred to the slutarkiv")
    events = {(e.type, e.outcome) for e in cat.events(package_id=package_id)}
    if not {("validation", "success"), ("fixity check", "success")} <= events:
        raise ReceiptRefused(f"package {package_id} has no successful validation and fixity check in the catalogue")
    transfer = _transfer(cat, package_id) if transferred else None
    if transferred and transfer is None:
        raise ReceiptRefused(f"package {package_id} has no successful transfer in the catalogue")
    if transferred:
        scan = _scan_slutarkiv(pkg, slutarkiv)
    else:
        try:
            with store.open(pkg.location) as f:
                scan = pk.scan_tar(f)
        except (OSError, StorageError) as exc:
            raise ReceiptRefused(f"package {package_id} cannot be read from the mellanarkiv: {exc}") from None
        if scan.sha256 != pkg.sha256 or scan.size != pkg.size:
            raise ReceiptRefused(f"package {package_id}: the stored copy no longer matches its catalogued SHA-256")
    bad = set(scan.unverified()) if scan is not None else set()
    if bad:
        raise ReceiptRefused(f"package {package_id}: {len(bad)} file(s) do not match their METS checksums")
    erms_at = pk.erms_path(scan) if scan is not None else None
    parsed = parse_erms(scan.metadata[erms_at]) if erms_at and erms_at in scan.metadata else None
    with cat.session() as s:
        records = list(s.scalars(sa.select(Record).where(Record.package_id == package_id).order_by(Record.id)))
    listed, left_out = [], []
    for r in records:
        docs: list[dict] = []
        ok = True
        if parsed is not None:
            p = parsed.get(r.source_id)
            if p is None or p.reference != r.reference:
                ok = False
            else:
                for d in p.documents:
                    if d.path is None:
                        continue  # registered without a file (an approved deviation): nothing to verify
                    m = scan.members.get(d.path)
                    if m is None:
                        ok = False
                        break
                    docs.append({"document_id": d.document_id, "path": d.path, "size": m.size, "sha256": m.sha256})
        if not ok:
            left_out.append(r.source_id)
            continue
        listed.append({"source_id": r.source_id, "reference": r.reference, "opened": r.opened, "closed": r.closed,
                       "documents": docs, "sha256": _record_digest(docs)})
    return {
        "receipt": RECEIPT_VERSION, "package_id": package_id, "system": pkg.system,
        "record_class": pkg.record_class, "period": pkg.period, "storage": pkg.storage,
        "package_sha256": pkg.sha256, "package_size": pkg.size, "verified_at": utcnow().isoformat(),
        "issued_by": SOFTWARE_LABEL, "issued_to": issued_to, "record_count": len(listed),
        "records": listed, "not_listed": left_out,
        "meaning": f"Every record listed is stored in the {pkg.storage} and its documents match their checksums: "
                   "the business system may remove exactly these records. Records under not_listed must be kept.",
    } | ({"transfer": transfer | {"object": pkg.location.removeprefix("ocfl:"),
                                  "verified": "re-read now" if scan is not None else "at transfer"}}
         if transfer else {})


def issue(cat: Catalogue, store, package_id: str, *, issued_to: str, agent: str, slutarkiv=None) -> dict:
    """Build a receipt and leave an event on the package saying who received it."""
    receipt = build_receipt(cat, store, package_id, issued_to=issued_to, slutarkiv=slutarkiv)
    how = ("package re-read: SHA-256 matches, every file matches its METS checksum"
           if receipt.get("transfer", {}).get("verified") != "at transfer" else
           "from the catalogue's record of the verified transfer to the slutarkiv")
    with cat.session() as s:
        cat.add_event(s, type="receipt", outcome="success", agent=agent, package_id=package_id,
                      detail=f"kvittens for {receipt['record_count']} record(s) issued to {issued_to} ({how})")
    return receipt


def receipt_text(receipt: dict) -> str:
    """The receipt for a person, in Swedish and English: what the business system may remove, and why."""
    r = receipt
    where_sv = {"mellanarkiv": "mellanarkivet", "slutarkiv": "slutarkivet"}.get(r["storage"], r["storage"])
    lines = [f"Kvittens / Receipt — paket / package {r['package_id']}",
             f"  System: {r['system']}  Period: {r['period']}  Informationsklass / Record class: {r['record_class']}",
             f"  Förvaras i / Stored in: {where_sv} / {r['storage']}",
             f"  Kontrollerad / Verified: {r['verified_at']} av / by {r['issued_by']}; utfärdad till / issued to: "
             f"{r['issued_to']}",
             f"  Paketets SHA-256 / Package SHA-256: {r['package_sha256']} ({r['package_size']:,} bytes)"]
    if r.get("transfer"):
        t = r["transfer"]
        lines.append(f"  Överförd till slutarkivet / Transferred to the slutarkiv: {t['transferred_at']} (OCFL "
                     f"{t['object']}; " + ("kontrollerad nu / re-read now" if t["verified"] == "re-read now" else
                                           "kontrollerad vid överföringen / verified at transfer")
                     + (f"; AIP-kvittens SHA-256 {t['aip_receipt_sha256']}" if t.get("aip_receipt_sha256") else "")
                     + ")")
    lines += [f"  {r['record_count']} ärende(n)/poster som verksamhetssystemet får ta bort / record(s) the business "
              "system may remove:"]
    for rec in r["records"]:
        lines.append(f"    {rec['reference']:<20} ({len(rec['documents'])} dokument / documents)")
    if r["not_listed"]:
        lines.append(f"  {len(r['not_listed'])} post(er) får INTE tas bort / record(s) must be KEPT: "
                     + ", ".join(str(x) for x in r["not_listed"]))
    lines.append("  Varje listad post finns i arkivet och dess dokument stämmer med sina kontrollsummor; "
                 "poster som inte listas ska behållas.")
    lines.append(f"  {r['meaning']}")
    return "\n".join(lines)


SCHEMA = "arkivflode-kvittens-1.xsd"


@functools.cache
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(parse_bytes((SCHEMA_DIR / SCHEMA).read_bytes(), name=SCHEMA))


def receipt_xml(receipt: dict) -> bytes:
    """The receipt as XML (schema ``transforms/schemas/arkivflode-kvittens-1.xsd``), validated before it is returned."""
    K = f"{{{NS_KVITTENS}}}"
    root = etree.Element(K + "kvittens", nsmap={None: NS_KVITTENS}, version=RECEIPT_VERSION)
    for tag, key in (("package", "package_id"), ("system", "system"), ("recordClass", "record_class"),
                     ("period", "period"), ("storage", "storage"), ("packageSha256", "package_sha256"),
                     ("packageSize", "package_size"), ("verifiedAt", "verified_at"), ("issuedBy", "issued_by"),
                     ("issuedTo", "issued_to")):
        etree.SubElement(root, K + tag).text = str(receipt[key])
    if receipt.get("transfer"):
        t = receipt["transfer"]
        el = etree.SubElement(root, K + "transfer", object=t["object"], transferredAt=t["transferred_at"],
                              verified="now" if t["verified"] == "re-read now" else "atTransfer")
        if t.get("aip_receipt_sha256"):
            el.set("aipReceiptSha256", t["aip_receipt_sha256"])
    records = etree.SubElement(root, K + "records", count=str(receipt["record_count"]))
    for rec in receipt["records"]:
        r = etree.SubElement(records, K + "record", sourceId=str(rec["source_id"]), reference=str(rec["reference"]),
                             sha256=rec["sha256"])
        for d in rec["documents"]:
            etree.SubElement(r, K + "document", id=str(d["document_id"]), path=d["path"], size=str(d["size"]),
                             sha256=d["sha256"])
    for x in receipt["not_listed"]:
        etree.SubElement(root, K + "notListed", sourceId=str(x))
    etree.SubElement(root, K + "meaning").text = receipt["meaning"]
    errors = [] if _schema().validate(root) else [f"line {e.line}: {e.message}" for e in _schema().error_log]
    if errors:
        raise ReceiptRefused(f"receipt for {receipt['package_id']} does not validate against its schema: {errors[0]}")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
