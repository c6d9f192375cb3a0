"""The FGS package builder: staged rows and document files in, one SIP TAR out.

A package is FGS Paketstruktur 2.0 (E-ARK CSIP 2.1.0 + SIP 2.1.0)::

    <OBJID>/METS.xml                          root METS (SIP profile)
    <OBJID>/metadata/descriptive/ERMS.xml     FGS Ärendehantering 2.0 (CITS ERMS)
    <OBJID>/metadata/descriptive/retention.xml our retention extension
    <OBJID>/metadata/preservation/premis.xml  PREMIS 3: files, events, agents
    <OBJID>/representations/rep1/METS.xml     the representation's METS
    <OBJID>/representations/rep1/data/…       the documents in preservation formats
    <OBJID>/representations/rep1-original/…   the originals of converted or rejected documents
    <OBJID>/documentation/data-dictionary.csv the tables' columns, types and meanings
    <OBJID>/schemas/*.xsd                     every schema the package's XML uses

The TAR is written in one pass by the CSIP writer (:class:`~transforms.packaging.csip.PackageWriter`):
each document is read once, hashed while it is copied into the archive, and the metadata that
lists the checksums is written after the data, the root METS last. The TAR is built under a
temporary name, fsynced and renamed; every XML is validated against its schema before the
package is called done. This module says what goes into a SIP; the writer lays it out.

Before the TAR is opened every document is identified (PRONOM, one fido per package) and
judged by the system's format policy (:mod:`transforms.formats.identification`). What the policy says to
convert is converted in one LibreOffice batch (:mod:`transforms.formats.conversion`); the PDF/A goes
into ``rep1`` and the original into ``rep1-original``, linked in PREMIS by a migration event
and a derivation relationship. A document that is rejected, or whose conversion fails, is
kept in ``rep1-original`` only, copied to the quarantine with its reason and named in a
PREMIS quarantine event: never silently missing.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import operator
import os
import pickle
import re
import stat
import sys
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from lxml import etree

from transforms.common.errors import ConfigError, ContentError
from transforms.common.hashing import copy_hashed
from transforms.common.periods import add_period
from transforms.common.xmltools import NS_ARKIV, NS_DATADICT, NS_ERMS, file_schema_errors
from transforms.config.systems import System, Table
from transforms.formats.conversion import (
    CONVERSION_CACHE_ENV,
    FAMILY_BY_PUID,
    ConversionCache,
    Converter,
    Job,
    Result,
    conversion_processes,
    libreoffice_version,
)
from transforms.formats.identification import (
    CONVERSION_TARGETS,
    POOL_MIN_FILES,
    Decision,
    FormatPolicy,
    Identification,
    IdentificationCache,
    Identifier,
    IdentifyPool,
)
from transforms.packaging import erms, premis
from transforms.packaging.agents import SOFTWARE_LABEL, agents_of, by_software, software
from transforms.packaging.csip import PackageBuildError, PackageWriter, Written
from transforms.packaging.fgs import FGS_ERMS, FGS_TABULAR, Profile
from transforms.packaging.mets import FileRef
from transforms.staging.batch import Partition, StagedBatch, open_document

#: namespace for deterministic package identifiers (UUIDv5)
PACKAGE_NAMESPACE = uuid.UUID("5b0e6a52-8f7e-5a4e-9d1c-61726b69766c")
REP = "rep1"
#: the representation that keeps the originals of converted (or rejected) documents
REP_ORIGINAL = f"{REP}-original"
#: a package with at least this many documents to convert splits them between LibreOffice processes
PARALLEL_CONVERSION_MIN = 24
MIME_BY_SUFFIX = {
    ".pdf": "application/pdf", ".txt": "text/plain", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
    ".png": "image/png", ".tif": "image/tiff", ".tiff": "image/tiff", ".xml": "application/xml",
    ".csv": "text/csv", ".xsd": "application/xml",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


@dataclass(frozen=True)
class RecordEntry:
    """A record (case) in a package, as the catalogue keeps it: no titles, no personal data."""

    source_id: str
    reference: str
    opened: str | None
    closed: str | None
    retention_start: str | None = None  # the date the record class's retention period counts from


@dataclass
class BuiltPackage:
    """A finished SIP TAR in the build folder."""

    package_id: str
    path: str
    size: int
    sha256: str
    system: str
    record_class: str
    period: str
    content_digest: str
    record_count: int
    document_count: int
    document_bytes: int
    records: list[RecordEntry] = field(default_factory=list)
    #: every data file with its identification and policy outcome (for the catalogue's file_formats)
    formats: list[FormatRow] = field(default_factory=list)
    #: documents held back for an archivist: path in the package, quarantine copy, reason
    quarantined: list[dict] = field(default_factory=list)
    converted: int = 0


def package_id_for(system: str, record_class: str, period: str, part: int, digest: str) -> str:
    """Deterministic OBJID: the same content for the same interval gets the same ID (CSIP1)."""
    return "uuid-" + str(uuid.uuid5(PACKAGE_NAMESPACE, f"{system}|{record_class}|{period}|{part}|{digest}"))


def batch_time(staged: StagedBatch) -> dt.datetime:
    """The time a package of ``staged`` says it was made: the batch's own, never the clock's.

    The end of the batch's interval when the batch was staged after it (a closed interval,
    the usual case): a re-extraction of the same interval gives the same time. For an
    interval still open when it was staged, the time it was staged (its manifest's mtime),
    so no package claims a moment that had not come when it was built. Naive times are UTC.
    Two builds of one staged batch therefore write the same dates into METS and PREMIS.
    """
    times = []
    try:
        end = dt.datetime.fromisoformat(staged.interval_end)
        times.append(end if end.tzinfo else end.replace(tzinfo=dt.UTC))
    except (TypeError, ValueError):
        pass
    with contextlib.suppress(OSError):
        times.append(dt.datetime.fromtimestamp(os.stat(staged.manifest_path).st_mtime, dt.UTC))
    if not times:
        raise ConfigError(f"staged batch {staged.system} {staged.batch} has neither an interval end nor a "
                          "manifest to date its packages by")
    return min(times).astimezone(dt.UTC).replace(microsecond=0)


def safe_name(name: str) -> str:
    """A portable file name: ASCII letters, digits, ``._-``; the original stays in the metadata."""
    decomposed = unicodedata.normalize("NFKD", name)
    ascii_only = decomposed.encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_only).strip("._") or "file"
    return cleaned[:120]


#: a document may never be one of the package's own metadata files, nor live among them
METADATA_NAMES = frozenset({"erms.xml", "mets.xml", "premis.xml"})
METADATA_FOLDERS = frozenset({"metadata", "schemas"})
#: a delivery's own description (its manifest): never a record's document
_DELIVERY_MANIFEST = "manifest.json"


def _path_rule(rel: str, delivery_files: frozenset[str]) -> str | None:
    """Why a document path as the record gives it cannot be a document of its own, if it cannot."""
    text = rel.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text) or "\x00" in text:
        return "document path is absolute: it must be relative to the record's own documents"
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        return "document path contains '..': it must stay within the record's own documents"
    if not parts:
        return "document path names no file"
    lowered = [p.lower() for p in parts]
    if lowered[-1] in METADATA_NAMES or any(p in METADATA_FOLDERS for p in lowered[:-1]):
        return "document path points at a metadata file (ERMS, METS, PREMIS, metadata/ or schemas/)"
    if "/".join(lowered) in delivery_files:
        return "document path points at one of the delivery's own files (a table or the manifest)"
    return None


def _owner_column(system: System, table) -> str:
    """The column naming the record (case) a row of a table with document files belongs to."""
    doc = (system.content.get("document") or {}) if system.content_kind == "erms" else {}
    if doc.get("table") == table.name and doc.get("case"):
        return doc["case"]
    return table.parent_column or table.key


def document_ownership_problems(system: System, table_files: Mapping[str, Sequence[str | Path]]) -> list[str]:
    """Every way the staged rows break "a document file belongs to exactly one record".

    A row's document must be a file of its own record: not a file another record's row names
    too (after links are followed), not one of the package's or the delivery's metadata files,
    not outside the document store (absolute, ``..``, a link out: staging resolved those to
    nothing), and — where the store keeps each record's documents in a folder of its own — not
    in another record's folder. Each problem names the table, the row's key and the rule; never
    the path or any other value of the row.
    """
    delivery_files = frozenset(
        {_DELIVERY_MANIFEST} | {t.file.replace("\\", "/").lower() for t in system.tables.values() if t.file})
    problems: list[str] = []
    for table in system.table_order():
        if not table.files_path_column or not table_files.get(table.name):
            continue
        owner_col = _owner_column(system, table)
        wanted = list(dict.fromkeys([table.key, owner_col, table.files_path_column, "source_path"]))
        files: dict[str, list[tuple[str, str]]] = defaultdict(list)  # real file -> [(owner, row key)]
        folders: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))  # folder -> owner -> keys
        owner_of: dict[str, str] = {}  # row key -> the record it belongs to
        for path in table_files[table.name]:
            pf = pq.ParquetFile(path)
            try:
                present = [c for c in wanted if c in pf.schema_arrow.names]
                for batch in pf.iter_batches(batch_size=10_000, columns=present, use_threads=False):
                    cols = {c: batch[c].to_pylist() if c in batch.schema.names else [None] * batch.num_rows
                            for c in wanted}
                    for key, owner, rel, src in zip(cols[table.key], cols[owner_col], cols[table.files_path_column],
                                                    cols["source_path"], strict=True):
                        first_owner = owner_of.setdefault(str(key), str(owner))
                        if first_owner != str(owner):
                            problems.append(f"{table.name} row {table.key}={key}: the same document id is filed "
                                            f"under two records ({owner_col}={first_owner} and another); a document "
                                            "belongs to exactly one record")
                            continue
                        if not isinstance(rel, str) or not rel:
                            continue  # no file registered: the quality gate's file checks judge that
                        where = f"{table.name} row {table.key}={key}"
                        rule = _path_rule(rel, delivery_files)
                        if rule is None and not src:
                            rule = "document path leads outside the document store (absolute, '..' or a link out)"
                        if rule is not None:
                            problems.append(f"{where}: {rule}")
                            continue
                        files[os.path.normcase(src)].append((str(owner), str(key)))
                        folders[os.path.dirname(src)][str(owner)].append(str(key))
            finally:
                pf.close()
        for entries in files.values():
            owners = sorted({o for o, _ in entries})
            if len(owners) > 1:
                first = min(k for o, k in entries if o == owners[0])
                problems.extend(f"{table.name} row {table.key}={k}: document file is also the document of "
                                f"another record ({table.key}={first}); a file belongs to exactly one record"
                                for o, k in entries if o != owners[0])
        # A store with a folder per record (most of its folders hold one record's documents):
        # a document filed in a folder another record's documents fill belongs to that record.
        # A flat store (one folder, or folders shared by many records) has no such folders.
        single = sum(1 for by_owner in folders.values() if len(by_owner) == 1)
        if len(folders) >= 2 and single * 2 > len(folders):
            for by_owner in folders.values():
                if len(by_owner) < 2:
                    continue
                home = min(by_owner, key=lambda o: (-len(by_owner[o]), o))
                problems.extend(f"{table.name} row {table.key}={k}: document file is in the folder of another "
                                f"record ({owner_col}={home}); a record's documents are its own"
                                for o, keys in sorted(by_owner.items()) if o != home for k in keys)
    return problems


def check_document_ownership(system: System, table_files: Mapping[str, Sequence[str | Path]], what: str) -> None:
    """Raise ContentError naming each row whose document is not its record's own (see above)."""
    problems = document_ownership_problems(system, table_files)
    if problems:
        raise ContentError(f"{what}: {len(problems)} document reference(s) do not belong to their record; "
                           "nothing may be packaged", problems[:200])


def _read_children(files: Sequence[str], parent_column: str, keys: pa.Array) -> pa.Table:
    """The rows of a child table whose parent is in ``keys``, filtered while scanning."""
    if not files:
        return pa.table({})
    # One thread, one batch at a time: the dataset scanner's threads kept tens of MB of
    # allocator arenas for a few MB of rows, growing with the package (bench/README.md, memory).
    readers = [pq.ParquetFile(path) for path in files]
    try:
        schema = readers[0].schema_arrow
        if any(not r.schema_arrow.equals(schema) for r in readers[1:]):
            # Parts whose schemas differ (a column all null in one of them): the dataset unifies them.
            return ds.dataset(list(files), format="parquet").to_table(filter=pc.field(parent_column).isin(keys))
        value_set = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
        batches = [batch.filter(pc.is_in(batch[parent_column], value_set=value_set))
                   for r in readers for batch in r.iter_batches(batch_size=10_000, use_threads=False)]
        return pa.Table.from_batches(batches, schema=schema)
    finally:
        for r in readers:
            r.close()


def _chunks(system: System, partition: Partition) -> Iterable[pa.Table]:
    """The root table of a partition in package-sized chunks, streamed from Parquet.

    The extractor wrote the rows in key order, so reading record batches in file order and
    cutting every ``max_records`` rows keeps memory at one chunk, whatever the partition.
    """
    root = system.root_table
    pending: list[pa.RecordBatch] = []
    count = 0
    for path in partition.files.get(root.name, []):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=min(system.max_records, 10_000)):
            while batch.num_rows:
                take = min(batch.num_rows, system.max_records - count)
                pending.append(batch.slice(0, take))
                count += take
                batch = batch.slice(take)
                if count == system.max_records:
                    yield pa.Table.from_batches(pending)
                    pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending)


def build_packages(
    system: System,
    staged: StagedBatch,
    record_class: str,
    build_dir: Path,
    *,
    events: Sequence[premis.Event] = (),
    profile: Profile | None = None,
    now: dt.datetime | None = None,
    allow_missing_files: bool = False,
    quarantine_dir: Path | None = None,
    policy: FormatPolicy | None = None,
    conversion_timeout: float | None = None,
    skip: Collection[str] = (),
    conversion_cache: Path | ConversionCache | None = None,
    identification_cache: IdentificationCache | None = None,
) -> list[BuiltPackage]:
    """Build every package of one record class of a staged batch (one per chunk).

    ``quarantine_dir`` receives copies of documents the format policy rejects or that fail
    conversion (default ``<build_dir>/quarantined-documents``); ``policy`` defaults to the
    system's (the shipped default with the system's ``format_policy`` overrides). ``skip``:
    package IDs not to build (already archived by an earlier, interrupted run of the batch).
    ``now``: the time written into METS, PREMIS and the TAR for what the build writes itself;
    by default the batch's own (:func:`batch_time`), so a rebuild gives the same bytes.
    ``conversion_cache``: where PDF/A conversions are kept between builds, a folder or a
    :class:`~transforms.formats.conversion.ConversionCache` (one shared by workers; default
    ``$ARKIV_CONVERSION_CACHE``, else ``.conversion-cache`` beside ``build_dir``).
    ``identification_cache``: identifications kept by content digest
    (:class:`~transforms.formats.identification.CatalogueIdentificationCache` over the catalogue);
    without one every document is identified.

    The quality gate refuses a batch whose documents do not belong to their records; the
    builder asks again, over the whole batch, before it writes anything: such a package can
    never be built, whatever a deviation or a changed staging folder says.
    """
    profile = profile or (FGS_ERMS if system.content_kind == "erms" else FGS_TABULAR)
    partition = staged.partitions[record_class]
    check_document_ownership(system, staged.table_files(), f"{system.name} {staged.batch} {record_class}")
    now = now or batch_time(staged)
    build_dir.mkdir(parents=True, exist_ok=True)
    if not isinstance(conversion_cache, ConversionCache):
        conversion_cache = ConversionCache(conversion_cache or Path(os.environ.get(CONVERSION_CACHE_ENV)
                                                                    or build_dir.parent / ".conversion-cache"))
    formats = _FormatStep(policy or system.formats, build_dir,
                          quarantine_dir or build_dir / "quarantined-documents", conversion_timeout,
                          conversion_cache, identification_cache)
    built = []
    try:
        for part_no, cases in enumerate(_chunks(system, partition)):
            if package_id_for(system.name, record_class, staged.batch, part_no, partition.digest) in skip:
                continue
            built.append(_build_one(system, staged, partition, cases, part_no, build_dir, events, profile, now,
                                    allow_missing_files, formats))
    finally:
        formats.close()
    return built


class _Spool:
    """A list that lives in a file of the build's work directory: appended to while the TAR is
    written, read back (any number of times, in order) when the metadata is written.

    A package's file entries (METS ``file``, PREMIS ``object``: about 1 KB of Python objects
    each) are needed only at the end; kept in memory they made a package of 30,000 files cost
    30 MB more than one of 3,000. Items are pickled in batches, as the plain tuples ``pack``
    makes of them (unpickling frozen dataclasses field by field cost a tenth of a build), and
    ``unpack`` makes them again; the file is the build's own (written and read by this process
    only) and goes with the work directory.
    """

    BATCH = 256

    def __init__(self, path: Path, pack: Callable = tuple, unpack: Callable = tuple):
        self.path = path
        self._pack, self._unpack = pack, unpack
        self._out = open(path, "wb")  # noqa: SIM115 - closed by close(), or with the work directory's removal
        self._pending: list = []
        self._count = 0

    def append(self, item) -> None:
        self._pending.append(self._pack(item))
        self._count += 1
        if len(self._pending) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            pickle.dump(self._pending, self._out, protocol=pickle.HIGHEST_PROTOCOL)
            self._pending = []

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator:
        self._flush()
        self._out.flush()
        remaining = self._count
        with open(self.path, "rb") as fh:
            while remaining:
                batch = pickle.load(fh)  # noqa: S301 - this build's own file, written just before
                remaining -= len(batch)
                yield from map(self._unpack, batch)

    def map(self, fn: Callable) -> _SpoolView:
        return _SpoolView(self, fn)

    def close(self) -> None:
        self._out.close()


_REF_FIELDS = operator.attrgetter(*(f.name for f in dataclass_fields(FileRef)))
_OBJECT_FIELDS = operator.attrgetter(*(f.name for f in dataclass_fields(premis.FileObject)))
_REF_SIZE = len(dataclass_fields(FileRef))


def _pack_entry(entry: tuple[FileRef, premis.FileObject]) -> tuple:
    return _REF_FIELDS(entry[0]) + _OBJECT_FIELDS(entry[1])


def _unpack_entry(fields: tuple) -> tuple[FileRef, premis.FileObject]:
    return FileRef(*fields[:_REF_SIZE]), premis.FileObject(*fields[_REF_SIZE:])


#: how a package's (FileRef, FileObject) entries are spooled
_ENTRY_CODEC = (_pack_entry, _unpack_entry)


@dataclass(frozen=True)
class _SpoolView:
    """``fn`` of every item of a spool, as a sequence that can be iterated many times (PREMIS event links)."""

    spool: _Spool
    fn: Callable

    def __iter__(self) -> Iterator:
        return (self.fn(item) for item in self.spool)

    def __len__(self) -> int:
        return len(self.spool)


@dataclass
class _Verdict:
    """One document's identification, the policy's decision and (when converted) the PDF/A."""

    ident: Identification
    decision: Decision
    output: Path | None = None  # the converted PDF/A
    output_ident: Identification | None = None
    detail: str = ""  # conversion check or failure
    seconds: float = 0.0


@dataclass
class _Pending:
    """A document whose original is in the TAR and whose PDF/A is still to be made."""

    rel: str
    src: str
    file_id: str
    original_name: str | None
    orig_arc: str
    oobj: premis.FileObject
    verdict: _Verdict


@dataclass
class _PackageFiles:
    """What one package's documents became: files per representation, events, quarantine.

    Verdicts arrive while the TAR is written (:meth:`_FormatStep.prepare`): :meth:`verdict`
    waits only for the document it is asked about.
    """

    objid: str
    now: dt.datetime
    verdicts: dict[str, _Verdict]
    data_files: _Spool  # (FileRef, FileObject) in rep1
    originals: _Spool  # (FileRef, FileObject) in rep1-original
    quarantined: list = field(default_factory=list)
    formats: list = field(default_factory=list)
    converted: int = 0
    to_convert: list[_Pending] = field(default_factory=list)
    identified: Iterator[tuple[str, Identification]] | None = None
    decide: Callable[[Identification], Decision] | None = None
    #: one object per distinct identification and its decision: a package's thousands of PDFs
    #: share them (each answer from a worker process arrives as new objects)
    _known: dict[Identification, tuple[Identification, Decision]] = field(default_factory=dict)
    doc_bytes: int = 0  # bytes of the documents in rep1
    #: schema checks of the documents written, each raising if its document is invalid; all
    #: are run before the package gets its final name (:meth:`_FormatStep.check_xml_file`)
    checks: list[Callable[[], None]] = field(default_factory=list)

    def verdict(self, key: str) -> _Verdict | None:
        """The verdict on source ``key``, taken: each source is asked about once (None if never identified)."""
        while key not in self.verdicts and self.identified is not None:
            found = next(self.identified, None)
            if found is None:
                self.identified = None
                break
            path, ident = found
            self.verdicts[path] = _Verdict(*self.judged(ident))
        return self.verdicts.pop(key, None)

    def judged(self, ident: Identification) -> tuple[Identification, Decision]:
        known = self._known.get(ident)
        if known is None:
            known = self._known[ident] = (ident, self.decide(ident))  # type: ignore[misc]
        return known

    def add_data_file(self, ref: FileRef, obj: premis.FileObject) -> None:
        self.data_files.append((ref, obj))
        self.doc_bytes += ref.size

    def close(self) -> None:
        """Stop identifying (the documents are all in)."""
        if self.identified is not None:
            self.identified.close()  # type: ignore[attr-defined]
            self.identified = None

    def release(self) -> None:
        """Done with the package: identification stopped, the spools' files closed."""
        self.close()
        self.data_files.close()
        self.originals.close()


class _FormatStep:
    """Identification, policy and conversion for the packages of one build_packages call."""

    def __init__(self, policy: FormatPolicy, build_dir: Path, quarantine_dir: Path, timeout: float | None,
                 cache: ConversionCache | None = None, identification_cache: IdentificationCache | None = None):
        self.policy = policy
        self.cache = cache
        self.identification_cache = identification_cache
        self.build_dir = build_dir
        self.quarantine_dir = quarantine_dir
        self.timeout = timeout
        self.identifier = Identifier.shared()
        self.converter_version: str | None = None
        self._converters: list[Converter] = []  # started on first need, kept for every package of the call
        self._pool: IdentifyPool | None = None
        self._pool_tried = False

    def converter(self, n: int = 0) -> Converter:
        """LibreOffice converter ``n`` of this build (each with its own private profile, for all its packages)."""
        while len(self._converters) <= n:
            kwargs = {"timeout": self.timeout} if self.timeout else {}
            self._converters.append(Converter(work_dir=self.build_dir, **kwargs).__enter__())
            self.converter_version = self._converters[0].version
        return self._converters[n]

    def pool(self) -> IdentifyPool | None:
        """The identification workers of this build, started for its first large package."""
        if not self._pool_tried:
            self._pool_tried = True
            self._pool = IdentifyPool.start()
        return self._pool

    def close(self) -> None:
        while self._converters:
            self._converters.pop().__exit__(None, None, None)
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def convert(self, jobs: list[Job], work: Path) -> list[Result]:
        """Convert a package's batch, taking what the cache has from it and storing the rest."""
        if self.cache is None:
            return self._convert(jobs, work)
        if self.converter_version is None:
            self.converter_version = libreoffice_version()
        results: list[Result | None] = [None] * len(jobs)
        keys: dict[int, str] = {}
        misses = []
        for i, job in enumerate(jobs):
            part = CONVERSION_TARGETS.get(job.target)
            if job.sha256 and part is not None and job.puid in FAMILY_BY_PUID:
                with contextlib.suppress(OSError):  # an unreadable source is the converter's to report
                    keys[i] = ConversionCache.key(job, job.sha256, self.converter_version)
                    hit = self.cache.get(keys[i], part)
                    if hit is not None:
                        results[i] = Result(job.source, True, hit[0], hit[1], 0.0, hit[2])
                        continue
            misses.append(i)
        if misses:
            for i, r in zip(misses, self._convert([jobs[i] for i in misses], work), strict=True):
                if r.ok and r.output is not None and i in keys:
                    r = Result(r.source, True, self.cache.put(keys[i], r.output), r.detail, r.seconds, r.pdfa)
                results[i] = r
        return results  # type: ignore[return-value]

    def _convert(self, jobs: list[Job], work: Path) -> list[Result]:
        """Convert a package's batch; a large batch is split between LibreOffice processes.

        LibreOffice converts one document at a time, on one CPU, at ~0.1 s a document: the
        conversions, not the copying, set the pace of a package with many office documents.
        """
        n = min(conversion_processes(), len(jobs)) if len(jobs) >= PARALLEL_CONVERSION_MIN else 1
        if n <= 1:
            return self.converter(0).convert(jobs, work / "converted")
        size = -(-len(jobs) // n)
        parts = [(self.converter(i), jobs[i * size:(i + 1) * size], work / f"converted-{i}") for i in range(n)]
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="conversion") as pool:
            futures = [pool.submit(conv.convert, part, out) for conv, part, out in parts if part]
            return [r for f in futures for r in f.result()]

    def prepare(self, objid: str, sources: Iterable[str], now: dt.datetime, work: Path) -> _PackageFiles:
        """Start identifying every source once, in the order the build will copy them.

        A large package is identified by worker processes while the build copies the files
        already identified into the TAR; what the policy says to convert is converted in one
        batch once every document is in (:meth:`finish`). The package's file entries are
        spooled to ``work`` until its metadata is written.
        """
        unique = list(dict.fromkeys(sources))
        pool = self.pool() if len(unique) >= POOL_MIN_FILES else None
        return _PackageFiles(objid, now, {}, _Spool(work / "data-files.pickle", *_ENTRY_CODEC),
                             _Spool(work / "originals.pickle", *_ENTRY_CODEC),
                             identified=self.identifier.identify_stream(unique, pool, self.identification_cache),
                             decide=self.policy.decide)

    def finish(self, writer: PackageWriter, files: _PackageFiles, work: Path) -> None:
        """Convert the package's pending documents in one batch and add each PDF/A to rep1.

        A conversion that fails, or whose output the policy does not accept, leaves the
        original (already in rep1-original) as the only copy and sends it to the quarantine.
        """
        pending, files.to_convert = files.to_convert, []
        if not pending:
            return
        jobs = [Job(Path(p.src), p.verdict.ident.puid, p.verdict.decision.target or "pdfa-2b", p.oobj.sha256)
                for p in pending]
        for p, r in zip(pending, self.convert(jobs, work), strict=True):
            v = p.verdict
            v.detail, v.seconds = r.detail, r.seconds
            if r.ok and r.output is not None:
                v.output_ident = self.identifier.identify(r.output)
                after = self.policy.decide(v.output_ident)
                if after.action == "accept":
                    v.output = r.output
                else:
                    v.detail = f"the converted file is not accepted: {after.reason}"
            if v.output is not None and v.output_ident is not None:
                self._add_derivative(writer, files, p)
            else:
                self.hold_back(files, p.src, p.rel, p.oobj, v,
                                f"conversion of {v.ident.label} to {v.decision.target} failed: {v.detail}",
                                "conversion failed")

    def _add_derivative(self, writer: PackageWriter, files: _PackageFiles, p: _Pending) -> None:
        v = p.verdict
        rel = p.rel
        pdf_rel = rel.rsplit(".", 1)[0] + ".pdf" if "." in rel.rsplit("/", 1)[-1] else rel + ".pdf"
        arc = f"representations/{REP}/data/{pdf_rel}"
        # dated as its original, not as the moment (or the build) that converted it
        ref, obj = _add_file(writer, arc, v.output, p.file_id, p.original_name,  # type: ignore[arg-type]
                             "application/pdf", mtime=os.stat(p.src).st_mtime)
        obj = _with_format(obj, v.output_ident,  # type: ignore[arg-type]
                           derived_from=p.orig_arc,
                           creating_application=("LibreOffice", (self.converter_version or "").split()[-1]))
        files.add_data_file(ref, obj)
        files.converted += 1
        files.formats.append(_format_row(p.oobj, REP_ORIGINAL, v.ident, v.decision, "converted",
                                         target=v.decision.target, derivative=arc, detail=v.detail,
                                         seconds=round(v.seconds, 2), label=v.ident.label))
        files.formats.append(_format_row(obj, REP, v.output_ident, self.policy.decide(v.output_ident),  # type: ignore
                                         "derivative", derived_from=p.orig_arc))

    def hold_back(self, files: _PackageFiles, src: str, rel: str, oobj: premis.FileObject, v: _Verdict,
                   reason: str, outcome: str) -> None:
        """Copy a document kept only in rep1-original to the quarantine and record its outcome."""
        copy = self.quarantine(files, src, rel, reason)
        files.formats.append(_format_row(oobj, REP_ORIGINAL, v.ident, v.decision, outcome, target=v.decision.target,
                                         detail=v.detail or reason, quarantine_copy=copy, label=v.ident.label))

    def check_xml_file(self, files: _PackageFiles, path: Path, namespace: str, what: str) -> None:
        """Check a document the build wrote against its schema: in an identification worker when
        the build has them (they are idle by then), else here and now; the answer is awaited in
        ``files.checks``, before the package is given its final name."""
        if self._pool is not None:
            answer = self._pool.call(file_schema_errors, str(path), namespace)
        else:
            errors = file_schema_errors(path, namespace)

            def answer() -> list[str]:
                return errors

        def check() -> None:
            errors = answer()
            if errors:
                raise PackageBuildError(f"{what} of package {files.objid} does not validate against its schema: "
                                        + "; ".join(errors[:5]))
        files.checks.append(check)

    def identify_bytes(self, data: bytes, work: Path, name: str) -> Identification:
        """Identify bytes we wrote ourselves (the tables' CSV) the same way as any document."""
        tmp = work / f"identify-{uuid.uuid4().hex[:8]}-{safe_name(name)}"
        tmp.write_bytes(data)
        try:
            return self.identifier.identify(tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def quarantine(self, files: _PackageFiles, src: str, rel: str, reason: str) -> str:
        """A verified copy of a held-back document beside a reasons file; returns the copy's path."""
        folder = self.quarantine_dir / files.objid
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part-{uuid.uuid4().hex[:8]}")
        try:
            copy_hashed(src, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        files.quarantined.append({"path": rel, "copy": str(dest), "folder": str(folder), "reason": reason})
        reasons = folder / "reasons.json"
        part = reasons.with_name(f".reasons.json.part-{uuid.uuid4().hex[:8]}")
        part.write_text(json.dumps({"package_id": files.objid, "documents": files.quarantined},
                                   ensure_ascii=False, indent=2), encoding="utf-8")
        os.replace(part, reasons)
        return str(dest)

    def events(self, files: _PackageFiles) -> tuple[list[premis.Event], list[premis.Agent]]:
        """The package's format events (identification, policy, migrations, quarantine) and their agents."""
        objid, now = files.objid, files.now
        idents = [(f["path"], f) for f in files.formats]
        unidentified = [p for p, f in idents if f["puid"] is None]
        agents = [premis.Agent("fido", "fido (Format Identification for Digital Objects)", "software",
                               f"{self.identifier.tool_version} ({self.identifier.signature_version})")]
        evs = [premis.Event(
            identifier=f"{objid}-format-identification", type="format identification", time=now,
            outcome="warning" if unidentified else "success",
            detail=f"{len(idents)} file(s) identified with {self.identifier.tool} against PRONOM"
                   + (f"; {len(unidentified)} not identified" if unidentified else ""),
            agents=by_software("fido"), objects=tuple(p for p, _ in idents))]
        counts: dict[str, int] = defaultdict(int)
        for _, f in idents:
            counts[f["outcome"]] += 1
        warned = [p for p, f in idents if f.get("warn")]
        evs.append(premis.Event(
            identifier=f"{objid}-format-policy", type="validation", time=now,
            outcome="failure" if files.quarantined else ("warning" if warned else "success"),
            detail=f"format policy {self.policy.name}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())),
            agents=by_software()))
        if warned:
            evs.append(premis.Event(
                identifier=f"{objid}-format-warnings", type="validation", time=now, outcome="warning",
                detail=f"{len(warned)} file(s) accepted with a reservation of the format policy (e.g. PDF that "
                       "is not PDF/A); an archivist should review them before transfer",
                agents=by_software(), objects=tuple(warned)))
        migrations = [f for _, f in idents if f["outcome"] in ("converted", "conversion failed")]
        if migrations and self.converter_version:
            agents.append(premis.Agent("libreoffice", "LibreOffice (headless)", "software",
                                       self.converter_version.removeprefix("LibreOffice ")))
        for i, f in enumerate(migrations):
            ok = f["outcome"] == "converted"
            evs.append(premis.Event(
                identifier=f"{objid}-migration-{i + 1}", type="migration", time=now,
                outcome="success" if ok else "failure",
                detail=f"{f['label']} to {f['target']} with {self.converter_version}",
                outcome_note=f["detail"],
                agents=by_software("libreoffice"),
                objects=((f["path"], "source"), (f["derivative"], "outcome")) if ok else ((f["path"], "source"),)))
        for i, q in enumerate(files.quarantined):
            evs.append(premis.Event(
                identifier=f"{objid}-quarantine-{i + 1}", type="quarantine", time=now, outcome="failure",
                detail="not placed in the preservation representation; kept in "
                       f"representations/{REP_ORIGINAL} and copied to the quarantine for an archivist",
                outcome_note=q["reason"], agents=by_software(),
                objects=(f"representations/{REP_ORIGINAL}/data/{q['path']}",)))
        return evs, agents


def _format_note(ident: Identification) -> str:
    """How a file's format was found (PREMIS formatNote)."""
    return f"identified by {ident.tool}, {ident.method} match" if ident.identified else \
        f"not identified by {ident.tool}: {ident.note}"


def _with_format(obj: premis.FileObject, ident: Identification, **extra) -> premis.FileObject:
    """A PREMIS file object carrying its PRONOM identification (name, version, PUID, how found)."""
    from dataclasses import replace

    return replace(obj, format_name=ident.name or obj.format_name, format_version=ident.version,
                   puid=ident.puid if ident.identified else None, format_note=_format_note(ident), **extra)


_FORMAT_KEYS = ("path", "representation", "puid", "format_name", "format_version", "mime", "method", "tool",
                "outcome", "policy", "warn", "reason", "sha256", "size")
_FORMAT_KEY_SET = frozenset(_FORMAT_KEYS)


class FormatRow(Mapping):
    """One file as the catalogue's file_formats table keeps it: a read-only mapping of
    :data:`_FORMAT_KEYS` (and, for converted or held-back files, a few more).

    A package holds one per file until it is recorded; as a dict each took ~470 bytes, as
    slots ~150 (bench/README.md, memory). ``dict(row)`` gives the plain dict, keys in order.
    """

    __slots__ = (*_FORMAT_KEYS, "_extra")

    def __init__(self, values: Sequence[object], extra: dict | None = None):
        for key, value in zip(_FORMAT_KEYS, values, strict=True):
            setattr(self, key, value)
        self._extra = extra or None

    def __getitem__(self, key: str) -> object:
        if key in _FORMAT_KEY_SET:
            return getattr(self, key)
        if self._extra is not None and key in self._extra:
            return self._extra[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        yield from _FORMAT_KEYS
        if self._extra is not None:
            yield from self._extra

    def __len__(self) -> int:
        return len(_FORMAT_KEYS) + len(self._extra or ())

    def __repr__(self) -> str:
        return f"FormatRow({dict(self)!r})"


def _format_row(obj: premis.FileObject, rep: str, ident: Identification, decision: Decision, outcome: str,
                **extra) -> FormatRow:
    """One file as the catalogue's file_formats table keeps it."""
    return FormatRow((obj.identifier, rep, obj.puid, ident.name, ident.version, ident.mime, ident.method, ident.tool,
                      outcome, decision.action, decision.warn, decision.reason, obj.sha256, obj.size), extra)


def _add_document(writer: PackageWriter, formats: _FormatStep, files: _PackageFiles, rel: str, src: str,
                  file_id: str, original_name: str | None, declared_mime: str | None) -> tuple[str, FileRef]:
    """One document into the package as the format policy says; returns the original's (path, METS entry).

    Accepted: into rep1 as delivered. To convert: the original into rep1-original now, the
    PDF/A into rep1 when the package's batch is converted (:meth:`_FormatStep.finish`).
    Rejected: the original into rep1-original, a copy to the quarantine.
    """
    verdict = files.verdict(src)
    if verdict is None or not verdict.ident.identified:
        # A missing or unreadable file is named as such, not as unidentified. (One identified
        # was a readable file; if it is gone now, opening it below says so in the same words.)
        _source_stat(src, file_id)
    if verdict is None:
        # Not among the package's sources when identification started (or a second document
        # with the same source file): judge it now.
        verdict = _Verdict(*files.judged(formats.identifier.identify(src)))
    ident, decision = verdict.ident, verdict.decision
    if decision.action == "accept":
        arc = f"representations/{REP}/data/{rel}"
        ref, obj = _add_file(writer, arc, src, file_id, original_name, declared_mime or ident.mime or None,
                             ident=ident, staged=True)
        files.add_data_file(ref, obj)
        files.formats.append(_format_row(obj, REP, ident, decision, "accepted"))
        return arc, ref
    orig_arc = f"representations/{REP_ORIGINAL}/data/{rel}"
    oref, oobj = _add_file(writer, orig_arc, src, f"{file_id}-original", original_name,
                           declared_mime or ident.mime or None, ident=ident, staged=True)
    files.originals.append((oref, oobj))
    if decision.action == "convert":
        files.to_convert.append(_Pending(rel, src, file_id, original_name, orig_arc, oobj, verdict))
    else:
        formats.hold_back(files, src, rel, oobj, verdict, decision.reason, "rejected")
    return orig_arc, oref


#: cases whose rows are read from Arrow in one go while an ERMS package is written
CASE_BATCH = 1000


def _children(system: System, partition: Partition, root_rows: pa.Table) -> dict[str, pa.Table]:
    """Every descendant row of a chunk's root rows, per table (parents before children), sorted by key.

    Kept as Arrow tables: a Python dict per row is made only where rows are used one by one
    (CSV tables, tabular documents), or per case for an ERMS package (see :func:`_by_case`).
    """
    keys: dict[str, pa.Array] = {system.root_table.name: root_rows[system.root_table.key]}
    out: dict[str, pa.Table] = {}
    for table in system.table_order():
        if table.parent_table is None:
            continue
        parent_keys = keys.get(table.parent_table)
        t = _read_children(partition.files.get(table.name, []), table.parent_column, parent_keys) \
            if parent_keys is not None and len(parent_keys) else pa.table({})
        if t.num_rows:
            t = t.sort_by(table.key)
            keys[table.name] = t[table.key]
        out[table.name] = t
    return out


def _by_case(t: pa.Table, case_column: str, key: str, *, in_order: bool = False
             ) -> tuple[pa.Table, dict[object, tuple[int, int]]]:
    """``t`` ordered by case, then by key, and where each case's rows are in it (offset, count).

    Within a case the rows keep the key order :func:`_children` gave them, so a case's rows
    read from its slice are the rows, in the order, that grouping the whole table would give.
    ``in_order``: ``t`` is already so ordered (by an earlier call); only the positions are found.
    """
    if not t.num_rows:
        return t, {}
    if not in_order:
        t = t.sort_by([(case_column, "ascending"), (key, "ascending")])
    where: dict[object, tuple[int, int]] = {}
    for i, value in enumerate(t[case_column].to_pylist()):
        at = where.get(value)
        where[value] = (i, 1) if at is None else (at[0], at[1] + 1)
    return t, where


def _pieces_by_case(t: pa.Table, where: dict[object, tuple[int, int]], batches: Sequence[Sequence[object]]
                    ) -> list[tuple[pa.Table, dict[object, tuple[int, int]]]]:
    """``t`` (ordered by case; ``where``: each case's rows in it) cut into a table of its own per
    batch of cases, with each case's rows in that piece. A piece is a copy, so the whole table
    can be freed at once and each piece once its cases are written."""
    pieces = []
    for keys in batches:
        spans = [where[c] for c in keys if c in where]
        if not spans:
            pieces.append((t.slice(0, 0), {}))
            continue
        lo, hi = min(start for start, _ in spans), max(start + n for start, n in spans)
        piece = t.take(pa.array(range(lo, hi), type=pa.int64()))
        pieces.append((piece, {c: (where[c][0] - lo, where[c][1]) for c in keys if c in where}))
    return pieces


def _rows_by_case(piece: pa.Table, where: dict[object, tuple[int, int]]) -> dict[object, list[dict]]:
    """The rows of each case of a piece (:func:`_pieces_by_case`), converted to dicts in one go rather than per case."""
    rows = piece.to_pylist()
    return {c: rows[start:start + n] for c, (start, n) in where.items()}


def _column(t: pa.Table, name: str) -> list:
    """A column's values (None for each row when the table has no such column)."""
    return t[name].to_pylist() if name in t.column_names else [None] * t.num_rows


def _csv_bytes(table: Table, rows: Sequence[dict]) -> bytes:
    """One table as RFC 4180 CSV in UTF-8: header of the declared columns, CRLF, empty = null."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(table.column_names)
    for row in rows:
        w.writerow(["" if row.get(c) is None else _csv_value(row.get(c)) for c in table.column_names])
    return buf.getvalue().encode("utf-8")


def _csv_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dt.date | dt.datetime):
        return v.isoformat()
    return str(v)


def _build_one(system: System, staged: StagedBatch, partition: Partition, roots: pa.Table, part_no: int,
               build_dir: Path, events: Sequence[premis.Event], profile: Profile,
               now: dt.datetime, allow_missing_files: bool = False,
               formats: _FormatStep | None = None) -> BuiltPackage:
    root_t = system.root_table
    content = system.content
    erms_kind = system.content_kind == "erms"
    rc = system.record_class(partition.record_class)
    objid = package_id_for(system.name, rc.name, staged.batch, part_no, partition.digest)
    tables = {root_t.name: roots, **_children(system, partition, roots)}
    if erms_kind:
        cm, dm, pm = content["case"], content["document"], content.get("party", {})
        described = {cm["table"], dm["table"], pm.get("table")}
        if tables.get(dm["table"]) is not None and tables[dm["table"]].num_rows:
            # in the order the documents are copied (case by case), which is the order they are identified in
            tables[dm["table"]], _ = _by_case(tables[dm["table"]], dm["case"], system.tables[dm["table"]].key)
        csv_tables = [t for t in system.tables.values() if t.name not in described]
    else:
        described = set()
        csv_tables = system.table_order()
    # Rows as Python dicts only for the tables used row by row; an ERMS package's cases,
    # documents and parties are read one case at a time (see _erms_content).
    rows_by_table = {name: t.to_pylist() for name, t in tables.items() if name not in described}

    data_prefix = f"representations/{REP}/data/"
    formats = formats or _FormatStep(system.formats, build_dir, build_dir / "quarantined-documents", None)
    sources = (p for t in tables.values() for p in _column(t, "source_path") if p)
    records: list[RecordEntry] = []
    used_names: set[str] = set()
    missing: list[str] = []
    files: _PackageFiles | None = None

    def check(path: Path, namespace: str, what: str) -> None:
        formats.check_xml_file(files, path, namespace, what)  # type: ignore[arg-type]

    try:
        with PackageWriter(build_dir, objid, profile=profile, package_type="SIP", created=now,
                           check=check) as writer:
            work = writer.work
            files = formats.prepare(objid, sources, now, work)
            data_files = files.data_files
            if erms_kind:
                _erms_content(writer, system, rc, tables, files, records, used_names, formats,
                              missing if allow_missing_files else None)
            else:
                _tabular_documents(writer, system, rows_by_table, files, used_names, formats)
                ref_col = content.get("reference") or root_t.key
                start = rc.retention.counted_from
                records.extend(RecordEntry(str(r[root_t.key]), str(r.get(ref_col)), None, None,
                                           _iso(r.get(start))) for r in rows_by_table[root_t.name])
            files.close()
            formats.finish(writer, files, work)
            for table in csv_tables:
                data = _csv_bytes(table, rows_by_table.get(table.name, []))
                arc = f"{data_prefix}tables/{table.name}.csv"
                ref = writer.add(arc, data, file_id=f"table-{table.name}", mime="text/csv")
                ident = formats.identify_bytes(data, work, f"{table.name}.csv")
                obj = _with_format(premis.FileObject(arc, ref.sha256, ref.size, "text/csv"), ident)
                data_files.append((ref, obj))  # (not a document: not in doc_bytes)
                files.formats.append(_format_row(obj, REP, ident, formats.policy.decide(ident), "accepted"))
            if missing:
                events = [*events, premis.Event(
                    identifier=f"{objid}-missing-files", type="validation", time=now, outcome="warning",
                    detail=f"{len(missing)} registered document(s) had no file at extraction (deviation "
                           f"approved by an archivist); their records are kept without a file: document ids "
                           f"{', '.join(missing)}", agents=by_software())]
            format_events, format_agents = formats.events(files)
            written = _write_metadata(writer, system, staged, rc, data_files, events, len(records),
                                      {t.name: len(rows_by_table.get(t.name, [])) for t in csv_tables},
                                      _due_range(rc, _column(roots, rc.retention.counted_from)), files.originals,
                                      format_events, format_agents, checks=files.checks)
    finally:
        if files is not None:
            files.release()
    return BuiltPackage(
        package_id=objid, path=str(written.path), size=written.size, sha256=written.sha256, system=system.name,
        record_class=rc.name, period=staged.batch, content_digest=partition.digest, record_count=len(records),
        document_count=len(data_files), document_bytes=files.doc_bytes, records=records, formats=files.formats,
        quarantined=files.quarantined, converted=files.converted,
    )


def _object_identifier(entry: tuple[FileRef, premis.FileObject]) -> str:
    return entry[1].identifier


def _unique(used: set[str], folder: str, name: str, ident: object) -> str:
    """A path in the package no other document has: two documents never share one file."""
    rel = f"{folder}/{name}" if folder else name
    n = 1
    while rel in used:
        tag = str(ident) if n == 1 else f"{ident}-{n}"
        rel = f"{folder}/{tag}-{name}" if folder else f"{tag}-{name}"
        n += 1
    used.add(rel)
    return rel


def _case_folder(folders: dict[str, object], reference: object, key: object) -> str:
    """The folder of a case's documents in the package, one per case.

    Two references can become the same portable name ("KS 2025/1" and "KS 2025-1"); the second
    case's documents must not land in the first one's folder, so it gets its key appended.
    """
    base = safe_name(str(reference).replace("/", "-"))
    folder, n = base, 1
    while folders.setdefault(folder, key) != key:
        folder = f"{base}-{safe_name(str(key))}" if n == 1 else f"{base}-{safe_name(str(key))}-{n}"
        n += 1
    return folder


def _erms_content(writer: PackageWriter, system: System, rc, tables: dict[str, pa.Table],
                  files: _PackageFiles, records: list, used_names: set[str], formats: _FormatStep,
                  missing: list[str] | None = None) -> None:
    """Documents into the package and the ERMS document describing the cases (its dmdSec).

    One case at a time: its rows are read from Arrow, its documents go into the TAR and its
    ``aggregation`` is written to ERMS.xml, spooled by the writer (and validated once written),
    so memory does not grow with the number of cases.
    """
    content = system.content
    cm, dm, pm = content["case"], content["document"], content.get("party", {})
    root_key = system.root_table.key
    empty = pa.table({})
    batches = tables[system.root_table.name].to_batches(max_chunksize=CASE_BATCH)
    keys_of = [batch[root_key].to_pylist() for batch in batches]
    # The documents' and parties' rows, cut into one table per batch of cases; the whole tables
    # leave the caller's dict, so each batch's rows are freed once its cases are written.
    # (The documents are in case order already, see _build_one.)
    doc_pieces = _pieces_by_case(*_by_case(tables.pop(dm["table"], empty), dm["case"],
                                           system.tables[dm["table"]].key, in_order=True), keys_of)
    party_pieces = (_pieces_by_case(*_by_case(tables.pop(pm["table"], empty), pm["case"],
                                              system.tables[pm["table"]].key), keys_of)
                    if pm.get("table") else [(empty, {})] * len(batches))

    case_folders: dict[str, object] = {}

    def cases() -> Iterator[erms.Case]:
        for i, batch in enumerate(batches):
            (docs, docs_at), (parties, parties_at) = doc_pieces[i], party_pieces[i]
            doc_pieces[i] = party_pieces[i] = None  # type: ignore[call-overload]
            batch_docs, batch_parties = _rows_by_case(docs, docs_at), _rows_by_case(parties, parties_at)
            del docs, parties
            for case in batch.to_pylist():
                yield _erms_case(case, batch_docs.get(case[root_key], []), batch_parties.get(case[root_key], []))

    def _erms_case(case: dict, case_docs: list[dict], case_parties: list[dict]) -> erms.Case:
        key = case[root_key]
        folder = _case_folder(case_folders, case[cm["reference"]], key)
        ec = erms.Case(fields=case, parties=case_parties)
        for doc in case_docs:
            number = doc.get(dm.get("number", "")) if dm.get("number") else None
            name = safe_name(str(doc.get(dm["file_name"]) or doc[dm["id"]]))
            rel = _unique(used_names, folder, f"{number}_{name}" if number is not None else name, doc[dm["id"]])
            src = doc.get("source_path") or ""
            if missing is not None and not os.path.isfile(src):
                # An archivist approved this batch knowing the file is missing: the record is kept,
                # described as having no file, and the package's PREMIS names it (never silently).
                missing.append(str(doc[dm["id"]]))
                ec.documents.append(erms.Document(fields=doc, package_path="", size=0))
                continue
            # ERMS describes the document as the business system registered it: the appendix is
            # the original (rep1, or rep1-original when converted); PREMIS leads on to the PDF/A.
            path, ref = _add_document(writer, formats, files, rel, src, f"file-{doc[dm['id']]}",
                                      doc.get(dm["file_name"]), doc.get(dm.get("mime_type", "")))
            ec.documents.append(erms.Document(fields=doc, package_path="../../" + path, size=ref.size))
        records.append(RecordEntry(str(key), str(case[cm["reference"]]), _iso(case.get(cm.get("opened", ""))),
                                   _iso(case.get(cm.get("closed", ""))), _iso(case.get(rc.retention.counted_from))))
        return ec

    ag = system.agreement
    retention = {"record_class": rc.name, "action": rc.retention.action, "period": rc.retention.period,
                 "basis": rc.retention.basis, "counted_from": rc.retention.counted_from}
    with writer.spool("metadata/descriptive/ERMS.xml", namespace=NS_ERMS, file_id="dmd-erms",
                      metadata=("dmdSec", "OTHER", "ERMS")) as sp:
        erms.write_erms(
            sp.file, cases(), mapping=content, system_title=system.title, creator_name=ag.archive_creator.name,
            creator_orgnr=ag.archive_creator.organisationsnummer, package_id=writer.objid, created=writer.created,
            software=SOFTWARE_LABEL, retention=retention,
        )
        sp.uses(["ERMS.xsd"])  # its schema imports nothing


def _tabular_documents(writer: PackageWriter, system: System, rows_by_table: dict[str, list[dict]],
                       files: _PackageFiles, used_names: set[str], formats: _FormatStep) -> None:
    """Document files referenced by any table of a tabular system, under data/documents/<table>/."""
    for table in system.table_order():
        if not table.files_path_column:
            continue
        for row in rows_by_table.get(table.name, []):
            src = row.get("source_path") or ""
            name = safe_name(str(row.get(table.files_path_column) or row[table.key]).rsplit("/", 1)[-1])
            rel = _unique(used_names, f"documents/{table.name}", name, row[table.key])
            _add_document(writer, formats, files, rel, src, f"file-{table.name}-{row[table.key]}",
                          str(row.get(table.files_path_column)), None)


def _iso(v: object) -> str | None:
    # interned: a package's cases share a few hundred dates, and each case keeps three of them
    return sys.intern(v.isoformat()) if isinstance(v, dt.date) else (None if v is None else str(v))


def _source_stat(src: str | Path, file_id: str) -> os.stat_result:
    """``os.stat`` of a document file, which must be a regular file (a FIFO would block the build)."""
    try:
        st = os.stat(src)
    except OSError as exc:
        raise ContentError(f"document file for {file_id} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ContentError(f"document file for {file_id} cannot be read: not a regular file")
    return st


def _add_file(writer: PackageWriter, arcname: str, src: str | Path, file_id: str,
              original_name: str | None, declared_mime: str | None,
              ident: Identification | None = None, staged: bool = False,
              mtime: float | None = None) -> tuple[FileRef, premis.FileObject]:
    """Copy one document into the package, hashing it on the way (one read); its METS entry and PREMIS object.

    ``ident``: its identification, carried by the PREMIS file object. ``staged``: ``src`` is a source
    document as staging resolved it; it is opened without following any link (a link swapped in
    since staging is refused, never copied). Its size and time are those of the file actually
    opened; ``mtime``: the time to give it instead of its own."""
    if not staged:
        _source_stat(src, file_id)
    try:
        fh = open_document(src) if staged else open(src, "rb", buffering=0)  # noqa: SIM115 - closed below
    except ContentError as exc:
        raise ContentError(f"document file for {file_id}: {exc}") from None
    except OSError as exc:
        raise ContentError(f"document file for {file_id} cannot be read: {exc.strerror}") from None
    mime = declared_mime or MIME_BY_SUFFIX.get(os.path.splitext(src)[1].lower(), "application/octet-stream")
    with fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ContentError(f"document file for {file_id} cannot be read: not a regular file")
        ref = writer.add(arcname, fh, file_id=file_id, mime=mime, size=st.st_size,
                         mtime=int(st.st_mtime if mtime is None else mtime))
    if ident is None:
        return ref, premis.FileObject(arcname, ref.sha256, ref.size, mime, original_name)
    return ref, premis.FileObject(arcname, ref.sha256, ref.size, ident.name or mime, original_name,
                                  ident.puid if ident.identified else None, ident.version, _format_note(ident))


def _data_dictionary(system: System) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["table", "column", "type", "description"])
    for t in system.tables.values():
        for c in t.columns:
            w.writerow([t.name, c.name, c.type, c.description])
    return buf.getvalue().encode("utf-8")


def _retention_xml(system: System, rc, period: str, due: tuple[dt.date, dt.date] | None) -> etree._ElementTree:
    A = f"{{{NS_ARKIV}}}"
    root = etree.Element(A + "retention", nsmap={None: NS_ARKIV}, system=system.name, period=period)
    values = [("recordClass", rc.name), ("recordClassTitle", rc.title), ("action", rc.retention.action),
              ("countedFrom", rc.retention.counted_from), ("period", rc.retention.period),
              ("basis", rc.retention.basis)]
    if due:
        values += [("earliestDue", due[0].isoformat()), ("latestDue", due[1].isoformat())]
    for tag, value in values:
        etree.SubElement(root, A + tag).text = value
    return root.getroottree()


def _due_range(rc, starts: Sequence[object]) -> tuple[dt.date, dt.date] | None:
    """When the rule falls due for the first and the last record of a package (None if unknown).

    ``starts``: each record's value of the column the rule counts from.
    """
    dates = [d.date() if isinstance(d, dt.datetime) else d for d in starts if isinstance(d, dt.date)]
    if not dates:
        return None
    return add_period(min(dates), rc.retention.period), add_period(max(dates), rc.retention.period)


def _data_dictionary_xml(system: System, rows: dict[str, int]) -> etree._ElementTree:
    """Our data dictionary: every staged table with its columns' types and meanings."""
    D = f"{{{NS_DATADICT}}}"
    root = etree.Element(D + "dataDictionary", nsmap={None: NS_DATADICT}, system=system.name)
    root.set("encoding", "UTF-8")
    root.set("format", "CSV (RFC 4180), header row, comma, CRLF")
    sensitive = {t: set(cols) for t, cols in system.sensitive.items()}
    for t in system.table_order():
        el = etree.SubElement(root, D + "table", name=t.name, key=t.key)
        if t.name in rows:
            el.set("file", f"representations/{REP}/data/tables/{t.name}.csv")
            el.set("rows", str(rows[t.name]))
        if t.parent_table:
            el.set("parentTable", t.parent_table)
            el.set("parentColumn", t.parent_column or "")
        for c in t.columns:
            col = etree.SubElement(el, D + "column", name=c.name, type=c.type)
            if c.name in sensitive.get(t.name, set()):
                col.set("sensitive", "true")
            col.text = c.description
    return root.getroottree()


def _write_metadata(writer: PackageWriter, system: System, staged: StagedBatch, rc, data_files: _Spool,
                    events: Sequence[premis.Event], record_count: int,
                    csv_rows: dict[str, int], due: tuple[dt.date, dt.date] | None = None,
                    originals: _Spool | Sequence[tuple[FileRef, premis.FileObject]] = (),
                    format_events: Sequence[premis.Event] = (), format_agents: Sequence[premis.Agent] = (),
                    checks: Sequence[Callable[[], None]] = ()) -> Written:
    """The SIP's metadata after its data: retention and data dictionary, PREMIS, the representations'
    METS, the schemas and the root METS; returns the finished package."""
    ag = system.agreement
    objid, now = writer.objid, writer.created
    label = f"{system.title}: {rc.title}, {staged.batch}"
    writer.add_metadata("metadata/descriptive/retention.xml",
                        writer.xml(_retention_xml(system, rc, staged.batch, due), "retention.xml"),
                        file_id="dmd-retention", mdtype="OTHER", other_mdtype="ARKIVFLODE-RETENTION")
    creator = premis.Agent(ag.archive_creator.organisationsnummer, ag.archive_creator.name, "organization",
                           identifier_type="organisationsnummer")
    build_event = premis.Event(
        identifier=f"{objid}-creation", type="creation", time=now, outcome="success",
        detail=f"SIP built by {SOFTWARE_LABEL} from {system.name} batch {staged.batch}, "
               f"record class {rc.name}: {record_count} records, {len(data_files)} files",
        agents=by_software(), objects=data_files.map(_object_identifier),
    )
    digest_event = premis.Event(
        identifier=f"{objid}-digest", type="message digest calculation", time=now, outcome="success",
        detail="SHA-256 of every file, computed while it was copied into the package", agents=by_software(),
    )
    # Package-level PREMIS: what happened (events) and who did it (agents). File-level
    # PREMIS (objects with fixity and format) belongs to the representation whose files it
    # describes; the format events (identification, migration, quarantine) sit with the
    # preservation representation's objects, and link the originals by their package paths.
    # When the policy held back every document there is no preservation representation at
    # all (an empty one would be invalid METS): only the originals, and the format events go
    # with them.
    reps = (([(REP, data_files)] if len(data_files) or not len(originals) else [])
            + ([(REP_ORIGINAL, originals)] if len(originals) else []))
    events_rep = reps[0][0]
    pkg_events = [*events, build_event]
    # the people an event names (an archivist who approved a deviation) are agents of their own
    writer.premis(pkg_events, agents_of(pkg_events, [software(), creator]),
                  representations=[f"representations/{name}" for name, _ in reps])
    for name, files in reps:
        rep_events = [digest_event, *format_events] if name == events_rep else [digest_event]
        rep_agents = [software(), *format_agents] if name == events_rep else [software()]
        rep_label = f"{label} ({name}: {'preservation formats' if name == REP else 'originals of converted files'})"
        writer.representation(name, files, label=rep_label if originals else f"{label} ({REP})",
                              events=rep_events, agents=rep_agents)
    writer.add("documentation/data-dictionary.csv", _data_dictionary(system), file_id="doc-data-dictionary",
               mime="text/csv", group="Documentation")
    writer.add("documentation/data-dictionary.xml", writer.xml(_data_dictionary_xml(system, csv_rows),
                                                               "data-dictionary.xml"),
               file_id="doc-data-dictionary-xml", mime="application/xml", group="Documentation")
    reference = ag.reference_code + (f"/{ag.series}" if ag.series else "")
    profile = writer.profile
    return writer.finish(
        label=label, agents=profile.agents((ag.archive_creator.name, ag.archive_creator.organisationsnummer),
                                           (ag.submitter.name, ag.submitter.organisationsnummer)),
        alt_record_ids=profile.alt_record_ids(ag.submission_agreement, reference), checks=checks)
