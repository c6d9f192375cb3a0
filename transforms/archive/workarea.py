"""The working area: where the chain's tasks hand each other their work, so workers need share no disk.

``ARKIV_WORK`` says where it is:

* unset, or a folder: the embedded default. The hand-over *is* the local folders (``staging/``,
  ``build/`` under ``ARKIV_HOME``): a reference is the path of the file, and nothing is copied.
  Every task must then see the same folders (one machine, or a shared file system).
* ``s3://bucket/prefix``: production. A task writes its output to its own disk (scratch), then
  uploads it to the bucket and hands on the object's URL; the next task, on any worker, downloads
  what it needs into its own scratch. Uploads and downloads stream (multipart, a few parts in
  memory at a time): a package is never held whole in memory. A worker's disk is only scratch:
  a task that starts on a fresh worker with an empty disk completes, and what a killed task left
  in its scratch is overwritten or ignored by the retry.

Keys in the bucket mirror the local layout: ``staging/<system>/<period>/…`` (the staged batch and
its ``manifest.json``), ``build/<system>/<package>.tar`` with its sidecar ``….tar.json``,
``reports/<system>/…`` (quality reports and their Data Docs) and ``quarantine/<system>/…``: a batch
held by its quality gate (``quarantine/<system>/<period>/<case>``) and documents held back while a
package was built (``quarantine/<system>/documents/<package>``). Quarantine material is written
verified (read back and hashed) and is the only copy the catalogue's case names.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from transforms.common.errors import ConfigError, StorageError
from transforms.common.hashing import CHUNK, sha256_file
from transforms.config.settings import MIB, Settings, is_s3

log = logging.getLogger(__name__)

#: S3 URLs of the working area start with this
SCHEME = "s3://"


class WorkArea:
    """Hand-over between tasks: publish what a task made, fetch what a task needs, remove what is done."""

    #: whether a reference is a local path every task can open (no copies needed)
    shared_disk: bool = True

    def publish_tree(self, local: Path, area: str, *, verify: bool = False) -> str:
        """Make the folder ``local`` (e.g. a staged batch) available to other tasks; its reference.
        ``verify``: each object is read back and hashed against its file (a bucket only)."""
        return str(local)

    def publish_file(self, local: Path, area: str, *, verify: bool = False) -> str:
        """Make ``local`` available to other tasks as ``<area>``; its reference."""
        return str(local)

    def fetch_tree(self, ref: str, scratch: Path) -> Path:
        """The folder ``ref`` names, on this worker's disk (downloaded into ``scratch`` when needed)."""
        return Path(ref)

    def fetch_file(self, ref: str, scratch: Path) -> Path:
        """The file ``ref`` names, on this worker's disk (downloaded into ``scratch`` when needed)."""
        return Path(ref)

    def read_text(self, ref: str) -> str:
        return Path(ref).read_text(encoding="utf-8")

    def write_text(self, ref: str, text: str) -> None:
        """Write ``text`` to the file ``ref`` names, atomically (a temporary file, then a rename)."""
        target = Path(ref)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part-{uuid.uuid4().hex[:8]}")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, ref: str) -> bool:
        return Path(ref).exists()

    def remove(self, ref: str) -> None:
        Path(ref).unlink(missing_ok=True)

    def remove_tree(self, ref: str) -> None:
        shutil.rmtree(ref, ignore_errors=True)

    def area_of(self, ref: str) -> str:
        return ref

    def describe(self) -> str:
        return "the local folders (no working bucket)"

    def url(self, area: str) -> str:
        """The reference an area of the working bucket has (only a bucket has areas of its own)."""
        raise StorageError(f"{self.describe()} has no areas of its own: {area!r}")


class BucketWorkArea(WorkArea):
    """The working area in a bucket: ``s3://bucket/prefix``; references are the objects' URLs."""

    shared_disk = False

    def __init__(self, url: str, settings: Settings, client=None):
        bucket, _, prefix = url.removeprefix(SCHEME).partition("/")
        if not bucket:
            raise ConfigError(f"ARKIV_WORK={url!r} names no bucket (use s3://bucket/prefix)")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = client if client is not None else settings.s3.client()
        part = max(settings.s3.multipart_above, 8 * MIB)
        from boto3.s3.transfer import TransferConfig

        # a few parts in flight at a time: memory stays bounded whatever the file's size
        self.transfer = TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=4,
                                       use_threads=True)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, area: str) -> str:
        return f"{self.prefix}/{area}" if self.prefix else area

    def _split(self, ref: str) -> str:
        """The object key a reference names (only this working area's own references)."""
        head = f"{SCHEME}{self.bucket}/"
        if not ref.startswith(head):
            raise StorageError(f"working area {self.describe()}: {ref!r} is not one of its objects")
        return ref.removeprefix(head)

    def area_of(self, ref: str) -> str:
        """The area (the key below the working area's prefix) a reference names: ``publish_*``'s argument."""
        key = self._split(ref)
        return key.removeprefix(f"{self.prefix}/") if self.prefix else key

    def _url(self, key: str) -> str:
        return f"{SCHEME}{self.bucket}/{key}"

    def url(self, area: str) -> str:
        return self._url(self._key(area))

    def _fail(self, what: str, key: str, exc: Exception) -> StorageError:
        return StorageError(f"working area {self.describe()}: {what} {key} failed ({type(exc).__name__})")

    def publish_file(self, local: Path, area: str, *, verify: bool = False) -> str:
        """Upload ``local`` as ``<area>``; with ``verify`` the object carries the file's SHA-256 and is
        read back and hashed (StorageError, and the object removed, when it differs)."""
        key = self._key(area)
        extra = {"Metadata": {"sha256": sha256_file(local)[0]}} if verify else None
        try:
            self.client.upload_file(str(local), self.bucket, key, Config=self.transfer, ExtraArgs=extra)
        except Exception as exc:
            raise self._fail("upload to", key, exc) from exc
        if verify:
            self._verify(key, extra["Metadata"]["sha256"])
        return self._url(key)

    def publish_tree(self, local: Path, area: str, *, verify: bool = False) -> str:
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            self.publish_file(path, f"{area}/{path.relative_to(local).as_posix()}", verify=verify)
        return self._url(self._key(area))

    def sha256(self, ref: str) -> str:
        """The SHA-256 of an object's bytes, recomputed by streaming them (never taken from metadata)."""
        key = self._split(ref)
        h = hashlib.sha256()
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            with body:
                while chunk := body.read(CHUNK):
                    h.update(chunk)
        except Exception as exc:
            raise self._fail("read of", key, exc) from exc
        return h.hexdigest()

    def _verify(self, key: str, want: str) -> None:
        got = self.sha256(self._url(key))
        if got != want:
            self.client.delete_object(Bucket=self.bucket, Key=key)
            raise StorageError(f"working area {self.describe()}: {key} reads back with SHA-256 {got}, not {want}; "
                               "the object was removed")

    def copy_tree(self, ref: str, area: str, *, skip: frozenset[str] = frozenset()) -> str:
        """Copy every object under ``ref`` to ``area`` inside the bucket, each copy verified against the
        source's bytes (both hashed); names in ``skip`` are left out. The source is kept. The reference
        of the copy."""
        src = self._split(ref).rstrip("/") + "/"
        dest = self._key(area).rstrip("/") + "/"
        keys = [k for k in self._keys(src) if k.rsplit("/", 1)[-1] not in skip]
        if not keys:
            raise StorageError(f"working area {self.describe()}: nothing under {src} to copy")
        for key in keys:
            target = dest + key.removeprefix(src)
            try:
                self.client.copy({"Bucket": self.bucket, "Key": key}, self.bucket, target, Config=self.transfer)
            except Exception as exc:
                raise self._fail("copy to", target, exc) from exc
            self._verify(target, self.sha256(self._url(key)))
        return self._url(dest.rstrip("/"))

    def write_text(self, ref: str, text: str) -> None:
        """Put ``text`` as the object ``ref`` names, verified by reading it back."""
        key = self._split(ref)
        data = text.encode("utf-8")
        digest = hashlib.sha256(data).hexdigest()
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata={"sha256": digest})
        except Exception as exc:
            raise self._fail("upload to", key, exc) from exc
        self._verify(key, digest)

    def listing(self, area: str = "") -> Iterator[tuple[str, int, object]]:
        """``(area of the object, size, last modified)`` for every object below ``area``."""
        prefix = self._key(area) if area else (f"{self.prefix}/" if self.prefix else "")
        strip = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"].removeprefix(strip), int(obj["Size"]), obj["LastModified"]
        except Exception as exc:
            raise self._fail("listing of", prefix or "/", exc) from exc

    def open_uploads(self) -> Iterator[tuple[str, str, object]]:
        """``(area, upload id, initiated)`` for every multipart upload in the working area not completed."""
        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                     Prefix=prefix):
                for up in page.get("Uploads", []):
                    yield up["Key"].removeprefix(prefix), up["UploadId"], up["Initiated"]
        except Exception as exc:
            raise self._fail("listing of the multipart uploads in", prefix or "/", exc) from exc

    def abort_upload(self, area: str, upload_id: str) -> None:
        key = self._key(area)
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:
            raise self._fail("abort of the upload of", key, exc) from exc

    def fetch_file(self, ref: str, scratch: Path) -> Path:
        key = self._split(ref)
        dest = scratch / key.rsplit("/", 1)[-1]
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part-{uuid.uuid4().hex[:8]}")
        try:
            self.client.download_file(self.bucket, key, str(tmp), Config=self.transfer)
            os.replace(tmp, dest)
        except Exception as exc:
            raise self._fail("download of", key, exc) from exc
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def fetch_verified(self, area: str, dest: Path) -> bool:
        """Download ``<area>`` to ``dest`` (atomically) if the object exists and its bytes hash to the SHA-256
        it was published with (``publish_file(..., verify=True)``). False when there is no such object;
        StorageError when it cannot be read, carries no SHA-256 or differs from it (``dest`` untouched)."""
        key = self._key(area)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail("look-up of", key, exc) from exc
        expected = (head.get("Metadata") or {}).get("sha256")
        if not expected:
            raise StorageError(f"working area {self.describe()}: {key} carries no SHA-256; not used")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part-{uuid.uuid4().hex[:8]}")
        try:
            try:
                self.client.download_file(self.bucket, key, str(tmp), Config=self.transfer)
            except Exception as exc:
                raise self._fail("download of", key, exc) from exc
            if sha256_file(tmp)[0] != expected:
                raise StorageError(f"working area {self.describe()}: {key} differs from its SHA-256; not used")
            os.replace(tmp, dest)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _keys(self, prefix: str) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def fetch_tree(self, ref: str, scratch: Path) -> Path:
        """Download the folder into ``scratch`` afresh (what an earlier attempt left there is replaced)."""
        prefix = self._split(ref).rstrip("/") + "/"
        tmp = scratch.with_name(f".{scratch.name}.fetch-{uuid.uuid4().hex[:8]}")
        try:
            found = False
            for key in self._keys(prefix):
                found = True
                dest = tmp / key.removeprefix(prefix)
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(self.bucket, key, str(dest), Config=self.transfer)
            if not found:
                raise StorageError(f"working area {self.describe()}: nothing under {prefix}; an earlier step must "
                                   "be rerun")
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, scratch)
        except StorageError:
            raise
        except Exception as exc:
            raise self._fail("download of", prefix, exc) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return scratch

    def read_text(self, ref: str) -> str:
        key = self._split(ref)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode("utf-8")
        except Exception as exc:
            raise self._fail("read of", key, exc) from exc

    def exists(self, ref: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._split(ref))
            return True
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail("look-up of", ref, exc) from exc

    def remove(self, ref: str) -> None:
        key = self._split(ref)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._fail("removal of", key, exc) from exc

    def remove_tree(self, ref: str) -> None:
        prefix = self._split(ref).rstrip("/") + "/"
        for key in list(self._keys(prefix)):
            self.remove(self._url(key))


class SharedFiles:
    """Files every worker shares by name under one area of the working bucket (the PDF/A conversion
    cache: a conversion made on one worker is not made again on another).

    Best effort, as a cache is: a failure is logged and costs the work again, never the task. What
    is fetched is used only after its own checks (the conversion cache checks every PDF it takes)."""

    def __init__(self, work: BucketWorkArea, area: str):
        self.work, self.area = work, area.strip("/")

    def fetch(self, name: str, dest: Path) -> bool:
        """Download the entry to ``dest`` when there is one and its bytes hash to the SHA-256 it was
        published with (an entry without one, or that differs, is not used)."""
        try:
            return self.work.fetch_verified(f"{self.area}/{name}", dest)
        except StorageError as exc:
            log.warning("shared %s: %s", self.area, exc)
            return False
        except OSError as exc:  # this worker's disk: the work is done again, as for any miss
            log.warning("shared %s: %s could not be kept on this worker (%s)", self.area, name, type(exc).__name__)
            return False

    def publish(self, local: Path, name: str) -> None:
        try:
            self.work.publish_file(local, f"{self.area}/{name}", verify=True)
        except StorageError as exc:
            log.warning("shared %s: %s", self.area, exc)

    def prune(self, cutoff: float, *, dry_run: bool = False) -> tuple[int, int]:
        """Remove the entries stored before the POSIX time ``cutoff`` (an object's time is when it was
        stored: a fetch does not renew it). ``(entries, bytes)`` removed; StorageError when the bucket
        cannot be listed or an entry not removed."""
        removed = size = 0
        for name, n, stored in list(self.entries()):
            if stored < cutoff:
                if not dry_run:
                    self.work.remove(self.work.url(f"{self.area}/{name}"))
                removed, size = removed + 1, size + n
        return removed, size

    def entries(self) -> Iterator[tuple[str, int, float]]:
        """``(name, size, when stored as a POSIX time)`` of every entry."""
        for area, n, modified in self.work.listing(f"{self.area}/"):
            yield area.removeprefix(f"{self.area}/"), n, modified.timestamp()


def shared_files(settings: Settings, area: str, env: dict[str, str] | None = None) -> SharedFiles | None:
    """The working bucket's ``area`` as :class:`SharedFiles`; None on a shared disk (the folder is shared)."""
    work = work_area(settings, env)
    return SharedFiles(work, area) if isinstance(work, BucketWorkArea) else None


def is_bucket_ref(ref: str) -> bool:
    """Whether a hand-over reference names an object in a working bucket (not a local path)."""
    return ref.startswith(SCHEME)


def work_area(settings: Settings, env: dict[str, str] | None = None) -> WorkArea:
    """The working area ``ARKIV_WORK`` names: a bucket (``s3://…``), else the local folders."""
    env = os.environ if env is None else env
    location = env.get("ARKIV_WORK") or ""
    if is_s3(location):
        return BucketWorkArea(location.rstrip("/"), settings)
    return WorkArea()


__all__ = ["BucketWorkArea", "SharedFiles", "WorkArea", "is_bucket_ref", "shared_files", "work_area"]
