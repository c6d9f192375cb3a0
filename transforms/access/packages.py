"""Reading stored packages for access: one streaming pass to index or verify, ranged reads to serve.

A SIP in the mellanarkiv is a TAR (or a ZIP, when a prepared system delivered one; see
:func:`scan_tar`); a document inside it is served by seeking to the member's
data offset (found once, when the package is indexed) and copying exactly its size — through
the storage's ``open(key)``, never unpacked to disk and never read whole. A package in the
slutarkiv is an OCFL object whose files are plain files, located through its inventory, in a folder or a
bucket alike (:mod:`transforms.archive.ocfl`).
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

from lxml import etree

from transforms.archive import ocfl
from transforms.common.errors import StorageError
from transforms.common.safe_archive import KIND_LABELS, SNIFF_BYTES, UnsafeArchive, open_package, sniff
from transforms.common.xmltools import NS_METS, NS_XLINK, parse_bytes

if TYPE_CHECKING:
    from transforms.archive.storage import S3Storage

CHUNK = 64 * 1024
#: metadata files kept in memory during a scan (the rest are only hashed)
MAX_METADATA_BYTES = 512 * 1024 * 1024
_M = f"{{{NS_METS}}}"
_XL = f"{{{NS_XLINK}}}"


@dataclass(frozen=True)
class Member:
    """A file of a package: its path from the package root, where its bytes start in the TAR, size, SHA-256."""

    path: str
    offset: int | None
    size: int
    sha256: str


@dataclass
class Scan:
    """What one pass over a stored package found."""

    sha256: str
    size: int
    members: dict[str, Member] = field(default_factory=dict)
    metadata: dict[str, bytes] = field(default_factory=dict)  # METS and descriptive XML, by path

    def declared_checksums(self) -> dict[str, str]:
        """Path from the package root -> SHA-256 declared by the root and representation METS files."""
        out: dict[str, str] = {}
        for mets_path, data in self.metadata.items():
            if not mets_path.endswith("METS.xml"):
                continue
            base = str(PurePosixPath(mets_path).parent)
            base = "" if base == "." else base + "/"
            tree = parse_bytes(data, name=mets_path)
            for f in tree.iter(_M + "file"):
                loc = f.find(_M + "FLocat")
                if loc is not None and f.get("CHECKSUM") and loc.get(_XL + "href"):
                    out[_join(base, loc.get(_XL + "href"))] = f.get("CHECKSUM").lower()
            for ref in tree.iter(_M + "mdRef"):
                if ref.get("CHECKSUM") and ref.get(_XL + "href"):
                    out[_join(base, ref.get(_XL + "href"))] = ref.get("CHECKSUM").lower()
        return out

    def unverified(self) -> list[str]:
        """Members whose bytes differ from their METS checksum, and declared files that are missing."""
        bad = []
        for path, digest in self.declared_checksums().items():
            m = self.members.get(path)
            if m is None or m.sha256 != digest:
                bad.append(path)
        return sorted(bad)


def _join(base: str, href: str) -> str:
    parts: list[str] = []
    for p in PurePosixPath(base + href).parts:
        if p == "..":
            if parts:
                parts.pop()
        elif p != ".":
            parts.append(p)
    return "/".join(parts)


def _is_metadata(path: str) -> bool:
    return path.endswith("METS.xml") or path.startswith("metadata/descriptive/")


class _Hashing:
    """A read-through wrapper hashing everything read (the whole package in the same pass)."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.h, self.size = raw, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.h.update(data)
        self.size += len(data)
        return data


def scan_tar(stream: BinaryIO) -> Scan:
    """Read a stored SIP once from a stream: whole-package SHA-256, each member's offset and SHA-256,
    and the METS/descriptive metadata bytes. Bounded memory apart from the metadata it keeps.

    The container is what the leading bytes say (:func:`transforms.common.safe_archive.sniff`), exactly as
    at intake: a TAR is read as it streams; a ZIP (its directory is at its end) is copied to a
    temporary file while it is hashed and read through the same checked opener as at intake. A
    zip member that is stored, not compressed, gets its data offset, so it is served by ranged read
    like a tar member; a compressed one has none (see :func:`zip_member_chunks`).
    """
    src = _Hashing(stream)
    head = _read_upto(src, SNIFF_BYTES)
    kind = sniff(head)
    if kind == "tar":
        return _scan_tar_stream(_Prefixed(head, src), src)
    if kind == "zip":
        return _scan_zip_stream(head, src)
    raise StorageError(f"the stored package is {KIND_LABELS[kind]}, not a tar or zip package")


#: another name for :func:`scan_tar`, which reads every container intake stores
scan_package = scan_tar


def _read_upto(f, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        data = f.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


class _Prefixed:
    """A stream whose first bytes were already read (to sniff them): those bytes, then the rest."""

    def __init__(self, head: bytes, rest):
        self.head, self.rest = head, rest

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                data, self.head = self.head + self.rest.read(), b""
                return data
            data, self.head = self.head[:n], self.head[n:]
            return data
        return self.rest.read(n)


def _scan_tar_stream(stream, src: _Hashing) -> Scan:
    members: dict[str, Member] = {}
    metadata: dict[str, bytes] = {}
    with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[arg-type]
        for info in tar:
            if not info.isfile():
                continue
            parts = info.name.split("/", 1)
            if len(parts) != 2 or ".." in PurePosixPath(parts[1]).parts:
                continue
            rel = parts[1]
            fh = tar.extractfile(info)
            h = hashlib.sha256()
            keep = _is_metadata(rel) and info.size <= MAX_METADATA_BYTES
            buf = bytearray() if keep else None
            while chunk := fh.read(CHUNK):
                h.update(chunk)
                if buf is not None:
                    buf += chunk
            members[rel] = Member(rel, info.offset_data, info.size, h.hexdigest())
            if buf is not None:
                metadata[rel] = bytes(buf)
    while src.read(CHUNK):  # the end-of-archive blocks belong to the package's checksum too
        pass
    return Scan(src.h.hexdigest(), src.size, members, metadata)


def _scan_zip_stream(head: bytes, src: _Hashing) -> Scan:
    members: dict[str, Member] = {}
    metadata: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="arkiv-scan-") as tmp:
        copy = Path(tmp) / "package.zip"
        with open(copy, "wb") as out:
            out.write(head)
            while chunk := src.read(CHUNK):
                out.write(chunk)
        try:
            with open_package(copy, compressed=False) as reader, open(copy, "rb") as raw:
                for rel in reader.files():
                    h = hashlib.sha256()
                    keep = _is_metadata(rel) and reader.size(rel) <= MAX_METADATA_BYTES
                    buf = bytearray() if keep else None
                    with reader.open(rel) as fh:
                        while chunk := fh.read(CHUNK):
                            h.update(chunk)
                            if buf is not None:
                                buf += chunk
                    members[rel] = Member(rel, _zip_data_offset(reader, rel, raw), reader.size(rel), h.hexdigest())
                    if buf is not None:
                        metadata[rel] = bytes(buf)
        except UnsafeArchive as exc:
            raise StorageError(f"the stored zip package cannot be read: {exc}") from None
    return Scan(src.h.hexdigest(), src.size, members, metadata)


def _zip_data_offset(reader, rel: str, raw) -> int | None:
    """Where a stored (uncompressed) zip member's bytes start in the package; None when compressed."""
    info = reader.zip_info(rel)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    raw.seek(info.header_offset + 26)
    name_len, extra_len = struct.unpack("<HH", raw.read(4))
    return info.header_offset + 30 + name_len + extra_len


def zip_member_chunks(opener: Callable[[], BinaryIO], rel: str, size: int, expected_sha256: str | None = None,
                      chunk: int = CHUNK) -> Iterator[bytes]:
    """A compressed member of a stored ZIP, decompressed as it streams and checked against its SHA-256.

    ``opener`` returns the stored package's stream; a file on disk is read in place, any other
    stream is copied to a temporary file first (a zip's directory is at its end). The member is
    read through the same checked opener as at intake; a mismatch with ``expected_sha256`` raises
    :class:`StorageError` before the last chunk is given out.
    """
    f = opener()
    try:
        with contextlib.ExitStack() as stack:
            local = getattr(f, "name", None)
            if not (isinstance(local, str) and Path(local).is_file()):
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="arkiv-zip-"))
                local = str(Path(tmp) / "package.zip")
                with open(local, "wb") as out:
                    while data := f.read(chunk):
                        out.write(data)
            try:
                reader = stack.enter_context(open_package(local, compressed=False))
                if not reader.is_file(rel) or reader.size(rel) != size:
                    raise StorageError("a stored document is not where the index says; run `arkiv index`")
                fh = stack.enter_context(reader.open(rel))
                h, pending = hashlib.sha256(), b""
                while data := fh.read(chunk):
                    h.update(data)
                    if pending:
                        yield pending
                    pending = data
            except UnsafeArchive as exc:
                raise StorageError(f"a stored document cannot be read: {exc.rule}") from None
            if expected_sha256 and h.hexdigest() != expected_sha256:
                raise StorageError("a stored document no longer matches its checksum; delivery stopped "
                                   "(run the audit)")
            if pending:
                yield pending
    finally:
        f.close()


def scan_ocfl(root: Path | S3Storage, object_id: str) -> Scan:
    """The same view of an AIP in the slutarkiv, folder or bucket, from its OCFL inventory (hashes from its
    fixity block, sizes from one listing of the object, the metadata files read whole).

    A content file the inventory names but the storage lacks is left out, so :meth:`Scan.unverified`
    reports it as missing.
    """
    inv = ocfl.read_inventory(root, object_id)
    head = inv["versions"][inv["head"]]["state"]
    content_of = {d: paths[0] for d, paths in inv["manifest"].items()}
    sha256_of = {p: d for d, paths in inv.get("fixity", {}).get("sha256", {}).items() for p in paths}
    sizes = ocfl.content_sizes(root, object_id)
    members: dict[str, Member] = {}
    metadata: dict[str, bytes] = {}
    for digest, logicals in head.items():
        content = content_of[digest]
        if content not in sizes:
            continue
        for logical in logicals:
            rel = logical.split("/", 1)[1] if "/" in logical else logical
            members[rel] = Member(rel, None, sizes[content], sha256_of.get(content, ""))
            if _is_metadata(rel) and sizes[content] <= MAX_METADATA_BYTES:
                metadata[rel] = ocfl.read_small(root, object_id, content)
    return Scan(inv.get("id", ""), 0, members, metadata)


def ocfl_content(root: Path | S3Storage, object_id: str, rel: str) -> str:
    """The content path (inside the object) of ``rel``, a path from the package root, in the head version."""
    found = ocfl.head_file(ocfl.read_inventory(root, object_id), rel)
    if found is None:
        raise StorageError(f"slutarkiv: {object_id} has no file {rel}")
    return found[0]


def ocfl_file(object_root: Path, rel: str) -> Path:
    """The content file holding ``rel`` in an object of a folder slutarkiv (for tools and tests that look)."""
    return object_root / ocfl_content(object_root.parent, object_root.name, rel)


def stream_range(opener: Callable[[], BinaryIO], offset: int, size: int, expected_sha256: str | None = None,
                 chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield ``size`` bytes starting at ``offset`` of the stream ``opener`` returns, chunk by chunk.

    Seeks when the stream can (a file; an S3 body opened with a range need not); otherwise reads
    past the preceding bytes without keeping them. The bytes are hashed on the way: a mismatch with
    ``expected_sha256`` raises :class:`StorageError` before the last chunk, so a damaged document is
    never delivered as if it were whole.
    """
    f = opener()
    try:
        if offset:
            seekable = getattr(f, "seekable", lambda: False)()
            if seekable:
                f.seek(offset)
            else:
                left = offset
                while left:
                    skipped = f.read(min(chunk, left))
                    if not skipped:
                        raise StorageError("stored package ended before the document's offset")
                    left -= len(skipped)
        h, left = hashlib.sha256(), size
        pending = b""
        while left:
            data = f.read(min(chunk, left))
            if not data:
                raise StorageError("stored package ended inside a document")
            left -= len(data)
            h.update(data)
            if pending:
                yield pending
            pending = data
        if expected_sha256 and h.hexdigest() != expected_sha256:
            raise StorageError("a stored document no longer matches its checksum; delivery stopped (run the audit)")
        if pending:
            yield pending
    finally:
        f.close()


def erms_path(scan: Scan) -> str | None:
    """The package's ERMS document, named by the root METS dmdSec (None for tabular packages)."""
    data = scan.metadata.get("METS.xml")
    if data is None:
        return None
    for ref in parse_bytes(data, name="METS.xml").iter(_M + "mdRef"):
        if ref.get("OTHERMDTYPE") == "ERMS" or ref.get(_XL + "href", "").endswith("ERMS.xml"):
            return _join("", ref.get(_XL + "href"))
    return None


def parse_xml(data: bytes, name: str) -> etree._ElementTree:
    return parse_bytes(data, name=name)
