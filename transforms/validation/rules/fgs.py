"""FGS Paketstruktur 2.0: our rules ARK1–6, applied with the ``fgs`` profile only (CSIP/SIP 2.1.0
plus these). A package built by Arkivflöde must pass them."""

from __future__ import annotations

import posixpath

from transforms.common import xmltools
from transforms.common.identifiers import is_valid_organisationsnummer
from transforms.common.safe_archive import UnsafeArchive
from transforms.validation.context import CS, Context, Doc, M, blank, locate
from transforms.validation.registry import Definition, Scope, Section, define, register
from transforms.validation.report import MAX_FINDINGS_PER_REQUIREMENT, Severity
from transforms.validation.rules.filesec import unlisted_files

FGS = frozenset({"fgs"})

define(
    Section.FGS,
    Definition("ARK1", "MUST", "SHA-256 checksums",
               "Every file and mdRef in every METS carries CHECKSUMTYPE=\"SHA-256\" (FGS profile).", profiles=FGS),
    Definition("ARK2", "MUST", "No unlisted files",
               "Every file in the package except the METS documents is referenced from a METS file or mdRef "
               "(FGS profile).", profiles=FGS),
    Definition("ARK3", "MUST", "Metadata validates",
               "Every XML file under metadata/ (package and representations) is safe, well-formed and valid "
               "against its bundled schema (METS, PREMIS 3, ERMS) (FGS profile).", profiles=FGS),
    Definition("ARK4", "MUST", "Organisations identified",
               "The archival creator (ROLE=ARCHIVIST) and the submitting agent are present, and every "
               "organisation agent carries an IDENTIFICATIONCODE note holding a valid Swedish "
               "organisationsnummer (FGS profile).", profiles=FGS),
    Definition("ARK5", "MUST", "Schemas included",
               "The package's schemas/ folder holds every bundled XSD that the package's XML uses (FGS profile).",
               profiles=FGS),
    Definition("ARK6", "MUST", "Representation METS",
               "Every representation folder has its own METS.xml (FGS profile).", profiles=FGS),
)

fgs = register("fgs", [f"ARK{i}" for i in range(1, 7)], section=Section.FGS, profiles=FGS)


@fgs.on(Scope.REFERENCE)
def sha256(ctx: Context, doc: Doc, el, locat) -> None:
    """ARK1, on every file and mdRef as its attributes are checked."""
    ctype = el.get("CHECKSUMTYPE")
    if not blank(ctype) and ctype != "SHA-256":
        ctx.fail("ARK1", f'CHECKSUMTYPE is {ctype!r}; FGS packages use "SHA-256"', locate(doc.rel, el))


@fgs.on(Scope.PACKAGE, at=Section.FILESEC, replaces="filesec.every_file_listed")
def no_unlisted_files(ctx: Context) -> None:
    """ARK2: where CSIP58 warns of a file no METS lists, FGS refuses the package."""
    for p in unlisted_files(ctx)[:MAX_FINDINGS_PER_REQUIREMENT]:
        ctx.fail("ARK2", f"{p} is in the package but not listed in any METS fileSec or mdRef", p, Severity.ERROR)


@fgs.on(Scope.PACKAGE)
def metadata_schemas_representations_organisations(ctx: Context) -> None:
    """ARK3 metadata validates, ARK5 schemas included, ARK6 representation METS, ARK4 organisations."""
    pkg = ctx.pkg
    used_schemas: set[str] = set()
    for doc in ctx.docs:
        used_schemas.update(doc.schemas)
    for p in pkg.files():
        parts = p.split("/")
        in_meta = parts[0] == "metadata" or (len(parts) > 3 and parts[0] == "representations"
                                              and parts[2] == "metadata")
        if not (in_meta and p.lower().endswith(".xml")):
            continue
        # Streamed and validated as read: an ERMS or PREMIS of any size never becomes a tree.
        try:
            res = ctx.xml.xml_file(p)
        except (xmltools.XMLRejected, UnsafeArchive) as exc:
            ctx.fail("ARK3", f"{exc}", p)
            continue
        used_schemas.update(res.schemas)
        for err in res.errors[:20]:
            if err.startswith("no bundled schema"):
                # Descriptive metadata in a standard we do not bundle (EAD, DC, MODS …) is safe
                # and well-formed by now; there is no schema of ours to judge it by.
                ctx.fail("ARK3", f"{p} is safe, well-formed XML but was not schema-validated: {err}", p,
                         Severity.WARNING)
                continue
            ctx.fail("ARK3", f"{p} is not valid against its bundled schema: {err}", p)
    present = {posixpath.basename(p) for p in pkg.files() if p.startswith("schemas/")}
    for name in sorted(used_schemas - present):
        ctx.fail("ARK5", f"schemas/{name} is missing; the package's XML uses it", "schemas")
    reps = ctx.representations()
    for rep in reps:
        if not pkg.is_file(f"representations/{rep}/METS.xml"):
            ctx.fail("ARK6", f"representations/{rep} has no METS.xml", f"representations/{rep}")
    if not reps:
        ctx.fail("ARK6", "the package has no representation", pkg.root)
    root = ctx.root_doc
    if root is None:
        return
    hdr = root.root.find(f"{M}metsHdr")
    agents = hdr.findall(f"{M}agent") if hdr is not None else []
    if not any(a.get("ROLE") == "ARCHIVIST" for a in agents):
        ctx.fail("ARK4", "no archival creator agent (ROLE=ARCHIVIST) with the organisation's "
                 "organisationsnummer", root.rel)
    for a in agents:
        if a.get("TYPE") != "ORGANIZATION":
            continue
        codes = [n for n in a.findall(f"{M}note") if n.get(f"{CS}NOTETYPE") == "IDENTIFICATIONCODE"]
        name = a.findtext(f"{M}name") or "?"
        if not codes:
            ctx.fail("ARK4", f"organisation agent {name!r} (ROLE={a.get('ROLE')}) has no IDENTIFICATIONCODE "
                     "note with its organisationsnummer", locate(root.rel, a))
        for n in codes:
            if not is_valid_organisationsnummer((n.text or "").strip()):
                ctx.fail("ARK4", f"IDENTIFICATIONCODE {n.text!r} of {name!r} is not a valid "
                         "organisationsnummer (NNNNNN-NNNN with check digit)", locate(root.rel, n))
