"""Administrative metadata: the ``amdSec`` with its ``digiprovMD`` and ``rightsMD`` and their
references (CSIP31–57), and that the files in ``metadata/preservation`` are described by one."""

from __future__ import annotations

from transforms.validation.context import XL, Context, Doc, M, blank, locate, resolve_href
from transforms.validation.registry import Scope, Section, not_checkable, register
from transforms.validation.report import Severity

#: The requirement of each attribute of a digiprovMD's and of a rightsMD's mdRef.
DIGIPROV_IDS = dict(LOCTYPE="CSIP36", TYPE="CSIP37", HREF="CSIP38", MDTYPE="CSIP39", MIMETYPE="CSIP40",
                    SIZE="CSIP41", CREATED="CSIP42", CHECKSUM="CSIP43", CHECKSUMTYPE="CSIP44")
RIGHTS_IDS = dict(LOCTYPE="CSIP49", TYPE="CSIP50", HREF="CSIP51", MDTYPE="CSIP52", MIMETYPE="CSIP53",
                  SIZE="CSIP54", CREATED="CSIP55", CHECKSUM="CSIP56", CHECKSUMTYPE="CSIP57")

_MIME_NOTE = "MIMETYPE syntax and top-level type are checked, not that it fits the file's content"

amd = register("amdsec", [f"CSIP{i}" for i in range(31, 58)], section=Section.AMDSEC, notes={
    "CSIP31": "checked as: preservation metadata files present must be described in the amdSec",
    "CSIP40": _MIME_NOTE,
    "CSIP45": "a permission (a rights statement); the rightsMD present are checked under CSIP46–57",
    "CSIP53": _MIME_NOTE,
})
not_checkable("REF_CSIP_2", "reference to the CSIP amdSec rules, which are checked under their own IDs")


@amd.on(Scope.DOCUMENT)
def administrative_sections(ctx: Context, doc: Doc) -> None:
    d = doc.rel
    secs = doc.root.findall(f"{M}amdSec")
    ctx.amd_count += len(secs)
    if len(secs) > 1:
        ctx.fail("CSIP31", f"{len(secs)} amdSec elements; put all administrative metadata in one", d, Severity.ERROR)
    for sec in secs:
        children = [md for md in sec if isinstance(md.tag, str)]
        ctx.amd_unwrapped += sum(md.find(f"{M}mdWrap") is None for md in children) + (not children)
        digi = sec.findall(f"{M}digiprovMD")
        ctx.digiprov_count += len(digi)
        for md in digi:
            if md.find(f"{M}mdWrap") is None:
                ctx.digiprov_unwrapped += 1
            if blank(md.get("ID")):
                ctx.fail("CSIP33", "digiprovMD has no @ID", locate(d, md))
            ctx.check_status(md, "CSIP34", d)
            refs = md.findall(f"{M}mdRef")
            if not refs and md.find(f"{M}mdWrap") is None:
                ctx.fail("CSIP35", "digiprovMD has no mdRef to a file in metadata/preservation", locate(d, md))
            for ref in refs:
                path = ctx.check_ref(doc, ref, DIGIPROV_IDS)
                if path:
                    ctx.amd_refs.add(path)
        for md in sec.findall(f"{M}rightsMD"):
            if blank(md.get("ID")):
                ctx.fail("CSIP46", "rightsMD has no @ID", locate(d, md))
            ctx.check_status(md, "CSIP47", d)
            refs = md.findall(f"{M}mdRef")
            if not refs and md.find(f"{M}mdWrap") is None:
                ctx.fail("CSIP48", "rightsMD has no mdRef", locate(d, md))
            for ref in refs:
                path = ctx.check_ref(doc, ref, RIGHTS_IDS)
                if path:
                    ctx.amd_refs.add(path)
        for md in list(sec.findall(f"{M}techMD")) + list(sec.findall(f"{M}sourceMD")):
            for ref in md.findall(f"{M}mdRef"):
                href = ref.get(f"{XL}href")
                path = resolve_href(href, doc.base)[0] if href else None
                if path:
                    ctx.referenced.add(path)
                    ctx.amd_refs.add(path)


@amd.on(Scope.PACKAGE)
def preservation_files_described(ctx: Context) -> None:
    """CSIP31/32/35 over the whole package: an amdSec with a digiprovMD for each PREMIS file."""
    if not ctx.docs:
        return
    preservation = ctx.metadata_files("preservation")
    if preservation and ctx.amd_count == 0:
        ctx.fail("CSIP31", f"metadata/preservation holds {len(preservation)} files but no METS has an amdSec",
                 preservation[0], Severity.ERROR)
    elif preservation and ctx.digiprov_count == 0:
        ctx.fail("CSIP32", "metadata/preservation holds files but no amdSec has a digiprovMD; "
                 "describe each PREMIS file in a digiprovMD", preservation[0], Severity.ERROR)
    else:
        unref = [p for p in preservation if p not in ctx.amd_refs]
        if unref:
            ctx.fail("CSIP35", f"preservation metadata {unref[0]} is not referenced from the amdSec"
                     + (f" (+{len(unref) - 1} more)" if len(unref) > 1 else ""), unref[0])
    if ctx.amd_count == 0:
        ctx.fail("CSIP31", "no amdSec (administrative/preservation metadata recommended)", "METS.xml")
    elif ctx.digiprov_count == 0 and not preservation:
        ctx.fail("CSIP32", "no digiprovMD (PREMIS preservation metadata recommended)", "METS.xml")
    # An amdSec (CSIP31) or digiprovMD (CSIP32) that neither embeds its metadata (mdWrap) nor
    # has a file in metadata/preservation to describe: recommended-level findings (SHOULD).
    if ctx.amd_unwrapped and not preservation:
        ctx.fail("CSIP31", "an amdSec exists but metadata/preservation holds no files", "METS.xml")
    if ctx.digiprov_unwrapped and not preservation:
        # CSIP32: "one digiprovMD element for each piece of PREMIS metadata".
        ctx.fail("CSIP32", f"{ctx.digiprov_unwrapped} digiprovMD element(s) but metadata/preservation "
                 "holds no PREMIS file; put the PREMIS files there or embed them with mdWrap", "METS.xml")
