"""From SIP to AIP: what the slutarkiv keeps.

The AIP is the SIP's content unchanged (every data file keeps its bytes and checksum), with
the package declared an AIP (``csip:OAISPACKAGETYPE="AIP"``, the CSIP profile), the complete
PREMIS history from the catalogue (extraction, quality, decisions, ingest, transfer) and the
slutarkiv's receipt (kvittens) as administrative metadata, both listed with checksums in the
package METS.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from pathlib import Path

from lxml import etree

from transforms import __version__
from transforms.common.errors import PackageError
from transforms.common.xmltools import (
    NS_CSIP,
    NS_METS,
    NS_RECEIPT,
    NS_XLINK,
    SCHEMA_DIR,
    parse_bytes,
    schema_errors,
)
from transforms.packaging import premis
from transforms.packaging.fgs import SOFTWARE_NAME

M = f"{{{NS_METS}}}"
CSIP = f"{{{NS_CSIP}}}"
XLINK = f"{{{NS_XLINK}}}"
CSIP_PROFILE_URL = "https://earkcsip.dilcis.eu/profile/E-ARK-CSIP.xml"
HISTORY = "metadata/preservation/premis-history.xml"
RECEIPT = "metadata/preservation/kvittens.xml"


def _ts(value: dt.datetime) -> str:
    return value.replace(microsecond=0, tzinfo=None).isoformat()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def receipt_xml(*, package_id: str, system: str, record_class: str, received_from: str, source_sha256: str,
                received_at: dt.datetime, files: int, size: int, records: int, basis: str) -> bytes:
    R = f"{{{NS_RECEIPT}}}"
    root = etree.Element(R + "receipt", nsmap={None: NS_RECEIPT}, kind="transfer")
    for tag, value in (("package", package_id), ("system", system), ("recordClass", record_class),
                       ("receivedFrom", received_from), ("sourceSha256", source_sha256),
                       ("receivedBy", f"{SOFTWARE_NAME} {__version__}, slutarkiv"), ("receivedAt", _ts(received_at)),
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
    for a package that was taken in as delivered with the supplier's own PREMIS."""
    history = premis.build_premis(objects, events,
                                  [premis.Agent("arkivflode", SOFTWARE_NAME, "software", __version__)],
                                  representations=["representations/rep1"])
    errors = schema_errors(history)
    if errors:
        raise PackageError(f"PREMIS history does not validate: {errors[0]}")
    history_bytes = etree.tostring(history, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    (root / HISTORY).write_bytes(history_bytes)
    (root / RECEIPT).write_bytes(receipt)
    schema = "arkivflode-receipt-1.xsd"
    if not (root / "schemas" / schema).exists():
        (root / "schemas" / schema).write_bytes((SCHEMA_DIR / schema).read_bytes())

    changed: dict[str, bytes] = {}
    for rep_mets in sorted(root.glob("representations/*/METS.xml")):
        tree = parse_bytes(rep_mets.read_bytes(), name=rep_mets.name)
        _declare_aip(tree.getroot(), now)
        data = etree.tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True)
        rep_mets.write_bytes(data)
        changed[rep_mets.relative_to(root).as_posix()] = data

    tree = parse_bytes((root / "METS.xml").read_bytes(), name="METS.xml")
    mets = tree.getroot()
    _declare_aip(mets, now)
    for f in mets.iter(M + "file"):
        href = f.find(M + "FLocat").get(XLINK + "href")
        if href in changed:
            f.set("SIZE", str(len(changed[href])))
            f.set("CHECKSUM", _sha256(changed[href]))
            f.set("CHECKSUMTYPE", "SHA-256")
    amd = mets.find(M + "amdSec")
    if amd is None:
        amd = etree.Element(M + "amdSec")
        (mets.find(M + "fileSec") if mets.find(M + "fileSec") is not None else mets.find(M + "structMap")) \
            .addprevious(amd)
    for sec_id, href, data, mdtype, other in (
            ("digiprov-premis-history", HISTORY, history_bytes, "PREMIS", None),
            ("digiprov-kvittens", RECEIPT, receipt, "OTHER", "ARKIVFLODE-KVITTENS")):
        sec = etree.SubElement(amd, M + "digiprovMD", ID=sec_id, STATUS="CURRENT")
        attrs = {"LOCTYPE": "URL", XLINK + "type": "simple", XLINK + "href": href, "MDTYPE": mdtype,
                 "MIMETYPE": "application/xml", "SIZE": str(len(data)), "CREATED": _ts(now),
                 "CHECKSUM": _sha256(data), "CHECKSUMTYPE": "SHA-256"}
        if other:
            attrs["OTHERMDTYPE"] = other
        etree.SubElement(sec, M + "mdRef", attrs)
    div = mets.find(f"{M}structMap[@LABEL='CSIP']/{M}div/{M}div[@LABEL='Metadata']")
    if div is not None:
        div.set("ADMID", " ".join(filter(None, [div.get("ADMID"), "digiprov-premis-history", "digiprov-kvittens"])))
    schemas = mets.find(f"{M}fileSec/{M}fileGrp[@USE='Schemas']")
    listed = {fl.get(XLINK + "href") for fl in schemas.iter(M + "FLocat")} if schemas is not None else set()
    if schemas is not None and f"schemas/{schema}" not in listed:
        data = (root / "schemas" / schema).read_bytes()
        f = etree.SubElement(schemas, M + "file", ID="schema-receipt", MIMETYPE="application/xml",
                             SIZE=str(len(data)), CREATED=_ts(now), CHECKSUM=_sha256(data), CHECKSUMTYPE="SHA-256")
        etree.SubElement(f, M + "FLocat", {"LOCTYPE": "URL", XLINK + "type": "simple",
                                           XLINK + "href": f"schemas/{schema}"})
    errors = schema_errors(tree)
    if errors:
        raise PackageError(f"AIP METS does not validate: {errors[0]}")
    (root / "METS.xml").write_bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def _declare_aip(mets: etree._Element, now: dt.datetime) -> None:
    mets.set("PROFILE", CSIP_PROFILE_URL)
    hdr = mets.find(M + "metsHdr")
    hdr.set(CSIP + "OAISPACKAGETYPE", "AIP")
    hdr.set("LASTMODDATE", _ts(now))
