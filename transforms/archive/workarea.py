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
its ``manifest.json``) and ``build/<system>/<package>.tar`` with its sidecar ``….tar.json``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from transforms.archive.storage import s3_client
from transforms.common.errors import ConfigError, StorageError
from transforms.config.settings import MIB, Settings, is_s3

#: S3 URLs of the working area start with this
SCHEME = "s3://"


class WorkArea:
    """Hand-over between tasks: publish what a task made, fetch what a task needs, remove what is done."""

    #: whether a reference is a local path every task can open (no copies needed)
    shared_disk: bool = True

    def publish_tree(self, local: Path, area: str) -> str:
        """Make the folder ``local`` (e.g. a staged batch) available to other tasks; its reference."""
        return str(local)

    def publish_file(self, local: Path, area: str) -> str:
        """Make ``local`` available to other tasks as ``<area>/<its name>``; its reference."""
        return str(local)

    def fetch_tree(self, ref: str, scratch: Path) -> Path:
        """The folder ``ref`` names, on this worker's disk (downloaded into ``scratch`` when needed)."""
        return Path(ref)

    def fetch_file(self, ref: str, scratch: Path) -> Path:
        """The file ``ref`` names, on this worker's disk (downloaded into ``scratch`` when needed)."""
        return Path(ref)

    def read_text(self, ref: str) -> str:
        return Path(ref).read_text(encoding="utf-8")

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


class BucketWorkArea(WorkArea):
    """The working area in a bucket: ``s3://bucket/prefix``; references are the objects' URLs."""

    shared_disk = False

    def __init__(self, url: str, settings: Settings, client=None):
        bucket, _, prefix = url.removeprefix(SCHEME).partition("/")
        if not bucket:
            raise ConfigError(f"ARKIV_WORK={url!r} names no bucket (use s3://bucket/prefix)")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = client if client is not None else s3_client(settings.s3)
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

    def _fail(self, what: str, key: str, exc: Exception) -> StorageError:
        return StorageError(f"working area {self.describe()}: {what} {key} failed ({type(exc).__name__})")

    def publish_file(self, local: Path, area: str) -> str:
        key = self._key(area)
        try:
            self.client.upload_file(str(local), self.bucket, key, Config=self.transfer)
        except Exception as exc:
            raise self._fail("upload to", key, exc) from exc
        return self._url(key)

    def publish_tree(self, local: Path, area: str) -> str:
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            self.publish_file(path, f"{area}/{path.relative_to(local).as_posix()}")
        return self._url(self._key(area))

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


__all__ = ["BucketWorkArea", "WorkArea", "is_bucket_ref", "work_area"]
