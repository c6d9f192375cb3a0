"""Our DIP rules, applied with the ``dip`` profile: no official E-ARK DIP METS profile ships with
this project, so a DIP is checked as CSIP plus DIP1 (package type) and DIP2 (what was withheld)."""

from __future__ import annotations

import json

from transforms.common import xmltools
from transforms.common.safe_archive import UnsafeArchive
from transforms.validation.context import CS, Context, Doc, locate
from transforms.validation.registry import Definition, Scope, Section, define, register
from transforms.validation.rules.header import first_header

DIP = frozenset({"dip"})
WITHHELD = "documentation/withheld.json"

define(
    Section.DIP,
    Definition("DIP1", "MUST", "Package type DIP",
               "Every METS document (package and representations) says metsHdr/@csip:OAISPACKAGETYPE=\"DIP\" "
               "(DIP profile).", profiles=DIP),
    Definition("DIP2", "MUST", "Withholdings declared",
               "documentation/withheld.json exists and is a JSON list (or an object with a list \"withheld\") of "
               "what was withheld or masked and why — empty when nothing was (DIP profile).", profiles=DIP),
)

dip = register("dip", ["DIP1", "DIP2"], section=Section.DIP, profiles=DIP)


@dip.on(Scope.DOCUMENT, at=Section.HEADER, order=1)
def package_type(ctx: Context, doc: Doc) -> None:
    hdr = first_header(doc)
    if hdr is None:
        return
    ptype = hdr.get(f"{CS}OAISPACKAGETYPE")
    if ptype != "DIP":
        ctx.fail("DIP1", f'OAISPACKAGETYPE must be "DIP" in a DIP (found {ptype!r})', locate(doc.rel, hdr))


@dip.on(Scope.PACKAGE)
def withholdings(ctx: Context) -> None:
    if not ctx.pkg.is_file(WITHHELD):
        ctx.fail("DIP2", "documentation/withheld.json is missing; a DIP declares what was withheld and why "
                 "(an empty list when nothing was)", WITHHELD)
        return
    try:
        data = json.loads(ctx.pkg.read_bytes(WITHHELD, xmltools.MAX_XML_BYTES))
    except (ValueError, RecursionError, UnsafeArchive) as exc:
        ctx.fail("DIP2", f"documentation/withheld.json is not readable JSON ({type(exc).__name__})", WITHHELD)
        return
    items = data.get("withheld") if isinstance(data, dict) else data
    if not isinstance(items, list):
        ctx.fail("DIP2", "documentation/withheld.json must hold a list of withholdings", WITHHELD)
