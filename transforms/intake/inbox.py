"""Inboxes in object storage: a file-export or prepared system delivers into ``s3://bucket/prefix``.

A system's ``extract.inbox_env`` names a folder every worker mounts, or an S3 prefix, which no
worker needs to mount. For a prefix, intake streams the delivered objects to the worker's own
disk (bounded memory, SHA-256 while copying) and then goes on exactly as from a folder; the
file-export and prepared code never read the bucket themselves.

Keys are the delivery's input, not ours: a key that is not a plain relative path (``..``, an
absolute key, an empty or ``.`` component, a NUL or another control character), a name longer
than a file name may be on disk (:data:`MAX_NAME_BYTES`) or a delivery of more objects than
:data:`MAX_OBJECTS` is refused before a byte of it is written, and no local path is ever made
from a key that was not checked.

Originals leave the inbox only as a verified move: the copy is made from the very version that
was taken in (``CopySourceIfMatch`` on its ETag), its bytes are hashed again and must have the
SHA-256 and size taken in, and only then is the original deleted. Archived deliveries go to
``<prefix>/.archived/``, bad ones to ``<prefix>/.quarantine/`` (the folder code's layout, under the prefix).

The client is built from the project's S3 settings (:class:`~transforms.config.settings.S3Config`:
``ARKIV_S3_ENDPOINT_URL``, region, addressing style, retries; credentials from boto3's chain or
the Airflow connection's client factory).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transforms.common.errors import ConfigError, ContentError, StorageError
from transforms.common.hashing import CHUNK
from transforms.common.masking import safe_name
from transforms.config.settings import S3Config, is_s3

#: where delivered originals go once their batch is archived (a folder inbox uses the same name)
ARCHIVED = ".archived"
#: where a bad delivery's originals go, beside the local quarantine folder that holds its reason
QUARANTINE = ".quarantine"
#: the longest name one component of a key may have: what a file name may be on the worker's disk
MAX_NAME_BYTES = 255
#: the longest relative key accepted (S3's own limit for a whole key is 1,024 bytes)
MAX_KEY_BYTES = 1024
#: the most objects one delivery may hold (a listing this long is a mistake, not an export)
MAX_OBJECTS = 1_000_000
#: copies up to this size are one CopyObject; larger ones are copied in parts (S3's single-copy limit)
_SINGLE_COPY = 5 * 1024**3


#: what intake picks up from a prepared system's inbox; compressed tars only to quarantine them with a reason
PACKAGE_SUFFIXES = (".tar", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".tzst")


def is_package_name(name: str) -> bool:
    """Whether a file or key directly in a prepared system's inbox is a delivery (hidden names are not)."""
    return not name.startswith(".") and "/" not in name and name.lower().endswith(PACKAGE_SUFFIXES)


def relative_problem(rel: str, noun: str = "path") -> str | None:
    """Why ``rel`` (a path in a delivery's manifest, or an inbox's key) is not a plain relative ``noun``
    inside the delivery, or None when it is: absolute, climbing out with ``..``, an empty or ``.``
    component, or a NUL."""
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        return f"is an absolute {noun}; only {noun}s inside the delivery are accepted"
    parts = rel.split("/")
    if ".." in parts:
        return f"climbs out with '..'; only {noun}s inside the delivery are accepted"
    if any(p in ("", ".") for p in parts) or "\x00" in rel:
        return f"is not a plain relative {noun} (empty, '.' or NUL component)"
    return None


def key_problem(rel: str) -> str | None:
    """Why ``rel`` (a key relative to the inbox) cannot be a file of a delivery, or None when it can."""
    if not rel:
        return "is empty"
    if problem := relative_problem(rel, "key"):
        return problem
    if any(ord(c) < 32 or c in "\x7f\\" for c in rel):
        return "holds a NUL, a control character or a backslash"
    if len(rel.encode("utf-8")) > MAX_KEY_BYTES:
        return f"is longer than {MAX_KEY_BYTES} bytes"
    if any(len(p.encode("utf-8")) > MAX_NAME_BYTES for p in rel.split("/")):
        return f"has a name longer than {MAX_NAME_BYTES} bytes (more than a file name may be)"
    return None


@dataclass(frozen=True)
class InboxObject:
    """One object in an S3 inbox, as listed: its key relative to the inbox, size and ETag."""

    key: str
    size: int
    etag: str


class S3Inbox:
    """An inbox at ``s3://bucket/prefix``: list, download (verified) and move (verified) its objects."""

    def __init__(self, url: str, config: S3Config | None = None, client: Any = None):
        if not is_s3(url):
            raise ConfigError(f"{url!r} is not an S3 URL (s3://bucket/prefix)")
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise ConfigError(f"{url!r} names no bucket (use s3://bucket/prefix)")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.config = config or S3Config.from_env()
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.config.client()
        return self._client

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"S3Inbox({self.url})"

    def describe(self, rel: str = "") -> str:
        """Where ``rel`` is, for messages (escaped: a key is the delivery's input)."""
        return f"{self.url}/{safe_name(rel)}" if rel else self.url

    def _full(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _fail(self, what: str, rel: str, exc: Exception) -> StorageError:
        code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "") or type(exc).__name__
        return StorageError(f"inbox {self.describe(rel)}: {what} failed ({code})")

    # -- looking --------------------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        """Whether the object ``rel`` is there (a HEAD; no bytes read)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._full(rel))
            return True
        except ClientError as exc:
            status = (exc.response or {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404 or exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail("HEAD", rel, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("HEAD", rel, exc) from exc

    def listing(self, under: str = "", *, direct: bool = False, limit: int = MAX_OBJECTS) -> list[InboxObject]:
        """Objects under the folder-like ``under``, keys relative to it, in key order; ``direct``: only
        those directly in it (not in a sub-folder). More than ``limit`` objects is a ContentError."""
        from botocore.exceptions import BotoCoreError, ClientError

        base = self._full(under.strip("/")) if under else self.prefix
        start = f"{base}/" if base else ""
        args = {"Bucket": self.bucket, "Prefix": start} | ({"Delimiter": "/"} if direct else {})
        out: list[InboxObject] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**args):
                for item in page.get("Contents", []):
                    out.append(InboxObject(item["Key"][len(start):], int(item["Size"]), item.get("ETag", "")))
                    if len(out) > limit:
                        raise ContentError(f"inbox {self.describe(under)}: more than {limit} objects; a delivery "
                                           f"holds at most {limit}")
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("listing", under, exc) from exc
        return out

    def reachable(self) -> bool:
        """Whether the inbox's bucket exists (False for NoSuchBucket; any other failure is a StorageError)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "", MaxKeys=1)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
                return False
            raise self._fail("listing", "", exc) from exc
        except BotoCoreError as exc:
            raise self._fail("listing", "", exc) from exc
        return True

    def holds(self, under: str) -> bool:
        """Whether anything lies under the folder-like ``under`` (one key listed at most)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self._full(under.strip('/'))}/",
                                               MaxKeys=1)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("listing", under, exc) from exc
        return bool(page.get("Contents"))

    # -- copying to the worker's disk -----------------------------------------------------------------

    def download(self, rel: str, obj: InboxObject, dest: Path) -> str:
        """Stream ``rel`` to ``dest`` (a temporary name, then a rename), hashing on the way; its SHA-256.

        The object must still be the version listed (its ETag) and be exactly its listed size.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        dest.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(dest.parent).free
        if obj.size > free:
            raise StorageError(f"inbox {self.describe(rel)}: {obj.size} bytes to copy, {free} free in {dest.parent}; "
                               "free space and rerun")
        tmp = dest.with_name(f".{dest.name[:200]}.part-{uuid.uuid4().hex[:8]}")
        h, size = hashlib.sha256(), 0
        try:
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._full(rel),
                                                  **({"IfMatch": obj.etag} if obj.etag else {}))
                with response["Body"] as body, open(tmp, "wb") as out:
                    while chunk := body.read(CHUNK):
                        size += len(chunk)
                        if size > obj.size:
                            break
                        h.update(chunk)
                        out.write(chunk)
            except (BotoCoreError, ClientError) as exc:
                raise self._fail("download", rel, exc) from exc
            if size != obj.size:
                raise StorageError(f"inbox {self.describe(rel)}: read {size} bytes, the listing says {obj.size}; "
                                   "the object changed while it was read (it is read again on the next try)")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return h.hexdigest()

    def download_tree(self, under: str, dest: Path, what: str) -> dict[str, tuple[str, InboxObject]]:
        """Every object under ``under`` into the folder ``dest`` (replaced afresh): ``{rel: (sha256, object)}``.

        Every key is checked first (:func:`key_problem`); one bad key refuses the delivery
        (ContentError, ``what`` names it) before anything is written. The listed sizes must fit
        on the disk (a StorageError otherwise: the system's matter, not the delivery's).
        """
        objects = self.listing(under)
        problems = [f"{safe_name(o.key)}: the key {p}" for o in objects if (p := key_problem(o.key))]
        if problems:
            raise ContentError(f"{what}: keys that cannot be files of a delivery; nothing was read", problems)
        folded: dict[str, str] = {}
        for o in objects:
            # a key that is also a "folder" of another key (a and a/b) has no place on a disk
            for i in range(1, o.key.count("/") + 1):
                folded.setdefault(o.key.rsplit("/", i)[0], "dir")
        clashes = [f"{safe_name(o.key)}: both a file and a folder" for o in objects if folded.get(o.key) == "dir"]
        if clashes:
            raise ContentError(f"{what}: keys that cannot be files of a delivery; nothing was read", clashes)
        need = sum(o.size for o in objects)
        tmp = dest.with_name(f".{dest.name}.fetch-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        try:
            free = shutil.disk_usage(tmp).free
            if need > free:
                raise StorageError(f"{what}: {need} bytes to copy from {self.describe(under)}, {free} free in "
                                   f"{tmp.parent}; free space (or set ARKIV_STAGING_DIR) and rerun")
            got = {o.key: (self.download(f"{under}/{o.key}" if under else o.key, o, tmp / o.key), o)
                   for o in objects}
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return got

    # -- moving out of the inbox ----------------------------------------------------------------------

    def move(self, rel: str, to: str, obj: InboxObject, sha256: str | None = None) -> None:
        """Move ``rel`` to ``to``: copy the version listed (``obj``), verify the copy, then delete the original.

        The copy's bytes are read back and must have ``sha256`` (what was taken in; without it the
        original's bytes are hashed first) and the listed size; until they do, the original
        stays. A copy already there with those bytes (a retry) is as good as a new one.
        """
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        if sha256 is None:
            sha256 = self._sha256(rel, obj.size)
            if sha256 is None:
                raise StorageError(f"inbox {self.describe(rel)}: not there with its listed size; not moved")
        if self._sha256(to, obj.size) != sha256:
            try:
                self.client.copy({"Bucket": self.bucket, "Key": self._full(rel)}, self.bucket, self._full(to),
                                 ExtraArgs={"CopySourceIfMatch": obj.etag} if obj.etag else None,
                                 Config=TransferConfig(multipart_threshold=_SINGLE_COPY,
                                                       multipart_chunksize=512 * 1024**2))
            except (BotoCoreError, ClientError) as exc:
                raise self._fail(f"copy to {safe_name(to)}", rel, exc) from exc
            copied = self._sha256(to, obj.size)
            if copied != sha256:
                raise StorageError(f"inbox {self.describe(rel)}: the copy at {safe_name(to)} does not have the "
                                   f"SHA-256 and size taken in; the original stays in the inbox")
        if obj.etag and self._etag(rel) != obj.etag:
            # delivered again under the same key since it was taken in: that is a new delivery, not ours to remove
            raise StorageError(f"inbox {self.describe(rel)}: replaced since it was taken in; the new object stays "
                               f"in the inbox (the taken-in version is kept at {safe_name(to)})")
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._full(rel))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("delete after the verified copy", rel, exc) from exc

    def _etag(self, rel: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._full(rel)).get("ETag")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail("HEAD", rel, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("HEAD", rel, exc) from exc

    def _sha256(self, rel: str, size: int) -> str | None:
        """The SHA-256 of the object's bytes when it is there with ``size`` bytes, else None."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(rel))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._fail("GET", rel, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("GET", rel, exc) from exc
        if int(response["ContentLength"]) != size:
            response["Body"].close()
            return None
        h, n = hashlib.sha256(), 0
        with response["Body"] as body:
            while chunk := body.read(CHUNK):
                h.update(chunk)
                n += len(chunk)
        return h.hexdigest() if n == size else None

    def read_bytes(self, rel: str, limit: int) -> bytes:
        """A small object's bytes (a manifest); ValueError when it holds more than ``limit``."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            with self.client.get_object(Bucket=self.bucket, Key=self._full(rel))["Body"] as body:
                raw = body.read(limit + 1)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("GET", rel, exc) from exc
        if len(raw) > limit:
            raise ValueError(f"{self.describe(rel)} is larger than {limit} bytes")
        return raw

    def put_text(self, rel: str, text: str) -> None:
        """Write a small text object (a quarantined delivery's reason beside it)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._full(rel), Body=text.encode("utf-8"),
                                   ContentType="text/plain; charset=utf-8")
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("write", rel, exc) from exc


class InboxMarker:
    """What the DAG's sensor looks for in an S3 inbox: ``exists()`` and a printable place, like a Path."""

    def __init__(self, inbox: S3Inbox, rels: tuple[str, ...] = ()):
        self.inbox, self.rels = inbox, rels

    def exists(self) -> bool:
        """One of the objects ``rels`` is there; with none named (a queue of packages): the inbox's bucket
        is there, as a folder inbox is there when its folder is, empty or not (a run on an empty queue
        takes in nothing; a queue is never "missing"). Other S3 errors raise: they are operations'."""
        if self.rels:
            return any(self.inbox.exists(rel) for rel in self.rels)
        return self.inbox.reachable()

    def __str__(self) -> str:
        return self.inbox.describe(self.rels[0] if self.rels else "")


def inbox_at(value: str, config: S3Config | None = None) -> Path | S3Inbox:
    """The inbox an ``inbox_env`` value names: a folder, or an :class:`S3Inbox` for ``s3://bucket/prefix``."""
    return S3Inbox(value, config) if is_s3(value) else Path(value)


__all__ = ["ARCHIVED", "PACKAGE_SUFFIXES", "QUARANTINE", "InboxMarker", "InboxObject", "S3Inbox", "inbox_at",
           "is_package_name", "key_problem"]
