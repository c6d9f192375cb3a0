"""The file section: ``fileSec``, its file groups and each ``file`` with its location, size and
checksum (CSIP58–79, CSIP113–114), and that every file of the package is listed somewhere."""

from __future__ import annotations

import posixpath

from transforms.validation.context import CS, Context, Doc, M, amd_ids_of, blank, locate
from transforms.validation.registry import Scope, Section, register
from transforms.validation.report import MAX_FINDINGS_PER_REQUIREMENT, Severity

#: The requirement of each attribute of a file and its FLocat.
REF_IDS = dict(LOCTYPE="CSIP77", TYPE="CSIP78", HREF="CSIP79", MIMETYPE="CSIP68",
               SIZE="CSIP69", CREATED="CSIP70", CHECKSUM="CSIP71", CHECKSUMTYPE="CSIP72")

filesec = register("filesec", [f"CSIP{i}" for i in range(58, 80)] + ["CSIP113", "CSIP114"], section=Section.FILESEC,
                   notes={"CSIP68": "MIMETYPE syntax and top-level type are checked, not that it fits the file's "
                                    "content",
                          "CSIP113": "checked as: a Schemas file group exists; whether it lists every schema used "
                                     "is ARK5"})


@filesec.on(Scope.DOCUMENT)
def file_section(ctx: Context, doc: Doc) -> None:
    d = doc.rel
    secs = doc.root.findall(f"{M}fileSec")
    if not secs:
        ctx.fail("CSIP58", "no fileSec; list the package's files in a file section", d)
        if doc.rep is None:
            for rid, what in (("CSIP60", "Documentation"), ("CSIP113", "Schemas"),
                              ("CSIP114", "Representations")):
                ctx.fail(rid, f"no fileGrp with USE={what!r} (there is no fileSec)", d)
        return
    sec = secs[0]
    if blank(sec.get("ID")):
        ctx.fail("CSIP59", "fileSec has no @ID", locate(d, sec))
    groups = list(sec.iter(f"{M}fileGrp"))
    top = sec.findall(f"{M}fileGrp")
    uses = [(g.get("USE") or "") for g in top]
    if doc.rep is None:
        # CSIP60/113/114 describe the package METS; a representation METS describes its data.
        if "Documentation" not in uses:
            ctx.fail("CSIP60", 'no fileGrp USE="Documentation"; list the documentation files in one', d)
        if "Schemas" not in uses:
            ctx.fail("CSIP113", 'no fileGrp USE="Schemas"; list the XML schemas used in one', d)
        if not any(u.startswith("Representations") for u in uses):
            ctx.fail("CSIP114", 'no fileGrp whose USE starts with "Representations"', d)
    labels = ctx.vocab("CSIPVocabularyFileGrpAndStructMapDivisionLabel")
    amd_ids = amd_ids_of(doc.root)
    dmd_ids = {s.get("ID") for s in doc.root.findall(f"{M}dmdSec") if s.get("ID")}
    for g in top:
        loc = locate(d, g)
        use = g.get("USE")
        if blank(use):
            ctx.fail("CSIP64", "fileGrp has no @USE (Documentation, Schemas, Representations/<name> …)", loc)
        else:
            head = use.split("/", 1)[0]
            # The USE is the folder path of the group's files, from the package root; in a
            # representation METS a path relative to the representation folder is accepted too.
            folders = [use] + ([posixpath.join(doc.base, use)] if doc.base else [])
            exists = any(ctx.dir_ci(posixpath.normpath(f)) for f in folders)
            if head not in labels and not (doc.rep is not None and exists):
                ctx.fail("CSIP64", f"fileGrp USE {use!r} does not start with a vocabulary label "
                          f"({', '.join(sorted(labels))})", loc)
            elif not exists:
                ctx.fail("CSIP64", f"fileGrp USE {use!r} names no folder of the package", loc)
        if blank(g.get("ID")):
            ctx.fail("CSIP65", "fileGrp has no @ID", loc)
        cit = g.get(f"{CS}CONTENTINFORMATIONTYPE")
        other = g.get(f"{CS}OTHERCONTENTINFORMATIONTYPE")
        if (use or "").startswith("Representations") and doc.rep is None and cit is None:
            ctx.fail("CSIP62", "a Representations file group must state csip:CONTENTINFORMATIONTYPE",
                     loc, Severity.ERROR)
        if cit is not None:
            ctx.check_cit(cit, other, "CSIP62", "CSIP63", loc)
        elif other is not None:
            # CSIP63: the reference validator fails every fileGrp *without* the attribute
            # (its test "!= 'OTHER'" is false when absent); only a stray OTHER… is wrong.
            ctx.fail("CSIP63", 'OTHERCONTENTINFORMATIONTYPE is only allowed with CONTENTINFORMATIONTYPE="OTHER"',
                     loc, Severity.ERROR)
    for g in groups:
        loc = locate(d, g)
        admid = g.get("ADMID")
        if admid is not None:
            bad = [i for i in admid.split() if i not in amd_ids]
            if bad or not admid.split():
                ctx.fail("CSIP61", f"fileGrp ADMID refers to {', '.join(bad) or 'nothing'}, "
                          "not to administrative metadata (amdSec children)", loc, Severity.ERROR)
        # The files checked while streaming left their findings in the group's log, in order.
        log = doc.groups.get(g)
        entries = log.seq if log is not None else g.findall(f"{M}file")
        if not entries and not g.findall(f"{M}fileGrp"):
            ctx.fail("CSIP66", "fileGrp has no file elements", loc)
        for entry in entries:
            if isinstance(entry, list):
                ctx.replay(entry)
            elif not isinstance(entry, int):
                ctx.run_all(Scope.FILE, doc, entry, amd_ids, dmd_ids)
        if log is not None:
            ctx.suppress(log.over)


@filesec.on(Scope.FILE)
def file_element(ctx: Context, doc: Doc, f, amd_ids: set[str], dmd_ids: set[str]) -> None:
    def at() -> str:  # where a finding is, worked out only for a finding
        return locate(doc.rel, f)

    if blank(f.get("ID")):
        ctx.fail("CSIP67", "file has no @ID", at())
    for attr, rid, valid in (("ADMID", "CSIP74", amd_ids), ("DMDID", "CSIP75", dmd_ids)):
        val = f.get(attr)
        if val is not None:
            bad = [i for i in val.split() if i not in valid]
            if bad:
                ctx.fail(rid, f"file {attr} refers to unknown metadata {', '.join(bad)}", at(), Severity.ERROR)
    if f.get("OWNERID") is not None and blank(f.get("OWNERID")):
        ctx.fail("CSIP73", "file OWNERID is empty", at(), Severity.WARNING)
    locats = f.findall(f"{M}FLocat")
    if len(locats) != 1:
        ctx.fail("CSIP76", f"file needs exactly one FLocat (has {len(locats)})", at())
    if not locats:
        # Still check the file's own attributes.
        for attr, rid in (("MIMETYPE", "CSIP68"), ("SIZE", "CSIP69"), ("CREATED", "CSIP70"),
                          ("CHECKSUM", "CSIP71"), ("CHECKSUMTYPE", "CSIP72")):
            if blank(f.get(attr)):
                ctx.fail(rid, f"@{attr} is missing", at())
        return
    ctx.check_ref(doc, f, REF_IDS, locat=locats[0])


def unlisted_files(ctx: Context) -> list[str]:
    """Files of the package that no METS lists (in a fileSec, an mdRef or an mptr), METS documents aside."""
    return [p for p in ctx.pkg.files() if p not in ctx.referenced and p not in ctx.mets_paths]


@filesec.on(Scope.PACKAGE)
def every_file_listed(ctx: Context) -> None:
    """CSIP58: a file in the package that no METS lists is a warning (FGS makes it an error, ARK2)."""
    for p in unlisted_files(ctx)[:MAX_FINDINGS_PER_REQUIREMENT]:
        ctx.fail("CSIP58", f"{p} is in the package but not listed in any METS fileSec or mdRef", p, Severity.WARNING)
