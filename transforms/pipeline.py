"""The archiving chain for one source system, one step per function.

Each step takes small references (a system name, a manifest path, a package ID) and
returns a small JSON-able dict, so that Airflow tasks can pass only references between them
(never records) and the ``arkiv`` CLI can run the same chain without Airflow. Every step is
idempotent: rerunning an interval that is already archived finds the same deterministic
package IDs in the catalogue and does nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

from . import __version__
from .catalogue import Batch, Catalogue, Package, Record, utcnow
from .config import Settings
from .errors import ConfigError, ContentError, StorageError
from .extract import StagedBatch, extract_database
from .package import BuiltPackage, RecordEntry, build_packages, package_id_for
from .premis import Event as PremisEvent
from .storage import FileSystemStorage
from .systems import System, load_system

log = logging.getLogger("arkivflode")
AGENT = f"Arkivflöde {__version__}"


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


def mellanarkiv(settings: Settings) -> FileSystemStorage:
    return FileSystemStorage(settings.mellanarkiv, "mellanarkiv")


def _local(value: dt.datetime | str, tz: str) -> dt.datetime:
    """An interval bound as a naive local datetime in the system's time zone."""
    d = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if d.tzinfo is not None:
        d = d.astimezone(ZoneInfo(tz)).replace(tzinfo=None)
    return d


def _batch_state(staged: StagedBatch) -> dict:
    return {"tables": staged.tables,
            "digests": {k: p.digest for k, p in sorted(staged.partitions.items())}}


# --- 1. extract ------------------------------------------------------------------------------

def extract(settings: Settings, name: str, start: dt.datetime | str, end: dt.datetime | str,
            source_url: str) -> dict:
    """Extract ``[start, end)`` into staging; record the batch (only if something changed)."""
    sys_ = system(settings, name)
    s, e = _local(start, sys_.timezone), _local(end, sys_.timezone)
    if e <= s:
        raise ConfigError(f"{name}: empty data interval {s.isoformat()} – {e.isoformat()}; "
                          "use a schedule with data intervals (see README)")
    staged = extract_database(sys_, source_url, s, e, settings.staging)
    cat = catalogue(settings)
    state = _batch_state(staged)
    batch_id = f"{name}/{staged.batch}"
    with cat.session() as ses:
        b = ses.get(Batch, batch_id)
        unchanged = b is not None and json.loads(b.rows) == state and b.status == "archived"
        changed_after_archiving = b is not None and b.status == "archived" and not unchanged
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
                         interval_end=staged.interval_end, status="staged", rows=state)
        with cat.session() as ses:
            cat.add_event(ses, type="capture", outcome="success", agent=AGENT, batch_id=batch_id,
                          detail=f"extracted {_counts(staged.tables)} from {name} for {staged.batch}")
    log.info("extracted %s batch %s: %s", name, staged.batch, _counts(staged.tables))
    return {"system": name, "batch": staged.batch, "manifest": str(staged.manifest_path), "rows": staged.tables,
            "record_classes": sorted(staged.partitions), "already_archived": unchanged}


def _counts(tables: dict[str, int]) -> str:
    return ", ".join(f"{n} {t}" for t, n in tables.items())


# --- 2. quality gate ---------------------------------------------------------------------------

def check_quality(settings: Settings, name: str, manifest: str) -> dict:
    """Run the system's suite on the staged batch; a failure quarantines it and raises ContentError."""
    from .quality import check_batch  # GX is heavy: imported only when a check runs

    sys_ = system(settings, name)
    staged = StagedBatch.load(manifest)
    batch_id = f"{name}/{staged.batch}"
    cat = catalogue(settings)
    with cat.session() as ses:
        b = ses.get(Batch, batch_id)
        if b is not None and b.status == "archived" and json.loads(b.rows) == _batch_state(staged):
            return {"success": True, "skipped": "batch already archived with identical content"}
    if staged.is_empty:
        return {"success": True, "skipped": "no records in this interval"}
    result = check_batch(settings.expectations_dir / sys_.quality_suite, staged.table_files(),
                         system=name, batch=staged.batch, report_dir=settings.reports / name,
                         sensitive_columns={t: list(c) for t, c in sys_.sensitive.items()})
    failed = result.failed()
    cat.upsert_batch(batch_id=batch_id, system=name, period=staged.batch, interval_start=staged.interval_start,
                     interval_end=staged.interval_end, status="quality_passed" if result.success else "quality_failed",
                     rows=_batch_state(staged), quality_report=str(result.result_path))
    with cat.session() as ses:
        cat.add_event(ses, type="validation", outcome="success" if result.success else "failure", agent=AGENT,
                      batch_id=batch_id, detail=f"quality suite {sys_.quality_suite}: {len(result.checks)} checks, "
                                                f"{len(failed)} failed; report {result.result_path}")
    if not result.success:
        where = quarantine(settings, staged)
        raise ContentError(
            f"{name} batch {staged.batch} failed its quality gate and was quarantined in {where}; "
            f"nothing was packaged. Report: {result.result_path}",
            [f"{c.table}: {c.expectation}{' on ' + c.column if c.column else ''}: {c.unexpected_count} record(s)"
             for c in failed],
        )
    return {"success": True, "checks": len(result.checks), "report": str(result.result_path)}


def quarantine(settings: Settings, staged: StagedBatch) -> Path:
    """Move a staged batch into the quarantine area (kept for the archivists' review)."""
    stamp = utcnow().strftime("%Y%m%dT%H%M%S")
    dest = settings.quarantine / staged.system / f"{staged.batch}-{stamp}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged.directory, dest)
    return dest


# --- 3. package -------------------------------------------------------------------------------

def _events_for_package(settings: Settings, name: str, batch: str) -> list[PremisEvent]:
    """The batch's capture and validation events, to be written into the package's PREMIS."""
    cat = catalogue(settings)
    out = []
    for ev in cat.events(batch_id=f"{name}/{batch}"):
        out.append(PremisEvent(identifier=f"catalogue-event-{ev.id}", type=ev.type, time=ev.time,
                               outcome=ev.outcome, detail=ev.detail, agents=(("arkivflode", "executing program"),)))
    return out


def package(settings: Settings, name: str, manifest: str, record_class: str) -> list[dict]:
    """Build the packages of one record class (skipping those already in the catalogue)."""
    sys_ = system(settings, name)
    staged = StagedBatch.load(manifest)
    part = staged.partitions[record_class]
    root_rows = part.rows.get(sys_.root_table.name, 0)
    parts = max(1, -(-root_rows // sys_.max_records))
    ids = [package_id_for(name, record_class, staged.batch, i, part.digest) for i in range(parts)]
    cat = catalogue(settings)
    if all(cat.package(i) is not None for i in ids):
        return [{"package_id": i, "already_archived": True} for i in ids]
    built = build_packages(sys_, staged, record_class, settings.build / name,
                           events=_events_for_package(settings, name, staged.batch))
    out = []
    for b in built:
        sidecar = Path(b.path).with_suffix(".json")
        sidecar.write_text(json.dumps({k: v for k, v in b.__dict__.items() if k != "records"}
                                      | {"records": [r.__dict__ for r in b.records],
                                         "built_at": utcnow().isoformat()}, ensure_ascii=False), encoding="utf-8")
        out.append({"package_id": b.package_id, "path": b.path, "sha256": b.sha256, "size": b.size,
                    "records": b.record_count, "documents": b.document_count, "already_archived": False})
    log.info("built %d package(s) for %s %s %s", len(out), name, staged.batch, record_class)
    return out


# --- 4. ship, verify, record ---------------------------------------------------------------------

def storage_key(system_name: str, period: str, package_id: str) -> str:
    return f"{system_name}/{period}/{package_id}.tar"


def ship(settings: Settings, pkg: dict) -> dict:
    """Copy a built package into the mellanarkiv (verified by read-back, never overwriting)."""
    if pkg.get("already_archived"):
        return pkg
    meta = json.loads(Path(pkg["path"]).with_suffix(".json").read_text(encoding="utf-8"))
    key = storage_key(meta["system"], meta["period"], pkg["package_id"])
    stored = mellanarkiv(settings).put(pkg["path"], key, expected_sha256=pkg["sha256"])
    return {**pkg, "key": stored.key, "shipped_at": utcnow().isoformat()}


def verify(settings: Settings, pkg: dict) -> dict:
    """Recompute the stored package's checksum and validate it as an FGS/E-ARK SIP."""
    if pkg.get("already_archived"):
        return pkg
    from .validate import validate_package

    store = mellanarkiv(settings)
    stat = store.stat(pkg["key"])
    if stat.sha256 != pkg["sha256"] or stat.size != pkg["size"]:
        raise StorageError(f"mellanarkiv: {pkg['key']}: stored copy does not match the built package "
                           f"(sha256 {stat.sha256} vs {pkg['sha256']})")
    report = validate_package(store.root / pkg["key"])
    if not report.valid:
        errors = [f"{f.requirement}: {f.message}" for f in report.findings if f.severity == "ERROR"]
        raise ContentError(f"package {pkg['package_id']} is stored but does not validate", errors)
    return {**pkg, "verified_at": utcnow().isoformat(), "validation": "valid",
            "requirements_checked": len(report.checked)}


def record(settings: Settings, pkg: dict) -> dict:
    """Enter a verified package, its records and its events in the catalogue; clean the build folder."""
    if pkg.get("already_archived"):
        return {"package_id": pkg["package_id"], "recorded": False}
    meta = json.loads(Path(pkg["path"]).with_suffix(".json").read_text(encoding="utf-8"))
    cat = catalogue(settings)
    batch_id = f"{meta['system']}/{meta['period']}"
    with cat.session() as ses:
        if ses.get(Package, pkg["package_id"]) is None:
            ses.add(Package(id=pkg["package_id"], system=meta["system"], record_class=meta["record_class"],
                            period=meta["period"], batch_id=batch_id, package_type="SIP", status="stored",
                            size=pkg["size"], sha256=pkg["sha256"], content_digest=meta["content_digest"],
                            storage="mellanarkiv", location=pkg["key"], record_count=meta["record_count"],
                            document_count=meta["document_count"]))
            ses.flush()
            for r in meta["records"]:
                entry = RecordEntry(**r)
                ses.add(Record(system=meta["system"], source_id=entry.source_id, reference=entry.reference,
                               package_id=pkg["package_id"], record_class=meta["record_class"],
                               opened=entry.opened, closed=entry.closed))
            t = dt.datetime.fromisoformat
            pid = pkg["package_id"]
            cat.add_event(ses, type="creation", outcome="success", agent=AGENT, package_id=pid, batch_id=batch_id,
                          time=t(meta["built_at"]), detail=f"SIP built: {meta['record_count']} records, "
                                                          f"{meta['document_count']} files, {pkg['size']} bytes")
            cat.add_event(ses, type="replication", outcome="success", agent=AGENT, package_id=pid, batch_id=batch_id,
                          time=t(pkg["shipped_at"]), detail=f"copied to mellanarkiv {pkg['key']}, read back")
            cat.add_event(ses, type="fixity check", outcome="success", agent=AGENT, package_id=pid, batch_id=batch_id,
                          time=t(pkg["verified_at"]), detail=f"SHA-256 {pkg['sha256']} matches the stored copy")
            cat.add_event(ses, type="validation", outcome="success", agent=AGENT, package_id=pid, batch_id=batch_id,
                          time=t(pkg["verified_at"]),
                          detail=f"arkiv validate: valid ({pkg.get('requirements_checked', 0)} requirements checked)")
            cat.add_event(ses, type="ingestion", outcome="success", agent=AGENT, package_id=pid, batch_id=batch_id,
                          detail="recorded in the catalogue")
    Path(pkg["path"]).unlink(missing_ok=True)
    Path(pkg["path"]).with_suffix(".json").unlink(missing_ok=True)
    return {"package_id": pkg["package_id"], "recorded": True, "key": pkg["key"]}


def finish_batch(settings: Settings, name: str, manifest: str, results: list[dict]) -> dict:
    """Mark the batch archived once all its packages are recorded; clean its staging folder."""
    staged = StagedBatch.load(manifest)
    cat = catalogue(settings)
    batch_id = f"{name}/{staged.batch}"
    changed = cat.upsert_batch(batch_id=batch_id, system=name, period=staged.batch,
                               interval_start=staged.interval_start, interval_end=staged.interval_end,
                               status="archived", rows=_batch_state(staged),
                               quality_report=_existing_report(cat, batch_id))
    shutil.rmtree(staged.directory, ignore_errors=True)
    new = [r for r in results if r.get("recorded")]
    return {"batch": staged.batch, "packages_new": len(new), "packages_total": len(results), "changed": changed}


def _existing_report(cat: Catalogue, batch_id: str) -> str | None:
    with cat.session() as ses:
        b = ses.get(Batch, batch_id)
        return b.quality_report if b else None


__all__ = ["BuiltPackage", "check_quality", "extract", "finish_batch", "package", "record", "ship", "verify"]
