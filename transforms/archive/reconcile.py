"""Reconciliation: does the catalogue agree with what the mellanarkiv and the slutarkiv hold?

The catalogue says where every package is; the storage locations hold the bytes. A crash,
a full disk or a hand in the bucket can make them disagree. :func:`reconcile` compares the
two, in both directions, and reports each disagreement as a :class:`Finding` with a kind an
operator can look up:

``orphan``               stored, but not catalogued (or not where the catalogue says)
``missing``              catalogued, but not stored
``mismatch``             stored with another size or checksum than catalogued
``temporary``            a leftover of an interrupted write (temp file, multipart upload, work folder)
``unsealed``             an OCFL object in a bucket without its declaration (upload interrupted)
``unrecorded_transfer``  the AIP is in the slutarkiv, the catalogue still says mellanarkiv
``pending_removal``      transfer recorded, but the SIP is still in the mellanarkiv
``unfinished_disposal``  a disposal started (tombstone) but is not finished
``duplicate_record``     a record in more than one package that is not disposed of
``unplaced_record``      a record in no place (its package disposed of without a tombstone, or
                         fewer catalogued records than the package says it holds)
``missing_event``        a package without the PREMIS events its state requires
``partial_batch``        a batch with some of its packages recorded that is not archived (a build or
                         ship failed part-way), or an archived batch missing one of its packages

``repair=True`` acts only where the action cannot lose anything, and records a PREMIS event
for each action:

* an interrupted write's leftover (temporary file, multipart upload, OCFL work folder, unsealed
  partial object whose SIP is still in the mellanarkiv) is removed — it was never verified,
  never recorded, and its source is still where it came from;
* an uncatalogued package in the mellanarkiv (a run killed between copy and catalogue) is
  *set aside*: copied to the quarantine folder, the copy verified, only then removed from the
  mellanarkiv, so a rerun can store the package again;
* an interrupted transfer is finished with :func:`transforms.archive.retention.transfer` once the
  slutarkiv's object verifies (and only when no legal hold covers the package).

Leftovers younger than ``grace`` are left alone (a run may be writing them right now).
Everything else is reported with what to do, never changed.

With a working bucket (``ARKIV_WORK=s3://…``, :mod:`transforms.archive.workarea`) its objects are
checked against the catalogue too. What a finished or abandoned run left there is a *leftover*
(``work_leftover``): reported with its fix, but not an inconsistency (the exit status stays 0):

* a staged batch whose batch is archived, whose quality case was rejected, or that has no batch row;
* a built package or sidecar whose package is already recorded (the mellanarkiv holds it);
* a built package without its sidecar, or a sidecar without its package (a killed package step);
* an incomplete multipart upload older than the grace period;
* quarantine material no case names.

``clean_work=True`` (``arkiv reconcile --clean-work``) removes the leftovers whose fate the
catalogue confirms — a staged batch of an archived batch (every planned package recorded) or of a
rejected case, a built package or sidecar of a recorded package whose stored copy the mellanarkiv
confirms, an incomplete upload — with an event for each. Quarantine material is never removed.
What the catalogue still expects and the bucket does not hold (the material of an open quality
case, or of an approved one whose batch is not archived yet) is a ``missing`` finding: a failure.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import sys
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import sqlalchemy as sa

from transforms import SOFTWARE_LABEL
from transforms.archive import ocfl
from transforms.catalogue import (
    Batch,
    BatchStatus,
    Catalogue,
    DisposalList,
    Event,
    Package,
    PackageStatus,
    QuarantineCase,
    Record,
    Tombstone,
)
from transforms.common.errors import StorageError
from transforms.common.hashing import copy_hashed, sha256_file

if TYPE_CHECKING:
    from transforms.archive.storage import FileSystemStorage, S3Storage
    from transforms.archive.workarea import BucketWorkArea
    from transforms.config.settings import Settings

    Storage = FileSystemStorage | S3Storage

log = logging.getLogger("arkivflode")
AGENT = f"{SOFTWARE_LABEL} (reconcile)"

#: the PREMIS events a package must have, by catalogue status
REQUIRED_EVENTS = {
    PackageStatus.STORED: {"replication", "fixity check", "validation", "ingestion"},
    PackageStatus.TRANSFERRED: {"replication", "ingestion", "transfer", "receipt"},
    PackageStatus.DISPOSED: {"replication", "ingestion", "deletion"},
}
_OCFL_ROOT_FILES = {ocfl.ROOT_DECLARATION, "ocfl_layout.json"}


@dataclass
class Finding:
    """One disagreement between the catalogue and a storage location."""

    kind: str
    where: str  # mellanarkiv | slutarkiv | catalogue | work area
    key: str  # the storage key, object id or record
    detail: str
    package_id: str | None = None
    action: str = ""  # what --repair would do, or what a person should do
    repairable: bool = False
    repaired: bool = False
    #: something a finished or abandoned run left in the working bucket: reported, not an inconsistency
    leftover: bool = False


@dataclass
class Report:
    """What reconcile looked at and what it found; ``consistent`` when nothing is left to fix."""

    deep: bool
    repair: bool
    checked: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    clean_work: bool = False

    @property
    def outstanding(self) -> list[Finding]:
        """What is left to fix: neither repaired nor a working-bucket leftover."""
        return [f for f in self.findings if not f.repaired and not f.leftover]

    @property
    def leftovers(self) -> list[Finding]:
        """Working-bucket leftovers still there (``--clean-work`` removes the removable ones)."""
        return [f for f in self.findings if f.leftover and not f.repaired]

    @property
    def consistent(self) -> bool:
        return not self.outstanding

    def to_dict(self) -> dict:
        return {"consistent": self.consistent, "deep": self.deep, "repair": self.repair,
                "clean_work": self.clean_work, "checked": self.checked,
                "counts": dict(Counter(f.kind for f in self.outstanding)),
                "leftovers": len(self.leftovers),
                "repaired": sum(f.repaired for f in self.findings),
                "findings": [asdict(f) for f in self.findings]}

    def text(self) -> str:
        c = self.checked
        lines = [f"reconcile ({'deep: checksums recomputed' if self.deep else 'sizes and recorded checksums'}): "
                 f"{c.get('packages', 0)} catalogued package(s), {c.get('mellanarkiv_objects', 0)} object(s) in "
                 f"the mellanarkiv, {c.get('slutarkiv_objects', 0)} OCFL object(s) in the slutarkiv, "
                 f"{c.get('records', 0)} record(s)"]
        if "work_objects" in c:
            lines.append(f"  working bucket: {c['work_objects']} object(s), {c.get('work_uploads', 0)} incomplete "
                         "upload(s)")
        for f in self.findings:
            state = ("REMOVED" if f.leftover else "REPAIRED") if f.repaired else (
                ("leftover, --clean-work removes it" if f.repairable else "leftover") if f.leftover else
                "repairable" if f.repairable else "needs a person")
            lines.append(f"  {f.kind:<20} {f.where:<11} {f.key}: {f.detail} [{state}]"
                         + (f" — {f.action}" if f.action and not f.repaired else ""))
        lines.append(("consistent" if self.consistent else
                      f"{len(self.outstanding)} inconsistenc{'y' if len(self.outstanding) == 1 else 'ies'}")
                     + (f"; {len(self.leftovers)} leftover(s) in the working bucket" if self.leftovers else ""))
        return "\n".join(lines)


# --- what the storage locations hold -----------------------------------------------------------------

@dataclass(frozen=True)
class _Item:
    key: str
    size: int
    modified: dt.datetime  # UTC, naive


def _utc(ts: dt.datetime) -> dt.datetime:
    return ts.astimezone(dt.UTC).replace(tzinfo=None) if ts.tzinfo else ts


def _mtime(path: Path) -> dt.datetime:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).replace(tzinfo=None)


def _is_bucket(store) -> bool:
    return hasattr(store, "bucket")


def _listing(store: Storage) -> list[_Item]:
    """Every object in a location, with size and modification time (temporary files excluded)."""
    if _is_bucket(store):
        full = store.prefix + "/" if store.prefix else ""
        out = []
        for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=full):
            for item in page.get("Contents", []):
                out.append(_Item(item["Key"][len(full):], item["Size"], _utc(item["LastModified"])))
        return out
    root = store.root
    if not root.is_dir():
        return []
    return [_Item(p.relative_to(root).as_posix(), p.stat().st_size, _mtime(p))
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")]


def _leftovers(store: Storage) -> list[_Item]:
    """Interrupted writes: hidden temporary files in a folder, incomplete multipart uploads in a bucket."""
    if _is_bucket(store):
        full = store.prefix + "/" if store.prefix else ""
        out = []
        for page in store.client.get_paginator("list_multipart_uploads").paginate(Bucket=store.bucket, Prefix=full):
            for up in page.get("Uploads", []):
                out.append(_Item(f"{up['Key'][len(full):]}?uploadId={up['UploadId']}", 0, _utc(up["Initiated"])))
        return out
    root = store.root
    if not root.is_dir():
        return []
    return [_Item(p.relative_to(root).as_posix(), p.stat().st_size, _mtime(p))
            for p in sorted(root.rglob(".*.tmp-*")) if p.is_file()]


def _package_id_of(key: str) -> str | None:
    """The package id a mellanarkiv key (or its temporary file) is named after, if any."""
    name = PurePosixPath(key.split("?", 1)[0]).name.lstrip(".")
    stem = name.split(".tmp-", 1)[0]
    for suffix in (".tar", ".zip"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return None


# --- the catalogue's side ----------------------------------------------------------------------------

def _mellanarkiv_keys(events) -> dict[str, str]:
    """package id -> the key its SIP was stored under in the mellanarkiv (from the replication events)."""
    out = {}
    for e in events:
        if e.package_id and e.type == "replication" and " mellanarkiv " in f" {e.detail} ":
            out.setdefault(e.package_id, e.detail.split("mellanarkiv ", 1)[1].split(",", 1)[0].strip())
    return out


def _certificate_id(list_id: str) -> str:
    from transforms.archive.certificate import NAMESPACE

    return f"uuid-{uuid.uuid5(NAMESPACE, list_id)}"


class _Reconciler:
    def __init__(self, cat: Catalogue, mellanarkiv: Storage, slutarkiv: Path | S3Storage, *, deep: bool,
                 repair: bool, grace: dt.timedelta, set_aside: Path | None, systems: dict | None,
                 scratch: list[Path], now: dt.datetime, work: BucketWorkArea | None = None,
                 clean_work: bool = False):
        self.cat, self.mell, self.slut = cat, mellanarkiv, slutarkiv
        self.deep, self.repair, self.grace, self.now = deep, repair, grace, now
        self.set_aside_dir, self.systems, self.scratch = set_aside, systems, scratch
        self.work, self.clean_work = work, clean_work
        self.report = Report(deep=deep, repair=repair, clean_work=clean_work)
        self.packages = {p.id: p for p in cat.packages()}
        with cat.session() as s:
            # only what the checks need (a package's event types, the replication details), not whole rows
            self.events = s.execute(sa.select(Event.package_id, Event.type, Event.detail)
                                    .where(Event.package_id.is_not(None)).order_by(Event.id)).all()
            self.tombstones = {t.package_id: t for t in s.scalars(sa.select(Tombstone))}
            self.lists = list(s.scalars(sa.select(DisposalList)))
        self.types: dict[str, set[str]] = {}
        for e in self.events:
            if e.package_id:
                self.types.setdefault(e.package_id, set()).add(e.type)
        self.sip_keys = _mellanarkiv_keys(self.events)
        removed = {e.package_id for e in self.events
                   if e.type == "deletion" and (e.detail.startswith("removed from the mellanarkiv")
                                                or e.detail.startswith("disposed of"))}
        self.pending = {pid for pid, p in self.packages.items()
                        if p.status == PackageStatus.TRANSFERRED and pid not in removed}

    # -- helpers ----------------------------------------------------------------------------------

    def add(self, finding: Finding) -> Finding:
        self.report.findings.append(finding)
        return finding

    def old_enough(self, item: _Item) -> bool:
        return self.now - item.modified >= self.grace

    def event(self, *, type: str, detail: str, package_id: str | None, outcome: str = "success") -> None:
        with self.cat.session() as s:
            self.cat.add_event(s, type=type, outcome=outcome, agent=AGENT, package_id=package_id, detail=detail)

    def _try(self, finding: Finding, action) -> None:
        """Run one repair; a failure leaves the finding outstanding with the reason (never raises)."""
        try:
            action()
            finding.repaired = True
        except Exception as exc:  # noqa: BLE001 — one failed repair must not stop the others
            finding.detail += f" (repair failed: {exc})"
            log.warning("reconcile: repair of %s failed: %s", finding.key, exc)

    # -- mellanarkiv ---------------------------------------------------------------------------

    def mellanarkiv(self) -> None:
        listing = {i.key: i for i in _listing(self.mell)}
        self.report.checked["mellanarkiv_objects"] = len(listing)
        expected: dict[str, str] = {}  # key -> package id
        for pid, p in self.packages.items():
            if p.status == PackageStatus.STORED and p.storage == "mellanarkiv":
                expected[p.location] = pid
                if p.location not in listing:
                    stone = self.tombstones.get(pid)
                    if stone is not None:
                        self.add(Finding("unfinished_disposal", "mellanarkiv", p.location,
                                         f"removed under disposal list {stone.disposal_list}, but the catalogue "
                                         "still says stored", pid, "rerun `arkiv retention run` to finish it"))
                    else:
                        self.add(Finding("missing", "mellanarkiv", p.location, "catalogued as stored, not there",
                                         pid, "restore it from a backup; see `arkiv events` for its history"))
                    continue
                self._check_bytes(p, listing[p.location])
            elif p.status == PackageStatus.STORED and p.storage != "mellanarkiv":
                self.add(Finding("missing", "catalogue", pid, f"status stored in an unknown storage {p.storage!r}",
                                 pid, "check the catalogue row"))
        for pid in self.pending:
            key = self.sip_keys.get(pid)
            if key and key in listing:
                expected[key] = pid
                f = self.add(Finding("pending_removal", "mellanarkiv", key,
                                     "transfer recorded, the SIP not yet removed from the mellanarkiv", pid,
                                     "finish the transfer (verify the AIP, then remove the SIP)", repairable=True))
                if self.repair:
                    self._try(f, lambda pid=pid: self._finish_transfer(pid))
        for pid, p in self.packages.items():
            if p.status == PackageStatus.DISPOSED and p.location in listing:
                expected[p.location] = pid
                self.add(Finding("unfinished_disposal", "mellanarkiv", p.location,
                                 "disposed of in the catalogue, still stored", pid,
                                 "rerun `arkiv retention run`; if it stays, remove it by hand with the archivist"))
        for key, item in sorted(listing.items()):
            if key in expected:
                continue
            pid = _package_id_of(key)
            known = self.packages.get(pid) if pid else None
            detail = ("not in the catalogue" if known is None else
                      f"package {pid} is catalogued at {known.storage}:{known.location}")
            f = self.add(Finding("orphan", "mellanarkiv", key, detail, pid))
            if known is None and self.set_aside_dir is not None:
                f.repairable = self.old_enough(item)
                f.action = ("set it aside in the quarantine folder (copied, verified, then removed) so a rerun "
                            "can store the package again" if f.repairable else
                            f"younger than the grace period ({self.grace}); a run may be writing it")
                if self.repair and f.repairable:
                    self._try(f, lambda key=key, pid=pid: self._set_aside(key, pid))
            else:
                f.action = "compare with the catalogued copy; remove by hand once it is known to be a copy"
        for item in _leftovers(self.mell):
            f = self.add(Finding("temporary", "mellanarkiv", item.key, "leftover of an interrupted write",
                                 _package_id_of(item.key)))
            f.repairable = self.old_enough(item)
            f.action = "remove it (never verified nor recorded)" if f.repairable else \
                f"younger than the grace period ({self.grace}); a run may be writing it"
            if self.repair and f.repairable:
                self._try(f, lambda item=item: self._remove_leftover(item))

    def _check_bytes(self, p: Package, item: _Item) -> None:
        if item.size != p.size:
            self.add(Finding("mismatch", "mellanarkiv", p.location, f"{item.size} bytes stored, {p.size} catalogued",
                             p.id, "run `arkiv audit`; restore the package from a backup"))
            return
        if self.deep:
            try:
                actual = self.mell.stat(p.location).sha256
            except StorageError as exc:
                self.add(Finding("missing", "mellanarkiv", p.location, str(exc), p.id))
                return
            if actual != p.sha256:
                self.add(Finding("mismatch", "mellanarkiv", p.location,
                                 f"SHA-256 {actual} recomputed, {p.sha256} catalogued", p.id,
                                 "run `arkiv audit`; restore the package from a backup"))
        elif _is_bucket(self.mell):
            recorded = self.mell.recorded(p.location).sha256
            if recorded != p.sha256:
                self.add(Finding("mismatch", "mellanarkiv", p.location,
                                 f"SHA-256 {recorded or '(none)'} recorded with the object, {p.sha256} catalogued",
                                 p.id, "run `arkiv reconcile --deep` and `arkiv audit`"))

    def _remove_leftover(self, item: _Item) -> None:
        if _is_bucket(self.mell):
            key, _, upload = item.key.partition("?uploadId=")
            self.mell.client.abort_multipart_upload(Bucket=self.mell.bucket, Key=self.mell._key(key), UploadId=upload)
            what = f"aborted the incomplete multipart upload of {key} in {self.mell.describe()}"
        else:
            (self.mell.root / item.key).unlink(missing_ok=True)
            what = f"removed the unverified temporary file {self.mell.describe(item.key)}"
        self.event(type="deletion", package_id=_package_id_of(item.key),
                   detail=f"reconcile: {what} (an interrupted write, never verified nor recorded)")

    def _set_aside(self, key: str, pid: str | None) -> None:
        set_aside(self.cat, self.mell, key, self.set_aside_dir / f"{self.now:%Y%m%dT%H%M%S}", pid,
                  why="reconcile: found stored but never catalogued (an interrupted run)")

    # -- slutarkiv -----------------------------------------------------------------------------

    def slutarkiv(self) -> None:
        objects, partial = self._slutarkiv_objects()
        self.report.checked["slutarkiv_objects"] = len(objects)
        expected = {p.location.removeprefix("ocfl:"): pid for pid, p in self.packages.items()
                    if p.status == PackageStatus.TRANSFERRED and p.location.startswith("ocfl:")}
        certificates = {_certificate_id(d.id): d for d in self.lists}
        for oid, pid in sorted(expected.items()):
            if oid not in objects:
                self.add(Finding("missing", "slutarkiv", oid, "catalogued as transferred, no OCFL object", pid,
                                 "restore the object from a backup"))
                continue
            problems = self._object_problems(oid)
            if problems:
                self.add(Finding("mismatch", "slutarkiv", oid, "; ".join(problems[:3]), pid,
                                 "run `arkiv audit`; restore the object from a backup"))
        for d in self.lists:
            if d.status == "executed" and d.certificate and d.certificate not in objects:
                self.add(Finding("missing", "slutarkiv", d.certificate,
                                 f"disposal certificate of {d.id} not in the slutarkiv", None,
                                 "restore the object from a backup"))
        for oid in sorted(objects - set(expected)):
            p = self.packages.get(oid)
            if p is not None and p.status == PackageStatus.STORED:
                f = self.add(Finding("unrecorded_transfer", "slutarkiv", oid,
                                     "the AIP was written, the catalogue still has the SIP in the mellanarkiv", oid,
                                     "verify the AIP and finish the transfer", repairable=True))
                if self.repair:
                    self._try(f, lambda oid=oid: self._finish_transfer(oid))
            elif oid in certificates:
                d = certificates[oid]
                if d.status != "executed":
                    self.add(Finding("unfinished_disposal", "slutarkiv", oid,
                                     f"certificate of disposal list {d.id} written, the list is still {d.status}",
                                     None, "rerun `arkiv retention run` to finish it"))
            else:
                self.add(Finding("orphan", "slutarkiv", oid, "an OCFL object the catalogue does not know", None,
                                 "find out where it came from before touching it"))
        for oid, item in partial:
            p = self.packages.get(oid)
            # never the only copy: the SIP is still in the mellanarkiv, or the object was published since
            safe = p is not None and ((p.status == PackageStatus.STORED and p.storage == "mellanarkiv"
                                       and self.mell.exists(p.location))
                                      or (p.status == PackageStatus.TRANSFERRED and oid in objects))
            f = self.add(Finding("unsealed" if _is_bucket(self.slut) else "temporary", "slutarkiv", item.key,
                                 "an OCFL object whose write was interrupted (no declaration, never recorded)",
                                 p.id if p else None))
            f.repairable = safe and self.old_enough(item)
            f.action = ("remove it; its SIP is still in the mellanarkiv and the transfer writes it again"
                        if f.repairable else "find out where it came from before touching it" if not safe else
                        f"younger than the grace period ({self.grace}); a transfer may be writing it")
            if self.repair and f.repairable:
                self._try(f, lambda oid=oid, item=item: self._remove_partial(oid, item))

    def _slutarkiv_objects(self) -> tuple[set[str], list[tuple[str, _Item]]]:
        """The OCFL objects in the slutarkiv, and the partial ones (interrupted writes) with their age."""
        objects: set[str] = set()
        partial: list[tuple[str, _Item]] = []
        if _is_bucket(self.slut):
            groups: dict[str, list[_Item]] = {}
            for item in _listing(self.slut):
                head, _, rest = item.key.partition("/")
                if rest:
                    groups.setdefault(head, []).append(item)
            for oid, items in groups.items():
                if oid == "extensions":
                    continue
                if any(i.key == f"{oid}/{ocfl.OBJECT_DECLARATION}" for i in items):
                    objects.add(oid)
                else:
                    newest = max(items, key=lambda i: i.modified)
                    partial.append((oid, _Item(f"{oid}/", sum(i.size for i in items), newest.modified)))
            return objects, partial
        root = Path(self.slut)
        if root.is_dir():
            for d in sorted(root.iterdir()):
                if d.is_dir() and d.name != "extensions":
                    if (d / ocfl.OBJECT_DECLARATION).is_file():
                        objects.add(d.name)
                    else:
                        partial.append((d.name, _Item(d.name, 0, _mtime(d))))
        work = root.parent / f".{root.name}-work"
        if work.is_dir():
            for d in sorted(work.iterdir()):
                partial.append((d.name.rsplit("-", 1)[0], _Item(str(d.relative_to(root.parent)), 0, _mtime(d))))
        return objects, partial

    def _object_problems(self, oid: str) -> list[str]:
        if self.deep:
            return ocfl.verify_object(self.slut, oid)
        try:
            inventory = ocfl.read_inventory(self.slut, oid)
        except (StorageError, ValueError) as exc:
            return [str(exc)]
        if _is_bucket(self.slut):
            present = {i.key.removeprefix(f"{oid}/") for i in _listing(self.slut) if i.key.startswith(f"{oid}/")}
        else:
            base = Path(self.slut) / oid
            present = {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}
        return [f"{oid}: {rel} is missing" for paths in inventory["manifest"].values() for rel in paths
                if rel not in present]

    def _remove_partial(self, oid: str, item: _Item) -> None:
        if _is_bucket(self.slut):
            for key in list(self.slut.list(oid)):
                self.slut.discard_unsealed(key, reason=f"reconcile: partial OCFL object {oid} without its declaration")
        else:
            shutil.rmtree(Path(self.slut).parent / item.key if "/" in item.key or item.key.startswith(".")
                          else Path(self.slut) / item.key)
        self.event(type="deletion", package_id=oid,
                   detail=f"reconcile: removed the partial OCFL object {oid} of an interrupted transfer (never "
                          "sealed nor recorded; the SIP is still in the mellanarkiv)")

    def _finish_transfer(self, pid: str) -> None:
        """Finish an interrupted transfer through retention.transfer, once the AIP in the slutarkiv verifies."""
        from transforms.archive.retention import active_holds, hold_reason, transfer

        p = self.cat.package(pid)
        problems = ocfl.verify_object(self.slut, pid)
        if problems:
            raise StorageError("the AIP does not verify: " + "; ".join(problems[:3]))
        why = hold_reason(self.cat, p, active_holds(self.cat))
        if why and p.status == PackageStatus.STORED:
            raise StorageError(f"not finished: {why}")
        if self.systems and p.system in self.systems:
            rule = self.systems[p.system].record_class(p.record_class).retention
            basis = f"{rule.action} after {rule.period} from {rule.counted_from}: {rule.basis}"
        else:
            basis = "finishing an interrupted transfer"
        self.event(type="fixity check", package_id=pid,
                   detail="reconcile: the slutarkiv's OCFL object verifies; finishing the interrupted transfer")
        transfer(self.cat, self.mell, self.slut, pid, basis=basis)

    # -- work areas ----------------------------------------------------------------------------

    def scratch_areas(self) -> None:
        """Local scratch copies a killed process left (bucket downloads, OCFL objects built for upload)."""
        for folder in self.scratch:
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                if not (p.name.startswith(".s3-") or p.name.startswith("arkiv-ocfl-")):
                    continue
                item = _Item(str(p), 0, _mtime(p))
                f = self.add(Finding("temporary", "work area", str(p), "a local scratch copy left by a killed run"))
                f.repairable = self.old_enough(item)
                f.action = "remove it (a copy of something stored elsewhere)" if f.repairable else \
                    f"younger than the grace period ({self.grace})"
                if self.repair and f.repairable:
                    self._try(f, lambda p=p: self._remove_scratch(p))

    def _remove_scratch(self, p: Path) -> None:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
        self.event(type="deletion", package_id=None,
                   detail=f"reconcile: removed the scratch copy {p} left by an interrupted run")

    # -- the working bucket ----------------------------------------------------------------------

    def working_bucket(self) -> None:
        """The working bucket against the catalogue: leftovers of finished or abandoned runs, and
        quarantine material the catalogue's cases expect."""
        work = self.work
        objects = list(work.listing())
        uploads = list(work.open_uploads())
        self.report.checked["work_objects"] = len(objects)
        self.report.checked["work_uploads"] = len(uploads)
        staged: dict[str, list[_Item]] = {}
        built: dict[str, dict[str, _Item]] = {}  # package id -> {"package"|"sidecar": item}
        held: dict[str, list[_Item]] = {}
        for area, size, modified in objects:
            item = _Item(area, size, _utc(modified))
            parts = area.split("/")
            if parts[0] == "staging" and len(parts) >= 4:
                staged.setdefault("/".join(parts[1:3]), []).append(item)
            elif parts[0] == "build" and len(parts) == 3:
                sidecar = parts[2].endswith(".json")
                pid = _package_id_of(parts[2].removesuffix(".json"))
                if pid:
                    built.setdefault(pid, {})["sidecar" if sidecar else "package"] = item
            elif parts[0] == "quarantine" and len(parts) >= 5:
                held.setdefault("/".join(parts[:4]), []).append(item)
        self._staged_batches(staged)
        self._built_packages(built)
        self._held_material(held)
        for area, upload_id, initiated in uploads:
            item = _Item(area, 0, _utc(initiated))
            if not self.old_enough(item):
                continue
            self._leftover(f"{area}?uploadId={upload_id}", item,
                           f"an incomplete multipart upload, started {item.modified:%Y-%m-%d %H:%M} UTC",
                           "abort it: it was never completed, so nothing refers to it",
                           lambda a=area, u=upload_id: work.abort_upload(a, u), cleanable=True)

    def _leftover(self, key: str, item: _Item, detail: str, action: str, remove, *, cleanable: bool,
                  package_id: str | None = None) -> None:
        f = self.add(Finding("work_leftover", "work area", key, detail, package_id, action, repairable=cleanable,
                             leftover=True))
        if self.clean_work and cleanable:
            def clean() -> None:
                remove()
                self.event(type="deletion", package_id=None,
                           detail=f"reconcile: removed {key} from the working bucket {self.work.describe()}: {detail}")
            self._try(f, clean)

    def _newest(self, items: list[_Item]) -> _Item:
        return max(items, key=lambda i: i.modified)

    def _staged_batches(self, staged: dict[str, list[_Item]]) -> None:
        with self.cat.session() as s:
            batches = {b.id: b for b in s.scalars(sa.select(Batch).where(Batch.id.in_(list(staged))))}
            cases = list(s.scalars(sa.select(QuarantineCase).where(QuarantineCase.batch_id.in_(list(staged)),
                                                                   QuarantineCase.kind == "quality")
                                   .order_by(QuarantineCase.created_at)))
        latest = {c.batch_id: c for c in cases}  # the newest case of each batch
        for batch_id, items in sorted(staged.items()):
            newest = self._newest(items)
            if not self.old_enough(newest):
                continue  # a run may be working on it
            b = batches.get(batch_id)
            case = latest.get(batch_id)
            area = f"staging/{batch_id}"
            remove = partial(self.work.remove_tree, self.work.url(area))
            if b is None:
                self._leftover(area + "/", newest, f"a staged batch ({len(items)} object(s)) with no batch in the "
                               "catalogue", "remove it by hand once no run of the interval is waiting; a run "
                               "extracts the interval again", remove, cleanable=False)
            elif b.status == BatchStatus.ARCHIVED:
                planned = json.loads(b.planned) if b.planned else []
                done = all(pid in self.packages for pid in planned)
                self._leftover(area + "/", newest, f"the staged batch of {batch_id}, which is archived",
                               "safe to remove: every package of the batch is recorded" if done else
                               "the batch is archived but not every planned package is recorded: see partial_batch",
                               remove, cleanable=done)
            elif b.status == BatchStatus.QUALITY_FAILED and case is not None and case.status == "rejected":
                self._leftover(area + "/", newest, f"the staged batch of {batch_id}, whose quality case {case.id} "
                               "was rejected", "safe to remove: a later run extracts the corrected source; the "
                               "quarantined copy is kept with the case", remove, cleanable=True)

    def _built_packages(self, built: dict[str, dict[str, _Item]]) -> None:
        for pid, parts in sorted(built.items()):
            newest = self._newest(list(parts.values()))
            if not self.old_enough(newest):
                continue
            p = self.packages.get(pid)
            keys = {what: item.key for what, item in parts.items()}
            if p is not None:
                confirmed = self._archived_copy_confirmed(p)
                for what, key in sorted(keys.items()):
                    self._leftover(key, parts[what], f"the built {what} of package {pid}, which is recorded "
                                   f"({p.status}, {p.storage}:{p.location})",
                                   "safe to remove: the package is recorded and stored" if confirmed else
                                   "the package is recorded but its stored copy does not confirm: run `arkiv "
                                   "reconcile --deep` first",
                                   lambda k=key: self.work.remove(self.work.url(k)), cleanable=confirmed,
                                   package_id=pid)
            elif len(parts) == 1:
                (what, key), = keys.items()
                other = "sidecar" if what == "package" else "package"
                self._leftover(key, parts[what], f"a built {what} of package {pid} without its {other}, not "
                               "recorded", "left by a killed package step: rerun the interval (it builds the "
                               "package again), then remove this by hand", lambda: None, cleanable=False,
                               package_id=pid)

    def _archived_copy_confirmed(self, p: Package) -> bool:
        """Whether the archive holds the recorded package: its mellanarkiv object carries the catalogued
        SHA-256, or its life has moved on (transferred, disposed of)."""
        if p.status != PackageStatus.STORED:
            return True
        try:
            if _is_bucket(self.mell):
                return self.mell.recorded(p.location).sha256 == p.sha256
            return self.mell.exists(p.location) and (not self.deep or self.mell.stat(p.location).sha256 == p.sha256)
        except StorageError:
            return False

    def _held_material(self, held: dict[str, list[_Item]]) -> None:
        with self.cat.session() as s:
            cases = list(s.scalars(sa.select(QuarantineCase)))
            archived = set(s.scalars(sa.select(Batch.id).where(Batch.status == BatchStatus.ARCHIVED)))
        named: set[str] = set()
        for c in cases:
            if not c.path.startswith(f"s3://{self.work.bucket}/"):
                continue
            try:
                area = self.work.area_of(c.path).rstrip("/")
            except StorageError:
                continue  # another bucket's: not this working area's
            named.add(area)
            expected = c.status == "open" or (c.status == "approved" and c.kind == "quality"
                                              and c.batch_id not in archived)
            if expected and area not in held:
                self.add(Finding("missing", "work area", c.path,
                                 f"the held material of {c.status} quarantine case {c.id} is not in the working bucket",
                                 None, "restore it from a backup of the bucket, or extract the interval again and "
                                 "let the quality gate open a new case"))
        for area, items in sorted(held.items()):
            if area in named or not self.old_enough(self._newest(items)):
                continue
            self._leftover(area + "/", self._newest(items), f"quarantine material ({len(items)} object(s)) no "
                           "quarantine case names", "find the run that held it (its events); quarantine material "
                           "is only removed by hand", lambda: None, cleanable=False)

    # -- records and events --------------------------------------------------------------------

    def records(self) -> None:
        with self.cat.session() as s:
            rows = s.execute(sa.select(Record.system, Record.source_id, Record.package_id)).all()
        self.report.checked["records"] = len(rows)
        self.report.checked["packages"] = len(self.packages)
        places: dict[tuple[str, str], set[str]] = {}
        per_package = Counter()
        for system, source_id, pid in rows:
            per_package[pid] += 1
            p = self.packages[pid]
            if p.status == PackageStatus.DISPOSED:
                if pid not in self.tombstones:
                    self.add(Finding("unplaced_record", "catalogue", f"{system}:{source_id}",
                                     f"its package {pid} is disposed of without a tombstone", pid,
                                     "find the disposal list; the record is in no place"))
                continue
            places.setdefault((system, source_id), set()).add(pid)
        for (system, source_id), pids in sorted(places.items()):
            if len(pids) > 1:
                self.add(Finding("duplicate_record", "catalogue", f"{system}:{source_id}",
                                 f"in {len(pids)} packages: {', '.join(sorted(pids))}", sorted(pids)[0],
                                 "an archivist decides which package supersedes the other"))
        for pid, p in self.packages.items():
            if per_package[pid] != p.record_count and p.status != PackageStatus.DISPOSED:
                self.add(Finding("unplaced_record", "catalogue", pid,
                                 f"{p.record_count} records in the package, {per_package[pid]} catalogued", pid,
                                 "re-enter the package's records from its METS/ERMS"))
            required = REQUIRED_EVENTS.get(p.status, set())
            missing = sorted(required - self.types.get(pid, set()))
            if p.status == PackageStatus.DISPOSED and pid not in self.tombstones:
                missing.append("tombstone")
            if missing:
                self.add(Finding("missing_event", "catalogue", pid,
                                 f"status {p.status} but no {', '.join(missing)} event(s)", pid,
                                 "find out what happened to the package; its history is incomplete"))


    # -- batches -------------------------------------------------------------------------------

    def batches(self) -> None:
        """A batch is archived whole or not at all: report the ones a failed run left in between."""
        with self.cat.session() as s:
            rows = list(s.scalars(sa.select(Batch).order_by(Batch.id)))
        self.report.checked["batches"] = len(rows)
        by_batch: dict[str, list[Package]] = {}
        for p in self.packages.values():
            by_batch.setdefault(p.batch_id, []).append(p)
        for b in rows:
            recorded = by_batch.get(b.id, [])
            planned = json.loads(b.planned) if b.planned else None
            missing = [pid for pid in planned if pid not in self.packages] if planned is not None else []
            if b.status == BatchStatus.ARCHIVED and not missing:
                continue
            if b.status != BatchStatus.ARCHIVED and not recorded:
                continue  # nothing of it stored yet: a batch waiting for its gate or its first package
            newest = max([b.updated_at, *(p.created_at for p in recorded)])
            if self.now - newest < self.grace:
                continue  # a run may be storing the rest right now
            of = f"{len(recorded)} of {len(planned) if planned is not None else 'an unknown number of'}"
            state = "archived" if b.status == BatchStatus.ARCHIVED else f"not archived (status {b.status})"
            self.add(Finding("partial_batch", "catalogue", b.id,
                             f"system {b.system}, period {b.period}: {of} package(s) recorded, the batch {state}",
                             sorted(missing)[0] if missing else None,
                             f"rerun the interval ({b.interval_start} – {b.interval_end}): recorded packages are "
                             "skipped, the others are built, stored and recorded, then the batch is archived"))


def set_aside(cat: Catalogue, store: Storage, key: str, folder: Path, package_id: str | None, *, why: str) -> Path:
    """Copy an uncatalogued object into ``folder``, verify the copy, then remove the original.

    Used by ``reconcile --repair`` and by a rerun that finds its own earlier, never recorded
    copy of a package in its way (the rebuilt package has new timestamps, so other bytes).
    Nothing is removed unless the copy verifies; the move is a PREMIS event.
    """
    dest = folder / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    # hashed first: an object written outside Arkivflöde has no recorded SHA-256 to check against
    with store.local_copy(key, expected_sha256=store.stat(key).sha256) as (path, stored):
        digest, _ = copy_hashed(path, tmp)
    if digest != stored.sha256 or sha256_file(tmp)[0] != stored.sha256:
        raise StorageError(f"the copy of {key} in {dest.parent} does not verify; nothing removed")
    tmp.replace(dest)
    store.delete(key, verified_copy_sha256=stored.sha256)
    with cat.session() as s:
        cat.add_event(s, type="quarantine", outcome="success", agent=AGENT, package_id=package_id,
                      detail=f"{why}: {store.describe(key)} set aside to {dest} (SHA-256 {stored.sha256}, copy "
                             "verified) and removed from the mellanarkiv so that the package can be stored")
    return dest


def reconcile(cat: Catalogue, mellanarkiv: Storage, slutarkiv: Path | S3Storage, *, deep: bool = False,
              repair: bool = False, grace: dt.timedelta = dt.timedelta(hours=1), set_aside: Path | None = None,
              systems: dict | None = None, scratch: list[Path] | None = None,
              now: dt.datetime | None = None, work: BucketWorkArea | None = None,
              clean_work: bool = False) -> Report:
    """Compare the catalogue with both archives (and the working bucket ``work``, when there is one);
    with ``repair``, do what is provably safe; with ``clean_work``, remove confirmed leftovers of the
    working bucket (see module doc)."""
    r = _Reconciler(cat, mellanarkiv, slutarkiv, deep=deep, repair=repair, grace=grace, set_aside=set_aside,
                    systems=systems, scratch=list(scratch or []),
                    now=now or dt.datetime.now(dt.UTC).replace(tzinfo=None), work=work, clean_work=clean_work)
    r.records()
    r.batches()
    r.mellanarkiv()
    r.slutarkiv()
    r.scratch_areas()
    if work is not None:
        r.working_bucket()
    return r.report


def step_reconcile(settings: Settings, *, deep: bool = False, repair: bool = False,
                   grace_seconds: float = 3600, clean_work: bool = False) -> Report:
    """Reconcile the configured catalogue, mellanarkiv, slutarkiv and working bucket (what ``arkiv
    reconcile`` runs)."""
    from transforms.archive.storage import slutarkiv, storage_for
    from transforms.archive.workarea import work_area
    from transforms.config.systems import load_systems

    cat = Catalogue(settings.catalogue_url)
    cat.migrate()
    work = work_area(settings)
    store = storage_for(settings.mellanarkiv, "mellanarkiv", settings.s3, work_dir=settings.build / ".downloads")
    try:
        return reconcile(cat, store, slutarkiv(settings), deep=deep, repair=repair,
                         grace=dt.timedelta(seconds=grace_seconds), set_aside=settings.quarantine / "reconcile",
                         systems=load_systems(settings.systems_dir), scratch=[settings.build / ".downloads"],
                         work=None if work.shared_disk else work, clean_work=clean_work)
    finally:
        cat.dispose()


def report_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False)


# --- the ``arkiv reconcile`` command ----------------------------------------------------------------

def add_arguments(parser) -> None:
    """The options of ``arkiv reconcile`` (the CLI module wires the subcommand to :func:`run`)."""
    parser.add_argument("--deep", action="store_true", help="recompute every checksum (reads every byte)")
    parser.add_argument("--repair", action="store_true",
                        help="do what is provably safe (remove unverified leftovers, set aside uncatalogued "
                             "packages, finish verified transfers) and record a PREMIS event for each action")
    parser.add_argument("--grace", type=float, default=3600, metavar="SECONDS",
                        help="leave leftovers younger than this alone: a run may be writing them (default 3600)")
    parser.add_argument("--clean-work", action="store_true",
                        help="remove the working bucket's leftovers whose fate the catalogue confirms (staged "
                             "batches of archived or rejected batches, built copies of recorded packages, "
                             "incomplete uploads), with an event for each; quarantine material is kept")
    parser.add_argument("--json", action="store_true", help="the report as JSON")


def run(args, settings: Settings) -> int:
    """Exit 0 when the catalogue and storage agree (working-bucket leftovers are reported, not counted),
    1 when something is left to fix, 2 on an error."""
    try:
        report = step_reconcile(settings, deep=args.deep, repair=args.repair, grace_seconds=args.grace,
                                clean_work=getattr(args, "clean_work", False))
    except Exception as exc:  # noqa: BLE001 — any failure to look (database, bucket, disk) is exit 2, not "consistent"
        from transforms.common.masking import safe_line

        print(f"arkiv reconcile: could not reconcile: {safe_line(exc)}", file=sys.stderr)
        return 2
    print(report_json(report) if args.json else report.text())
    return 0 if report.consistent else 1


__all__ = ["Finding", "Report", "add_arguments", "reconcile", "report_json", "run", "step_reconcile"]
