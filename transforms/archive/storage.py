"""Storage backends for the mellanarkiv and slutarkiv: one small interface, verified writes.

Two backends with the same verbs — :class:`FileSystemStorage` (a folder) and
:class:`S3Storage` (a bucket and prefix) — chosen by :func:`storage_for` from the configured
location. ``put`` stores a file, verifies what was stored and never replaces a different
object that is already there (an identical one makes the put an idempotent success).
``delete`` needs the checksum of a verified copy elsewhere, so nothing is removed by accident.
``local_copy`` gives callers that need a real file (unpacking, validation) a verified local
path whatever the backend, so no caller reaches into a backend's folder.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from transforms.common.errors import ConfigError, StorageError
from transforms.common.failpoints import failpoint
from transforms.common.hashing import CHUNK, copy_hashed, fsync_dir, sha256_file
from transforms.config.settings import S3Config, Settings, is_s3

log = logging.getLogger("arkivflode")


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
            try:
                written, size = copy_hashed(src, tmp)
            except OSError as exc:
                if not Path(src).is_file():
                    raise
                # the disk, not the package: a full or read-only folder (ENOSPC, EROFS, EIO …)
                raise StorageError(f"{self.name}: {key}: writing to {dest.parent} failed: "
                                   f"{exc.strerror or exc} (errno {exc.errno}); nothing was stored") from None
            if expected_sha256 and written != expected_sha256:
                raise StorageError(f"{self.name}: {key}: source checksum {written} "
                                   f"differs from expected {expected_sha256}")
            failpoint("storage.after_temp_write")  # a temporary file, not yet read back nor linked
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

    def sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """``(key, size)`` under ``prefix``, from the folder's listing (no file is read)."""
        for key in self.list(prefix):
            yield key, self._path(key).stat().st_size

    def delete(self, key: str, *, verified_copy_sha256: str) -> None:
        """Remove ``key``; only when the caller proves a verified copy with the same checksum exists."""
        current = self.stat(key)
        if current.sha256 != verified_copy_sha256:
            raise StorageError(f"{self.name}: {key}: refusing to delete, the verified copy's checksum differs")
        self._path(key).unlink()
        fsync_dir(self._path(key).parent)

    @contextmanager
    def local_copy(self, key: str, expected_sha256: str | None = None) -> Iterator[tuple[Path, StoredObject]]:
        """The stored file itself, hashed first: ``(path, what was read)``. Read it, never change it.

        Raises StorageError when ``expected_sha256`` is given and the stored bytes differ.
        """
        stored = self.stat(key)
        if expected_sha256 and stored.sha256 != expected_sha256:
            raise StorageError(f"{self.name}: {key}: stored SHA-256 {stored.sha256} differs from the expected "
                               f"{expected_sha256} (run the fixity audit)")
        yield self._path(key), stored

    def describe(self, key: str = "") -> str:
        """Where ``key`` is, for messages and PREMIS details."""
        return str(self.root / key) if key else str(self.root)


# --- S3 ---------------------------------------------------------------------------------------------------

def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _status(exc: Exception) -> int:
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class S3Storage:
    """A bucket (and a prefix in it) as a storage location: same verbs as :class:`FileSystemStorage`.

    What a ``put`` guarantees, and how:

    * **One pass over the source, bounded memory.** The file is read part by part (``part_size``,
      16 MiB by default, never below S3's 5 MiB minimum); each part is hashed as it is read — its
      own SHA-256 for S3 and the running SHA-256 of the whole file — and sent. Memory is one part,
      whatever the size of the package. Files up to one part go in a single PUT.
    * **The server verifies every byte it receives.** Each request carries
      ``ChecksumAlgorithm=SHA256`` and the part's SHA-256; S3 rejects a part whose bytes do not
      match. After completion a HEAD must report that same checksum (for a multipart object the
      SHA-256 of the parts' SHA-256s), the size, and the whole-file SHA-256 we stored in the
      object's metadata (``x-amz-meta-sha256``). Objects up to ``read_back_max`` (64 MiB) are
      also read back in full and hashed, catching a server that stores other bytes than it
      acknowledged; larger ones rely on the server's checksum (reading back a multi-GB package
      doubles the transfer) and are re-hashed by ``stat`` in every fixity audit.
    * **Never an overwrite.** The write is conditional (``If-None-Match: *``, where the server
      supports it; ``conditional_writes=False`` turns it off for servers that do not), and
      before writing we look: an existing object with the same SHA-256 (recomputed from its
      bytes, not taken from metadata) makes the put an idempotent success, other content is a
      StorageError. A lost response followed by a retry therefore ends as success, not as
      a duplicate or an error.
    * **No orphans.** A multipart upload that fails anywhere is aborted, so no invisible parts
      are left (and billed). A write that completes but does not verify is removed again (its
      own version only) and reported.
    * **Object Lock.** With a retention configured (slutarkiv), every object is written with
      its mode (GOVERNANCE/COMPLIANCE) and a retain-until date; the HEAD after the write must
      show it (it is applied afterwards if a server ignored it on a multipart upload).
      ``put(..., lock=False)`` defers it for writers that lock a set of objects at the end (OCFL).
    """

    def __init__(self, bucket: str, prefix: str = "", name: str = "mellanarkiv", *,
                 config: S3Config | None = None, client: Any = None, work_dir: Path | str | None = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.name = name
        self.config = config or S3Config()
        self.client = client if client is not None else self.config.client()
        self.lock = self.config.lock_for(name)
        self.work_dir = Path(work_dir) if work_dir else None

    def __repr__(self) -> str:
        return f"S3Storage({self.name}: {self.url})"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def describe(self, key: str = "") -> str:
        """Where ``key`` is, for messages and PREMIS details."""
        return f"{self.url}/{key}" if key else self.url

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, key: str, what: str, exc: Exception) -> StorageError:
        return StorageError(f"{self.name}: {key}: {what} failed ({_error_code(exc) or type(exc).__name__}: {exc})")

    # -- reading ----------------------------------------------------------------------------------------

    def head(self, key: str) -> dict | None:
        """The object's HEAD (with its S3 checksum), or None when there is none. Cheap: no bytes read."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
        except ClientError as exc:
            if _status(exc) == 404 or _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(key, "HEAD", exc) from exc
        except BotoCoreError as exc:
            raise self._fail(key, "HEAD", exc) from exc

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def recorded(self, key: str) -> StoredObject:
        """Size and the SHA-256 recorded at write time (object metadata): cheap, but not recomputed."""
        head = self.head(key)
        if head is None:
            raise StorageError(f"{self.name}: {key} does not exist")
        return StoredObject(key, head["ContentLength"], head.get("Metadata", {}).get("sha256", ""))

    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object (caller closes it)."""
        return self._get(key)["Body"]

    def open_range(self, key: str, start: int, length: int) -> BinaryIO:
        """A stream of ``length`` bytes from ``start`` (an HTTP range read: a document inside a
        stored TAR is served without fetching what precedes it)."""
        if length <= 0:
            return io.BytesIO(b"")
        return self._get(key, Range=f"bytes={start}-{start + length - 1}")["Body"]

    def _get(self, key: str, **extra) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                raise StorageError(f"{self.name}: {key} does not exist") from None
            raise self._fail(key, "GET", exc) from exc
        except BotoCoreError as exc:
            raise self._fail(key, "GET", exc) from exc

    def _stream_hash(self, key: str, sink: BinaryIO | None = None) -> StoredObject:
        h, size = hashlib.sha256(), 0
        response = self._get(key)
        with response["Body"] as body:
            while chunk := body.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
                if sink is not None:
                    sink.write(chunk)
        if size != response["ContentLength"]:
            raise StorageError(f"{self.name}: {key}: read {size} of {response['ContentLength']} bytes")
        return StoredObject(key, size, h.hexdigest())

    def stat(self, key: str) -> StoredObject:
        """Size and SHA-256 recomputed by streaming the stored bytes (for fixity audits).

        The bytes read are also counted against the size S3 reports, so a truncated read is an
        error rather than a changed checksum.
        """
        return self._stream_hash(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under the folder-like ``prefix``, sorted (S3 lists in key order)."""
        for key, _ in self.sizes(prefix):
            yield key

    def sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """``(key, size)`` under the folder-like ``prefix``, from the listing alone (no object is read)."""
        if prefix:
            _check_key(prefix.rstrip("/"))
            prefix = prefix.rstrip("/") + "/"
        full = self._key(prefix) if prefix else (self.prefix + "/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for item in page.get("Contents", []):
                    yield item["Key"][strip:], int(item["Size"])
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(prefix or "/", f"listing {self.url}", exc) from exc

    @contextmanager
    def local_copy(self, key: str, expected_sha256: str | None = None) -> Iterator[tuple[Path, StoredObject]]:
        """Download ``key`` to a temporary file, hashing on the way: ``(path, what was read)``.

        The bytes must match ``expected_sha256`` when given, else the SHA-256 recorded at write
        time; the file is removed when the block ends. Temporary files go to ``work_dir``
        (packages can be larger than /tmp).
        """
        if self.work_dir:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".s3-", suffix=PurePosixPath(key).suffix, dir=self.work_dir)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                stored = self._stream_hash(key, sink=out)
            want = expected_sha256 or self.recorded(key).sha256
            if stored.sha256 != want:
                raise StorageError(f"{self.name}: {key}: downloaded SHA-256 {stored.sha256} differs from the "
                                   f"expected {want} (run the fixity audit)")
            yield path, stored
        finally:
            path.unlink(missing_ok=True)

    # -- writing ----------------------------------------------------------------------------------------

    def _write_args(self, sha256_hex: str, lock: bool) -> dict:
        args: dict[str, Any] = {"Metadata": {"sha256": sha256_hex}, "ChecksumAlgorithm": "SHA256"}
        if self.config.sse:
            args["ServerSideEncryption"] = self.config.sse
            if self.config.sse_kms_key_id:
                args["SSEKMSKeyId"] = self.config.sse_kms_key_id
        if lock and self.lock:
            args["ObjectLockMode"] = self.lock.mode
            args["ObjectLockRetainUntilDate"] = self._retain_until()
        return args

    def _retain_until(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=self.lock.days)

    def _existing(self, key: str, sha256_hex: str) -> StoredObject:
        """An object is already at ``key``: fine when its bytes are ours, otherwise refuse."""
        existing = self.stat(key)
        if existing.sha256 == sha256_hex:
            return existing
        raise StorageError(f"{self.name}: {key} already exists with other content; refusing to overwrite")

    def put(self, src: Path | str, key: str, expected_sha256: str | None = None, *,
            lock: bool = True) -> StoredObject:
        """Store ``src`` under ``key``: streamed, checksummed by the server, verified, never overwriting.

        ``expected_sha256`` is what the caller knows the file to be (it goes into the object's
        metadata before the first byte is sent); without it the file is hashed once beforehand.
        See the class docstring for what is verified and why.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        src = Path(src)
        size = src.stat().st_size
        want = expected_sha256 or sha256_file(src)[0]
        if self.head(key) is not None:
            return self._existing(key, want)
        try:
            if size <= self.config.multipart_above:
                response = self._put_single(src, key, want, lock)
            else:
                response = self._put_multipart(src, key, want, size, lock)
        except ClientError as exc:
            if _status(exc) == 412 or _error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return self._existing(key, want)  # written meanwhile (or our own lost response): compare
            raise self._fail(key, f"upload to {self.url}", exc) from exc
        except BotoCoreError as exc:  # the store did not answer (stopped, unreachable, timed out) after retries
            raise self._fail(key, f"upload to {self.url}", exc) from exc
        try:
            return self._verify_written(key, size, want, response, lock)
        except StorageError:
            self._remove_failed_write(key, response.get("VersionId"))
            raise

    def _put_single(self, src: Path, key: str, want: str, lock: bool) -> dict:
        with open(src, "rb") as f:
            data = f.read(self.config.part_size + 1)  # at most one part: bounded
        digest = hashlib.sha256(data).digest()
        if digest.hex() != want:
            raise StorageError(f"{self.name}: {key}: source checksum {digest.hex()} differs from expected {want}")
        args = self._write_args(want, lock)
        if self.config.conditional_writes:
            args["IfNoneMatch"] = "*"
        response = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                          ChecksumSHA256=_b64(digest), **args)
        failpoint("storage.after_put_before_read_back")  # written, not yet verified
        response["_expected_checksum"] = _b64(digest)
        return response

    def _part_size(self, size: int) -> int:
        # S3 allows 10,000 parts: a very large file gets larger parts rather than failing
        return max(self.config.part_size, -(-size // 10_000))

    def _put_multipart(self, src: Path, key: str, want: str, size: int, lock: bool) -> dict:
        full_key = self._key(key)
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=full_key,
                                                        **self._write_args(want, lock))["UploadId"]
        try:
            whole, part_digests, parts = hashlib.sha256(), [], []
            part_size = self._part_size(size)
            with open(src, "rb") as f:
                number = 0
                while data := f.read(part_size):
                    number += 1
                    digest = hashlib.sha256(data).digest()
                    whole.update(data)
                    r = self.client.upload_part(Bucket=self.bucket, Key=full_key, UploadId=upload_id,
                                                PartNumber=number, Body=data, ChecksumAlgorithm="SHA256",
                                                ChecksumSHA256=_b64(digest))
                    if r.get("ChecksumSHA256") not in (None, _b64(digest)):
                        raise StorageError(f"{self.name}: {key}: part {number}: the server's SHA-256 differs "
                                           "from the one sent")
                    part_digests.append(digest)
                    parts.append({"PartNumber": number, "ETag": r["ETag"], "ChecksumSHA256": _b64(digest)})
                    del data
                    failpoint("storage.after_part")  # a part uploaded, the upload open
            if whole.hexdigest() != want:
                raise StorageError(f"{self.name}: {key}: source checksum {whole.hexdigest()} differs from "
                                   f"expected {want}")
            extra = {"IfNoneMatch": "*"} if self.config.conditional_writes else {}
            failpoint("storage.after_temp_write")  # every part uploaded, the upload not completed
            response = self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **extra)
        except BaseException:
            self._abort(full_key, upload_id)
            raise
        # S3's checksum of a multipart object: the SHA-256 of the parts' SHA-256s, "-<parts>"
        response["_expected_checksum"] = f"{_b64(hashlib.sha256(b''.join(part_digests)).digest())}-{len(parts)}"
        return response

    def _abort(self, full_key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full_key, UploadId=upload_id)
        except Exception as exc:  # noqa: BLE001 — the original failure matters more
            log.warning("%s: could not abort the multipart upload of %s (%s); a lifecycle rule "
                        "AbortIncompleteMultipartUpload removes its parts", self.name, full_key, exc)

    def _verify_written(self, key: str, size: int, want: str, response: dict, lock: bool) -> StoredObject:
        head = self.head(key)
        if head is None:
            raise StorageError(f"{self.name}: {key}: written, but a HEAD does not find it")
        problems = []
        if head["ContentLength"] != size:
            problems.append(f"size {head['ContentLength']} instead of {size}")
        if head.get("Metadata", {}).get("sha256") != want:
            problems.append("the recorded SHA-256 is not ours (another writer?)")
        server = head.get("ChecksumSHA256")
        expected = response["_expected_checksum"]
        # some servers omit the "-<parts>" suffix of a multipart checksum: compare the digest part
        if not server:
            problems.append("the server reports no SHA-256 checksum")
        elif server.split("-")[0] != expected.split("-")[0]:
            problems.append(f"the server's SHA-256 checksum {server} differs from ours {expected}")
        if not problems and size <= self.config.read_back_max:
            read = self.stat(key)
            if read.sha256 != want or read.size != size:
                problems.append(f"read back as SHA-256 {read.sha256} ({read.size} bytes)")
        if problems:
            raise StorageError(f"{self.name}: {key}: the write did not verify: {'; '.join(problems)}")
        if lock and self.lock and not self._locked(head):
            self.retain(key, head.get("VersionId"))
        return StoredObject(key, size, want)

    def _remove_failed_write(self, key: str, version_id: str | None) -> None:
        try:
            extra = {"VersionId": version_id} if version_id and version_id != "null" else {}
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key), **extra)
        except Exception as exc:  # noqa: BLE001 — e.g. locked: the StorageError being raised says what went wrong
            log.warning("%s: could not remove the unverified write of %s (%s)", self.name, key, exc)

    # -- Object Lock and deletion -----------------------------------------------------------------------

    @staticmethod
    def _locked(head: dict) -> bool:
        until = head.get("ObjectLockRetainUntilDate")
        return (head.get("ObjectLockLegalHoldStatus") == "ON"
                or (until is not None and until > dt.datetime.now(dt.UTC)))

    def retain(self, key: str, version_id: str | None = None) -> None:
        """Apply the configured Object Lock retention to ``key`` (idempotent; no-op without one)."""
        from botocore.exceptions import ClientError

        if not self.lock:
            return
        head = self.head(key)
        if head is None:
            raise StorageError(f"{self.name}: {key} does not exist; cannot lock it")
        if self._locked(head):
            return
        version_id = version_id or head.get("VersionId")
        try:
            self.client.put_object_retention(
                Bucket=self.bucket, Key=self._key(key),
                **({"VersionId": version_id} if version_id and version_id != "null" else {}),
                Retention={"Mode": self.lock.mode, "RetainUntilDate": self._retain_until()})
        except ClientError as exc:
            raise self._fail(key, "applying Object Lock retention (is Object Lock enabled on the bucket?)",
                             exc) from exc

    def discard_unsealed(self, key: str, *, reason: str) -> None:
        """Remove a leftover of an interrupted multi-file write that was never sealed nor recorded.

        Only for such leftovers (an OCFL object without its declaration): it has no verified copy
        elsewhere because it is itself an unfinished copy. An object under Object Lock is refused.
        """
        from botocore.exceptions import ClientError

        head = self.head(key)
        if head is None:
            return
        if self._locked(head):
            raise StorageError(f"{self.name}: {key} is under Object Lock, so the unfinished write it belongs to "
                               f"cannot be cleared ({reason}); ask the bucket's administrator")
        log.warning("%s: removing %s: %s", self.name, key, reason)
        version = head.get("VersionId")
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key),
                                      **({"VersionId": version} if version and version != "null" else {}))
        except ClientError as exc:
            raise self._fail(key, "DELETE", exc) from exc

    def delete(self, key: str, *, verified_copy_sha256: str) -> None:
        """Remove ``key`` — its current version, for good — only when a verified copy has the same SHA-256.

        An object under Object Lock retention or legal hold is refused with a StorageError that
        says until when; S3 would refuse anyway, and on a versioned bucket a plain DELETE would
        only hide the object behind a delete marker, which is not a disposal.
        """
        from botocore.exceptions import ClientError

        head = self.head(key)
        if head is None:
            raise StorageError(f"{self.name}: {key} does not exist")
        if self._locked(head):
            until = head.get("ObjectLockRetainUntilDate")
            raise StorageError(f"{self.name}: {key} is under Object Lock ({head.get('ObjectLockMode') or 'legal hold'}"
                               f"{f' until {until:%Y-%m-%d}' if until else ''}); refusing to delete")
        current = self.stat(key)
        if current.sha256 != verified_copy_sha256:
            raise StorageError(f"{self.name}: {key}: refusing to delete, the verified copy's checksum differs")
        version = head.get("VersionId")
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key),
                                      **({"VersionId": version} if version and version != "null" else {}))
        except ClientError as exc:
            raise self._fail(key, "DELETE", exc) from exc


def storage_for(location: Path | str, name: str, s3: S3Config | None = None, *,
                work_dir: Path | str | None = None) -> FileSystemStorage | S3Storage:
    """The storage at ``location``: ``s3://bucket/prefix`` is a bucket, anything else a folder."""
    if is_s3(location):
        bucket, _, prefix = str(location).removeprefix("s3://").partition("/")
        if not bucket:
            raise ConfigError(f"{name}: {location!r} names no bucket (use s3://bucket/prefix)")
        return S3Storage(bucket, prefix, name, config=s3, work_dir=work_dir)
    return FileSystemStorage(location, name)


def mellanarkiv(settings: Settings) -> FileSystemStorage | S3Storage:
    """The mellanarkiv: a folder or a bucket, as ``ARKIV_MELLANARKIV`` says (downloads go to the build folder)."""
    return storage_for(settings.mellanarkiv, "mellanarkiv", settings.s3, work_dir=settings.build / ".downloads")


def slutarkiv(settings: Settings) -> Path | S3Storage:
    """The slutarkiv's OCFL storage root: a folder (a Path) or a bucket (an S3Storage with its Object Lock).

    Every reader of the slutarkiv — retention, the fixity audit, the access API, receipts, DIPs — takes
    this one value, so a bucket is read exactly where a folder is.
    """
    if is_s3(settings.slutarkiv):
        return storage_for(settings.slutarkiv, "slutarkiv", settings.s3, work_dir=settings.build / ".downloads")
    return Path(settings.slutarkiv)
