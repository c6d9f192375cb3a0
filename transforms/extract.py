"""Database extraction into Parquet staging, streamed in Arrow record batches.

Rows flow from the source database through a server-side cursor (``stream_results``) in
batches of ``batch_rows``; each batch becomes an Arrow record batch, is split by record
class and appended to that partition's Parquet file. Memory is bounded by one batch plus
the root table's key → record class map. The staging folder of a batch is written under a
temporary name and renamed into place, so a crash never leaves a half-written batch behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
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
    if s in {"1", "true", "t", "yes", "y"}:
        return True
    if s in {"0", "false", "f", "no", "n"}:
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


def _resolve_file(root: Path, rel: object) -> str:
    """Absolute path of a document inside the document store; "" if it would escape it."""
    if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or "\x00" in rel:
        return ""
    candidate = (root / rel).resolve()
    try:
        candidate.relative_to(root)
    except ValueError:
        return ""
    return str(candidate)


def _rows(conn: sa.Connection, query: str, params: dict, batch_rows: int) -> Iterator[Sequence[sa.Row]]:
    result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(sa.text(query), params)
    yield from result.partitions(batch_rows)


def extract_database(
    system: System,
    url: str,
    start: dt.datetime,
    end: dt.datetime,
    staging_root: Path,
    *,
    env: dict[str, str] | None = None,
) -> StagedBatch:
    """Extract the interval ``[start, end)`` of every table of ``system`` into staging."""
    env = os.environ if env is None else env
    batch = period_label(start, end)
    final = staging_root / system.name / batch
    work = staging_root / system.name / f".{batch}.tmp-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    params = {"start": start.date(), "end": end.date()}
    engine = sa.create_engine(url)
    try:
        partitions: dict[str, Partition] = {}
        digests: dict[str, hashlib._Hash] = {}
        totals: dict[str, int] = {}
        parent_class: dict[object, str] = {}
        empties: dict[str, str] = {}
        root_table = system.root_table
        # The root table first: its record classes are inherited by the child tables.
        order = [root_table] + [t for t in system.tables.values() if t is not root_table]
        with engine.connect() as conn:
            for table in order:
                totals[table.name] = _extract_table(
                    conn, system, table, params, work, partitions, digests, parent_class, env)
                if totals[table.name] == 0:
                    # An empty table is still a staged table: the quality gate sees it, with no rows.
                    empty = work / table.name / "empty.parquet"
                    empty.parent.mkdir(parents=True, exist_ok=True)
                    extra = ["source_path"] if table.files_root_env else []
                    pq.write_table(_schema(table, extra + ["record_class"]).empty_table(), empty)
                    empties[table.name] = str(final / empty.relative_to(work))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        engine.dispose()
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


def _extract_table(conn, system: System, table: Table, params: dict, work: Path,
                   partitions: dict[str, Partition], digests: dict, parent_class: dict, env) -> int:
    extra = []
    files_root = None
    if table.files_root_env:
        if not env.get(table.files_root_env):
            raise ConfigError(f"{system.source.name}: extract.tables.{table.name}.files.root_env: "
                              f"environment variable {table.files_root_env} is not set")
        files_root = Path(env[table.files_root_env]).resolve()
        extra.append("source_path")
    schema = _schema(table, extra + ["record_class"])
    converters = [(c.name, CONVERTERS[c.type]) for c in table.columns]
    writers: dict[str, pq.ParquetWriter] = {}
    is_root = table.parent_table is None
    unmatched: list[str] = []
    total = 0
    try:
        for chunk in _rows(conn, table.query, params, system.batch_rows):
            cols: dict[str, list] = {name: [] for name in schema.names}
            for row in chunk:
                m = row._mapping
                for name, conv in converters:
                    try:
                        cols[name].append(conv(m[name]))
                    except KeyError:
                        raise ConfigError(f"{system.source.name}: extract.tables.{table.name}: "
                                          f"the query returns no column {name!r}") from None
                    except (ValueError, TypeError) as exc:
                        raise ContentError(f"{system.name}.{table.name}: row {m[table.key]}: column {name} "
                                           f"does not hold a {dict((c.name, c.type) for c in table.columns)[name]}"
                                           f" ({exc.__class__.__name__})") from None
                if files_root is not None:
                    cols["source_path"].append(_resolve_file(files_root, m[table.files_path_column]))
                if is_root:
                    rc = system.record_class_of(m[system.record_classes[0].column])
                    if rc is None:
                        unmatched.append(str(m[table.key]))
                    parent_class[m[table.key]] = rc
                else:
                    rc = parent_class.get(m[table.parent_column])
                cols["record_class"].append(rc)
            rb = pa.RecordBatch.from_pydict(cols, schema=schema)
            total += rb.num_rows
            classes = rb.column("record_class").to_pylist()
            for rc in sorted({c for c in classes if c is not None}):
                mask = pa.array([c == rc for c in classes])
                part_rb = rb.filter(mask)
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
