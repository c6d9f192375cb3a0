"""File-export deliveries: a system drops table files, documents and a manifest in an inbox.

A delivery is the folder ``<inbox>/<period>/``. It is checked whole before a single row is
staged: every file listed in ``manifest.json`` must be there with its size and SHA-256, and
no file may be there that the manifest does not list. Then each table file is read with the
encoding and dialect its system declares — strictly: undecodable bytes, a row with the wrong
number of fields, an unknown column or a value that is not of its column's type is a
:class:`ContentError` naming the file, the line and the column (never the value), and the
whole delivery is quarantined rather than half-read.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path

from lxml import etree

from .errors import ArkivError, ContentError
from .extract import CONVERTERS, WHERE, RowSource, _to_bool
from .hashing import sha256_file
from .systems import FileExport, System, Table

MANIFEST = "manifest.json"
#: the most a single CSV field may hold (journal notes can be long; a runaway quote must not eat the file)
MAX_FIELD = 10 * 1024 * 1024


class DeliveryMissing(ArkivError):
    """No delivery for the period is in the inbox (yet): a system owner's matter, worth a retry later."""


def delivery_folder(inbox: Path, period: str) -> Path:
    return inbox / period


def check_delivery(folder: Path, system: str) -> dict:
    """Verify the manifest against the folder; returns the manifest. ContentError on any mismatch."""
    if not folder.is_dir():
        raise DeliveryMissing(f"{system}: no delivery in {folder}; the system has not exported this period yet")
    mpath = folder / MANIFEST
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContentError(f"{system}: delivery {folder.name} has no {MANIFEST}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContentError(f"{system}: {folder.name}/{MANIFEST} is not UTF-8 JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise ContentError(f"{system}: {folder.name}/{MANIFEST} must be an object with a 'files' list")
    problems: list[str] = []
    listed: set[str] = set()
    root = folder.resolve()
    for entry in manifest["files"]:
        rel = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or not rel or rel.startswith("/") or ".." in Path(rel).parts:
            problems.append(f"manifest entry {entry!r:.80}: needs a relative 'path' inside the delivery")
            continue
        listed.add(rel)
        path = root / rel
        if not path.is_file() or path.is_symlink():
            problems.append(f"{rel}: listed in the manifest but not in the delivery")
            continue
        digest, size = sha256_file(path)
        if size != entry.get("size"):
            problems.append(f"{rel}: size {size} differs from the manifest's {entry.get('size')}")
        elif digest != entry.get("sha256"):
            problems.append(f"{rel}: SHA-256 differs from the manifest (changed or damaged in transfer)")
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            problems.append(f"{rel}: links are not accepted in a delivery")
        elif path.is_file() and rel != MANIFEST and rel not in listed:
            problems.append(f"{rel}: in the delivery but not listed in the manifest")
    if problems:
        raise ContentError(f"{system}: delivery {folder.name} does not match its manifest", problems)
    return manifest


class FileExportSource(RowSource):
    """Rows from one verified delivery folder, read with the system's declared encoding and dialect."""

    def __init__(self, system: System, folder: Path):
        if system.file_export is None:
            raise ValueError(f"{system.name} is not a file-export system")
        self.system, self.folder, self.fmt = system, folder.resolve(), system.file_export

    def files_root(self, table: Table) -> Path | None:
        return self.folder

    def convert(self, column_type: str, value: object) -> object:
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return _parse_text(column_type, value, self.fmt)
        return CONVERTERS[column_type](value)

    def chunks(self, table: Table) -> Iterator[Sequence[Mapping[str, object]]]:
        path = self.folder / (table.file or "")
        if not table.file or not path.is_file():
            raise ContentError(f"{self.system.name}: delivery {self.folder.name} has no file {table.file!r} "
                               f"for table {table.name}")
        reader = {"csv": _read_csv, "jsonl": _read_jsonl, "xml": _read_xml}[self.fmt.format]
        chunk: list[Mapping[str, object]] = []
        for row in reader(path, table, self.fmt):
            chunk.append(row)
            if len(chunk) >= self.system.batch_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


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


def _text(path: Path, fmt: FileExport) -> io.TextIOWrapper:
    # errors="strict": a byte that is not valid in the declared encoding stops the read.
    return io.TextIOWrapper(open(path, "rb"), encoding=fmt.encoding, errors="strict", newline="")  # noqa: SIM115


def _check_columns(found: Sequence[str], table: Table, where: str) -> None:
    unknown = [c for c in found if c not in table.column_names]
    missing = [c for c in table.column_names if c not in found]
    if unknown or missing:
        raise ContentError(f"{where}: columns do not match the declaration",
                           [f"unknown column {c!r}" for c in unknown] + [f"missing column {c!r}" for c in missing])


def _decode_error(where: str, fmt: FileExport, exc: UnicodeDecodeError) -> ContentError:
    return ContentError(f"{where}: not valid {fmt.encoding} (byte 0x{exc.object[exc.start]:02X} cannot be decoded); "
                        f"the file is not in its declared encoding")


def _read_csv(path: Path, table: Table, fmt: FileExport) -> Iterator[Mapping[str, object]]:
    where = f"{path.parent.name}/{path.name}"
    csv.field_size_limit(MAX_FIELD)
    with _text(path, fmt) as f:
        reader = csv.reader(f, delimiter=fmt.delimiter, quotechar=fmt.quotechar, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise ContentError(f"{where}: empty file (no header row)")
            if header and header[0].startswith(codecs.BOM_UTF8.decode("utf-8")):
                raise ContentError(f"{where}: starts with a byte-order mark, but the declared encoding is "
                                   f"{fmt.encoding}; declare utf-8-sig")
            _check_columns(header, table, where)
            for fields in reader:
                if not fields:
                    continue  # a blank line (trailing CRLF)
                if len(fields) != len(header):
                    raise ContentError(f"{where}: line {reader.line_num}: {len(fields)} fields, "
                                       f"the header has {len(header)}")
                yield {**dict(zip(header, fields, strict=True)), WHERE: f"{where}: line {reader.line_num}"}
        except UnicodeDecodeError as exc:
            raise _decode_error(where, fmt, exc) from None
        except csv.Error as exc:
            raise ContentError(f"{where}: line {reader.line_num}: not valid CSV ({exc})") from None


def _read_jsonl(path: Path, table: Table, fmt: FileExport) -> Iterator[Mapping[str, object]]:
    where = f"{path.parent.name}/{path.name}"
    with _text(path, fmt) as f:
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ContentError(f"{where}: line {n}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise ContentError(f"{where}: line {n}: expected a JSON object")
                unknown = [k for k in row if k not in table.column_names]
                if unknown:
                    raise ContentError(f"{where}: line {n}: unknown column {unknown[0]!r}")
                yield {**{c: _jsonl_value(row.get(c)) for c in table.column_names}, WHERE: f"{where}: line {n}"}
        except UnicodeDecodeError as exc:
            raise _decode_error(where, fmt, exc) from None


def _jsonl_value(v: object) -> object:
    # JSON numbers stay numbers; everything else is parsed as text by the column's type.
    return v if v is None or isinstance(v, bool | int | float) else str(v)


def _read_xml(path: Path, table: Table, fmt: FileExport) -> Iterator[Mapping[str, object]]:
    where = f"{path.parent.name}/{path.name}"
    with open(path, "rb") as f:
        head = f.read(4096)
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        raise ContentError(f"{where}: DOCTYPE/ENTITY declarations are not accepted")
    declared = _xml_declared_encoding(head)
    if declared:
        try:
            codecs.lookup(declared)
        except LookupError:
            raise ContentError(f"{where}: the XML declares encoding {declared!r}, which is not a known "
                               f"encoding; the system declares {fmt.encoding!r}") from None
    if declared and codecs.lookup(declared).name != codecs.lookup(fmt.encoding.replace("-sig", "")).name:
        raise ContentError(f"{where}: the XML declares encoding {declared!r}, the system declares {fmt.encoding!r}")
    columns = set(table.column_names)
    try:
        for _, el in etree.iterparse(str(path), events=("end",), tag="row", resolve_entities=False,
                                     no_network=True, load_dtd=False, huge_tree=False,
                                     encoding=None if declared else fmt.encoding):
            row: dict[str, object] = {}
            for child in el:
                if not isinstance(child.tag, str):
                    continue
                name = etree.QName(child).localname
                if name not in columns:
                    raise ContentError(f"{where}: line {child.sourceline}: unknown column {name!r}")
                if len(child):
                    raise ContentError(f"{where}: line {child.sourceline}: column {name!r} has nested elements")
                row[name] = child.text if child.text is not None and child.text.strip() != "" else None
            line = el.sourceline
            el.clear()
            yield {**{c: row.get(c) for c in table.column_names}, WHERE: f"{where}: line {line}"}
    except etree.XMLSyntaxError as exc:
        raise ContentError(f"{where}: not well-formed XML in {fmt.encoding} ({exc.msg}, line {exc.lineno})") from None


def _xml_declared_encoding(head: bytes) -> str | None:
    if not head.startswith(b"<?xml"):
        return None
    decl = head.split(b"?>", 1)[0].decode("ascii", "replace")
    for quote in ('"', "'"):
        marker = f"encoding={quote}"
        if marker in decl:
            return decl.split(marker, 1)[1].split(quote, 1)[0]
    return None
