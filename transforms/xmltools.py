"""Safe XML parsing and validation against the bundled official schemas.

Every parser here has entity resolution, DTD loading and network access switched off, so a
hostile package cannot expand entities or make us fetch anything. Schemas are loaded from
``transforms/schemas`` only; imports that name a web address are resolved to the local copy.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

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

    As in the validator (``transforms/validate.py``): a validating parser with a target that
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
