"""Descriptive metadata: the ``dmdSec`` elements and their references (CSIP17–30), and that the
files in ``metadata/descriptive`` are described by one."""

from __future__ import annotations

from transforms.validation.context import Context, Doc, M, blank, locate
from transforms.validation.registry import Scope, Section, not_checkable, register
from transforms.validation.report import Severity

#: The requirement of each attribute of a dmdSec's mdRef.
REF_IDS = dict(LOCTYPE="CSIP22", TYPE="CSIP23", HREF="CSIP24", MDTYPE="CSIP25", MIMETYPE="CSIP26",
               SIZE="CSIP27", CREATED="CSIP28", CHECKSUM="CSIP29", CHECKSUMTYPE="CSIP30")

_MIME_NOTE = "MIMETYPE syntax and top-level type are checked, not that it fits the file's content"

dmd = register("dmdsec", [f"CSIP{i}" for i in range(17, 31)], section=Section.DMDSEC, notes={
    "CSIP17": "checked as: descriptive metadata files present must be referenced from a dmdSec",
    "CSIP26": _MIME_NOTE,
})
not_checkable("REF_CSIP_1", "reference to the CSIP dmdSec rules, which are checked under their own IDs")


@dmd.on(Scope.DOCUMENT)
def descriptive_sections(ctx: Context, doc: Doc) -> None:
    d = doc.rel
    for sec in doc.root.findall(f"{M}dmdSec"):
        ctx.dmd_count += 1
        loc = locate(d, sec)
        if blank(sec.get("ID")):
            ctx.fail("CSIP18", "dmdSec has no @ID", loc)
        if blank(sec.get("CREATED")):
            ctx.fail("CSIP19", "dmdSec has no @CREATED date", loc)
        ctx.check_status(sec, "CSIP20", d)
        refs = sec.findall(f"{M}mdRef")
        if not refs and sec.find(f"{M}mdWrap") is None:
            ctx.fail("CSIP21", "dmdSec has no mdRef to a file in metadata/descriptive", loc)
        if len(refs) > 1:
            ctx.fail("CSIP21", f"dmdSec has {len(refs)} mdRef elements; use one dmdSec per file", loc, Severity.ERROR)
        for ref in refs:
            path = ctx.check_ref(doc, ref, REF_IDS)
            if path:
                ctx.dmd_refs.add(path)


@dmd.on(Scope.PACKAGE)
def descriptive_files_described(ctx: Context) -> None:
    """CSIP17/21 over the whole package: files in metadata/descriptive are referenced from a dmdSec."""
    if not ctx.docs:
        return
    descriptive = ctx.metadata_files("descriptive")
    unref = [p for p in descriptive if p not in ctx.dmd_refs]
    if descriptive and ctx.dmd_count == 0:
        # CSIP17: "Must be used if descriptive metadata for the package content is available."
        ctx.fail("CSIP17", f"metadata/descriptive holds {len(descriptive)} files but no METS has a dmdSec",
                 descriptive[0], Severity.ERROR)
    elif unref:
        ctx.fail("CSIP21", f"descriptive metadata {unref[0]} is not referenced from a dmdSec mdRef"
                 + (f" (+{len(unref) - 1} more)" if len(unref) > 1 else ""), unref[0])


@dmd.on(Scope.PACKAGE, at=Section.AMDSEC, order=1)
def descriptive_metadata_recommended(ctx: Context) -> None:
    """CSIP17 (recommended): no dmdSec at all; reported after the administrative metadata's findings."""
    if ctx.docs and ctx.dmd_count == 0 and not ctx.metadata_files("descriptive"):
        ctx.fail("CSIP17", "no dmdSec (descriptive metadata recommended when available)", "METS.xml")
