"""From SIP to AIP: what the slutarkiv keeps.

The AIP is the SIP's content unchanged (every data file keeps its bytes and checksum), with
the package declared an AIP (``csip:OAISPACKAGETYPE="AIP"``, the CSIP profile), the complete
PREMIS history from the catalogue (extraction, quality, decisions, ingest, transfer) and the
slutarkiv's receipt (kvittens) as administrative metadata, both listed with checksums in the
package METS (:func:`transforms.packaging.csip.amend`).
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from pathlib import Path

from lxml import etree

from transforms.common.errors import PackageError
from transforms.common.xmltools import NS_RECEIPT, SCHEMA_FILES, parse_bytes, schema_errors
from transforms.packaging import premis
from transforms.packaging.agents import SOFTWARE_LABEL, agents_of, software
from transforms.packaging.csip import amend
from transforms.packaging.mets import timestamp

HISTORY = "metadata/preservation/premis-history.xml"
RECEIPT = "metadata/preservation/kvittens.xml"


def receipt_xml(*, package_id: str, system: str, record_class: str, received_from: str, source_sha256: str,
                received_at: dt.datetime, files: int, size: int, records: int, basis: str) -> bytes:
    R = f"{{{NS_RECEIPT}}}"
    root = etree.Element(R + "receipt", nsmap={None: NS_RECEIPT}, kind="transfer")
    for tag, value in (("package", package_id), ("system", system), ("recordClass", record_class),
                       ("receivedFrom", received_from), ("sourceSha256", source_sha256),
                       ("receivedBy", f"{SOFTWARE_LABEL}, slutarkiv"),
                       ("receivedAt", timestamp(received_at.replace(tzinfo=None))),
                       ("files", str(files)), ("bytes", str(size)), ("records", str(records)), ("basis", basis)):
        etree.SubElement(root, R + tag).text = value
    errors = schema_errors(root)
    if errors:
        raise PackageError(f"receipt for {package_id} does not validate: {errors[0]}")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def make_aip(root: Path, *, events: Sequence[premis.Event], receipt: bytes, now: dt.datetime,
             objects: Sequence[premis.FileObject] = ()) -> None:
    """Turn the extracted SIP folder ``root`` into the AIP, in place.

    ``objects``: the package's files as the catalogue identified them (PRONOM); they go into the
    PREMIS history with their fixity, so the format of every file is in the AIP itself, also
    for a package that was taken in as delivered with the supplier's own PREMIS. The history's
    agents are the software and every person an event names (an archivist who decided)."""
    out = io.BytesIO()
    premis.write_premis(out, objects, events, agents_of(events, [software()]),
                        representations=["representations/rep1"])
    history = out.getvalue()
    errors = schema_errors(parse_bytes(history, name="premis-history.xml"))
    if errors:
        raise PackageError(f"PREMIS history does not validate: {errors[0]}")
    amend(root, package_type="AIP", created=now,
          metadata=[(HISTORY, history, "digiprov-premis-history", "PREMIS", None),
                    (RECEIPT, receipt, "digiprov-kvittens", "OTHER", "ARKIVFLODE-KVITTENS")],
          schemas=[SCHEMA_FILES[NS_RECEIPT]])
