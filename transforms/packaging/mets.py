"""METS documents for CSIP/SIP packages: the root METS and each representation's METS.

Each element has one serialiser: a ``fileSec`` entry, which grows with the package, is formatted as
text (:func:`_file_text`); the header, metadata sections, file groups and structMap are built with
lxml and streamed by :class:`~transforms.common.xmltools.PrettyStream` with the same indentation.
:func:`write_mets` writes a document; :func:`build_mets` is that document parsed, and
:func:`file_element` one entry parsed, for a caller that amends a METS it read.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from lxml import etree

from transforms.common.xmltools import (
    NS_CSIP,
    NS_METS,
    NS_SIP,
    NS_XLINK,
    NS_XSI,
    PrettyStream,
    as_is,
    escape,
    indent,
    parse_bytes,
    safe_parser,
)
from transforms.packaging.fgs import CSIP_VERSION, SIP_PROFILE_URL, MetsAgent, Profile
from transforms.packaging.plain import add_entries

M = f"{{{NS_METS}}}"
CSIP = f"{{{NS_CSIP}}}"
XLINK = f"{{{NS_XLINK}}}"

_SCHEMA_LOCATIONS = (
    f"{NS_METS} {{p}}schemas/mets.xsd {NS_XLINK} {{p}}schemas/xlink.xsd "
    f"{NS_CSIP} {{p}}schemas/DILCISExtensionMETS.xsd {NS_SIP} {{p}}schemas/DILCISExtensionSIPMETS.xsd"
)


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file in the package as METS lists it (path relative to the METS document's folder)."""

    id: str
    href: str
    mimetype: str
    size: int
    sha256: str
    created: dt.datetime


@dataclass(frozen=True)
class FileGroup:
    """A ``fileGrp``; :func:`write_mets` reads ``files`` once, so it may be a generator there."""

    use: str
    files: Iterable[FileRef]
    content_information_type: str | None = None
    other_content_information_type: str | None = None


@dataclass(frozen=True)
class MetadataRef:
    """A dmdSec or digiprovMD pointing at a metadata file."""

    section: str  # "dmdSec" | "digiprovMD"
    file: FileRef
    mdtype: str
    other_mdtype: str | None = None


def timestamp(value: dt.datetime) -> str:
    """A date as METS gives it: to the second, with its offset when it has one."""
    return value.replace(microsecond=0).isoformat()


def _file_attrs(f: FileRef) -> dict[str, str]:
    return {"MIMETYPE": f.mimetype, "SIZE": str(f.size), "CREATED": timestamp(f.created),
            "CHECKSUM": f.sha256, "CHECKSUMTYPE": "SHA-256"}


def _link(href: str) -> dict[str, str]:
    # CSIP22–24, 36–38, 76–79, 110–112: relative URL paths, simple links.
    return {"LOCTYPE": "URL", XLINK + "type": "simple", XLINK + "href": href}


def _agent(hdr: etree._Element, a: MetsAgent) -> None:
    attrs = {"ROLE": a.role, "TYPE": a.type}
    if a.other_type:
        attrs["OTHERTYPE"] = a.other_type
    el = etree.SubElement(hdr, M + "agent", attrs)
    etree.SubElement(el, M + "name").text = a.name
    if a.note:
        note = etree.SubElement(el, M + "note")
        note.text = a.note
        if a.note_type:
            note.set(CSIP + "NOTETYPE", a.note_type)


def build_mets(**kwargs) -> etree._ElementTree:
    """The document :func:`write_mets` writes with the same arguments, parsed."""
    out = io.BytesIO()
    write_mets(out, **kwargs)
    return parse_bytes(out.getvalue(), name="METS.xml")


def write_mets(
    out: BinaryIO,
    *,
    objid: str,
    label: str,
    profile: Profile,
    package_type: str,
    created: dt.datetime,
    agents: Sequence[MetsAgent],
    alt_record_ids: Sequence[tuple[str, str]] = (),
    metadata: Sequence[MetadataRef] = (),
    groups: Sequence[FileGroup] = (),
    representations: Sequence[tuple[str, str]] = (),
    schema_prefix: str = "",
    profile_url: str = SIP_PROFILE_URL,
) -> list[str]:
    """A CSIP METS document, as ``tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True)``.

    ``representations`` are ``(name, href of the representation METS)``: each becomes a
    ``Representations/<name>`` structMap division with an ``mptr`` (CSIP105–112).
    ``schema_prefix`` is the path from this METS to the package root (``../../`` for a
    representation METS) so that ``xsi:schemaLocation`` points at the package's own XSDs.

    Only the fileSec grows with the package: its ``mets:file`` entries are written one at a
    time, and each group's ``files`` is read once (the structMap names groups, not files, so
    ``groups`` is read twice and stays a sequence). A value XML cannot carry raises
    :class:`~transforms.common.xmltools.NotXmlText`. Returns the bundled schema files the
    document uses, as :func:`xmltools.schemas_used` gives them for its tree.
    """
    root = _root(objid, label, profile, schema_prefix, profile_url)
    with PrettyStream(out, root) as stream:
        stream.add(_header(root, profile, package_type, created, agents, alt_record_ids))
        for sec in _metadata_sections(root, metadata):
            stream.add(sec)
        with stream.element(_file_sec(root, objid)) as file_sec:
            for g in groups:
                with stream.element(_file_grp(file_sec, g)):
                    depth = stream.depth
                    add_entries(stream, (_file_text(depth, f) for f in g.files), _FILE_NAMESPACES)
        stream.add(_struct_map(root, objid, metadata, groups, representations))
    return stream.schemas


def _root(objid: str, label: str, profile: Profile, schema_prefix: str, profile_url: str) -> etree._Element:
    nsmap = {"mets": NS_METS, "csip": NS_CSIP, "sip": NS_SIP, "xlink": NS_XLINK, "xsi": NS_XSI}
    root = etree.Element(M + "mets", nsmap=nsmap)
    root.set(f"{{{NS_XSI}}}schemaLocation", _SCHEMA_LOCATIONS.format(p=schema_prefix))
    root.set("OBJID", objid)
    root.set("LABEL", label)
    root.set("TYPE", profile.content_category)
    root.set(CSIP + "CONTENTINFORMATIONTYPE", profile.content_information_type)
    if profile.other_content_information_type:
        root.set(CSIP + "OTHERCONTENTINFORMATIONTYPE", profile.other_content_information_type)
    root.set("PROFILE", profile_url)
    return root


def _header(root: etree._Element, profile: Profile, package_type: str, created: dt.datetime,
            agents: Sequence[MetsAgent], alt_record_ids: Sequence[tuple[str, str]]) -> etree._Element:
    hdr = etree.SubElement(root, M + "metsHdr", {"CREATEDATE": timestamp(created),
                                                 "LASTMODDATE": timestamp(created),
                                                 "RECORDSTATUS": profile.record_status})
    hdr.set(CSIP + "OAISPACKAGETYPE", package_type)
    for a in agents:
        _agent(hdr, a)
    for kind, value in alt_record_ids:
        etree.SubElement(hdr, M + "altRecordID", TYPE=kind).text = value
    return hdr


def _metadata_sections(root: etree._Element, metadata: Sequence[MetadataRef]) -> Iterator[etree._Element]:
    """The dmdSecs, then one amdSec with the digiprovMDs, each built when asked for."""
    for md in metadata:
        if md.section == "dmdSec":
            sec = etree.SubElement(root, M + "dmdSec", ID=md.file.id, CREATED=timestamp(md.file.created),
                                   STATUS="CURRENT")
            _md_ref(sec, md)
            yield sec
        elif md.section != "digiprovMD":
            raise ValueError(f"metadata section {md.section!r} is neither dmdSec nor digiprovMD")
    digiprov = [md for md in metadata if md.section == "digiprovMD"]
    if digiprov:
        amd = etree.SubElement(root, M + "amdSec")
        for md in digiprov:
            _md_ref(etree.SubElement(amd, M + "digiprovMD", ID=md.file.id, STATUS="CURRENT"), md)
        yield amd


def _md_ref(sec: etree._Element, md: MetadataRef) -> None:
    attrs = {**_link(md.file.href), "MDTYPE": md.mdtype, **_file_attrs(md.file)}
    if md.other_mdtype:
        attrs["OTHERMDTYPE"] = md.other_mdtype
    etree.SubElement(sec, M + "mdRef", attrs)


def _file_sec(root: etree._Element, objid: str) -> etree._Element:
    return etree.SubElement(root, M + "fileSec", ID=f"{_idpart(objid)}-filesec")


def _grp_id(use: str) -> str:
    return "grp-" + _idpart(use)


def _file_grp(file_sec: etree._Element, g: FileGroup) -> etree._Element:
    grp = etree.SubElement(file_sec, M + "fileGrp", ID=_grp_id(g.use), USE=g.use)
    if g.content_information_type:
        grp.set(CSIP + "CONTENTINFORMATIONTYPE", g.content_information_type)
    if g.other_content_information_type:
        grp.set(CSIP + "OTHERCONTENTINFORMATIONTYPE", g.other_content_information_type)
    return grp


#: The namespaces a file entry uses: its elements (mets:) and FLocat's xlink:type and xlink:href.
#: The entry is written with the prefixes the root declares (see _root).
_FILE_NAMESPACES = (NS_METS, NS_XLINK)


def _file_text(depth: int, f: FileRef) -> bytes:
    """A ``fileSec`` entry (``mets:file`` with its ``FLocat``) as the pretty-printed document has it,
    ``depth`` levels below its root, with the prefixes the root declares. The shape is fixed, so the
    entry is one formatted string (built as elements it cost several times more: bench/README.md)."""
    at = indent(depth)
    values = (str(f.id), str(f.mimetype), str(f.size), timestamp(f.created), str(f.sha256), str(f.href))
    if not as_is(values):  # its values one by one only when one needs it (xmltools.as_is)
        values = tuple(escape(v, attribute=True) for v in values)
    file_id, mimetype, size, created, sha256, href = values
    return (f'{at}<mets:file ID="{file_id}" MIMETYPE="{mimetype}" SIZE="{size}" CREATED="{created}" '
            f'CHECKSUM="{sha256}" CHECKSUMTYPE="SHA-256">\n'
            f'{indent(depth + 1)}<mets:FLocat LOCTYPE="URL" xlink:type="simple" '  # as _link
            f'xlink:href="{href}"/>\n'
            f'{at}</mets:file>\n').encode()


def file_element(f: FileRef) -> etree._Element:
    """A ``fileSec`` entry as an element, parsed from :func:`_file_text`: for amending a METS read from a package."""
    text = (f'<mets:fileGrp xmlns:mets="{NS_METS}" xmlns:xlink="{NS_XLINK}">\n'.encode()
            + _file_text(1, f) + b"</mets:fileGrp>")
    return etree.fromstring(text, safe_parser())[0]


def metadata_element(md: MetadataRef) -> etree._Element:
    """A ``digiprovMD`` or ``dmdSec`` with its ``mdRef``: for amending a METS read from a package."""
    holder = etree.Element(M + "mets", nsmap={"mets": NS_METS, "xlink": NS_XLINK})
    return next(_metadata_sections(holder, [md])) if md.section == "dmdSec" else \
        next(_metadata_sections(holder, [md]))[0]


def _struct_map(root: etree._Element, objid: str, metadata: Sequence[MetadataRef], groups: Sequence[FileGroup],
                representations: Sequence[tuple[str, str]]) -> etree._Element:
    """The CSIP structMap: metadata, one division per file group, representations by their METS."""
    smap = etree.SubElement(root, M + "structMap", ID="structmap-csip", TYPE="PHYSICAL", LABEL="CSIP")
    main = etree.SubElement(smap, M + "div", ID="div-root", LABEL=objid)
    dmd_ids = [md.file.id for md in metadata if md.section == "dmdSec"]
    amd_ids = [md.file.id for md in metadata if md.section == "digiprovMD"]
    if dmd_ids or amd_ids:
        md_div = etree.SubElement(main, M + "div", ID="div-metadata", LABEL="Metadata")
        if dmd_ids:
            md_div.set("DMDID", " ".join(dmd_ids))
        if amd_ids:
            md_div.set("ADMID", " ".join(amd_ids))
    uses = {g.use for g in groups}
    rep_uses = {f"Representations/{name}" for name, _ in representations}
    for g in groups:
        if g.use in rep_uses:
            continue  # listed below with its METS
        div = etree.SubElement(main, M + "div", ID="div-" + _idpart(g.use), LABEL=g.use)
        etree.SubElement(div, M + "fptr", FILEID=_grp_id(g.use))
    for name, href in representations:
        use = f"Representations/{name}"
        div = etree.SubElement(main, M + "div", ID="div-" + _idpart(use), LABEL=use)
        mptr = etree.SubElement(div, M + "mptr", _link(href))  # METS orders mptr before fptr
        if use in uses:
            mptr.set(XLINK + "title", _grp_id(use))  # CSIP108: names the representation's fileGrp
            etree.SubElement(div, M + "fptr", FILEID=_grp_id(use))
    return smap


def _idpart(text: str) -> str:
    """An xml:ID-safe fragment (NCName) from a label or identifier."""
    out = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "-" for ch in text)
    return out if out[:1].isalpha() or out[:1] == "_" else f"x{out}"


__all__ = ["CSIP_VERSION", "FileGroup", "FileRef", "MetadataRef", "build_mets", "file_element", "metadata_element",
           "write_mets"]
