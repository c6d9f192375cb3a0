"""CSIP section 4, the folder structure of a package (CSIPSTR1–16).

These requirements are not in the METS profile, so their wording is summarised here from the
specification text.
"""

from __future__ import annotations

from transforms.validation.context import Context, Doc, blank
from transforms.validation.registry import Definition, Scope, Section, define, not_checkable, register

_SOURCE = "CSIP {version} §4 (folder structure)"


def _structure(rid: str, level: str, title: str, text: str) -> Definition:
    return Definition(rid, level, title, text, source=_SOURCE, own=False)


define(
    Section.STRUCTURE,
    _structure("CSIPSTR1", "MUST", "Package root folder",
               "An information package is contained in a single root folder; an archive (tar, zip) must "
               "unpack to a single root folder."),
    _structure("CSIPSTR2", "SHOULD", "Root folder name",
               "The package root folder should be named with the package ID, the METS @OBJID."),
    _structure("CSIPSTR3", "MAY", "Compressed package",
               "The package root folder may be packed in an archive (tar, zip)."),
    _structure("CSIPSTR4", "MUST", "Package METS",
               "The package root folder must contain a metadata file named METS.xml."),
    _structure("CSIPSTR5", "SHOULD", "Metadata folder",
               "The package root folder should contain a folder named metadata."),
    _structure("CSIPSTR6", "SHOULD", "Preservation metadata folder",
               "Preservation metadata should be placed in the sub-folder metadata/preservation."),
    _structure("CSIPSTR7", "SHOULD", "Descriptive metadata folder",
               "Descriptive metadata should be placed in the sub-folder metadata/descriptive."),
    _structure("CSIPSTR8", "MAY", "Other metadata folders",
               "Other metadata may be placed in further sub-folders of metadata."),
    _structure("CSIPSTR9", "SHOULD", "Representations folder",
               "The package root folder should contain a folder named representations."),
    _structure("CSIPSTR10", "SHOULD", "Representation folders",
               "The representations folder should contain one sub-folder per representation."),
    _structure("CSIPSTR11", "SHOULD", "Representation data folder",
               "A representation folder should contain a folder named data."),
    _structure("CSIPSTR12", "SHOULD", "Representation METS", "A representation folder should contain a METS.xml."),
    _structure("CSIPSTR13", "SHOULD", "Representation metadata folder",
               "A representation folder should contain a folder named metadata."),
    _structure("CSIPSTR14", "MAY", "Additional folders",
               "The package and representation folders may have further sub-folders."),
    _structure("CSIPSTR15", "SHOULD", "Schemas folder",
               "XML schemas used in the package should be placed in a folder named schemas."),
    _structure("CSIPSTR16", "SHOULD", "Documentation folder",
               "Supplementary documentation should be placed in a folder named documentation."),
)
not_checkable("CSIPSTR3", "a permission (packages may be archived); nothing to violate")
not_checkable("CSIPSTR8", "a permission (other metadata folders); nothing to violate")
not_checkable("CSIPSTR14", "a permission (additional folders); nothing to violate")

folders = register("structure", [f"CSIPSTR{i}" for i in (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 15, 16)],
                   section=Section.STRUCTURE)


@folders.on(Scope.START)
def package_root(ctx: Context) -> None:
    """CSIPSTR1 one root folder, CSIPSTR4 a METS.xml in it (without one, nothing else is read)."""
    pkg = ctx.pkg
    if not pkg.single_root:
        ctx.fail("CSIPSTR1", "the archive does not unpack to a single package root folder; "
                 "put everything inside one folder named after the package OBJID", pkg.source.name)
    if not pkg.is_file("METS.xml"):
        near = [n for n in ctx.listdir("") if n.lower().endswith(".xml")]
        hint = f" (found {', '.join(near[:3])}; the name is case-sensitive)" if near else ""
        ctx.fail("CSIPSTR4", f"the package root has no METS.xml{hint}", pkg.root)


@folders.on(Scope.DOCUMENT, at=Section.METS_ROOT, order=1)
def root_folder_name(ctx: Context, doc: Doc) -> None:
    """CSIPSTR2: the package root folder is named after the package METS @OBJID."""
    objid = doc.root.get("OBJID")
    if doc.rep is None and not blank(objid) and objid != ctx.pkg.root:
        ctx.fail("CSIPSTR2", f"the package root folder {ctx.pkg.root!r} is not named after OBJID {objid!r}",
                 doc.rel)


@folders.on(Scope.PACKAGE, without_mets=True)
def recommended_folders(ctx: Context) -> None:
    """CSIPSTR5, 9–13, 15, 16: metadata/, representations/<rep>/{data,metadata,METS.xml}, schemas/, documentation/."""
    pkg = ctx.pkg
    top = ctx.listdir("")
    if "metadata" not in top or not pkg.is_dir("metadata"):
        ctx.fail("CSIPSTR5", "the package root has no metadata/ folder", pkg.root)
    if "representations" not in top or not pkg.is_dir("representations"):
        ctx.fail("CSIPSTR9", "the package root has no representations/ folder", pkg.root)
    else:
        reps = ctx.representations()
        loose = [n for n in ctx.listdir("representations") if pkg.is_file(f"representations/{n}")]
        if not reps or loose:
            ctx.fail("CSIPSTR10", "representations/ should hold one folder per representation"
                     + (f" (found files {', '.join(loose[:3])})" if loose else ""), "representations")
        for rep in reps:
            inside = ctx.listdir(f"representations/{rep}")
            where = f"representations/{rep}"
            if "data" not in inside or not pkg.is_dir(f"{where}/data"):
                ctx.fail("CSIPSTR11", f"{where} has no data/ folder", where)
            if "METS.xml" not in inside:
                ctx.fail("CSIPSTR12", f"{where} has no METS.xml", where)
            if "metadata" not in inside:
                ctx.fail("CSIPSTR13", f"{where} has no metadata/ folder", where)
    if "schemas" not in top:
        ctx.fail("CSIPSTR15", "the package root has no schemas/ folder for the XML schemas used", pkg.root)
    if "documentation" not in top:
        ctx.fail("CSIPSTR16", "the package root has no documentation/ folder", pkg.root)


@folders.on(Scope.PACKAGE)
def metadata_folders(ctx: Context) -> None:
    """CSIPSTR6/7: metadata referenced from dmdSec/amdSec sits in the recommended folders."""
    if ctx.root_doc is None:
        return
    for path in sorted(ctx.dmd_refs):
        if "/metadata/" not in f"/{path}" or "/metadata/descriptive/" not in f"/{path}":
            ctx.fail("CSIPSTR7", f"descriptive metadata {path} is not under a metadata/descriptive/ folder", path)
    for path in sorted(ctx.amd_refs):
        if "/metadata/" not in f"/{path}":
            ctx.fail("CSIPSTR6", f"administrative metadata {path} is not under a metadata/ folder", path)
