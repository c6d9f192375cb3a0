"""One writer for every CSIP package we make: the SIP, the DIP, the disposal certificate, and what the AIP adds.

A package is laid out as E-ARK CSIP 2.1.0 says::

    <OBJID>/METS.xml                               root METS: metadata sections, fileSec, structMap
    <OBJID>/metadata/descriptive/…                 dmdSec files (ERMS, our retention extension)
    <OBJID>/metadata/preservation/premis.xml       package-level PREMIS (digiprovMD)
    <OBJID>/representations/<rep>/METS.xml         a representation's METS, listing its data
    <OBJID>/representations/<rep>/metadata/preservation/premis.xml
    <OBJID>/representations/<rep>/data/…          the files
    <OBJID>/documentation/…
    <OBJID>/schemas/*.xsd                          every schema the package's XML uses

Its callers describe content; :class:`PackageWriter` does the rest. Each file given to
:meth:`~PackageWriter.add` is copied in once, hashed on the way, and comes back as a
:class:`~transforms.packaging.mets.FileRef` (ID, path, MIME type, size, SHA-256, date) for METS to
list. XML the writer makes (PREMIS, METS, or any document a caller streams through
:meth:`~PackageWriter.spool`) goes through a file in a work folder, is checked against its schema
and copied in; the schemas it uses are remembered and written to ``schemas/`` (:meth:`~PackageWriter.add_schemas`).
:meth:`~PackageWriter.finish` writes the root METS last, listing every metadata file, file group and
representation with its checksum, and gives the package its name.

Memory stays bounded whatever the package: data are copied a chunk at a time, and a
representation's file list is read from a re-iterable (a spool on disk) once for PREMIS and once
for METS. The package is written under a temporary name (``.<OBJID>.tar.part-…`` or a folder
``.<OBJID>.part-…``), fsynced and renamed; on an error nothing is left but what was there.

Two forms: ``"tar"`` (one PAX TAR stream, byte for byte reproducible: member dates are those
given, never the clock's) and ``"folder"`` (for a package that goes to OCFL as a folder).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lxml import etree

from transforms.common.errors import PackageError
from transforms.common.hashing import BackgroundHashingWriter, fsync_dir
from transforms.common.tarstream import SourceSizeError, TarStream
from transforms.common.xmltools import (
    NS_METS,
    NS_PREMIS,
    SCHEMA_DIR,
    file_schema_errors,
    parse_bytes,
    schema_errors,
    schemas_used,
)
from transforms.packaging import premis
from transforms.packaging.fgs import MetsAgent, Profile, profile_url
from transforms.packaging.mets import (
    CSIP,
    XLINK,
    FileGroup,
    FileRef,
    M,
    MetadataRef,
    file_element,
    metadata_element,
    timestamp,
    write_mets,
)

#: bytes buffered before each write to the package TAR (its small members reach the disk in a few
#: large writes, not one each; hashed and written by a helper thread while the next buffer fills)
#: and to the METS, PREMIS and ERMS files written an element at a time
WRITE_BUFFER = 1 << 20
#: the schemas every METS document uses (its elements, xlink:href, the csip: attributes)
METS_SCHEMAS = frozenset({"mets.xsd", "xlink.xsd", "DILCISExtensionMETS.xsd"})
XML = "application/xml"

#: how a caller checks a document the writer spooled: (path, root namespace, what) -> raise if invalid.
#: The SIP hands the check to its identification workers; by default it runs at once.
Check = Callable[[Path, str, str], None]


class PackageBuildError(PackageError):
    """The package could not be built (a file changed while copied, an XML failed its schema)."""


@dataclass(frozen=True)
class Written:
    """A finished package: where it is, its size and SHA-256 (of the TAR; a folder has neither)."""

    package_id: str
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class _Representation:
    name: str
    mets: FileRef  # href relative to the package root


class _Spool:
    """An XML document being written into the work folder; :attr:`ref` once it is in the package."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.ref: FileRef | None = None
        self.schemas: set[str] = set()

    def uses(self, names: Iterable[str]) -> None:
        """The bundled schemas the document uses (as the ``write_*`` functions return them)."""
        self.schemas.update(names)


class PackageWriter:
    """One CSIP package, written in one pass into ``dest`` as ``<objid>.tar`` or the folder ``<objid>``.

    ``created`` dates METS, PREMIS and whatever the writer adds without a date of its own.
    ``check``: how a spooled document is checked against its schema (default: at once, raising
    :class:`PackageBuildError`). Use as a context manager: an error inside it removes the temporary
    package and work folder; :meth:`finish` must be called inside it for the package to exist.
    """

    def __init__(self, dest: Path, objid: str, *, profile: Profile, package_type: str, created: dt.datetime,
                 form: str = "tar", check: Check | None = None):
        if form not in ("tar", "folder"):
            raise ValueError(f"package form must be 'tar' or 'folder', not {form!r}")
        self.objid, self.profile, self.package_type, self.created, self.form = objid, profile, package_type, \
            created, form
        self.dest = Path(dest)
        tag = uuid.uuid4().hex[:8]
        self.final = self.dest / (f"{objid}.tar" if form == "tar" else objid)
        self.tmp = self.dest / (f".{objid}.tar.part-{tag}" if form == "tar" else f".{objid}.part-{tag}")
        self.work = self.dest / f".{objid}.work-{tag}"
        self._check = check or self._check_now
        #: the date of what the writer adds without one of its own (a naive ``created`` is UTC)
        self._mtime = int((created if created.tzinfo else created.replace(tzinfo=dt.UTC)).timestamp())
        self._metadata: list[MetadataRef] = []
        self._groups: dict[str, list[FileRef]] = {}
        self._representations: list[_Representation] = []
        self._schemas_used: set[str] = set()
        self._schemas_written: set[str] = set()
        self._schema_refs: list[FileRef] = []
        self._raw: BinaryIO | None = None
        self._out: BackgroundHashingWriter | None = None
        self._tar: TarStream | None = None
        self._done = False

    # -- lifetime ---------------------------------------------------------------------------------
    def __enter__(self) -> PackageWriter:
        self.dest.mkdir(parents=True, exist_ok=True)
        self.work.mkdir()
        if self.form == "tar":
            self._raw = open(self.tmp, "wb", buffering=0)  # noqa: SIM115 - closed in finish/__exit__
            self._out = BackgroundHashingWriter(self._raw, WRITE_BUFFER)  # the package's digest, one pass
            self._tar = TarStream(self._out)
        else:
            self.tmp.mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Cleaning up must not stop half way: the helper thread's last write may fail again on a
        # full disk; the temporary is removed whatever stopping it or closing the file says.
        try:
            if self._tar is not None and not self._done:
                self._tar.__exit__(exc_type or RuntimeError, None, None)  # never ends an unfinished archive
            if self._out is not None and not self._done:
                self._out.abandon()  # what is buffered is not written: the package is removed below
            if self._raw is not None and not self._raw.closed:
                self._raw.close()
        except OSError:
            if exc_type is None:
                raise
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
            if not self._done:
                if self.form == "tar":
                    self.tmp.unlink(missing_ok=True)
                else:
                    shutil.rmtree(self.tmp, ignore_errors=True)

    # -- files ------------------------------------------------------------------------------------
    def add(self, arcname: str, source: bytes | Path | BinaryIO | Iterable[bytes], *, file_id: str, mime: str,
            size: int | None = None, mtime: float | None = None, group: str | None = None) -> FileRef:
        """Copy one file into the package at ``arcname`` (relative to the package root); its METS entry.

        ``source``: bytes, a path, an open binary file or an iterable of byte chunks (the last two
        with ``size``, which they must give exactly: a source that changed while it was copied fails
        the package). ``mtime``: the file's date in the package (default ``created``). The entry's
        ``href`` is relative to the METS that lists it: a representation's, for a file under
        ``representations/<rep>/``, else the root's. ``group``: a file group of the root METS
        (``Documentation`` …) to list it in.
        """
        when = self._mtime if mtime is None else mtime
        if isinstance(source, bytes | bytearray):
            digest, size = self._put_bytes(arcname, bytes(source), when)
        elif isinstance(source, str | Path):
            with open(source, "rb", buffering=0) as fh:
                digest, size = self._put_stream(arcname, fh, os.fstat(fh.fileno()).st_size, when)
        else:
            if size is None:
                raise ValueError(f"{arcname}: the size of a streamed source must be given")
            readable = source if hasattr(source, "read") else _ChunkReader(source)  # type: ignore[arg-type]
            digest, size = self._put_stream(arcname, readable, size, when)  # type: ignore[arg-type]
        created = self.created if mtime is None else dt.datetime.fromtimestamp(int(mtime), dt.UTC)
        ref = FileRef(file_id, _href(arcname), mime, size, digest, created)
        if group is not None:
            self._groups.setdefault(group, []).append(ref)
        return ref

    def add_metadata(self, arcname: str, source: bytes | Path, *, file_id: str, mdtype: str,
                     other_mdtype: str | None = None, section: str = "dmdSec", mime: str = XML) -> FileRef:
        """A metadata file of the root METS: a ``dmdSec`` (descriptive) or a ``digiprovMD`` (provenance)."""
        ref = self.add(arcname, source, file_id=file_id, mime=mime)
        self._metadata.append(MetadataRef(section, ref, mdtype, other_mdtype))
        return ref

    def xml(self, tree: etree._ElementTree | etree._Element, what: str) -> bytes:
        """A small document made in memory, checked against its schema and serialised; its schemas are noted."""
        errors = schema_errors(tree)
        if errors:
            raise PackageBuildError(f"{what} of package {self.objid} does not validate against its schema: "
                                    + "; ".join(errors[:5]))
        self._schemas_used.update(schemas_used(tree))
        return etree.tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True)

    @contextlib.contextmanager
    def spool(self, arcname: str, *, namespace: str, file_id: str, metadata: tuple[str, str, str | None] | None = None
              ) -> Iterator[_Spool]:
        """Write a document of any size into the package: yields a spool whose ``file`` the caller writes.

        Other files may be added while it is open (the ERMS of a SIP is written case by case as the
        cases' documents go in). When the block ends the document is checked (``check``) against
        the schema of ``namespace`` and copied in; ``metadata``: ``(section, mdtype, other_mdtype)``
        to list it as a metadata section of the root METS.
        """
        path = self.work / f"{uuid.uuid4().hex[:8]}-{arcname.rsplit('/', 1)[-1]}"
        with open(path, "wb", buffering=WRITE_BUFFER) as fh:
            spool = _Spool(fh)
            yield spool
        self._check(path, namespace, arcname)
        self._schemas_used.update(spool.schemas)
        if metadata is None:
            spool.ref = self.add(arcname, path, file_id=file_id, mime=XML)
        else:
            section, mdtype, other = metadata
            spool.ref = self.add_metadata(arcname, path, file_id=file_id, mdtype=mdtype, other_mdtype=other,
                                          section=section)

    def premis(self, events: Sequence[premis.Event], agents: Sequence[premis.Agent], *,
               representations: Sequence[str] = ()) -> FileRef:
        """The package-level PREMIS (``metadata/preservation/premis.xml``): events on the package and its
        representations (named by their folders, ``representations/rep1``), with their agents."""
        with self.spool("metadata/preservation/premis.xml", namespace=NS_PREMIS, file_id="digiprov-premis",
                        metadata=("digiprovMD", "PREMIS", None)) as sp:
            sp.uses(premis.write_premis(sp.file, [], events, agents, representations=representations))
        return sp.ref  # type: ignore[return-value]

    def representation(self, name: str, files: Iterable[tuple[FileRef, premis.FileObject]], *, label: str,
                       events: Sequence[premis.Event] = (), agents: Sequence[premis.Agent] = (),
                       content_information_type: str | None = None,
                       other_content_information_type: str | None = None) -> FileRef:
        """A representation's PREMIS and METS, from the files :meth:`add` put under ``representations/<name>/data``.

        ``files`` (each file's METS entry and PREMIS object) is read twice, so it must be re-iterable:
        a list, or a spool on disk for a large package. Its PREMIS (when there are files or events)
        describes the files and carries ``events``; its METS lists the files in one group
        ``Representations/<name>/data``. The root METS lists both by the representation.
        """
        base = f"representations/{name}"
        metadata = []
        has_files = bool(_peek(files))
        if has_files or events:
            with self.spool(f"{base}/metadata/preservation/premis.xml", namespace=NS_PREMIS,
                            file_id=f"digiprov-premis-{name}") as sp:
                sp.uses(premis.write_premis(sp.file, (obj for _, obj in files), events, agents,
                                            schema_prefix="../../../../"))
            metadata.append(MetadataRef("digiprovMD", sp.ref, "PREMIS"))  # type: ignore[arg-type]
        cit = content_information_type or self.profile.content_information_type
        other = other_content_information_type if content_information_type else \
            self.profile.other_content_information_type
        with self.spool(f"{base}/METS.xml", namespace=NS_METS, file_id=f"mets-{name}") as sp:
            sp.uses(write_mets(
                sp.file, objid=name, label=label, profile=self.profile, package_type=self.package_type,
                created=self.created, agents=[self.profile.software_agent()], metadata=metadata,
                groups=[FileGroup(f"Representations/{name}/data", (ref for ref, _ in files), cit, other)]
                if has_files else [],
                schema_prefix="../../", profile_url=profile_url(self.package_type)))
        rep = _Representation(name, sp.ref)  # type: ignore[arg-type]
        self._representations.append(rep)
        return rep.mets

    def add_schemas(self, names: Iterable[str] = ()) -> list[FileRef]:
        """Write into ``schemas/`` every bundled schema the package's XML uses so far, and ``names``;
        each once, in name order, listed in the root METS's ``Schemas`` group."""
        wanted = sorted((self._schemas_used | set(names)) - self._schemas_written)
        refs = []
        for name in wanted:
            data = (SCHEMA_DIR / name).read_bytes()
            refs.append(self.add(f"schemas/{name}", data, file_id=f"schema-{len(self._schema_refs) + len(refs)}",
                                 mime=XML))
            self._schemas_written.add(name)
        self._schema_refs.extend(refs)
        return refs

    # -- the end ----------------------------------------------------------------------------------
    def finish(self, *, label: str, agents: Sequence[MetsAgent] | None = None,
               alt_record_ids: Sequence[tuple[str, str]] = (), groups_first: Sequence[str] = ("Documentation",),
               checks: Iterable[Callable[[], None]] = ()) -> Written:
        """Write the schemas still missing and the root METS, then give the package its name.

        The root METS lists the metadata sections, the groups files were added to (``groups_first``
        in that order, then ``Schemas``, then any other), and each representation by its METS (CSIP
        105–112). ``agents``: its metsHdr agents (default: the software). ``checks``: deferred
        schema checks still to be awaited before the package is named (each raises if its
        document is invalid).
        """
        self.add_schemas(METS_SCHEMAS | ({"DILCISExtensionSIPMETS.xsd"} if self.package_type == "SIP" else set()))
        order = [g for g in groups_first if g in self._groups] + ["Schemas"] + \
            [g for g in self._groups if g not in groups_first]
        listed = {**self._groups, "Schemas": self._schema_refs}
        groups = [FileGroup(g, listed[g]) for g in order]
        cit, other = self.profile.content_information_type, self.profile.other_content_information_type
        groups += [FileGroup(f"Representations/{r.name}", [r.mets], cit, other)  # CSIP62/63
                   for r in self._representations]
        path = self.work / "METS.xml"
        with open(path, "wb", buffering=WRITE_BUFFER) as fh:
            write_mets(fh, objid=self.objid, label=label, profile=self.profile, package_type=self.package_type,
                       created=self.created, agents=agents if agents is not None else [self.profile.software_agent()],
                       alt_record_ids=alt_record_ids, metadata=self._metadata, groups=groups,
                       representations=[(r.name, r.mets.href) for r in self._representations],
                       profile_url=profile_url(self.package_type))
        self._check_now(path, NS_METS, "METS.xml")
        self.add("METS.xml", path, file_id="mets", mime=XML)
        for check in checks:
            check()
        return self._close()

    def _close(self) -> Written:
        size = digest = None
        if self.form == "tar":
            self._tar.close()  # type: ignore[union-attr]
            self._out.close()  # type: ignore[union-attr]  # every byte hashed and written
            os.fsync(self._raw.fileno())  # type: ignore[union-attr]
            self._raw.close()  # type: ignore[union-attr]
            size, digest = self._out.size, self._out.hexdigest()  # type: ignore[union-attr]
        else:
            for folder, _, files in os.walk(self.tmp):
                for name in files:
                    _fsync_file(Path(folder) / name)
        os.replace(self.tmp, self.final)
        fsync_dir(self.dest)
        self._done = True
        return Written(self.objid, self.final, size or 0, digest or "")

    # -- bytes into the package -------------------------------------------------------------------
    def _put_bytes(self, arcname: str, data: bytes, when: float) -> tuple[str, int]:
        if self._tar is not None:
            self._tar.add_bytes(f"{self.objid}/{arcname}", data, int(when))
        else:
            target = self._target(arcname)
            target.write_bytes(data)
            os.utime(target, (int(when), int(when)))
        return hashlib.sha256(data).hexdigest(), len(data)

    def _put_stream(self, arcname: str, src: BinaryIO, size: int, when: float) -> tuple[str, int]:
        try:
            if self._tar is not None:
                return self._tar.add_file(f"{self.objid}/{arcname}", src, size, int(when))
            target = self._target(arcname)
            sha, done = hashlib.sha256(), 0
            with open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    sha.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
            if done != size:
                raise SourceSizeError(arcname, size, done)
            os.utime(target, (int(when), int(when)))
            return sha.hexdigest(), size
        except SourceSizeError:
            raise PackageBuildError(f"{arcname.rsplit('/', 1)[-1]}: changed while it was being copied into package "
                                    f"{self.objid}") from None

    def _target(self, arcname: str) -> Path:
        target = self.tmp / arcname
        if not target.resolve().is_relative_to(self.tmp.resolve()):
            raise PackageBuildError(f"{arcname}: not a path inside package {self.objid}")
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def _check_now(self, path: Path, namespace: str, what: str) -> None:
        errors = file_schema_errors(path, namespace)
        if errors:
            raise PackageBuildError(f"{what} of package {self.objid} does not validate against its schema: "
                                    + "; ".join(errors[:5]))


def _href(arcname: str) -> str:
    """A file's path as the METS that lists it gives it: below its representation's folder, or the root's."""
    if arcname.startswith("representations/"):
        parts = arcname.split("/", 2)
        if len(parts) == 3 and parts[2] != "METS.xml":
            return parts[2]
    return arcname


def _peek(files: Iterable) -> bool:
    """Whether a re-iterable has an item (a sized one is asked its length: a spool is not read for it)."""
    if hasattr(files, "__len__"):
        return len(files) > 0  # type: ignore[arg-type]
    return next(iter(files), None) is not None


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fsync(fd)
    finally:
        os.close(fd)


class _ChunkReader:
    """``read`` over an iterable of byte chunks (a ranged read of a stored document)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks, self._buf = iter(chunks), b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buf += chunk
        if n < 0:
            data, self._buf = self._buf, b""
        else:
            data, self._buf = self._buf[:n], self._buf[n:]
        return data




def amend(root: Path, *, package_type: str, created: dt.datetime,
          metadata: Sequence[tuple[str, bytes, str, str, str | None]] = (), schemas: Iterable[str] = ()) -> None:
    """Add provenance to the package folder ``root`` (one made by a writer, or taken in as delivered) and
    declare it ``package_type``, keeping every other file and METS entry as it is.

    ``metadata``: ``(path, bytes, ID, MDTYPE, OTHERMDTYPE)`` of each file to add as a ``digiprovMD``
    of the root METS; ``schemas``: bundled schemas their XML uses, added to ``schemas/`` and the
    ``Schemas`` group when missing. Each METS gets the CSIP profile of ``package_type``, its
    ``OAISPACKAGETYPE`` and ``created`` as LASTMODDATE; the root METS's entries of the
    representation METS it rewrote get their new size and checksum. Every file is replaced
    atomically; the root METS, which lists the others, last.
    """
    for path, data, *_ in metadata:
        _replace(root / path, data)
    for name in schemas:
        if not (root / "schemas" / name).exists():
            _replace(root / "schemas" / name, (SCHEMA_DIR / name).read_bytes())
    changed: dict[str, bytes] = {}
    for rep_mets in sorted(root.glob("representations/*/METS.xml")):
        tree = parse_bytes(rep_mets.read_bytes(), name=rep_mets.name)
        _declare(tree.getroot(), package_type, created)
        data = etree.tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True)
        _replace(rep_mets, data)
        changed[rep_mets.relative_to(root).as_posix()] = data
    tree = parse_bytes((root / "METS.xml").read_bytes(), name="METS.xml")
    mets = tree.getroot()
    _declare(mets, package_type, created)
    for f in mets.iter(M + "file"):
        href = f.find(M + "FLocat").get(XLINK + "href")
        if href in changed:
            f.set("SIZE", str(len(changed[href])))
            f.set("CHECKSUM", hashlib.sha256(changed[href]).hexdigest())
            f.set("CHECKSUMTYPE", "SHA-256")
    amd = mets.find(M + "amdSec")
    if amd is None and metadata:
        amd = etree.Element(M + "amdSec")
        anchor = mets.find(M + "fileSec")
        (anchor if anchor is not None else mets.find(M + "structMap")).addprevious(amd)
    for path, data, file_id, mdtype, other in metadata:
        ref = FileRef(file_id, path, XML, len(data), hashlib.sha256(data).hexdigest(), created)
        amd.append(metadata_element(MetadataRef("digiprovMD", ref, mdtype, other)))  # type: ignore[union-attr]
    div = mets.find(f"{M}structMap[@LABEL='CSIP']/{M}div/{M}div[@LABEL='Metadata']")
    if div is not None and metadata:
        div.set("ADMID", " ".join(filter(None, [div.get("ADMID"), *(m[2] for m in metadata)])))
    group = mets.find(f"{M}fileSec/{M}fileGrp[@USE='Schemas']")
    listed = {fl.get(XLINK + "href") for fl in group.iter(M + "FLocat")} if group is not None else set()
    for name in sorted(set(schemas)):
        if group is not None and f"schemas/{name}" not in listed:
            data = (root / "schemas" / name).read_bytes()
            group.append(file_element(FileRef(f"schema-{name.removesuffix('.xsd').lower()}", f"schemas/{name}", XML,
                                              len(data), hashlib.sha256(data).hexdigest(), created)))
    errors = schema_errors(tree)
    if errors:
        raise PackageBuildError(f"METS.xml of package {mets.get('OBJID')} does not validate against its schema: "
                                + "; ".join(errors[:5]))
    _replace(root / "METS.xml", etree.tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def _declare(mets: etree._Element, package_type: str, created: dt.datetime) -> None:
    mets.set("PROFILE", profile_url(package_type))
    hdr = mets.find(M + "metsHdr")
    hdr.set(CSIP + "OAISPACKAGETYPE", package_type)
    hdr.set("LASTMODDATE", timestamp(created))


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` under a temporary name, fsynced, and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


__all__ = ["METS_SCHEMAS", "PackageBuildError", "PackageWriter", "Written", "amend"]
