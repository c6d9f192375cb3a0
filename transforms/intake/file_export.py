"""File-export deliveries: a system drops table files, documents and a manifest in an inbox.

A delivery is the folder ``<inbox>/<period>/``. It is checked whole before a single row is
staged: it must be a real folder holding only real folders and regular files (a link, a
FIFO or a device is refused before anything in the delivery is read, and every file is
opened without following links), every file listed in ``manifest.json`` must be there with
its size and SHA-256, and no file may be there that the manifest does not list. Then each
table file is read with the encoding and dialect its system declares — strictly:
undecodable bytes, a row with the wrong number of fields, a header that does not name the
declared columns, a value that is not of its column's type, and text that is not what the
declaration says (UTF-8 read as windows-1252, a byte-order mark inside the file, control
characters) is a :class:`ContentError` naming the file, the line, the column and the rule
(never the value), and the whole delivery is quarantined rather than half-read. Once every
table is read, each file the manifest lists must have been used: a document no row names
is not silently left behind.

Names chosen by the delivery (file names, header names, element names) are never echoed
unless they are one of the declared names; file names go through :func:`masking.safe_name`.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import errno
import hashlib
import io
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import BinaryIO

from lxml import etree

from transforms.common.errors import ArkivError, ConfigError, ContentError
from transforms.common.hashing import CHUNK
from transforms.common.masking import safe_name
from transforms.common.xmltools import SAFE_PARSE
from transforms.config.systems import FileExport, System, Table
from transforms.intake.inbox import relative_problem
from transforms.quality.checks import TEXT_RULES, may_be_faulty, text_faults
from transforms.staging.batch import CONVERTERS, WHERE, RowSource, _to_bool

MANIFEST = "manifest.json"
#: the most a single CSV field may hold (journal notes can be long; a runaway quote must not eat the file)
MAX_FIELD = 10 * 1024 * 1024
#: the largest manifest read (a listing of a million files stays far below)
MAX_MANIFEST = 256 * 1024 * 1024
#: the deepest folder nesting accepted in a delivery
MAX_DEPTH = 32
#: lines named per text fault in a message (the count says how many there are)
MAX_LINES_SHOWN = 5
#: file names listed in a message about unused or misplaced files
MAX_NAMES_SHOWN = 10

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: opening a FIFO planted in place of a file must not wait for a writer.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
#: what an undeclared column name must look like to be quoted in a message (lower-case, short)
_COLUMN_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_SINGLE_BYTE = {"windows-1252", "cp1252", "iso-8859-1", "latin-1", "latin1"}


class DeliveryMissing(ArkivError):
    """No delivery for the period is in the inbox (yet): a system owner's matter, worth a retry later."""


def delivery_folder(inbox: Path, period: str) -> Path:
    return inbox / period


# --- confinement ---------------------------------------------------------------------------------


def _relative_problem(rel: object) -> str | None:
    """Why ``rel`` is not a plain relative path inside a delivery, or None when it is."""
    if not isinstance(rel, str) or not rel:
        return "needs a relative 'path' inside the delivery"
    return relative_problem(rel)


class _Confined:
    """A delivery folder opened without following links: every open is relative to its descriptor."""

    def __init__(self, folder: Path, system: str):
        self.folder, self.system, self.name = folder, system, safe_name(folder.name)
        self.manifest_sha256: str | None = None  # once manifest() has read it
        try:
            self.fd = os.open(folder, _DIR_FLAGS)
        except FileNotFoundError:
            raise DeliveryMissing(f"{system}: no delivery in {safe_name(folder)}; the system has not exported "
                                  f"this period yet") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and folder.is_symlink():
                raise ContentError(f"{system}: delivery {self.name} is a symbolic link; a delivery must be a real "
                                   f"folder in the inbox (rule: no links)") from None
            if exc.errno == errno.ENOTDIR:
                raise ContentError(f"{system}: delivery {self.name} is not a folder") from None
            raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # a reader that is never closed must not keep the folder open
        if getattr(self, "fd", -1) >= 0:
            self.close()

    def __enter__(self) -> _Confined:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def scan(self) -> tuple[set[str], list[str]]:
        """Every regular file (relative path) in the delivery, and what else was found there."""
        files: set[str] = set()
        problems: list[str] = []
        self._scan(self.fd, "", files, problems)
        return files, problems

    def _scan(self, dir_fd: int, prefix: str, files: set[str], problems: list[str]) -> None:
        if prefix.count("/") >= MAX_DEPTH:
            problems.append(f"{safe_name(prefix.rstrip('/'))}: folders nested deeper than {MAX_DEPTH} levels")
            return
        with os.scandir(dir_fd) as entries:
            listed = sorted(entries, key=lambda e: e.name)
        for entry in listed:
            rel = prefix + entry.name
            if entry.is_symlink():
                problems.append(f"{safe_name(rel)}: a symbolic link; links are not accepted in a delivery "
                                f"(rule: no links)")
            elif entry.is_dir(follow_symlinks=False):
                try:
                    sub = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError:
                    problems.append(f"{safe_name(rel)}: a folder that cannot be opened without following a link")
                    continue
                try:
                    self._scan(sub, rel + "/", files, problems)
                finally:
                    os.close(sub)
            elif entry.is_file(follow_symlinks=False):
                files.add(rel)
            else:
                problems.append(f"{safe_name(rel)}: not a regular file (a FIFO, socket or device); "
                                f"only files and folders are accepted in a delivery")

    def open(self, rel: str, where: str | None = None) -> BinaryIO:
        """``rel`` opened for reading, refusing a link anywhere on the way and anything but a regular file."""
        shown = where or f"{self.name}/{safe_name(rel)}"
        problem = _relative_problem(rel)
        if problem:
            raise ContentError(f"{self.system}: {shown}: the path {problem}")
        parts = rel.split("/")
        fd = os.dup(self.fd)
        try:
            for part in parts[:-1]:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
            leaf = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            raise ContentError(f"{self.system}: {shown}: not in the delivery") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise ContentError(f"{self.system}: {shown}: the path goes through a symbolic link or a "
                                   f"non-folder; links are not accepted in a delivery (rule: no links)") from None
            raise
        finally:
            os.close(fd)
        if not stat.S_ISREG(os.fstat(leaf).st_mode):
            os.close(leaf)
            raise ContentError(f"{self.system}: {shown}: not a regular file")
        os.set_blocking(leaf, True)
        return open(leaf, "rb", closefd=True)  # noqa: SIM115 - the caller closes it

    def sha256(self, rel: str) -> tuple[str, int]:
        h, size = hashlib.sha256(), 0
        with self.open(rel) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
        return h.hexdigest(), size

    def manifest(self) -> dict:
        try:
            with self.open(MANIFEST) as f:
                raw = f.read(MAX_MANIFEST + 1)
        except ContentError as exc:
            if "not in the delivery" in str(exc):
                raise ContentError(f"{self.system}: delivery {self.name} has no {MANIFEST}") from None
            raise
        if len(raw) > MAX_MANIFEST:
            raise ContentError(f"{self.system}: {self.name}/{MANIFEST} is larger than {MAX_MANIFEST} bytes")
        self.manifest_sha256 = hashlib.sha256(raw).hexdigest()  # of the bytes parsed here, not a second read
        try:
            manifest = json.loads(raw.decode("utf-8"))
        except RecursionError:
            raise ContentError(f"{self.system}: {self.name}/{MANIFEST} is nested too deeply to be a manifest") \
                from None
        except UnicodeDecodeError:
            raise ContentError(f"{self.system}: {self.name}/{MANIFEST} is not UTF-8 JSON (undecodable bytes)") \
                from None
        except json.JSONDecodeError as exc:
            raise ContentError(f"{self.system}: {self.name}/{MANIFEST} is not UTF-8 JSON ({exc.msg} at line "
                               f"{exc.lineno}, column {exc.colno})") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
            raise ContentError(f"{self.system}: {self.name}/{MANIFEST} must be an object with a 'files' list")
        return manifest


def _listed_paths(manifest: dict) -> list[object]:
    return [e.get("path") if isinstance(e, dict) else None for e in manifest["files"]]


def manifest_sha256(folder: Path, system: str) -> str | None:
    """The SHA-256 of the delivery's manifest as it is now (opened without following links), whatever it
    holds; None when there is no delivery folder or no manifest in it."""
    try:
        box = _Confined(folder, system)
    except DeliveryMissing:
        return None
    with box, contextlib.suppress(ContentError):  # read but no manifest: its digest is known all the same
        box.manifest()
    return box.manifest_sha256


def check_delivery(folder: Path, system: str) -> dict:
    """Verify the folder and the manifest against each other; returns the manifest. ContentError on any mismatch.

    Links and special files are refused before a byte of the delivery is read.
    """
    with _Confined(folder, system) as box:
        present, problems = box.scan()
        if problems:
            raise ContentError(f"{system}: delivery {box.name} holds links or special files and was not read",
                               problems)
        manifest = box.manifest()
        listed: set[str] = set()
        for n, entry in enumerate(manifest["files"], 1):
            rel = entry.get("path") if isinstance(entry, dict) else None
            problem = _relative_problem(rel)
            if problem:
                problems.append(f"manifest entry {n}: the path {problem}")
                continue
            if rel in listed:
                problems.append(f"{safe_name(rel)}: listed twice in the manifest")
                continue
            listed.add(rel)
            if rel not in present:
                problems.append(f"{safe_name(rel)}: listed in the manifest but not in the delivery")
                continue
            digest, size = box.sha256(rel)
            declared = entry.get("size")
            if not isinstance(declared, int) or isinstance(declared, bool):
                problems.append(f"{safe_name(rel)}: the manifest's size is not a whole number")
            elif size != declared:
                problems.append(f"{safe_name(rel)}: size {size} differs from the manifest's {declared}")
            elif digest != entry.get("sha256"):
                problems.append(f"{safe_name(rel)}: SHA-256 differs from the manifest (changed or damaged in "
                                f"transfer)")
        for rel in sorted(present - listed - {MANIFEST}):
            problems.append(f"{safe_name(rel)}: in the delivery but not listed in the manifest")
        if problems:
            raise ContentError(f"{system}: delivery {box.name} does not match its manifest", problems)
        return manifest


# --- reading -------------------------------------------------------------------------------------


class FileExportSource(RowSource):
    """Rows from one verified delivery folder, read with the system's declared encoding and dialect.

    Every file is opened through the delivery's folder without following links. When the
    delivery has a manifest, the files it lists must all be used once every table has been
    read: a table file, or a document named by a row.
    """

    def __init__(self, system: System, folder: Path):
        if system.file_export is None:
            raise ValueError(f"{system.name} is not a file-export system")
        # The inbox may be reached through a link (that is configuration); the delivery itself may not.
        folder = Path(folder)
        self.system, self.fmt = system, system.file_export
        self.folder = folder.parent.resolve() / folder.name
        self.box = _Confined(self.folder, system.name)
        self.listed: set[str] | None = None
        try:
            files, problems = self.box.scan()
            if problems:
                raise ContentError(f"{system.name}: delivery {self.box.name} holds links or special files and "
                                   f"was not read", problems)
            if MANIFEST in files:
                self.listed = {p for p in _listed_paths(self.box.manifest()) if isinstance(p, str)}
                self.delivered_manifest_sha256 = self.box.manifest_sha256
        except BaseException:
            self.box.close()
            raise
        self.table_files = {t.file for t in system.tables.values() if t.file}
        self.used: set[str] = set()
        self.done: set[str] = set()

    def close(self) -> None:
        self.box.close()

    def files_root(self, table: Table) -> Path | None:
        return self.folder

    def convert(self, column_type: str, value: object) -> object:
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return _parse_text(column_type, value, self.fmt)
        return CONVERTERS[column_type](value)

    def chunks(self, table: Table) -> Iterator[Sequence[Mapping[str, object]]]:
        if not table.file:
            raise ConfigError(f"{self.system.source}: extract.tables.{table.name}.file: a file-export table needs "
                              f"the name of its file in the delivery")
        if _relative_problem(table.file):
            raise ConfigError(f"{self.system.source}: extract.tables.{table.name}.file: the path "
                              f"{_relative_problem(table.file)}")
        where = f"{self.box.name}/{safe_name(table.file)}"
        try:
            f = self.box.open(table.file, where)
        except ContentError as exc:
            if "not in the delivery" in str(exc):
                raise ContentError(f"{self.system.name}: delivery {self.box.name} has no file "
                                   f"{safe_name(table.file)} for table {table.name}") from None
            raise
        reader = {"csv": _read_csv, "jsonl": _read_jsonl, "xml": _read_xml}[self.fmt.format]
        chunk: list[Mapping[str, object]] = []
        with f:
            for row in reader(f, where, table, self.fmt):
                if table.files_path_column:
                    self._document(row, table, where)
                chunk.append(row)
                if len(chunk) >= self.system.batch_rows:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk
        self.done.add(table.name)
        if self.done >= set(self.system.tables):
            self._check_all_used()

    def _document(self, row: Mapping[str, object], table: Table, where: str) -> None:
        """Note the document a row names; a row may not name a path outside the delivery or a non-document."""
        rel = row.get(table.files_path_column)
        if rel is None or rel == "":
            return
        line = row.get(WHERE) or where
        problem = _relative_problem(rel)
        if problem:
            raise ContentError(f"{line}: column {table.files_path_column}: the document path {problem} "
                               f"(rule: a record's files are inside its delivery)")
        if rel == MANIFEST or rel in self.table_files:
            raise ContentError(f"{line}: column {table.files_path_column}: names the delivery's manifest or a "
                               f"table file, not a document (rule: a record's files are its own documents)")
        if rel in self.used:
            raise ContentError(f"{line}: column {table.files_path_column}: names a document an earlier row "
                               f"already names (rule: a file belongs to exactly one record)")
        # A document missing from the delivery is left to the quality gate, which names the record.
        self.used.add(rel)

    def _check_all_used(self) -> None:
        if self.listed is None:
            return
        unused = sorted(self.listed - self.used - self.table_files - {MANIFEST})
        if unused:
            shown = ", ".join(safe_name(u) for u in unused[:MAX_NAMES_SHOWN])
            more = f", … and {len(unused) - MAX_NAMES_SHOWN} more" if len(unused) > MAX_NAMES_SHOWN else ""
            raise ContentError(
                f"{self.system.name}: delivery {self.box.name}: the manifest lists {len(unused)} file(s) no record "
                f"uses: {shown}{more}; the delivery is kept whole or not at all (rule: manifest kept whole)",
                [f"{safe_name(u)}: listed in the manifest, named by no row of any table" for u in unused])


def _parse_text(column_type: str, text: str, fmt: FileExport) -> object:
    t = text.strip()
    if column_type in ("float64", "decimal"):
        if fmt.decimal == ",":
            if "." in t and "," in t:
                raise ValueError("both decimal separators")
            t = t.replace(",", ".")
        t = t.replace("\u00a0", "").replace(" ", "")  # thousands separators: space, no-break space
        try:
            number = Decimal(t)
        except InvalidOperation:
            raise ValueError("not a number") from None
        return float(number) if column_type == "float64" else number
    if column_type == "int64":
        return int(t)
    if column_type == "bool":
        return _to_bool(t)
    if column_type == "date":
        return dt.datetime.strptime(t, fmt.date_format).date() if fmt.date_format else dt.date.fromisoformat(t)
    if column_type == "timestamp":
        return dt.datetime.strptime(t, fmt.timestamp_format) if fmt.timestamp_format else dt.datetime.fromisoformat(t)
    return text


def _text(raw: BinaryIO, fmt: FileExport) -> io.TextIOWrapper:
    # errors="strict": a byte that is not valid in the declared encoding stops the read.
    return io.TextIOWrapper(raw, encoding=fmt.encoding, errors="strict", newline="")


def _nameable(unknown: str, found: Sequence[str], declared: Sequence[str]) -> bool:
    """Whether an undeclared name may be quoted: it reads as a column name, among mostly declared ones.

    A header row that is really the first data row (the export lost its header) has next to
    no declared names; its "names" are a personnummer, a name, an amount and are never shown.
    """
    known = sum(1 for c in found if c in declared)
    return 2 * known >= len(found) and bool(_COLUMN_NAME.fullmatch(unknown))


def _check_columns(found: Sequence[str], table: Table, where: str, what: str = "header row") -> None:
    """The found names must be exactly the declared columns.

    A header that is not one (the export lost its first line) holds data, so an undeclared
    name is counted, and quoted only when :func:`_nameable` says it is plainly a column name.
    """
    declared = list(table.column_names)
    known = [c for c in found if c in declared]
    unknown = [c for c in found if c not in declared]
    missing = [c for c in declared if c not in found]
    twice = sorted({c for c in known if known.count(c) > 1})
    if not (unknown or missing or twice):
        return
    if not known:
        state = "none of them a declared column (is the header row missing?)"
    else:
        state = f"{len(set(known))} of them declared"
    details = [f"expected columns: {', '.join(declared)}",
               f"found {len(found)} column(s), {state}"]
    shown = [c for c in unknown if _nameable(c, found, declared)]
    details += [f"unknown column {c!r}" for c in shown]
    if len(unknown) > len(shown):
        details.append(f"{len(unknown) - len(shown)} column name(s) that are not declared (not shown: they may "
                       f"be data)")
    if missing:
        details.append("missing: " + ", ".join(missing))
    if twice:
        details.append("more than once: " + ", ".join(twice))
    raise ContentError(f"{where}: the {what} does not match the declaration: expected columns "
                       f"{', '.join(declared)}; found {len(found)} column(s), {state}", details)


def _decode_error(where: str, fmt: FileExport, raw: BinaryIO) -> ContentError:
    """Name the first line (and its byte position) that is not valid in the declared encoding, never the bytes."""
    at = ""
    try:
        raw.seek(0)
        for n, line in enumerate(raw, 1):
            try:
                line.decode(fmt.encoding)
            except UnicodeDecodeError as exc:
                at = f" at line {n}, byte {exc.start + 1} of the line"
                break
    except (OSError, ValueError):
        pass  # the position is a courtesy; the refusal stands without it
    return ContentError(f"{where}: not valid {fmt.encoding}{at} (a byte that cannot be decoded); the file is not in "
                        f"its declared encoding")


class _TextFaults:
    """Text in a table file that is not what its declaration says, by column and rule, with lines."""

    def __init__(self, where: str, table: Table, fmt: FileExport):
        self.where, self.table, self.fmt = where, table, fmt
        self.found: dict[tuple[str, str], list[int]] = {}  # (column, rule) -> lines

    def row(self, values: Iterable[tuple[str, object]], line: int) -> bool:
        """Note the row's faults; True once the file has any (its rows are then no longer staged)."""
        texts = [(column, value) for column, value in values if isinstance(value, str) and value]
        if may_be_faulty("\n".join(v for _, v in texts)):
            for column, value in texts:
                for rule in text_faults(value):
                    self.found.setdefault((column, rule), []).append(line)
        return bool(self.found)

    def raise_if_any(self) -> None:
        if not self.found:
            return
        details = []
        for (column, rule), lines in sorted(self.found.items()):
            first = ", ".join(map(str, lines[:MAX_LINES_SHOWN]))
            more = ", …" if len(lines) > MAX_LINES_SHOWN else ""
            details.append(f"{self.where}: column {column}: {len(lines)} value(s) {TEXT_RULES[rule]} "
                           f"(rule {rule}; line {first}{more})")
        declared = f" (declared {self.fmt.encoding})" if self.fmt.encoding.lower() in _SINGLE_BYTE else ""
        raise ContentError(f"{self.where}: table {self.table.name}: text is not what the delivery declares"
                           f"{declared}: {sum(len(v) for v in self.found.values())} value(s) in "
                           f"{len({c for c, _ in self.found})} column(s); nothing was staged", details)


def _read_csv(raw: BinaryIO, where: str, table: Table, fmt: FileExport) -> Iterator[Mapping[str, object]]:
    csv.field_size_limit(MAX_FIELD)
    faults = _TextFaults(where, table, fmt)
    with _text(raw, fmt) as f:
        reader = csv.reader(f, delimiter=fmt.delimiter, quotechar=fmt.quotechar, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise ContentError(f"{where}: empty file (no header row)")
            if header and header[0].startswith(codecs.BOM_UTF8.decode("utf-8")):
                raise ContentError(f"{where}: starts with a byte-order mark, but the declared encoding is "
                                   f"{fmt.encoding}; declare utf-8-sig")
            if header and header[0].startswith(codecs.BOM_UTF8.decode("latin-1")):
                raise ContentError(f"{where}: starts with a UTF-8 byte-order mark, but the declared encoding is "
                                   f"{fmt.encoding}: the file is UTF-8 (declare utf-8-sig)")
            _check_columns(header, table, where)
            for fields in reader:
                if not fields:
                    continue  # a blank line (trailing CRLF)
                if len(fields) != len(header):
                    raise ContentError(f"{where}: line {reader.line_num}: {len(fields)} fields, "
                                       f"the header has {len(header)}")
                if faults.row(zip(header, fields, strict=True), reader.line_num):
                    continue  # read on only to count: a refused file stages nothing more
                yield {**dict(zip(header, fields, strict=True)), WHERE: f"{where}: line {reader.line_num}"}
        except UnicodeDecodeError:
            raise _decode_error(where, fmt, raw) from None
        except csv.Error as exc:
            raise ContentError(f"{where}: line {reader.line_num}: not valid CSV ({safe_name(exc)})") from None
    faults.raise_if_any()


def _read_jsonl(raw: BinaryIO, where: str, table: Table, fmt: FileExport) -> Iterator[Mapping[str, object]]:
    faults = _TextFaults(where, table, fmt)
    with _text(raw, fmt) as f:
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except RecursionError:
                    raise ContentError(f"{where}: line {n}: nested too deeply to be a row") from None
                except json.JSONDecodeError as exc:
                    raise ContentError(f"{where}: line {n}: not valid JSON ({exc.msg}, column {exc.colno})") \
                        from None
                if not isinstance(row, dict):
                    raise ContentError(f"{where}: line {n}: expected a JSON object")
                if any(k not in table.column_names for k in row):
                    _check_columns(list(row), table, f"{where}: line {n}", "object's keys")
                values = {c: _jsonl_value(row.get(c)) for c in table.column_names}
                if faults.row(values.items(), n):
                    continue
                yield {**values, WHERE: f"{where}: line {n}"}
        except UnicodeDecodeError:
            raise _decode_error(where, fmt, raw) from None
    faults.raise_if_any()


def _jsonl_value(v: object) -> object:
    # JSON numbers stay numbers; everything else is parsed as text by the column's type.
    return v if v is None or isinstance(v, bool | int | float) else str(v)


def _read_xml(raw: BinaryIO, where: str, table: Table, fmt: FileExport) -> Iterator[Mapping[str, object]]:
    head = raw.read(4096)
    raw.seek(0)
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        raise ContentError(f"{where}: DOCTYPE/ENTITY declarations are not accepted")
    declared = _xml_declared_encoding(head)
    if declared:
        try:
            codecs.lookup(declared)
        except LookupError:
            raise ContentError(f"{where}: the XML declares an encoding that is not a known encoding; the system "
                               f"declares {fmt.encoding!r}") from None
    if declared and codecs.lookup(declared).name != codecs.lookup(fmt.encoding.replace("-sig", "")).name:
        raise ContentError(f"{where}: the XML declares encoding {safe_name(declared)}, the system declares "
                           f"{fmt.encoding!r}")
    columns = set(table.column_names)
    faults = _TextFaults(where, table, fmt)
    try:
        for _, el in etree.iterparse(raw, events=("end",), tag="row", **SAFE_PARSE,
                                     encoding=None if declared else fmt.encoding):
            row: dict[str, object] = {}
            for child in el:
                if not isinstance(child.tag, str):
                    continue
                name = etree.QName(child).localname
                if name not in columns:
                    names = [etree.QName(c).localname for c in el if isinstance(c.tag, str)]
                    what = (f"unknown column {name!r}" if _nameable(name, names, table.column_names)
                            else "an element that is not a declared column (not shown: it may be data)")
                    raise ContentError(f"{where}: line {child.sourceline}: {what}; expected columns "
                                       f"{', '.join(table.column_names)}")
                if len(child):
                    raise ContentError(f"{where}: line {child.sourceline}: column {name} has nested elements")
                row[name] = child.text if child.text is not None and child.text.strip() != "" else None
                if row[name] is not None:
                    faults.row([(name, row[name])], child.sourceline or el.sourceline or 0)
            line = el.sourceline
            el.clear()
            if faults.found:
                continue
            yield {**{c: row.get(c) for c in table.column_names}, WHERE: f"{where}: line {line}"}
    except etree.XMLSyntaxError as exc:
        # libxml2's message can quote names from the document; its error type names the rule.
        kind = _xml_error_name(exc.code)
        raise ContentError(f"{where}: not well-formed XML in {fmt.encoding} ({kind}, line {exc.lineno})") from None
    faults.raise_if_any()


def _xml_error_name(code: object) -> str:
    """libxml2's name for an error code (``ERR_TAG_NAME_MISMATCH``): the rule, without the names it quotes."""
    try:
        return etree.ErrorTypes._getName(code, None) or "syntax error"  # noqa: SLF001 - lxml's public enum
    except Exception:  # the name is a courtesy; an lxml without the lookup still refuses the file
        return "syntax error"


def _xml_declared_encoding(head: bytes) -> str | None:
    if not head.startswith(b"<?xml"):
        return None
    decl = head.split(b"?>", 1)[0].decode("ascii", "replace")
    for quote in ('"', "'"):
        marker = f"encoding={quote}"
        if marker in decl:
            return decl.split(marker, 1)[1].split(quote, 1)[0]
    return None
