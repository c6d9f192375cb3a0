"""Database extraction: a read-only :class:`DatabaseSource` streamed into staging.

Rows flow from the source database through a server-side cursor (``stream_results``) in
batches of ``batch_rows``, inside a transaction the database itself makes read-only. From
PostgreSQL (psycopg2) the rows come as ``COPY`` text parsed by Arrow (:class:`_PostgresCopy`),
so no Python object is made per value; other databases hand values to staging's converters.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from transforms.common.errors import ConfigError, ContentError
from transforms.config.systems import QueryRefused, System, Table, check_read_query
from transforms.staging.batch import (
    ARROW_TYPES,
    ColumnChunk,
    RowSource,
    StagedBatch,
    _raw_column_names,
    _string_bytes,
    stage,
)


class DatabaseSource(RowSource):
    """SQL through SQLAlchemy with a server-side cursor (``stream_results``) per table.

    On PostgreSQL through psycopg2 a table whose columns allow it is read with ``COPY``
    instead (:class:`_PostgresCopy`): the same values, several times faster.
    """

    def __init__(self, system: System, url: str, start: dt.datetime, end: dt.datetime, env: Mapping[str, str]):
        self.system, self.env = system, env
        self.params = {"start": start.date(), "end": end.date()}
        self.engine = _source_engine(system, url)
        self.conn = self.engine.connect()
        self._copies: list[_PostgresCopy] = []  # COPY streams under way (stopped before the connection closes)
        try:
            _begin_read_only(self.conn, system)
        except BaseException:
            self.conn.close()
            self.engine.dispose()
            raise

    def _checked(self, table: Table) -> str:
        """The table's query, once more checked to be one read statement (a System need not come from YAML)."""
        try:
            check_read_query(table.query)
        except QueryRefused as exc:
            raise ConfigError(f"{self.system.source.name}: extract.tables.{table.name}.query: refused for system "
                              f"{self.system.name}: {exc}") from None
        return table.query

    def chunks(self, table: Table) -> Iterator[Sequence[Mapping[str, object]]]:
        with _query_errors(self.system, table):
            result = self.conn.execution_options(stream_results=True, yield_per=self.system.batch_rows).execute(
                sa.text(self._checked(table)), self.params)
            returned = set(result.keys())
            missing = [c for c in table.column_names if c not in returned]
            if missing:
                raise ConfigError(f"{self.system.source.name}: extract.tables.{table.name}: "
                                  f"the query returns no column {missing[0]!r}")
            for part in result.partitions(self.system.batch_rows):
                yield [row._mapping for row in part]

    def column_chunks(self, table: Table) -> Iterator[ColumnChunk]:
        self._checked(table)
        with _query_errors(self.system, table):
            yield from self._column_chunks(table)

    def _column_chunks(self, table: Table) -> Iterator[ColumnChunk]:
        copy = _PostgresCopy.plan(self, table)
        if copy is not None:
            self._copies.append(copy)
            try:
                yield from copy.chunks()
            finally:
                copy.stop()
                self._copies.remove(copy)
            return
        result = self.conn.execution_options(stream_results=True, yield_per=self.system.batch_rows).execute(
            sa.text(table.query), self.params)
        returned = list(result.keys())
        missing = [c for c in table.column_names if c not in returned]
        if missing:
            raise ConfigError(f"{self.system.source.name}: extract.tables.{table.name}: "
                              f"the query returns no column {missing[0]!r}")
        names = _raw_column_names(table)
        if any(returned.count(n) > 1 for n in names):
            # A name the query returns twice: let the mappings report it as they always have.
            result.close()
            yield from super().column_chunks(table)
            return
        index = {n: i for i, n in enumerate(returned)}
        absent = [n for n in names if n not in index]  # a document path column the query lacks
        for part in result.partitions(self.system.batch_rows):
            columns = list(zip(*part, strict=True))  # rows -> columns in one C-level pass
            raw: dict[str, Sequence[object]] = {n: columns[index[n]] for n in names if n in index}
            raw.update((n, [None] * len(part)) for n in absent)
            yield ColumnChunk(len(part), raw)

    def files_root(self, table: Table) -> Path | None:
        if not table.files_root_env:
            return None
        if not self.env.get(table.files_root_env):
            raise ConfigError(f"{self.system.source.name}: extract.tables.{table.name}.files.root_env: "
                              f"environment variable {table.files_root_env} is not set")
        return Path(self.env[table.files_root_env]).resolve()

    def close(self) -> None:
        for copy in list(self._copies):
            copy.stop()
        try:
            # Never committed: whatever a function called by a query did in the transaction is undone
            # (a connection that is gone has nothing left to undo: the server ended the transaction).
            with contextlib.suppress(sa.exc.DBAPIError):
                self.conn.rollback()
        finally:
            self.conn.close()
            self.engine.dispose()


#: SQLSTATE / server error numbers meaning "refused: the transaction or database is read-only"
_PG_READ_ONLY = {"25006"}  # read_only_sql_transaction
_PG_TRANSACTION_STATE = "25"  # e.g. 25001: an attempt to make the transaction read-write after a query
_MYSQL_READ_ONLY = {1792, 1290}  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION, ER_OPTION_PREVENTS_STATEMENT
_SQLITE_READONLY = 8  # SQLITE_READONLY (its extended codes share the low byte)


def _begin_read_only(conn: sa.Connection, system: System) -> None:
    """Open the extraction's one transaction read-only, and make sure the server says it is.

    PostgreSQL and MariaDB/MySQL get the session's default too, so that a transaction the server
    starts on its own (MySQL commits implicitly before DDL) is read-only as well; SQLite's
    ``query_only`` holds for the whole connection. A dialect whose read-only mode cannot be
    set and confirmed is not read at all.
    """
    dialect = conn.dialect.name
    where = f"{system.source.name}: extract.connection: system {system.name}"
    try:
        if dialect == "postgresql":
            conn.exec_driver_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            confirmed = conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "on"
        elif dialect in ("mysql", "mariadb"):
            conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
            conn.exec_driver_sql("START TRANSACTION READ ONLY")
            confirmed = str(conn.exec_driver_sql(f"SELECT @@session.{_mysql_read_only_variable(conn)}").scalar()) == "1"
        elif dialect == "sqlite":
            conn.exec_driver_sql("PRAGMA query_only = ON")
            confirmed = str(conn.exec_driver_sql("PRAGMA query_only").scalar()) == "1"
        else:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")  # standard SQL (Oracle, DB2 …)
            confirmed = True
    except sa.exc.DBAPIError as exc:
        raise ConfigError(f"{where}: the source database ({dialect}) could not be opened read-only "
                          f"({type(exc.orig).__name__}); extraction only reads") from None
    if not confirmed:
        raise ConfigError(f"{where}: the source database ({dialect}) did not confirm a read-only transaction; "
                          "extraction only reads")


def _source_engine(system: System, url: str) -> sa.Engine:
    """The engine for a source URL; a URL that cannot be used is a ConfigError that does not repeat it
    (it may hold a password). A SQLite file that does not exist is not created."""
    where = f"{system.source.name}: extract.connection: system {system.name}"
    try:
        parsed = sa.engine.make_url(url)
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database or ""
            if database in ("", ":memory:") or (not database.startswith("file:") and not Path(database).is_file()):
                raise ConfigError(f"{where}: the source database file does not exist (nothing is created: "
                                  "extraction only reads)")
        return sa.create_engine(parsed, hide_parameters=True)  # a failed statement's message carries no values
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ValueError) as exc:
        raise ConfigError(f"{where}: the source database URL cannot be used ({type(exc).__name__})") from None


def _mysql_read_only_variable(conn: sa.Connection) -> str:
    """MySQL 8 and MariaDB 11.1 call it transaction_read_only; MariaDB before 11.1 only tx_read_only."""
    names = {r[0].lower() for r in conn.exec_driver_sql("SHOW SESSION VARIABLES LIKE '%%read_only'")}
    return "transaction_read_only" if "transaction_read_only" in names else "tx_read_only"


def _is_write_refusal(exc: BaseException) -> bool:
    """True when a database error says the server refused a write (the read-only transaction held)."""
    orig = getattr(exc, "orig", None) or exc
    pgcode = getattr(orig, "pgcode", None)
    if pgcode in _PG_READ_ONLY or (isinstance(pgcode, str) and pgcode.startswith(_PG_TRANSACTION_STATE)):
        return True
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == _SQLITE_READONLY:
        return True
    if not type(orig).__module__.startswith(("pymysql", "MySQLdb", "mysql", "mariadb")):
        return False
    args = getattr(orig, "args", ())
    number = args[0] if args and isinstance(args[0], int) else getattr(orig, "errno", None)
    return number in _MYSQL_READ_ONLY


def _dbapi_kind(exc: BaseException) -> tuple[str, str]:
    """The PEP 249 class of a driver error (SQLAlchemy's wrapper or the driver's own) and its code."""
    orig = getattr(exc, "orig", None) or exc
    kinds = [k.__name__ for k in type(orig).__mro__]
    kind = next((k for k in ("ProgrammingError", "NotSupportedError", "DataError", "IntegrityError",
                             "InternalError", "OperationalError") if k in kinds), "")
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlite_errorname", None)
    if code is None and getattr(orig, "args", None) and isinstance(orig.args[0], int):
        code = orig.args[0]
    return kind, "" if code is None else str(code)


@contextlib.contextmanager
def _query_errors(system: System, table: Table) -> Iterator[None]:
    """What the source database says about a query, as an error naming the system and the query.

    A refused write is a ConfigError (the YAML must change; nothing was changed in the source);
    a query the server cannot run (syntax, a missing table, a feature) is one as well; a value
    the query cannot convert is a ContentError. The driver's own message is left out: it may
    quote a row's value. Connection trouble passes on unchanged, to be retried.
    """
    try:
        yield
    except Exception as exc:
        where = f"{system.source.name}: extract.tables.{table.name}.query: system {system.name}"
        if _is_write_refusal(exc):
            raise ConfigError(f"{where}: the query tried to write and the source database refused it (extraction "
                              "runs in a read-only transaction; a query must only read); nothing was changed") from None
        kind, code = _dbapi_kind(exc)
        said = f"{type(getattr(exc, 'orig', None) or exc).__name__}{f', code {code}' if code else ''}"
        if kind in ("ProgrammingError", "NotSupportedError"):
            raise ConfigError(f"{where}: the source database cannot run the query ({said}); it must be one "
                              "SELECT that reads the declared columns") from None
        if kind == "DataError":
            raise ContentError(f"{where}: the source database could not compute the query's rows ({said})") from None
        if isinstance(exc, ValueError | OverflowError) and not isinstance(exc, QueryRefused):
            # the driver's conversion of a value (a date before year 1, say); its message quotes the value
            raise ContentError(f"{where}: a value the source returned cannot be represented in Python "
                               f"({type(exc).__name__})") from None
        if isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError):
            # never sent: SQLAlchemy could not bind it (a parameter other than :start and :end)
            raise ConfigError(f"{where}: the query cannot be sent ({type(exc.orig or exc).__name__}); its only "
                              "parameters are :start and :end") from None
        raise


class _PostgresCopy:
    """A table's rows from PostgreSQL as ``COPY (query) TO STDOUT`` text, parsed by Arrow.

    Reading rows through psycopg2 makes a Python object of every value, which costs more than
    all the rest of staging together. ``COPY`` sends the same values as text (each type's own
    output function, as for a query), Arrow's CSV reader splits it into columns and Arrow
    casts turn the text into the declared types, without a Python object per value.

    Used only where the result is the same as psycopg2's: the driver is psycopg2, the
    connection speaks UTF-8 with ISO dates, and every column staging reads has a PostgreSQL
    type whose psycopg2 value is exactly what the Arrow cast gives (:data:`SAME_VALUES`),
    with psycopg2's stock typecaster. A chunk whose text a cast refuses ("infinity", a BC date)
    is turned into values by psycopg2's own typecasters instead, so it stages as before.
    Anything else (other types, a query that cannot be wrapped) reads through the cursor.

    psycopg2 pushes ``COPY`` output into a file object, Arrow pulls from one: a thread runs
    the ``COPY`` into a pipe and the reader parses from its other end, so at most the pipe's
    and the reader's buffers are in memory, never the table.
    """

    #: PostgreSQL type OID -> (declared column type, psycopg2 typecaster name) whose values Arrow reproduces
    SAME_VALUES: dict[int, tuple[str, str]] = {
        20: ("int64", "LONGINTEGER"), 21: ("int64", "INTEGER"), 23: ("int64", "INTEGER"),
        25: ("string", "STRING"), 1042: ("string", "STRING"), 1043: ("string", "STRING"),
        16: ("bool", "BOOLEAN"), 1082: ("date", "DATE"), 1114: ("timestamp", "DATETIME"),
    }
    #: bytes of COPY output gathered before they go to the pipe (one write per row would be a system call per row)
    FLUSH_BYTES = 1 << 20

    def __init__(self, source: DatabaseSource, table: Table, raw, copy_sql: str, returned: list[str],
                 oids: dict[str, int]):
        self.source, self.table, self.raw, self.copy_sql = source, table, raw, copy_sql
        self.returned, self.oids = returned, oids
        self.names = _raw_column_names(table)
        self.types = {c.name: c.type for c in table.columns}
        self.thread: threading.Thread | None = None
        self.read_end: io.BufferedReader | None = None
        self.error: BaseException | None = None
        self.sent = 0  # bytes of COPY output that went into the pipe

    @classmethod
    def plan(cls, source: DatabaseSource, table: Table) -> _PostgresCopy | None:
        """A COPY reader for the table, or None where it would not give psycopg2's values exactly."""
        if source.engine.dialect.driver != "psycopg2":
            return None
        import psycopg2
        import psycopg2.extensions as pgext

        raw = source.conn.connection.dbapi_connection
        if (raw is None or raw.encoding != "UTF8" or raw.autocommit
                or not (raw.get_parameter_status("DateStyle") or "").startswith("ISO")
                or raw.get_parameter_status("integer_datetimes") != "on"):
            return None
        try:
            compiled = sa.text(table.query).compile(dialect=source.engine.dialect)
            params = compiled.construct_params(source.params)
        except (sa.exc.SQLAlchemyError, KeyError):
            return None
        with raw.cursor() as cur:
            # Learn the result's columns and types without running the query (LIMIT 0); a query
            # that cannot be wrapped so (a trailing semicolon, say) is read through the cursor.
            cur.execute("SAVEPOINT arkiv_extract_describe")
            try:
                cur.execute(f"SELECT * FROM (\n{compiled.string}\n) AS arkiv_rows LIMIT 0", params)
            except psycopg2.Error:
                cur.execute("ROLLBACK TO SAVEPOINT arkiv_extract_describe")
                return None
            described = [(d.name, d.type_code) for d in cur.description or ()]
            cur.execute("RELEASE SAVEPOINT arkiv_extract_describe")
            query = cur.mogrify(compiled.string, params).decode("utf-8")
        returned = [name for name, _ in described]
        oids = dict(described)
        names = _raw_column_names(table)
        if len(set(returned)) != len(returned) or any(n not in oids for n in names):
            return None  # duplicate or missing columns: the cursor path says what is wrong
        declared = {c.name: c.type for c in table.columns}
        for n in names:
            same = cls.SAME_VALUES.get(oids[n])
            wanted = declared.get(n, "string")  # the document path column is read as text
            if (same is None or same[0] != wanted or oids[n] in (getattr(raw, "string_types", None) or {})
                    or getattr(pgext.string_types.get(oids[n]), "name", None) != same[1]):
                return None
        copy_sql = f"COPY (\n{query}\n) TO STDOUT WITH (FORMAT text, ENCODING 'UTF8')"
        return cls(source, table, raw, copy_sql, returned, oids)

    def chunks(self) -> Iterator[ColumnChunk]:
        import pyarrow.csv as pacsv

        read_fd, write_fd = os.pipe()
        self.read_end = os.fdopen(read_fd, "rb")
        self.thread = threading.Thread(target=self._copy_into, args=(write_fd,), name="arkiv-copy", daemon=True)
        self.thread.start()
        size = self.source.system.batch_rows
        try:
            reader = pacsv.open_csv(
                self.read_end,
                read_options=pacsv.ReadOptions(column_names=self.returned, block_size=1 << 20, use_threads=False),
                # COPY's text format: tab-separated, one line per row, no quoting, \N for NULL,
                # backslash escapes inside values (undone in _unescape)
                parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False,
                                                 newlines_in_values=False, ignore_empty_lines=False),
                convert_options=pacsv.ConvertOptions(
                    include_columns=self.names, column_types={n: pa.string() for n in self.names},
                    null_values=["\\N"], strings_can_be_null=True, check_utf8=True),
            )
            pending: list[pa.RecordBatch] = []
            held = 0
            for block in reader:
                pending.append(block)
                held += block.num_rows
                while held >= size:  # exactly batch_rows rows per chunk, as the cursor gives them
                    rows = pa.Table.from_batches(pending).combine_chunks()
                    yield self._chunk(rows.slice(0, size))
                    rest = rows.slice(size)
                    pending, held = rest.to_batches(), rest.num_rows
            if held:
                yield self._chunk(pa.Table.from_batches(pending).combine_chunks())
        except pa.ArrowException as exc:
            self._join()
            if self.error is not None:  # the COPY failed: that is the error, not the cut-off text
                raise self.error from None
            if self.sent == 0:  # no rows at all: Arrow calls that an empty file
                return
            # Arrow's parse errors quote the row they stopped at: name the table, not the text
            raise ContentError(f"{self.source.system.name}.{self.table.name}: the COPY output of the query could "
                               f"not be read ({type(exc).__name__})") from None
        finally:
            self.stop()
        if self.error is not None:
            raise self.error

    def _chunk(self, rows: pa.Table) -> ColumnChunk:
        """Typed columns from the text columns of ``rows`` (psycopg2's typecasters where a cast refuses)."""
        columns: dict[str, Sequence[object]] = {}
        for name in self.names:
            text = rows.column(name).combine_chunks() if rows.num_rows else pa.array([], pa.string())
            if b"\\" in bytes(_string_bytes(text)):
                text = pa.array([_unescape(v) for v in text.to_pylist()], pa.string())
            kind = self.types.get(name, "string")
            try:
                columns[name] = _cast_text(text, kind)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                columns[name] = self._typecast(text, name)
        return ColumnChunk(rows.num_rows, columns)

    def _typecast(self, text: pa.Array, name: str) -> list[object]:
        """Values as psycopg2 makes them from the same text (its stock typecaster for the type)."""
        import psycopg2.extensions as pgext

        caster = pgext.string_types[self.oids[name]]
        with self.raw.cursor() as cur:
            return [None if v is None else caster(v, cur) for v in text.to_pylist()]

    def _copy_into(self, write_fd: int) -> None:
        sink = _PipeWriter(write_fd, self.FLUSH_BYTES)
        try:
            with self.raw.cursor() as cur:
                cur.copy_expert(self.copy_sql, sink)
            sink.flush()
        except BaseException as exc:  # handed to the reading side, which raises it
            self.error = exc
        finally:
            self.sent = sink.sent
            os.close(write_fd)

    def _join(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None

    def stop(self) -> None:
        """End the COPY (closing the pipe makes its writer fail) and wait for the thread."""
        if self.read_end is not None:
            self.read_end.close()
            self.read_end = None
        self._join()


class _PipeWriter:
    """The file object psycopg2 writes COPY output into: gathered, then written to a pipe."""

    def __init__(self, fd: int, flush_bytes: int):
        self.fd, self.flush_bytes, self.buffer, self.sent = fd, flush_bytes, bytearray(), 0

    def write(self, data) -> int:
        self.buffer += data
        if len(self.buffer) >= self.flush_bytes:
            self.flush()
        return len(data)

    def flush(self) -> None:
        self.sent += len(self.buffer)
        view = memoryview(bytes(self.buffer))
        self.buffer.clear()
        while view:
            view = view[os.write(self.fd, view):]


# COPY's text format escapes backslash, and the control characters as \b \f \n \r \t \v (octal
# and hex escapes are only read, never written, but are undone all the same).
_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))", re.S)
_ESCAPED = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unescape(value: str | None) -> str | None:
    if value is None or "\\" not in value:
        return value

    def one(m: re.Match) -> str:
        if m.group(1) is not None:
            return chr(int(m.group(1), 8))
        if m.group(2) is not None:
            return chr(int(m.group(2), 16))
        return _ESCAPED.get(m.group(3), m.group(3))

    return _ESCAPE.sub(one, value)


def _cast_text(text: pa.Array, kind: str) -> pa.Array:
    """PostgreSQL's text output of a value as the declared Arrow type; ArrowInvalid when it is not plain."""
    if kind == "string":
        return text
    if kind == "bool":
        valid = pc.is_in(text, value_set=pa.array(["t", "f"]))
        if not pc.all(pc.or_kleene(valid, pc.is_null(text))).as_py():
            raise pa.ArrowInvalid("not t or f")
        return pc.equal(text, "t")
    return pc.cast(text, ARROW_TYPES[kind])


def extract_database(
    system: System,
    url: str,
    start: dt.datetime,
    end: dt.datetime,
    staging_root: Path,
    *,
    env: Mapping[str, str] | None = None,
) -> StagedBatch:
    """Extract the interval ``[start, end)`` of every table of ``system`` into staging."""
    source = DatabaseSource(system, url, start, end, os.environ if env is None else env)
    return stage(system, source, start, end, staging_root)


