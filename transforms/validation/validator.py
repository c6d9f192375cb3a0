"""Validate an information package against E-ARK CSIP/SIP (2.0.4, 2.1.0, 2.2.0) and our FGS rules.

``validate_package(path)`` opens a folder, tar or zip package safely (:mod:`transforms.common.safe_archive`),
checks its structure, every METS document (the package METS and each representation METS), every
file reference (size and checksum, streamed) and every XML document it can match to a bundled
schema, and returns a :class:`ValidationReport` whose findings name the requirement they break:
``CSIP60``, ``SIP4``, ``CSIPSTR4`` (structure, CSIP section 4), ``ARK2`` (ours, FGS profile) …

This module is the engine: it reads the package in one pass and runs the rules registered by
:mod:`transforms.validation.rules` (one module per section of the specification) at each step.
Requirements are read from the official METS profiles in ``transforms/profiles``;
:func:`list_requirements` says for each one whether a rule checks it. Severity follows the
requirement level (:class:`Severity`).

Where the E-ARK reference validator (eark-validator 1.1.3) applies a rule differently from the
specification, the rules follow the specification; those places carry a comment with the ID.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from transforms.common import xmltools
from transforms.common.errors import ContentError
from transforms.common.masking import safe_name
from transforms.common.safe_archive import DEFAULT_LIMITS, Limits, PackageReader, UnsafeArchive, open_package
from transforms.validation import registry, rules  # noqa: F401 - importing rules registers every rule
from transforms.validation.context import SP, Context, Doc, GroupLog, M, amd_ids_of, blank
from transforms.validation.registry import Scope
from transforms.validation.report import MAX_FINDINGS_PER_REQUIREMENT, SEVERITIES, Finding, Severity, ValidationReport
from transforms.validation.report import id_key as _id_key
from transforms.validation.requirements import (
    CSIP_PROFILE_URL,
    FGS_SPEC_VERSION,
    PROFILE_DIR,
    PROFILES,
    SIP_PROFILE_URL,
    SIP_PROFILE_URL_220,
    SIP_PROFILE_URLS,
    SPEC_VERSIONS,
    VOCABULARY_DIR,
    Requirement,
    vocabulary,
)
from transforms.validation.rules.sip import FORMAT_ATTRS
from transforms.validation.spec import SpecChoice, declared, detect_spec
from transforms.validation.xmlstream import CallbackError, mets_schema

__all__ = [
    "CSIP_PROFILE_URL", "FGS_SPEC_VERSION", "MAX_FINDINGS_PER_REQUIREMENT", "PROFILES", "PROFILE_DIR", "SEVERITIES",
    "SIP_PROFILE_URL", "SIP_PROFILE_URLS", "SIP_PROFILE_URL_220", "SPEC_VERSIONS", "VOCABULARY_DIR", "Finding",
    "Requirement", "Severity", "SpecChoice", "ValidationReport", "add_arguments",
    "detect_spec", "list_requirements", "run", "validate_package", "vocabulary",
]

_log = logging.getLogger(__name__)


_FILE = f"{M}file"
_FILEGRP = f"{M}fileGrp"
_FORMAT_QNAMES = tuple((key, tuple(f"{SP}{n}" for n in names)) for key, names in FORMAT_ATTRS)


class _MetsStream:
    """Callbacks for streaming one METS: check each file of the (first) fileSec once read, drop it.

    A file is checked here, with exactly the checks the fileSec rules run later on the tree
    (:attr:`Scope.FILE`), only when nothing it depends on can still change: it sits in fileGrp
    elements of the document's first fileSec, holds no fileGrp itself, and every ADMID/DMDID it
    names is already known (amdSec and dmdSec precede the fileSec in a valid METS). Any other
    file stays in the tree and is checked there, so the result never depends on streaming.
    """

    def __init__(self, ctx: Context, doc: Doc):
        self.ctx = ctx
        self.doc = doc
        self.sec = None  # the document's first fileSec, once a file has been read
        self.amd_ids: set[str] = set()
        self.dmd_ids: set[str] = set()
        self.file_hooks = registry.hooks(Scope.FILE, ctx.profile)

    def end(self, el) -> None:
        if el.tag != _FILE:
            return
        if self.sec is None:
            self._find_section(el)
        doc = self.doc
        doc.file_count += 1
        get = el.get
        for key, names in _FORMAT_QNAMES:
            vals = [v for n in names if (v := get(n)) is not None]
            if not vals:
                doc.attr_missing[key] += 1
            elif all(blank(v) for v in vals):
                doc.attr_empty[key] += 1
        group = el.getparent()
        if group is None or group.tag != _FILEGRP:
            return
        log = doc.groups.get(group)
        if log is None:
            log = doc.groups[group] = GroupLog()
        if not self._streamable(el, group):
            log.seq.append(el)
            return
        items: list = []
        ctx = self.ctx
        ctx.sink = (log, items)
        try:
            for hook in self.file_hooks:
                ctx.run(hook, doc, el, self.amd_ids, self.dmd_ids)
        finally:
            ctx.sink = None
        if items:
            log.seq.append(items)
        else:
            log.add_clean()
        for sub in el.iter():
            if isinstance(sub.tag, str) and sub.get("ID"):
                doc.removed_ids.add(sub.get("ID"))
        group.remove(el)

    def _find_section(self, el) -> bool:
        """At a file's end: the document's first fileSec, if one has begun (a child of the root).

        Everything before the fileSec is complete by then: the metadata sections it may refer to
        (no amdSec or dmdSec can begin while a fileSec is open).
        """
        root = el.getroottree().getroot()
        sec = root.find(f"{M}fileSec")
        if sec is None:
            return False
        self.sec = sec
        self.amd_ids = amd_ids_of(root)
        self.dmd_ids = {s.get("ID") for s in root.findall(f"{M}dmdSec") if s.get("ID")}
        return True

    def _streamable(self, el, group) -> bool:
        if self.sec is None:
            return False
        p = group
        while p is not None and p.tag == _FILEGRP:
            p = p.getparent()
        if p is not self.sec or next(el.iter(_FILEGRP), None) is not None:
            return False
        for attr, known in (("ADMID", self.amd_ids), ("DMDID", self.dmd_ids)):
            val = el.get(attr)
            if val is not None and any(i not in known for i in val.split()):
                return False
        return True


class _Validator:
    """Reads one package in order and runs the registered rules at each step (see :class:`Scope`)."""

    def __init__(self, reader: PackageReader, report: ValidationReport, profile: str | None,
                 check_integrity: bool, spec_version: str | None = None):
        self.ctx = Context(reader, report, profile, check_integrity, spec_version)
        self.report = report

    @property
    def profile(self) -> str:
        return self.ctx.profile

    def run(self) -> None:
        ctx = self.ctx
        ctx.set_profile(ctx.profile, ctx.spec)
        ctx.run_all(Scope.START)
        if not ctx.pkg.is_file("METS.xml"):
            ctx.run_all(Scope.PACKAGE, without_mets=True)
            return
        self._choose_spec()
        self.report.profile = ctx.profile
        root_doc = self._load("METS.xml", rep=None)
        ctx.root_doc = root_doc
        if root_doc is not None:
            ctx.run_all(Scope.DOCUMENT, root_doc)
            root_doc.release(keep_root=True)
        for rep in ctx.representations():
            rel = f"representations/{rep}/METS.xml"
            if ctx.pkg.is_file(rel):
                doc = self._load(rel, rep=rep)
                if doc is not None:
                    ctx.run_all(Scope.DOCUMENT, doc)
                    doc.release(keep_root=False)
        ctx.run_all(Scope.PACKAGE)

    def _choose_spec(self) -> None:
        """Pick the E-ARK version (and, unforced, the profile) from what the package METS declares."""
        ctx = self.ctx
        attrs, ptype, csip_seen, _near = declared(ctx.pkg)
        choice = detect_spec(attrs.get("PROFILE"), ptype, mets_type=attrs.get("TYPE"),
                             has_csip_attributes=csip_seen)
        profile = ctx.profile if ctx.forced is not None else ("sip" if choice.sip else "csip")
        if ctx.forced_spec:
            spec, reason = ctx.forced_spec, f"forced with --spec-version; the package says: {choice.reason}"
        elif ctx.forced == "fgs":
            spec, reason = FGS_SPEC_VERSION, "FGS 2.0 is CSIP/SIP 2.1.0 plus the FGS rules"
        elif choice.version == "1.x":
            spec = FGS_SPEC_VERSION
            reason = f"{choice.reason}, refused (SPEC-VERSION); its other findings use the 2.1.0 rules"
        else:
            spec, reason = choice.version, choice.reason
        if ctx.forced is None and not choice.sip:
            reason += "; no SIP rules applied"
        ctx.set_profile(profile, spec)
        ctx.run_all(Scope.DECLARED, choice)
        self.report.spec_version = spec
        self.report.declared_version = choice.version
        self.report.spec_reason = reason

    def _load(self, rel: str, *, rep: str | None) -> Doc | None:
        """Stream one METS document: validate it, check each fileSec file as it is read, keep the rest."""
        ctx = self.ctx
        ctx.mets_paths.add(rel)
        doc = Doc(rel, rep=rep)
        stream = _MetsStream(ctx, doc)
        # Checks run while streaming must leave no trace when the document is then rejected.
        saved = (ctx.referenced, self.report.files_checked, self.report.bytes_checked, len(ctx.hashes))
        ctx.referenced = set()
        try:
            res = ctx.xml.stream(rel, ctx.xml.opener(rel, spool=True), schema=mets_schema(ctx.spec),
                                 on_end=stream.end, expect=f"{M}mets")
        except (xmltools.XMLRejected, UnsafeArchive) as exc:
            self._undo(saved)
            ctx.run_all(Scope.LOADED, rel, None, exc, [])
            return None
        except CallbackError as exc:
            ctx.referenced = saved[0]
            raise exc.__cause__ from None
        finally:
            ctx.xml.close_spools()
        root = res.root
        if root.tag != f"{M}mets":
            self._undo(saved)
            ctx.run_all(Scope.LOADED, rel, None, root, [])
            return None
        ctx.referenced = saved[0] | ctx.referenced
        doc.attach(root)
        doc.schemas = res.schemas
        ctx.docs.append(doc)
        ctx.run_all(Scope.LOADED, rel, doc, None, res.errors)
        return doc

    def _undo(self, saved) -> None:
        ctx = self.ctx
        ctx.referenced, self.report.files_checked, self.report.bytes_checked, n = saved
        for key in list(ctx.hashes)[n:]:
            del ctx.hashes[key]


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------
def list_requirements(profile: str = "csip", version: str = FGS_SPEC_VERSION) -> list[Requirement]:
    """Every requirement of ``profile`` ('csip', 'sip' = CSIP+SIP, 'fgs' = SIP+ARK, 'dip' = CSIP+DIP) in
    E-ARK ``version``, each saying whether a registered rule checks it (and what it leaves unjudged)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return [Requirement(**{**r.__dict__, "checked": registry.checked(r.id, profile),
                           "note": registry.note(r.id, profile)})
            for r in registry.requirements(profile, version)]


def validate_package(path: str | Path, profile: str | None = None, *, limits: Limits | None = None,
                     check_integrity: bool = True, compressed: bool = True,
                     spec_version: str | None = None) -> ValidationReport:
    """Validate a package (folder, tar or zip) and return its report; never raises on bad content.

    ``profile`` None picks 'sip' when the package METS has the SIP PROFILE URL, else 'csip';
    'csip', 'sip' or 'fgs' forces that profile. ``spec_version`` (one of :data:`SPEC_VERSIONS`)
    forces the E-ARK version; otherwise the package's declaration decides (see :func:`detect_spec`),
    and ``fgs`` means 2.1.0. ``check_integrity`` False skips file sizes and
    checksums (file presence is still checked). ``compressed`` False refuses compressed tars (see
    :func:`~transforms.common.safe_archive.open_package`). An unsafe archive or unreadable package becomes
    an invalid report with a ``PACKAGE`` finding, whatever its bytes; only a missing ``path``
    raises FileNotFoundError, and an OSError with an errno (the disk's, not the package's) passes.
    """
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if spec_version is not None and spec_version not in SPEC_VERSIONS:
        raise ValueError(f"unknown E-ARK version {spec_version!r}; choose one of {', '.join(SPEC_VERSIONS)}")
    report = ValidationReport(path=str(path), profile=profile or "csip")
    try:
        reader = open_package(path, limits or DEFAULT_LIMITS, compressed=compressed)
    except FileNotFoundError:
        raise
    except UnsafeArchive as exc:
        report.findings.append(Finding("PACKAGE", Severity.ERROR, f"{exc}; the package was not opened",
                                       safe_name(exc.member or "")))
        return report
    except ContentError as exc:
        report.findings.append(Finding("PACKAGE", Severity.ERROR, safe_name(str(exc)), ""))
        return report
    except OSError as exc:
        if exc.errno is not None:
            raise
        report.findings.append(Finding("PACKAGE", Severity.ERROR,
                                       f"the package could not be opened ({type(exc).__name__})", ""))
        return report
    except Exception as exc:  # noqa: BLE001 - no byte sequence may turn into a traceback
        _log.warning("opening a package for validation stopped on %s", type(exc).__name__)
        report.findings.append(Finding("PACKAGE", Severity.ERROR,
                                       f"the package could not be opened ({type(exc).__name__})", ""))
        return report
    with reader:
        v = _Validator(reader, report, profile, check_integrity, spec_version)
        try:
            v.run()
        except UnsafeArchive as exc:
            report.findings.append(Finding("PACKAGE", Severity.ERROR, str(exc), safe_name(exc.member or "")))
        except OSError as exc:
            if exc.errno is not None:  # the disk's fault, not the package's: retry, do not judge
                raise
            report.findings.append(Finding("PACKAGE", Severity.ERROR, "could not read the package: "
                                           f"damaged data ({type(exc).__name__})", ""))
        except Exception as exc:  # noqa: BLE001 - no byte sequence may turn into a traceback
            # Whatever a parser or decompressor raised on these bytes (struct.error, RecursionError,
            # MemoryError from a declared size, ...): the package is not valid. Only the type is
            # shown, since an exception's text may quote the package's content.
            _log.warning("validation of a package stopped on %s", type(exc).__name__)
            report.findings.append(Finding("PACKAGE", Severity.ERROR, "could not read the package: "
                                           f"damaged or unreadable content ({type(exc).__name__})", ""))
        report.profile = v.profile
    report.checked = sorted((r.id for r in registry.requirements(report.profile, report.spec_version)
                             if registry.checked(r.id, report.profile)), key=_id_key)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``arkiv validate``."""
    parser.add_argument("paths", nargs="*", metavar="PATH", help="package folder, .tar(.gz/.bz2/.xz) or .zip")
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="force a profile (default: sip if the METS declares a SIP, else csip)")
    parser.add_argument("--spec-version", choices=SPEC_VERSIONS, default=None,
                        help="apply this E-ARK CSIP/SIP version's rules (default: the version the package "
                             "declares; 2.1.0 for --profile fgs)")
    parser.add_argument("--json", action="store_true", help="print reports as JSON")
    parser.add_argument("--requirements", action="store_true",
                        help="list the profile's requirements and whether each is checked, then exit")


def run(args: argparse.Namespace) -> int:
    """Run ``arkiv validate``: 0 when every package is valid, 1 when any is not, 2 on usage errors."""
    profile = getattr(args, "profile", None)
    if getattr(args, "requirements", False):
        reqs = list_requirements(profile or "csip", getattr(args, "spec_version", None) or FGS_SPEC_VERSION)
        if args.json:
            print(json.dumps([r.to_dict() for r in reqs], ensure_ascii=False, indent=2))
        else:
            for r in reqs:
                mark = "checked  " if r.checked else "unchecked"
                note = f" — {r.note}" if r.note else ""
                print(f"{r.id:<10} {r.level:<6} {mark} {r.title}{note}")
        return 0
    paths = list(getattr(args, "paths", []) or [])
    if not paths:
        print("arkiv validate: give at least one package path", file=sys.stderr)
        return 2
    missing = [p for p in paths if not Path(p).exists() and not Path(p).is_symlink()]
    if missing:
        print(f"arkiv validate: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    reports = []
    for p in paths:
        try:
            reports.append(validate_package(p, profile, spec_version=getattr(args, "spec_version", None)))
        except FileNotFoundError:
            print(f"arkiv validate: no such file or folder: {p}", file=sys.stderr)
            return 2
    if args.json:
        out = [r.to_dict() for r in reports]
        print(json.dumps(out[0] if len(out) == 1 else out, ensure_ascii=False, indent=2))
    else:
        for r in reports:
            print(r.to_text())
    return 0 if all(r.valid for r in reports) else 1
