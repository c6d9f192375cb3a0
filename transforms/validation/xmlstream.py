"""Reading XML from a package safely, validating it as it streams, in bounded memory.

:class:`XmlReader` parses a package's XML chunk by chunk with the safe parser settings (no DOCTYPE,
no entities, no network), validates against a bundled schema while reading, and keeps either no
tree at all or only what a caller's callbacks leave in it. It knows nothing of the rules: the
METS reader (:mod:`transforms.validation.validator`) hands it callbacks that run the fileSec checks
as each ``file`` element is read.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from collections import defaultdict
from dataclasses import dataclass

from lxml import etree

from transforms.common import xmltools
from transforms.common.safe_archive import PackageReader, UnsafeArchive
from transforms.common.xmltools import NS_CSIP, NS_METS, NS_SIP, SAFE_PARSE, NullTarget

#: Bytes read from a member per call.
CHUNK = 1024 * 1024
_SNIFF = 4096  # bytes fed at a time while looking for the root element


@functools.lru_cache(maxsize=4)
def mets_schema(version: str) -> etree.XMLSchema:
    """METS 1.12 with the CSIP and SIP extension schemas of ``version``.

    Only 2.2.0 ships a different CSIP extension schema (more CONTENTINFORMATIONTYPE values); the
    2.1.0 one accepts every 2.0.4 value, and the vocabulary check tells the versions apart."""
    if version != "2.2.0":
        return xmltools.schema_for(NS_METS)
    wrapper = ['<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" '
               'targetNamespace="urn:arkivflode:wrapper" elementFormDefault="qualified">']
    for ns, name in ((NS_METS, "mets.xsd"), (NS_CSIP, "DILCISExtensionMETS-v2-2-0.xsd"),
                     (NS_SIP, "DILCISExtensionSIPMETS.xsd")):
        wrapper.append(f'<xs:import namespace="{ns}" schemaLocation="{(xmltools.SCHEMA_DIR / name).as_uri()}"/>')
    wrapper.append("</xs:schema>")
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    parser.resolvers.add(xmltools._LocalResolver())
    doc = etree.fromstring("".join(wrapper).encode(), parser,
                           base_url=(xmltools.SCHEMA_DIR / "wrapper-v2-2-0.xsd").as_uri())
    return etree.XMLSchema(doc)




class _Declarations:
    """A parser target that notes only the DOCTYPE and the namespaces declared (a few calls)."""

    def __init__(self):
        self.has_doctype = False
        self.namespaces: set[str] = set()

    def doctype(self, name, pubid, system):
        self.has_doctype = True

    def start_ns(self, prefix, uri):
        self.namespaces.add(uri)

    def close(self):
        return None


def _seen_id(seen: set[int], value: str) -> bool:
    """Remember an xs:ID value (by hash: a collision only costs a second look); True if seen before."""
    h = hash(value.strip())
    if h in seen:
        return True
    seen.add(h)
    return False


@functools.lru_cache(maxsize=1)
def _xsd_id_attributes() -> tuple[dict[str, frozenset[str]], frozenset[str]]:
    """Attributes the bundled schemas type xs:ID: unqualified ones by the namespace of their
    element, and qualified ones (such as xml:id) that may sit on any element."""
    xs = "http://www.w3.org/2001/XMLSchema"
    local: dict[str, set[str]] = defaultdict(set)
    qualified: set[str] = set()
    for path in sorted(xmltools.SCHEMA_DIR.glob("*.xsd")):
        top = etree.parse(str(path), xmltools.safe_parser()).getroot()
        tns = top.get("targetNamespace") or ""
        form = top.get("attributeFormDefault", "unqualified")
        for attr in top.iter(f"{{{xs}}}attribute"):
            name, typ = attr.get("name"), attr.get("type") or ""
            prefix, _, base = typ.rpartition(":")
            if not name or base != "ID" or attr.nsmap.get(prefix or None) != xs:
                continue
            if attr.getparent() is top or attr.get("form", form) == "qualified":
                qualified.add(f"{{{tns}}}{name}")
            else:
                local[tns].add(name)
    return {ns: frozenset(names) for ns, names in local.items()}, frozenset(qualified)


def _xpath_literal(text: str) -> str:
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ", \"'\", ".join(f"'{part}'" for part in text.split("'")) + ")"


class _Scan:
    """Namespaces used and xs:ID values met in subtrees about to be dropped, found by XPath (in C).

    Only what can matter is searched: namespaces the document declares (``declared``, from the
    parser's start-ns events) that have a bundled schema and were not seen used yet, and ID
    attributes once their name has appeared in the bytes read (``id_names``). ``scope`` picks
    the subtrees: "older" (every child element but the last, with its descendants), "children"
    (every child element) or "self" (the node's tree).
    """

    _SCOPES = {"older": "child::*[position() < $n]/descendant-or-self::*",  # not last(): quadratic
               "children": "child::*/descendant-or-self::*", "self": "descendant-or-self::*"}

    def __init__(self):
        self.used: set[str] = set()  # element and attribute namespaces (xmltools.schemas_used)
        self.declared: set[str] = set()
        self.id_names: set[str] = set()  # ID attribute names seen in the bytes read so far
        self.duplicate_id = False
        self._ids: set[int] = set()
        self._paths: dict[tuple, etree.XPath] = {}

    def _path(self, key: tuple, build) -> etree.XPath:
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = build()
        return path

    def scan(self, node, scope: str) -> None:
        where = self._SCOPES[scope]
        n = int(node.xpath("count(*)")) if scope == "older" else 0
        todo = sorted((self.declared & xmltools.SCHEMA_FILES.keys()) - self.used)
        if todo:
            prefixes = {f"c{i}": ns for i, ns in enumerate(todo)}
            test = " or ".join(f"namespace-uri()={_xpath_literal(ns)} or @{p}:*" for p, ns in prefixes.items())
            path = self._path(("ns", scope, *todo), lambda: etree.XPath(f"{where}[{test}]", namespaces=prefixes))
            for el in path(node, n=n):
                for name in (el.tag, *el.attrib):
                    if name[:1] == "{":
                        self.used.add(name[1:name.index("}")])
        if not self.id_names:
            return
        id_attrs, _ = _xsd_id_attributes()
        for ns in sorted(self.declared & id_attrs.keys()):
            for name in sorted(id_attrs[ns] & self.id_names):
                path = self._path(("id", scope, name), lambda name=name: etree.XPath(f"{where}[@{name}]"))
                for el in path(node, n=n):
                    if el.tag[:1] == "{" and el.tag[1:el.tag.index("}")] == ns:
                        self.duplicate_id |= _seen_id(self._ids, el.get(name))

    def trim(self, root) -> None:
        """Scan and drop every finished subtree; what stays is the path of still open elements."""
        node = root
        while len(node):
            last = node[-1]
            is_element = isinstance(last.tag, str)
            if len(node) > 1:
                self.scan(node, "older" if is_element else "children")
                del node[:-1]
            if not is_element:
                break
            node = last


class LimitedReader:
    """A member's stream that refuses to deliver more than ``limit`` bytes (as read_bytes does)."""

    def __init__(self, fh, source, rel: str, limit: int):
        self.fh, self.source, self.rel, self.limit = fh, source, rel, limit
        self.total = 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(CHUNK if n is None or n < 0 else min(n, CHUNK))
        self.total += len(data)
        if self.total > self.limit:
            raise UnsafeArchive(self.source, self.rel, "member is larger than its header says")
        return data


class CallbackError(Exception):
    """An exception raised by a check run while a document streams (not by the document itself)."""


@dataclass
class Streamed:
    root: object
    errors: list[str]  # schema errors, as xmltools.schema_errors words them
    schemas: list[str]  # bundled schema files the document uses (xmltools.schemas_used)




class XmlReader:
    """Safe, streaming XML reading of one package's members (see the module docstring)."""

    def __init__(self, pkg: PackageReader):
        self.pkg = pkg
        self._spools: list = []  # temporary copies of the METS being streamed from an archive

    def close_spools(self) -> None:
        while self._spools:
            self._spools.pop().close()

    def opener(self, rel: str, *, spool: bool):
        """A function opening ``rel`` for reading, capped at the XML size limit.

        ``spool``: from an archive, copy the member to a temporary file first (on disk above 8 MiB),
        so that files can be hashed while the document streams without seeking the archive back
        and forth (a compressed tar would decompress from its start at every backward seek).
        """
        limit = xmltools.MAX_XML_BYTES
        if self.pkg.sizes.get(rel, 0) > limit:
            raise UnsafeArchive(self.pkg.source, rel, "member is too large to read into memory", f"limit {limit}")
        if not spool or self.pkg.source.is_dir():
            @contextlib.contextmanager
            def direct():
                with self.pkg.open(rel) as fh:
                    yield LimitedReader(fh, self.pkg.source, rel, limit)
            return direct
        tmp = tempfile.SpooledTemporaryFile(max_size=8 * CHUNK)  # noqa: SIM115 - closed with the last use
        with self.pkg.open(rel) as fh:
            reader = LimitedReader(fh, self.pkg.source, rel, limit)
            while chunk := reader.read(CHUNK):
                tmp.write(chunk)
        self._spools.append(tmp)

        @contextlib.contextmanager
        def spooled():
            tmp.seek(0)
            yield tmp
        return spooled

    def stream(self, rel: str, opener, *, schema, root_tag: str | None = None, on_start=None, on_end=None,
               expect: str | None = None) -> Streamed:
        """Parse ``rel`` chunk by chunk, validating against ``schema`` as it goes.

        With ``on_start``/``on_end`` every element is handed to them as it is read and stays in
        the tree unless ``on_end`` removes it (a METS). Without, the tree is trimmed after each
        chunk to the path of still open elements, so memory stays flat whatever the document's
        size; ``root_tag`` (the root's tag, from :meth:`root_tag`) is then the only element lxml
        reports, so no Python runs per element. Raises XMLRejected for what
        :func:`xmltools.parse_bytes` refuses, in the same words: not well-formed, DOCTYPE. A
        document whose root is not ``expect`` is only checked for that.

        Two parsers read the same chunks. lxml's validating parser does not report every
        well-formedness error (a namespace error or a cut-off document can pass), so a second
        parser that builds nothing judges well-formedness. Streaming validation also has no
        document to check xs:ID values are unique in, so duplicates are looked for here. lxml
        gives no line numbers while streaming: an invalid document's errors are listed from a
        tree, as before — only an invalid document pays that memory.
        """
        wellformed = etree.XMLParser(target=NullTarget(), **SAFE_PARSE)
        trim = on_end is None
        if trim:
            parser = etree.XMLPullParser(events=("start", "end", "start-ns"), tag=root_tag, schema=schema,
                                         **SAFE_PARSE)
        else:
            # Without on_start, only end events: half the events to hand over to Python.
            events = ("start", "end") if on_start is not None else ("end",)
            parser = etree.XMLPullParser(events=events, schema=schema, **SAFE_PARSE)
        scan = _Scan()
        id_attrs, _ = _xsd_id_attributes()
        id_names = sorted({name for names in id_attrs.values() for name in names})
        root = None
        drain = doctype = ended = xml_id = False
        tail = b""
        tags: dict[str, str | None] = {}
        ids: set[int] = set()
        broken: etree.XMLSyntaxError | None = None  # not well-formed
        invalid: etree.XMLSyntaxError | None = None  # raised by the validating parser
        with opener() as fh:
            while True:
                chunk = fh.read(CHUNK)
                try:
                    if chunk:
                        wellformed.feed(chunk)
                    else:
                        wellformed.close()
                except etree.XMLSyntaxError as exc:
                    broken = exc
                    break
                # xml:id is an ID to the parser itself (a duplicate makes the document not
                # well-formed to lxml); no package of ours uses it, so a document that does is
                # judged by the whole-tree parse below. The prefix cannot be rebound, so the
                # bytes tell. ID attribute names are looked for the same way (see _Scan).
                window = tail + chunk
                xml_id |= b"xml:id" in window
                if trim:
                    scan.id_names.update(n for n in id_names if n not in scan.id_names and n.encode() in window)
                tail = chunk[-16:]
                if invalid is not None:
                    if not chunk:
                        break
                    continue
                try:
                    if chunk:
                        parser.feed(chunk)
                    else:
                        parser.close()
                except etree.XMLSyntaxError as exc:
                    invalid = exc
                for ev, el in parser.read_events():
                    if ev == "start-ns":
                        scan.declared.add(el[1])
                        continue
                    if root is None:
                        root = el if ev == "start" else el.getroottree().getroot()
                        doctype = bool(el.getroottree().docinfo.doctype)
                        drain = doctype or (expect is not None and root.tag != expect)
                        if root.tag[:1] == "{":
                            scan.used.add(root.tag[1:root.tag.index("}")])
                    if el is root and ev == "end":
                        ended = True
                    if trim:
                        continue
                    if ev == "start":
                        if not drain:
                            self._callback(on_start, el)
                        continue
                    tag = el.tag
                    ns = tags.get(tag, "")
                    if ns == "":
                        ns = tags[tag] = tag[1:tag.index("}")] if tag[:1] == "{" else None
                        if ns is not None:
                            scan.used.add(ns)
                    for key in el.attrib:
                        if key[:1] == "{":
                            scan.used.add(key[1:key.index("}")])
                    for key in id_attrs.get(ns, ()):
                        value = el.get(key)
                        if value is not None:
                            scan.duplicate_id |= _seen_id(ids, value)
                    if drain:
                        parent = el.getparent()
                        if parent is not None:
                            parent.remove(el)
                    else:
                        try:  # as _callback, inline: this runs once per element of a METS
                            on_end(el)
                        except Exception as exc:  # a check (e.g. hashing a damaged member) failed, not the XML
                            raise CallbackError() from exc
                if trim and root is not None:
                    scan.trim(root)
                if not chunk:
                    break
        if trim and root is not None and broken is None and invalid is None:
            scan.scan(root, "self")
        errors = [e for e in wellformed.feed_error_log if e.level >= etree.ErrorLevels.ERROR]
        if broken is not None:
            # Fed in chunks, libxml2 words a few errors differently; read once more (no tree, the
            # parser pulls the stream) for the words a whole-document parse uses.
            with opener() as fh:
                try:
                    etree.parse(fh, etree.XMLParser(target=NullTarget(), **SAFE_PARSE))
                except etree.XMLSyntaxError as exc:
                    broken = exc
            raise xmltools.XMLRejected(f"{rel}: not well-formed XML: {broken}")
        if errors:  # namespace errors: the parser without a tree logs them and goes on
            e = errors[0]
            why = f"{e.message}, line {e.line}, column {e.column} (<string>, line {e.line})"
            raise xmltools.XMLRejected(f"{rel}: not well-formed XML: {why}")
        if root is None:  # pragma: no cover - a well-formed document has a root element
            raise xmltools.XMLRejected(f"{rel}: not well-formed XML: no root element")
        check_schema = schema is not None and not drain
        if xml_id or (check_schema and (invalid is not None or scan.duplicate_id or not ended)):
            # The whole-tree path of before (parse_bytes refuses a DOCTYPE itself).
            tree = xmltools.parse_bytes(self.pkg.read_bytes(rel, xmltools.MAX_XML_BYTES), name=rel)
            schema_errors = xmltools.schema_errors(tree) if check_schema else []
            schemas = xmltools.schemas_used(tree)  # the stream stopped at the first error
            del tree
            return Streamed(root, schema_errors, schemas)
        if doctype:
            raise xmltools.XMLRejected(f"{rel}: has a DOCTYPE declaration, which packages must not carry")
        schemas = sorted(xmltools.SCHEMA_FILES[ns] for ns in scan.used if ns in xmltools.SCHEMA_FILES)
        schema_errors: list[str] = []
        return Streamed(root, schema_errors, schemas)

    @staticmethod
    def _callback(fn, el) -> None:
        try:
            fn(el)
        except Exception as exc:  # a check (e.g. hashing a damaged member) failed, not the XML
            raise CallbackError() from exc

    def xml_file(self, rel: str) -> Streamed:
        """Check one XML file that is not a METS against the schema of its root's namespace.

        Mostly one pass that builds no tree at all (:meth:`check_flat`); a document that uses
        a second bundled namespace or xs:ID attributes is streamed again with :meth:`stream`,
        which finds out which namespaces are used and whether an ID repeats.
        """
        opener = self.opener(rel, spool=False)
        tag = self.root_tag(opener)
        ns = etree.QName(tag).namespace if tag else None
        schema = xmltools.schema_for(ns) if ns in xmltools.SCHEMA_FILES else None
        res = self.check_flat(rel, opener, schema, ns)
        if res is None:
            res = self.stream(rel, opener, schema=schema, root_tag=tag)
        if schema is None:
            res.errors = [f"no bundled schema for root element namespace {ns!r}"]
        return res

    def check_flat(self, rel: str, opener, schema, root_ns: str | None) -> Streamed | None:
        """Validate ``rel`` while parsing it, keeping no tree; None when a closer look is needed.

        Two parsers with targets (so neither builds a tree) read the same chunks: one judges
        well-formedness and notes the DOCTYPE and the declared namespaces, the other validates
        against ``schema`` (lxml logs a target parser's validation errors instead of raising).
        """
        decls = _Declarations()
        wellformed = etree.XMLParser(target=decls, **SAFE_PARSE)
        validating = etree.XMLParser(target=NullTarget(), schema=schema, **SAFE_PARSE) if schema else None
        id_attrs, _ = _xsd_id_attributes()
        id_names = {name.encode() for names in id_attrs.values() for name in names}
        seen_names: set[bytes] = set()
        broken = invalid = xml_id = False
        tail = b""
        with opener() as fh:
            while True:
                chunk = fh.read(CHUNK)
                window = tail + chunk
                xml_id |= b"xml:id" in window
                seen_names.update(n for n in id_names - seen_names if n in window)
                tail = chunk[-16:]
                try:
                    if chunk:
                        wellformed.feed(chunk)
                    else:
                        wellformed.close()
                except etree.XMLSyntaxError:
                    broken = True
                    break
                if validating is not None and not invalid:
                    try:
                        if chunk:
                            validating.feed(chunk)
                        else:
                            validating.close()
                    except etree.XMLSyntaxError:
                        invalid = True
                if not chunk:
                    break
        if broken or any(e.level >= etree.ErrorLevels.ERROR for e in wellformed.feed_error_log):
            return None  # stream words it exactly as a whole-document parse does
        if validating is not None:
            invalid = invalid or any(e.level >= etree.ErrorLevels.ERROR for e in validating.feed_error_log)
        other = (decls.namespaces & xmltools.SCHEMA_FILES.keys()) - {root_ns}
        ids = any(id_attrs[ns] & {n.decode() for n in seen_names} for ns in decls.namespaces & id_attrs.keys())
        if xml_id or invalid or other or ids:
            return None
        if decls.has_doctype:
            raise xmltools.XMLRejected(f"{rel}: has a DOCTYPE declaration, which packages must not carry")
        return Streamed(None, [], [xmltools.SCHEMA_FILES[root_ns]] if root_ns in xmltools.SCHEMA_FILES else [])

    @staticmethod
    def root_tag(opener) -> str | None:
        """The root element's tag, reading only as far as its start tag (None if there is none)."""
        sniff = etree.XMLPullParser(events=("start",), **SAFE_PARSE)
        with opener() as fh:
            try:
                # Small pieces: the root's start tag is near the top, and lxml parses (and builds a
                # tree of) whatever it is fed, so feeding a whole chunk would parse most documents.
                while chunk := fh.read(_SNIFF):
                    sniff.feed(chunk)
                    for _ev, el in sniff.read_events():
                        return el.tag
                sniff.close()
            except etree.XMLSyntaxError:
                return None
        return None
