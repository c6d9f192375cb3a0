"""The staged batch: rows from any source streamed into Parquet, partitioned by record class.

A :class:`RowSource` (a database, a file export) yields each table's rows in chunks; each chunk
becomes an Arrow record batch, is split by record class and appended to that partition's Parquet
file. Memory is bounded by one batch plus the root table's key → record class map. The staging
folder of a batch is written under a temporary name and renamed into place, so a crash never
leaves a half-written batch behind. :class:`StagedBatch` (its ``manifest.json``) is what the
quality gate and the package builder read; documents are opened through :func:`open_document`,
which follows no link.

A batch is handled column by column, not row by row: a column whose values already have the
declared Python type goes to Arrow as it is, other columns are converted value by value
(SQLite's text dates). Record classes are decided once per distinct value and looked up for the
rest; document folders are resolved once; the content digest is computed with Arrow compute
functions over the whole batch. None of this changes what is staged: the Parquet files,
manifests and digests are byte for byte what the row-by-row code wrote
(tests/transforms/test_extract.py pins the digests it computed).
"""

from __future__ import annotations

import abc
import ctypes
import datetime as dt
import errno
import functools
import hashlib
import io
import json
import os
import platform
import shutil
import stat
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.common.errors import ContentError
from transforms.config.systems import System, Table

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

#: The Python types on which each converter above is the identity. A column holding nothing
#: else goes to Arrow as it is, which gives the very array that converting each value would.
#: Exact types: ``bool`` is an ``int`` and ``datetime`` a ``date`` to ``isinstance``, not here.
PASSTHROUGH: dict[str, frozenset[type]] = {
    "date": frozenset({dt.date, type(None)}),
    "timestamp": frozenset({dt.datetime, type(None)}),
    "bool": frozenset({bool, type(None)}),
    "int64": frozenset({int, type(None)}),
    "float64": frozenset({float, type(None)}),
    "string": frozenset({str, type(None)}),
    "decimal": frozenset({Decimal, type(None)}),
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
    #: file exports: the SHA-256 of the manifest of the delivery the rows were read from, so that the steps
    #: after staging can tell the delivery was replaced in the inbox since (its documents are read from there)
    delivered_manifest_sha256: str | None = None

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
        """The staged batch of ``manifest``, its files where the manifest is now (a batch copied from
        another machine's staging names its files under that machine's folder)."""
        return cls.parse(Path(manifest).read_text(encoding="utf-8"), Path(manifest).parent)

    @classmethod
    def parse(cls, text: str, directory: Path | str) -> StagedBatch:
        """A staged batch from its manifest's text, its files under ``directory``."""
        data = json.loads(text)
        data["partitions"] = {k: Partition(**p) for k, p in data["partitions"].items()}
        # a field a newer version added is left out (a worker not yet upgraded reads the batch as before)
        known = {f.name for f in dataclass_fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known}).relocated(directory)

    def relocated(self, directory: Path | str) -> StagedBatch:
        """This batch with every file path moved from :attr:`directory` to ``directory`` (same layout)."""
        old, new = Path(self.directory), Path(directory)
        if old == new:
            return self

        def moved(path: str) -> str:
            p = Path(path)
            return str(new / p.relative_to(old)) if p.is_relative_to(old) else path

        for part in self.partitions.values():
            part.files = {t: [moved(f) for f in fs] for t, fs in part.files.items()}
        self.empty_tables = {t: moved(f) for t, f in self.empty_tables.items()}
        self.directory = str(new)
        return self


def _schema(table: Table, extra: Sequence[str]) -> pa.Schema:
    fields = [pa.field(c.name, ARROW_TYPES[c.type]) for c in table.columns]
    fields += [pa.field(name, pa.string()) for name in extra]
    return pa.schema(fields)


class _DocumentStore:
    """Resolves document paths inside one document store: "" for a path that would escape it.

    Links are followed before the check, so a link inside the store cannot point out of it.
    ``realpath`` costs an ``lstat`` per path component, so paths are resolved one component
    at a time and every folder's resolution is kept (documents share folders): a name in a
    resolved folder needs only to know whether it is a link. That takes one ``lstat``, until
    the folder has been asked :attr:`LIST_AFTER` times; then the folder is listed once
    (``scandir``: its entries say which names are links), so the documents and subfolders of
    a well-filled folder cost no system call at all.
    """

    #: lstat calls in one folder before it is listed (a small folder's listing costs ~4 lstat)
    LIST_AFTER = 4

    def __init__(self, root: Path | str, folders: dict | None = None):
        self.root = str(root)
        self.inside = self.root.rstrip(os.sep) + os.sep
        self.joined = self.root if self.root.endswith(os.sep) else self.root + os.sep  # os.path.join(root, rel)
        self.folders: dict[str, _Folder] = {} if folders is None else folders  # folder as written -> what we know

    def resolve(self, rel: object) -> str:
        if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or "\x00" in rel:
            return ""
        folder, _, name = (self.joined + rel).rpartition(os.sep)
        if name in ("", ".", ".."):
            return ""
        candidate = self._follow(self._folder(folder), name)
        if candidate != self.root and not candidate.startswith(self.inside):
            return ""
        return candidate

    def _folder(self, path: str) -> _Folder:
        known = self.folders.get(path)
        if known is None:
            parent, _, name = path.rpartition(os.sep)
            if path == self.root or not path.startswith(self.inside) or name in ("", ".", ".."):
                real = os.path.realpath(path)  # the store itself, or a path ".." must be resolved in
            else:
                real = self._follow(self._folder(parent), name)
            known = self.folders[path] = _Folder(real)
        return known

    def _follow(self, folder: _Folder, name: str) -> str:
        """The real path of ``name`` in a resolved folder: the link's target if it is a link."""
        path = folder.joined + name
        if folder.links is None and folder.asked >= self.LIST_AFTER:
            folder.links = _links_in(folder.real)
        if isinstance(folder.links, frozenset):
            is_link = name in folder.links
        else:
            folder.asked += 1
            is_link = os.path.islink(path)
        return os.path.realpath(path) if is_link else path


class _Folder:
    """A folder of the document store: its real path and, once listed, the names of its links."""

    __slots__ = ("real", "joined", "links", "asked")

    def __init__(self, real: str):
        self.real = real
        self.joined = real if real.endswith(os.sep) else real + os.sep  # os.path.join(real, name)
        self.links: frozenset[str] | bool | None = None  # None: not listed yet; False: cannot be listed
        self.asked = 0  # lstat calls made for names in it


def _links_in(folder: str) -> frozenset[str] | bool:
    """The names of the links in a folder; False when it cannot be listed (then lstat per name)."""
    try:
        with os.scandir(folder) as entries:
            return frozenset(e.name for e in entries if e.is_symlink())
    except OSError:
        return False


def _resolve_file(root: Path, rel: object, _dirs: dict | None = None) -> str:
    """Absolute path of a document inside the document store; "" if it would escape it.

    ``_dirs`` keeps what is known about folders across calls (see :class:`_DocumentStore`).
    """
    return _DocumentStore(root, _dirs).resolve(rel)


def open_document(path: str | os.PathLike) -> io.FileIO:
    """Open a staged document (a ``source_path``) for reading, following no link on the way.

    A staged path is the real path the store resolved (it holds no link); a link swapped in
    for any folder or the file since then would lead elsewhere, so the path is opened refusing
    a link at every component, and a link met is a ContentError. Where the kernel has
    ``openat2`` (Linux 5.6 and later) that is one system call (:func:`_open_without_links`);
    elsewhere, or when it refuses, each component is opened with ``O_NOFOLLOW`` from the file
    system's root (:func:`_open_by_components`), which also names what became a link.
    Anything but a regular file is refused. The message names no path: it is the source's value.
    """
    path = os.fspath(path)
    if not os.path.isabs(path) or "\x00" in path:
        raise ContentError("a document path is not an absolute path of the document store; nothing was read")
    parts = [part for part in path.split(os.sep) if part]
    if any(part in (".", "..") for part in parts) or not parts:
        raise ContentError("a document path is not a resolved path of the document store; nothing was read")
    file_fd = _open_without_links(path)
    if file_fd < 0:
        file_fd = _open_by_components(parts)
    try:
        mode = os.fstat(file_fd).st_mode
    except BaseException:
        os.close(file_fd)
        raise
    if not stat.S_ISREG(mode):  # a FIFO or device would block or never end
        os.close(file_fd)
        raise ContentError("a document is not a regular file; nothing was read")
    os.set_blocking(file_fd, True)
    return io.FileIO(file_fd, "rb")


#: how a document is opened: read only, not inheritable, and without waiting for the writer of a
#: FIFO (a FIFO is refused once opened; a regular file is read blocking, as usual)
_DOCUMENT_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | \
    getattr(os, "O_NONBLOCK", 0)


def _open_by_components(parts: Sequence[str]) -> int:
    """Open ``/part/part/…`` one component at a time, each with ``O_NOFOLLOW`` relative to the last."""
    dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(os.sep, dir_flags)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, dir_flags, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ContentError("a document's folder became a link after it was checked; nothing "
                                       "was read") from None
                raise
            os.close(fd)
            fd = nxt
        try:
            return os.open(parts[-1], _DOCUMENT_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ContentError("a document became a link after it was checked; nothing was read") from None
            raise
    finally:
        os.close(fd)


#: openat2's system call number: the same on the architectures listed (not on alpha or mips)
_OPENAT2_SYSCALL = 437
_OPENAT2_MACHINES = frozenset({"x86_64", "amd64", "aarch64", "arm64", "riscv64", "ppc64le", "s390x"})
#: openat2's ``resolve`` flags: no symbolic link at any component (which implies no "magic" link)
_RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS = 0x02, 0x04
#: errors that say openat2 cannot be used here (a kernel before 5.6, a sandbox that refuses it, flags it
#: does not know): it is not asked again in this process
_OPENAT2_UNAVAILABLE = frozenset({errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG})


class _OpenHow(ctypes.Structure):
    """``struct open_how`` of openat2(2)."""

    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _Openat2:
    """openat2(2) with ``RESOLVE_NO_SYMLINKS`` through ctypes: a whole path opened in one system call,
    refused (``ELOOP``) if any of its components is a link. Seventeen system calls a document
    (open and close of every folder on the way) become one."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
        self._how = _OpenHow(_DOCUMENT_FLAGS, 0, _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
        self._how_ref, self._how_size = ctypes.byref(self._how), ctypes.sizeof(self._how)
        self.available = True

    def open(self, path: str) -> int:
        """A file descriptor for ``path`` (absolute), or -1 when it must be opened another way."""
        fd = self._syscall(_OPENAT2_SYSCALL, -100, os.fsencode(path), self._how_ref, self._how_size)  # AT_FDCWD
        if fd >= 0:
            return fd
        if ctypes.get_errno() in _OPENAT2_UNAVAILABLE:
            self.available = False
        return -1


@functools.cache
def _openat2() -> _Openat2 | None:
    """The process's openat2, or None where there is none (not Linux, an unknown architecture)."""
    if sys.platform != "linux" or platform.machine().lower() not in _OPENAT2_MACHINES:
        return None
    try:
        return _Openat2()
    except (OSError, AttributeError):
        return None


def _open_without_links(path: str) -> int:
    """``path`` opened by openat2 refusing every link, or -1: no openat2 here, or it failed (a link
    met, a missing file, a kernel or sandbox that refuses the call); the caller then opens it
    component by component, which says what went wrong in the same words everywhere."""
    opener = _openat2()
    if opener is None or not opener.available:
        return -1
    return opener.open(path)


#: a row may say where it came from (file and line) under this key; it is never staged
WHERE = "\x00where"


@dataclass
class ColumnChunk:
    """Up to ``batch_rows`` rows of a table as columns of raw values, as the source gave them.

    A column may also be an Arrow array of the column's declared type: the source vouches that
    its values are what :meth:`RowSource.convert` would have made of the raw values.
    """

    length: int
    columns: dict[str, Sequence[object] | pa.Array]  # column name -> raw values, one per row
    where: Sequence[object] | None = None  # per row: where it came from (file and line), if known


class RowSource(abc.ABC):
    """Where a system's rows come from: yields each table's rows in chunks of mappings."""

    #: the SHA-256 of the delivery's manifest the rows are read from (file exports), kept in the staged batch
    delivered_manifest_sha256: str | None = None

    @abc.abstractmethod
    def chunks(self, table: Table) -> Iterator[Sequence[Mapping[str, object]]]:
        """The table's rows, in key order, a chunk (at most ``batch_rows`` rows) at a time."""

    def column_chunks(self, table: Table) -> Iterator[ColumnChunk]:
        """The same chunks as :meth:`chunks`, column by column (what staging reads).

        This default transposes the mappings; a source that can hand out columns directly
        (:class:`DatabaseSource`) overrides it to skip building a mapping per row.
        """
        names = _raw_column_names(table)
        for chunk in self.chunks(table):
            where = [m.get(WHERE) for m in chunk]
            yield ColumnChunk(len(chunk), {n: [m.get(n) for m in chunk] for n in names},
                              where if any(w is not None for w in where) else None)

    def files_root(self, table: Table) -> Path | None:
        """The folder that the table's document paths are relative to (None: no documents)."""
        return None

    def convert(self, column_type: str, value: object) -> object:
        """Turn a raw value into the column's declared type (ValueError/TypeError when it isn't)."""
        return CONVERTERS[column_type](value)

    def passthrough_types(self, column_type: str) -> frozenset[type]:
        """The raw value types that :meth:`convert` returns unchanged for ``column_type``.

        Staging hands a column of only these types to Arrow without calling :meth:`convert`
        per value. A source that overrides :meth:`convert` gets none unless it says so.
        """
        if type(self).convert is not RowSource.convert:
            return frozenset()
        return PASSTHROUGH[column_type]

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release connections; called once staging is done, also after an error."""


def _values(column: Sequence[object] | pa.Array) -> Sequence[object]:
    """A column as Python values (an Arrow array's give the same values a driver would)."""
    return column.to_pylist() if isinstance(column, pa.Array) else column


def _raw_column_names(table: Table) -> list[str]:
    """The columns staging reads from a source: the declared ones and the document path."""
    names = table.column_names
    if table.files_path_column and table.files_path_column not in names:
        names.append(table.files_path_column)
    return names



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
                         empties, delivered_manifest_sha256=source.delivered_manifest_sha256)
    (work / "manifest.json").write_text(staged.to_json(), encoding="utf-8")
    _swap_into_place(work, final)
    return staged


def _extra_columns(table: Table) -> list[str]:
    return (["source_path"] if table.files_path_column else []) + ["record_class"]


def _stage_table(system: System, source: RowSource, table: Table, work: Path, partitions: dict[str, Partition],
                 digests: dict, classes: dict[str, dict], *, keep_keys: bool) -> int:
    files_root = source.files_root(table) if table.files_path_column else None
    store = _DocumentStore(files_root) if files_root is not None else None  # this table's documents
    schema = _schema(table, _extra_columns(table))
    writers: dict[str, pq.ParquetWriter] = {}
    classify = _RootClassifier(system, table) if table.parent_table is None else None
    own: dict[object, str | None] = classes.setdefault(table.name, {}) if keep_keys else {}
    parent_map = classes.get(table.parent_table or "", {})
    unmatched: list[int] = []  # row numbers (a key may be a personnummer: never in a message)
    passthrough = {c.name: source.passthrough_types(c.type) for c in table.columns}
    total = 0
    try:
        for chunk in source.column_chunks(table):
            if not chunk.length:
                continue
            cols = _convert_columns(system, source, table, chunk, passthrough, first_row=total + 1)
            if store is not None:
                rels = _values(chunk.columns[table.files_path_column])  # type: ignore[index]
                cols["source_path"] = resolved = list(map(store.resolve, rels))
                _refuse_escaping_paths(system, table, chunk, rels, resolved, first_row=total + 1)
            elif table.files_path_column:
                cols["source_path"] = [""] * chunk.length
            keys = _values(cols[table.key]) if keep_keys else ()
            if classify is not None:
                row_classes = classify(cols, chunk.length)
                unmatched.extend(total + i + 1 for i, rc in enumerate(row_classes) if rc is None)
            else:
                # Children inherit the class of their parent row (None: no such parent here).
                row_classes = list(map(parent_map.get, _values(cols[table.parent_column])))  # type: ignore[index]
            if keep_keys:
                own.update(zip(keys, row_classes, strict=True))
            cols["record_class"] = row_classes
            rb = pa.RecordBatch.from_pydict(cols, schema=schema)
            total += rb.num_rows
            present = set(row_classes)
            for rc in sorted(c for c in present if c is not None):
                part_rb = rb if len(present) == 1 else rb.filter(pc.equal(rb.column("record_class"), rc))
                part = partitions.setdefault(rc, Partition(rc))
                if rc not in writers:
                    path = work / table.name / rc / "part-00000.parquet"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    writers[rc] = pq.ParquetWriter(path, schema, compression="zstd")
                    part.files.setdefault(table.name, []).append(str(path))
                writers[rc].write_batch(part_rb)
                part.rows[table.name] = part.rows.get(table.name, 0) + part_rb.num_rows
                _digest_batch(digests.setdefault(rc, hashlib.sha256()), table.name, part_rb)
    finally:
        for w in writers.values():
            w.close()
    if unmatched:
        raise ContentError(
            f"{system.name}.{table.name}: {len(unmatched)} row(s) match no record class "
            f"(add a rule under record_classes in {system.source.name})",
            [f"row {n}" for n in unmatched[:50]],
        )
    return total


def _refuse_escaping_paths(system: System, table: Table, chunk: ColumnChunk, rels: Sequence[object],
                           resolved: Sequence[str], *, first_row: int) -> None:
    """A ContentError for the first document path that names something outside the document store.

    An absolute path, a '..' that climbs out, a link (to a file or a folder) that leads out, a
    path naming a folder: refused here, before any document is read, for the whole batch. A path
    inside the store whose file is missing is left to the quality gate (an archivist may accept
    a record without its file). The message names the row and column, never the path: it is
    the source's value and may hold a name or a personnummer.
    """
    for i, (rel, real) in enumerate(zip(rels, resolved, strict=True)):
        if real or not isinstance(rel, str) or rel == "":  # no path (or not text): the quality gate's to judge
            continue
        where = (chunk.where[i] if chunk.where else None) or f"{system.name}.{table.name}: row {first_row + i}"
        root = f" ({table.files_root_env})" if table.files_root_env else ""
        raise ContentError(f"{where}: column {table.files_path_column}: the document path leads out of the "
                           f"document store{root} (an absolute path, '..', a link out of it or a folder); "
                           "nothing was read")


def _convert_columns(system: System, source: RowSource, table: Table, chunk: ColumnChunk,
                     passthrough: Mapping[str, frozenset[type]], *, first_row: int = 1) -> dict[str, Sequence[object]]:
    """Each declared column of a chunk as values of its declared type, ready for ``pa.array``.

    A column whose values all have a type the converter leaves unchanged is passed on as it
    is (checking the types is a C-level pass; converting is a Python call per value).
    """
    out: dict[str, Sequence[object]] = {}
    for col in table.columns:
        raw = chunk.columns[col.name]
        if isinstance(raw, pa.Array):
            if raw.type == ARROW_TYPES[col.type]:  # already typed by the source (see ColumnChunk)
                out[col.name] = raw
                continue
            raw = raw.to_pylist()
        if set(map(type, raw)) <= passthrough[col.name]:
            out[col.name] = raw
            continue
        try:
            out[col.name] = list(map(functools.partial(source.convert, col.type), raw))
        except (ValueError, TypeError, ArithmeticError):
            _raise_first_bad_value(system, source, table, chunk, first_row=first_row)
            raise
    return out


def _raise_first_bad_value(system: System, source: RowSource, table: Table, chunk: ColumnChunk, *,
                           first_row: int = 1) -> None:
    """Raise the ContentError for the chunk's first bad value in row order (row, then column).

    Columns are converted one after the other, so the value that failed first is not
    necessarily the first bad one a reader meets; this names the same row and column as a
    row-by-row reading would, whichever column failed. The row is named by its place in the
    table's rows (``first_row`` is the chunk's first), never by a value: not even the key,
    which may be a personnummer.
    """
    for i in range(chunk.length):
        for col in table.columns:
            values = chunk.columns[col.name]
            if isinstance(values, pa.Array) and values.type == ARROW_TYPES[col.type]:
                continue  # typed by the source: no value of it can be bad
            try:
                source.convert(col.type, _values(values)[i])
            except (ValueError, TypeError, ArithmeticError) as exc:
                # Name the row and column, never the value: it may be a personnummer.
                where = (chunk.where[i] if chunk.where else None) or f"{system.name}.{table.name}: row {first_row + i}"
                raise ContentError(f"{where}: column {col.name} does not hold a {col.type} "
                                   f"({exc.__class__.__name__})") from None


class _RootClassifier:
    """The record class of each root row, decided once per distinct value of the rules' columns.

    A rule (:meth:`RecordClass.matches`) reads ``str(value)`` of one column, so rows whose
    rule columns have the same text get the same class; the decision is cached by that text.
    The cache is emptied when it grows large, so memory stays bounded whatever the column.
    """

    MAX_CACHED = 100_000

    def __init__(self, system: System, table: Table):
        self.system = system
        self.types = {c.name: c.type for c in table.columns}
        self.columns = list(dict.fromkeys(rc.column for rc in system.record_classes if not rc.default and rc.column))
        self.cache: dict[object, str | None] = {}

    def _texts(self, values: Sequence[object] | None, column: str, n: int) -> Sequence[object]:
        if values is None:  # a rule on a column the table does not declare never matches
            return [None] * n
        if self.types.get(column) == "string":  # converted strings are str already
            return values
        return [None if v is None else str(v) for v in values]

    def __call__(self, cols: Mapping[str, Sequence[object]], n: int) -> list[str | None]:
        if not self.columns:
            return [self.system.record_class_of({})] * n
        texts = [self._texts(None if c not in cols else _values(cols[c]), c, n) for c in self.columns]
        keys: Sequence[object] = texts[0] if len(texts) == 1 else list(zip(*texts, strict=True))
        if len(self.cache) > self.MAX_CACHED:
            self.cache.clear()
        cache, out = self.cache, []
        for key in keys:
            rc = cache.get(key, _UNDECIDED)
            if rc is _UNDECIDED:
                row = dict(zip(self.columns, key if len(texts) > 1 else (key,), strict=True))
                rc = cache[key] = self.system.record_class_of(row)
            out.append(rc)
        return out  # type: ignore[return-value]


_UNDECIDED = object()


def _digest_rows(h, table: str, batch: pa.RecordBatch) -> None:
    """Feed rows into a partition's content digest, one canonical line per row (the reference).

    The digest (and so the package ID) covers what the source says — not how rows were
    batched, nor where this machine mounts the document store (``source_path``). A line is
    the table's name, a tab, the row as compact JSON (keys in column order, dates as
    text) and a newline.
    :func:`_digest_batch` feeds the same bytes column-wise; this row-wise form defines them
    and is used only where that cannot (a batch whose lines would not fit one Arrow array).
    """
    names = [n for n in batch.schema.names if n != "source_path"]
    prefix = table.encode() + b"\t"
    for row in batch.select(names).to_pylist():
        h.update(prefix + json.dumps(row, default=str, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")


#: at most this many bytes of a record batch are turned into digest lines at once
_DIGEST_SLICE_BYTES = 1 << 28


def _digest_batch(h, table: str, batch: pa.RecordBatch) -> None:
    """Feed the same bytes as :func:`_digest_rows`, built with Arrow compute functions.

    Each column becomes the JSON text of its values, the columns are joined with the keys
    into one line per row, and the lines' bytes (one contiguous buffer) go to the hash at once.
    """
    names = [n for n in batch.schema.names if n != "source_path"]
    if not names or not batch.num_rows:
        _digest_rows(h, table, batch)
        return
    step = batch.num_rows
    if batch.nbytes > _DIGEST_SLICE_BYTES:  # keep each slice's lines far below Arrow's 2 GiB per array
        step = max(1, batch.num_rows * _DIGEST_SLICE_BYTES // batch.nbytes)
    for offset in range(0, batch.num_rows, step):
        part = batch.slice(offset, step)
        try:
            pieces: list[object] = []
            literal = f"{table}\t{{"
            for i, name in enumerate(names):
                literal += ("" if i == 0 else ",") + json.dumps(name, ensure_ascii=False) + ":"
                values, quote = _json_values(part.column(name))
                pieces += [literal + quote, values]
                literal = quote
            pieces.append(literal + "}\n")
            lines = pc.binary_join_element_wise(*pieces, "")
        except pa.ArrowException:  # a single value too large for the column-wise form
            _digest_rows(h, table, part)
            continue
        h.update(_string_bytes(lines))


# JSON's escapes (json.dumps with ensure_ascii=False): backslash first, so no escape is escaped again.
_JSON_ESCAPES = [("\\", "\\\\"), ('"', '\\"')] + [
    (chr(c), {8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}.get(c, f"\\u{c:04x}")) for c in range(0x20)]
_NOT_CONTROL = bytes(range(0x20, 0x100))  # deleting these from a text leaves its control characters


def _json_values(arr: pa.Array) -> tuple[pa.Array, str]:
    """Every value of a column as the JSON text ``json.dumps(v, default=str, ensure_ascii=False)`` writes.

    Returns the texts and the quote that goes around each of them: for a text column without
    nulls the quotes are left to the line's literal parts (one pass less); otherwise "".
    """
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        # Whether any value needs escaping, from the column's bytes at once (C loops, no regex).
        data = bytes(_string_bytes(arr))
        if b'"' in data or b"\\" in data or data.translate(None, _NOT_CONTROL):
            for ch, escaped in _JSON_ESCAPES:
                if ch.encode() in data:  # a pass per character that occurs (controls are rare)
                    arr = pc.replace_substring(arr, ch, escaped)
        return _text(arr)
    if pa.types.is_integer(t):
        return pc.fill_null(pc.cast(arr, pa.string()), "null"), ""
    if pa.types.is_boolean(t):
        return pc.fill_null(pc.if_else(arr, "true", "false"), "null"), ""
    if pa.types.is_date32(t):  # str(date): YYYY-MM-DD, years zero-padded to four digits, as Arrow writes them
        return _text(pc.cast(arr, pa.string()))
    if t == pa.timestamp("us"):  # str(datetime) leaves out the fraction when it is zero; Arrow always writes it
        return _text(pc.replace_substring(pc.cast(arr, pa.string()), ".000000", ""))
    # floats (repr), decimals (str of Decimal, e.g. 0E-10): Python's own text, value by value
    return pa.array([json.dumps(v, default=str, ensure_ascii=False) for v in arr.to_pylist()], pa.string()), ""


def _text(arr: pa.Array) -> tuple[pa.Array, str]:
    """A JSON string per value (already escaped); a null is JSON's null, without quotes."""
    if not arr.null_count:
        return arr, '"'
    return pc.fill_null(pc.binary_join_element_wise('"', arr, '"', ""), "null"), ""


def _string_bytes(arr: pa.Array) -> memoryview:
    """The bytes of a string array's values (of null slots too, if any): a view of its data buffer."""
    _, offsets, data = arr.buffers()[:3]
    if data is None:  # no value has a byte
        return memoryview(b"")
    index = memoryview(offsets).cast("q" if pa.types.is_large_string(arr.type) else "i")
    return memoryview(data)[index[arr.offset]:index[arr.offset + len(arr)]]


def _swap_into_place(work: Path, final: Path) -> None:
    """Replace ``final`` by ``work`` with renames, so readers see the old or the new batch."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(work, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
