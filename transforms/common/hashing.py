"""One-pass hashing: checksums are computed while bytes are copied, never in a second read."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

CHUNK = 1024 * 1024


class HashingWriter:
    """Wraps a writable binary file; every byte written updates a SHA-256 and a byte count."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()

    def tell(self) -> int:
        return self.size

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


class BackgroundHashingWriter:
    """A :class:`HashingWriter` whose hashing and writing happen on a helper thread, a buffer at a time.

    ``write`` copies what it is given into one of two buffers of ``buffer_size`` bytes and
    returns; a full buffer is handed to the helper thread, which updates the SHA-256 and writes
    it to ``raw`` (both outside the GIL) while the caller fills the other. The caller's own work
    (reading and hashing the next document, formatting metadata) thus overlaps the package's
    digest and its writes. The bytes written and the digest are exactly those of a
    HashingWriter; ``raw`` should be unbuffered (this is its buffer). An error of the helper
    (a full disk) is raised by the next ``write``, ``flush`` or ``close``; :meth:`close` stops
    the thread, and :meth:`abandon` stops it without raising (for cleaning up after an error).
    """

    def __init__(self, raw: BinaryIO, buffer_size: int = CHUNK):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._buffers = (memoryview(bytearray(buffer_size)), memoryview(bytearray(buffer_size)))
        self._index = 0  # the buffer being filled
        self._current = self._buffers[0]
        self._filled = 0
        self._capacity = buffer_size
        self._pending: Future | None = None
        self._helper: ThreadPoolExecutor | None = None
        self._error: BaseException | None = None  # the helper's: every later call raises it

    def write(self, data: bytes) -> int:
        if self._error is not None:
            raise self._error
        n = len(data)
        filled, capacity = self._filled, self._capacity
        if filled + n < capacity:  # the usual case: it fits with room to spare
            self._current[filled:filled + n] = data
            self._filled = filled + n
        else:
            view = memoryview(data).cast("B")
            done = 0
            while done < n:
                take = min(n - done, capacity - self._filled)
                self._current[self._filled:self._filled + take] = view[done:done + take]
                self._filled += take
                done += take
                if self._filled == capacity:
                    self._hand_over()
        self.size += n
        return n

    def flush(self) -> None:
        """Hash and write everything given so far, then flush ``raw``."""
        if self._error is not None:
            raise self._error
        if self._filled:
            self._hand_over()
        self._wait()
        self.raw.flush()

    def close(self) -> None:
        """:meth:`flush`, then stop the helper thread (``raw`` stays open)."""
        try:
            self.flush()
        finally:
            self._stop()

    def abandon(self) -> None:
        """Stop the helper thread after the work it has, whatever it says; nothing more is written."""
        if self._pending is not None:
            self._pending.exception()  # waited for; its error, if any, is the caller's own error's consequence
            self._pending = None
        self._filled = 0
        self._stop()

    def tell(self) -> int:
        return self.size

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()

    def _hand_over(self) -> None:
        full = self._current[:self._filled]
        self._wait()  # the other buffer is free once its bytes are out
        if self._helper is None:
            self._helper = ThreadPoolExecutor(1, thread_name_prefix="package-sha256-write")
        self._pending = self._helper.submit(self._drain, full)
        self._index ^= 1
        self._current = self._buffers[self._index]
        self._filled = 0

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            try:
                pending.result()
            except BaseException as exc:
                self._error = exc
                raise

    def _drain(self, data: memoryview) -> None:
        self.sha256.update(data)
        write = self.raw.write
        while data:
            written = write(data)
            if written is None:  # a non-blocking raw that took nothing: not a package file
                raise BlockingIOError("the package file took no bytes")
            data = data[written:]

    def _stop(self) -> None:
        if self._helper is not None:
            self._helper.shutdown(wait=True)
            self._helper = None


def sha256_file(path: Path | str) -> tuple[str, int]:
    """(hex SHA-256, size) of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def copy_hashed(src: Path | str, dst: Path | str) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` (fsynced), hashing the bytes on the way: (hex SHA-256, size)."""
    h = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(CHUNK):
            h.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest(), size


def fsync_dir(path: Path | str) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
