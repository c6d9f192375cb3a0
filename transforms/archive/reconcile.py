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
    Record,
    Tombstone,
)
from transforms.common.errors import StorageError
from transforms.common.hashing import copy_hashed, sha256_file

if TYPE_CHECKING:
    from transforms.archive.storage import FileSystemStorage, S3Storage
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


@dataclass
class Report:
    """What reconcile looked at and what it found; ``consistent`` when nothing is left to fix."""

    deep: bool
    repair: bool
    checked: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def outstanding(self) -> list[Finding]:
        return [f for f in self.findings if not f.repaired]

    @property
    def consistent(self) -> bool:
        return not self.outstanding

    def to_dict(self) -> dict:
        return {"consistent": self.consistent, "deep": self.deep, "repair": self.repair, "checked": self.checked,
                "counts": dict(Counter(f.kind for f in self.outstanding)),
                "repaired": sum(f.repaired for f in self.findings),
                "findings": [asdict(f) for f in self.findings]}

    def text(self) -> str:
        c = self.checked
        lines = [f"reconcile ({'deep: checksums recomputed' if self.deep else 'sizes and recorded checksums'}): "
                 f"{c.get('packages', 0)} catalogued package(s), {c.get('mellanarkiv_objects', 0)} object(s) in "
                 f"the mellanarkiv, {c.get('slutarkiv_objects', 0)} OCFL object(s) in the slutarkiv, "
                 f"{c.get('records', 0)} record(s)"]
        for f in self.findings:
            state = "REPAIRED" if f.repaired else ("repairable" if f.repairable else "needs a person")
            lines.append(f"  {f.kind:<20} {f.where:<11} {f.key}: {f.detail} [{state}]"
                         + (f" — {f.action}" if f.action and not f.repaired else ""))
        lines.append("consistent" if self.consistent else
                     f"{len(self.outstanding)} inconsistenc{'y' if len(self.outstanding) == 1 else 'ies'}")
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
                 scratch: list[Path], now: dt.datetime):
        self.cat, self.mell, self.slut = cat, mellanarkiv, slutarkiv
        self.deep, self.repair, self.grace, self.now = deep, repair, grace, now
        self.set_aside_dir, self.systems, self.scratch = set_aside, systems, scratch
        self.report = Report(deep=deep, repair=repair)
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
              now: dt.datetime | None = None) -> Report:
    """Compare the catalogue with both archives; with ``repair``, do what is provably safe (see module doc)."""
    r = _Reconciler(cat, mellanarkiv, slutarkiv, deep=deep, repair=repair, grace=grace, set_aside=set_aside,
                    systems=systems, scratch=list(scratch or []),
                    now=now or dt.datetime.now(dt.UTC).replace(tzinfo=None))
    r.records()
    r.batches()
    r.mellanarkiv()
    r.slutarkiv()
    r.scratch_areas()
    return r.report


def step_reconcile(settings: Settings, *, deep: bool = False, repair: bool = False,
                   grace_seconds: float = 3600) -> Report:
    """Reconcile the configured catalogue, mellanarkiv and slutarkiv (what ``arkiv reconcile`` runs)."""
    from transforms.archive.storage import slutarkiv, storage_for
    from transforms.config.systems import load_systems

    cat = Catalogue(settings.catalogue_url)
    cat.migrate()
    store = storage_for(settings.mellanarkiv, "mellanarkiv", settings.s3, work_dir=settings.build / ".downloads")
    try:
        return reconcile(cat, store, slutarkiv(settings), deep=deep, repair=repair,
                         grace=dt.timedelta(seconds=grace_seconds), set_aside=settings.quarantine / "reconcile",
                         systems=load_systems(settings.systems_dir), scratch=[settings.build / ".downloads"])
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
    parser.add_argument("--json", action="store_true", help="the report as JSON")


def run(args, settings: Settings) -> int:
    """Exit 0 when the catalogue and storage agree, 1 when something is left to fix, 2 on an error."""
    try:
        report = step_reconcile(settings, deep=args.deep, repair=args.repair, grace_seconds=args.grace)
    except Exception as exc:  # noqa: BLE001 — any failure to look (database, bucket, disk) is exit 2, not "consistent"
        from transforms.common.masking import safe_line

        print(f"arkiv reconcile: could not reconcile: {safe_line(exc)}", file=sys.stderr)
        return 2
    print(report_json(report) if args.json else report.text())
    return 0 if report.consistent else 1


__all__ = ["Finding", "Report", "add_arguments", "reconcile", "report_json", "run", "step_reconcile"]
