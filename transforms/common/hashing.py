"""One-pass hashing: checksums are computed while bytes are copied, never in a second read."""

from __future__ import annotations

import hashlib
import os
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
