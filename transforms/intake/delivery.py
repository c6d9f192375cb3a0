"""How an interval's data arrives: one :class:`Delivery` per kind, and the sidecar a package carries.

The chain (:mod:`transforms.pipeline`) asks a system's delivery (:func:`delivery_for`) what to
wait for, how to stage the interval, which packages the batch is made of, how to get them (built
from staged rows, or handed on as delivered) and what to tidy once the batch is archived. It
never looks at the kind itself: a new kind of delivery is a new class here.

* :class:`DatabaseDelivery` reads the source database in a read-only transaction: nothing to wait for.
* :class:`FileExportDelivery` waits for ``<inbox>/<period>/manifest.json`` (written last), checks
  the folder against it and stages the rows; a bad delivery is quarantined whole.
* :class:`PreparedDelivery` takes in whatever packages are in the inbox (one queue for every
  interval), validated and repaired or quarantined; they are handed on as delivered.

An inbox is a folder every worker mounts, or ``s3://bucket/prefix`` (:mod:`transforms.intake.inbox`):
then intake copies the delivery to the worker's disk first, and once the batch is archived the
delivered originals move, verified, to ``<prefix>/.archived/``.

This module's top level imports nothing heavy: the DAG factory reads :attr:`Delivery.waits` and
:attr:`Delivery.queue` while a DAG file is parsed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from transforms import SOFTWARE_LABEL
from transforms.common.errors import ConfigError, ContentError, StateError, StorageError
from transforms.common.masking import safe_line, safe_message, safe_name
from transforms.config.systems import System

if TYPE_CHECKING:
    from transforms.catalogue import Catalogue
    from transforms.config.settings import S3Config, Settings
    from transforms.formats.conversion import ConversionCache
    from transforms.intake.inbox import InboxMarker, S3Inbox
    from transforms.intake.prepared import Intake
    from transforms.packaging.sip import BuiltPackage, RecordEntry
    from transforms.staging.batch import StagedBatch

log = logging.getLogger(__name__)


# --- what a package carries from the package step to the catalogue ------------------------------

@dataclass
class PackageSidecar:
    """What the catalogue needs of one built or delivered package, kept beside it until it is recorded.

    No record content: IDs, references, dates, counts, digests and format identifications. One
    shape for built and delivered packages; written by :meth:`write` and read by :meth:`read` only.
    """

    package_id: str
    system: str
    record_class: str
    period: str
    content_digest: str
    sha256: str
    size: int
    record_count: int
    document_count: int
    built_at: str
    records: list[RecordEntry] = field(default_factory=list)
    #: every data file's identification and policy outcome (the catalogue's file_formats)
    formats: list[dict] = field(default_factory=list)
    #: delivered files the format policy does not accept (kept, reported)
    format_findings: list[str] = field(default_factory=list)
    #: documents held back for an archivist: path in the package, quarantine copy, reason
    quarantined: list[dict] = field(default_factory=list)
    #: a delivered package: the file's name in the inbox, what intake made of it and what it repaired
    delivered_as: str | None = None
    outcome: str | None = None
    repairs: list[str] = field(default_factory=list)
    document_bytes: int = 0
    converted: int = 0

    @classmethod
    def built(cls, b: BuiltPackage, built_at: str) -> PackageSidecar:
        """The sidecar of a package the chain built."""
        return cls(package_id=b.package_id, system=b.system, record_class=b.record_class, period=b.period,
                   content_digest=b.content_digest, sha256=b.sha256, size=b.size, record_count=b.record_count,
                   document_count=b.document_count, built_at=built_at, records=list(b.records),
                   formats=[dict(f) for f in b.formats], quarantined=list(b.quarantined),
                   document_bytes=b.document_bytes, converted=b.converted)

    @classmethod
    def delivered(cls, i: Intake, system: str, record_class: str, period: str, built_at: str) -> PackageSidecar:
        """The sidecar of a package delivered by a prepared system and accepted at intake."""
        from transforms.packaging.sip import RecordEntry

        # a delivered package's retention counts from its records' closing dates
        records = [RecordEntry(source_id=r["source_id"], reference=r["reference"], opened=r.get("opened"),
                               closed=r.get("closed"), retention_start=r.get("closed")) for r in i.records]
        return cls(package_id=i.package_id, system=system, record_class=record_class, period=period,
                   content_digest=i.sha256, sha256=i.sha256, size=i.size, record_count=len(records),
                   document_count=0, built_at=built_at, records=records, formats=list(i.formats),
                   format_findings=list(i.format_findings), delivered_as=i.source, outcome=str(i.outcome),
                   repairs=list(i.repairs))

    @property
    def batch_id(self) -> str:
        return f"{self.system}/{self.period}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> PackageSidecar:
        from transforms.packaging.sip import RecordEntry

        data = json.loads(text)
        data["records"] = [RecordEntry(**r) for r in data["records"]]
        return cls(**data)

    @staticmethod
    def path_for(package: str | Path) -> Path:
        """Where the sidecar of the package file ``package`` is kept: beside it, ``<package>.json``."""
        return Path(f"{package}.json")

    def write(self, package: str | Path) -> Path:
        """Write the sidecar beside the package file (atomically: a temporary file, then a rename)."""
        dest = self.path_for(package)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, dest)
        return dest

    @classmethod
    def read(cls, package: str | Path) -> PackageSidecar:
        return cls.from_json(cls.path_for(package).read_text(encoding="utf-8"))

    @classmethod
    def remove(cls, package: str | Path) -> None:
        """Remove a recorded package's build copy and its sidecar."""
        Path(package).unlink(missing_ok=True)
        cls.path_for(package).unlink(missing_ok=True)


@dataclass
class HandedOn:
    """One package of a record class as the package step hands it on: to ship, or already archived."""

    package_id: str
    #: the package file to ship and its sidecar; both None when the catalogue holds the package already
    path: str | None = None
    sidecar: PackageSidecar | None = None
    #: a delivered package: its name in the inbox
    source: str | None = None

    @property
    def already_archived(self) -> bool:
        return self.sidecar is None


@dataclass
class Rejected:
    """A delivered package intake refused: quarantined with its validation report."""

    source: str
    findings: list[str]
    report: str


# --- the kinds of delivery ----------------------------------------------------------------------

class Delivery(Protocol):
    """How one system's data for an interval arrives, and what its intake leaves for the chain."""

    #: the kind's name in the system YAML (``extract.kind``), for messages
    kind: ClassVar[str]
    #: whether the chain waits for the delivery to arrive in an inbox (a sensor in the DAG)
    waits: ClassVar[bool]
    #: whether the inbox is one queue for every interval: runs take turns, each takes in what has
    #: arrived; an empty intake is no batch, and packages delivered later for an archived interval
    #: are new ones, not a change to it
    queue: ClassVar[bool]
    system: System

    def expected(self, period: str) -> Path | InboxMarker | None:
        """What must exist (``.exists()``) for the interval's delivery to be there; None when there is
        nothing to wait for."""
        ...

    def stage(self, settings: Settings, cat: Catalogue, start: dt.datetime, end: dt.datetime,
              source_url: str | None) -> StagedBatch:
        """Stage the interval ``[start, end)`` under ``settings.staging``."""
        ...

    def rejected(self, staged: StagedBatch) -> list[Rejected]:
        """Delivered packages intake quarantined (reported as events and cases by the chain)."""
        ...

    def planned_packages(self, staged: StagedBatch) -> list[str]:
        """Every package ID the batch is made of: it is archived when all of them are recorded."""
        ...

    def packages(self, settings: Settings, cat: Catalogue, staged: StagedBatch, record_class: str, *,
                 conversions: ConversionCache | None = None) -> list[HandedOn]:
        """The packages of one record class, built or handed on (those the catalogue holds: as archived).
        ``conversions``: the PDF/A conversion cache to build with (default: the worker's folder)."""
        ...

    def after_archived(self, staged: StagedBatch, cat: Catalogue, stored_sha256: Callable[[str], str]) -> None:
        """Tidy the delivery once its batch is archived (``stored_sha256(key)``: the stored copy's digest)."""
        ...

    def hand_over(self, staged: StagedBatch, publish: Callable[[Path], str]) -> bool:
        """Hand the files intake left outside the staged batch to the next steps: ``publish(path)`` gives
        each one's reference, written into the batch. True when the batch changed (its manifest must be
        written again)."""
        ...

    def worker_copy(self, settings: Settings, period: str) -> Path | None:
        """The folder on this worker's disk where intake copies the interval's delivery from an S3 inbox,
        removed once the batch is archived; None for a kind that never makes one."""
        ...


def delivery_for(system: System, s3: S3Config | None = None) -> Delivery:
    """The delivery of ``system``, by the kind its YAML declares (``extract.kind``); ``s3``: how to reach an
    inbox in S3 where no settings are at hand (default: the ``ARKIV_S3_*`` variables)."""
    try:
        kind = _KINDS[system.extract_kind]
    except KeyError:
        raise ConfigError(f"{system.name}: extract.kind {system.extract_kind!r} is not a kind of delivery "
                          f"({', '.join(sorted(_KINDS))})") from None
    delivery = kind(system)
    delivery.s3 = s3
    return delivery


def _now() -> str:
    from transforms.catalogue import utcnow

    return utcnow().isoformat()


class _RowDelivery:
    """A delivery of rows (and document files) that the chain stages and builds packages from."""

    kind: ClassVar[str]
    waits: ClassVar[bool] = False
    queue: ClassVar[bool] = False
    s3: S3Config | None = None

    def __init__(self, system: System):
        self.system = system

    def expected(self, period: str) -> Path | None:
        return None

    def rejected(self, staged: StagedBatch) -> list[Rejected]:
        return []

    def _partition_ids(self, staged: StagedBatch, record_class: str) -> list[str]:
        """The package IDs one record class of a staged batch is built into (one per chunk of cases)."""
        from transforms.packaging.sip import package_id_for

        part = staged.partitions[record_class]
        root_rows = part.rows.get(self.system.root_table.name, 0)
        parts = max(1, -(-root_rows // self.system.max_records))
        return [package_id_for(self.system.name, record_class, staged.batch, i, part.digest) for i in range(parts)]

    def planned_packages(self, staged: StagedBatch) -> list[str]:
        return sorted(pid for rc in staged.partitions for pid in self._partition_ids(staged, rc))

    def packages(self, settings: Settings, cat: Catalogue, staged: StagedBatch, record_class: str, *,
                 conversions: ConversionCache | None = None) -> list[HandedOn]:
        import errno

        from transforms.formats.identification import CatalogueIdentificationCache
        from transforms.packaging.sip import build_packages
        from transforms.quality import quarantine as review

        name = self.system.name
        ids = self._partition_ids(staged, record_class)
        # A rerun of a batch an earlier run left half-archived builds only what is not recorded yet.
        done = {i for i in ids if cat.package(i) is not None}
        if done == set(ids):
            return [HandedOn(i) for i in ids]
        state = {"tables": staged.tables, "digests": {k: p.digest for k, p in sorted(staged.partitions.items())}}
        deviation = review.approved_deviation(cat, f"{name}/{staged.batch}", state)
        try:
            built = build_packages(self.system, staged, record_class, settings.build / name,
                                   events=_batch_events(cat, f"{name}/{staged.batch}"),
                                   allow_missing_files=deviation is not None,
                                   quarantine_dir=settings.quarantine / name / "documents", skip=done,
                                   identification_cache=CatalogueIdentificationCache(cat),
                                   conversion_cache=conversions)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # the builder writes under temporary names and removes them on failure: nothing half-built remains
            raise StorageError(f"{name} {staged.batch} {record_class}: building the package(s) in "
                               f"{settings.build / name} failed: no space left on device (errno {exc.errno}); "
                               "nothing was stored or recorded for them. Free space (or set ARKIV_BUILD_DIR) and "
                               "rerun.") from None
        at = _now()
        return [HandedOn(i) for i in ids if i in done] + [
            HandedOn(b.package_id, b.path, PackageSidecar.built(b, at)) for b in built]

    def after_archived(self, staged: StagedBatch, cat: Catalogue, stored_sha256: Callable[[str], str]) -> None:
        return None

    def hand_over(self, staged: StagedBatch, publish: Callable[[Path], str]) -> bool:
        return False  # everything it made is in the staged batch

    def worker_copy(self, settings: Settings, period: str) -> Path | None:
        return None


def _batch_events(cat: Catalogue, batch_id: str):
    """The batch's capture and validation events, to be written into its packages' PREMIS."""
    from transforms.packaging.agents import catalogue_event

    return [catalogue_event(f"catalogue-event-{ev.id}", ev.type, ev.time, ev.outcome, ev.detail, ev.agent)
            for ev in cat.events(batch_id=batch_id)]


class DatabaseDelivery(_RowDelivery):
    """Rows read from the source database, in a read-only transaction: there when the interval has ended."""

    kind = "database"

    def stage(self, settings: Settings, cat: Catalogue, start: dt.datetime, end: dt.datetime,
              source_url: str | None) -> StagedBatch:
        from transforms.intake.database import extract_database

        if not source_url:
            conn = self.system.connection or ""
            raise ConfigError(f"{self.system.name}: no database URL for connection {conn!r}: set "
                              f"ARKIV_CONN_{conn.upper()} (or the Airflow connection; `arkiv run --source-url`)")
        return extract_database(self.system, source_url, start, end, settings.staging)


class _InboxDelivery:
    """A delivery into the inbox the system's ``extract.inbox_env`` names: a folder or ``s3://bucket/prefix``."""

    system: System
    s3: S3Config | None = None

    @property
    def inbox(self) -> Path | S3Inbox:
        return self._inbox(self.s3)

    def _inbox(self, s3: S3Config | None) -> Path | S3Inbox:
        from transforms.intake.inbox import inbox_at

        value = os.environ.get(self.system.inbox_env or "")
        if not value:
            raise ConfigError(f"{self.system.name}: extract.inbox_env: environment variable {self.system.inbox_env} "
                              "is not set")
        return inbox_at(value, s3)


class FileExportDelivery(_InboxDelivery, _RowDelivery):
    """A folder per interval, ``<inbox>/<period>/``, with the export's files and its ``manifest.json`` last."""

    kind = "file_export"
    waits = True

    def expected(self, period: str) -> Path | InboxMarker:
        from transforms.intake.file_export import MANIFEST, delivery_folder
        from transforms.intake.inbox import ARCHIVED, InboxMarker, S3Inbox

        inbox = self.inbox
        if isinstance(inbox, S3Inbox):
            # an archived delivery stays a delivery: a rerun of its interval reads it from .archived/
            return InboxMarker(inbox, (f"{period}/{MANIFEST}", f"{ARCHIVED}/{period}/{MANIFEST}"))
        return delivery_folder(inbox, period) / MANIFEST

    def stage(self, settings: Settings, cat: Catalogue, start: dt.datetime, end: dt.datetime,
              source_url: str | None) -> StagedBatch:
        from transforms.intake.file_export import FileExportSource, check_delivery, delivery_folder
        from transforms.intake.inbox import S3Inbox
        from transforms.staging.batch import period_label, stage

        inbox = self._inbox(settings.s3)
        period = period_label(start, end)
        folder = self.scratch(settings, period) if isinstance(inbox, S3Inbox) else delivery_folder(inbox, period)
        try:
            if isinstance(inbox, S3Inbox):
                self._fetch(inbox, period, folder)
            check_delivery(folder, self.system.name)
            return stage(self.system, FileExportSource(self.system, folder), start, end, settings.staging)
        except ContentError as exc:
            where = self._quarantine(settings, cat, folder, exc, inbox, period)
            raise ContentError(safe_line(f"{exc.args[0]} — the delivery was quarantined in {where}; nothing was "
                                         "staged"), [safe_line(d) for d in exc.details]) from None

    def scratch(self, settings: Settings, period: str) -> Path:
        """Where a delivery from an S3 inbox is copied on the worker's disk: the same path on every worker,
        since the staged rows name their documents by it."""
        return settings.staging / self.system.name / ".inbox" / period

    def worker_copy(self, settings: Settings, period: str) -> Path | None:
        return self.scratch(settings, period)  # there only when the inbox is in S3

    def _located(self, inbox: S3Inbox, period: str) -> str:
        """The prefix (relative to the inbox) of the period's delivery: ``<period>``, or ``.archived/<period>``
        for one archived before; DeliveryMissing when neither holds anything."""
        from transforms.intake.file_export import MANIFEST, DeliveryMissing
        from transforms.intake.inbox import ARCHIVED

        for under in (period, f"{ARCHIVED}/{period}"):
            if inbox.exists(f"{under}/{MANIFEST}"):
                return under
        if inbox.holds(period):
            return period  # objects without a manifest: read and refused as a folder would be
        raise DeliveryMissing(f"{self.system.name}: no delivery in {inbox.describe(period)}; the system has not "
                              "exported this period yet")

    def _fetch(self, inbox: S3Inbox, period: str, folder: Path) -> dict:
        """Copy the period's delivery from the S3 inbox into ``folder``, every key checked first."""
        return inbox.download_tree(self._located(inbox, period), folder,
                                   f"{self.system.name}: delivery {inbox.describe(period)}")

    def packages(self, settings: Settings, cat: Catalogue, staged: StagedBatch, record_class: str, *,
                 conversions: ConversionCache | None = None) -> list[HandedOn]:
        """As for any rows; from an S3 inbox the delivery's documents are copied to this worker's disk first
        (checked against the manifest again) when an earlier step copied them to another's."""
        from transforms.intake.file_export import (
            MANIFEST,
            MAX_MANIFEST,
            check_delivery,
            delivery_folder,
            manifest_sha256,
        )
        from transforms.intake.inbox import S3Inbox

        inbox = self._inbox(settings.s3)
        folder = self.scratch(settings, staged.batch)
        if isinstance(inbox, S3Inbox):
            local = folder / MANIFEST
            there = inbox.read_bytes(f"{self._located(inbox, staged.batch)}/{MANIFEST}", MAX_MANIFEST)
            self._refuse_replaced(staged, hashlib.sha256(there).hexdigest())
            # a copy is checked when it is made; one of another delivery of the period is made again
            if not local.is_file() or local.read_bytes() != there:
                self._fetch(inbox, staged.batch, folder)
                check_delivery(folder, self.system.name)
                # delivered again between the look above and the copy: the copy is what is built from
                self._refuse_replaced(staged, manifest_sha256(folder, self.system.name))
        elif staged.delivered_manifest_sha256 is not None:
            self._refuse_replaced(staged, manifest_sha256(delivery_folder(inbox, staged.batch), self.system.name))
        return super().packages(settings, cat, staged, record_class, conversions=conversions)

    def _refuse_replaced(self, staged: StagedBatch, now: str | None) -> None:
        """StateError when the period's delivery in the inbox is no longer the one its rows were staged from:
        a package would pair the earlier delivery's rows with the later one's documents. Nothing is wrong
        with either delivery: the staged batch is out of date, and staging again (a rerun) is the remedy."""
        if staged.delivered_manifest_sha256 is None or now == staged.delivered_manifest_sha256:
            return
        raise StateError(f"{self.system.name}: the delivery of {staged.batch} in the inbox was replaced after it "
                         f"was staged (its manifest's SHA-256 is {now or 'gone'}, not "
                         f"{staged.delivered_manifest_sha256}); nothing was built from it. The staged rows are "
                         "the earlier delivery's: rerun the interval to stage and archive the delivery now there")

    def after_archived(self, staged: StagedBatch, cat: Catalogue, stored_sha256: Callable[[str], str]) -> None:
        """A delivery from an S3 inbox moves to ``<prefix>/.archived/<period>/`` once its batch is archived.

        Each file the manifest lists is copied, the copy checked against the manifest's SHA-256 and size
        (what intake verified), and only then deleted; the manifest goes last, so a delivery half moved
        is still seen, and finished, by the next try. A folder inbox is left as it is.
        """
        from transforms.intake.file_export import MANIFEST, MAX_MANIFEST
        from transforms.intake.inbox import ARCHIVED, S3Inbox

        inbox = self.inbox
        if not isinstance(inbox, S3Inbox):
            return
        period = staged.batch
        here = {o.key: o for o in inbox.listing(period)}
        if MANIFEST not in here:
            return  # already moved (or never here: read from .archived/ by a rerun)
        raw = inbox.read_bytes(f"{period}/{MANIFEST}", MAX_MANIFEST)
        now = hashlib.sha256(raw).hexdigest()
        if staged.delivered_manifest_sha256 not in (None, now):
            # delivered again since intake: not what was archived, so it stays for the system owner and a rerun
            note = (f"the delivery in {inbox.describe(period)} was replaced after this batch was staged (manifest "
                    f"SHA-256 {now}, staged from {staged.delivered_manifest_sha256}); it was left in the inbox, "
                    f"not moved to {ARCHIVED}/: rerun the interval to archive it")
            log.warning("%s/%s: %s", self.system.name, period, note)
            with cat.session() as ses:
                cat.add_event(ses, type="capture", outcome="warning", agent=SOFTWARE_LABEL,
                              batch_id=f"{self.system.name}/{period}", detail=note)
            return
        try:
            listed = {e["path"]: e for e in json.loads(raw)["files"]
                      if isinstance(e, dict) and isinstance(e.get("path"), str)}
        except (ValueError, TypeError, KeyError):
            listed = {}  # replaced since intake by something that is no manifest: nothing is moved
        for rel, obj in sorted(here.items()):
            entry = listed.get(rel)
            if rel == MANIFEST or entry is None or entry.get("size") != obj.size:
                continue  # not what was archived: stays for the system owner
            inbox.move(f"{period}/{rel}", f"{ARCHIVED}/{period}/{rel}", obj, entry.get("sha256"))
        inbox.move(f"{period}/{MANIFEST}", f"{ARCHIVED}/{period}/{MANIFEST}", here[MANIFEST])

    def _quarantine(self, settings: Settings, cat: Catalogue, folder: Path, exc: ContentError,
                    inbox: Path | S3Inbox, period: str) -> Path:
        """Move a bad delivery out of the inbox, with the reason beside it, and open a case.

        From an S3 inbox the worker's copy goes to the local quarantine folder as a folder's delivery
        would, and the originals move (verified) to ``<prefix>/.quarantine/<that folder's name>/delivery/``
        with the reason beside them.
        """
        import shutil

        from transforms.intake.inbox import S3Inbox
        from transforms.quality import quarantine as review

        name = self.system.name
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        dest = settings.quarantine / name / f"{period}-{stamp}"
        dest.mkdir(parents=True, exist_ok=True)
        if folder.exists():
            shutil.move(str(folder), str(dest / "delivery"))
        reason = safe_message(exc) + "\n"
        (dest / "reason.txt").write_text(reason, encoding="utf-8")
        if isinstance(inbox, S3Inbox):
            self._quarantine_originals(inbox, period, dest.name, reason)
        review.open_case(cat, system=name, batch_id=f"{name}/{period}", kind="delivery",
                         reasons=[exc.args[0], *exc.details], path=dest)
        return dest

    @staticmethod
    def _quarantine_originals(inbox: S3Inbox, period: str, name: str, reason: str) -> None:
        """Move every object of the period's delivery to ``.quarantine/<name>/delivery/``, verified; a key
        that cannot be a file name is moved under a plain one, named in ``keys.txt`` (escaped)."""
        from transforms.intake.inbox import QUARANTINE, key_problem

        where = f"{QUARANTINE}/{name}"
        renamed = []
        for n, obj in enumerate(inbox.listing(period), 1):
            rel = obj.key
            if key_problem(rel):
                renamed.append(f"refused-key-{n}: {safe_name(rel)}")
                rel = f"refused-key-{n}"
            inbox.move(f"{period}/{obj.key}", f"{where}/delivery/{rel}", obj)
        inbox.put_text(f"{where}/reason.txt", reason)
        if renamed:
            inbox.put_text(f"{where}/keys.txt", "\n".join(renamed) + "\n")


class PreparedDelivery(_InboxDelivery):
    """Finished packages in one inbox for every interval: each run takes in what has arrived."""

    kind = "prepared"
    waits = True
    queue = True

    def __init__(self, system: System):
        self.system = system

    def expected(self, period: str) -> Path | InboxMarker:
        """The inbox folder; in S3: the inbox's bucket (an empty queue is a run that takes in nothing)."""
        from transforms.intake.inbox import InboxMarker, S3Inbox

        inbox = self.inbox
        return InboxMarker(inbox) if isinstance(inbox, S3Inbox) else inbox

    def stage(self, settings: Settings, cat: Catalogue, start: dt.datetime, end: dt.datetime,
              source_url: str | None) -> StagedBatch:
        import hashlib

        from transforms.formats.identification import CatalogueIdentificationCache
        from transforms.intake.prepared import IntakeOutcome, intake_dict, take_in
        from transforms.staging.batch import Partition, StagedBatch, period_label

        sys_ = self.system
        batch = period_label(start, end)
        intakes = take_in(self._inbox(settings.s3), settings.build / sys_.name, settings.quarantine / sys_.name,
                          policy=sys_.formats, identification_cache=CatalogueIdentificationCache(cat))
        accepted = [i for i in intakes if i.outcome != IntakeOutcome.QUARANTINED]
        folder = settings.staging / sys_.name / batch
        folder.mkdir(parents=True, exist_ok=True)
        partitions = {}
        if accepted:
            rc = sys_.record_classes[0].name  # a prepared system's packages form one record class
            digest = hashlib.sha256("".join(sorted(i.sha256 for i in accepted)).encode()).hexdigest()
            partitions[rc] = Partition(rc, files={}, rows={"packages": len(accepted)}, digest=digest)
        staged = StagedBatch(sys_.name, batch, start.isoformat(), end.isoformat(), str(folder),
                             {"packages": len(accepted)}, partitions, prepared=[intake_dict(i) for i in intakes])
        tmp = staged.manifest_path.with_suffix(".tmp")
        tmp.write_text(staged.to_json(), encoding="utf-8")
        os.replace(tmp, staged.manifest_path)
        return staged

    @staticmethod
    def _intakes(staged: StagedBatch) -> list[Intake]:
        from transforms.intake.prepared import intake_from_dict

        return [intake_from_dict(d) for d in staged.prepared]

    def _accepted(self, staged: StagedBatch) -> list[Intake]:
        from transforms.intake.prepared import IntakeOutcome

        return [i for i in self._intakes(staged) if i.outcome != IntakeOutcome.QUARANTINED]

    def rejected(self, staged: StagedBatch) -> list[Rejected]:
        from transforms.intake.prepared import IntakeOutcome

        return [Rejected(i.source, i.findings, i.report) for i in self._intakes(staged)
                if i.outcome == IntakeOutcome.QUARANTINED]

    def planned_packages(self, staged: StagedBatch) -> list[str]:
        return sorted(i.package_id for i in self._accepted(staged))

    def packages(self, settings: Settings, cat: Catalogue, staged: StagedBatch, record_class: str, *,
                 conversions: ConversionCache | None = None) -> list[HandedOn]:
        """Delivered packages need no building: the accepted (and repaired) ones are handed on."""
        out = []
        at = _now()
        for i in self._accepted(staged):
            existing = cat.package(i.package_id)
            if existing is not None:
                if existing.sha256 != i.sha256:
                    raise ContentError(f"{self.system.name}: delivered package {safe_name(i.source)} has OBJID "
                                       f"{safe_name(i.package_id)}, which the archive already holds with other "
                                       "content; refusing to replace it")
                out.append(HandedOn(i.package_id, source=i.source))
                continue
            sidecar = PackageSidecar.delivered(i, self.system.name, record_class, staged.batch, at)
            out.append(HandedOn(i.package_id, i.path, sidecar, source=i.source))
        return out

    def after_archived(self, staged: StagedBatch, cat: Catalogue, stored_sha256: Callable[[str], str]) -> None:
        """Move delivered packages out of the inbox once their package is verified in the mellanarkiv.

        Nothing is deleted: the originals go to ``<inbox>/.archived/`` for the system owner to purge. From an
        S3 inbox the move is a copy of the version taken in, verified by its SHA-256 and size, and only then
        the original's deletion.
        """
        from transforms.intake.inbox import ARCHIVED, S3Inbox

        inbox = self.inbox
        if isinstance(inbox, S3Inbox):
            self._archive_originals(inbox, staged, cat, stored_sha256)
            return
        done = inbox / ARCHIVED
        for i in self._accepted(staged):
            pkg = cat.package(i.package_id)
            src = inbox / i.source
            if pkg is None or not src.is_file():
                continue
            if stored_sha256(pkg.location) != pkg.sha256:
                raise StorageError(f"mellanarkiv: {pkg.location} no longer matches its catalogued checksum; "
                                   f"{safe_name(i.source)} stays in the inbox")
            done.mkdir(exist_ok=True)
            os.replace(src, done / i.source)

    def _archive_originals(self, inbox: S3Inbox, staged: StagedBatch, cat: Catalogue,
                           stored_sha256: Callable[[str], str]) -> None:
        from transforms.intake.inbox import ARCHIVED, InboxObject

        here = {o.key: o for o in inbox.listing(direct=True)}
        for i in self._accepted(staged):
            pkg = cat.package(i.package_id)
            obj = here.get(i.source)
            if pkg is None or obj is None or i.delivered_sha256 is None:
                continue
            if obj.size != i.delivered_size or (i.delivered_etag and obj.etag != i.delivered_etag):
                continue  # delivered again with other bytes since: a new delivery, judged next time
            if stored_sha256(pkg.location) != pkg.sha256:
                raise StorageError(f"mellanarkiv: {pkg.location} no longer matches its catalogued checksum; "
                                   f"{safe_name(i.source)} stays in the inbox")
            inbox.move(i.source, f"{ARCHIVED}/{i.source}", InboxObject(i.source, obj.size, i.delivered_etag or ""),
                       i.delivered_sha256)

    def worker_copy(self, settings: Settings, period: str) -> Path | None:
        return None  # intake removes its copies from an S3 inbox itself once each package is taken in

    def hand_over(self, staged: StagedBatch, publish: Callable[[Path], str]) -> bool:
        """The accepted packages' copies in the build folder are what the package step hands on."""
        changed = False
        for d in staged.prepared:
            if d.get("path") and Path(d["path"]).is_file():
                d["path"] = publish(Path(d["path"]))
                changed = True
        return changed


_KINDS: dict[str, type] = {k.kind: k for k in (DatabaseDelivery, FileExportDelivery, PreparedDelivery)}


__all__ = ["DatabaseDelivery", "Delivery", "FileExportDelivery", "HandedOn", "PackageSidecar", "PreparedDelivery",
           "Rejected", "delivery_for"]
