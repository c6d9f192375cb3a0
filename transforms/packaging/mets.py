"""METS documents for CSIP/SIP packages: the root METS and each representation's METS."""

from __future__ import annotations

import datetime as dt
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
    NotPlainText,
    PrettyStream,
    escape,
    indent,
)
from transforms.packaging.fgs import CSIP_VERSION, SIP_PROFILE_URL, MetsAgent, Profile

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


def _ts(value: dt.datetime) -> str:
    return value.replace(microsecond=0).isoformat()


def _file_attrs(f: FileRef) -> dict[str, str]:
    return {"MIMETYPE": f.mimetype, "SIZE": str(f.size), "CREATED": _ts(f.created),
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


def build_mets(
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
) -> etree._ElementTree:
    """A CSIP METS document.

    ``representations`` are ``(name, href of the representation METS)``: each becomes a
    ``Representations/<name>`` structMap division with an ``mptr`` (CSIP105–112).
    ``schema_prefix`` is the path from this METS to the package root (``../../`` for a
    representation METS) so that ``xsi:schemaLocation`` points at the package's own XSDs.
    """
    root = _root(objid, label, profile, schema_prefix, profile_url)
    _header(root, profile, package_type, created, agents, alt_record_ids)
    for _ in _metadata_sections(root, metadata):
        pass  # each section is built in place
    file_sec = _file_sec(root, objid)
    for g in groups:
        grp = _file_grp(file_sec, g)
        for f in g.files:
            _file(grp, f)
    _struct_map(root, objid, metadata, groups, representations)
    return root.getroottree()


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
    """Write the bytes of ``tostring(build_mets(...), xml_declaration=True, encoding="UTF-8", pretty_print=True)``.

    Only the fileSec grows with the package: its ``mets:file`` entries are written one at a
    time, and each group's ``files`` is read once (the structMap names groups, not files, so
    ``groups`` is read twice and stays a sequence). Each entry is written as text by
    :func:`_file_text`, without building elements; one with a value only lxml can judge (a
    control character, which it refuses, or a value that is not a ``str``) is built by
    :func:`_file` instead. Returns the bundled schema files the document uses, as
    :func:`xmltools.schemas_used` gives them for the tree.
    """
    root = _root(objid, label, profile, schema_prefix, profile_url)
    with PrettyStream(out, root) as stream:
        stream.add(_header(root, profile, package_type, created, agents, alt_record_ids))
        for sec in _metadata_sections(root, metadata):
            stream.add(sec)
        with stream.element(_file_sec(root, objid)) as file_sec:
            for g in groups:
                with stream.element(_file_grp(file_sec, g)) as grp:
                    for f in g.files:
                        try:
                            piece = _file_text(stream.depth, f)
                        except NotPlainText:
                            stream.add(_file(grp, f))
                        else:
                            stream.add_text(piece, _FILE_NAMESPACES)
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
    hdr = etree.SubElement(root, M + "metsHdr", {"CREATEDATE": _ts(created), "LASTMODDATE": _ts(created),
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
            sec = etree.SubElement(root, M + "dmdSec", ID=md.file.id, CREATED=_ts(md.file.created), STATUS="CURRENT")
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


def _file(grp: etree._Element, f: FileRef) -> etree._Element:
    fel = etree.SubElement(grp, M + "file", ID=f.id, **_file_attrs(f))
    etree.SubElement(fel, M + "FLocat", _link(f.href))
    return fel


#: The namespaces a file entry uses: its elements (mets:) and FLocat's xlink:type and xlink:href.
#: The text path writes them with the prefixes the root declares (see _root).
_FILE_NAMESPACES = (NS_METS, NS_XLINK)


def _file_text(depth: int, f: FileRef) -> bytes:
    """The bytes :func:`_file` gives inside the whole document, ``depth`` levels below its root.

    Attribute for attribute and in the same order as :func:`_file` (the tests compare them),
    with the prefixes the root declares; raises :class:`xmltools.NotPlainText` where only the
    element path can decide: a character outside XML's ``Char``, or a value that is not a
    ``str`` (lxml refuses None and numbers, and takes bytes). The shape is fixed (one ``FLocat``
    in each ``file``), so the entry is one formatted string rather than a :class:`xmltools.Fragment`.
    """
    size, created = str(f.size), _ts(f.created)  # first, as in _file_attrs: their errors are _file's
    if not type(f.id) is type(f.href) is type(f.mimetype) is type(f.sha256) is type(created) is str:
        raise NotPlainText("a file entry has a value that is not a str")
    at = indent(depth)
    return (f'{at}<mets:file ID="{escape(f.id, attribute=True)}" MIMETYPE="{escape(f.mimetype, attribute=True)}" '
            f'SIZE="{escape(size, attribute=True)}" CREATED="{escape(created, attribute=True)}" '
            f'CHECKSUM="{escape(f.sha256, attribute=True)}" CHECKSUMTYPE="SHA-256">\n'
            f'{indent(depth + 1)}<mets:FLocat LOCTYPE="URL" xlink:type="simple" '  # as _link
            f'xlink:href="{escape(f.href, attribute=True)}"/>\n'
            f'{at}</mets:file>\n').encode()


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


__all__ = ["CSIP_VERSION", "FileGroup", "FileRef", "MetadataRef", "build_mets", "write_mets"]
