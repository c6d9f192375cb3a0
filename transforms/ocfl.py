"""The slutarkiv as an OCFL 1.1 storage root (Oxford Common File Layout).

The E-ARK AIP specification recommends OCFL for storing AIPs: every object is versioned,
and a later change (a migration, added metadata, a partial disposal) adds a version instead
of rewriting an earlier one. Objects are written unpacked — each AIP file is a file of the
object — so that every file has its own fixity in the inventory and an unchanged file is
never stored twice across versions.

An object is built completely in a work folder beside the storage root and then renamed
into the root in one step, so a crash leaves either no object or a whole one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from .errors import StorageError
from .hashing import CHUNK, fsync_dir

ROOT_DECLARATION = "0=ocfl_1.1"
OBJECT_DECLARATION = "0=ocfl_object_1.1"
INVENTORY_TYPE = "https://ocfl.io/1.1/spec/#inventory"
LAYOUT = "0002-flat-direct-storage-layout"


USER_ADDRESS = "https://arkivflode.se/agent/arkivflode"  # OCFL asks for a URI naming the user (W008)


def _utc(value: dt.datetime | None) -> dt.datetime:
    """A timestamp with its time zone, as OCFL requires (E049): naive values are UTC."""
    value = value or dt.datetime.now(dt.UTC)
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).replace(microsecond=0)


def init_root(root: Path) -> None:
    """Make ``root`` an OCFL 1.1 storage root (idempotent)."""
    root.mkdir(parents=True, exist_ok=True)
    decl = root / ROOT_DECLARATION
    if not decl.exists():
        decl.write_text("ocfl_1.1\n", encoding="utf-8")
        (root / "ocfl_layout.json").write_text(json.dumps({
            "extension": LAYOUT,
            "description": "Flat direct: each object's root is the storage root's child named by the object id"},
            indent=2), encoding="utf-8")  # 0002 has no parameters, so no extensions/…/config.json


def _digests(path: Path) -> tuple[str, str, int]:
    """(sha512, sha256, size) in one read."""
    h512, h256, size = hashlib.sha512(), hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h512.update(chunk)
            h256.update(chunk)
            size += len(chunk)
    return h512.hexdigest(), h256.hexdigest(), size


def object_path(root: Path, object_id: str) -> Path:
    if not object_id or "/" in object_id or object_id.startswith("."):
        raise ValueError(f"object id {object_id!r} cannot be a directory name under the flat-direct layout")
    return root / object_id


def write_object(root: Path, object_id: str, source: Path, *, message: str, user: str,
                 created: dt.datetime | None = None) -> dict:
    """Store the folder ``source`` as version 1 of a new object; returns its inventory.

    The folder itself is kept as the top of the logical paths (``<source name>/METS.xml``), so
    that a package's root folder stays named after its OBJID inside the object (CSIP1).
    Refuses to touch an object that exists already (a rerun verifies it instead).
    """
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
        os.replace(work, final)  # the object appears whole, or not at all
        fsync_dir(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        parent = root.parent / f".{root.name}-work"
        if parent.exists() and not any(parent.iterdir()):
            parent.rmdir()
    return inventory


def read_inventory(root: Path, object_id: str) -> dict:
    path = object_path(root, object_id) / "inventory.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StorageError(f"slutarkiv: object {object_id} does not exist") from None


def verify_object(root: Path, object_id: str) -> list[str]:
    """Every problem with a stored object: inventory digest, missing or altered content. [] when sound."""
    obj = object_path(root, object_id)
    problems: list[str] = []
    if not (obj / OBJECT_DECLARATION).is_file():
        return [f"{object_id}: no object declaration"]
    data = (obj / "inventory.json").read_bytes()
    sidecar = (obj / "inventory.json.sha512").read_text(encoding="utf-8").split()[0]
    if hashlib.sha512(data).hexdigest() != sidecar:
        problems.append(f"{object_id}: inventory.json does not match inventory.json.sha512")
    inventory = json.loads(data)
    listed = set()
    sha256_of = {p: d for d, paths in inventory.get("fixity", {}).get("sha256", {}).items() for p in paths}
    for digest, paths in inventory["manifest"].items():
        for rel in paths:
            listed.add(rel)
            path = obj / rel
            if not path.is_file():
                problems.append(f"{object_id}: {rel} is missing")
                continue
            d512, d256, _ = _digests(path)
            if d512 != digest or (rel in sha256_of and sha256_of[rel] != d256):
                problems.append(f"{object_id}: {rel} does not match its digest")
    for path in obj.rglob("*"):
        rel = path.relative_to(obj).as_posix()
        if path.is_file() and "/content/" in f"/{rel}" and rel not in listed:
            problems.append(f"{object_id}: {rel} is stored but not in the manifest")
    return problems


def objects(root: Path) -> list[str]:
    """The object ids in a storage root."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / OBJECT_DECLARATION).is_file())
