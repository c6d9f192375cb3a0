"""Prepared systems: finished FGS/E-ARK packages delivered into an inbox.

Each package is validated with the same validator as ``arkiv validate``. A package that is
already CSIP/SIP 2.1.0 (FGS 2.0) is ingested exactly as delivered. Any other E-ARK 2.x package
goes through the same code as ``arkiv prepare`` (:mod:`transforms.packaging.prepare`): what can be derived
from the package itself is completed, the delivered original is kept inside the result, and every
change becomes an event (outcome ``repaired``). Anything else is quarantined with its validation
report; a checksum that does not match, for instance, is never "repaired": it may be the very
damage fixity exists to catch.

Accepted packages then get the same format identification and policy check as the packages
we build (:mod:`transforms.formats.identification`): every file under ``representations/*/data/`` is
identified, and a file the policy would not accept in a preservation representation is
reported in the intake's findings (the delivered package itself is never changed for it).
With an identification cache (the catalogue's), a file whose content was identified before
with the same signatures is not identified again: a re-delivered package, or the same
attachment in many packages, costs a hash, not an identification.

The inbox is a folder or an S3 prefix (:mod:`transforms.intake.inbox`): from a prefix each
package is first streamed to the worker's disk, then judged exactly as from a folder; a bad
one's original moves to ``<prefix>/.quarantine/`` beside the local quarantine folder.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from lxml import etree

from transforms.common.errors import ContentError
from transforms.common.hashing import copy_hashed, fsync_dir, sha256_file
from transforms.common.masking import safe_name
from transforms.common.safe_archive import (
    KIND_LABELS,
    UnsafeArchive,
    container_kind,
    extract_package,
    open_package,
)
from transforms.common.xmltools import NS_ERMS, NS_METS, NS_XLINK, parse_bytes
from transforms.formats.identification import FormatPolicy, IdentificationCache, Identifier, default_policy
from transforms.intake.inbox import QUARANTINE, InboxObject, S3Inbox, is_package_name, key_problem
from transforms.packaging.erms import appendix_problems
from transforms.packaging.prepare import prepare_package
from transforms.validation.validator import FGS_SPEC_VERSION, Finding, ValidationReport, validate_package

M = f"{{{NS_METS}}}"
XLINK = f"{{{NS_XLINK}}}"


class IntakeOutcome(StrEnum):
    """What intake made of one delivered package."""

    #: already FGS 2.0 (CSIP/SIP 2.1.0): taken in exactly as delivered
    VALID = "valid"
    #: another E-ARK 2.x package, completed from itself; the delivered original is kept inside
    REPAIRED = "repaired"
    #: invalid: moved to quarantine with its validation report
    QUARANTINED = "quarantined"


@dataclass
class Intake:
    """What happened to one delivered package."""

    source: str  # the file's name in the inbox
    outcome: IntakeOutcome
    package_id: str | None = None
    path: str | None = None  # the copy to ship (build folder)
    sha256: str | None = None
    size: int | None = None
    repairs: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    report: str | None = None  # quarantine: the validation report's path
    formats: list[dict] = field(default_factory=list)  # every data file's identification and policy outcome
    format_findings: list[str] = field(default_factory=list)  # files the format policy does not accept
    #: an S3 inbox: the delivered object as taken in (SHA-256, size, ETag), to move it out verified
    delivered_sha256: str | None = None
    delivered_size: int | None = None
    delivered_etag: str | None = None


def delivered(inbox: Path) -> list[Path]:
    """The package files waiting in an inbox (hidden files and folders are not deliveries).

    Compressed tars are listed too, so that they are quarantined with a reason instead of lying
    unseen: intake stores only plain tars and zips (see :func:`take_in`).
    """
    if not inbox.is_dir():
        return []
    return sorted(p for p in inbox.iterdir() if p.is_file() and is_package_name(p.name))


def _suffix(path: Path) -> str:
    """The name a stored package gets: what its bytes are, never what the delivery was called."""
    kind = container_kind(path)
    if kind not in ("tar", "zip"):
        raise ContentError(f"{safe_name(path.name)}: {KIND_LABELS[kind]} is not stored as a package")
    return f".{kind}"


#: errno values that say the system, not the delivery, failed: intake stops and is retried
_SYSTEM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EMFILE, errno.ENFILE, errno.ENOMEM}


def take_in(inbox: Path | S3Inbox, build_dir: Path, quarantine_dir: Path, policy: FormatPolicy | None = None,
            identification_cache: IdentificationCache | None = None) -> list[Intake]:
    """Validate, repair or quarantine every package in ``inbox``; accepted ones are copied to ``build_dir``.

    Accepted packages are also identified and checked against ``policy`` (default: the shipped one);
    with ``identification_cache`` a content identified before is looked up, not identified again.
    ``inbox`` is a folder or an :class:`~transforms.intake.inbox.S3Inbox` (see :func:`_take_in_s3`).
    Each delivery is judged on its own: whatever its bytes make the validator, the repair or the
    format check raise, that delivery is quarantined with the rule it broke and the others are
    still taken in. Only a system error (disk full, I/O error) stops the intake.

    A compressed tar is refused (quarantined with a reason that says to send a plain ``.tar`` or
    a ``.zip``): a stored package is served by byte offset, which a compressed stream does not have.
    """
    build_dir.mkdir(parents=True, exist_ok=True)
    checker = _FormatCheck(policy or default_policy(), build_dir, identification_cache)
    if isinstance(inbox, S3Inbox):
        return _take_in_s3(inbox, build_dir, quarantine_dir, checker)
    out: list[Intake] = []
    for path in delivered(inbox):
        judged = _judge_one(path, build_dir, quarantine_dir, checker, out)
        if judged is not None:
            out.append(judged)
    return out


def _judge_one(path: Path, build_dir: Path, quarantine_dir: Path, checker: _FormatCheck,
               out: list[Intake]) -> Intake | None:
    """One delivery judged on its own: anything its bytes make the checks raise quarantines it; None when
    it was taken away meanwhile. A system error (disk full, I/O error) is raised."""
    made: list[Path] = []
    try:
        return _judge(path, build_dir, quarantine_dir, checker, out, made)
    except Exception as exc:
        for f in made:
            f.unlink(missing_ok=True)
        if isinstance(exc, OSError) and (exc.errno in _SYSTEM_ERRNOS or not path.exists()):
            if not path.exists():
                return None  # taken away while we looked at it: nothing left to judge
            raise
        return _quarantine(path, _failure_report(path, exc), quarantine_dir, None)


def _take_in_s3(inbox: S3Inbox, build_dir: Path, quarantine_dir: Path, checker: _FormatCheck) -> list[Intake]:
    """:func:`take_in` for an S3 inbox: each package directly under the prefix is streamed to the worker's
    disk (hashed on the way) and judged there exactly as from a folder.

    A key that cannot be a file name (:func:`~transforms.intake.inbox.key_problem`) is not read: it is
    quarantined with that reason. A quarantined package's original moves (copied, verified, then
    deleted) to ``<prefix>/.quarantine/<the local quarantine folder's name>/`` with its report.
    """
    out: list[Intake] = []
    scratch = build_dir / f".inbox-{uuid.uuid4().hex[:8]}"
    scratch.mkdir(parents=True)
    try:
        for obj in inbox.listing(direct=True):
            if not is_package_name(obj.key):
                continue
            if problem := key_problem(obj.key):
                refused = _refused_key(obj.key, problem, quarantine_dir)
                _quarantine_original(inbox, obj, Path(refused.report).parent, None)
                out.append(refused)
                continue
            local = scratch / obj.key
            sha256 = inbox.download(obj.key, obj, local)
            judged = _judge_one(local, build_dir, quarantine_dir, checker, out)
            if judged is None:
                continue
            judged.delivered_sha256, judged.delivered_size, judged.delivered_etag = sha256, obj.size, obj.etag
            if judged.outcome == IntakeOutcome.QUARANTINED:
                _quarantine_original(inbox, obj, Path(judged.report).parent, sha256)
            local.unlink(missing_ok=True)
            out.append(judged)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def _refused_key(key: str, problem: str, quarantine_dir: Path) -> Intake:
    """The intake of an object whose key cannot be a file name: quarantined unread, with the reason."""
    report = ValidationReport(path=safe_name(key), profile="sip")
    report.findings.append(Finding("PACKAGE", "ERROR", f"the object's key {problem}; send the package under a "
                                   "plain file name", safe_name(key)))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    dest_dir = quarantine_dir / f"{stamp}-{safe_name(key)[:180].replace('/', '_')}"
    dest_dir.mkdir(parents=True, exist_ok=True)
    report_path = dest_dir / "validation-report.json"
    report_path.write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
    return Intake(source=key, outcome=IntakeOutcome.QUARANTINED,
                  findings=[f"{f.requirement}: {f.message}" for f in report.findings], report=str(report_path))


def _quarantine_original(inbox: S3Inbox, obj: InboxObject, local: Path, sha256: str | None) -> None:
    """Move a quarantined package's original out of the S3 inbox, its report beside it."""
    where = f"{QUARANTINE}/{local.name}"
    name = obj.key if not key_problem(obj.key) else safe_name(obj.key)[:180].replace("/", "_")
    inbox.move(obj.key, f"{where}/{name}", obj, sha256)
    report = local / "validation-report.json"
    if report.is_file():
        inbox.put_text(f"{where}/validation-report.json", report.read_text(encoding="utf-8"))


def _failure_report(path: Path, exc: BaseException):
    """An invalid report for a delivery whose checking raised: the rule, never the exception's text."""
    report = ValidationReport(path=str(path), profile="sip")
    if isinstance(exc, UnsafeArchive):
        why = str(exc)
    else:
        why = f"the package could not be checked: damaged or unreadable content ({type(exc).__name__})"
    report.findings.append(Finding("PACKAGE", "ERROR", why, safe_name(path.name)))
    return report


def _judge(path: Path, build_dir: Path, quarantine_dir: Path, checker: _FormatCheck, out: list[Intake],
           made: list[Path]) -> Intake:
    """One delivery's outcome; files it writes to ``build_dir`` are listed in ``made`` until it returns."""
    # Already FGS 2.0 (CSIP/SIP 2.1.0): taken in as delivered. Other versions are prepared.
    report = validate_package(path, "sip", compressed=False, spec_version=FGS_SPEC_VERSION)
    errors = [f for f in report.findings if f.severity == "ERROR"]
    objid = _objid(path) if report.valid or errors else None
    if objid and any(i.package_id == objid for i in out):
        # Two deliveries claim one identity: neither may silently replace the other.
        return _quarantine(path, report, quarantine_dir, errors,
                           note=f"OBJID {safe_name(objid)} was already delivered in this intake as another file")
    if report.valid:
        if owners := _file_owner_problems(path, report):
            return _quarantine(path, report, quarantine_dir, owners)
        return checker.check(_accept(path, path, build_dir, IntakeOutcome.VALID, [], made))
    if any(f.requirement == "PACKAGE" for f in errors):
        return _quarantine(path, report, quarantine_dir, errors)
    with tempfile.TemporaryDirectory(prefix=".prepare-", dir=build_dir) as work:
        result = prepare_package(path, Path(work), as_tar=True, identifier=checker.identifier(),
                                 identification_cache=checker.cache)
        if not result.ok:
            delivered = result.report or report
            seen = {(f.requirement, f.message) for f in delivered.findings}
            delivered.findings.extend(f for f in result.findings if (f.requirement, f.message) not in seen)
            return _quarantine(path, delivered, quarantine_dir, result.findings)
        second = result.report
        if owners := _file_owner_problems(Path(result.package), second):
            return _quarantine(path, second, quarantine_dir, owners)
        repairs = [f"{c.requirement}: {c.what} (was {c.original!r}) [{c.location}]" if c.original else
                   f"{c.requirement}: {c.what} [{c.location}]" for c in result.changes]
        repairs.append(f"prepared from E-ARK {result.delivered_version}; the delivered package is kept unchanged "
                       f"in the package (SHA-256 {result.original_sha256})")
        return checker.check(_accept(path, Path(result.package), build_dir, IntakeOutcome.REPAIRED, repairs, made))


#: the intake's own rule: every file a case names in the package's ERMS is a data file of that case alone
RECORD_FILES = "RECORD-FILES"


def _file_owner_problems(path: Path, report: ValidationReport) -> list[Finding]:
    """Findings for every ERMS appendix that names another case's file, a metadata file or a path out of
    the package's data (added to ``report`` too); an empty list when every file belongs to its record."""
    found: list[Finding] = []
    with open_package(path) as reader:
        for rel in reader.files():
            parts = rel.split("/")
            if not rel.lower().endswith(".xml") or "descriptive" not in parts[:-1] or "data" in parts:
                continue
            data = reader.read_bytes(rel, 512 * 1024 * 1024)
            if etree.QName(parse_bytes(data, name=rel).getroot()).namespace != NS_ERMS:
                continue
            found += [Finding(RECORD_FILES, "ERROR", f"a file belongs to its record: {p}", safe_name(rel))
                      for p in appendix_problems(data, rel)]
    report.findings.extend(found)
    return found


class _FormatCheck:
    """Identify a delivered package's data files with one loaded fido and judge them by the policy."""

    def __init__(self, policy: FormatPolicy, work_parent: Path, cache: IdentificationCache | None = None):
        self.policy = policy
        self.work_parent = work_parent
        self.cache = cache
        self._identifier: Identifier | None = None

    def identifier(self) -> Identifier:
        if self._identifier is None:
            self._identifier = Identifier.shared()  # loading fido's signatures takes a second: once a process
        return self._identifier

    def check(self, intake: Intake) -> Intake:
        identifier = self.identifier()
        with extract_package(intake.path, parent=self.work_parent) as root:
            files = [str(f) for f in sorted(root.glob("representations/*/data/**/*")) if f.is_file()]
            for name, ident in identifier.identify_stream(files, cache=self.cache):
                f = Path(name)
                rel = f.relative_to(root).as_posix()
                decision = self.policy.decide(ident)
                # A representation named *-original keeps the originals of migrated files (ours, and
                # the usual E-ARK practice): identified and recorded, but not judged for preservation.
                original = rel.split("/")[1].endswith("-original")
                digest, size = sha256_file(f)
                intake.formats.append({
                    "path": rel, "representation": rel.split("/")[1], "puid": ident.puid if ident.identified else None,
                    "format_name": ident.name, "format_version": ident.version, "mime": ident.mime,
                    "method": ident.method, "tool": ident.tool, "sha256": digest, "size": size,
                    "outcome": "original" if original else
                    "accepted" if decision.action == "accept" else f"policy: {decision.action}",
                    "reason": decision.reason})
                if decision.action != "accept" and not original:
                    intake.format_findings.append(f"{rel}: format policy {self.policy.name} says "
                                                  f"{decision.action}: {decision.reason}")
        return intake


def _objid(path: Path) -> str | None:
    try:
        with open_package(path) as reader:
            return parse_bytes(reader.read_bytes("METS.xml", 512 * 1024 * 1024), name="METS.xml").getroot().get("OBJID")
    except Exception:  # an unreadable package is reported by the validator, not here
        return None


def _accept(original: Path, path: Path, build_dir: Path, outcome: IntakeOutcome, repairs: list[str],
            made: list[Path]) -> Intake:
    with open_package(path, compressed=False) as reader:
        mets = parse_bytes(reader.read_bytes("METS.xml", 512 * 1024 * 1024), name="METS.xml").getroot()
        records = _records(reader)
    objid = mets.get("OBJID")
    dest = build_dir / f"{objid}{_suffix(path)}"
    tmp = dest.with_name(f".{dest.name}.part-{uuid.uuid4().hex[:8]}")
    try:
        digest, size = copy_hashed(path, tmp)
        os.replace(tmp, dest)
        made.append(dest)
        fsync_dir(build_dir)
    finally:
        tmp.unlink(missing_ok=True)
    return Intake(source=original.name, outcome=outcome, package_id=objid, path=str(dest), sha256=digest,
                  size=size, repairs=repairs, records=records)


def _records(reader) -> list[dict]:
    """The cases a package describes in ERMS (for the catalogue): id, reference and dates only."""
    out: list[dict] = []
    for rel in reader.files():
        if not (rel.startswith("metadata/descriptive/") and rel.lower().endswith(".xml")):
            continue
        root = parse_bytes(reader.read_bytes(rel, 512 * 1024 * 1024), name=rel).getroot()
        if etree.QName(root).namespace != NS_ERMS:
            continue
        ns = {"e": NS_ERMS}
        for agg in root.iterfind(".//e:aggregation", ns):
            dates = {d.get("dateType"): (d.text or "")[:10] for d in agg.iterfind("e:dates/e:date", ns)}
            out.append({"source_id": agg.get("systemIdentifier") or "", "reference": agg.findtext("e:objectId", "",
                        ns), "opened": dates.get("opened") or dates.get("created"), "closed": dates.get("closed")})
    return out


def _quarantine(path: Path, report, quarantine_dir: Path, errors, note: str | None = None) -> Intake:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    # The folder's name is printed wherever the report's path is: escaped, masked and kept short.
    dest_dir = quarantine_dir / f"{stamp}-{safe_name(path.name)[:180]}"
    dest_dir.mkdir(parents=True, exist_ok=True)
    report_path = dest_dir / "validation-report.json"
    report_path.write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(path, dest_dir / path.name)
    if errors is None:
        errors = [f for f in report.findings if f.severity == "ERROR"]
    findings = [f"{f.requirement}: {f.message}" for f in errors] + ([note] if note else [])
    return Intake(source=path.name, outcome=IntakeOutcome.QUARANTINED, findings=findings, report=str(report_path))


def intake_dict(i: Intake) -> dict:
    """An intake as the staged batch's manifest keeps it (JSON: the outcome as its string)."""
    return {**asdict(i), "outcome": str(i.outcome)}


def intake_from_dict(data: dict) -> Intake:
    """An intake read back from a staged batch's manifest."""
    return Intake(**{**data, "outcome": IntakeOutcome(data["outcome"])})


__all__ = ["Intake", "IntakeOutcome", "delivered", "intake_dict", "intake_from_dict", "take_in"]
