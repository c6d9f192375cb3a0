"""PREMIS 3 preservation metadata: the files, what happened to them, and who did it.

Each element has one serialiser: a file object and an event's object link, which grow with the
package, are formatted as text (:func:`_file_object_text`, :func:`_object_link_text`); the few
others (representations, events, agents) are built with lxml and streamed by
:class:`~transforms.common.xmltools.PrettyStream`, which gives them the same indentation.
:func:`write_premis` writes a document; :func:`build_premis` is that document parsed, for a caller
that wants a tree. Who the agents are is :mod:`transforms.packaging.agents`'s to say.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from lxml import etree

from transforms import SOFTWARE_NAME
from transforms.common.xmltools import (
    NS_PREMIS,
    NS_XSI,
    PrettyStream,
    as_is,
    escape,
    indent,
    leaf_text,
    parse_bytes,
)
from transforms.packaging.plain import add_entries

P = f"{{{NS_PREMIS}}}"


@dataclass(frozen=True)
class Event:
    """A PREMIS event; ``type`` uses the Library of Congress event-type vocabulary wording."""

    identifier: str
    type: str
    time: dt.datetime
    outcome: str  # "success" | "failure" | "warning"
    detail: str = ""
    outcome_note: str = ""
    agents: tuple[tuple[str, str], ...] = ()  # (agent identifier, role)
    objects: tuple[str | tuple[str, str], ...] = ()  # identifier, or (identifier, role: source | outcome)


@dataclass(frozen=True)
class Agent:
    identifier: str
    name: str
    type: str  # "software" | "organization" | "person"
    version: str | None = None
    identifier_type: str = "local"
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class FileObject:
    identifier: str  # the file's path in the package
    sha256: str
    size: int
    format_name: str
    original_name: str | None = None
    puid: str | None = None  # PRONOM identifier (formatRegistry PRONOM)
    format_version: str = ""
    format_note: str = ""  # how the format was identified: tool, version, method
    creating_application: tuple[str, str] | None = None  # (name, version) of the converter
    derived_from: str | None = None  # the identifier of the original this file was migrated from


def _sub(parent: etree._Element, tag: str, text: object = None) -> etree._Element:
    el = etree.SubElement(parent, P + tag)
    if text is not None:
        el.text = str(text)
    return el


def _ident(parent: etree._Element, prefix: str, id_type: str, value: str) -> None:
    box = _sub(parent, f"{prefix}Identifier")
    _sub(box, f"{prefix}IdentifierType", id_type)
    _sub(box, f"{prefix}IdentifierValue", value)


def build_premis(objects: Iterable[FileObject], events: Iterable[Event], agents: Iterable[Agent],
                 *, representations: Iterable[str] = (), schema_prefix: str = "../../") -> etree._ElementTree:
    """The document :func:`write_premis` writes, parsed: for small documents a caller edits or inspects."""
    out = io.BytesIO()
    write_premis(out, objects, events, agents, representations=representations, schema_prefix=schema_prefix)
    return parse_bytes(out.getvalue(), name="premis.xml")


def write_premis(out: BinaryIO, objects: Iterable[FileObject], events: Iterable[Event], agents: Iterable[Agent],
                 *, representations: Iterable[str] = (), schema_prefix: str = "../../") -> list[str]:
    """A PREMIS 3 document: representation objects, file objects with SHA-256 fixity, events, agents.

    Written as ``tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True)`` would
    write it, one file object or object link at a time (``objects`` is read once, so it may be a
    generator). ``schema_prefix`` leads from the document's folder to the package root, whose
    ``schemas/`` holds the XSD. A value XML cannot carry raises
    :class:`~transforms.common.xmltools.NotXmlText`. Returns the bundled schema files the document uses.
    """
    root = _root(schema_prefix)
    with PrettyStream(out, root) as stream:
        for rep in representations:
            stream.add(_representation(root, rep))
        depth = stream.depth
        add_entries(stream, (_file_object_text(depth, obj) for obj in objects), _FILE_OBJECT_NAMESPACES)
        for ev in events:
            # An event may link every file of the package (format identification, creation).
            with stream.element(_event(root, ev)):
                depth = stream.depth
                add_entries(stream, (_object_link_text(depth, link) for link in ev.objects), (NS_PREMIS,))
        for ag in agents:
            stream.add(_agent(root, ag))
    return stream.schemas


def _root(schema_prefix: str) -> etree._Element:
    root = etree.Element(P + "premis", nsmap={"premis": NS_PREMIS, "xsi": NS_XSI}, version="3.0")
    root.set(f"{{{NS_XSI}}}schemaLocation", f"{NS_PREMIS} {schema_prefix}schemas/premis-v3-0.xsd")
    return root


def _representation(root: etree._Element, rep: str) -> etree._Element:
    # A representation object: what the package-level events (creation) act upon.
    el = _sub(root, "object")
    el.set(f"{{{NS_XSI}}}type", "premis:representation")
    _ident(el, "object", "local", rep)
    return el


#: who computed the digests: the software, escaped once
_ORIGINATOR = escape(SOFTWARE_NAME)
#: The namespaces a file object's elements (premis:) and attributes (xsi:type) use. The text
#: path writes them with the prefixes the root declares (see _root).
_FILE_OBJECT_NAMESPACES = (NS_PREMIS, NS_XSI)


def _file_object_text(depth: int, obj: FileObject) -> bytes:
    """A file object as the pretty-printed document has it, ``depth`` levels below its root.

    One formatted string per part of fixed shape, as :func:`transforms.packaging.mets._file_text`
    (built as elements, or with a :class:`xmltools.Fragment`, an object cost several times more:
    bench/README.md); its values are escaped one by one only when they need it
    (:func:`xmltools.as_is`). Written only here: :func:`build_premis` parses what this writes.
    """
    i0, i1, i2, i3, i4 = (indent(depth + k) for k in range(5))
    application = obj.creating_application
    values = [str(v) for v in (obj.identifier, obj.sha256, obj.size, obj.format_name, obj.format_version, obj.puid,
                               obj.format_note, obj.original_name, obj.derived_from, *(application or ())) if v]
    text = str if as_is(values) else escape
    parts = [
        f'{i0}<premis:object xsi:type="premis:file">\n'
        f"{i1}<premis:objectIdentifier>\n"
        f"{i2}<premis:objectIdentifierType>local</premis:objectIdentifierType>\n"
        f"{_leaf(i2, 'premis:objectIdentifierValue', obj.identifier, text)}"
        f"{i1}</premis:objectIdentifier>\n"
        f"{i1}<premis:objectCharacteristics>\n"
        f"{i2}<premis:compositionLevel>0</premis:compositionLevel>\n"
        f"{i2}<premis:fixity>\n"
        f"{i3}<premis:messageDigestAlgorithm>SHA-256</premis:messageDigestAlgorithm>\n"
        f"{_leaf(i3, 'premis:messageDigest', obj.sha256, text)}"
        f"{i3}<premis:messageDigestOriginator>{_ORIGINATOR}</premis:messageDigestOriginator>\n"
        f"{i2}</premis:fixity>\n"
        f"{_leaf(i2, 'premis:size', obj.size, text)}"
        f"{i2}<premis:format>\n{i3}<premis:formatDesignation>\n"
        f"{_leaf(i4, 'premis:formatName', obj.format_name, text)}",
    ]
    if obj.format_version:
        parts.append(f"{i4}<premis:formatVersion>{text(str(obj.format_version))}</premis:formatVersion>\n")
    parts.append(f"{i3}</premis:formatDesignation>\n")
    if obj.puid:
        parts.append(f"{i3}<premis:formatRegistry>\n{i4}<premis:formatRegistryName>PRONOM</premis:formatRegistryName>\n"
                     f"{i4}<premis:formatRegistryKey>{text(str(obj.puid))}</premis:formatRegistryKey>\n"
                     f"{i4}<premis:formatRegistryRole>specification</premis:formatRegistryRole>\n"
                     f"{i3}</premis:formatRegistry>\n")
    if obj.format_note:
        parts.append(f"{i3}<premis:formatNote>{text(str(obj.format_note))}</premis:formatNote>\n")
    parts.append(f"{i2}</premis:format>\n")
    if application:
        parts.append(f"{i2}<premis:creatingApplication>\n"
                     f"{_leaf(i3, 'premis:creatingApplicationName', application[0], text)}"
                     f"{_leaf(i3, 'premis:creatingApplicationVersion', application[1], text)}"
                     f"{i2}</premis:creatingApplication>\n")
    parts.append(f"{i1}</premis:objectCharacteristics>\n")
    if obj.original_name:
        parts.append(f"{i1}<premis:originalName>{text(str(obj.original_name))}</premis:originalName>\n")
    if obj.derived_from:
        parts.append(f"{i1}<premis:relationship>\n"
                     f"{i2}<premis:relationshipType>derivation</premis:relationshipType>\n"
                     f"{i2}<premis:relationshipSubType>has source</premis:relationshipSubType>\n"
                     f"{i2}<premis:relatedObjectIdentifier>\n"
                     f"{i3}<premis:relatedObjectIdentifierType>local</premis:relatedObjectIdentifierType>\n"
                     f"{i3}<premis:relatedObjectIdentifierValue>{text(str(obj.derived_from))}"
                     "</premis:relatedObjectIdentifierValue>\n"
                     f"{i2}</premis:relatedObjectIdentifier>\n{i1}</premis:relationship>\n")
    parts.append(f"{i0}</premis:object>\n")
    return "".join(parts).encode()


def _leaf(at: str, tag: str, value: object, text) -> str:
    """An element with ``value`` as its text (``text``: how values are escaped), ``<tag/>`` for None, as
    :func:`xmltools.leaf_text` writes it."""
    return f"{at}<{tag}/>\n" if value is None else f"{at}<{tag}>{text(str(value))}</{tag}>\n"


def _event(root: etree._Element, ev: Event) -> etree._Element:
    """The event up to its agent links; the object links, which come last, are added by the caller."""
    el = _sub(root, "event")
    _ident(el, "event", "local", ev.identifier)
    _sub(el, "eventType", ev.type)
    _sub(el, "eventDateTime", ev.time.isoformat(timespec="seconds"))
    if ev.detail:
        _sub(_sub(el, "eventDetailInformation"), "eventDetail", ev.detail)
    out = _sub(el, "eventOutcomeInformation")
    _sub(out, "eventOutcome", ev.outcome)
    if ev.outcome_note:
        _sub(_sub(out, "eventOutcomeDetail"), "eventOutcomeDetailNote", ev.outcome_note)
    for agent_id, role in ev.agents:
        link = _sub(el, "linkingAgentIdentifier")
        _sub(link, "linkingAgentIdentifierType", "local")
        _sub(link, "linkingAgentIdentifierValue", agent_id)
        _sub(link, "linkingAgentRole", role)
    return el


def _object_link_text(depth: int, obj: str | tuple[str, str]) -> bytes:
    """An event's link to an object (``identifier`` or ``(identifier, role)``), ``depth`` levels below the root."""
    obj_id, obj_role = (obj, None) if isinstance(obj, str) else obj
    at, inner = indent(depth), indent(depth + 1)
    return "".join((
        f"{at}<premis:linkingObjectIdentifier>\n{inner}<premis:linkingObjectIdentifierType>local"
        "</premis:linkingObjectIdentifierType>\n",
        leaf_text(inner, "premis:linkingObjectIdentifierValue", obj_id),
        leaf_text(inner, "premis:linkingObjectRole", obj_role) if obj_role else "",
        f"{at}</premis:linkingObjectIdentifier>\n")).encode()


def _agent(root: etree._Element, ag: Agent) -> etree._Element:
    el = _sub(root, "agent")
    _ident(el, "agent", ag.identifier_type, ag.identifier)
    _sub(el, "agentName", ag.name)
    _sub(el, "agentType", ag.type)
    if ag.version:
        _sub(el, "agentVersion", ag.version)
    for note in ag.notes:
        _sub(el, "agentNote", note)
    return el
