"""The METS header: ``metsHdr`` with its dates and package type (CSIP7–9, CSIP117) and the agent
of the software that created the package (CSIP10–16)."""

from __future__ import annotations

import datetime as dt

from transforms.common.xmltools import NS_CSIP
from transforms.validation.context import CS, Context, Doc, M, blank, locate, parse_datetime
from transforms.validation.registry import Scope, Section, register
from transforms.validation.report import Severity

header = register("header", ["CSIP7", "CSIP8", "CSIP9", "CSIP117"], section=Section.HEADER)
agents = register("software-agent", [f"CSIP{i}" for i in range(10, 17)], section=Section.HEADER, notes={
    "CSIP14": "the name is not verified to be a software tool's name",
    "CSIP15": "the note is not verified to be a version string",
})


def first_header(doc: Doc):
    """The document's metsHdr (the first, if there are several), or None."""
    return doc.root.find(f"{M}metsHdr")


def software_agent(agent_list: list) -> tuple[object, bool]:
    """The agent of the software that created the package, and whether it is one.

    When no agent has ROLE="CREATOR", TYPE="OTHER" and OTHERTYPE="SOFTWARE" together, the agent
    that comes closest is returned with False, so that what it lacks can be named.
    """
    for a in agent_list:
        if _score(a) == 3:
            return a, True
    return max(agent_list, key=_score), False


def _score(a) -> int:
    return (a.get("ROLE") == "CREATOR") + (a.get("TYPE") == "OTHER") + (a.get("OTHERTYPE") == "SOFTWARE")


@header.on(Scope.DOCUMENT)
def header_attributes(ctx: Context, doc: Doc) -> None:
    d = doc.rel
    hdr = first_header(doc)
    if hdr is None:
        ctx.fail("CSIP117", "mets/metsHdr is missing", d)
        return
    loc = locate(d, hdr)
    if blank(hdr.get("CREATEDATE")):
        ctx.fail("CSIP7", "metsHdr/@CREATEDATE is missing; record when the package was created", loc)
    lastmod = hdr.get("LASTMODDATE")
    if lastmod is None:
        ctx.fail("CSIP8", "metsHdr/@LASTMODDATE is missing (recommended; mandatory once modified)", loc)
    else:
        when = parse_datetime(lastmod)
        if when is not None and when > dt.datetime.now(dt.UTC) + dt.timedelta(days=1):
            ctx.fail("CSIP8", f"LASTMODDATE {lastmod} is in the future", loc, Severity.ERROR)
    ptype = hdr.get(f"{CS}OAISPACKAGETYPE")
    if blank(ptype) and (wrong := ctx.wrong_ns(hdr, "OAISPACKAGETYPE")):
        ctx.fail("CSIP9", f"csip:OAISPACKAGETYPE is there, but in namespace {wrong!r}, which differs from the "
                 f"official {NS_CSIP!r} only in case; namespace URIs are case-sensitive, so correct it", loc)
    elif blank(ptype):
        ctx.fail("CSIP9", "metsHdr/@csip:OAISPACKAGETYPE is missing (SIP, AIP, DIP …)", loc)
    elif ptype not in ctx.vocab("CSIPVocabularyOAISPackageType"):
        ctx.fail("CSIP9", f"OAISPACKAGETYPE {ptype!r} is not in the OAIS package type vocabulary", loc)


@agents.on(Scope.DOCUMENT, order=3)
def software(ctx: Context, doc: Doc) -> None:
    hdr = first_header(doc)
    if hdr is None:
        return
    found = hdr.findall(f"{M}agent")
    if not found:
        ctx.fail("CSIP10", "metsHdr has no agent; record the software that created the package", locate(doc.rel, hdr))
        return
    sw, real = software_agent(found)
    where = locate(doc.rel, sw)
    if not real:
        # No agent has all three properties: report the missing ones on the agent that comes
        # closest (so "all criteria on different agents" is still a CSIP11 failure).
        ctx.fail("CSIP11", 'no agent has ROLE="CREATOR" together with TYPE="OTHER" and '
                 'OTHERTYPE="SOFTWARE" (the software that created the package)', where)
        if sw.get("TYPE") != "OTHER":
            ctx.fail("CSIP12", f'the software agent needs TYPE="OTHER" (found {sw.get("TYPE")!r})', where)
        if sw.get("OTHERTYPE") != "SOFTWARE":
            ctx.fail("CSIP13", f'the software agent needs OTHERTYPE="SOFTWARE" (found {sw.get("OTHERTYPE")!r})',
                     where)
    # CSIP14-16 apply to the software agent only. The reference validator applies them to
    # every agent with ROLE="CREATOR", including the SIP submitting agent (SIP15-20), which
    # contradicts the SIP profile; we follow the specification (CSIP12, CSIP13, CSIP15, CSIP16).
    names = sw.findall(f"{M}name")
    if len(names) != 1 or blank(names[0].text):
        ctx.fail("CSIP14", "the software agent needs exactly one non-empty <name> (the tool's name)", where)
    notes = sw.findall(f"{M}note")
    if len(notes) != 1:
        ctx.fail("CSIP15", f"the software agent needs exactly one <note> with its version (has {len(notes)})",
                 where)
    if any(blank(n.text) for n in notes):
        ctx.fail("CSIP15", "the software agent's version note is empty", where)
    if notes and not any(n.get(f"{CS}NOTETYPE") == "SOFTWARE VERSION" for n in notes):
        ctx.fail("CSIP16", 'the software agent\'s note needs csip:NOTETYPE="SOFTWARE VERSION"', where)
