"""The archiving chain for one source system, one step per function.

The steps and their order are declared once in :mod:`transforms.chain`; this module holds what
each does. :func:`run_interval` runs them for ``arkiv run`` and the DAG factory makes one task per
step, so both hold the interval the same way (:func:`claim_interval`, :func:`check_claim`,
:func:`release_interval`) and run the same steps in the same order.

Each step takes small references (a system name, a manifest path, a package ID) and
returns a small JSON-able dict, so that Airflow tasks can pass only references between them
(never records) and the ``arkiv`` CLI can run the same chain without Airflow. Every step is
idempotent: rerunning an interval that is already archived finds the same deterministic
package IDs in the catalogue and does nothing. What differs between the kinds of delivery
(database, file export, prepared packages) is asked of the system's
:class:`~transforms.intake.delivery.Delivery`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from transforms import SOFTWARE_LABEL
from transforms.archive.storage import mellanarkiv
from transforms.archive.workarea import WorkArea, is_bucket_ref, shared_files, work_area
from transforms.catalogue import (
    ArchiveCreator,
    Batch,
    BatchStatus,
    Catalogue,
    IntervalClaim,
    Package,
    PackageStatus,
    Record,
    Series,
    add_file_formats,
    utcnow,
)
from transforms.chain import CHAIN, Each, Step
from transforms.common.errors import (
    AlreadyRunning,
    ArkivError,
    ConfigError,
    ContentError,
    StateError,
    StorageError,
)
from transforms.common.failpoints import failpoint
from transforms.common.masking import safe_line, safe_name
from transforms.common.periods import add_period
from transforms.config.settings import Settings
from transforms.config.systems import System, load_system, load_systems
from transforms.formats.conversion import CONVERSION_CACHE_ENV, ConversionCache
from transforms.intake.delivery import Delivery, PackageSidecar, delivery_for
from transforms.packaging.sip import BuiltPackage, document_ownership_problems
from transforms.quality import quarantine as review
from transforms.staging.batch import StagedBatch, period_label

log = logging.getLogger("arkivflode")
AGENT = SOFTWARE_LABEL


def system(settings: Settings, name: str) -> System:
    """The named system's configuration from the systems folder."""
    path = settings.systems_dir / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no system {name!r}: {path} does not exist")
    return load_system(path)


def catalogue(settings: Settings) -> Catalogue:
    cat = Catalogue(settings.catalogue_url)
    cat.migrate()
    return cat


def _local(value: dt.datetime | str, tz: str) -> dt.datetime:
    """An interval bound as a naive local datetime in the system's time zone."""
    d = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if d.tzinfo is not None:
        d = d.astimezone(ZoneInfo(tz)).replace(tzinfo=None)
    return d


def _batch_state(staged: StagedBatch) -> dict:
    return {"tables": staged.tables,
            "digests": {k: p.digest for k, p in sorted(staged.partitions.items())}}


# --- 0. the interval: who archives it, and is its delivery there ----------------------------

class DeliveryNotArrived(ContentError):
    """The interval's delivery is not in the inbox by its deadline: the system owner must deliver it."""


def _interval(settings: Settings, name: str, start: dt.datetime | str,
              end: dt.datetime | str) -> tuple[System, dt.datetime, dt.datetime, str]:
    """The system, the local bounds and the interval's key (``<system>/<period>``, the batch's ID)."""
    sys_ = system(settings, name)
    s, e = _local(start, sys_.timezone), _local(end, sys_.timezone)
    return sys_, s, e, f"{name}/{period_label(s, e)}"


def _take(cat: Catalogue, key: str, holder: str, alive: Callable[[str], bool] | None) -> None:
    """Record ``holder`` as the interval's holder, unless another live holder has it (AlreadyRunning).

    Called under the interval's exclusive lock, so an ``arkiv run`` holder found here has ended
    (it keeps that lock for as long as it runs). A DAG run holder is asked about through ``alive``;
    without a way to ask (the CLI), a DAG run's unreleased claim counts as live."""
    with cat.session() as ses:
        cat.lock(ses, f"claim:{key}")
        c = ses.get(IntervalClaim, key)
        if c is not None and c.holder != holder:
            ended = c.holder.startswith("arkiv-run:") or (alive is not None and not alive(c.holder))
            if not ended:
                raise AlreadyRunning(safe_line(
                    f"{key} is being archived by {c.holder} (since {c.claimed_at:%d %b %Y %H:%M} UTC); nothing was "
                    "done by this run. If that run has ended, mark it failed or let it finish, then rerun."))
            log.warning("%s: taking over from %s, which ended without finishing the interval", key, c.holder)
        if c is None:
            ses.add(IntervalClaim(key=key, holder=holder, claimed_at=utcnow()))
        else:
            c.holder, c.claimed_at = holder, utcnow()


def claim_interval(settings: Settings, name: str, start: dt.datetime | str, end: dt.datetime | str, holder: str,
                   alive: Callable[[str], bool] | None = None) -> dict:
    """Take one system's interval for ``holder`` (a DAG run) before it extracts; AlreadyRunning when taken.

    The same claim and lock as :func:`interval_guard` (``arkiv run``): manual, scheduled and
    backfill runs of one interval, on any machine sharing the catalogue, archive it one at a time.
    """
    _, _, _, key = _interval(settings, name, start, end)
    cat = catalogue(settings)
    with cat.session() as ses:
        c = ses.get(IntervalClaim, key)
        if c is not None and c.holder == holder:
            # Held already: a retried task, or an ``arkiv run`` inside its interval_guard (which
            # keeps the interval's lock for the whole run). Nobody else can have it meanwhile.
            return {"interval": key, "holder": holder}
    with cat.exclusive(f"interval:{key}", f"archiving {key}"):
        _take(cat, key, holder, alive)
    return {"interval": key, "holder": holder}


def _key(name: str, manifest: str) -> str:
    """The interval's key (``<system>/<period>``) from its staged batch's manifest reference."""
    return f"{name}/{Path(manifest).parent.name}"


def check_claim(settings: Settings, name: str, manifest: str, holder: str | None) -> dict:
    """AlreadyRunning when another run took the interval over since ``holder`` extracted it."""
    key = _key(name, manifest)
    if not holder:
        return {"interval": key}
    with catalogue(settings).session() as ses:
        c = ses.get(IntervalClaim, key)
        other = c.holder if c is not None and c.holder != holder else None
    if other:
        raise AlreadyRunning(safe_line(f"{key} was taken over by {other}; this run does no more work on it"))
    return {"interval": key}


def _give_back(cat: Catalogue, key: str, holder: str) -> None:
    """Remove the interval's claim if ``holder`` has it (anyone else's claim stays)."""
    with cat.session() as ses:
        c = ses.get(IntervalClaim, key)
        if c is not None and c.holder == holder:
            ses.delete(c)


def release_interval(settings: Settings, name: str, manifest: str, holder: str | None) -> dict:
    """Give the interval back once ``holder``'s run has finished with it (a no-op for anyone else)."""
    key = _key(name, manifest)
    if holder:
        _give_back(catalogue(settings), key, holder)
    return {"interval": key}


def release_claim(settings: Settings, name: str, start: dt.datetime | str, end: dt.datetime | str,
                  holder: str) -> dict:
    """Give the interval back when ``holder``'s run ended without finishing it (a failed DAG run)."""
    _, _, _, key = _interval(settings, name, start, end)
    _give_back(catalogue(settings), key, holder)
    return {"interval": key}


def cli_holder() -> str:
    """Who holds an interval while ``arkiv run`` archives it: ``arkiv-run:<host>:<pid>``."""
    return f"arkiv-run:{socket.gethostname()}:{os.getpid()}"


@contextmanager
def interval_guard(settings: Settings, name: str, start: dt.datetime | str,
                   end: dt.datetime | str) -> Iterator[str]:
    """Hold one system's interval for a whole ``arkiv run``: its lock for the block, and its claim
    (for :func:`cli_holder`). Yields the interval's key.

    AlreadyRunning when a DAG run or another ``arkiv run`` is archiving the same interval."""
    _, _, _, key = _interval(settings, name, start, end)
    holder = cli_holder()
    cat = catalogue(settings)
    with cat.exclusive(f"interval:{key}", f"archiving {key}"):
        _take(cat, key, holder, None)
        try:
            yield key
        finally:
            _give_back(cat, key, holder)


def await_delivery(settings: Settings, name: str, start: dt.datetime | str, end: dt.datetime | str,
                   timeout_hours: float | None) -> dict:
    """Whether the interval's delivery has arrived: ``delivered`` or ``waiting`` until the deadline.

    What counts as arrived is the delivery's own (:meth:`~transforms.intake.delivery.Delivery.expected`):
    a file export's folder with its manifest (written last), a prepared system's inbox; a database
    has nothing to wait for. The deadline is ``timeout_hours`` after the interval ends; past it the
    batch is recorded as ``delivery_missing`` (with an event) for the system owner, and
    DeliveryNotArrived (a ContentError) says what is missing. ``timeout_hours=None``: look once,
    with no deadline (``arkiv run``).
    """
    sys_, s, e, key = _interval(settings, name, start, end)
    period = key.split("/", 1)[1]
    expected = delivery_for(sys_, settings.s3).expected(period)
    if expected is None or expected.exists():
        return {"state": "delivered", "interval": key}
    if timeout_hours is None:
        return {"state": "waiting", "interval": key, "expected": str(expected)}
    deadline = e + dt.timedelta(hours=timeout_hours)
    now = dt.datetime.now(ZoneInfo(sys_.timezone)).replace(tzinfo=None)
    if now < deadline:
        log.info("%s: waiting for the delivery (%s) until %s", key, expected, f"{deadline:%d %b %Y %H:%M}")
        return {"state": "waiting", "interval": key, "deadline": deadline.isoformat()}
    cat = catalogue(settings)
    with cat.session() as ses:
        b = ses.get(Batch, key)
        status = b.status if b is not None else None
    if status in (None, BatchStatus.DELIVERY_MISSING):
        if status is None:
            cat.upsert_batch(batch_id=key, system=name, period=period, interval_start=s.isoformat(),
                             interval_end=e.isoformat(), status=BatchStatus.DELIVERY_MISSING, rows={})
        with cat.session() as ses:
            cat.add_event(ses, type="capture", outcome="failure", agent=AGENT, batch_id=key,
                          detail=f"delivery missing: nothing at {expected} by the deadline {deadline:%d %b %Y %H:%M} "
                                 f"({timeout_hours:g} h after the interval ended)")
    raise DeliveryNotArrived(safe_line(
        f"{key}: delivery missing — nothing at {expected} by the deadline {deadline:%d %b %Y %H:%M} "
        f"({timeout_hours:g} h after the interval ended). The system owner must deliver the export; then clear "
        "this task to archive the interval."))


# --- 1. extract ------------------------------------------------------------------------------

def extract(settings: Settings, name: str, start: dt.datetime | str, end: dt.datetime | str,
            source_url: str | None = None) -> dict:
    """Extract ``[start, end)`` into staging; record the batch (only if something changed)."""
    sys_ = system(settings, name)
    s, e = _local(start, sys_.timezone), _local(end, sys_.timezone)
    if e <= s:
        raise ConfigError(f"{name}: empty data interval {s.isoformat()} – {e.isoformat()}; "
                          "use a schedule with data intervals (see docs/configuration.md)")
    delivery = delivery_for(sys_, settings.s3)
    cat = catalogue(settings)
    staged = delivery.stage(settings, cat, s, e, source_url)
    batch_id = f"{name}/{staged.batch}"
    for r in delivery.rejected(staged):
        with cat.session() as ses:
            cat.add_event(ses, type="validation", outcome="failure", agent=AGENT, batch_id=batch_id,
                          detail=safe_line(f"delivered package {safe_name(r.source)} is invalid and was "
                                           f"quarantined; report {r.report}"))
        review.open_case(cat, system=name, batch_id=batch_id, kind="package", reasons=r.findings,
                         path=_hand_over_held(settings, Path(r.report).parent, f"quarantine/{name}/packages"),
                         area=work_area(settings))
    if delivery.queue and staged.is_empty:  # nothing has arrived in the queue: no batch
        return {"system": name, "batch": staged.batch, "manifest": _hand_over_batch(settings, delivery, staged),
                "rows": staged.tables, "record_classes": [], "already_archived": False}
    state = _batch_state(staged)
    with cat.session() as ses:
        b = ses.get(Batch, batch_id)
        archived = b is not None and b.status == BatchStatus.ARCHIVED
        unchanged = archived and json.loads(b.rows) == state
        # from a queue, what arrives later for an archived interval is new packages, not a change
        changed_after_archiving = archived and not unchanged and not delivery.queue
    if changed_after_archiving:
        # The interval is archived already and the source now says something else (a closed
        # case was edited). Shipping it again would put records in two packages: stop, keep
        # the new extraction for review, and let an archivist decide on a supplement.
        where = quarantine(settings, staged)
        with cat.session() as ses:
            cat.add_event(ses, type="validation", outcome="failure", agent=AGENT, batch_id=batch_id,
                          detail=f"interval already archived; the source changed since (new extraction in {where})")
        raise ContentError(f"{name} {staged.batch} is already archived, but the source data for the interval has "
                           f"changed since; nothing was shipped. The new extraction is in {where} for review.")
    if not unchanged:
        cat.upsert_batch(batch_id=batch_id, system=name, period=staged.batch, interval_start=staged.interval_start,
                         interval_end=staged.interval_end, status=BatchStatus.STAGED, rows=state,
                         planned=delivery.planned_packages(staged))
        with cat.session() as ses:
            cat.add_event(ses, type="capture", outcome="success", agent=AGENT, batch_id=batch_id,
                          detail=f"extracted {_counts(staged.tables)} from {name} for {staged.batch}")
    failpoint("extract.after_batch")
    log.info("extracted %s batch %s: %s", name, staged.batch, _counts(staged.tables))
    return {"system": name, "batch": staged.batch, "manifest": _hand_over_batch(settings, delivery, staged),
            "rows": staged.tables, "record_classes": largest_first(staged), "already_archived": unchanged}


# --- the hand-over between steps: the working area (transforms.archive.workarea) ----------------------

def _hand_over_batch(settings: Settings, delivery: Delivery, staged: StagedBatch) -> str:
    """Publish a staged batch for the next steps; the reference of its manifest.

    With a working bucket the batch (and what intake left beside it) is uploaded and this
    worker's staging copy removed: the next step, on any worker, downloads it."""
    work = work_area(settings)
    if work.shared_disk:
        return str(staged.manifest_path)
    area = f"staging/{staged.system}/{staged.batch}"
    if delivery.hand_over(staged, lambda p: work.publish_file(p, f"build/{staged.system}/{p.name}")):
        staged.manifest_path.write_text(staged.to_json(), encoding="utf-8")
    ref = work.publish_tree(Path(staged.directory), area)
    shutil.rmtree(staged.directory, ignore_errors=True)
    for d in staged.prepared:  # the copies intake made now live in the working area
        if d.get("path") and not is_bucket_ref(d["path"]):
            Path(d["path"]).unlink(missing_ok=True)
    return f"{ref}/manifest.json"


def _scratch_dir(settings: Settings, manifest: str) -> Path:
    """Where this worker keeps its copy of the batch ``manifest`` names: its own staging folder."""
    parts = manifest.rstrip("/").split("/")
    return settings.staging / parts[-3] / parts[-2]


@contextmanager
def _staged(settings: Settings, manifest: str) -> Iterator[StagedBatch]:
    """The staged batch ``manifest`` names with its Parquet files on this worker's disk, for the block.

    From a working bucket each call downloads a copy of its own (two tasks of one batch may run on
    one worker at once) and removes it afterwards, unless the block moved it away (quarantine)."""
    work = work_area(settings)
    if work.shared_disk:
        yield StagedBatch.load(manifest)
        return
    home = _scratch_dir(settings, manifest)
    scratch = home.with_name(f".{home.name}.{uuid.uuid4().hex[:12]}")
    try:
        local = work.fetch_tree(manifest.rsplit("/", 1)[0], scratch)
        yield StagedBatch.load(local / "manifest.json")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _manifest(settings: Settings, manifest: str) -> StagedBatch:
    """The staged batch's manifest alone (no Parquet file is fetched)."""
    work = work_area(settings)
    if work.shared_disk:
        return StagedBatch.load(manifest)
    return StagedBatch.parse(work.read_text(manifest), _scratch_dir(settings, manifest))


def _drop_batch(settings: Settings, manifest: str, staged: StagedBatch) -> None:
    """Remove a finished batch from the working area and this worker's scratch."""
    work = work_area(settings)
    if not work.shared_disk:
        work.remove_tree(manifest.rsplit("/", 1)[0])
    shutil.rmtree(staged.directory, ignore_errors=True)


def _hand_over_package(settings: Settings, name: str, path: str, sidecar: PackageSidecar) -> str:
    """Publish a built (or delivered) package and its sidecar for ship and record; the package's reference."""
    work = work_area(settings)
    if work.shared_disk:
        sidecar.write(path)
        return path
    base = path.rsplit("/", 1)[-1]
    if sidecar.quarantined:
        sidecar = _hand_over_held_documents(work, name, sidecar)
    ref = path if is_bucket_ref(path) else work.publish_file(Path(path), f"build/{name}/{base}")
    local_sidecar = sidecar.write(settings.build / name / base)
    work.publish_file(local_sidecar, f"build/{name}/{base}.json")
    local_sidecar.unlink(missing_ok=True)
    if not is_bucket_ref(path):
        Path(path).unlink(missing_ok=True)
    return ref


def _hand_over_report(settings: Settings, name: str, path: Path) -> str:
    """A quality report's reference: with a working bucket it is uploaded there (the catalogue and the
    case name the object), else its path.

    Its Data Docs folder goes first, beside it (``reports/<system>/<system>-<batch>-datadocs/``), and
    the uploaded report names that folder's index: the archivist's page reads both from the bucket."""
    work = work_area(settings)
    path = Path(path)
    if work.shared_disk:
        return str(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    docs = Path(doc["data_docs"]) if doc.get("data_docs") else None
    if docs is not None and docs.is_file():
        folder = work.publish_tree(docs.parent, f"reports/{name}/{docs.parent.name}", verify=True)
        doc["data_docs"] = f"{folder}/{docs.name}"
    handed = path.with_name(f".{path.name}.handed-{uuid.uuid4().hex[:8]}")
    try:
        handed.write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        return work.publish_file(handed, f"reports/{name}/{path.name}", verify=True)
    finally:
        handed.unlink(missing_ok=True)


def _hand_over_held(settings: Settings, folder: Path, area: str) -> Path | str:
    """Held material (a folder on this worker) where every worker finds it: with a working bucket it is
    uploaded, verified, to ``<area>/<folder's name>`` and that reference returned; else the folder."""
    work = work_area(settings)
    if work.shared_disk or not folder.is_dir():
        return folder
    return work.publish_tree(folder, f"{area}/{folder.name}", verify=True)


def _hand_over_held_documents(work: WorkArea, name: str, sidecar: PackageSidecar) -> PackageSidecar:
    """Documents held back while the package was built, moved to the working bucket (verified, then removed
    from this worker's disk); the sidecar names their objects, so that ``record`` opens the case on them."""
    moved: dict[str, str] = {}
    held = []
    for q in sidecar.quarantined:
        folder = q.get("folder")
        if folder and not is_bucket_ref(folder) and (folder in moved or Path(folder).is_dir()):
            if folder not in moved:
                moved[folder] = work.publish_tree(Path(folder), f"quarantine/{name}/documents/{Path(folder).name}",
                                                  verify=True)
            q = {**q, "folder": moved[folder]}
            if q.get("copy") and Path(q["copy"]).is_relative_to(folder):
                q["copy"] = f"{moved[folder]}/{Path(q['copy']).relative_to(folder).as_posix()}"
        held.append(q)
    for folder in moved:  # every file of it is in the bucket, read back and hashed
        shutil.rmtree(folder, ignore_errors=True)
    return dataclasses.replace(sidecar, quarantined=held)


def conversion_cache(settings: Settings) -> ConversionCache:
    """The PDF/A conversion cache this worker builds with: its folder (``ARKIV_CONVERSION_CACHE``, default
    ``<build>/.conversion-cache``), and with a working bucket shared through it (``conversions/``), so a rebuild
    or a retry on another worker converts nothing again."""
    folder = Path(os.environ.get(CONVERSION_CACHE_ENV) or settings.build / ".conversion-cache")
    return ConversionCache(folder, shared_files(settings, "conversions"))


def _sidecar(settings: Settings, package: str) -> PackageSidecar:
    """The sidecar handed on with the package ``package`` names."""
    return PackageSidecar.from_json(work_area(settings).read_text(f"{package}.json"))


def planned_packages(sys_: System, staged: StagedBatch) -> list[str]:
    """Every package ID the batch is made of: the batch is archived when all of them are recorded."""
    return delivery_for(sys_).planned_packages(staged)


def largest_first(staged: StagedBatch) -> list[str]:
    """The batch's record classes, the one with the most rows first (then by name).

    The DAG maps ``package`` over this list and the scheduler starts mapped task instances in
    map-index order: the largest partitions start first and the small ones fill the slots at
    the end, rather than one large partition, started last, running alone while the other slots
    sit idle (longest processing time first)."""
    return sorted(staged.partitions, key=lambda rc: (-sum(staged.partitions[rc].rows.values()), rc))


def _counts(tables: dict[str, int]) -> str:
    return ", ".join(f"{n} {t}" for t, n in tables.items())


# --- 2. quality gate ---------------------------------------------------------------------------

def check_quality(settings: Settings, name: str, manifest: str) -> dict:
    """Run the system's suite on the staged batch; a failure quarantines it and raises ContentError."""
    with _staged(settings, manifest) as staged:
        return _check_quality(settings, system(settings, name), staged)


def _check_quality(settings: Settings, sys_: System, staged: StagedBatch) -> dict:
    from transforms.quality.checks import check_batch, reference_columns_of  # GX is heavy: only when a check runs

    name = sys_.name
    batch_id = f"{name}/{staged.batch}"
    cat = catalogue(settings)
    with cat.session() as ses:
        b = ses.get(Batch, batch_id)
        if b is not None and b.status == BatchStatus.ARCHIVED and json.loads(b.rows) == _batch_state(staged):
            return {"success": True, "skipped": "batch already archived with identical content"}
    if staged.is_empty:
        return {"success": True, "skipped": "no records in this interval"}
    # A file belongs to its record: a row naming another record's file, a metadata file or a
    # path outside the store is refused here, with the checks, and no deviation can allow it.
    ownership = document_ownership_problems(sys_, staged.table_files())
    if sys_.quality_suite is None and not ownership:
        return {"success": True, "skipped": "prepared packages are checked by the validator at intake"}
    deviation = review.approved_deviation(cat, batch_id, _batch_state(staged))
    if deviation is not None and ownership:
        raise ContentError(f"{batch_id}: the approved deviation (case {deviation.id}) cannot cover documents that do "
                           "not belong to their record; nothing may be packaged. The system owner must correct "
                           "the source.", ownership[:200])
    if deviation is not None:
        # An archivist has seen exactly this content fail and approved it with a deviation.
        cat.upsert_batch(batch_id=batch_id, system=name, period=staged.batch, interval_start=staged.interval_start,
                         interval_end=staged.interval_end, status=BatchStatus.QUALITY_PASSED,
                         rows=_batch_state(staged), quality_report=deviation.report)
        with cat.session() as ses:
            cat.add_event(ses, type="validation", outcome="warning", agent=deviation.decided_by or AGENT,
                          batch_id=batch_id,
                          detail=f"quality deviation approved by {deviation.decided_by} on "
                                 f"{deviation.decided_at:%Y-%m-%d}: {deviation.justification}. Failed checks: "
                                 f"{'; '.join(json.loads(deviation.reasons))}")
        return {"success": True, "deviation": deviation.id}
    result = check_batch(settings.expectations_dir / sys_.quality_suite, staged.table_files(),
                         system=name, batch=staged.batch, report_dir=settings.reports / name,
                         sensitive_columns={t: list(c) for t, c in sys_.sensitive.items()},
                         reference_columns=reference_columns_of(sys_.content)) \
        if sys_.quality_suite else None
    failed = result.failed() if result else []
    report = _hand_over_report(settings, name, result.result_path) if result else None
    success = (result is None or result.success) and not ownership
    cat.upsert_batch(batch_id=batch_id, system=name, period=staged.batch, interval_start=staged.interval_start,
                     interval_end=staged.interval_end,
                     status=BatchStatus.QUALITY_PASSED if success else BatchStatus.QUALITY_FAILED,
                     rows=_batch_state(staged), quality_report=report)
    detail = "; ".join(
        ([f"quality suite {sys_.quality_suite}: {len(result.checks)} checks, {len(failed)} failed"] if result else [])
        + ([f"{len(ownership)} document reference(s) not their record's own"] if ownership else [])
        + ([f"report {report}"] if report else []))
    with cat.session() as ses:
        cat.add_event(ses, type="validation", outcome="success" if success else "failure", agent=AGENT,
                      batch_id=batch_id, detail=detail)
    if not success:
        where = quarantine(settings, staged)
        reasons = [_reason(c) for c in failed] + ownership[:200]
        case = review.open_case(cat, system=name, batch_id=batch_id, kind="quality", reasons=reasons, path=where,
                                report=report, content_state=_batch_state(staged), area=work_area(settings))
        raise ContentError(
            f"{name} batch {staged.batch} failed its quality gate and was quarantined in {where} "
            f"(case {case}; decide with `arkiv quarantine approve|reject`); nothing was packaged."
            + (f" Report: {report}" if report else ""),
            reasons,
        )
    return {"success": True, "checks": len(result.checks), "report": report}


def _reason(c) -> str:
    """A failed check as a case's reason: in words, Swedish and English, the technical name after."""
    title = (c.texts or {}).get("title") or {}
    words = f"{title['sv']} / {title['en']}" if title.get("sv") and title.get("en") else c.expectation
    technical = f"{c.expectation}{' on ' + c.column if c.column else ''}"
    return f"{c.table}: {words} ({technical}): {c.unexpected_count} post(er) / record(s)"


def await_decision(settings: Settings, name: str, manifest: str, batch: str) -> dict:
    """Where a batch stands after its quality gate, for the DAG's wait for an archivist.

    ``passed`` (the gate passed or had nothing to check), ``waiting`` (a quarantine case is
    open), ``approved`` (the archivist approved with a deviation: the held data is copied back
    to staging and the gate records the deviation, so the same run goes on to package it).
    A rejected case raises ContentError: the system owner corrects the source and a later run
    of the interval extracts it again. A batch with neither a passed gate nor a case raises
    StateError: the gate did not finish, and nothing may be packaged unchecked.
    """
    sys_ = system(settings, name)
    work = work_area(settings)
    cat = catalogue(settings)
    batch_id = f"{name}/{batch}"
    with cat.session() as ses:
        b = ses.get(Batch, batch_id)
        status, rows = (b.status, json.loads(b.rows)) if b else (None, None)
    if status in (BatchStatus.QUALITY_PASSED, BatchStatus.ARCHIVED) or sys_.quality_suite is None:
        return {"state": "passed", "batch": batch_id}
    if status == BatchStatus.STAGED and work.exists(manifest) and _manifest(settings, manifest).is_empty:
        return {"state": "passed", "batch": batch_id}
    case = review.latest_case(cat, batch_id, rows) if rows is not None else None
    if case is None:
        raise StateError(f"{batch_id} has no passed quality gate and no quarantine case (status {status}): the "
                         "quality check did not finish; rerun it. Nothing is packaged unchecked.")
    if case.status == "open":
        return {"state": "waiting", "batch": batch_id, "case": case.id}
    if case.status == "rejected":
        raise ContentError(safe_line(f"{batch_id}: quarantine case {case.id} was rejected by {case.decided_by} "
                                     f"({case.justification}). The system owner must correct the source; a later "
                                     "run of this interval extracts it again. Nothing was packaged."))
    if not work.exists(manifest):
        _restore_held_batch(work, case.path, manifest)
        with cat.session() as ses:
            cat.add_event(ses, type="replication", outcome="success", agent=AGENT, batch_id=batch_id,
                          detail=f"approved batch copied back from quarantine case {case.id} for packaging; the "
                                 "quarantined copy is kept with its report")
    result = check_quality(settings, name, manifest)
    if not result.get("deviation"):
        raise StateError(f"{batch_id}: case {case.id} is approved, but the staged data no longer matches what was "
                         "approved; a new decision is needed")
    return {"state": "approved", "batch": batch_id, "case": case.id}


def _restore_held_batch(work: WorkArea, held: str, manifest: str) -> None:
    """Copy an approved, quarantined batch back to where ``manifest`` says its staged batch is; the
    quarantined copy is kept. From the working bucket every object is copied inside the bucket and
    verified (both hashed), so the decision may be taken up by any worker."""
    if is_bucket_ref(held):
        if work.shared_disk:
            raise StateError(f"the quarantined batch is in a working bucket ({held}), but ARKIV_WORK names none; "
                             "set ARKIV_WORK as the workers that quarantined it had it")
        if not work.exists(f"{held}/manifest.json"):
            raise StateError(f"the quarantined batch {held} is gone from the working bucket; extract the interval "
                             "again")
        work.copy_tree(held, work.area_of(manifest.rsplit("/", 1)[0]), skip=frozenset({"rapport.html"}))
    elif work.shared_disk:
        _restore_from_quarantine(Path(held), Path(manifest).parent)
    else:  # a case opened before quarantined batches went to the working bucket: on one worker's disk
        if not (Path(held) / "manifest.json").is_file():
            raise StateError(f"the quarantined batch {held} is not on this worker; extract the interval again")
        work.publish_tree(Path(held), work.area_of(manifest.rsplit("/", 1)[0]), verify=True)


def _restore_from_quarantine(held: Path, staged_dir: Path) -> None:
    """Copy a quarantined batch back to its staging folder (atomically: a temp copy, then a rename)."""
    if not (held / "manifest.json").is_file():
        raise StateError(f"the quarantined batch {held} is gone; extract the interval again")
    tmp = staged_dir.with_name(f".{staged_dir.name}.restore-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(held, tmp, ignore=shutil.ignore_patterns("rapport.html"))
    os.replace(tmp, staged_dir)


def quarantine(settings: Settings, staged: StagedBatch) -> Path | str:
    """Move a staged batch into the quarantine area (kept for the archivists' review); where it is held.

    With a working bucket the batch is held there, as ``quarantine/<system>/<period>/<time stamp>``
    (uploaded and read back, verified), and leaves the bucket's staging area and this worker's disk:
    the approval is taken up by whichever worker runs the decision."""
    stamp = utcnow().strftime("%Y%m%dT%H%M%S")
    work = work_area(settings)
    if not work.shared_disk:
        held = work.publish_tree(Path(staged.directory), f"quarantine/{staged.system}/{staged.batch}/{stamp}",
                                 verify=True)
        work.remove_tree(work.url(f"staging/{staged.system}/{staged.batch}"))
        shutil.rmtree(staged.directory, ignore_errors=True)
        return held
    dest = settings.quarantine / staged.system / f"{staged.batch}-{stamp}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged.directory, dest)
    return dest


# --- 3. package -------------------------------------------------------------------------------

def package(settings: Settings, name: str, manifest: str, record_class: str) -> list[dict]:
    """Build the packages of one record class, or hand on the delivered ones (skipping those already in
    the catalogue); each package's :class:`~transforms.intake.delivery.PackageSidecar` is kept beside it."""
    sys_ = system(settings, name)
    with _staged(settings, manifest) as staged:
        handed = delivery_for(sys_, settings.s3).packages(settings, catalogue(settings), staged, record_class,
                                                          conversions=conversion_cache(settings))
    out = []
    for h in handed:
        ref = {"package_id": h.package_id, "already_archived": h.already_archived}
        if h.source is not None:
            ref["source"] = h.source
        if not h.already_archived:
            ref |= {"path": _hand_over_package(settings, name, h.path, h.sidecar), "sha256": h.sidecar.sha256,
                    "size": h.sidecar.size,
                    "records": h.sidecar.record_count, "documents": h.sidecar.document_count}
        out.append(ref)
    failpoint("package.after_write")
    log.info("%d package(s) to ship for %s %s %s (%d already archived)", sum(not h.already_archived for h in handed),
             name, staged.batch, record_class, sum(h.already_archived for h in handed))
    return out


# --- 4. ship, verify, record ---------------------------------------------------------------------

def storage_key(system_name: str, period: str, package_id: str, suffix: str = ".tar") -> str:
    return f"{system_name}/{period}/{package_id}{suffix}"


def ship(settings: Settings, pkg: dict) -> dict:
    """Copy a built package into the mellanarkiv (verified, never overwriting; see transforms/archive/storage.py)."""
    if pkg.get("already_archived"):
        return pkg
    meta = _sidecar(settings, pkg["path"])
    key = storage_key(meta.system, meta.period, pkg["package_id"], Path(pkg["path"]).suffix)
    store = mellanarkiv(settings)
    if store.exists(key) and store.stat(key).sha256 != pkg["sha256"]:
        cat = catalogue(settings)
        if cat.package(pkg["package_id"]) is None:
            # An earlier run stored this package and died before recording it; the rebuild has
            # other bytes (new timestamps). That copy was never catalogued: set it aside
            # (verified copy first) rather than refuse for ever or overwrite it.
            from transforms.archive.reconcile import set_aside

            set_aside(cat, store, key, settings.quarantine / "reconcile" / utcnow().strftime("%Y%m%dT%H%M%S"),
                      pkg["package_id"], why="ship: an earlier, interrupted run's copy was in the way")
    work = work_area(settings)
    local = work.fetch_file(pkg["path"], settings.build / meta.system / ".ship")
    try:
        stored = store.put(local, key, expected_sha256=pkg["sha256"])
    finally:
        if not work.shared_disk:  # this worker's scratch copy; the working area keeps the package until recorded
            local.unlink(missing_ok=True)
    failpoint("ship.after_copy_before_verify")
    return {**pkg, "key": stored.key, "shipped_at": utcnow().isoformat()}


def verify(settings: Settings, pkg: dict) -> dict:
    """Recompute the stored package's checksum and validate it as an FGS/E-ARK SIP."""
    if pkg.get("already_archived"):
        return pkg
    from transforms.validation.validator import validate_package

    # the stored bytes themselves (downloaded once from a bucket) are hashed and then validated
    with mellanarkiv(settings).local_copy(pkg["key"]) as (path, stat):
        if stat.sha256 != pkg["sha256"] or stat.size != pkg["size"]:
            raise StorageError(f"mellanarkiv: {pkg['key']}: stored copy does not match the built package "
                               f"(sha256 {stat.sha256} vs {pkg['sha256']})")
        report = validate_package(path)
    if not report.valid:
        errors = [safe_line(f"{f.requirement}: {f.message}") for f in report.findings if f.severity == "ERROR"]
        raise ContentError(f"package {pkg['package_id']} is stored but does not validate", errors)
    return {**pkg, "verified_at": utcnow().isoformat(), "validation": "valid",
            "requirements_checked": len(report.checked)}


def record(settings: Settings, pkg: dict) -> dict:
    """Enter a verified package, its records and its events in the catalogue; clean the build folder."""
    if pkg.get("already_archived"):
        return {"package_id": pkg["package_id"], "recorded": False}
    meta = _sidecar(settings, pkg["path"])
    sys_ = system(settings, meta.system)
    cat = catalogue(settings)
    batch_id, pid = meta.batch_id, pkg["package_id"]
    with cat.session() as ses:
        cat.lock(ses, f"package:{pid}")  # two writers at once: one records, the other finds it
        new = ses.get(Package, pid) is None
        if new:
            ses.add(Package(id=pid, system=meta.system, record_class=meta.record_class,
                            period=meta.period, batch_id=batch_id, package_type="SIP", status=PackageStatus.STORED,
                            size=pkg["size"], sha256=pkg["sha256"], content_digest=meta.content_digest,
                            storage="mellanarkiv", location=pkg["key"], record_count=meta.record_count,
                            document_count=meta.document_count,
                            archive_creator=sys_.agreement.archive_creator.organisationsnummer,
                            series_code=sys_.agreement.series,
                            series_id=series_for(cat, sys_.agreement.archive_creator.organisationsnummer,
                                                 sys_.agreement.series, _creator_names(sys_))))
            ses.flush()
            rule = sys_.record_class(meta.record_class).retention
            dues = []
            for entry in meta.records:
                due = _due(entry.retention_start, rule.period)
                dues.append(due)
                ses.add(Record(system=meta.system, source_id=entry.source_id, reference=entry.reference,
                               package_id=pid, record_class=meta.record_class,
                               opened=entry.opened, closed=entry.closed, retention_start=entry.retention_start,
                               due_date=due))
            stored = ses.get(Package, pid)
            stored.retention_action = rule.action
            # A package is transferred or disposed of whole: it is due when its last record is.
            stored.due_date = max(dues) if dues and all(dues) else None
            t = dt.datetime.fromisoformat
            if meta.delivered_as:
                cat.add_event(ses, type="ingestion", outcome="success", agent=AGENT, package_id=pid,
                              batch_id=batch_id, time=t(meta.built_at),
                              detail=f"delivered by {meta.system} as {safe_name(meta.delivered_as)}; validated "
                                     f"at intake ({meta.outcome})")
                for repair in meta.repairs:
                    cat.add_event(ses, type="modification", outcome="success", agent=AGENT, package_id=pid,
                                  batch_id=batch_id, time=t(meta.built_at),
                                  detail=safe_line(f"repaired at intake: {repair}"))
            else:
                cat.add_event(ses, type="creation", outcome="success", agent=AGENT, package_id=pid,
                              batch_id=batch_id, time=t(meta.built_at),
                              detail=f"SIP built: {meta.record_count} records, {meta.document_count} files, "
                                     f"{pkg['size']} bytes")
            cat.add_event(ses, type="replication", outcome="success", agent=AGENT, package_id=pid, batch_id=batch_id,
                          time=t(pkg["shipped_at"]), detail=f"copied to mellanarkiv {pkg['key']}, read back")
            cat.add_event(ses, type="fixity check", outcome="success", agent=AGENT, package_id=pid, batch_id=batch_id,
                          time=t(pkg["verified_at"]), detail=f"SHA-256 {pkg['sha256']} matches the stored copy")
            cat.add_event(ses, type="validation", outcome="success", agent=AGENT, package_id=pid, batch_id=batch_id,
                          time=t(pkg["verified_at"]),
                          detail=f"arkiv validate: valid ({pkg.get('requirements_checked', 0)} requirements checked)")
            cat.add_event(ses, type="ingestion", outcome="success", agent=AGENT, package_id=pid, batch_id=batch_id,
                          detail="recorded in the catalogue")
            # Every file's PRONOM identification and policy outcome; documents the policy held back
            # are events here and a quarantine case below.
            add_file_formats(ses, pid, meta.formats)
            for finding in meta.format_findings:
                cat.add_event(ses, type="validation", outcome="warning", agent=AGENT, package_id=pid,
                              batch_id=batch_id,
                              detail=safe_line(f"delivered file not accepted by the format policy: {finding}"))
            for q in meta.quarantined:
                cat.add_event(ses, type="quarantine", outcome="failure", agent=AGENT, package_id=pid,
                              batch_id=batch_id,
                              detail=safe_line(f"document {safe_name(q['path'])} held back: {q['reason']}"))
            held = meta.quarantined
            failpoint("record.after_verify_before_commit")  # everything added, nothing committed
        else:
            held = []
    if held:
        folder = held[0]["folder"]
        review.open_case(cat, system=meta.system, batch_id=batch_id, kind="document",
                         reasons=[f"{safe_name(q['path'])}: {q['reason']}" for q in held],
                         path=folder if is_bucket_ref(folder) else Path(folder), area=work_area(settings))
    failpoint("record.after_commit_before_cleanup")
    work = work_area(settings)
    work.remove(pkg["path"])
    work.remove(f"{pkg['path']}.json")
    # counts for the metrics, only for what this call recorded (not what another writer did)
    return {"package_id": pid, "recorded": True, "key": pkg["key"], "new": new,
            "records": meta.record_count if new else 0, "bytes": pkg["size"] if new else 0}


def _due(start: str | None, period: str) -> str | None:
    if not start:
        return None
    try:
        return add_period(dt.date.fromisoformat(start[:10]), period).isoformat()
    except ValueError:
        return None


def finish_batch(settings: Settings, name: str, manifest: str, results: list[dict]) -> dict:
    """Mark the batch archived once all its packages are recorded, and tidy up after it.

    Updates the catalogue's archive structure when the system is the archival description,
    lets the delivery tidy its inbox (delivered packages now verified in the mellanarkiv move out
    of it), and fails (after all that) when any delivered package had to be quarantined. Making
    the new packages findable is the next step's (:func:`update_index`).
    """
    sys_ = system(settings, name)
    delivery = delivery_for(sys_, settings.s3)
    structure = sys_.content.get("archive_structure")
    staged = _manifest(settings, manifest)
    cat = catalogue(settings)
    batch_id = f"{name}/{staged.batch}"
    changed = False
    if not (delivery.queue and staged.is_empty):
        _all_recorded(cat, delivery, staged, batch_id)
        if structure and not staged.is_empty:
            with _staged(settings, manifest) as tables:  # the description's tables are read
                update_archive_structure(cat, sys_, tables, structure, load_systems(settings.systems_dir))
        failpoint("finish.before_batch_archived")
        changed = cat.upsert_batch(batch_id=batch_id, system=name, period=staged.batch,
                                   interval_start=staged.interval_start, interval_end=staged.interval_end,
                                   status=BatchStatus.ARCHIVED, rows=_batch_state(staged),
                                   quality_report=_existing_report(cat, batch_id))
    delivery.after_archived(staged, cat, lambda key: mellanarkiv(settings).stat(key).sha256)
    _drop_batch(settings, manifest, staged)
    copy = delivery.worker_copy(settings, staged.batch)
    if copy is not None:
        shutil.rmtree(copy, ignore_errors=True)
    new = [r for r in results if r.get("recorded")]
    rejected = delivery.rejected(staged)
    if rejected:
        raise ContentError(f"{name}: {len(new)} package(s) archived, but {len(rejected)} delivered package(s) "
                           "are invalid and were quarantined with their validation reports",
                           [safe_line(f"{safe_name(r.source)}: {'; '.join(r.findings[:3])} (report {r.report})")
                            for r in rejected])
    return {"batch": staged.batch, "packages_new": len(new), "packages_total": len(results), "changed": changed}


def _all_recorded(cat: Catalogue, delivery: Delivery, staged: StagedBatch, batch_id: str) -> None:
    """Refuse to call a batch archived while any of its packages is not recorded (whole or not at all)."""
    planned = delivery.planned_packages(staged)
    missing = [p for p in planned if cat.package(p) is None]
    if missing:
        raise StateError(f"{batch_id}: {len(planned) - len(missing)} of {len(planned)} package(s) are recorded; the "
                         "batch is not archived until every one is. Rerun the interval: recorded packages are "
                         "skipped, the others are built, stored and recorded.")


# --- 5. the steps as the chain declares them (transforms.chain), and arkiv run ----------------------

def await_delivery_step(settings: Settings, name: str, interval: dict, timeout_hours: float | None = None) -> dict:
    """The chain's wait for the delivery: :func:`await_delivery` on an interval reference, its answer
    under ``delivery``."""
    return {**interval, "delivery": await_delivery(settings, name, interval["start"], interval["end"],
                                                   timeout_hours)}


def extract_step(settings: Settings, name: str, interval: dict,
                 alive: Callable[[str], bool] | None = None) -> dict:
    """Claim the interval for ``interval["holder"]``, then extract it; the batch reference carries the holder.

    ``interval``: ``start``, ``end`` and ``holder``, and ``source_url`` for a database (never
    handed on: it is not in what the step returns), or a function that gives it, called once the
    interval is claimed."""
    holder = interval["holder"]
    claim_interval(settings, name, interval["start"], interval["end"], holder, alive)
    url = interval.get("source_url")
    batch = extract(settings, name, interval["start"], interval["end"], url() if callable(url) else url)
    return {**batch, "holder": holder}


def quality_step(settings: Settings, name: str, batch: dict) -> dict:
    """The quality gate on the batch (:func:`check_quality`); ContentError when it fails."""
    return {**batch, "quality": check_quality(settings, name, batch["manifest"])}


def decision_step(settings: Settings, name: str, batch: dict) -> dict:
    """Where the batch stands after its gate (:func:`await_decision`)."""
    return {**batch, "decision": await_decision(settings, name, batch["manifest"], batch["batch"])}


def partitions(batch: dict) -> list[dict]:
    """One reference per record class of the batch, the largest first: what ``package`` runs on."""
    return [{"manifest": batch["manifest"], "record_class": rc, "holder": batch.get("holder")}
            for rc in batch["record_classes"]]


def package_step(settings: Settings, name: str, partition: dict) -> list[dict]:
    """Build one record class's packages while the run still holds the interval."""
    check_claim(settings, name, partition["manifest"], partition.get("holder"))
    return package(settings, name, partition["manifest"], partition["record_class"])


def finish_step(settings: Settings, name: str, batch: dict, results: list[dict]) -> dict:
    """Mark the batch archived (:func:`finish_batch`) and give the interval back, whatever the outcome."""
    check_claim(settings, name, batch["manifest"], batch.get("holder"))
    try:
        return finish_batch(settings, name, batch["manifest"], [r for r in results or [] if r])
    finally:  # the run's work on the interval is over either way; a rerun claims it again
        release_interval(settings, name, batch["manifest"], batch.get("holder"))


def update_index(settings: Settings, name: str, batch: dict | None, results: list[dict] | None) -> dict:
    """Make the packages this run recorded findable (:mod:`transforms.access`).

    The index is derived from the catalogue and the stored packages: a failure here is logged,
    never fatal (the packages are archived either way), and ``arkiv index`` (or the next
    run) catches up."""
    from transforms.access.service import index_recorded_package

    indexed, failed = 0, 0
    for pid in [r["package_id"] for r in results or [] if r and r.get("recorded")]:
        try:
            index_recorded_package(settings, pid)
            indexed += 1
        except Exception as exc:  # derived data: never let it undo an archived batch
            failed += 1
            log.error("search index not updated for package %s (%s: %s); run `arkiv index`", pid,
                      type(exc).__name__, safe_line(exc) if isinstance(exc, ArkivError) else "message withheld")
    return {"indexed": indexed, "failed": failed}


class Waiting(ContentError):
    """``arkiv run`` reached a step that would have to wait (a delivery not there, a decision not taken)."""


def _looked_once(step: Step, ref: dict) -> None:
    """Stop ``arkiv run`` where the DAG would wait: nobody is there to wait for."""
    state = ref.get("decision") or ref.get("delivery") or {}
    if state.get("state") != "waiting":
        return
    key = state.get("interval") or state.get("batch")
    if step.name == "await_decision":
        raise Waiting(f"{key} waits for an archivist's decision on quarantine case {state.get('case')} "
                      "(`arkiv quarantine approve|reject`); rerun the interval once it is decided")
    raise Waiting(safe_line(f"{key}: the delivery is not there yet (nothing at {state.get('expected')}); run "
                            "again once the system owner has delivered it"))


def run_interval(settings: Settings, name: str, start: dt.datetime | str, end: dt.datetime | str,
                 source_url: str | None = None, *,
                 on_step: Callable[[Step, object], None] | None = None) -> dict:
    """Run the whole chain for one interval of one system, without Airflow (``arkiv run``).

    Every step of :data:`transforms.chain.CHAIN` (:func:`run_steps`) under :func:`interval_guard`:
    the interval's lock for the whole run, and its claim. Returns the ``finish`` step's result.
    """
    interval = {"start": str(start), "end": str(end), "holder": cli_holder(), "source_url": source_url}
    with interval_guard(settings, name, start, end):
        return run_steps(settings, name, interval, CHAIN, on_step=on_step)


def run_steps(settings: Settings, name: str, ref: dict, steps: Sequence[Step], *,
              on_step: Callable[[Step, object], None] | None = None) -> dict:
    """Run ``steps`` of the chain in their order, from ``ref`` (an interval, or a batch to go on with).

    A step that waits in the DAG looks once here (:class:`Waiting` when it would wait). Steps
    that run *always* run after a failure too, and their own failure is logged; the first
    failure of another step is raised after them. ``on_step(step, value)`` sees each step's
    result. Returns the ``finish`` step's result (empty when it did not run).
    """
    packages: list[dict] = []
    done: dict = {}
    failure: BaseException | None = None
    for step in steps:
        if failure is not None and not step.always:
            continue
        fn = globals()[step.function]
        try:
            if step.each == Each.INTERVAL:
                value = ref = fn(settings, name, ref)
                if step.waits:
                    _looked_once(step, value)
            elif step.each == Each.RECORD_CLASS:
                value = packages = [p for part in partitions(ref) for p in fn(settings, name, part)]
            elif step.each == Each.PACKAGE:
                value = packages = [fn(settings, p) for p in packages]
            else:
                value = fn(settings, name, ref, packages)
                if step.name == "finish":
                    done = value
        except Exception as exc:
            if step.always:
                log.error("%s failed (%s); the archive is unchanged by it", step.name, type(exc).__name__)
                continue
            failure = exc
            continue
        if on_step is not None:
            on_step(step, value)
    if failure is not None:
        raise failure
    return done


def _creator_names(sys_: System) -> tuple[str, ...]:
    return (sys_.agreement.submitter.name, sys_.agreement.archive_creator.name)


def update_archive_structure(cat: Catalogue, sys_: System, staged: StagedBatch, structure: dict,
                             systems: dict[str, System] | None = None) -> int:
    """Upsert archive creators and series from the archival description's staged tables."""
    import pyarrow.parquet as pq

    files = staged.table_files()
    cm, sm = structure["creators"], structure["series"]
    creators = pq.read_table(files[cm["table"]]).to_pylist() if files.get(cm["table"]) else []
    series = pq.read_table(files[sm["table"]]).to_pylist() if files.get(sm["table"]) else []
    n = 0
    with cat.session() as ses:
        cat.lock(ses, "archive-structure")  # two intervals of the description may finish at once
        for c in creators:
            cid = f"{sys_.name}:{c[cm['id']]}"
            obj = ses.get(ArchiveCreator, cid) or ArchiveCreator(id=cid, source_system=sys_.name)
            obj.name, obj.organisationsnummer = c[cm["name"]], c.get(cm["organisationsnummer"])
            obj.updated_at = utcnow()
            ses.add(obj)
            n += 1
        ses.flush()
        for r in series:
            sid = f"{sys_.name}:{r[sm['id']]}"
            obj = ses.get(Series, sid) or Series(id=sid)
            obj.creator_id, obj.code = f"{sys_.name}:{r[sm['creator']]}", str(r[sm["code"]])
            obj.title, obj.updated_at = r[sm["title"]], utcnow()
            ses.add(obj)
            n += 1
        cat.add_event(ses, type="metadata modification", outcome="success", agent=AGENT,
                      batch_id=f"{sys_.name}/{staged.batch}",
                      detail=f"archive structure updated: {len(creators)} archive creators, {len(series)} series")
    # Packages archived before their series was described are linked now.
    unlinked = [p for p in cat.packages() if p.series_code and not p.series_id and p.archive_creator]
    for p in unlinked:
        owner = (systems or {}).get(p.system)
        sid = series_for(cat, p.archive_creator, p.series_code, _creator_names(owner) if owner else ())
        if sid:
            with cat.session() as ses:
                ses.get(Package, p.id).series_id = sid
                cat.add_event(ses, type="metadata modification", outcome="success", agent=AGENT, package_id=p.id,
                              detail=f"linked to series {p.series_code} ({sid}) in the archival description")
    return n


def series_for(cat: Catalogue, orgnr: str, code: str | None, creators: tuple[str, ...] = ()) -> str | None:
    """The catalogued series an agreement names ("F 2" or "F 2 Bygglovsakter") for the archive
    creator with ``orgnr``; None while the archival description does not know it.

    A municipality's nämnder share its organisationsnummer, so when several of them have a series
    with that code the one whose creator is named in the agreement (``creators``) wins.
    """
    if not code:
        return None
    best: tuple[int, str] | None = None
    with cat.session() as ses:
        q = (sa.select(Series, ArchiveCreator.name).join(ArchiveCreator, Series.creator_id == ArchiveCreator.id)
             .where(ArchiveCreator.organisationsnummer == orgnr).order_by(Series.id))
        for series, creator_name in ses.execute(q):
            if code == f"{series.code} {series.title}":
                score = 2
            elif code == series.code or code.startswith(series.code + " "):
                score = 1
            else:
                continue
            score += 2 if creator_name in creators else 0
            if best is None or score > best[0]:
                best = (score, series.id)
    return best[1] if best else None


def _existing_report(cat: Catalogue, batch_id: str) -> str | None:
    with cat.session() as ses:
        b = ses.get(Batch, batch_id)
        return b.quality_report if b else None


__all__ = ["BuiltPackage", "check_quality", "extract", "finish_batch", "package", "record", "run_interval", "ship",
           "update_index", "verify"]
