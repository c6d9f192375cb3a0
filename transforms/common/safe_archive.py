"""Open an information package (folder, ``.tar`` plain or compressed, ``.zip``) without trusting it.

A file is the container its leading bytes say (:func:`sniff`: a tar header, a zip local header,
gzip/bzip2/xz/zstd magic), never what a reader that looks elsewhere would find: ``zipfile``
looks for a zip at the END of a file, so a tar followed by a zip would be read as the zip. Its
name must agree with its bytes. A zip is read strictly from offset 0: local headers back to back
and matching the central directory, which ends at the end record, with nothing after it but its
comment; a tar may be followed by nothing but zero padding. Anything else is a polyglot or
damaged, and is refused.

A package handed to ``arkiv validate`` may come from anywhere, so every member name and type is
checked *before* anything is read or written: absolute paths, Windows drive letters and
backslashes, ``..`` components, links, device and FIFO members, duplicate names, names that
collide once case and Unicode normalisation are ignored and names that are not UTF-8 are
refused, and limits on member count, sizes (a sparse member counts as what it expands to) and
(for zip) compression ratio keep the work bounded. A refused package raises
:class:`UnsafeArchive`, naming the member (escaped by :func:`transforms.common.masking.safe_name`) and
the rule; so does any error reading a member's bytes (bad CRC, corrupt or cut-off data).

The validator does not need to extract anything: :func:`open_package` returns a
:class:`PackageReader` that lists the members and streams them (``ZipFile.open``; a tar member is
read straight from its data offset, never past its declared size). :func:`extract_package` exists
for callers that need real files; it writes only inside a fresh temporary directory that it
removes again.

Validation should cost little more than reading and hashing every byte, so the ordinary case is
read without tarfile's per-header Python work: the headers of a plain tar as our packages are
written (ustar or GNU headers, PAX ``path`` and ``size`` records, files and folders) are unpacked
from their 512-byte blocks by :func:`_scan_tar_fast`, which reads them exactly as tarfile does,
and anything else (links, devices, GNU long names, sparse members, unknown PAX records, damaged
or cut-off headers) makes the whole archive go through tarfile instead. Members of a plain tar
are read with ``pread`` into the caller's buffer; a folder is listed with ``os.scandir``.

CSIPSTR1: a package lives in one root folder; an archive must unpack to a single top-level folder,
whose name should be the package's OBJID. The reader exposes that folder as the package root and
says whether the archive had that shape (``single_root``).
"""

from __future__ import annotations

import abc
import bz2
import contextlib
import gzip
import io
import lzma
import os
import re
import shutil
import stat
import struct
import tarfile
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from transforms.common.errors import ContentError
from transforms.common.masking import safe_name

GiB = 1024**3


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what we agree to read from one package."""

    max_total_bytes: int = 64 * GiB
    max_members: int = 1_000_000
    max_member_bytes: int = 64 * GiB
    max_ratio: float = 200.0  # zip: uncompressed / compressed size, per member and overall
    max_name_bytes: int = 4096
    max_depth: int = 64


DEFAULT_LIMITS = Limits()


class UnsafeArchive(ContentError):
    """The package (or one member of it) breaks a safety rule; nothing was extracted."""

    def __init__(self, archive: str | os.PathLike, member: str | None, rule: str, detail: str = ""):
        self.archive = str(archive)
        self.member = member
        self.rule = rule
        # Archive and member names come from the delivery: escaped and masked before they are shown.
        where = f" member '{safe_name(member)}'" if member is not None else ""
        msg = f"unsafe package {safe_name(Path(self.archive).name)}:{where} {rule}"
        super().__init__(msg + (f" ({safe_name(detail)})" if detail else ""))


_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_name(archive: str | os.PathLike, raw: str, limits: Limits) -> str:
    """Return the normalised relative POSIX name of a member, or raise UnsafeArchive."""
    try:
        encoded = raw.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeArchive(archive, raw.encode("utf-8", "replace").decode(), "name is not valid UTF-8") from None
    if len(encoded) > limits.max_name_bytes:
        raise UnsafeArchive(archive, raw[:80] + "…", "name is too long", f"{len(encoded)} bytes")
    if _CONTROL.search(raw):
        raise UnsafeArchive(archive, raw, "name contains control characters")
    if "\\" in raw:
        raise UnsafeArchive(archive, raw, "name contains a backslash (Windows path)")
    if _DRIVE.match(raw):
        raise UnsafeArchive(archive, raw, "name has a Windows drive letter (absolute path)")
    if raw.startswith("/"):
        raise UnsafeArchive(archive, raw, "name is an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(archive, raw, "name has a '..' component (path traversal)")
    if not parts:
        raise UnsafeArchive(archive, raw, "name is empty")
    if len(parts) > limits.max_depth:
        raise UnsafeArchive(archive, raw, "name is nested too deeply", f"{len(parts)} levels")
    return "/".join(parts)


class _Inventory:
    """Collects checked member names, sizes and limits while an archive's index is read."""

    def __init__(self, archive: str | os.PathLike, limits: Limits):
        self.archive = archive
        self.limits = limits
        self.files: dict[str, int] = {}  # name -> size
        self.offsets: dict[str, int] | None = None  # tar: name -> data offset (-1: read via tarfile)
        self.dirs: set[str] = set()
        self.total = 0
        self.count = 0

    def add(self, raw: str, *, is_dir: bool, size: int = 0) -> str:
        self.count += 1
        if self.count > self.limits.max_members:
            raise UnsafeArchive(self.archive, None, "too many members", f"limit {self.limits.max_members}")
        name = _check_name(self.archive, raw, self.limits)
        if name in self.files or (not is_dir and name in self.dirs):
            raise UnsafeArchive(self.archive, raw, "duplicate member name")
        if is_dir:
            self.dirs.add(name)
            return name
        if size < 0 or size > self.limits.max_member_bytes:
            raise UnsafeArchive(self.archive, raw, "member is too large",
                                f"{size} bytes, limit {self.limits.max_member_bytes}")
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise UnsafeArchive(self.archive, raw, "package is too large",
                                f"over {self.limits.max_total_bytes} bytes uncompressed")
        self.files[name] = size
        return name

    def finish(self) -> None:
        # Every parent of a file is a folder; a file may not also be used as a folder. A parent
        # walked up from an earlier file had no file above it, so the walk stops there.
        walked: set[str] = set()
        for name in list(self.files):
            parent = name.rpartition("/")[0]
            while parent and parent not in walked:
                if parent in self.files:
                    raise UnsafeArchive(self.archive, name, "a member is both a file and a folder", parent)
                self.dirs.add(parent)
                walked.add(parent)
                parent = parent.rpartition("/")[0]
        # Two names that one file system (macOS, Windows) or one normalisation would store as
        # one file: which of them a reader gets would depend on where the package is unpacked.
        seen: dict[str, str] = {}
        for name in [*self.files, *self.dirs]:
            key = unicodedata.normalize("NFC", name).casefold()
            other = seen.setdefault(key, name)
            if other != name:
                raise UnsafeArchive(self.archive, name, "names collide (they differ only in case or "
                                    "Unicode normalisation)", other)


class PackageReader(abc.ABC):
    """Read-only view of a package: member listing and streaming, paths relative to its root.

    ``root`` is the package root folder's name (CSIPSTR1/2); ``single_root`` is False when an
    archive did not unpack to exactly one top-level folder (then the archive's top level is used).
    """

    source: Path
    root: str
    single_root: bool

    def __init__(self, source: Path, inventory: _Inventory, *, prefix: str | None, root: str):
        self.source = source
        self.root = root
        self.single_root = prefix is not None or not inventory.files or source.is_dir()
        self._prefix = prefix
        cut = len(prefix) + 1 if prefix else 0
        self.dirs = {d[cut:] for d in inventory.dirs if not prefix or d.startswith(prefix + "/")}
        self.sizes: dict[str, int] = {}
        self._offsets: dict[str, int] = {}  # tar only: rel -> data offset
        self._sorted: list[str] | None = None  # files(), sorted once
        self._children: dict[str, list[str]] | None = None  # listdir(), indexed once
        # The inventory is consumed member by member, so its full names are freed while the
        # relative ones are made: a large package never holds both sets of names at once.
        files, offsets = inventory.files, inventory.offsets
        while files:
            name, size = files.popitem()
            rel = name[cut:] if cut else name
            self.sizes[rel] = size
            if offsets is not None:
                self._offsets[rel] = offsets.pop(name)

    def _member(self, rel: str) -> str:
        """The member's name in the archive (or path in the folder), root folder included."""
        return f"{self._prefix}/{rel}" if self._prefix else rel

    # -- listing -------------------------------------------------------------------------
    def files(self) -> list[str]:
        """Every regular file, as a relative POSIX path, sorted."""
        if self._sorted is None:
            self._sorted = sorted(self.sizes)
        return list(self._sorted)

    def is_file(self, rel: str) -> bool:
        return rel in self.sizes

    def is_dir(self, rel: str) -> bool:
        return rel in ("", ".") or rel in self.dirs

    def size(self, rel: str) -> int:
        return self.sizes[rel]

    def listdir(self, rel: str = "") -> list[str]:
        """Names directly inside folder ``rel`` (files and folders), sorted."""
        if self._children is None:
            self._children = self._index_children()
        return list(self._children.get("" if rel == "." else rel, ()))

    def _index_children(self) -> dict[str, list[str]]:
        """Folder -> the sorted names directly inside it, every ancestor of every member included."""
        children: dict[str, set[str]] = {}
        seen: set[str] = set()
        for path in [*self.sizes, *self.dirs]:
            while path and path not in seen:
                seen.add(path)
                parent, _, name = path.rpartition("/")
                children.setdefault(parent, set()).add(name)
                path = parent
        return {folder: sorted(names) for folder, names in children.items()}

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    # -- reading -------------------------------------------------------------------------
    def open(self, rel: str) -> _Guarded:
        """A binary stream of one member (never the whole file in memory); use it in a ``with`` block."""
        if rel not in self.sizes:
            raise FileNotFoundError(rel)
        try:
            fh = self._open(rel)
        except Exception as exc:
            raise _unreadable(self.source, rel, exc) from None
        return _Guarded(fh, self.source, rel)

    def read_bytes(self, rel: str, limit: int) -> bytes:
        """The member's content, refusing members larger than ``limit`` bytes."""
        if self.sizes.get(rel, 0) > limit:
            raise UnsafeArchive(self.source, rel, "member is too large to read into memory", f"limit {limit}")
        # Read what the member is, chunk by chunk, never more than limit + 1: a single
        # read(limit + 1) makes some streams allocate (and touch) the whole limit up front.
        parts, total = [], 0
        with self.open(rel) as fh:
            while total <= limit:
                chunk = fh.read(min(1 << 20, limit + 1 - total))
                if not chunk:
                    break
                parts.append(chunk)
                total += len(chunk)
        if total > limit:
            raise UnsafeArchive(self.source, rel, "member is larger than its header says")
        return b"".join(parts)

    @abc.abstractmethod
    def _open(self, rel: str):
        """A readable binary stream of one listed member (each kind of package implements it)."""

    def close(self) -> None:  # noqa: B027 - a folder holds no handle; archives override it
        """Release the underlying archive handle."""

    def __enter__(self) -> PackageReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _unreadable(source: Path, rel: str, exc: BaseException) -> BaseException:
    """What a failed read of member ``rel`` becomes: an UnsafeArchive naming the member and the rule.

    Whatever a container or decompressor raises on damaged bytes is a fact about the delivery,
    not a fault of ours. An OSError with an errno (disk, permissions) is the system's and is
    returned as it is, to be retried or reported as such.
    """
    if isinstance(exc, UnsafeArchive):
        return exc
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc
    if isinstance(exc, zipfile.BadZipFile):
        text = str(exc)
        rule = ("bad CRC-32 (the member's bytes are damaged)" if "CRC" in text else
                "its local header does not match the central directory" if "differ" in text or "header" in text
                else "damaged zip member")
    elif isinstance(exc, (zlib.error, lzma.LZMAError, OSError)):
        rule = "corrupt compressed data"
    elif isinstance(exc, EOFError):
        rule = "member is truncated (its data ends early)"
    elif isinstance(exc, NotImplementedError):
        rule = "unsupported compression method"
    elif isinstance(exc, MemoryError):
        rule = "member needs more memory than allowed to read"
    elif isinstance(exc, tarfile.TarError):
        rule = "damaged tar member"
    else:
        rule = f"member cannot be read ({type(exc).__name__})"
    return UnsafeArchive(source, rel, rule)


class _Guarded:
    """A member's stream whose read errors name the member and the rule (see :func:`_unreadable`)."""

    def __init__(self, fh, source: Path, rel: str):
        self._fh, self._source, self._rel = fh, source, rel

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:
            raise _unreadable(self._source, self._rel, exc) from None

    def read(self, n: int = -1) -> bytes:
        try:
            return self._fh.read(n)
        except Exception as exc:
            raise _unreadable(self._source, self._rel, exc) from None

    def read1(self, n: int = -1) -> bytes:
        return self._call(getattr(self._fh, "read1", self._fh.read), n)

    def readinto(self, buffer) -> int:
        try:
            return self._fh.readinto(buffer)
        except Exception as exc:
            raise _unreadable(self._source, self._rel, exc) from None

    def readline(self, limit: int = -1) -> bytes:
        return self._call(self._fh.readline, limit)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        return self._call(self._fh.seek, pos, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._fh.seekable()

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _DirReader(PackageReader):
    def __init__(self, source, inventory, **kw):
        super().__init__(source, inventory, **kw)
        self._base = os.fspath(source)

    def _open(self, rel: str):
        # O_NOFOLLOW: a link swapped in after the scan is refused rather than followed.
        fd = os.open(os.path.join(self._base, self._member(rel)), _OPEN_FLAGS)
        return io.FileIO(fd, "rb")  # unbuffered: reads go straight into the caller's buffer


_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)


class _MemberFile(io.RawIOBase):
    """Exactly ``size`` bytes of an open archive stream, starting at ``offset``.

    Reads never go past the member's end, and an archive that ends inside the member (it was
    cut after the scan) raises :class:`UnsafeArchive` instead of returning short data. With a
    file descriptor ``fd`` (a plain tar on disk) each read is one ``preadv`` at its offset
    straight into the caller's buffer; otherwise (a decompressed stream) each read seeks
    first. Either way several members may be open at once over the same archive. Closing it
    leaves the archive open (the reader owns it).
    """

    def __init__(self, fileobj, offset: int, size: int, source: Path, name: str, fd: int | None = None):
        super().__init__()
        self._f, self._start, self._size = fileobj, offset, size
        self._source, self._name = source, name
        self._fd = fd if fd is not None and _HAVE_PREADV else None
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence!r}")
        if base + pos < 0:
            raise ValueError("negative seek position")
        self._pos = base + pos
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        n = min(len(view), self._size - self._pos)
        if n <= 0:
            return 0
        if n < len(view):
            view = view[:n]
        at, got = self._start + self._pos, 0
        while got < n:
            if self._fd is not None:
                k = os.preadv(self._fd, [view[got:] if got else view], at + got)
            else:
                self._f.seek(at + got)
                k = self._f.readinto(view[got:])
            if not k:
                raise self._truncated()
            got += k
        self._pos += n
        return n

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._pos
        n = left if n is None or n < 0 or n > left else n
        if n <= 0:
            return b""
        if self._fd is None:
            self._f.seek(self._start + self._pos)
            data = self._f.read(n)
        else:
            data = os.pread(self._fd, n, self._start + self._pos)
            while 0 < len(data) < n:  # a short read from the kernel: ask for the rest
                more = os.pread(self._fd, n - len(data), self._start + self._pos + len(data))
                if not more:
                    break
                data += more
        if len(data) < n:
            raise self._truncated()
        self._pos += n
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readline(self, limit: int = -1) -> bytes:
        start, parts, total = self._pos, [], 0
        while limit < 0 or total < limit:
            chunk = self.read(8192 if limit < 0 else min(8192, limit - total))
            if not chunk:
                break
            end = chunk.find(b"\n")
            if end >= 0:
                parts.append(chunk[:end + 1])
                total += end + 1
                break
            parts.append(chunk)
            total += len(chunk)
        self._pos = start + total  # what was read past the line is read again next time
        return b"".join(parts)

    def _truncated(self) -> UnsafeArchive:
        return UnsafeArchive(self._source, self._name, "member is truncated (the archive ends inside it)")


_HAVE_PREADV = hasattr(os, "preadv")


class _TarReader(PackageReader):
    """Reads members at their data offsets; only the (rare) sparse members go through tarfile.

    ``fileobj`` is the archive stream (the file itself for a plain tar, the decompressed stream
    otherwise); ``tf`` is the TarFile when tarfile scanned the archive, None after the fast scan.
    """

    def __init__(self, source, inventory, fileobj, tf: tarfile.TarFile | None,
                 sparse: dict[str, tarfile.TarInfo], *, plain: bool, **kw):
        super().__init__(source, inventory, **kw)
        self._file = fileobj
        self._fd = fileobj.fileno() if plain else None  # a compressed stream's fileno is the compressed file's
        self._tf = tf
        self._sparse = sparse  # full name -> TarInfo, for members whose data is not one run

    def _open(self, rel: str):
        offset = self._offsets[rel]
        if offset < 0:
            fh = self._tf.extractfile(self._sparse[self._member(rel)])
            if fh is None:  # pragma: no cover - only regular members are listed
                raise FileNotFoundError(rel)
            return fh
        raw = _MemberFile(self._file, offset, self.sizes[rel], self.source, rel, self._fd)
        # A plain tar's member reads each request with one pread (no buffer in between); a
        # decompressed stream seeks for every read, so small reads are buffered.
        return raw if self._fd is not None else io.BufferedReader(raw, 64 * 1024)

    def close(self) -> None:
        if self._tf is not None:
            self._tf.close()
        else:
            self._file.close()


class _ZipReader(PackageReader):
    def __init__(self, source, inventory, zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], **kw):
        super().__init__(source, inventory, **kw)
        self._zf = zf
        self._members = members

    def zip_info(self, rel: str) -> zipfile.ZipInfo:
        """The member's central directory entry (where it starts, how it is compressed)."""
        return self._members[self._member(rel)]

    def _open(self, rel: str):
        # ZipExtFile stops at the declared file_size and checks the CRC, so a member cannot
        # inflate past what its (ratio-checked) header promised.
        return self._zf.open(self._members[self._member(rel)])

    def close(self) -> None:
        self._zf.close()


def _scan_dir(path: Path, limits: Limits) -> _Inventory:
    """Check every entry of a folder package, depth first, each folder's entries in name order."""
    inv = _Inventory(path, limits)
    pending = [(os.fspath(path), "")]
    while pending:
        folder, prefix = pending.pop()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        below = []
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_symlink():
                raise UnsafeArchive(path, rel, "symbolic link (links are not allowed in a package)")
            if entry.is_dir(follow_symlinks=False):
                inv.add(rel, is_dir=True)
                below.append((entry.path, rel + "/"))
            elif entry.is_file(follow_symlinks=False):
                inv.add(rel, is_dir=False, size=entry.stat(follow_symlinks=False).st_size)
            else:
                raise UnsafeArchive(path, rel, "special file (device, FIFO or socket)")
        pending.extend(reversed(below))
    inv.finish()
    return inv


class _Unusual(Exception):
    """Something the fast tar scan leaves to tarfile (see :func:`_scan_tar_fast`)."""


_BLOCK = 512
_ZEROS = bytes(_BLOCK)
_USTAR = (b"ustar\x0000", b"ustar  \x00")  # POSIX ustar and GNU magic with version
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")
#: pax keywords the fast scan reads (path, size) or may ignore (they change nothing we check)
_PAX_KNOWN = frozenset({b"path", b"size", b"mtime", b"atime", b"ctime", b"uid", b"gid", b"uname", b"gname"})
_PAX_MAX = 64 * 1024


def _octal(field: bytes) -> int:
    """A header's number field, when tarfile would read it as the same plain octal number.

    Digits up to the first NUL, with spaces around them; base-256 numbers, signs, other
    whitespace or anything else tarfile might read differently (or refuse) raise _Unusual.
    """
    if field[0] in (0x80, 0xFF):
        raise _Unusual
    end = field.find(b"\0")
    digits = (field if end < 0 else field[:end]).strip(b" ")
    if digits.strip(b"01234567"):
        raise _Unusual
    return int(digits, 8) if digits else 0


def _cstr(field: bytes) -> str:
    end = field.find(b"\0")
    return (field if end < 0 else field[:end]).decode("utf-8", "surrogateescape")


def _fast_header(buf: bytes, plain_fields: set[bytes]) -> tuple[bytes, str, int]:
    """(type, name, size) of one ordinary header, read exactly as tarfile reads it, or _Unusual.

    Ordinary: ustar or GNU magic, a regular file, a folder or a pax extended header, its
    checksum right (unsigned), every number plain octal. ``plain_fields`` remembers number
    fields already checked (mode, owner, times and device numbers repeat from member to member).
    """
    kind = buf[156:157]
    if kind not in (b"0", b"\0", b"5", b"x") or buf[257:265] not in _USTAR:
        raise _Unusual
    if _octal(buf[148:156]) != sum(buf) - sum(buf[148:156]) + 256:
        raise _Unusual  # a signed-sum checksum or a damaged header: tarfile decides
    fields = buf[100:124] + buf[136:148] + buf[329:345]
    if fields not in plain_fields:
        for a, b in ((100, 108), (108, 116), (116, 124), (136, 148), (329, 337), (337, 345)):
            _octal(buf[a:b])
        if len(plain_fields) < 4096:
            plain_fields.add(fields)
    size = _octal(buf[124:136])
    name = _cstr(buf[:100])
    if kind == b"\0" and name.endswith("/"):  # a v7 folder
        kind = b"5"
    if kind == b"5":
        name = name.rstrip("/")
    if buf[345] != 0:
        name = _cstr(buf[345:500]) + "/" + name
        if kind == b"5":
            name = name.rstrip("/")
    return kind, name, size


def _fast_pax(data: bytes, size: int) -> tuple[str | None, int | None]:
    """The path and size a pax extended header sets, or _Unusual for anything else in it.

    Its records must cover exactly ``size`` bytes, each "<length> <keyword>=<value>\\n" with a
    keyword the fast scan knows, and the padding after them must be zeros.
    """
    if b"hdrcharset=" in data or data[size:].strip(b"\0"):
        raise _Unusual
    path = length = None
    pos = 0
    while pos < size:
        m = _PAX_RECORD.match(data, pos, size)
        if m is None:
            raise _Unusual
        if len(m[1]) > 19:
            raise _Unusual
        end = pos + int(m[1])
        if m.end() > end - 1 or end > size or data[end - 1] != 0x0A or m[2] not in _PAX_KNOWN:
            raise _Unusual
        value = data[m.end():end - 1]
        if m[2] == b"path":
            path = value.decode("utf-8", "surrogateescape")
        elif m[2] == b"size":
            if not value.isdigit() or len(value) > 19:
                raise _Unusual
            length = int(value)
        pos = end
    return path, length


def _scan_tar_fast(path: Path, fd: int, limits: Limits) -> tuple[_Inventory, int]:
    """Check every header of a plain tar without tarfile; (inventory, where the end blocks start).

    Ordinary headers (see :func:`_fast_header`; PAX long names and sizes included) are
    unpacked straight from their 512-byte blocks and give exactly the member names, types,
    sizes and data offsets tarfile would; each goes through the same :class:`_Inventory`
    checks in the same order. Anything else (links, devices, GNU long names and sparse
    members, global pax headers, damaged or cut-off headers, data past the file's end) raises
    _Unusual: the caller then scans the whole archive with tarfile, whose answer is the rule.
    """
    inv = _Inventory(path, limits)
    inv.offsets = {}
    file_size = os.fstat(fd).st_size
    plain_fields: set[bytes] = set()
    offset = 0
    while True:
        if offset > file_size:
            raise _Unusual  # tarfile: "unexpected end of data"
        buf = os.pread(fd, _BLOCK, offset)
        if buf == _ZEROS:
            inv.finish()
            return inv, offset
        if len(buf) < _BLOCK:
            raise _Unusual
        kind, name, size = _fast_header(buf, plain_fields)
        data = offset + _BLOCK
        if kind == b"x":
            padded = -(-size // _BLOCK) * _BLOCK
            if size > _PAX_MAX or data + padded + _BLOCK > file_size:
                raise _Unusual
            chunk = os.pread(fd, padded + _BLOCK, data)
            if len(chunk) < padded + _BLOCK:
                raise _Unusual
            pax_path, pax_size = _fast_pax(chunk[:padded], size)
            kind, name, size = _fast_header(chunk[padded:], plain_fields)
            if kind == b"x":
                raise _Unusual
            if pax_path is not None:
                name = pax_path.rstrip("/")
            if pax_size is not None:
                size = pax_size
            data += padded + _BLOCK
        if kind == b"5":
            if size:
                raise _Unusual  # tarfile would not skip a folder's data
            inv.add(name, is_dir=True)
            offset = data
        else:
            inv.offsets[inv.add(name, is_dir=False, size=size)] = data
            offset = data + -(-size // _BLOCK) * _BLOCK


def _scan_tar(path: Path, tf: tarfile.TarFile, limits: Limits) -> tuple[_Inventory, dict[str, tarfile.TarInfo]]:
    """Check every header; index regular members by name as (size, data offset) only.

    A TarInfo costs about a kilobyte (more with PAX headers), so none is kept: ``tf.members``
    is emptied after each header and the inventory holds the name, size and data offset
    (``offset_data``, which lies after any PAX or GNU long-name headers). Sparse members, whose
    data is not one run of bytes, keep their TarInfo and are read through tarfile.
    """
    inv = _Inventory(path, limits)
    inv.offsets = {}
    sparse: dict[str, tarfile.TarInfo] = {}
    # One header at a time (not getmembers()), so the member-count limit stops a huge index early.
    while (ti := tf.next()) is not None:
        tf.members.clear()
        if ti.issym() or ti.islnk():
            raise UnsafeArchive(path, ti.name, "link member (symlinks and hardlinks are not allowed)",
                                f"-> {ti.linkname}")
        if ti.ischr() or ti.isblk() or ti.isfifo():
            raise UnsafeArchive(path, ti.name, "device or FIFO member")
        if ti.isdir():
            inv.add(ti.name, is_dir=True)
        elif ti.isreg():
            name = inv.add(ti.name, is_dir=False, size=ti.size)
            if ti.sparse is not None:
                # ti.size is what the member expands to (counted above); a map that places data
                # outside it, or more runs than bytes, is not a sparse file but a trick.
                if len(ti.sparse) > max(ti.size, 1) or any(
                        off < 0 or n < 0 or off + n > ti.size for off, n in ti.sparse):
                    raise UnsafeArchive(path, ti.name, "sparse member's map lies outside its size")
                sparse[name] = ti
                inv.offsets[name] = -1
            else:
                inv.offsets[name] = ti.offset_data
        else:
            raise UnsafeArchive(path, ti.name, "unsupported member type", repr(ti.type))
    inv.finish()
    return inv, sparse


def _zip_raw_name(info: zipfile.ZipInfo) -> bytes:
    """The name's bytes as the central directory holds them (zipfile cuts ``filename`` at a NUL)."""
    return info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")


def _zip_name(info: zipfile.ZipInfo, path: Path) -> str:
    if info.flag_bits & 0x800:
        return info.orig_filename
    # Without the UTF-8 flag, zipfile decoded the name as CP437; many tools write UTF-8
    # without setting the flag, so accept the bytes if they are valid UTF-8 (ASCII included).
    raw = _zip_raw_name(info)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeArchive(path, info.filename, "name is not valid UTF-8") from None


_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def _scan_zip(path: Path, zf: zipfile.ZipFile, limits: Limits) -> tuple[_Inventory, dict[str, zipfile.ZipInfo]]:
    inv = _Inventory(path, limits)
    members: dict[str, zipfile.ZipInfo] = {}
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise UnsafeArchive(path, None, "too many members", f"{len(infos)}, limit {limits.max_members}")
    compressed_total = 0
    for info in infos:
        name = _zip_name(info, path)
        mode = (info.external_attr >> 16) & 0xFFFF
        if info.create_system == 3 and mode:  # Unix attributes present
            if stat.S_ISLNK(mode):
                raise UnsafeArchive(path, name, "link member (symlinks are not allowed)")
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                raise UnsafeArchive(path, name, "device or FIFO member")
        if info.flag_bits & 0x1:
            raise UnsafeArchive(path, name, "encrypted member")
        if info.compress_type not in _ZIP_METHODS:
            raise UnsafeArchive(path, name, "unsupported compression method",
                                f"method {info.compress_type}; use stored or deflate")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise UnsafeArchive(path, name, "stored member's sizes disagree",
                                f"{info.file_size} bytes declared, {info.compress_size} stored")
        if name.endswith("/"):
            inv.add(name, is_dir=True)
            continue
        if info.file_size > 0:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_ratio:
                raise UnsafeArchive(path, name, "compression ratio too high (zip bomb?)",
                                    f"{ratio:.0f}:1, limit {limits.max_ratio:.0f}:1")
        compressed_total += info.compress_size
        members[inv.add(name, is_dir=False, size=info.file_size)] = info
    if inv.total and inv.total / max(compressed_total, 1) > limits.max_ratio:
        raise UnsafeArchive(path, None, "overall compression ratio too high (zip bomb?)")
    inv.finish()
    return inv, members


def _package_root(inv: _Inventory) -> str | None:
    """The single top-level folder that holds everything, or None (CSIPSTR1)."""
    tops = {n.split("/", 1)[0] for n in list(inv.files) + list(inv.dirs)}
    if len(tops) == 1:
        top = next(iter(tops))
        if top in inv.dirs and top not in inv.files:
            return top
    return None


# --- what a file is: its leading bytes, and the name that must agree with them ------------------

#: container kinds as :func:`sniff` names them, for messages
KIND_LABELS = {"tar": "a tar archive", "zip": "a zip archive", "gzip": "gzip-compressed data",
               "bzip2": "bzip2-compressed data", "xz": "xz-compressed data", "zstd": "zstd-compressed data",
               "unknown": "no known container"}
#: the compressed kinds a tar may come in
COMPRESSED = ("gzip", "bzip2", "xz", "zstd")
_NAME_KINDS = ((".tar.gz", "gzip"), (".tgz", "gzip"), (".tar.bz2", "bzip2"), (".tbz2", "bzip2"),
               (".tbz", "bzip2"), (".tar.xz", "xz"), (".txz", "xz"), (".tar.zst", "zstd"), (".tzst", "zstd"),
               (".gz", "gzip"), (".bz2", "bzip2"), (".xz", "xz"), (".zst", "zstd"),
               (".tar", "tar"), (".zip", "zip"))
_TAR_MODES = {"tar": "r:", "gzip": "r:gz", "bzip2": "r:bz2", "xz": "r:xz"}
SNIFF_BYTES = 512


def _tar_header(block: bytes) -> bool:
    """A plausible tar header: its checksum field matches the block (ustar, GNU, pax and v7 alike)."""
    if len(block) < 512 or not block.strip(b"\0"):
        return False
    field = block[148:156].replace(b"\0", b" ").strip()
    if not field or any(c not in b"01234567" for c in field):
        return False
    stored = int(field, 8)
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:512])
    signed = unsigned - sum(2 * b for b in block[:148] + block[156:512] if b > 127)
    return stored in (unsigned, signed)


def sniff(head: bytes) -> str:
    """The container kind the leading bytes say: tar, zip, gzip, bzip2, xz, zstd or unknown.

    ``head`` should be the first :data:`SNIFF_BYTES` bytes (a tar header is one 512-byte block).
    A zip starts with a local file header, or is an empty zip made of its end record alone.
    """
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if _tar_header(head[:512]):
        return "tar"
    return "unknown"


def name_kind(name: str) -> str | None:
    """The container kind a file name's suffix promises (None: the name promises nothing)."""
    low = name.lower()
    return next((kind for suffix, kind in _NAME_KINDS if low.endswith(suffix)), None)


def container_kind(path: str | os.PathLike) -> str:
    """The kind of container a file is, by its leading bytes (see :func:`sniff`)."""
    with open(path, "rb") as fh:
        return sniff(fh.read(SNIFF_BYTES))


def check_container(path: str | os.PathLike, kind: str | None = None) -> str:
    """The file's kind by its bytes; raises UnsafeArchive when its name promises another kind."""
    kind = kind or container_kind(path)
    said = name_kind(Path(path).name)
    if said is not None and said != kind:
        raise UnsafeArchive(path, None, "the file name and its bytes disagree",
                            f"the name says {KIND_LABELS[said]}, the bytes are {KIND_LABELS[kind]}")
    return kind


def _check_tar_end(src: Path, f, end: int, compressed: bool) -> None:
    """Nothing but zero padding may follow the tar's last member (no second archive, no hidden data).

    ``f`` is the archive stream, ``end`` where the scan found the end-of-archive block.
    """
    if not compressed and end > os.fstat(f.fileno()).st_size:
        raise UnsafeArchive(src, None, "the archive is truncated (a member's data runs past its end)")
    if f.seek(end) < end:
        raise UnsafeArchive(src, None, "the archive is truncated (a member's data runs past its end)")
    if f.read(512) != bytes(512):
        # tarfile stops quietly at the end of the file too: without the end-of-archive block
        # nothing tells a whole archive from one cut short after a member.
        raise UnsafeArchive(src, None, "the archive has no end-of-archive block (it may be cut short)")
    while chunk := f.read(1 << 20):
        if chunk.strip(b"\0"):
            raise UnsafeArchive(src, None, "data after the tar's end (a second archive, hidden data or a "
                                "damaged header); such a file is never read as a package")


def _zip_end(src: Path, fh, size: int) -> tuple[int, int, int]:
    """(central directory offset, its size, where it must end) from the end record, which must be last."""
    tail_len = min(size, 22 + 0xFFFF)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    i = tail.rfind(b"PK\x05\x06")
    while i >= 0:
        if len(tail) - i >= 22:
            _, disk, cd_disk, _, _, cd_size, cd_off, comment = struct.unpack("<4sHHHHIIH", tail[i:i + 22])
            if i + 22 + comment == len(tail):  # a comment is the only thing allowed after it
                break
        i = tail.rfind(b"PK\x05\x06", 0, i)
    else:
        raise UnsafeArchive(src, None, "the zip's end record is not at its end (data after the archive)")
    eocd = size - tail_len + i
    if disk or cd_disk:
        raise UnsafeArchive(src, None, "multi-volume zip archives are not accepted")
    cd_end = eocd
    if eocd >= 20:
        fh.seek(eocd - 20)
        sig, _, rec_off, _ = struct.unpack("<4sIQI", fh.read(20))
        if sig == b"PK\x06\x07":  # zip64: the zip64 end record sits between the directory and the locator
            fh.seek(rec_off)
            rec = fh.read(56)
            if len(rec) < 56 or rec[:4] != b"PK\x06\x06":
                raise UnsafeArchive(src, None, "the zip64 end record is missing or damaged")
            rec_size, cd_size, cd_off = struct.unpack("<Q", rec[4:12])[0], *struct.unpack("<QQ", rec[40:56])
            if rec_off + 12 + rec_size != eocd - 20:
                raise UnsafeArchive(src, None, "data between the zip64 end record and its locator")
            cd_end = rec_off
    if cd_off + cd_size != cd_end:
        raise UnsafeArchive(src, None, "the zip's central directory does not end at its end record "
                            "(data appended or prepended)")
    return cd_off, cd_size, cd_end


def _check_zip_layout(src: Path, fh, infos: list[zipfile.ZipInfo]) -> None:
    """A zip read from offset 0: local entries back to back, then the central directory, then its end.

    Readers disagree about a zip with gaps, overlaps, prepended data or a local header that
    contradicts the central directory (names, method, size); such a file is a polyglot or
    damaged, and is refused rather than read one way here and another elsewhere.
    """
    size = os.fstat(fh.fileno()).st_size
    cd_off, _, _ = _zip_end(src, fh, size)
    ordered = sorted(infos, key=lambda i: i.header_offset)
    pos = 0
    for n, info in enumerate(ordered):
        name = info.orig_filename
        if not (0 <= info.header_offset < size and 0 <= info.compress_size <= size):
            raise UnsafeArchive(src, name, "its offset or size in the central directory lies outside the file")
        if info.header_offset != pos:
            raise UnsafeArchive(src, name, "zip members are not back to back from the file's start "
                                "(a gap, an overlap or a second archive)")
        fh.seek(pos)
        hdr = fh.read(30)
        if len(hdr) < 30 or hdr[:4] != b"PK\x03\x04":
            raise UnsafeArchive(src, name, "no local header where the central directory says")
        _, _, flags, method, _, _, _, csize, _, nlen, xlen = struct.unpack("<4sHHHHHIIIHH", hdr)
        if fh.read(nlen) != _zip_raw_name(info):
            raise UnsafeArchive(src, name, "its local header's name differs from the central directory")
        if method != info.compress_type:
            raise UnsafeArchive(src, name, "its local header's compression method differs from the central "
                                "directory")
        if not flags & 0x8 and csize != 0xFFFFFFFF and csize != info.compress_size:
            raise UnsafeArchive(src, name, "its local header's compressed size differs from the central "
                                "directory")
        pos += 30 + nlen + xlen + info.compress_size
        following = ordered[n + 1].header_offset if n + 1 < len(ordered) else cd_off
        if flags & 0x8 or info.flag_bits & 0x8:
            # A data descriptor: CRC and sizes (4- or 8-byte), with or without its signature.
            fh.seek(pos)
            desc = fh.read(24)
            crc_at = 4 if desc[:4] == b"PK\x07\x08" else 0
            if struct.unpack("<I", desc[crc_at:crc_at + 4].ljust(4, b"\0"))[0] != info.CRC or \
                    following - pos not in (crc_at + 12, crc_at + 20):
                raise UnsafeArchive(src, name, "its data descriptor does not match the central directory")
            pos = following
        if pos > cd_off:
            raise UnsafeArchive(src, name, "its data runs into the central directory")
    if pos != cd_off:
        raise UnsafeArchive(src, None, "data between the last zip member and the central directory")


def _open_zip(src: Path, limits: Limits) -> PackageReader:
    try:
        zf = zipfile.ZipFile(src)  # noqa: SIM115 - the reader owns it
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error, NotImplementedError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise UnsafeArchive(src, None, "not a readable zip archive", type(exc).__name__) from None
    try:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise UnsafeArchive(src, None, "too many members", f"{len(infos)}, limit {limits.max_members}")
        _check_zip_layout(src, zf.fp, infos)
        inv, zmembers = _scan_zip(src, zf, limits)
    except BaseException as exc:
        zf.close()
        if isinstance(exc, (struct.error, ValueError, OverflowError, EOFError)):
            raise UnsafeArchive(src, None, "damaged zip archive", type(exc).__name__) from None
        raise
    prefix = _package_root(inv)
    return _ZipReader(src, inv, zf, zmembers, prefix=prefix, root=prefix or _stem(src))


_DECOMPRESSORS = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}


def _open_plain_tar(src: Path, limits: Limits) -> PackageReader | None:
    """A plain tar checked by the fast scan, or None when it holds something only tarfile reads."""
    if not hasattr(os, "pread"):
        return None
    fh = open(src, "rb", buffering=0)  # noqa: SIM115 - the reader owns it
    try:
        try:
            inv, end = _scan_tar_fast(src, fh.fileno(), limits)
        except (_Unusual, ValueError, IndexError, UnicodeError):
            # Not an ordinary archive: tarfile reads it from the start (its answer is the rule).
            fh.close()
            return None
        _check_tar_end(src, fh, end, compressed=False)
    except BaseException:
        fh.close()
        raise
    prefix = _package_root(inv)
    return _TarReader(src, inv, fh, None, {}, plain=True, prefix=prefix, root=prefix or _stem(src))


def _open_tar(src: Path, kind: str, limits: Limits) -> PackageReader:
    if kind == "tar" and (reader := _open_plain_tar(src, limits)) is not None:
        return reader
    if kind != "tar":
        # What is compressed must itself be a tar, not a zip or anything else.
        try:
            with _DECOMPRESSORS[kind](src, "rb") as inner:
                head = inner.read(SNIFF_BYTES)
        except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise
            raise UnsafeArchive(src, None, f"damaged {KIND_LABELS[kind]}", type(exc).__name__) from None
        if sniff(head) != "tar":
            raise UnsafeArchive(src, None, f"the {KIND_LABELS[kind]} is not a tar archive")
    try:
        tf = tarfile.open(src, _TAR_MODES[kind], encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        what = "tar" if kind == "tar" else f"{kind}-compressed tar"
        raise UnsafeArchive(src, None, f"not a readable {what} archive", type(exc).__name__) from None
    try:
        inv, sparse = _scan_tar(src, tf, limits)
        _check_tar_end(src, tf.fileobj, tf.offset, compressed=kind != "tar")
    except UnsafeArchive:
        tf.close()
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError, struct.error,
            OverflowError) as exc:
        tf.close()
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise UnsafeArchive(src, None, "damaged tar archive", type(exc).__name__) from None
    except BaseException:
        tf.close()
        raise
    prefix = _package_root(inv)
    return _TarReader(src, inv, tf.fileobj, tf, sparse, plain=kind == "tar", prefix=prefix,
                      root=prefix or _stem(src))


def open_package(path: str | os.PathLike, limits: Limits | None = None, *,
                 compressed: bool = True) -> PackageReader:
    """Check every member of a folder, tar or zip package and return a reader for it.

    The container is what the file's leading bytes say (:func:`sniff`), and a name whose suffix
    promises another kind is refused. ``compressed`` False refuses compressed tars too (intake
    stores only what it can serve by offset: a plain tar or a zip).

    Raises :class:`UnsafeArchive` on the first rule broken and FileNotFoundError when ``path``
    does not exist.
    """
    limits = limits or DEFAULT_LIMITS
    src = Path(path)
    if src.is_symlink():
        raise UnsafeArchive(src, None, "the package path itself is a symbolic link")
    if not src.exists():
        raise FileNotFoundError(str(src))
    if src.is_dir():
        inv = _scan_dir(src, limits)
        # A folder that only wraps the package root (no METS.xml, a single sub-folder) is read
        # like an archive: the sub-folder is the package root (CSIPSTR1).
        prefix = _package_root(inv) if "METS.xml" not in inv.files else None
        if prefix is not None:
            return _DirReader(src, inv, prefix=prefix, root=prefix)
        return _DirReader(src, inv, prefix=None, root=src.resolve().name)
    if not src.is_file():
        raise UnsafeArchive(src, None, "not a regular file or folder")
    kind = check_container(src)
    if kind == "zip":
        return _open_zip(src, limits)
    if kind == "tar":
        return _open_tar(src, kind, limits)
    if kind == "zstd" or (kind in COMPRESSED and not compressed):
        raise UnsafeArchive(src, None, f"{KIND_LABELS[kind]} is not accepted as a package",
                            "send the package as an uncompressed .tar or as a .zip")
    if kind in COMPRESSED:
        return _open_tar(src, kind, limits)
    raise UnsafeArchive(src, None, "not a folder, tar or zip package (its first bytes match no known container)")


def _stem(path: Path) -> str:
    name = path.name
    for suffix, _ in _NAME_KINDS:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


@contextlib.contextmanager
def extract_package(path: str | os.PathLike, limits: Limits | None = None,
                    parent: str | os.PathLike | None = None) -> Iterator[Path]:
    """Extract a checked package into a fresh temporary folder; yields the package root there.

    The temporary folder (created under ``parent`` or the system default) is removed on exit.
    Files are created exclusively and without following links, so nothing lands outside it.
    """
    with open_package(path, limits) as reader:
        tmp = Path(tempfile.mkdtemp(prefix="arkiv-pkg-", dir=parent))
        try:
            root = tmp / reader.root
            root.mkdir()
            base = root.resolve()
            for d in sorted(reader.dirs):
                (root / d).mkdir(parents=True, exist_ok=True)
            for rel in reader.files():
                target = (root / rel)
                if not target.resolve().is_relative_to(base):  # defence in depth
                    raise UnsafeArchive(path, rel, "would be written outside the extraction folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                fd = os.open(target, flags, 0o600)
                with os.fdopen(fd, "wb") as out, reader.open(rel) as src:
                    shutil.copyfileobj(src, out, 1024 * 1024)
            yield root
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
