"""The slutarkiv as an OCFL 1.1 storage root (Oxford Common File Layout).

The E-ARK AIP specification recommends OCFL for storing AIPs: every object is versioned,
and a later change (a migration, added metadata, a partial disposal) adds a version instead
of rewriting an earlier one. Objects are written unpacked — each AIP file is a file of the
object — so that every file has its own fixity in the inventory and an unchanged file is
never stored twice across versions.

An object is built completely in a work folder beside the storage root and then renamed
into the root in one step, so a crash leaves either no object or a whole one.

The storage root may also be a bucket (an :class:`~transforms.archive.storage.S3Storage`): every
function here takes either. S3 has no rename, so there an object is built and verified in a
local temporary folder, then uploaded file by file with verified writes, the object
declaration (``0=ocfl_object_1.1``) last: an object without its declaration is not an object
(a crash mid-upload leaves an unsealed partial that the next write removes), and once the
declaration is there every file is put under the bucket's Object Lock retention (:func:`seal`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from transforms.common.errors import StorageError
from transforms.common.failpoints import failpoint
from transforms.common.hashing import CHUNK, fsync_dir

if TYPE_CHECKING:
    from transforms.archive.storage import S3Storage


ROOT_DECLARATION = "0=ocfl_1.1"
OBJECT_DECLARATION = "0=ocfl_object_1.1"
INVENTORY_TYPE = "https://ocfl.io/1.1/spec/#inventory"
LAYOUT = "0002-flat-direct-storage-layout"


USER_ADDRESS = "https://arkivflode.se/agent/arkivflode"  # OCFL asks for a URI naming the user (W008)


def _utc(value: dt.datetime | None) -> dt.datetime:
    """A timestamp with its time zone, as OCFL requires (E049): naive values are UTC."""
    value = value or dt.datetime.now(dt.UTC)
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).replace(microsecond=0)


def _is_bucket(root) -> bool:
    return not isinstance(root, Path)


def _put_text(store: S3Storage, key: str, text: str) -> None:
    """A small deterministic file into a bucket (idempotent: identical content is fine)."""
    with tempfile.TemporaryDirectory(prefix="arkiv-ocfl-") as tmp:
        path = Path(tmp) / "f"
        path.write_text(text, encoding="utf-8")
        store.put(path, key)


def init_root(root: Path | S3Storage) -> None:
    """Make ``root`` an OCFL 1.1 storage root (idempotent)."""
    if _is_bucket(root):
        if not root.exists(ROOT_DECLARATION):
            _put_text(root, ROOT_DECLARATION, "ocfl_1.1\n")
            _put_text(root, "ocfl_layout.json", _layout_json())
        return
    root.mkdir(parents=True, exist_ok=True)
    decl = root / ROOT_DECLARATION
    if not decl.exists():
        decl.write_text("ocfl_1.1\n", encoding="utf-8")
        (root / "ocfl_layout.json").write_text(_layout_json(), encoding="utf-8")


def _layout_json() -> str:
    # 0002 has no parameters, so no extensions/…/config.json
    return json.dumps({"extension": LAYOUT, "description": "Flat direct: each object's root is the storage "
                                                            "root's child named by the object id"}, indent=2)


def _digests(path: Path) -> tuple[str, str, int]:
    """(sha512, sha256, size) in one read."""
    with open(path, "rb") as f:
        return _stream_digests(f)


def _stream_digests(f: BinaryIO) -> tuple[str, str, int]:
    h512, h256, size = hashlib.sha512(), hashlib.sha256(), 0
    while chunk := f.read(CHUNK):
        h512.update(chunk)
        h256.update(chunk)
        size += len(chunk)
    return h512.hexdigest(), h256.hexdigest(), size


def _check_id(object_id: str) -> str:
    if not object_id or "/" in object_id or object_id.startswith("."):
        raise ValueError(f"object id {object_id!r} cannot be a directory name under the flat-direct layout")
    return object_id


def object_path(root: Path, object_id: str) -> Path:
    return root / _check_id(object_id)


def object_exists(root: Path | S3Storage, object_id: str) -> bool:
    """True when the object is there whole (a bucket: its declaration, which is written last)."""
    if _is_bucket(root):
        return root.exists(f"{_check_id(object_id)}/{OBJECT_DECLARATION}")
    return object_path(root, object_id).exists()


def seal(root: Path | S3Storage, object_id: str) -> None:
    """Put every file of a complete object under the bucket's Object Lock retention (folders: nothing to do).

    Idempotent, so a rerun after a crash between the declaration and the lock finishes the job.
    """
    if not _is_bucket(root) or root.lock is None:
        return
    for key in root.list(_check_id(object_id)):
        root.retain(key)


def write_object(root: Path, object_id: str, source: Path, *, message: str, user: str,
                 created: dt.datetime | None = None) -> dict:
    """Store the folder ``source`` as version 1 of a new object; returns its inventory.

    The folder itself is kept as the top of the logical paths (``<source name>/METS.xml``), so
    that a package's root folder stays named after its OBJID inside the object (CSIP1).
    Refuses to touch an object that exists already (a rerun verifies it instead).
    """
    if _is_bucket(root):
        return _write_object_to_bucket(root, object_id, source, message=message, user=user, created=created)
    init_root(root)
    final = object_path(root, object_id)
    if final.exists():
        raise StorageError(f"slutarkiv: object {object_id} exists already")
    work = root.parent / f".{root.name}-work" / f"{object_id}-{uuid.uuid4().hex[:8]}"
    content = work / "v1" / "content"
    manifest: dict[str, list[str]] = {}
    state: dict[str, list[str]] = {}
    fixity: dict[str, list[str]] = {}
    try:
        content.mkdir(parents=True)
        for src in sorted(p for p in source.rglob("*") if p.is_file()):
            logical = f"{source.name}/{src.relative_to(source).as_posix()}"
            dest = content / logical
            dest.parent.mkdir(parents=True, exist_ok=True)
            # copy and hash in one pass
            h512, h256 = hashlib.sha512(), hashlib.sha256()
            with open(src, "rb") as fin, open(dest, "wb") as fout:
                while chunk := fin.read(CHUNK):
                    h512.update(chunk)
                    h256.update(chunk)
                    fout.write(chunk)
                fout.flush()
                os.fsync(fout.fileno())
            d512 = h512.hexdigest()
            manifest.setdefault(d512, []).append(f"v1/content/{logical}")
            state.setdefault(d512, []).append(logical)
            fixity.setdefault(h256.hexdigest(), []).append(f"v1/content/{logical}")
        inventory = {
            "id": object_id, "type": INVENTORY_TYPE, "digestAlgorithm": "sha512", "head": "v1",
            "contentDirectory": "content", "fixity": {"sha256": fixity}, "manifest": manifest,
            "versions": {"v1": {"created": _utc(created).isoformat(), "message": message,
                                "user": {"name": user, "address": USER_ADDRESS}, "state": state}},
        }
        data = json.dumps(inventory, indent=2, ensure_ascii=False).encode("utf-8")
        sidecar = f"{hashlib.sha512(data).hexdigest()} inventory.json\n"
        for folder in (work, work / "v1"):
            (folder / "inventory.json").write_bytes(data)
            (folder / "inventory.json.sha512").write_text(sidecar, encoding="utf-8")
        (work / OBJECT_DECLARATION).write_text("ocfl_object_1.1\n", encoding="utf-8")
        failpoint("ocfl.before_publish")  # the whole object in the work folder, not yet in the root
        os.replace(work, final)  # the object appears whole, or not at all
        fsync_dir(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        parent = root.parent / f".{root.name}-work"
        if parent.exists() and not any(parent.iterdir()):
            parent.rmdir()
    return inventory


def _write_object_to_bucket(store: S3Storage, object_id: str, source: Path, *, message: str, user: str,
                            created: dt.datetime | None) -> dict:
    """Build and verify the object locally, then upload it with verified writes, declaration last, and seal it."""
    init_root(store)
    if object_exists(store, object_id):
        raise StorageError(f"slutarkiv: object {object_id} exists already")
    leftovers = list(store.list(object_id))
    if leftovers:
        # an upload that crashed before the declaration: never sealed, never recorded, its SIP
        # still in the mellanarkiv. Its files (with another receipt time) would block this write.
        for key in leftovers:
            store.discard_unsealed(key, reason=f"partial OCFL object {object_id} without its declaration")
    if store.work_dir is not None:
        store.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="arkiv-ocfl-", dir=store.work_dir) as tmp:
        local = Path(tmp) / "root"
        inventory = write_object(local, object_id, source, message=message, user=user, created=created)
        problems = verify_object(local, object_id)
        if problems:
            raise StorageError(f"slutarkiv: object {object_id} did not verify before upload: {problems[:3]}")
        obj = local / object_id
        sha256_of = {p: d for d, paths in inventory["fixity"]["sha256"].items() for p in paths}
        files = sorted((p for p in obj.rglob("*") if p.is_file()),
                       key=lambda p: (p.name == OBJECT_DECLARATION, p.relative_to(obj).as_posix()))
        for path in files:
            rel = path.relative_to(obj).as_posix()
            if rel == OBJECT_DECLARATION:
                failpoint("ocfl.before_declaration")  # every other file uploaded: an unsealed partial
            store.put(path, f"{object_id}/{rel}", expected_sha256=sha256_of.get(rel), lock=False)
    seal(store, object_id)
    return inventory


def read_inventory(root: Path | S3Storage, object_id: str) -> dict:
    if _is_bucket(root):
        key = f"{_check_id(object_id)}/inventory.json"
        if not root.exists(key):
            raise StorageError(f"slutarkiv: object {object_id} does not exist")
        with root.open(key) as f:
            return json.loads(f.read())
    path = object_path(root, object_id) / "inventory.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StorageError(f"slutarkiv: object {object_id} does not exist") from None


def _verify_files(object_id: str, files: set[str], read: Callable[[str], bytes],
                  digests: Callable[[str], tuple[str, str, int]]) -> list[str]:
    """The checks of :func:`verify_object`, over an object whose stored files (relative paths)
    are ``files``, read small ones whole with ``read`` and stream-hash content with ``digests``."""
    if OBJECT_DECLARATION not in files:
        return [f"{object_id}: no object declaration"]
    problems: list[str] = []
    data = read("inventory.json")  # the inventory is small metadata (kilobytes), not content
    sidecar = read("inventory.json.sha512").decode("utf-8").split()[0]
    if hashlib.sha512(data).hexdigest() != sidecar:
        problems.append(f"{object_id}: inventory.json does not match inventory.json.sha512")
    inventory = json.loads(data)
    listed = set()
    sha256_of = {p: d for d, paths in inventory.get("fixity", {}).get("sha256", {}).items() for p in paths}
    for digest, paths in inventory["manifest"].items():
        for rel in paths:
            listed.add(rel)
            if rel not in files:
                problems.append(f"{object_id}: {rel} is missing")
                continue
            d512, d256, _ = digests(rel)
            if d512 != digest or (rel in sha256_of and sha256_of[rel] != d256):
                problems.append(f"{object_id}: {rel} does not match its digest")
    problems += [f"{object_id}: {rel} is stored but not in the manifest"
                 for rel in sorted(files) if "/content/" in f"/{rel}" and rel not in listed]
    return problems


def verify_object(root: Path | S3Storage, object_id: str) -> list[str]:
    """Every problem with a stored object: inventory digest, missing or altered content. [] when sound."""
    if _is_bucket(root):
        prefix = _check_id(object_id)

        def read(rel: str) -> bytes:
            with root.open(f"{prefix}/{rel}") as f:
                return f.read()

        def stream(rel: str) -> tuple[str, str, int]:
            with root.open(f"{prefix}/{rel}") as f:
                return _stream_digests(f)

        return _verify_files(object_id, {k.removeprefix(prefix + "/") for k in root.list(prefix)}, read, stream)
    obj = object_path(root, object_id)
    files = {p.relative_to(obj).as_posix() for p in obj.rglob("*") if p.is_file()} if obj.is_dir() else set()
    return _verify_files(object_id, files, lambda rel: (obj / rel).read_bytes(), lambda rel: _digests(obj / rel))


def objects(root: Path | S3Storage) -> list[str]:
    """The object ids in a storage root."""
    if _is_bucket(root):
        return sorted(k.split("/")[0] for k in root.list() if k.count("/") == 1
                      and k.endswith(f"/{OBJECT_DECLARATION}"))
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / OBJECT_DECLARATION).is_file())


def head_file(inventory: dict, rel: str) -> tuple[str, str] | None:
    """``(content path, SHA-512)`` of ``rel`` in the head version, or None.

    ``rel`` is a path from the package root (``METS.xml``) or a logical path (``<OBJID>/METS.xml``).
    """
    for digest, logicals in inventory["versions"][inventory["head"]]["state"].items():
        if any(lg == rel or lg.split("/", 1)[-1] == rel for lg in logicals):
            return inventory["manifest"][digest][0], digest
    return None


def open_content(root: Path | S3Storage, object_id: str, content: str) -> BinaryIO:
    """A readable stream of a content file (``v1/content/…``) of an object, folder or bucket (caller closes it)."""
    if _is_bucket(root):
        return root.open(f"{_check_id(object_id)}/{content}")
    try:
        return open(object_path(root, object_id) / content, "rb")
    except FileNotFoundError:
        raise StorageError(f"slutarkiv: {object_id}/{content} does not exist") from None


def content_sizes(root: Path | S3Storage, object_id: str) -> dict[str, int]:
    """Every stored file of an object (path inside the object) with its size, from one listing."""
    if _is_bucket(root):
        prefix = _check_id(object_id)
        return {k.removeprefix(prefix + "/"): size for k, size in root.sizes(prefix)}
    obj = object_path(root, object_id)
    if not obj.is_dir():
        return {}
    return {p.relative_to(obj).as_posix(): p.stat().st_size for p in obj.rglob("*") if p.is_file()}


def read_small(root: Path | S3Storage, object_id: str, content: str) -> bytes:
    """A small content file (metadata) whole."""
    with open_content(root, object_id, content) as f:
        return f.read()
