"""The structural map: the one CSIP ``structMap`` and its divisions for metadata, documentation,
schemas and each representation, with the pointers to file groups and representation METS
(CSIP80–112, CSIP116, CSIP118, CSIP119)."""

from __future__ import annotations

from collections import defaultdict

from transforms.validation.context import XL, Context, Doc, M, amd_ids_of, blank, locate, resolve_href
from transforms.validation.registry import Scope, Section, not_checkable, register
from transforms.validation.report import Severity

structmap = register("structmap", [f"CSIP{i}" for i in range(80, 113) if i != 87] + ["CSIP116", "CSIP118", "CSIP119"],
                     section=Section.STRUCTMAP)
not_checkable("REF_CSIP_3", "reference to the CSIP structMap rules, which are checked under their own IDs")
not_checkable("REF_METS_1", "structLink is not used by CSIP")
not_checkable("REF_METS_2", "behaviorSec is not used by CSIP")


@structmap.on(Scope.DOCUMENT)
def structural_map(ctx: Context, doc: Doc) -> None:
    d = doc.rel
    maps = doc.root.findall(f"{M}structMap")
    csip = [m for m in maps if m.get("LABEL") == "CSIP"]
    if not maps:
        ctx.fail("CSIP80", "no structMap", d)
    if len(csip) != 1:
        ctx.fail("CSIP80", f"{len(csip)} structMap elements with LABEL=\"CSIP\"; exactly one is required", d)
        if not csip:
            ctx.fail("CSIP82", 'no structMap has LABEL="CSIP"', d)
            return
    sm = csip[0]
    loc = locate(d, sm)
    if sm.get("TYPE") != "PHYSICAL":
        ctx.fail("CSIP81", f'the CSIP structMap needs TYPE="PHYSICAL" (found {sm.get("TYPE")!r})', loc)
    if blank(sm.get("ID")):
        ctx.fail("CSIP83", "the CSIP structMap has no @ID", loc)
    divs = sm.findall(f"{M}div")
    if len(divs) != 1:
        ctx.fail("CSIP84", f"the CSIP structMap needs exactly one top div (has {len(divs)})", loc)
        if not divs:
            return
    main = divs[0]
    if ctx.spec == "2.0.4" and main.get("LABEL") != doc.root.get("OBJID"):
        # CSIP86 is a 2.0.4 requirement only (removed in 2.1.0).
        ctx.fail("CSIP86", f"the main div LABEL {main.get('LABEL')!r} must equal mets/@OBJID in CSIP 2.0.4",
                  locate(d, main))
    if blank(main.get("ID")):
        ctx.fail("CSIP85", "the main div has no @ID", locate(d, main))
    subs = main.findall(f"{M}div")
    for s in subs:
        if blank(s.get("ID")):
            ctx.fail("CSIP106", f"div LABEL={s.get('LABEL')!r} has no @ID", locate(d, s))
        if s.get("LABEL") is None:
            ctx.fail("CSIP107", "a division of the CSIP structMap has no @LABEL", locate(d, s))
    by_label: dict[str, list] = defaultdict(list)
    for s in subs:
        by_label[s.get("LABEL") or ""].append(s)
    groups = {g.get("ID"): g for g in doc.root.iter(f"{M}fileGrp") if g.get("ID")}
    pointed: set[str] = set()
    for fp in sm.iter(f"{M}fptr"):
        if fp.get("FILEID"):
            pointed.add(fp.get("FILEID"))
    for mp in sm.iter(f"{M}mptr"):
        if mp.get(f"{XL}title"):
            pointed.add(mp.get(f"{XL}title"))
    # Metadata division
    meta = by_label.get("Metadata", [])
    if len(meta) != 1:
        for rid in ("CSIP88", "CSIP90"):
            ctx.fail(rid, f'{len(meta)} divs LABEL="Metadata" in the CSIP structMap; exactly one required',
                     loc)
    for m in meta:
        if blank(m.get("ID")):
            ctx.fail("CSIP89", 'the "Metadata" div has no @ID', locate(d, m))
    if meta:
        _metadata_division(ctx, doc, meta[0])
    # Documentation, Schemas, Representations divisions and the groups they point to.
    for label, div_rid, label_rid, id_rid, fptr_rid, ptr_rid, grp_test in (
        ("Documentation", "CSIP93", "CSIP95", "CSIP94", "CSIP96", "CSIP116", lambda u: u == "Documentation"),
        ("Schemas", "CSIP97", "CSIP99", "CSIP98", "CSIP100", "CSIP118", lambda u: u == "Schemas"),
        ("Representations", "CSIP101", "CSIP103", "CSIP102", "CSIP104", "CSIP119",
         lambda u: u.startswith("Representations")),
    ):
        found = by_label.get(label, [])
        if len(found) > 1:
            for rid in (div_rid, label_rid):
                ctx.fail(rid, f'{len(found)} divs LABEL="{label}"; at most one allowed', loc, Severity.ERROR)
        has_group = any(g.getparent().tag == f"{M}fileSec" and grp_test(g.get("USE") or "")
                        for g in groups.values())
        if not found and has_group and label != "Representations" and doc.rep is None:
            # CSIP103: a representation may instead have its own "Representations/<name>"
            # division (as the corpus's valid packages do); the reference validator insists
            # on a division labelled exactly "Representations".
            ctx.fail(div_rid, f'no div LABEL="{label}" although a {label} file group exists', loc)
        for div in found:
            if blank(div.get("ID")):
                ctx.fail(id_rid, f'the "{label}" div has no @ID', locate(d, div))
            for fp in div.findall(f"{M}fptr"):
                fid = fp.get("FILEID")
                if blank(fid):
                    ctx.fail(ptr_rid, f'an fptr in the "{label}" div has no @FILEID', locate(d, fp))
                elif fid in groups and not grp_test(groups[fid].get("USE") or ""):
                    ctx.fail(ptr_rid, f"fptr FILEID {fid!r} points to fileGrp USE="
                              f"{groups[fid].get('USE')!r}, not a {label} file group", locate(d, fp))
                elif fid not in groups and not doc.has_id(fid):
                    ctx.fail(ptr_rid, f"fptr FILEID {fid!r} refers to no element of this METS", locate(d, fp))
        for gid, g in groups.items():
            if (g.getparent().tag == f"{M}fileSec" and grp_test(g.get("USE") or "") and gid not in pointed
                    and (doc.rep is None or label != "Representations")):
                ctx.fail(fptr_rid, f'fileGrp {gid!r} (USE="{g.get("USE")}") is not referenced by an '
                         f'fptr in the CSIP structMap (the "{label}" division)', locate(d, g))
    if doc.rep is None:
        _representation_divisions(ctx, doc, subs, groups)

def _metadata_division(ctx: Context, doc: Doc, meta) -> None:
    d = doc.rel
    loc = locate(d, meta)
    current_amd = set()
    for sec in doc.root.findall(f"{M}amdSec"):
        for md in sec:
            if isinstance(md.tag, str) and md.get("ID") and md.get("STATUS") != "SUPERSEDED":
                current_amd.add(md.get("ID"))
    all_amd = amd_ids_of(doc.root)
    current_dmd = {s.get("ID") for s in doc.root.findall(f"{M}dmdSec")
                   if s.get("ID") and s.get("STATUS") != "SUPERSEDED"}
    all_dmd = {s.get("ID") for s in doc.root.findall(f"{M}dmdSec") if s.get("ID")}
    for attr, rid, current, known, what in (("ADMID", "CSIP91", current_amd, all_amd, "administrative"),
                                            ("DMDID", "CSIP92", current_dmd, all_dmd, "descriptive")):
        val = meta.get(attr)
        listed = set((val or "").split())
        unknown = sorted(listed - known)
        if unknown:
            ctx.fail(rid, f"Metadata div {attr} lists {', '.join(unknown)}, which are not {what} "
                     "metadata sections of this METS", loc, Severity.ERROR)
        if current and val is None:
            ctx.fail(rid, f"Metadata div has no {attr}; list the current {what} metadata IDs", loc)
        elif current - listed:
            ctx.fail(rid, f"Metadata div {attr} does not list current {what} metadata "
                     f"{', '.join(sorted(current - listed))}", loc)

def _representation_divisions(ctx: Context, doc: Doc, subs: list, groups: dict) -> None:
    d = doc.rel
    reps_with_mets = {r for r in ctx.representations() if ctx.pkg.is_file(f"representations/{r}/METS.xml")}
    covered: set[str] = set()
    for div in subs:
        label = div.get("LABEL") or ""
        if not label.startswith("Representations/"):
            continue
        loc = locate(d, div)
        name = label.split("/", 1)[1].split("/", 1)[0]
        if not ctx.dir_ci(f"representations/{name}"):
            ctx.fail("CSIP107", f"div LABEL {label!r} names no folder under representations/", loc)
        mptrs = div.findall(f"{M}mptr")
        if len(mptrs) > 1:
            ctx.fail("CSIP109", f"representation div has {len(mptrs)} mptr elements; exactly one allowed", loc)
        if not mptrs:
            if name in reps_with_mets:
                ctx.fail("CSIP109", f"representation div {label!r} has no mptr to "
                         f"representations/{name}/METS.xml", loc)
            continue
        covered.add(name)
        mp = mptrs[0]
        mloc = locate(d, mp)
        title = mp.get(f"{XL}title")
        if blank(title):
            ctx.fail("CSIP108", "mptr has no xlink:title naming the representation's fileGrp ID", mloc)
        elif title not in groups:
            ctx.fail("CSIP108", f"mptr xlink:title {title!r} is not the ID of a fileGrp", mloc)
        if mp.get(f"{XL}type") != "simple":
            ctx.fail("CSIP111", f'mptr xlink:type must be "simple" (found {mp.get(f"{XL}type")!r})', mloc)
        if mp.get("LOCTYPE") != "URL":
            ctx.fail("CSIP112", f'mptr LOCTYPE must be "URL" (found {mp.get("LOCTYPE")!r})', mloc)
        href = mp.get(f"{XL}href")
        if blank(href):
            ctx.fail("CSIP110", "mptr has no xlink:href to the representation METS", mloc)
            continue
        path, why = resolve_href(href, doc.base)
        if path is None:
            ctx.fail("CSIP110", f"mptr xlink:href {href!r} {why}", mloc)
        else:
            ctx.referenced.add(path)
            if not ctx.pkg.is_file(path) and ctx.file_ci(path) is None:
                ctx.fail("CSIP110", f"mptr xlink:href {href!r} does not resolve to a file in the package", mloc)
    for name in sorted(reps_with_mets - covered):
        ctx.fail("CSIP105", f'no div LABEL="Representations/{name}" with an mptr to '
                  f"representations/{name}/METS.xml", d)
