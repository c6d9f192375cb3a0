"""Database extraction into Parquet staging, streamed in Arrow record batches.

Rows flow from the source database through a server-side cursor (``stream_results``) in
batches of ``batch_rows``; each batch becomes an Arrow record batch, is split by record
class and appended to that partition's Parquet file. Memory is bounded by one batch plus
the root table's key → record class map. The staging folder of a batch is written under a
temporary name and renamed into place, so a crash never leaves a half-written batch behind.
"""

from __future__ import annotations

import abc
import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from .errors import ConfigError, ContentError
from .systems import System, Table

ARROW_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "decimal": pa.decimal128(38, 10),
}


def _to_date(v: object) -> dt.date | None:
    if v is None or isinstance(v, dt.date) and not isinstance(v, dt.datetime):
        return v  # type: ignore[return-value]
    if isinstance(v, dt.datetime):
        return v.date()
    return dt.date.fromisoformat(str(v)[:10])


def _to_ts(v: object) -> dt.datetime | None:
    if v is None or isinstance(v, dt.datetime):
        return v  # type: ignore[return-value]
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day)
    return dt.datetime.fromisoformat(str(v))


def _to_bool(v: object) -> bool | None:
    if v is None or isinstance(v, bool):
        return v  # type: ignore[return-value]
    if isinstance(v, int | Decimal):
        return bool(v)
    s = str(v).strip().lower()
    if s in {"1", "true", "t", "yes", "y", "ja", "j"}:
        return True
    if s in {"0", "false", "f", "no", "n", "nej"}:
        return False
    raise ValueError(f"not a boolean: {type(v).__name__}")


# SQLite hands back dates and booleans as text and integers: convert per declared type.
CONVERTERS: dict[str, Callable[[object], object]] = {
    "date": _to_date,
    "timestamp": _to_ts,
    "bool": _to_bool,
    "int64": lambda v: None if v is None else int(v),  # type: ignore[arg-type]
    "float64": lambda v: None if v is None else float(v),  # type: ignore[arg-type]
    "string": lambda v: None if v is None else str(v),
    "decimal": lambda v: None if v is None else Decimal(str(v)),
}


def period_label(start: dt.datetime, end: dt.datetime) -> str:
    """A readable name for a data interval: ``2025``, ``2025-03``, ``2025-03-14`` or ``start--end``."""
    s, e = start.date(), end.date()
    if s.month == 1 and s.day == 1 and e == dt.date(s.year + 1, 1, 1):
        return f"{s.year}"
    if s.day == 1 and e == (dt.date(s.year + (s.month == 12), s.month % 12 + 1, 1)):
        return f"{s:%Y-%m}"
    if e - s == dt.timedelta(days=1):
        return s.isoformat()
    return f"{s.isoformat()}--{e.isoformat()}"


@dataclass
class Partition:
    """The staged rows of one record class in one batch."""

    record_class: str
    files: dict[str, list[str]] = field(default_factory=dict)  # table -> parquet paths
    rows: dict[str, int] = field(default_factory=dict)
    digest: str = ""


@dataclass
class StagedBatch:
    """What an extraction produced; saved as ``manifest.json`` beside the Parquet files."""

    system: str
    batch: str
    interval_start: str
    interval_end: str
    directory: str
    tables: dict[str, int]
    partitions: dict[str, Partition]
    empty_tables: dict[str, str] = field(default_factory=dict)  # table -> an empty Parquet file
    prepared: list[dict] = field(default_factory=list)  # prepared systems: one intake per delivered package

    @property
    def is_empty(self) -> bool:
        return not any(self.tables.values())

    @property
    def manifest_path(self) -> Path:
        return Path(self.directory) / "manifest.json"

    def table_files(self) -> dict[str, list[Path]]:
        """Every Parquet file per table across all partitions (for the quality gate)."""
        out: dict[str, list[Path]] = {}
        for p in self.partitions.values():
            for t, files in p.files.items():
                out.setdefault(t, []).extend(Path(f) for f in files)
        for t, f in self.empty_tables.items():
            out.setdefault(t, []).append(Path(f))
        return out

    def to_json(self) -> str:
        data = {k: v for k, v in self.__dict__.items() if k != "partitions"}
        data["partitions"] = {k: p.__dict__ for k, p in self.partitions.items()}
        return json.dumps(data, indent=2, ensure_ascii=False)

    @classmethod
    def load(cls, manifest: Path | str) -> StagedBatch:
        data = json.loads(Path(manifest).read_text(encoding="utf-8"))
        data["partitions"] = {k: Partition(**p) for k, p in data["partitions"].items()}
        return cls(**data)


def _schema(table: Table, extra: Sequence[str]) -> pa.Schema:
    fields = [pa.field(c.name, ARROW_TYPES[c.type]) for c in table.columns]
    fields += [pa.field(name, pa.string()) for name in extra]
    return pa.schema(fields)


def _resolve_file(root: Path, rel: object, _dirs: dict[str, str] | None = None) -> str:
    """Absolute path of a document inside the document store; "" if it would escape it.

    Links are followed before the check, so a link inside the store cannot point out of it.
    Resolving every path costs several system calls, so folders are resolved once and cached
    in ``_dirs`` (documents share folders); the file itself is resolved only if it is a link.
    """
    if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or "\x00" in rel:
        return ""
    folder, _, name = os.path.join(str(root), rel).rpartition(os.sep)
    if name in ("", ".", ".."):
        return ""
    cache = {} if _dirs is None else _dirs
    real_folder = cache.get(folder)
    if real_folder is None:
        real_folder = cache[folder] = os.path.realpath(folder)
    candidate = os.path.join(real_folder, name)
    if os.path.islink(candidate):
        candidate = os.path.realpath(candidate)
    root_str = str(root)
    if candidate != root_str and not candidate.startswith(root_str.rstrip(os.sep) + os.sep):
        return ""
    return candidate


#: a row may say where it came from (file and line) under this key; it is never staged
WHERE = "\x00where"


class RowSource(abc.ABC):
    """Where a system's rows come from: yields each table's rows in chunks of mappings."""

    @abc.abstractmethod
    def chunks(self, table: Table) -> Iterator[Sequence[Mapping[str, object]]]:
        """The table's rows, in key order, a chunk (at most ``batch_rows`` rows) at a time."""

    def files_root(self, table: Table) -> Path | None:
        """The folder that the table's document paths are relative to (None: no documents)."""
        return None

    def convert(self, column_type: str, value: object) -> object:
        """Turn a raw value into the column's declared type (ValueError/TypeError when it isn't)."""
        return CONVERTERS[column_type](value)

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release connections; called once staging is done, also after an error."""


class DatabaseSource(RowSource):
    """SQL through SQLAlchemy with a server-side cursor (``stream_results``) per table."""

    def __init__(self, system: System, url: str, start: dt.datetime, end: dt.datetime, env: Mapping[str, str]):
        self.system, self.env = system, env
        self.params = {"start": start.date(), "end": end.date()}
        self.engine = sa.create_engine(url)
        self.conn = self.engine.connect()

    def chunks(self, table: Table) -> Iterator[Sequence[Mapping[str, object]]]:
        result = self.conn.execution_options(stream_results=True, yield_per=self.system.batch_rows).execute(
            sa.text(table.query), self.params)
        returned = set(result.keys())
        missing = [c for c in table.column_names if c not in returned]
        if missing:
            raise ConfigError(f"{self.system.source.name}: extract.tables.{table.name}: "
                              f"the query returns no column {missing[0]!r}")
        for part in result.partitions(self.system.batch_rows):
            yield [row._mapping for row in part]

    def files_root(self, table: Table) -> Path | None:
        if not table.files_root_env:
            return None
        if not self.env.get(table.files_root_env):
            raise ConfigError(f"{self.system.source.name}: extract.tables.{table.name}.files.root_env: "
                              f"environment variable {table.files_root_env} is not set")
        return Path(self.env[table.files_root_env]).resolve()

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


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


def stage(system: System, source: RowSource, start: dt.datetime, end: dt.datetime,
          staging_root: Path) -> StagedBatch:
    """Stream every table of ``system`` from ``source`` into Parquet, partitioned by record class."""
    batch = period_label(start, end)
    final = staging_root / system.name / batch
    work = staging_root / system.name / f".{batch}.tmp-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    partitions: dict[str, Partition] = {}
    digests: dict[str, hashlib._Hash] = {}
    totals: dict[str, int] = {}
    classes: dict[str, dict[object, str | None]] = {}  # parent table -> key -> record class
    parents = {t.parent_table for t in system.tables.values() if t.parent_table}
    empties: dict[str, str] = {}
    try:
        # Parents first: the record class of a root row is inherited down the tree.
        for table in system.table_order():
            totals[table.name] = _stage_table(system, source, table, work, partitions, digests, classes,
                                              keep_keys=table.name in parents)
            if totals[table.name] == 0:
                # An empty table is still a staged table: the quality gate sees it, with no rows.
                empty = work / table.name / "empty.parquet"
                empty.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(_schema(table, _extra_columns(table)).empty_table(), empty)
                empties[table.name] = str(final / empty.relative_to(work))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        source.close()
    for name, part in partitions.items():
        part.digest = digests[name].hexdigest()
        for t in system.tables:
            part.rows.setdefault(t, 0)
        part.files = {t: [str(final / Path(f).relative_to(work)) for f in fs] for t, fs in part.files.items()}
    staged = StagedBatch(system.name, batch, start.isoformat(), end.isoformat(), str(final), totals, partitions,
                         empties)
    (work / "manifest.json").write_text(staged.to_json(), encoding="utf-8")
    _swap_into_place(work, final)
    return staged


def _extra_columns(table: Table) -> list[str]:
    return (["source_path"] if table.files_path_column else []) + ["record_class"]


def _stage_table(system: System, source: RowSource, table: Table, work: Path, partitions: dict[str, Partition],
                 digests: dict, classes: dict[str, dict], *, keep_keys: bool) -> int:
    files_root = source.files_root(table) if table.files_path_column else None
    schema = _schema(table, _extra_columns(table))
    types = {c.name: c.type for c in table.columns}
    writers: dict[str, pq.ParquetWriter] = {}
    is_root = table.parent_table is None
    own: dict[object, str | None] = classes.setdefault(table.name, {}) if keep_keys else {}
    parent_map = classes.get(table.parent_table or "", {})
    unmatched: list[str] = []
    dirs: dict[str, str] = {}  # folder -> resolved folder, for this table's documents
    total = 0
    try:
        for chunk in source.chunks(table):
            cols: dict[str, list] = {name: [] for name in schema.names}
            for m in chunk:
                for name, ctype in types.items():
                    try:
                        cols[name].append(source.convert(ctype, m.get(name)))
                    except (ValueError, TypeError, ArithmeticError) as exc:
                        # Name the row and column, never the value: it may be a personnummer.
                        where = m.get(WHERE) or f"{system.name}.{table.name}: row {m.get(table.key)}"
                        raise ContentError(f"{where}: column {name} does not hold a {ctype} "
                                           f"({exc.__class__.__name__})") from None
                if files_root is not None:
                    cols["source_path"].append(_resolve_file(files_root, m.get(table.files_path_column), dirs))
                elif table.files_path_column:
                    cols["source_path"].append("")
                key = cols[table.key][-1]
                if is_root:
                    rc = system.record_class_of({n: cols[n][-1] for n in types})
                    if rc is None:
                        unmatched.append(str(key))
                else:
                    rc = parent_map.get(cols[table.parent_column][-1])
                if keep_keys:
                    own[key] = rc
                cols["record_class"].append(rc)
            rb = pa.RecordBatch.from_pydict(cols, schema=schema)
            total += rb.num_rows
            row_classes = rb.column("record_class").to_pylist()
            for rc in sorted({c for c in row_classes if c is not None}):
                part_rb = rb.filter(pa.array([c == rc for c in row_classes]))
                part = partitions.setdefault(rc, Partition(rc))
                if rc not in writers:
                    path = work / table.name / rc / "part-00000.parquet"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    writers[rc] = pq.ParquetWriter(path, schema, compression="zstd")
                    part.files.setdefault(table.name, []).append(str(path))
                writers[rc].write_batch(part_rb)
                part.rows[table.name] = part.rows.get(table.name, 0) + part_rb.num_rows
                _digest_rows(digests.setdefault(rc, hashlib.sha256()), table.name, part_rb)
    finally:
        for w in writers.values():
            w.close()
    if unmatched:
        raise ContentError(
            f"{system.name}.{table.name}: {len(unmatched)} row(s) match no record class "
            f"(add a rule under record_classes in {system.source.name})",
            [f"{table.key}={k}" for k in unmatched[:50]],
        )
    return total


def _digest_rows(h, table: str, batch: pa.RecordBatch) -> None:
    """Feed rows into a partition's content digest, one canonical line per row.

    The digest (and so the package ID) covers what the source says — not how rows were
    batched, nor where this machine mounts the document store (``source_path``).
    """
    names = [n for n in batch.schema.names if n != "source_path"]
    prefix = table.encode() + b"\t"
    for row in batch.select(names).to_pylist():
        h.update(prefix + json.dumps(row, default=str, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")


def _swap_into_place(work: Path, final: Path) -> None:
    """Replace ``final`` by ``work`` with renames, so readers see the old or the new batch."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(work, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
