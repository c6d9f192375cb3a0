"""A TAR writer for the package builder: the bytes of ``tarfile``'s PAX stream, a fraction of the work.

``tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)`` with ``addfile`` costs about
0.1 ms a member in header building, buffering and copying through a reader wrapper; a package
of thousands of small documents spends much of its build there. :class:`TarStream` writes the
same bytes for the members the builder adds (regular files, uid/gid 0, no owner names): the
same ustar header, the same PAX extended header (``././@PaxHeader``, records ``path``, ``size``,
``mtime`` in that order) where tarfile needs one, the same padding and the same end of archive.
A document is read once into a reused buffer, hashed and written; a file under 1 MiB is read
whole and checked against its declared size before anything of it is written. A larger one is
copied 1 MiB at a time, and each chunk's two digests (the document's, and the package's when
``out`` hashes what it writes) are computed at once: the document's on a helper thread, both
outside the GIL, so a large document costs one SHA-256 of time rather than two.

The rare headers that take more than that (a float mtime, a name that is not valid Unicode)
are made by tarfile's own header code, so they cannot differ either.
"""

from __future__ import annotations

import functools
import hashlib
import tarfile
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Protocol

CHUNK = 1024 * 1024
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE  # tarfile in stream mode pads the archive to whole records
_NUL = b"\0"
_NAME = tarfile.LENGTH_NAME
_OCTAL_LIMIT = 8**11  # size and mtime have 11 octal digits in a ustar header
_UID_GID = b"0000000\0" * 2
_PAX_NAME = b"././@PaxHeader"


def _tail(typeflag: bytes) -> bytes:
    """The header after the checksum: type, empty link name, POSIX magic, no owner names, devices, prefix."""
    return typeflag + _NUL * 100 + tarfile.POSIX_MAGIC + _NUL * (32 + 32 + 8 + 8 + 155 + 12)


_TAIL_REG = _tail(tarfile.REGTYPE)
_TAIL_PAX = _tail(tarfile.XHDTYPE)
# The checksum counts its own field as eight spaces.
_SUM_REG = sum(_TAIL_REG) + 8 * 32
_SUM_PAX = sum(_TAIL_PAX) + 8 * 32


class Writable(Protocol):
    """Where a TarStream writes: a binary file, or a wrapper such as HashingWriter."""

    def write(self, data: bytes, /) -> object: ...


class SourceSizeError(ValueError):
    """A source gave fewer or more bytes than the size declared for its member.

    ``got`` is the count read: below ``declared`` when the source ended early, ``declared + 1``
    when it had more. The archive is unusable after it (see :meth:`TarStream.add_file`).
    """

    def __init__(self, name: str, declared: int, got: int):
        self.name, self.declared, self.got = name, declared, got
        what = f"ended after {got} bytes" if got < declared else "has more bytes"
        super().__init__(f"{name}: source {what}, {declared} declared")


def _ustar(name: bytes, mode: int, size: int, mtime: int, tail: bytes, tail_sum: int) -> bytes:
    head = b"".join((name[:_NAME].ljust(_NAME, _NUL), b"%07o\0" % (mode & 0o7777), _UID_GID,
                     b"%011o\0" % size, b"%011o\0" % mtime))
    return b"%s%06o\0 %s" % (head, sum(head) + tail_sum, tail)


@functools.lru_cache(maxsize=1024)
def _pax_header(length: int) -> bytes:
    """The ustar block that announces ``length`` bytes of PAX records (the same for every member)."""
    return _ustar(_PAX_NAME, 0, length, 0, _TAIL_PAX, _SUM_PAX)


def _pax_record(keyword: bytes, value: bytes) -> bytes:
    # A record is "<length> <keyword>=<value>\n", the length counting its own digits.
    bare = len(keyword) + len(value) + 3
    length = bare + len(str(bare))
    if len(str(length)) > len(str(bare)):
        length += 1
    return b"%d %s=%s\n" % (length, keyword, value)


def member_header(name: str, size: int, mtime: int | float, mode: int = 0o644) -> bytes:
    """The header blocks of a regular member, exactly as ``TarInfo.tobuf(PAX_FORMAT)`` makes them."""
    if type(mtime) is not int:
        return _tarfile_header(name, size, mtime, mode)
    records = []
    if name.isascii():
        raw = name.encode("ascii")
        if len(raw) > _NAME:
            records.append(_pax_record(b"path", raw))
    else:
        try:
            records.append(_pax_record(b"path", name.encode("utf-8")))
        except UnicodeEncodeError:  # surrogate-escaped bytes: tarfile's hdrcharset=BINARY case
            return _tarfile_header(name, size, mtime, mode)
        raw = name.encode("ascii", "replace")
    if not 0 <= size < _OCTAL_LIMIT:
        records.append(_pax_record(b"size", b"%d" % size))
        size = 0
    if not 0 <= mtime < _OCTAL_LIMIT:
        records.append(_pax_record(b"mtime", b"%d" % mtime))
        mtime = 0
    header = _ustar(raw, mode, size, mtime, _TAIL_REG, _SUM_REG)
    if not records:
        return header
    payload = b"".join(records)
    return b"".join((_pax_header(len(payload)), payload,
                     _NUL * (-len(payload) % BLOCK), header))


def _tarfile_header(name: str, size: int, mtime: int | float, mode: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, mode
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


class TarStream:
    """Writes a TAR stream to ``out``, byte for byte what tarfile's ``w|`` PAX stream writes.

    ``out`` is any binary file object whose ``write`` takes the whole buffer it is given and
    keeps no reference to it (every ``io`` file, :class:`~transforms.common.hashing.HashingWriter`).
    Used as a context manager it writes the end of the archive only when the block succeeds,
    as tarfile does: a failed build leaves no archive that looks complete.
    """

    def __init__(self, out: Writable):
        self._out = out
        self._offset = 0
        self._buffer: memoryview | None = None
        self._closed = False
        self._failed = False
        self._hasher: ThreadPoolExecutor | None = None

    def add_file(self, name: str, src: BinaryIO, size: int, mtime: int | float,
                 mode: int = 0o644) -> tuple[str, int]:
        """Copy ``size`` bytes of ``src`` into member ``name``, hashing them on the way: (hex SHA-256, size).

        Raises :class:`SourceSizeError` if ``src`` ends early or has more than ``size`` bytes. After
        that, or any other error here, the stream takes no more members and cannot be closed: part
        of the member may already be written (a source of 1 MiB or more is written as it is read).
        """
        self._check(size)
        try:
            return self._copy(name, src, size, member_header(name, size, mtime, mode))
        except BaseException:
            self._failed = True
            raise

    def add_bytes(self, name: str, data: bytes, mtime: int | float, mode: int = 0o644) -> None:
        """Write ``data`` as member ``name``."""
        size = len(data)
        self._check(size)
        try:
            header = member_header(name, size, mtime, mode)
            pad = _NUL * (-size % BLOCK)
            if size <= CHUNK:
                self._out.write(b"".join((header, data, pad)))
            else:
                self._out.write(header)
                self._out.write(data)
                self._out.write(pad)
        except BaseException:
            self._failed = True
            raise
        self._offset += len(header) + size + len(pad)

    def close(self) -> None:
        """End the archive: two zero blocks, then zeros up to a whole record."""
        if self._closed:
            return
        self._stop_hasher()  # idle: every member waits for its digest
        if self._failed:
            raise ValueError("TarStream: an earlier member failed; the archive cannot be ended")
        end = 2 * BLOCK
        end += -(self._offset + end) % RECORD
        self._out.write(_NUL * end)
        self._offset += end
        self._closed = True

    def __enter__(self) -> TarStream:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True
            self._stop_hasher()

    def _stop_hasher(self) -> None:
        if self._hasher is not None:
            self._hasher.shutdown(wait=True)
            self._hasher = None

    def _check(self, size: int) -> None:
        if self._closed:
            raise ValueError("TarStream is closed")
        if self._failed:
            raise ValueError("TarStream: an earlier member failed; no more members can be added")
        if type(size) is not int or size < 0:
            raise ValueError(f"member size must be a non-negative int, not {size!r}")

    def _copy(self, name: str, src: BinaryIO, size: int, header: bytes) -> tuple[str, int]:
        if self._buffer is None:
            self._buffer = memoryview(bytearray(CHUNK))
        view, out, pad = self._buffer, self._out, _NUL * (-size % BLOCK)
        readinto = getattr(src, "readinto", None) or _ReadInto(src)
        if size < CHUNK:
            # One read of size + 1 bytes tells a changed file before any of it is written.
            got = _fill(readinto, view[:size + 1])
            if got != size:
                raise SourceSizeError(name, size, got)
            data = view[:size]
            digest = hashlib.sha256(data).hexdigest()
            out.write(b"".join((header, data, pad)))
        else:
            sha = hashlib.sha256()
            if self._hasher is None:
                self._hasher = ThreadPoolExecutor(1, thread_name_prefix="tar-member-sha256")
            out.write(header)
            done = 0
            while done < size:
                want = min(size - done, CHUNK)
                got = _fill(readinto, view[:want])
                if got < want:
                    raise SourceSizeError(name, size, done + got)
                chunk = view[:got]
                hashed = self._hasher.submit(sha.update, chunk)
                try:
                    out.write(chunk)
                finally:
                    hashed.result()  # before the buffer is read into again
                done += got
            if _fill(readinto, view[:1]):
                raise SourceSizeError(name, size, size + 1)
            out.write(pad)
            digest = sha.hexdigest()
        self._offset += len(header) + size + len(pad)
        return digest, size


def _fill(readinto, view: memoryview) -> int:
    """Read into ``view`` until it is full or the source ends; the count read."""
    want = len(view)
    got = readinto(view) or 0
    while 0 < got < want:
        n = readinto(view[got:])
        if not n:
            break
        got += n
    return got


class _ReadInto:
    """``readinto`` for a source that only has ``read`` (a wrapping reader)."""

    def __init__(self, src: BinaryIO):
        self._read = src.read

    def __call__(self, view: memoryview) -> int:
        data = self._read(len(view))
        view[:len(data)] = data
        return len(data)
