"""The SIP profile's own requirements (SIP1–35), for the profiles that include it (sip, fgs):
the SIP profile URL and label on the METS root, record status and agreements in the header, the
agents by role, and the file format attributes. They apply to the package METS only."""

from __future__ import annotations

from collections import defaultdict

from transforms.validation.context import CS, Context, Doc, M, blank, locate
from transforms.validation.registry import Scope, Section, register
from transforms.validation.report import Severity
from transforms.validation.requirements import SIP_PROFILE_URLS, SIP_PROFILES
from transforms.validation.rules.header import first_header, software_agent

#: SIP32–35, the format attributes of a mets:file: counted over every file of a METS document
#: while it streams (the file elements are dropped once checked), reported per document.
FORMAT_ATTRS = (("SIP32", ("FILEFORMATNAME",)), ("SIP33", ("FILEFORMATVERSION",)),
                ("SIP34", ("FILEFORMATREGISTRY", "FORMATREGISTRY")),
                ("SIP35", ("FILEFORMATKEY", "FORMATREGISTRYKEY")))

_ROLE = "an agent is the {} by its ROLE; its other requirements are checked under their own IDs"
_NOTE = "a permission (notes with more information); the notes present are checked under {}"

root = register("sip-root", ["SIP1", "SIP2"], section=Section.SIP, profiles=SIP_PROFILES)
header = register("sip-header", [f"SIP{i}" for i in range(3, 9)], section=Section.SIP, profiles=SIP_PROFILES)
agents = register("sip-agents", [f"SIP{i}" for i in range(9, 32)], section=Section.SIP, profiles=SIP_PROFILES,
                  notes={"SIP10": _ROLE.format("archival creator"), "SIP16": _ROLE.format("submitter"),
                         "SIP22": _ROLE.format("contact person (CREATOR, INDIVIDUAL, besides the submitter)"),
                         "SIP23": _ROLE.format("contact person (CREATOR, INDIVIDUAL, besides the submitter)"),
                         "SIP27": _ROLE.format("preservation agent"),
                         "SIP13": _NOTE.format("SIP14"), "SIP19": _NOTE.format("SIP20"),
                         "SIP25": _NOTE.format("SIP24"), "SIP30": _NOTE.format("SIP31"),
                         "SIP21": "a permission (a contact person); the contact persons present are checked",
                         "SIP26": "a permission (a preservation agent); the preservation agents present are checked"})
formats = register("sip-file-formats", [rid for rid, _ in FORMAT_ATTRS], section=Section.SIP, profiles=SIP_PROFILES)


@root.on(Scope.DOCUMENT, at=Section.METS_ROOT, order=3)
def profile_and_label(ctx: Context, doc: Doc) -> None:
    if doc.rep is not None:
        return
    r, d = doc.root, doc.rel
    prof = r.get("PROFILE")
    want = SIP_PROFILE_URLS[ctx.spec]
    got = (prof or "").strip()
    # The versioned archive URLs (E-ARK-SIP-v2-1-0.xml …) are published and written by some
    # tools; they name the same version unambiguously, so they are accepted for it.
    archive = f"https://earksip.dilcis.eu/profile/E-ARK-SIP-v{ctx.spec.replace('.', '-')}.xml"
    if got not in (want, archive):
        hint = (" (that is the CSIP profile URL; a package with OAISPACKAGETYPE=\"SIP\" declares the "
                "SIP profile)") if "earkcsip" in got.lower() else ""
        ctx.fail("SIP2", f"PROFILE must be {want} for a SIP {ctx.spec} (found {prof!r}){hint}", d)
    label = r.get("LABEL")
    if label is None:
        ctx.fail("SIP1", "no mets/@LABEL (optional short description of the package)", d)
    elif not label.strip():
        ctx.fail("SIP1", "mets/@LABEL is empty; remove it or describe the package", d, Severity.WARNING)


@header.on(Scope.DOCUMENT, at=Section.HEADER, order=2)
def package_type_status_and_references(ctx: Context, doc: Doc) -> None:
    hdr = first_header(doc)
    if doc.rep is not None or hdr is None:
        return
    loc = locate(doc.rel, hdr)
    ptype = hdr.get(f"{CS}OAISPACKAGETYPE")
    if ptype != "SIP":
        ctx.fail("SIP4", f'OAISPACKAGETYPE must be "SIP" in a SIP (found {ptype!r})', loc)
    status = hdr.get("RECORDSTATUS")
    if status is None:
        ctx.fail("SIP3", "no metsHdr/@RECORDSTATUS (optional; NEW is assumed)", loc)
    elif status not in ctx.vocab("SIPVocabularyRecordStatus"):
        ctx.fail("SIP3", f"RECORDSTATUS {status!r} is not in the record status vocabulary", loc, Severity.ERROR)
    rules = {"SUBMISSIONAGREEMENT": ("SIP5", 1), "PREVIOUSSUBMISSIONAGREEMENT": ("SIP6", None),
             "REFERENCECODE": ("SIP7", 1), "PREVIOUSREFERENCECODE": ("SIP8", None)}
    found: dict[str, list] = defaultdict(list)
    for alt in hdr.findall(f"{M}altRecordID"):
        found[alt.get("TYPE") or ""].append(alt)
    for typ, (rid, most) in rules.items():
        items = found.get(typ, [])
        if not items:
            ctx.fail(rid, f'no altRecordID TYPE="{typ}" (optional)', loc)
        for alt in items:
            if blank(alt.text):
                ctx.fail(rid, f'altRecordID TYPE="{typ}" is empty; give the reference', locate(loc, alt),
                         Severity.ERROR)
        if most is not None and len(items) > most:
            ctx.fail(rid, f'altRecordID TYPE="{typ}" occurs {len(items)} times; at most {most} allowed',
                     loc, Severity.ERROR)


@agents.on(Scope.DOCUMENT, at=Section.HEADER, order=4)
def agents_by_role(ctx: Context, doc: Doc) -> None:
    if doc.rep is not None:
        return
    d = doc.rel
    hdr = first_header(doc)
    if hdr is None:
        ctx.fail("SIP15", "no metsHdr, so no submitting agent", d)
        return
    every = hdr.findall(f"{M}agent")
    if not every:
        ctx.fail("SIP15", "no submitting agent (ROLE=CREATOR, TYPE=ORGANIZATION or INDIVIDUAL)", locate(d, hdr))
        return
    sw, real = software_agent(every)
    others = [a for a in every if a is not sw or not real]
    creators = [a for a in others if a.get("ROLE") == "CREATOR" and a.get("TYPE") in ("ORGANIZATION", "INDIVIDUAL")]
    orgs = [a for a in creators if a.get("TYPE") == "ORGANIZATION"]
    submitters = orgs or creators[:1]
    contacts = [a for a in creators if a not in submitters]
    archivists = [a for a in others if a.get("ROLE") == "ARCHIVIST"]
    preservers = [a for a in others if a.get("ROLE") == "PRESERVATION"]
    if not archivists:
        ctx.fail("SIP9", "no archival creator agent (ROLE=ARCHIVIST; optional)", d)
    for a in archivists:
        _org_agent(ctx, a, d, type_rid="SIP11", types=("ORGANIZATION", "INDIVIDUAL"), note_rid="SIP14")
        if ctx.spec == "2.2.0" and blank(a.findtext(f"{M}name")):
            ctx.fail("SIP12", "the archival creator agent has no <name> (mandatory from SIP 2.2.0)", locate(d, a))
    if not submitters:
        ctx.fail("SIP15", 'no submitting agent: add an agent ROLE="CREATOR" TYPE="ORGANIZATION" '
                 "(or INDIVIDUAL) with the submitter's name", d)
    for a in submitters:
        # SIP14 is about the archival creator's note; the reference validator also demands an
        # IDENTIFICATIONCODE note on the CSIP software agent, which CSIP16 types as
        # SOFTWARE VERSION. We check SIP14/SIP20 on the archival creator/submitter only.
        _org_agent(ctx, a, d, type_rid="SIP17", types=("ORGANIZATION", "INDIVIDUAL"), note_rid="SIP20")
        if not a.findall(f"{M}name"):
            ctx.fail("SIP18", "the submitting agent has no <name>", locate(d, a),
                     Severity.ERROR if ctx.spec == "2.2.0" else Severity.WARNING)
    for a in contacts:
        if not a.findall(f"{M}name") or blank(a.findtext(f"{M}name")):
            ctx.fail("SIP24", "a contact person agent (CREATOR, INDIVIDUAL) needs a <name>", locate(d, a))
    for a in preservers:
        _org_agent(ctx, a, d, type_rid="SIP28", types=("ORGANIZATION",), note_rid="SIP31")
        if ctx.spec == "2.2.0" and blank(a.findtext(f"{M}name")):
            ctx.fail("SIP29", "the preservation agent has no <name> (mandatory from SIP 2.2.0)", locate(d, a))


def _org_agent(ctx: Context, a, d: str, *, type_rid: str, types: tuple, note_rid: str) -> None:
    where = locate(d, a)
    if a.get("TYPE") not in types:
        ctx.fail(type_rid, f"agent ROLE={a.get('ROLE')!r} needs TYPE in {'/'.join(types)} "
                 f"(found {a.get('TYPE')!r})", where)
    for n in a.findall(f"{M}note"):
        if n.get(f"{CS}NOTETYPE") != "IDENTIFICATIONCODE":
            ctx.fail(note_rid, 'the agent\'s note needs csip:NOTETYPE="IDENTIFICATIONCODE"', where)


@formats.on(Scope.DOCUMENT, at=Section.HEADER, order=5)
def file_formats(ctx: Context, doc: Doc) -> None:
    """SIP32–35 are per-file attributes, summarised per METS document (counted while it streamed).

    Reported for a package METS whose header has agents, as the agents' checks have always been.
    """
    hdr = first_header(doc)
    if doc.rep is not None or hdr is None or hdr.find(f"{M}agent") is None:
        return
    for rid, names in FORMAT_ATTRS:
        missing, empty = doc.attr_missing[rid], doc.attr_empty[rid]
        if missing:
            ctx.fail(rid, f"{missing} of {doc.file_count} files have no sip:{names[0]} (optional)", doc.rel)
        if empty:
            ctx.fail(rid, f"{empty} files have an empty sip:{names[0]}; remove it or give the value",
                     doc.rel, Severity.WARNING)
