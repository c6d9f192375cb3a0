"""The archive catalogue: Arkivflöde's own record of truth, separate from Airflow's database.

It knows every batch, every package (where it is stored and its checksum), every record in
a package and every PREMIS-style event that happened to them. SQLAlchemy 2 models; SQLite by
default and PostgreSQL in production (``ARKIV_CATALOGUE_URL``). The schema is versioned: each
migration in :data:`MIGRATIONS` runs once and is recorded in ``schema_version``.

May import: ``common`` only; every other layer may use the catalogue.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from transforms.common.errors import AlreadyRunning


class BatchStatus(StrEnum):
    """Where a batch (one interval of one system) stands, as the catalogue keeps it in ``batches.status``.

    The values are the strings the catalogue has always stored, so a member compares equal to a
    stored status and is stored as that string.
    """

    #: the intake's deadline passed with nothing delivered; the system owner delivers
    DELIVERY_MISSING = "delivery_missing"
    #: extracted into staging, not checked yet
    STAGED = "staged"
    #: the quality gate failed; the batch is held in quarantine for an archivist's decision
    QUALITY_FAILED = "quality_failed"
    #: the quality gate passed, or an archivist approved the batch with a deviation
    QUALITY_PASSED = "quality_passed"
    #: every package of the batch is recorded in the catalogue
    ARCHIVED = "archived"


class PackageStatus(StrEnum):
    """Where a catalogued package is, as the catalogue keeps it in ``packages.status``."""

    #: verified in the mellanarkiv
    STORED = "stored"
    #: written to the slutarkiv as an OCFL object, removed from the mellanarkiv
    TRANSFERRED = "transferred"
    #: disposed of under an approved disposal list (a tombstone in the catalogue)
    DISPOSED = "disposed"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


class Base(DeclarativeBase):
    pass


@dataclass(frozen=True)
class Person:
    """Who made a decision: the identity provider's identifier (subject) and name, and their roles then.

    Without a provider (the embedded default) a decision names whoever typed ``--by NAME``:
    :meth:`unauthenticated` keeps that name and says in the identifier that nobody vouched for it.
    """

    id: str
    name: str
    roles: tuple[str, ...] = ()

    @classmethod
    def unauthenticated(cls, name: str) -> Person:
        name = (name or "").strip()
        if not name:
            raise ValueError("a decision needs who decides")
        return cls(id=f"{UNAUTHENTICATED}{name}"[:300], name=name[:200])

    @property
    def authenticated(self) -> bool:
        return not self.id.startswith(UNAUTHENTICATED)

    @property
    def roles_text(self) -> str:
        return ",".join(self.roles)


#: the identifier prefix of a name nobody authenticated (``--by NAME`` without an identity provider)
UNAUTHENTICATED = "unauthenticated name:"


class SchemaVersion(Base):
    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    applied_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Batch(Base):
    """One extraction of one system for one data interval."""

    __tablename__ = "batches"
    id: Mapped[str] = mapped_column(sa.String(200), primary_key=True)  # "<system>/<period>"
    system: Mapped[str] = mapped_column(sa.String(100), index=True)
    period: Mapped[str] = mapped_column(sa.String(100))
    interval_start: Mapped[str] = mapped_column(sa.String(40))
    interval_end: Mapped[str] = mapped_column(sa.String(40))
    status: Mapped[str] = mapped_column(sa.String(40))  # staged | quality_failed | quality_passed | archived
    rows: Mapped[str] = mapped_column(sa.Text, default="{}")  # JSON: table -> count
    quality_report: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: JSON list of the package IDs the batch is made of (migration 7; NULL for batches staged before it):
    #: the batch is archived only when every one of them is recorded
    planned: Mapped[str | None] = mapped_column(sa.Text, nullable=True)


class Package(Base):
    """An information package and where it is stored."""

    __tablename__ = "packages"
    id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)  # mets/@OBJID
    system: Mapped[str] = mapped_column(sa.String(100), index=True)
    record_class: Mapped[str] = mapped_column(sa.String(100))
    period: Mapped[str] = mapped_column(sa.String(100))
    batch_id: Mapped[str] = mapped_column(sa.String(200), index=True)
    package_type: Mapped[str] = mapped_column(sa.String(10), default="SIP")
    status: Mapped[str] = mapped_column(sa.String(40))  # stored (in mellanarkiv, verified)
    size: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    content_digest: Mapped[str] = mapped_column(sa.String(64))
    storage: Mapped[str] = mapped_column(sa.String(40))  # mellanarkiv | slutarkiv
    location: Mapped[str] = mapped_column(sa.String(500))  # key within the storage
    record_count: Mapped[int] = mapped_column(default=0)
    document_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    archive_creator: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    series_code: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)
    series_id: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)  # set once the series is known
    retention_action: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)  # keep | dispose
    due_date: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)  # when every record is due


class Hold(Base):
    """A legal hold: what it covers is neither transferred nor disposed of while it is active."""

    __tablename__ = "holds"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(sa.String(20))  # package | record | record_class
    target: Mapped[str] = mapped_column(sa.String(300), index=True)  # id | "<system>:<source id>" | "<system>:<class>"
    reason: Mapped[str] = mapped_column(sa.Text)
    placed_by: Mapped[str] = mapped_column(sa.String(200))
    placed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    lifted_by: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    lifted_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    #: the identity provider's identifiers of who placed and lifted it (migration 10)
    placed_by_id: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    lifted_by_id: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)


class DisposalList(Base):
    """A gallring proposal: the packages due for disposal, approved or rejected by an archivist."""

    __tablename__ = "disposal_lists"
    id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)  # e.g. "gallring-2040-01-01"
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    as_of: Mapped[str] = mapped_column(sa.String(20))  # the date the list was computed for
    status: Mapped[str] = mapped_column(sa.String(20))  # proposed | approved | rejected | executed
    items: Mapped[str] = mapped_column(sa.Text)  # JSON list of package ids
    decided_by: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    decided_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    justification: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    certificate: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)  # the certificate's package id
    # two people (migration 10): the first archivist reviews (status "reviewed"), another approves;
    # names and the identity provider's identifiers of both
    reviewed_by: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    reviewed_by_id: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    review_note: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    decided_by_id: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)


class Tombstone(Base):
    """What was disposed of, by which rule, on whose approval — kept for ever."""

    __tablename__ = "tombstones"
    package_id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    system: Mapped[str] = mapped_column(sa.String(100))
    record_class: Mapped[str] = mapped_column(sa.String(100))
    period: Mapped[str] = mapped_column(sa.String(100))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    record_count: Mapped[int] = mapped_column()
    references: Mapped[str] = mapped_column(sa.Text)  # JSON list of the records' references
    rule: Mapped[str] = mapped_column(sa.Text)
    disposal_list: Mapped[str] = mapped_column(sa.String(100))
    approved_by: Mapped[str] = mapped_column(sa.String(200))
    approved_at: Mapped[dt.datetime] = mapped_column()
    disposed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    approved_by_id: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)  # migration 10
    reviewed_by: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    reviewed_by_id: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)


class QuarantineCase(Base):
    """Something held back for an archivist: a batch that failed its quality gate, a bad delivery or package."""

    __tablename__ = "quarantine_cases"
    id: Mapped[str] = mapped_column(sa.String(300), primary_key=True)
    system: Mapped[str] = mapped_column(sa.String(100), index=True)
    batch_id: Mapped[str] = mapped_column(sa.String(200), index=True)
    kind: Mapped[str] = mapped_column(sa.String(20))  # quality | delivery | package
    reasons: Mapped[str] = mapped_column(sa.Text)  # JSON list: failed checks and counts, never record values
    path: Mapped[str] = mapped_column(sa.String(500))  # where the held data is
    report: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
    content_state: Mapped[str] = mapped_column(sa.Text, default="{}")  # JSON: what was checked (digests)
    status: Mapped[str] = mapped_column(sa.String(20), default="open")  # open | approved | rejected
    decided_by: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    decided_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    justification: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    decided_by_id: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)  # migration 10


class Record(Base):
    """A record (e.g. a case) in a package; the retention schedule is applied per record class."""

    __tablename__ = "records"
    __table_args__ = (sa.UniqueConstraint("system", "source_id", "package_id", name="uq_record_in_package"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    system: Mapped[str] = mapped_column(sa.String(100), index=True)
    source_id: Mapped[str] = mapped_column(sa.String(200))
    reference: Mapped[str] = mapped_column(sa.String(200), index=True)  # e.g. diarienummer
    package_id: Mapped[str] = mapped_column(sa.ForeignKey("packages.id"), index=True)
    record_class: Mapped[str] = mapped_column(sa.String(100))
    opened: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)
    closed: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)
    retention_start: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)
    due_date: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)


class Event(Base):
    """A PREMIS-style event on a package or a batch (capture, validation, replication, …)."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    package_id: Mapped[str | None] = mapped_column(sa.String(100), index=True, nullable=True)
    batch_id: Mapped[str | None] = mapped_column(sa.String(200), index=True, nullable=True)
    type: Mapped[str] = mapped_column(sa.String(60))
    time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    outcome: Mapped[str] = mapped_column(sa.String(20))  # success | failure | warning
    agent: Mapped[str] = mapped_column(sa.String(200))
    detail: Mapped[str] = mapped_column(sa.Text, default="")
    # a person's decision (migration 10): ``agent`` is their name, ``agent_id`` the identity provider's
    # identifier, ``agent_roles`` their archive roles then; ``executing_agent`` the software that carried it out
    agent_id: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    agent_roles: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    executing_agent: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)


class ArchiveCreator(Base):
    """An archive creator (arkivbildare) from the archival description (Visual Arkiv)."""

    __tablename__ = "archive_creators"
    id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)  # "<system>:<source id>"
    name: Mapped[str] = mapped_column(sa.String(300))
    organisationsnummer: Mapped[str | None] = mapped_column(sa.String(20), index=True, nullable=True)
    source_system: Mapped[str] = mapped_column(sa.String(100))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Series(Base):
    """A series in an archive creator's archive (e.g. "F 2 Bygglovsakter")."""

    __tablename__ = "series"
    id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    creator_id: Mapped[str] = mapped_column(sa.ForeignKey("archive_creators.id"), index=True)
    code: Mapped[str] = mapped_column(sa.String(100))
    title: Mapped[str] = mapped_column(sa.String(300))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# --- access (migration 6): search index, credentials, access log ------------------------------

class AccessPackage(Base):
    """A package as the access index last read it: where it was, whether its bytes verified."""

    __tablename__ = "access_packages"
    package_id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    storage: Mapped[str] = mapped_column(sa.String(20))  # mellanarkiv | slutarkiv | disposed
    location: Mapped[str] = mapped_column(sa.String(500))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    verified: Mapped[bool] = mapped_column(default=False)  # every member matched its METS checksum
    members: Mapped[int] = mapped_column(default=0)
    erms_path: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)  # the ERMS document, if any
    erms_offset: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)  # its data offset in the TAR
    erms_size: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    indexed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AccessEntry(Base):
    """One record in the search index (a tombstone once its package is disposed of).

    ``public_text`` is what anyone may search (no title or party names of a secret record);
    ``full_text`` adds those for cleared roles. Personnummer are never stored here.
    """

    __tablename__ = "access_entries"
    __table_args__ = (sa.UniqueConstraint("system", "source_id", "package_id", name="uq_access_entry"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    system: Mapped[str] = mapped_column(sa.String(100), index=True)
    source_id: Mapped[str] = mapped_column(sa.String(200), index=True)
    package_id: Mapped[str] = mapped_column(sa.String(100), index=True)
    reference: Mapped[str] = mapped_column(sa.String(200), index=True)
    title: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    record_class: Mapped[str] = mapped_column(sa.String(100))
    period: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)
    opened: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)
    closed: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)
    archive_creator: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    series: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    parties: Mapped[str | None] = mapped_column(sa.Text, nullable=True)  # names, "; "-separated
    secret: Mapped[bool] = mapped_column(default=False)
    secrecy_reference: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    storage: Mapped[str] = mapped_column(sa.String(20))  # mellanarkiv | slutarkiv | disposed
    public_text: Mapped[str] = mapped_column(sa.Text, default="")
    full_text: Mapped[str] = mapped_column(sa.Text, default="")
    indexed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AccessDocument(Base):
    """A document of an indexed record: where its bytes are inside the package, and their checksum."""

    __tablename__ = "access_documents"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(sa.ForeignKey("access_entries.id"), index=True)
    document_id: Mapped[str] = mapped_column(sa.String(200))
    number: Mapped[int | None] = mapped_column(nullable=True)
    title: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    path: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)  # relative to the package root
    name: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)  # original file name
    mimetype: Mapped[str] = mapped_column(sa.String(200), default="application/octet-stream")
    size: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    tar_offset: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)  # data offset in the SIP TAR
    secret: Mapped[bool] = mapped_column(default=False)
    secrecy_reference: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)


class AccessPersonnummer(Base):
    """A keyed hash (HMAC) of a party's personnummer: exact-match search without storing the number."""

    __tablename__ = "access_personnummer"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(sa.ForeignKey("access_entries.id"), index=True)
    digest: Mapped[str] = mapped_column(sa.String(64), index=True)


class AccessCredential(Base):
    """An API credential: a role, optionally scoped to one system; only the token's SHA-256 is kept."""

    __tablename__ = "access_credentials"
    id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)  # a name, e.g. "lex-client"
    role: Mapped[str] = mapped_column(sa.String(20))  # archivist | system_owner | client | researcher
    system: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)
    cleared: Mapped[bool] = mapped_column(default=False)  # may see records covered by secrecy (OSL)
    token_sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_by: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class AccessLogEntry(Base):
    """One access (who, what, when, why, outcome); append-only, enforced by database triggers."""

    __tablename__ = "access_log"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    time: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(sa.String(200), index=True)
    role: Mapped[str] = mapped_column(sa.String(20))
    action: Mapped[str] = mapped_column(sa.String(40))  # search | record | document | history | receipt | export
    target: Mapped[str] = mapped_column(sa.String(500), index=True)
    purpose: Mapped[str] = mapped_column(sa.Text, default="")
    outcome: Mapped[str] = mapped_column(sa.String(20))  # granted | withheld | refused | not_found
    detail: Mapped[str] = mapped_column(sa.Text, default="")
    # who, as the identity provider said at the time (migration 10; empty for the catalogue's own credentials)
    person_name: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    roles: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    issuer: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)


class FileFormat(Base):
    """One file of a package with its PRONOM identification and what the format policy did with it.

    ``outcome``: accepted (kept as delivered), converted (an original whose PDF/A is
    ``derivative``), derivative (made from ``derived_from``), rejected or conversion failed
    (kept in the original representation, a copy quarantined with ``reason``).
    """

    __tablename__ = "file_formats"
    __table_args__ = (sa.UniqueConstraint("package_id", "path", name="uq_file_format_path"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    package_id: Mapped[str] = mapped_column(sa.String(100), index=True)
    path: Mapped[str] = mapped_column(sa.String(1000))  # relative to the package root
    representation: Mapped[str] = mapped_column(sa.String(100))
    puid: Mapped[str | None] = mapped_column(sa.String(40), index=True, nullable=True)  # None: unidentified
    format_name: Mapped[str] = mapped_column(sa.String(300), default="")
    format_version: Mapped[str] = mapped_column(sa.String(100), default="")
    mime: Mapped[str] = mapped_column(sa.String(200), default="")
    method: Mapped[str] = mapped_column(sa.String(20))  # signature | container | extension | none
    tool: Mapped[str] = mapped_column(sa.String(200))  # e.g. "fido 1.6.1 (PRONOM v109)"
    outcome: Mapped[str] = mapped_column(sa.String(30))  # accepted | converted | derivative | rejected | …
    reason: Mapped[str] = mapped_column(sa.Text, default="")
    derived_from: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    derivative: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size: Mapped[int] = mapped_column(sa.BigInteger)


def add_file_formats(s: Session, package_id: str, rows: list[dict]) -> None:
    """Enter a package's identified files (the builder's ``formats`` list) in one session."""
    for r in rows:
        s.add(FileFormat(package_id=package_id, path=r["path"], representation=r["representation"],
                         puid=r.get("puid"), format_name=r.get("format_name") or "",
                         format_version=r.get("format_version") or "", mime=r.get("mime") or "",
                         method=r.get("method") or "none", tool=r.get("tool") or "", outcome=r["outcome"],
                         reason=r.get("detail") or r.get("reason") or "", derived_from=r.get("derived_from"),
                         derivative=r.get("derivative"), sha256=r["sha256"], size=r["size"]))


_ADDED_LATER = {"packages": {"archive_creator", "series_code", "series_id", "retention_action", "due_date"},
                "records": {"retention_start", "due_date"}, "batches": {"planned"},
                "events": {"agent_id", "agent_roles", "executing_agent"}}
_ADDED_IN_3 = {"packages": ("retention_action VARCHAR(20)", "due_date VARCHAR(40)"),
               "records": ("retention_start VARCHAR(40)", "due_date VARCHAR(40)")}


def _as_of_migration_1(table: sa.Table) -> sa.Table:
    """A table as migration 1 created it (columns added by later migrations left out)."""
    later = _ADDED_LATER.get(table.name, set())
    if not later:
        return table
    meta = sa.MetaData()
    return sa.Table(table.name, meta, *[c._copy() for c in table.columns if c.name not in later])


class IntervalClaim(Base):
    """Which run archives one system's interval now (``<system>/<period>``, as the batch's ID).

    Taken when a run starts the interval and deleted when it finishes it, by ``arkiv run`` and
    by DAG runs alike, so that two runs of one interval (manual and scheduled, backfill and
    scheduled) never both archive it. A holder that ended without releasing (a failed DAG run)
    is found ended when the next run asks, and that run takes the interval over. A finished
    rerun leaves no row behind: the catalogue is as it was."""

    __tablename__ = "interval_claims"
    key: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(400))  # "dag-run:<dag_id>/<run_id>" or "arkiv-run:<host>:<pid>"
    claimed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class FormatIdentification(Base):
    """A content's format identification, by its SHA-256 and what identified it (fido and PRONOM
    versions, and the builder's own rules): content identified once is never identified again."""

    __tablename__ = "format_identifications"
    __table_args__ = (sa.UniqueConstraint("sha256", "signature_version", name="uq_format_identifications_key"),)
    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    signature_version: Mapped[str] = mapped_column(sa.String(200))
    puid: Mapped[str] = mapped_column(sa.String(40))
    name: Mapped[str] = mapped_column(sa.String(300), default="")
    version: Mapped[str] = mapped_column(sa.String(100), default="")
    mime: Mapped[str] = mapped_column(sa.String(200), default="")
    method: Mapped[str] = mapped_column(sa.String(20))  # signature | container (what the bytes alone decide)
    tool: Mapped[str] = mapped_column(sa.String(200))
    encrypted: Mapped[bool] = mapped_column(default=False)
    pdfa: Mapped[str | None] = mapped_column(sa.String(10), nullable=True)
    note: Mapped[str] = mapped_column(sa.Text, default="")
    identified_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


def _migration_1(conn: sa.Connection) -> None:
    for table in (Batch.__table__, Package.__table__, Record.__table__, Event.__table__):
        _as_of_migration_1(table).create(conn, checkfirst=True)


def _migration_2(conn: sa.Connection) -> None:
    Base.metadata.create_all(conn, tables=[ArchiveCreator.__table__, Series.__table__])
    conn.execute(sa.text("ALTER TABLE packages ADD COLUMN archive_creator VARCHAR(300)"))
    conn.execute(sa.text("ALTER TABLE packages ADD COLUMN series_code VARCHAR(100)"))
    conn.execute(sa.text("ALTER TABLE packages ADD COLUMN series_id VARCHAR(100)"))


def _migration_3(conn: sa.Connection) -> None:
    Base.metadata.create_all(conn, tables=[Hold.__table__, DisposalList.__table__, Tombstone.__table__])
    for table, columns in _ADDED_IN_3.items():
        for column in columns:
            conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column}"))


def _migration_4(conn: sa.Connection) -> None:
    Base.metadata.create_all(conn, tables=[QuarantineCase.__table__])


_ACCESS_TABLES = ("access_packages", "access_entries", "access_documents", "access_personnummer",
                  "access_credentials", "access_log")


def _migration_6(conn: sa.Connection) -> None:
    """Access: the search index (FTS5 on SQLite, tsvector on PostgreSQL) and an append-only access log."""
    Base.metadata.create_all(conn, tables=[Base.metadata.tables[t] for t in _ACCESS_TABLES])
    if conn.dialect.name == "postgresql":
        for col in ("public", "full"):
            conn.execute(sa.text(f"ALTER TABLE access_entries ADD COLUMN {col}_tsv tsvector "
                                 f"GENERATED ALWAYS AS (to_tsvector('swedish', {col}_text)) STORED"))
            conn.execute(sa.text(f"CREATE INDEX ix_access_entries_{col}_tsv ON access_entries USING GIN ({col}_tsv)"))
        conn.execute(sa.text(
            "CREATE FUNCTION access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'access_log is append-only: % refused', TG_OP; END $$"))
        conn.execute(sa.text("CREATE TRIGGER access_log_no_change BEFORE UPDATE OR DELETE ON access_log "
                             "FOR EACH ROW EXECUTE FUNCTION access_log_append_only()"))
        conn.execute(sa.text("CREATE TRIGGER access_log_no_truncate BEFORE TRUNCATE ON access_log "
                             "FOR EACH STATEMENT EXECUTE FUNCTION access_log_append_only()"))
    else:
        conn.execute(sa.text("CREATE VIRTUAL TABLE access_fts USING fts5(public_text, full_text, "
                             "tokenize = 'unicode61 remove_diacritics 2')"))
        for op in ("UPDATE", "DELETE"):
            conn.execute(sa.text(f"CREATE TRIGGER access_log_no_{op.lower()} BEFORE {op} ON access_log "
                                 f"BEGIN SELECT RAISE(ABORT, 'access_log is append-only: {op} refused'); END"))


def _migration_5(conn: sa.Connection) -> None:
    Base.metadata.create_all(conn, tables=[FileFormat.__table__])


def _migration_7(conn: sa.Connection) -> None:
    conn.execute(sa.text("ALTER TABLE batches ADD COLUMN planned TEXT"))



def _migration_8(conn: sa.Connection) -> None:
    Base.metadata.create_all(conn, tables=[IntervalClaim.__table__])


def _migration_9(conn: sa.Connection) -> None:
    Base.metadata.create_all(conn, tables=[FormatIdentification.__table__])

#: columns migration 10 adds (tables made by earlier migrations from today's models may have them already)
_ADDED_IN_10 = {
    "events": ("agent_id VARCHAR(300)", "agent_roles VARCHAR(200)", "executing_agent VARCHAR(200)"),
    "disposal_lists": ("reviewed_by VARCHAR(200)", "reviewed_by_id VARCHAR(300)", "reviewed_at TIMESTAMP",
                       "review_note TEXT", "decided_by_id VARCHAR(300)"),
    "tombstones": ("approved_by_id VARCHAR(300)", "reviewed_by VARCHAR(200)", "reviewed_by_id VARCHAR(300)"),
    "holds": ("placed_by_id VARCHAR(300)", "lifted_by_id VARCHAR(300)"),
    "quarantine_cases": ("decided_by_id VARCHAR(300)",),
    "access_log": ("person_name VARCHAR(200)", "roles VARCHAR(200)", "issuer VARCHAR(300)"),
}


def _migration_10(conn: sa.Connection) -> None:
    """Who decided: identifiers, names and roles of people beside the software that acted."""
    inspector = sa.inspect(conn)
    for table, columns in _ADDED_IN_10.items():
        present = {c["name"] for c in inspector.get_columns(table)}
        for column in columns:
            if column.split(" ", 1)[0] not in present:
                conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column}"))


#: (version, name, function); append only — never edit a migration that has shipped
MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "batches, packages, records, events", _migration_1),
    (2, "archive structure: archive creators, series; packages name theirs", _migration_2),
    (3, "retention: due dates, legal holds, disposal lists, tombstones", _migration_3),
    (4, "quarantine cases for archivists' review", _migration_4),
    (5, "file formats: PRONOM identification and format-policy outcome per file", _migration_5),
    (6, "access: search index, document offsets, credentials, append-only access log", _migration_6),
    (7, "batches list the packages they are made of (a batch is archived whole or not at all)", _migration_7),
    (8, "interval claims: one run at a time archives a system's interval (CLI and DAG runs)", _migration_8),
    (9, "format identifications by content digest and signature version (each content identified once)",
     _migration_9),
    (10, "who decided: people's identifiers and roles on events, disposal lists (two approvers), holds, "
         "quarantine cases and the access log", _migration_10),
]


#: the PostgreSQL advisory lock key that serialises :meth:`Catalogue.migrate` (any fixed bigint)
_MIGRATION_LOCK = 0x41524B4956  # "ARKIV"


def _set_wal(cur, seconds: float = 60.0) -> None:
    """Switch a SQLite connection to WAL, waiting for other processes doing the same.

    Switching the journal mode needs the database to itself, and SQLite answers "database is
    locked" at once, without its busy timeout, when another connection opens a brand-new
    file at the same moment (two tasks creating the catalogue together): retry with backoff."""
    import sqlite3
    import time

    deadline, pause = time.monotonic() + seconds, 0.01
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


class Catalogue:
    """Access to the catalogue database; :meth:`session` gives a transaction."""

    def __init__(self, url: str):
        self.url = url
        kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        # hide_parameters: a failed statement's error must not carry record values (references,
        # names) into logs and task output; the statement itself is kept.
        self.engine = sa.create_engine(url, hide_parameters=True, **kwargs)
        if url.startswith("sqlite"):
            @sa_event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):
                cur = dbapi_conn.cursor()
                _set_wal(cur)
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA synchronous=FULL")
                cur.close()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version now in force.

        Every task calls this, often several at once on different workers: when the schema
        is current it only reads. Otherwise the migrations run under a lock held until they
        commit (PostgreSQL advisory lock; SQLite takes its write lock up front), so a second
        process waits and then finds them done instead of running them again.
        """
        if self._applied() >= {v for v, _, _ in MIGRATIONS}:
            return MIGRATIONS[-1][0]
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            elif self.engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # pysqlite has not begun one yet (autobegin is lazy)
            SchemaVersion.__table__.create(conn, checkfirst=True)
            done = {v for (v,) in conn.execute(sa.select(SchemaVersion.version))}
            for version, name, fn in MIGRATIONS:
                if version not in done:
                    fn(conn)
                    conn.execute(sa.insert(SchemaVersion).values(version=version, name=name, applied_at=utcnow()))
        return MIGRATIONS[-1][0]

    def _applied(self) -> set[int]:
        """The migrations recorded as applied (none when the catalogue is new)."""
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(SchemaVersion.__tablename__):
                return set()
            return {v for (v,) in conn.execute(sa.select(SchemaVersion.version))}

    def lock(self, s: Session, key: str) -> None:
        """Serialise writers of ``key`` (a batch or package id) until ``s``'s transaction ends.

        Two DAG runs, a retried task or the CLI can record the same batch or package at the
        same moment on different workers. Each reads "not there yet" and inserts; the primary
        key stops the duplicate, but the loser fails. Under this lock the second writer waits,
        then reads what the first committed and does nothing. Call it first in the session.
        PostgreSQL: a transaction-level advisory lock on the key's hash. SQLite: the database's
        one write lock, taken now (``BEGIN IMMEDIATE``) instead of at the first write.
        """
        if self.engine.dialect.name == "postgresql":
            s.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})
        elif self.engine.dialect.name == "sqlite":
            dbapi = s.connection().connection.dbapi_connection
            if not dbapi.in_transaction:  # pysqlite begins lazily; once it has written, the lock is held
                dbapi.execute("BEGIN IMMEDIATE")

    @contextmanager
    def exclusive(self, key: str, what: str) -> Iterator[None]:
        """Hold ``key`` for the whole block, across processes and machines sharing this catalogue.

        For work that must not run twice at once (two `arkiv run` of one interval would build,
        store and record the same packages side by side). Does not wait: when another process
        holds the key, raises :class:`AlreadyRunning` naming ``what``. PostgreSQL: a session-level
        advisory lock on a connection of its own (released when the block ends, or by the server
        when the process dies); SQLite: an ``flock`` on a file beside the database (released by
        the kernel when the process dies); MySQL/MariaDB: ``GET_LOCK``.
        """
        busy = AlreadyRunning(f"{what} is already running in another process (lock {key!r} on the catalogue); "
                              "nothing was done by this one. Let it finish; rerun afterwards if it failed.")
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            import fcntl
            import hashlib
            import os
            from pathlib import Path

            db = Path(self.engine.url.database or "catalogue.sqlite")
            lock_file = db.with_name(f".{db.name}.lock-{hashlib.sha256(key.encode()).hexdigest()[:16]}")
            fd = os.open(lock_file, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise busy from None
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the flock
            return
        take, release = {
            "postgresql": ("SELECT pg_try_advisory_lock(hashtextextended(:k, 0))",
                           "SELECT pg_advisory_unlock(hashtextextended(:k, 0))"),
            "mysql": ("SELECT GET_LOCK(:k, 0)", "SELECT RELEASE_LOCK(:k)"),
        }.get(dialect, (None, None))
        if take is None:
            yield
            return
        conn = self.engine.connect()
        try:
            got = conn.execute(sa.text(take), {"k": key}).scalar()
            conn.commit()
            if not got:
                raise busy
            try:
                yield
            finally:
                try:
                    conn.execute(sa.text(release), {"k": key})
                    conn.commit()
                except sa.exc.DBAPIError:
                    conn.invalidate()  # the connection is gone, and the server released the lock with it
        finally:
            conn.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self._sessions() as s, s.begin():
            yield s

    def dispose(self) -> None:
        self.engine.dispose()

    # --- reads -----------------------------------------------------------------------------

    def package(self, package_id: str) -> Package | None:
        with self.session() as s:
            return s.get(Package, package_id)

    def packages(self, system: str | None = None) -> list[Package]:
        with self.session() as s:
            q = sa.select(Package).order_by(Package.system, Package.period, Package.id)
            if system:
                q = q.where(Package.system == system)
            return list(s.scalars(q))

    def events(self, package_id: str | None = None, batch_id: str | None = None) -> list[Event]:
        with self.session() as s:
            q = sa.select(Event).order_by(Event.id)
            if package_id:
                q = q.where(Event.package_id == package_id)
            if batch_id:
                q = q.where(Event.batch_id == batch_id)
            return list(s.scalars(q))

    def person_name(self, person_id: str) -> str | None:
        """The name the identity provider last gave for ``person_id`` (a subject), as the catalogue
        recorded it with a decision or an access; None when it has never seen that person signed in."""
        with self.session() as s:
            name = s.scalars(sa.select(Event.agent).where(Event.agent_id == person_id, Event.agent != person_id)
                             .order_by(Event.id.desc()).limit(1)).first()
            if name:
                return name
            return s.scalars(sa.select(AccessLogEntry.person_name)
                             .where(AccessLogEntry.actor == person_id, AccessLogEntry.person_name.is_not(None),
                                    AccessLogEntry.person_name != person_id)
                             .order_by(AccessLogEntry.id.desc()).limit(1)).first()

    def snapshot(self) -> dict[str, list[tuple]]:
        """Every row of every table (tests use it to prove a rerun changed nothing)."""
        out = {}
        with self.engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                out[table.name] = [tuple(r) for r in conn.execute(sa.select(table).order_by(*table.primary_key))]
        return out

    # --- writes ----------------------------------------------------------------------------

    def upsert_batch(self, *, batch_id: str, system: str, period: str, interval_start: str, interval_end: str,
                     status: str, rows: dict[str, int], quality_report: str | None = None,
                     planned: list[str] | None = None) -> bool:
        """Create or update a batch; returns False (and writes nothing) when nothing changed.

        ``planned``: the package IDs the batch is made of (None keeps what the batch has)."""
        rows_json = json.dumps(rows, sort_keys=True)
        with self.session() as s:
            self.lock(s, f"batch:{batch_id}")  # concurrent writers: exactly one creates, the other sees it
            b = s.get(Batch, batch_id)
            planned_json = json.dumps(sorted(planned)) if planned is not None else (b.planned if b else None)
            if b is None:
                s.add(Batch(id=batch_id, system=system, period=period, interval_start=interval_start,
                            interval_end=interval_end, status=status, rows=rows_json, quality_report=quality_report,
                            planned=planned_json))
                return True
            new = (status, rows_json, quality_report, planned_json)
            if (b.status, b.rows, b.quality_report, b.planned) == new:
                return False
            b.status, b.rows, b.quality_report, b.planned, b.updated_at = *new, utcnow()
            return True

    def add_event(self, s: Session, *, type: str, outcome: str, agent: str | Person, detail: str = "",
                  package_id: str | None = None, batch_id: str | None = None,
                  time: dt.datetime | None = None, executing_agent: str | None = None) -> None:
        """Record an event. ``agent`` is the software, or the :class:`Person` who decided (then
        ``executing_agent`` names the software that carried the decision out)."""
        person = agent if isinstance(agent, Person) else None
        s.add(Event(package_id=package_id, batch_id=batch_id, type=type, outcome=outcome,
                    agent=person.name if person else agent, detail=detail, time=time or utcnow(),
                    agent_id=person.id if person else None, agent_roles=person.roles_text if person else None,
                    executing_agent=executing_agent))
