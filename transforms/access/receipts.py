"""The receipt (kvittens) a business system fetches before it removes archived records from its database.

A receipt is issued only for a package that the catalogue has recorded as stored and validated
in the mellanarkiv, and only after reading the stored package again: its SHA-256 must match the
catalogue and every file must match the checksum its METS declares. A record is listed only when
it is in the catalogue, described in the package, and every one of its documents verified — so
the receipt never names a record that is not verifiably stored. When the package itself does
not verify, no receipt is issued at all.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from .. import __version__
from ..catalogue import Catalogue, Record, utcnow
from ..errors import StorageError
from . import packages as pk
from .index import parse_erms

RECEIPT_VERSION = "arkivflode-kvittens-1"


class ReceiptRefused(StorageError):
    """No receipt: the package is not (or no longer) verifiably stored."""


def _record_digest(docs: list[dict]) -> str:
    """One checksum per record: SHA-256 over its documents' ``path sha256`` lines, sorted."""
    lines = sorted(f"{d['path']} {d['sha256']}\n" for d in docs)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def build_receipt(cat: Catalogue, store, package_id: str, *, issued_to: str) -> dict:
    """Verify the stored package again and list exactly the records it verifiably holds."""
    pkg = cat.package(package_id)
    if pkg is None:
        raise ReceiptRefused(f"no package {package_id} in the catalogue")
    if pkg.status != "stored" or pkg.storage != "mellanarkiv":
        raise ReceiptRefused(f"package {package_id} is {pkg.status} ({pkg.storage}); receipts are issued for "
                             "packages verified in the mellanarkiv")
    events = {(e.type, e.outcome) for e in cat.events(package_id=package_id)}
    if not {("validation", "success"), ("fixity check", "success")} <= events:
        raise ReceiptRefused(f"package {package_id} has no successful validation and fixity check in the catalogue")
    try:
        with store.open(pkg.location) as f:
            scan = pk.scan_tar(f)
    except (OSError, StorageError) as exc:
        raise ReceiptRefused(f"package {package_id} cannot be read from the mellanarkiv: {exc}") from None
    if scan.sha256 != pkg.sha256 or scan.size != pkg.size:
        raise ReceiptRefused(f"package {package_id}: the stored copy no longer matches its catalogued SHA-256")
    bad = set(scan.unverified())
    if bad:
        raise ReceiptRefused(f"package {package_id}: {len(bad)} file(s) do not match their METS checksums")
    erms_at = pk.erms_path(scan)
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
        "record_class": pkg.record_class, "period": pkg.period, "storage": "mellanarkiv",
        "package_sha256": pkg.sha256, "package_size": pkg.size, "verified_at": utcnow().isoformat(),
        "issued_by": f"Arkivflöde {__version__}", "issued_to": issued_to, "record_count": len(listed),
        "records": listed, "not_listed": left_out,
        "meaning": "Every record listed is stored in the mellanarkiv and its documents match their checksums: "
                   "the business system may remove exactly these records. Records under not_listed must be kept.",
    }


def issue(cat: Catalogue, store, package_id: str, *, issued_to: str, agent: str) -> dict:
    """Build a receipt and leave an event on the package saying who received it."""
    receipt = build_receipt(cat, store, package_id, issued_to=issued_to)
    with cat.session() as s:
        cat.add_event(s, type="receipt", outcome="success", agent=agent, package_id=package_id,
                      detail=f"kvittens for {receipt['record_count']} record(s) issued to {issued_to} "
                             f"(package re-read: SHA-256 matches, every file matches its METS checksum)")
    return receipt
