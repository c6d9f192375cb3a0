"""The METS document itself and its root element: safe, schema-valid XML of a supported version
(our METS-XML, METS-XSD, SPEC-VERSION) and the ``mets`` attributes (CSIP1–6)."""

from __future__ import annotations

import re

from lxml import etree

from transforms.common.xmltools import NS_CSIP, NS_METS
from transforms.validation.context import CS, Context, Doc, blank
from transforms.validation.registry import Definition, Scope, Section, define, register
from transforms.validation.report import Severity
from transforms.validation.spec import SpecChoice

define(
    Section.METS_ROOT,
    Definition("METS-XML", "MUST", "METS is safe, well-formed XML",
               "Every METS document parses without DOCTYPE or entities and within the size limit."),
    Definition("SPEC-VERSION", "MUST", "A supported E-ARK version",
               "The package declares E-ARK CSIP/SIP 2.0.4, 2.1.0 or 2.2.0 (mets/@PROFILE); 1.x packages are "
               "refused."),
    Definition("METS-XSD", "MUST", "METS is schema-valid",
               "Every METS document is valid against METS 1.12 with the CSIP and SIP extension schemas."),
)

version = register("spec-version", ["SPEC-VERSION"], section=Section.METS_ROOT)
document = register("mets-document", ["METS-XML", "METS-XSD"], section=Section.METS_ROOT)
root = register("mets-root", [f"CSIP{i}" for i in range(1, 7)], section=Section.METS_ROOT)


@version.on(Scope.DECLARED)
def supported_version(ctx: Context, choice: SpecChoice) -> None:
    if choice.version == "1.x" and not ctx.forced_spec:
        ctx.fail("SPEC-VERSION", f"the package is E-ARK 1.x ({choice.reason}); only CSIP/SIP 2.0.4, 2.1.0 "
                 "and 2.2.0 are accepted: export it again with a 2.x version of the tool", "METS.xml")


@document.on(Scope.LOADED)
def well_formed_and_valid(ctx: Context, rel: str, doc: Doc | None, problem, schema_errors: list[str]) -> None:
    """``problem``: why the document was refused (the parser's exception, or its root element)."""
    if isinstance(problem, Exception):
        ctx.fail("METS-XML", f"{problem}; write the METS as plain well-formed XML without a DOCTYPE", rel)
    elif problem is not None:
        q = etree.QName(problem)
        if q.localname == "mets" and (q.namespace or "").lower() == NS_METS.lower():
            ctx.fail("METS-XML", f"the root element's namespace {q.namespace!r} differs from the METS "
                     f"namespace {NS_METS!r} only in case; namespace URIs are case-sensitive", rel)
        else:
            ctx.fail("METS-XML", f"root element is {problem.tag!r}, not METS <mets>", rel)
    for err in schema_errors[:50]:
        ctx.fail("METS-XSD", f"not valid against METS/CSIP/SIP schema: {err}", rel)


@root.on(Scope.DOCUMENT)
def object_id(ctx: Context, doc: Doc) -> None:
    """CSIP1; the root folder's name (CSIPSTR2, rules/structure.py) is checked right after it."""
    r, d = doc.root, doc.rel
    objid = r.get("OBJID")
    if blank(objid):
        ctx.fail("CSIP1", "mets/@OBJID is missing or empty; set it to the package (or representation) ID", d)
    elif doc.rep is None and objid != ctx.pkg.root:
        ctx.fail("CSIP1", f"OBJID {objid!r} differs from the package root folder name {ctx.pkg.root!r}",
                 d, Severity.WARNING)
    elif doc.rep is not None and objid != doc.rep:
        ctx.fail("CSIP1", f"representation OBJID {objid!r} differs from its folder name {doc.rep!r}",
                 d, Severity.WARNING)


@root.on(Scope.DOCUMENT, order=2)
def mets_attributes(ctx: Context, doc: Doc) -> None:
    """CSIP2–6: content category, content information type and profile."""
    r, d = doc.root, doc.rel
    # CSIP2/CSIP3. The reference validator accepts only the vocabulary's "Other"; the
    # specification text (and the corpus) use TYPE="OTHER" with csip:OTHERTYPE, so we accept it.
    mtype = r.get("TYPE")
    othertype = r.get(f"{CS}OTHERTYPE")
    if blank(mtype):
        ctx.fail("CSIP2", "mets/@TYPE is missing; give the content category from the vocabulary", d)
    elif mtype == "OTHER":
        if blank(othertype):
            ctx.fail("CSIP2", 'TYPE="OTHER" needs csip:OTHERTYPE naming the content category (CSIP3)', d)
    elif mtype not in ctx.vocab("CSIPVocabularyContentCategory"):
        ctx.fail("CSIP2", f"TYPE {mtype!r} is not in the content category vocabulary; use a listed value "
                 'or TYPE="OTHER" with csip:OTHERTYPE', d)
    if othertype is not None and mtype != "OTHER":
        ctx.fail("CSIP3", 'csip:OTHERTYPE is only meaningful with TYPE="OTHER"', d, Severity.WARNING)
    # CSIP4/CSIP5: mandatory in a representation METS, recommended in the package METS.
    cit = r.get(f"{CS}CONTENTINFORMATIONTYPE")
    other_cit = r.get(f"{CS}OTHERCONTENTINFORMATIONTYPE")
    if cit is None and (wrong := ctx.wrong_ns(r, "CONTENTINFORMATIONTYPE")):
        ctx.fail("CSIP4", f"csip:CONTENTINFORMATIONTYPE is there, but in namespace {wrong!r}, which differs "
                 f"from the official {NS_CSIP!r} only in case; namespace URIs are case-sensitive", d, Severity.ERROR)
    elif cit is None:
        if doc.rep is not None:
            ctx.fail("CSIP4", "csip:CONTENTINFORMATIONTYPE is mandatory in a representation METS", d, Severity.ERROR)
        else:
            ctx.fail("CSIP4", "csip:CONTENTINFORMATIONTYPE is recommended (e.g. citserms_v2_1)", d)
    else:
        ctx.check_cit(cit, other_cit, "CSIP4", "CSIP5", d)
    prof = r.get("PROFILE")
    if blank(prof):
        ctx.fail("CSIP6", "mets/@PROFILE is missing; give the URL of the METS profile", d)
    elif not re.match(r"^https?://\S+$", prof.strip()):
        ctx.fail("CSIP6", f"PROFILE {prof!r} is not a URL of a METS profile", d)
