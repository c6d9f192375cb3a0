"""Open an information package (folder, ``.tar`` in any compression, ``.zip``) without trusting it.

A package handed to ``arkiv validate`` may come from anywhere, so every member name and type is
checked *before* anything is read or written: absolute paths, Windows drive letters and
backslashes, ``..`` components, links, device and FIFO members, duplicate names and names that
are not UTF-8 are refused, and limits on member count, sizes and (for zip) compression ratio keep
the work bounded. A refused package raises :class:`UnsafeArchive`, naming the member and the rule.

The validator does not need to extract anything: :func:`open_package` returns a
:class:`PackageReader` that lists the members and streams them (``ZipFile.open``; a tar member is
read straight from its data offset, never past its declared size). :func:`extract_package` exists
for callers that need real files; it writes only inside a fresh temporary directory that it
removes again.

CSIPSTR1: a package lives in one root folder; an archive must unpack to a single top-level folder,
whose name should be the package's OBJID. The reader exposes that folder as the package root and
says whether the archive had that shape (``single_root``).
"""

from __future__ import annotations

import abc
import contextlib
import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from transforms.errors import ContentError

GiB = 1024**3


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what we agree to read from one package."""

    max_total_bytes: int = 64 * GiB
    max_members: int = 1_000_000
    max_member_bytes: int = 64 * GiB
    max_ratio: float = 200.0  # zip: uncompressed / compressed size, per member and overall
    max_name_bytes: int = 4096
    max_depth: int = 64


DEFAULT_LIMITS = Limits()


class UnsafeArchive(ContentError):
    """The package (or one member of it) breaks a safety rule; nothing was extracted."""

    def __init__(self, archive: str | os.PathLike, member: str | None, rule: str, detail: str = ""):
        self.archive = str(archive)
        self.member = member
        self.rule = rule
        where = f" member {member!r}" if member is not None else ""
        msg = f"unsafe package {Path(self.archive).name}:{where} {rule}"
        super().__init__(msg + (f" ({detail})" if detail else ""))


_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_name(archive: str | os.PathLike, raw: str, limits: Limits) -> str:
    """Return the normalised relative POSIX name of a member, or raise UnsafeArchive."""
    try:
        encoded = raw.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeArchive(archive, raw.encode("utf-8", "replace").decode(), "name is not valid UTF-8") from None
    if len(encoded) > limits.max_name_bytes:
        raise UnsafeArchive(archive, raw[:80] + "…", "name is too long", f"{len(encoded)} bytes")
    if _CONTROL.search(raw):
        raise UnsafeArchive(archive, raw, "name contains control characters")
    if "\\" in raw:
        raise UnsafeArchive(archive, raw, "name contains a backslash (Windows path)")
    if _DRIVE.match(raw):
        raise UnsafeArchive(archive, raw, "name has a Windows drive letter (absolute path)")
    if raw.startswith("/"):
        raise UnsafeArchive(archive, raw, "name is an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeArchive(archive, raw, "name has a '..' component (path traversal)")
    if not parts:
        raise UnsafeArchive(archive, raw, "name is empty")
    if len(parts) > limits.max_depth:
        raise UnsafeArchive(archive, raw, "name is nested too deeply", f"{len(parts)} levels")
    return "/".join(parts)


class _Inventory:
    """Collects checked member names, sizes and limits while an archive's index is read."""

    def __init__(self, archive: str | os.PathLike, limits: Limits):
        self.archive = archive
        self.limits = limits
        self.files: dict[str, int] = {}  # name -> size
        self.offsets: dict[str, int] | None = None  # tar: name -> data offset (-1: read via tarfile)
        self.dirs: set[str] = set()
        self.total = 0
        self.count = 0

    def add(self, raw: str, *, is_dir: bool, size: int = 0) -> str:
        self.count += 1
        if self.count > self.limits.max_members:
            raise UnsafeArchive(self.archive, None, "too many members", f"limit {self.limits.max_members}")
        name = _check_name(self.archive, raw, self.limits)
        if name in self.files or (not is_dir and name in self.dirs):
            raise UnsafeArchive(self.archive, raw, "duplicate member name")
        if is_dir:
            self.dirs.add(name)
            return name
        if size < 0 or size > self.limits.max_member_bytes:
            raise UnsafeArchive(self.archive, raw, "member is too large",
                                f"{size} bytes, limit {self.limits.max_member_bytes}")
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise UnsafeArchive(self.archive, raw, "package is too large",
                                f"over {self.limits.max_total_bytes} bytes uncompressed")
        self.files[name] = size
        return name

    def finish(self) -> None:
        # Every parent of a file is a folder; a file may not also be used as a folder.
        for name in list(self.files):
            parent = PurePosixPath(name).parent
            while str(parent) != ".":
                p = str(parent)
                if p in self.files:
                    raise UnsafeArchive(self.archive, name, "a member is both a file and a folder", p)
                self.dirs.add(p)
                parent = parent.parent


class PackageReader(abc.ABC):
    """Read-only view of a package: member listing and streaming, paths relative to its root.

    ``root`` is the package root folder's name (CSIPSTR1/2); ``single_root`` is False when an
    archive did not unpack to exactly one top-level folder (then the archive's top level is used).
    """

    source: Path
    root: str
    single_root: bool

    def __init__(self, source: Path, inventory: _Inventory, *, prefix: str | None, root: str):
        self.source = source
        self.root = root
        self.single_root = prefix is not None or not inventory.files or source.is_dir()
        self._prefix = prefix
        cut = len(prefix) + 1 if prefix else 0
        self.dirs = {d[cut:] for d in inventory.dirs if not prefix or d.startswith(prefix + "/")}
        self.sizes: dict[str, int] = {}
        self._offsets: dict[str, int] = {}  # tar only: rel -> data offset
        # The inventory is consumed member by member, so its full names are freed while the
        # relative ones are made: a large package never holds both sets of names at once.
        files, offsets = inventory.files, inventory.offsets
        while files:
            name, size = files.popitem()
            rel = name[cut:] if cut else name
            self.sizes[rel] = size
            if offsets is not None:
                self._offsets[rel] = offsets.pop(name)

    def _member(self, rel: str) -> str:
        """The member's name in the archive (or path in the folder), root folder included."""
        return f"{self._prefix}/{rel}" if self._prefix else rel

    # -- listing -------------------------------------------------------------------------
    def files(self) -> list[str]:
        """Every regular file, as a relative POSIX path, sorted."""
        return sorted(self.sizes)

    def is_file(self, rel: str) -> bool:
        return rel in self.sizes

    def is_dir(self, rel: str) -> bool:
        return rel in ("", ".") or rel in self.dirs

    def size(self, rel: str) -> int:
        return self.sizes[rel]

    def listdir(self, rel: str = "") -> list[str]:
        """Names directly inside folder ``rel`` (files and folders), sorted."""
        prefix = f"{rel}/" if rel not in ("", ".") else ""
        names = set()
        for p in list(self.sizes) + list(self.dirs):
            if p.startswith(prefix) and p != rel:
                rest = p[len(prefix):]
                if rest:
                    names.add(rest.split("/", 1)[0])
        return sorted(names)

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    # -- reading -------------------------------------------------------------------------
    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        """A binary stream of one member (never the whole file in memory)."""
        if rel not in self.sizes:
            raise FileNotFoundError(rel)
        with self._open(rel) as fh:
            yield fh

    def read_bytes(self, rel: str, limit: int) -> bytes:
        """The member's content, refusing members larger than ``limit`` bytes."""
        if self.sizes.get(rel, 0) > limit:
            raise UnsafeArchive(self.source, rel, "member is too large to read into memory", f"limit {limit}")
        # Read what the member is, chunk by chunk, never more than limit + 1: a single
        # read(limit + 1) makes some streams allocate (and touch) the whole limit up front.
        parts, total = [], 0
        with self.open(rel) as fh:
            while total <= limit:
                chunk = fh.read(min(1 << 20, limit + 1 - total))
                if not chunk:
                    break
                parts.append(chunk)
                total += len(chunk)
        if total > limit:
            raise UnsafeArchive(self.source, rel, "member is larger than its header says")
        return b"".join(parts)

    @abc.abstractmethod
    def _open(self, rel: str):
        """A readable binary stream of one listed member (each kind of package implements it)."""

    def close(self) -> None:  # noqa: B027 - a folder holds no handle; archives override it
        """Release the underlying archive handle."""

    def __enter__(self) -> PackageReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _DirReader(PackageReader):
    def _open(self, rel: str):
        # O_NOFOLLOW: a link swapped in after the scan is refused rather than followed.
        fd = os.open(self.source / self._member(rel), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        return os.fdopen(fd, "rb")


class _MemberFile(io.RawIOBase):
    """Exactly ``size`` bytes of an open archive stream, starting at ``offset``.

    Reads never go past the member's end, and an archive that ends inside the member (it was
    cut after the scan) raises :class:`UnsafeArchive` instead of returning short data. Each
    read seeks first, so several members may be open at once over the same stream. Closing
    it leaves the archive stream open (the reader owns that).
    """

    def __init__(self, fileobj, offset: int, size: int, source: Path, name: str):
        super().__init__()
        self._f, self._start, self._size = fileobj, offset, size
        self._source, self._name = source, name
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence!r}")
        if base + pos < 0:
            raise ValueError("negative seek position")
        self._pos = base + pos
        return self._pos

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._start + self._pos)
        data = self._f.read(n)
        if len(data) < n:
            raise UnsafeArchive(self._source, self._name, "member is truncated (the archive ends inside it)")
        buffer[:n] = data
        self._pos += n
        return n


class _TarReader(PackageReader):
    """Reads members at their data offsets; only the (rare) sparse members go through tarfile."""

    def __init__(self, source, inventory, tf: tarfile.TarFile, sparse: dict[str, tarfile.TarInfo], **kw):
        super().__init__(source, inventory, **kw)
        self._tf = tf
        self._sparse = sparse  # full name -> TarInfo, for members whose data is not one run

    def _open(self, rel: str):
        offset = self._offsets[rel]
        if offset < 0:
            fh = self._tf.extractfile(self._sparse[self._member(rel)])
            if fh is None:  # pragma: no cover - only regular members are listed
                raise FileNotFoundError(rel)
            return fh
        raw = _MemberFile(self._tf.fileobj, offset, self.sizes[rel], self.source, rel)
        return io.BufferedReader(raw, 64 * 1024)

    def close(self) -> None:
        self._tf.close()


class _ZipReader(PackageReader):
    def __init__(self, source, inventory, zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], **kw):
        super().__init__(source, inventory, **kw)
        self._zf = zf
        self._members = members

    def _open(self, rel: str):
        # ZipExtFile stops at the declared file_size and checks the CRC, so a member cannot
        # inflate past what its (ratio-checked) header promised.
        return self._zf.open(self._members[self._member(rel)])

    def close(self) -> None:
        self._zf.close()


def _scan_dir(path: Path, limits: Limits) -> _Inventory:
    inv = _Inventory(path, limits)
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(path).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeArchive(path, rel, "symbolic link (links are not allowed in a package)")
            if stat.S_ISDIR(st.st_mode):
                inv.add(rel, is_dir=True)
            elif stat.S_ISREG(st.st_mode):
                inv.add(rel, is_dir=False, size=st.st_size)
            else:
                raise UnsafeArchive(path, rel, "special file (device, FIFO or socket)")
    inv.finish()
    return inv


def _scan_tar(path: Path, tf: tarfile.TarFile, limits: Limits) -> tuple[_Inventory, dict[str, tarfile.TarInfo]]:
    """Check every header; index regular members by name as (size, data offset) only.

    A TarInfo costs about a kilobyte (more with PAX headers), so none is kept: ``tf.members``
    is emptied after each header and the inventory holds the name, size and data offset
    (``offset_data``, which lies after any PAX or GNU long-name headers). Sparse members, whose
    data is not one run of bytes, keep their TarInfo and are read through tarfile.
    """
    inv = _Inventory(path, limits)
    inv.offsets = {}
    sparse: dict[str, tarfile.TarInfo] = {}
    # One header at a time (not getmembers()), so the member-count limit stops a huge index early.
    while (ti := tf.next()) is not None:
        tf.members.clear()
        if ti.issym() or ti.islnk():
            raise UnsafeArchive(path, ti.name, "link member (symlinks and hardlinks are not allowed)",
                                f"-> {ti.linkname}")
        if ti.ischr() or ti.isblk() or ti.isfifo():
            raise UnsafeArchive(path, ti.name, "device or FIFO member")
        if ti.isdir():
            inv.add(ti.name, is_dir=True)
        elif ti.isreg():
            name = inv.add(ti.name, is_dir=False, size=ti.size)
            if ti.sparse is not None:
                sparse[name] = ti
                inv.offsets[name] = -1
            else:
                inv.offsets[name] = ti.offset_data
        else:
            raise UnsafeArchive(path, ti.name, "unsupported member type", repr(ti.type))
    inv.finish()
    return inv, sparse


def _zip_name(info: zipfile.ZipInfo, path: Path) -> str:
    if info.flag_bits & 0x800:
        return info.filename
    # Without the UTF-8 flag, zipfile decoded the name as CP437; many tools write UTF-8
    # without setting the flag, so accept the bytes if they are valid UTF-8 (ASCII included).
    raw = info.filename.encode("cp437")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeArchive(path, info.filename, "name is not valid UTF-8") from None


def _scan_zip(path: Path, zf: zipfile.ZipFile, limits: Limits) -> tuple[_Inventory, dict[str, zipfile.ZipInfo]]:
    inv = _Inventory(path, limits)
    members: dict[str, zipfile.ZipInfo] = {}
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise UnsafeArchive(path, None, "too many members", f"{len(infos)}, limit {limits.max_members}")
    compressed_total = 0
    for info in infos:
        name = _zip_name(info, path)
        mode = (info.external_attr >> 16) & 0xFFFF
        if info.create_system == 3 and mode:  # Unix attributes present
            if stat.S_ISLNK(mode):
                raise UnsafeArchive(path, name, "link member (symlinks are not allowed)")
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                raise UnsafeArchive(path, name, "device or FIFO member")
        if info.flag_bits & 0x1:
            raise UnsafeArchive(path, name, "encrypted member")
        if name.endswith("/"):
            inv.add(name, is_dir=True)
            continue
        if info.file_size > 0:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_ratio:
                raise UnsafeArchive(path, name, "compression ratio too high (zip bomb?)",
                                    f"{ratio:.0f}:1, limit {limits.max_ratio:.0f}:1")
        compressed_total += info.compress_size
        members[inv.add(name, is_dir=False, size=info.file_size)] = info
    if inv.total and inv.total / max(compressed_total, 1) > limits.max_ratio:
        raise UnsafeArchive(path, None, "overall compression ratio too high (zip bomb?)")
    inv.finish()
    return inv, members


def _package_root(inv: _Inventory) -> str | None:
    """The single top-level folder that holds everything, or None (CSIPSTR1)."""
    tops = {n.split("/", 1)[0] for n in list(inv.files) + list(inv.dirs)}
    if len(tops) == 1:
        top = next(iter(tops))
        if top in inv.dirs and top not in inv.files:
            return top
    return None


def open_package(path: str | os.PathLike, limits: Limits | None = None) -> PackageReader:
    """Check every member of a folder, tar or zip package and return a reader for it.

    Raises :class:`UnsafeArchive` on the first rule broken, FileNotFoundError when ``path`` does
    not exist, and :class:`ContentError` when it is neither a folder nor a readable archive.
    """
    limits = limits or DEFAULT_LIMITS
    src = Path(path)
    if src.is_symlink():
        raise UnsafeArchive(src, None, "the package path itself is a symbolic link")
    if not src.exists():
        raise FileNotFoundError(str(src))
    if src.is_dir():
        inv = _scan_dir(src, limits)
        # A folder that only wraps the package root (no METS.xml, a single sub-folder) is read
        # like an archive: the sub-folder is the package root (CSIPSTR1).
        prefix = _package_root(inv) if "METS.xml" not in inv.files else None
        if prefix is not None:
            return _DirReader(src, inv, prefix=prefix, root=prefix)
        return _DirReader(src, inv, prefix=None, root=src.resolve().name)
    if not src.is_file():
        raise UnsafeArchive(src, None, "not a regular file or folder")
    if zipfile.is_zipfile(src):
        try:
            zf = zipfile.ZipFile(src)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ContentError(f"{src.name}: not a readable zip archive: {exc}") from None
        try:
            inv, zmembers = _scan_zip(src, zf, limits)
        except BaseException:
            zf.close()
            raise
        prefix = _package_root(inv)
        return _ZipReader(src, inv, zf, zmembers, prefix=prefix, root=prefix or _stem(src))
    try:
        tf = tarfile.open(src, "r:*", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115 - reader owns it
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ContentError(f"{src.name}: not a folder, tar or zip package: {exc}") from None
    try:
        inv, sparse = _scan_tar(src, tf, limits)
    except (tarfile.TarError, EOFError, OSError) as exc:
        tf.close()
        raise ContentError(f"{src.name}: damaged tar archive: {exc}") from None
    except BaseException:
        tf.close()
        raise
    prefix = _package_root(inv)
    return _TarReader(src, inv, tf, sparse, prefix=prefix, root=prefix or _stem(src))


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


@contextlib.contextmanager
def extract_package(path: str | os.PathLike, limits: Limits | None = None,
                    parent: str | os.PathLike | None = None) -> Iterator[Path]:
    """Extract a checked package into a fresh temporary folder; yields the package root there.

    The temporary folder (created under ``parent`` or the system default) is removed on exit.
    Files are created exclusively and without following links, so nothing lands outside it.
    """
    with open_package(path, limits) as reader:
        tmp = Path(tempfile.mkdtemp(prefix="arkiv-pkg-", dir=parent))
        try:
            root = tmp / reader.root
            root.mkdir()
            base = root.resolve()
            for d in sorted(reader.dirs):
                (root / d).mkdir(parents=True, exist_ok=True)
            for rel in reader.files():
                target = (root / rel)
                if not target.resolve().is_relative_to(base):  # defence in depth
                    raise UnsafeArchive(path, rel, "would be written outside the extraction folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                fd = os.open(target, flags, 0o600)
                with os.fdopen(fd, "wb") as out, reader.open(rel) as src:
                    shutil.copyfileobj(src, out, 1024 * 1024)
            yield root
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
