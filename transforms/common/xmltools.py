"""Safe XML parsing and validation against the bundled official schemas.

Every parser here has entity resolution, DTD loading and network access switched off, so a
hostile package cannot expand entities or make us fetch anything. Schemas are loaded from
``transforms/schemas`` only; imports that name a web address are resolved to the local copy.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from lxml import etree

SCHEMA_DIR = Path(str(resources.files("transforms") / "schemas"))

NS_METS = "http://www.loc.gov/METS/"
NS_XLINK = "http://www.w3.org/1999/xlink"
NS_CSIP = "https://DILCIS.eu/XML/METS/CSIPExtensionMETS"
NS_SIP = "https://DILCIS.eu/XML/METS/SIPExtensionMETS"
NS_PREMIS = "http://www.loc.gov/premis/v3"
NS_ERMS = "https://DILCIS.eu/XML/ERMS"
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"
NS_ARKIV = "https://arkivflode.se/xml/retention/1"
NS_DATADICT = "https://arkivflode.se/xml/datadictionary/1"
NS_RECEIPT = "https://arkivflode.se/xml/receipt/1"
NS_DISPOSAL = "https://arkivflode.se/xml/disposal/1"

#: namespace -> schema file in SCHEMA_DIR (the file written into each package's schemas/)
SCHEMA_FILES: dict[str, str] = {
    NS_METS: "mets.xsd",
    NS_XLINK: "xlink.xsd",
    NS_CSIP: "DILCISExtensionMETS.xsd",
    NS_SIP: "DILCISExtensionSIPMETS.xsd",
    NS_PREMIS: "premis-v3-0.xsd",
    NS_ERMS: "ERMS.xsd",
    NS_ARKIV: "arkivflode-retention-1.xsd",
    NS_DATADICT: "arkivflode-datadictionary-1.xsd",
    NS_RECEIPT: "arkivflode-receipt-1.xsd",
    NS_DISPOSAL: "arkivflode-disposal-1.xsd",
}

#: Limits on any XML document we parse (bytes); a METS of a huge package stays well below.
MAX_XML_BYTES = 512 * 1024 * 1024


#: The protections every parser of ours has: no entities resolved, no DTD loaded, no network,
#: no huge trees (also for the streaming parsers of the builder and the validator).
SAFE_PARSE = dict(resolve_entities=False, load_dtd=False, no_network=True, dtd_validation=False, huge_tree=False)


def safe_parser(**extra) -> etree.XMLParser:
    """An XML parser that never resolves entities, loads DTDs or touches the network."""
    return etree.XMLParser(**SAFE_PARSE, remove_comments=False, **extra)


class NullTarget:
    """A parser target without callbacks: libxml2 parses (and validates) and builds nothing."""

    def close(self):
        return None


class XMLRejected(ValueError):
    """The document is not acceptable XML (malformed, has a DTD/entities, too large)."""


def parse_bytes(data: bytes, *, name: str = "<bytes>") -> etree._ElementTree:
    """Parse ``data`` safely; a DOCTYPE (and so any entity declaration) is refused outright."""
    if len(data) > MAX_XML_BYTES:
        raise XMLRejected(f"{name}: {len(data)} bytes is over the XML limit of {MAX_XML_BYTES}")
    try:
        root = etree.fromstring(data, safe_parser())
    except etree.XMLSyntaxError as exc:
        raise XMLRejected(f"{name}: not well-formed XML: {exc}") from None
    tree = root.getroottree()
    if tree.docinfo.doctype:
        raise XMLRejected(f"{name}: has a DOCTYPE declaration, which packages must not carry")
    return tree


def parse_file(path: Path | str) -> etree._ElementTree:
    """Parse a file safely (see :func:`parse_bytes`)."""
    p = Path(path)
    size = p.stat().st_size
    if size > MAX_XML_BYTES:
        raise XMLRejected(f"{p.name}: {size} bytes is over the XML limit of {MAX_XML_BYTES}")
    return parse_bytes(p.read_bytes(), name=p.name)


class _LocalResolver(etree.Resolver):
    """Maps any schemaLocation (web address or relative) to the bundled copy, by file name."""

    def resolve(self, url, pubid, context):
        name = url.rsplit("/", 1)[-1]
        if name == "xml.xsd":
            return self.resolve_filename(str(SCHEMA_DIR / "xml.xsd"), context)
        local = SCHEMA_DIR / name
        if local.is_file():
            return self.resolve_filename(str(local), context)
        raise XMLRejected(f"schema import {url!r} has no bundled copy; nothing is fetched")


@functools.lru_cache(maxsize=16)
def schema_for(namespace: str) -> etree.XMLSchema:
    """The compiled schema for a root namespace; METS includes the CSIP and SIP extensions."""
    if namespace not in SCHEMA_FILES:
        raise KeyError(f"no bundled schema for namespace {namespace}")
    imports = [namespace]
    if namespace == NS_METS:
        # The extension attributes sit on METS elements under lax anyAttribute: load their
        # schemas too, so that a wrong value in csip:/sip: attributes is a validation error.
        imports = [NS_METS, NS_CSIP, NS_SIP]
    wrapper = ['<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" '
               'targetNamespace="urn:arkivflode:wrapper" elementFormDefault="qualified">']
    for ns in imports:
        wrapper.append(f'<xs:import namespace="{ns}" schemaLocation="{(SCHEMA_DIR / SCHEMA_FILES[ns]).as_uri()}"/>')
    wrapper.append("</xs:schema>")
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    parser.resolvers.add(_LocalResolver())
    doc = etree.fromstring("".join(wrapper).encode(), parser, base_url=(SCHEMA_DIR / "wrapper.xsd").as_uri())
    return etree.XMLSchema(doc)


def schema_errors(tree: etree._ElementTree | etree._Element) -> list[str]:
    """Validate against the bundled schema for the root's namespace; [] when valid."""
    root = tree.getroot() if hasattr(tree, "getroot") else tree
    ns = etree.QName(root).namespace
    try:
        schema = schema_for(ns)
    except KeyError:
        return [f"no bundled schema for root element namespace {ns!r}"]
    if schema.validate(root):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]


def schemas_used(tree: etree._ElementTree | etree._Element) -> list[str]:
    """The bundled schema files a document needs (by the namespaces its elements and attributes use), sorted."""
    root = tree.getroot() if hasattr(tree, "getroot") else tree
    # Collect the distinct tags and attribute names first and split namespaces off those few:
    # a QName per element cost about a tenth of a package build.
    tags: set = set()
    attrs: set[str] = set()
    for el in root.iter():
        tags.add(el.tag)
        attrs.update(el.keys())
    used = {etree.QName(tag).namespace for tag in tags if isinstance(tag, str)}
    used |= {name[1:].split("}")[0] for name in attrs if name.startswith("{")}
    return sorted(SCHEMA_FILES[ns] for ns in used if ns in SCHEMA_FILES)



def file_schema_errors(path: Path | str, namespace: str, *, chunk: int = 1 << 20) -> list[str]:
    """Validate a file against the bundled schema for ``namespace`` while reading it, building no tree.

    As in the validator (``transforms/validation/validator.py``): a validating parser with a target that
    builds nothing, beside a plain one that judges well-formedness (the validating parser does
    not report every well-formedness error). Only a document found wrong is parsed again as a
    tree, for the errors with line numbers that :func:`schema_errors` gives; [] when valid.
    """
    wellformed = etree.XMLParser(target=NullTarget(), **SAFE_PARSE)
    validating = etree.XMLParser(target=NullTarget(), schema=schema_for(namespace), **SAFE_PARSE)
    raised = False
    try:
        with open(path, "rb") as fh:
            while data := fh.read(chunk):
                wellformed.feed(data)
                validating.feed(data)
        wellformed.close()
        validating.close()
    except etree.XMLSyntaxError:
        raised = True  # worded below, from the tree
    # lxml logs a target parser's validation errors instead of raising them.
    logged = [e for p in (wellformed, validating) for e in p.feed_error_log if e.level >= etree.ErrorLevels.ERROR]
    if not raised and not logged:
        return []
    try:
        errors = schema_errors(parse_file(path))
    except XMLRejected as rejected:
        return [str(rejected)]
    return errors or [f"line {e.line}: {e.message}" for e in logged] or ["not well-formed or not valid"]


#: The tag of the placeholder child that shows where in a skeleton the next child's bytes go.
_STREAM_MARKER = "arkivflode-stream-marker"


class _Open:
    """An element of the stream whose children are being written."""

    __slots__ = ("element", "head", "tail", "opening", "closing", "started")

    def __init__(self, element: etree._Element, head: bytes, tail: bytes, parent_head: bytes, parent_tail: bytes):
        self.element = element
        self.head, self.tail = head, tail  # the document around a next child of this element
        self.opening = head[len(parent_head):]  # its start tag and the children it was opened with
        self.closing = tail[:len(tail) - len(parent_tail)]
        self.started = False  # opening written


class PrettyStream:
    """Writes ``tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True)`` a subtree at a time.

    In memory are only the chain of open elements (the root, and an element whose children
    are being written, with the few children it was opened with) and the one subtree being
    written. Each subtree is serialised inside that skeleton, so it gets the indentation the
    whole tree would give it, and the skeleton's bytes around it are cut off: libxml2 decides
    how to indent an element's children from that element's own children only, so the pieces
    concatenate to the whole tree's bytes. Elements with text beside children are refused (their
    children are not indented). Use as a context manager around the root; :attr:`schemas` then
    are the bundled schema files the written document uses, as :func:`schemas_used` gives them.
    """

    def __init__(self, out: BinaryIO, root: etree._Element):
        self._out = out
        self._tree = root.getroottree()
        self._chain: list[_Open] = []
        self._scope = [(prefix.encode() + b":" if prefix else None, ns) for prefix, ns in root.nsmap.items()]
        self._used: set[str | None] = set()  # namespaces of the elements and attributes written
        self._open(root)

    def __enter__(self) -> PrettyStream:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._close()  # the root; after an error the output is incomplete anyway

    @property
    def schemas(self) -> list[str]:
        return sorted(SCHEMA_FILES[ns] for ns in self._used if ns in SCHEMA_FILES)

    def add(self, child: etree._Element) -> None:
        """Write ``child``, just appended to the innermost open element, and take it out of the skeleton."""
        current = self._chain[-1]
        if child.getparent() is not current.element:
            raise ValueError("a streamed child must be appended to the innermost open element")
        if child.tail is not None:
            raise ValueError(f"{child.tag} has text after it: it cannot be streamed")
        data = self._serialise()
        current.element.remove(child)
        piece = self._between(data, current.head, current.tail)
        self._write(piece)
        self._note(child, piece)

    @property
    def depth(self) -> int:
        """How deep a child of the innermost open element sits (the root's children are at 1)."""
        return len(self._chain)

    def add_text(self, piece: bytes, namespaces: Iterable[str | None]) -> None:
        """Write a child of the innermost open element that is already serialised, as :class:`Fragment` gives it.

        ``piece`` must be the child's bytes as the whole tree would have them: indented for
        :attr:`depth`, ending in a line break. ``namespaces`` are those its elements and attributes
        use (for :attr:`schemas`); nothing is parsed or checked beyond the indentation.
        """
        if not (piece.startswith(indent(self.depth).encode() + b"<") and piece.endswith(b">\n")):
            raise ValueError(f"a serialised child must be indented for depth {self.depth} and end a line")
        self._write(piece)
        self._used.update(namespaces)

    @contextlib.contextmanager
    def element(self, element: etree._Element) -> Iterator[etree._Element]:
        """Open ``element`` (appended to the innermost open element, maybe with first children) for children."""
        if self._chain and element.getparent() is not self._chain[-1].element:
            raise ValueError("an opened element must be appended to the innermost open element")
        self._open(element)
        yield element
        self._close()

    def _serialise(self) -> bytes:
        return etree.tostring(self._tree, xml_declaration=True, encoding="UTF-8", pretty_print=True)

    def _open(self, element: etree._Element) -> None:
        if element.text is not None or any(child.tail is not None for child in element):
            raise ValueError(f"{element.tag} has text beside its children: it cannot be streamed")
        parent_head, parent_tail = (self._chain[-1].head, self._chain[-1].tail) if self._chain else (b"", b"")
        marker = etree.SubElement(element, _STREAM_MARKER)
        data = self._serialise()
        element.remove(marker)
        at = data.rindex(_STREAM_MARKER.encode())  # nothing after the marker but end tags
        head, tail = data[:data.rindex(b"\n", 0, at) + 1], data[data.index(b"\n", at) + 1:]
        if not (head.startswith(parent_head) and tail.endswith(parent_tail)):  # pragma: no cover - libxml2 changed
            raise RuntimeError("an opened element's serialisation does not fit the document skeleton")
        self._chain.append(_Open(element, head, tail, parent_head, parent_tail))

    def _close(self) -> None:
        current = self._chain.pop()
        element = current.element
        if current.started:
            self._write(current.closing)
        else:
            if len(element):  # only the children it was opened with: the marker's line was all that differed
                piece = current.opening + current.closing
            else:  # no children at all: an empty element, <tag/>
                parent_head, parent_tail = (self._chain[-1].head, self._chain[-1].tail) if self._chain else (b"", b"")
                piece = self._between(self._serialise(), parent_head, parent_tail)
            self._write(piece)
            self._note(element, piece)
        if self._chain:
            self._chain[-1].element.remove(element)

    def _write(self, data: bytes) -> None:
        for open_ in self._chain:
            if not open_.started:
                self._out.write(open_.opening)
                self._note(open_.element, open_.opening)
                open_.started = True
        self._out.write(data)

    def _note(self, element: etree._Element, data: bytes) -> None:
        """Record the namespaces ``element`` uses; ``data`` are its bytes, which rule most subtrees out cheaply."""
        # A namespace can only be new if its prefix (or a declaration, or the default namespace)
        # occurs in the bytes; most subtrees use nothing new, and walking them is what costs.
        if b"xmlns" not in data and all(ns in self._used or (prefix is not None and prefix not in data)
                                        for prefix, ns in self._scope):
            return
        for el in element.iter():
            if isinstance(el.tag, str):
                self._used.add(etree.QName(el).namespace)
            self._used.update(name[1:].split("}")[0] for name in el.attrib if name.startswith("{"))

    @staticmethod
    def _between(data: bytes, head: bytes, tail: bytes) -> bytes:
        if not (data.startswith(head) and data.endswith(tail)):  # pragma: no cover - libxml2 changed
            raise RuntimeError("a streamed subtree's serialisation does not fit the document skeleton")
        return data[len(head):len(data) - len(tail)]


#: XML's ``Char`` production: libxml2 can write these and nothing else.
_NOT_XML_CHAR = re.compile(r"[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: Any character but those libxml2 writes unchanged, i.e. ``Char`` less ``& < >`` and CR (in
#: an attribute also ``"``, TAB and LF): a value without one needs no work. One negated class is
#: three times faster to search than the two alternatives it stands for.
_TEXT_NOT_AS_IS = re.compile(r"[^\t\n\x20-\x25\x27-\x3b\x3d\x3f-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTRIBUTE_NOT_AS_IS = re.compile(r"[^\x20\x21\x23-\x25\x27-\x3b\x3d\x3f-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTRIBUTE_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;",
                                    '"': "&quot;", "\t": "&#9;", "\n": "&#10;"})


def as_is(values: Iterable[str]) -> bool:
    """True if every value is written unchanged in XML text and attributes alike (``escape(v) == v``
    both ways): one search over all of an entry's values instead of a call per value."""
    return _ATTRIBUTE_NOT_AS_IS.search(" ".join(values)) is None


class NotXmlText(ValueError):
    """A value has a character XML cannot carry (a control character, U+FFFE, a lone surrogate).

    Raised by :func:`escape` instead of writing a document no parser would read; the message names
    neither the value nor where it came from (it may be personal data): the caller says which
    element it was writing.
    """


def escape(value: object, *, attribute: bool = False) -> str:
    """``str(value)`` escaped as libxml2 writes it in UTF-8: as text or, with ``attribute``, in a ``"``-quoted value.

    In text ``&``, ``<``, ``>`` and carriage return become ``&amp;`` ``&lt;`` ``&gt;`` ``&#13;``;
    in an attribute also ``"``, tab and line feed (``&quot;`` ``&#9;`` ``&#10;``); everything
    else, apostrophes and non-ASCII included, is written as it is. A character outside XML's
    ``Char`` production (control characters, U+FFFE, lone surrogates) raises :class:`NotXmlText`,
    as lxml refuses such a value with a ValueError of its own.
    """
    text = str(value)
    if (_ATTRIBUTE_NOT_AS_IS if attribute else _TEXT_NOT_AS_IS).search(text) is None:
        return text
    if _NOT_XML_CHAR.search(text):
        raise NotXmlText("a value has a character outside XML's Char production")  # not the value: it may be personal
    return text.translate(_ATTRIBUTE_ESCAPES if attribute else _TEXT_ESCAPES)


#: libxml2 indents with at most 60 spaces (xmlTreeIndentString); deeper levels get 60 too.
_MAX_INDENT_LEVEL = 30
_INDENTS = tuple("  " * level for level in range(_MAX_INDENT_LEVEL + 1))


def indent(depth: int) -> str:
    """The spaces before the start tag of an element ``depth`` levels below the root in libxml2's pretty print.

    libxml2 puts each child of an element that has only element children on a line of its own,
    two spaces deeper than its parent; an element with text is written on one line.
    """
    return _INDENTS[depth] if depth < _MAX_INDENT_LEVEL else _INDENTS[_MAX_INDENT_LEVEL]


class Fragment:
    """The pretty-printed bytes of one subtree, as ``tostring(..., pretty_print=True)`` of its whole document has them.

    Elements are written in document order: :meth:`leaf` for one without children (``text``
    None gives ``<tag/>``, ``""`` gives ``<tag></tag>``), :meth:`start` and :meth:`end`
    around children. Tags and attribute names are written as given, with the prefixes of the
    document's namespace declarations; attributes whose value is None are left out. Values are
    escaped by :func:`escape` (which may raise :class:`NotXmlText`).
    """

    __slots__ = ("_parts", "_depth", "_at", "_open")

    def __init__(self, depth: int):
        """A subtree whose root sits ``depth`` levels below the document's root (:attr:`PrettyStream.depth`)."""
        self._parts: list[str] = []
        self._depth = depth
        self._at = indent(depth)  # the indentation of the next element
        self._open: list[tuple[str, int, str]] = []  # (tag, index of its start tag in _parts, its indentation)

    def leaf(self, tag: str, text: object = None, attrs: Mapping[str, object] | None = None) -> None:
        self._parts.append(leaf_text(self._at, tag, text, attrs))

    @property
    def level(self) -> int:
        """How many levels below the document's root the next element sits."""
        return self._depth + len(self._open)

    def add(self, text: str) -> None:
        """Elements already written as text for :attr:`level` (by :func:`leaf_text`, say)."""
        self._parts.append(text)

    def start(self, tag: str, attrs: Mapping[str, object] | None = None) -> None:
        self._parts.append(f"{self._at}<{tag}{_attributes(attrs)}>\n" if attrs else f"{self._at}<{tag}>\n")
        self._open.append((tag, len(self._parts) - 1, self._at))
        self._at = indent(self._depth + len(self._open))

    def end(self) -> None:
        tag, started, self._at = self._open.pop()
        if started == len(self._parts) - 1:  # no children: an empty element
            self._parts[started] = self._parts[started][:-2] + "/>\n"
        else:
            self._parts.append(f"{self._at}</{tag}>\n")

    def getvalue(self) -> bytes:
        if self._open:
            raise ValueError(f"{self._open[-1][0]} is not ended")
        return "".join(self._parts).encode()


def leaf_text(at: str, tag: str, text: object = None, attrs: Mapping[str, object] | None = None) -> str:
    """One element without children, indented by ``at`` (:func:`indent`), as :meth:`Fragment.leaf` writes it:
    ``text`` None gives ``<tag/>``; attributes whose value is None are left out."""
    attributes = _attributes(attrs) if attrs else ""
    if text is None:
        return f"{at}<{tag}{attributes}/>\n"
    return f"{at}<{tag}{attributes}>{escape(text)}</{tag}>\n"


def _attributes(attrs: Mapping[str, object]) -> str:
    """`` name="value"`` for each attribute whose value is not None, in the mapping's order."""
    written = ""
    for name, value in attrs.items():  # a loop, not a join: there are one to three
        if value is not None:
            written += f' {name}="{escape(value, attribute=True)}"'
    return written
