"""The archive catalogue: Arkivflöde's own record of truth, separate from Airflow's database.

It knows every batch, every package (where it is stored and its checksum), every record in
a package and every PREMIS-style event that happened to them. SQLAlchemy 2 models; SQLite by
default and PostgreSQL in production (``ARKIV_CATALOGUE_URL``). The schema is versioned: each
migration in :data:`MIGRATIONS` runs once and is recorded in ``schema_version``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


class Base(DeclarativeBase):
    pass


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


_ADDED_LATER = {"packages": {"archive_creator", "series_code", "series_id", "retention_action", "due_date"},
                "records": {"retention_start", "due_date"}}
_ADDED_IN_3 = {"packages": ("retention_action VARCHAR(20)", "due_date VARCHAR(40)"),
               "records": ("retention_start VARCHAR(40)", "due_date VARCHAR(40)")}


def _as_of_migration_1(table: sa.Table) -> sa.Table:
    """A table as migration 1 created it (columns added by later migrations left out)."""
    later = _ADDED_LATER.get(table.name, set())
    if not later:
        return table
    meta = sa.MetaData()
    return sa.Table(table.name, meta, *[c._copy() for c in table.columns if c.name not in later])


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


#: (version, name, function); append only — never edit a migration that has shipped
MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "batches, packages, records, events", _migration_1),
    (2, "archive structure: archive creators, series; packages name theirs", _migration_2),
    (3, "retention: due dates, legal holds, disposal lists, tombstones", _migration_3),
    (4, "quarantine cases for archivists' review", _migration_4),
]


class Catalogue:
    """Access to the catalogue database; :meth:`session` gives a transaction."""

    def __init__(self, url: str):
        self.url = url
        kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        self.engine = sa.create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            @sa_event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA synchronous=FULL")
                cur.close()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version now in force."""
        with self.engine.begin() as conn:
            SchemaVersion.__table__.create(conn, checkfirst=True)
            done = {v for (v,) in conn.execute(sa.select(SchemaVersion.version))}
            for version, name, fn in MIGRATIONS:
                if version not in done:
                    fn(conn)
                    conn.execute(sa.insert(SchemaVersion).values(version=version, name=name, applied_at=utcnow()))
        return MIGRATIONS[-1][0]

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

    def snapshot(self) -> dict[str, list[tuple]]:
        """Every row of every table (tests use it to prove a rerun changed nothing)."""
        out = {}
        with self.engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                out[table.name] = [tuple(r) for r in conn.execute(sa.select(table).order_by(*table.primary_key))]
        return out

    # --- writes ----------------------------------------------------------------------------

    def upsert_batch(self, *, batch_id: str, system: str, period: str, interval_start: str, interval_end: str,
                     status: str, rows: dict[str, int], quality_report: str | None = None) -> bool:
        """Create or update a batch; returns False (and writes nothing) when nothing changed."""
        rows_json = json.dumps(rows, sort_keys=True)
        with self.session() as s:
            b = s.get(Batch, batch_id)
            if b is None:
                s.add(Batch(id=batch_id, system=system, period=period, interval_start=interval_start,
                            interval_end=interval_end, status=status, rows=rows_json, quality_report=quality_report))
                return True
            new = (status, rows_json, quality_report)
            if (b.status, b.rows, b.quality_report) == new:
                return False
            b.status, b.rows, b.quality_report, b.updated_at = *new, utcnow()
            return True

    def add_event(self, s: Session, *, type: str, outcome: str, agent: str, detail: str = "",
                  package_id: str | None = None, batch_id: str | None = None,
                  time: dt.datetime | None = None) -> None:
        s.add(Event(package_id=package_id, batch_id=batch_id, type=type, outcome=outcome, agent=agent,
                    detail=detail, time=time or utcnow()))
