"""Storage backends for the mellanarkiv and slutarkiv: one small interface, verified writes.

``put`` copies a file in under a temporary name, hashing while it writes, reads it back to
verify the checksum and only then makes it visible under its key — without ever replacing a
different object that is already there. ``delete`` needs the checksum of a verified copy
elsewhere, so nothing is removed by accident.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import StorageError
from .hashing import copy_hashed, fsync_dir, sha256_file


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


def _check_key(key: str) -> str:
    p = PurePosixPath(key)
    if p.is_absolute() or ".." in p.parts or not key or "\\" in key or key.startswith("."):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class FileSystemStorage:
    """A folder as a storage location (the embedded default for mellanarkiv and slutarkiv)."""

    def __init__(self, root: Path | str, name: str = "mellanarkiv"):
        self.root = Path(root)
        self.name = name

    def __repr__(self) -> str:
        return f"FileSystemStorage({self.name}: {self.root})"

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, src: Path | str, key: str, expected_sha256: str | None = None) -> StoredObject:
        """Store ``src`` under ``key``; verified by reading back. Idempotent for identical content."""
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            existing = self.stat(key)
            if expected_sha256 and existing.sha256 == expected_sha256:
                return existing
            raise StorageError(f"{self.name}: {key} already exists with other content; refusing to overwrite")
        tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            written, size = copy_hashed(src, tmp)
            if expected_sha256 and written != expected_sha256:
                raise StorageError(f"{self.name}: {key}: source checksum {written} "
                                   f"differs from expected {expected_sha256}")
            on_disk, _ = sha256_file(tmp)
            if on_disk != written:
                raise StorageError(f"{self.name}: {key}: read-back checksum differs from what was written")
            try:
                os.link(tmp, dest)  # fails if dest appeared meanwhile: never overwrite
            except FileExistsError:
                if self.stat(key).sha256 == written:
                    return StoredObject(key, size, written)
                raise StorageError(f"{self.name}: {key} appeared with other content during the write") from None
            fsync_dir(dest.parent)
            return StoredObject(key, size, written)
        finally:
            tmp.unlink(missing_ok=True)

    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object (caller closes it)."""
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise StorageError(f"{self.name}: {key} does not exist") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def stat(self, key: str) -> StoredObject:
        """Size and SHA-256 recomputed from the stored bytes."""
        path = self._path(key)
        if not path.is_file():
            raise StorageError(f"{self.name}: {key} does not exist")
        digest, size = sha256_file(path)
        return StoredObject(key, size, digest)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix`` (temporary files are not listed)."""
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return
        for p in sorted(base.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                yield p.relative_to(self.root).as_posix()

    def delete(self, key: str, *, verified_copy_sha256: str) -> None:
        """Remove ``key``; only when the caller proves a verified copy with the same checksum exists."""
        current = self.stat(key)
        if current.sha256 != verified_copy_sha256:
            raise StorageError(f"{self.name}: {key}: refusing to delete, the verified copy's checksum differs")
        self._path(key).unlink()
        fsync_dir(self._path(key).parent)
