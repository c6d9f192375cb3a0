"""The FGS package builder: staged rows and document files in, one SIP TAR out.

A package is FGS Paketstruktur 2.0 (E-ARK CSIP 2.1.0 + SIP 2.1.0)::

    <OBJID>/METS.xml                          root METS (SIP profile)
    <OBJID>/metadata/descriptive/ERMS.xml     FGS Ärendehantering 2.0 (CITS ERMS)
    <OBJID>/metadata/descriptive/retention.xml our retention extension
    <OBJID>/metadata/preservation/premis.xml  PREMIS 3: files, events, agents
    <OBJID>/representations/rep1/METS.xml     the representation's METS
    <OBJID>/representations/rep1/data/…       the documents
    <OBJID>/documentation/data-dictionary.csv the tables' columns, types and meanings
    <OBJID>/schemas/*.xsd                     every schema the package's XML uses

The TAR is written in one pass: each document is read once, hashed while it is copied into
the archive, and the metadata that lists the checksums is written after the data. The TAR
is built under a temporary name, fsynced and renamed; every XML is validated against its
schema before the package is called done.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import re
import tarfile
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from lxml import etree

from . import __version__, erms, premis
from .errors import ArkivError, ContentError
from .extract import Partition, StagedBatch
from .fgs import FGS_ERMS, FGS_TABULAR, SOFTWARE_NAME, Profile
from .hashing import HashingReader, HashingWriter, fsync_dir
from .mets import FileGroup, FileRef, MetadataRef, build_mets
from .retention import add_period
from .systems import System, Table
from .xmltools import NS_ARKIV, NS_DATADICT, SCHEMA_DIR, schema_errors, schemas_used

#: namespace for deterministic package identifiers (UUIDv5)
PACKAGE_NAMESPACE = uuid.UUID("5b0e6a52-8f7e-5a4e-9d1c-61726b69766c")
REP = "rep1"

MIME_BY_SUFFIX = {
    ".pdf": "application/pdf", ".txt": "text/plain", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
    ".png": "image/png", ".tif": "image/tiff", ".tiff": "image/tiff", ".xml": "application/xml",
    ".csv": "text/csv", ".xsd": "application/xml",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


class PackageBuildError(ArkivError):
    """The package could not be built (a file changed while copied, an XML failed its schema)."""


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


def package_id_for(system: str, record_class: str, period: str, part: int, digest: str) -> str:
    """Deterministic OBJID: the same content for the same interval gets the same ID (CSIP1)."""
    return "uuid-" + str(uuid.uuid5(PACKAGE_NAMESPACE, f"{system}|{record_class}|{period}|{part}|{digest}"))


def safe_name(name: str) -> str:
    """A portable file name: ASCII letters, digits, ``._-``; the original stays in the metadata."""
    decomposed = unicodedata.normalize("NFKD", name)
    ascii_only = decomposed.encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_only).strip("._") or "file"
    return cleaned[:120]


def _read_children(files: Sequence[str], parent_column: str, keys: pa.Array) -> pa.Table:
    """The rows of a child table whose parent is in ``keys``, filtered while scanning."""
    if not files:
        return pa.table({})
    dataset = ds.dataset(list(files), format="parquet")
    return dataset.to_table(filter=pc.field(parent_column).isin(keys))


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
) -> list[BuiltPackage]:
    """Build every package of one record class of a staged batch (one per chunk)."""
    profile = profile or (FGS_ERMS if system.content_kind == "erms" else FGS_TABULAR)
    partition = staged.partitions[record_class]
    now = now or dt.datetime.now(dt.UTC).replace(microsecond=0)
    build_dir.mkdir(parents=True, exist_ok=True)
    built = []
    for part_no, cases in enumerate(_chunks(system, partition)):
        built.append(_build_one(system, staged, partition, cases, part_no, build_dir, events, profile, now,
                                allow_missing_files))
    return built


def _children(system: System, partition: Partition, root_rows: pa.Table) -> dict[str, list[dict]]:
    """Every descendant row of a chunk's root rows, per table (parents before children)."""
    keys: dict[str, pa.Array] = {system.root_table.name: root_rows[system.root_table.key]}
    out: dict[str, list[dict]] = {}
    for table in system.table_order():
        if table.parent_table is None:
            continue
        parent_keys = keys.get(table.parent_table)
        t = _read_children(partition.files.get(table.name, []), table.parent_column, parent_keys) \
            if parent_keys is not None and len(parent_keys) else pa.table({})
        if t.num_rows:
            t = t.sort_by(table.key)
            keys[table.name] = t[table.key]
        out[table.name] = t.to_pylist()
    return out


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
               now: dt.datetime, allow_missing_files: bool = False) -> BuiltPackage:
    root_t = system.root_table
    content = system.content
    erms_kind = system.content_kind == "erms"
    rc = system.record_class(partition.record_class)
    objid = package_id_for(system.name, rc.name, staged.batch, part_no, partition.digest)
    children = _children(system, partition, roots)
    root_rows = roots.to_pylist()
    rows_by_table = {root_t.name: root_rows, **children}
    if erms_kind:
        cm, dm, pm = content["case"], content["document"], content.get("party", {})
        csv_tables = [t for t in system.tables.values() if t.name not in {cm["table"], dm["table"], pm.get("table")}]
    else:
        csv_tables = system.table_order()

    final = build_dir / f"{objid}.tar"
    tmp = build_dir / f".{objid}.tar.part-{uuid.uuid4().hex[:8]}"
    data_prefix = f"representations/{REP}/data/"
    data_files: list[tuple[FileRef, premis.FileObject]] = []
    records: list[RecordEntry] = []
    used_names: set[str] = set()
    missing: list[str] = []
    doc_bytes = 0
    try:
        with open(tmp, "wb") as raw:
            out = HashingWriter(raw)
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[arg-type]
                if erms_kind:
                    descriptive = _erms_content(tar, system, staged, rc, objid, root_rows, children, data_prefix,
                                                data_files, records, used_names, now,
                                                missing if allow_missing_files else None)
                else:
                    descriptive = []
                    _tabular_documents(tar, system, objid, rows_by_table, data_prefix, data_files, used_names)
                    ref_col = content.get("reference") or root_t.key
                    start = rc.retention.counted_from
                    records.extend(RecordEntry(str(r[root_t.key]), str(r.get(ref_col)), None, None,
                                               _iso(r.get(start))) for r in root_rows)
                doc_bytes = sum(ref.size for ref, _ in data_files)
                for table in csv_tables:
                    data = _csv_bytes(table, rows_by_table.get(table.name, []))
                    arc = f"{data_prefix}tables/{table.name}.csv"
                    _add_bytes(tar, objid, arc, data, now)
                    data_files.append(_bytes_ref(f"table-{table.name}", arc, data, "text/csv", now))
                if missing:
                    events = [*events, premis.Event(
                        identifier=f"{objid}-missing-files", type="validation", time=now, outcome="warning",
                        detail=f"{len(missing)} registered document(s) had no file at extraction (deviation "
                               f"approved by an archivist); their records are kept without a file: document ids "
                               f"{', '.join(missing)}", agents=(("arkivflode", "executing program"),))]
                _write_metadata(tar, system, staged, rc, objid, descriptive, data_files, events, profile, now,
                                len(records), {t.name: len(rows_by_table.get(t.name, [])) for t in csv_tables},
                                _due_range(rc, root_rows))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, final)
        fsync_dir(build_dir)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BuiltPackage(
        package_id=objid, path=str(final), size=out.size, sha256=out.hexdigest(), system=system.name,
        record_class=rc.name, period=staged.batch, content_digest=partition.digest, record_count=len(records),
        document_count=len(data_files), document_bytes=doc_bytes, records=records,
    )


def _bytes_ref(file_id: str, arcname: str, data: bytes, mime: str, now: dt.datetime):
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    href = arcname.removeprefix(f"representations/{REP}/")
    return FileRef(file_id, href, mime, len(data), digest, now), premis.FileObject(arcname, digest, len(data), mime)


def _unique(used: set[str], folder: str, name: str, ident: object) -> str:
    rel = f"{folder}/{name}" if folder else name
    if rel in used:
        rel = f"{folder}/{ident}-{name}" if folder else f"{ident}-{name}"
    used.add(rel)
    return rel


def _erms_content(tar, system: System, staged: StagedBatch, rc, objid: str, root_rows: list[dict],
                  children: dict[str, list[dict]], data_prefix: str, data_files: list, records: list,
                  used_names: set[str], now: dt.datetime,
                  missing: list[str] | None = None) -> list[tuple[str, bytes, str, str]]:
    """Documents into the TAR and the ERMS document describing the cases; returns the dmd files."""
    content = system.content
    cm, dm, pm = content["case"], content["document"], content.get("party", {})
    root_key = system.root_table.key
    docs_by_case: dict[object, list[dict]] = defaultdict(list)
    for d in children.get(dm["table"], []):
        docs_by_case[d[dm["case"]]].append(d)
    parties_by_case: dict[object, list[dict]] = defaultdict(list)
    for p in children.get(pm.get("table", ""), []):
        parties_by_case[p[pm["case"]]].append(p)
    cases = []
    for case in root_rows:
        key = case[root_key]
        folder = safe_name(str(case[cm["reference"]]).replace("/", "-"))
        ec = erms.Case(fields=case, parties=parties_by_case.get(key, []))
        for doc in docs_by_case.get(key, []):
            number = doc.get(dm.get("number", "")) if dm.get("number") else None
            name = safe_name(str(doc.get(dm["file_name"]) or doc[dm["id"]]))
            rel = _unique(used_names, folder, f"{number}_{name}" if number is not None else name, doc[dm["id"]])
            src = Path(doc.get("source_path") or "")
            if missing is not None and not src.is_file():
                # An archivist approved this batch knowing the file is missing: the record is kept,
                # described as having no file, and the package's PREMIS names it (never silently).
                missing.append(str(doc[dm["id"]]))
                ec.documents.append(erms.Document(fields=doc, package_path="", size=0))
                continue
            ref, obj = _add_file(tar, objid, data_prefix + rel, src, f"file-{doc[dm['id']]}",
                                 doc.get(dm["file_name"]), doc.get(dm.get("mime_type", "")))
            data_files.append((ref, obj))
            ec.documents.append(erms.Document(fields=doc, package_path="../../" + data_prefix + rel, size=ref.size))
        cases.append(ec)
        records.append(RecordEntry(str(key), str(case[cm["reference"]]), _iso(case.get(cm.get("opened", ""))),
                                   _iso(case.get(cm.get("closed", ""))), _iso(case.get(rc.retention.counted_from))))
    ag = system.agreement
    retention = {"record_class": rc.name, "action": rc.retention.action, "period": rc.retention.period,
                 "basis": rc.retention.basis, "counted_from": rc.retention.counted_from}
    tree = erms.build_erms(
        cases, mapping=content, system_title=system.title, creator_name=ag.archive_creator.name,
        creator_orgnr=ag.archive_creator.organisationsnummer, package_id=objid, created=now,
        software=f"{SOFTWARE_NAME} {__version__}", retention=retention,
    )
    return [("ERMS.xml", _xml_bytes(tree, "ERMS.xml", objid), "OTHER", "ERMS")]


def _tabular_documents(tar, system: System, objid: str, rows_by_table: dict[str, list[dict]], data_prefix: str,
                       data_files: list, used_names: set[str]) -> None:
    """Document files referenced by any table of a tabular system, under data/documents/<table>/."""
    for table in system.table_order():
        if not table.files_path_column:
            continue
        for row in rows_by_table.get(table.name, []):
            src = row.get("source_path") or ""
            name = safe_name(str(row.get(table.files_path_column) or row[table.key]).rsplit("/", 1)[-1])
            rel = _unique(used_names, f"documents/{table.name}", name, row[table.key])
            ref, obj = _add_file(tar, objid, data_prefix + rel, Path(src), f"file-{table.name}-{row[table.key]}",
                                 str(row.get(table.files_path_column)), None)
            data_files.append((ref, obj))


def _iso(v: object) -> str | None:
    return v.isoformat() if isinstance(v, dt.date) else (None if v is None else str(v))


def _add_file(tar: tarfile.TarFile, objid: str, arcname: str, src: Path, file_id: str,
              original_name: str | None, declared_mime: str | None) -> tuple[FileRef, premis.FileObject]:
    """Copy one document into the TAR, hashing it on the way (one read)."""
    try:
        st = src.stat()
        fh = open(src, "rb")  # noqa: SIM115 - closed below, after the TAR member is written
    except OSError as exc:
        raise ContentError(f"document file for {file_id} cannot be read: {exc.strerror}") from None
    with fh:
        info = tarfile.TarInfo(f"{objid}/{arcname}")
        info.size = st.st_size
        info.mtime = int(st.st_mtime)
        info.mode = 0o644
        reader = HashingReader(fh)
        tar.addfile(info, reader)  # type: ignore[arg-type]
        if reader.size != st.st_size or fh.read(1):
            raise PackageBuildError(f"{src.name}: changed while it was being copied into package {objid}")
    mime = declared_mime or MIME_BY_SUFFIX.get(src.suffix.lower(), "application/octet-stream")
    created = dt.datetime.fromtimestamp(st.st_mtime, dt.UTC).replace(microsecond=0)
    href = arcname.removeprefix(f"representations/{REP}/")
    ref = FileRef(file_id, href, mime, st.st_size, reader.hexdigest(), created)
    obj = premis.FileObject(arcname, reader.hexdigest(), st.st_size, mime, original_name)
    return ref, obj


def _add_bytes(tar: tarfile.TarFile, objid: str, arcname: str, data: bytes, now: dt.datetime) -> None:
    info = tarfile.TarInfo(f"{objid}/{arcname}")
    info.size = len(data)
    info.mtime = int(now.timestamp())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _xml_bytes(tree: etree._ElementTree, what: str, objid: str) -> bytes:
    errors = schema_errors(tree)
    if errors:
        raise PackageBuildError(f"{what} of package {objid} does not validate against its schema: "
                                + "; ".join(errors[:5]))
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _ref(file_id: str, href: str, data: bytes, mime: str, now: dt.datetime) -> FileRef:
    import hashlib

    return FileRef(file_id, href, mime, len(data), hashlib.sha256(data).hexdigest(), now)


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


def _due_range(rc, rows: Sequence[dict]) -> tuple[dt.date, dt.date] | None:
    """When the rule falls due for the first and the last record of a package (None if unknown)."""
    starts = [r.get(rc.retention.counted_from) for r in rows]
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


def _write_metadata(tar, system: System, staged: StagedBatch, rc, objid: str,
                    descriptive: list[tuple[str, bytes, str, str]], data_files: list[tuple[FileRef, premis.FileObject]],
                    events: Sequence[premis.Event], profile: Profile, now: dt.datetime, record_count: int,
                    csv_rows: dict[str, int], due: tuple[dt.date, dt.date] | None = None) -> None:
    ag = system.agreement
    label = f"{system.title}: {rc.title}, {staged.batch}"
    retention_bytes = _xml_bytes(_retention_xml(system, rc, staged.batch, due), "retention.xml", objid)
    dictionary_tree = _data_dictionary_xml(system, csv_rows)
    dictionary_bytes = _xml_bytes(dictionary_tree, "data-dictionary.xml", objid)

    software = premis.Agent("arkivflode", SOFTWARE_NAME, "software", __version__)
    creator = premis.Agent(ag.archive_creator.organisationsnummer, ag.archive_creator.name, "organization",
                           identifier_type="organisationsnummer")
    build_event = premis.Event(
        identifier=f"{objid}-creation", type="creation", time=now, outcome="success",
        detail=f"SIP built by {SOFTWARE_NAME} {__version__} from {system.name} batch {staged.batch}, "
               f"record class {rc.name}: {record_count} records, {len(data_files)} files",
        agents=(("arkivflode", "executing program"),), objects=tuple(obj.identifier for _, obj in data_files),
    )
    digest_event = premis.Event(
        identifier=f"{objid}-digest", type="message digest calculation", time=now, outcome="success",
        detail="SHA-256 of every file, computed while it was copied into the package",
        agents=(("arkivflode", "executing program"),),
    )
    # Package-level PREMIS: what happened (events) and who did it (agents). File-level
    # PREMIS (objects with fixity) belongs to the representation whose files it describes.
    premis_tree = premis.build_premis([], [*events, build_event], [software, creator],
                                      representations=[f"representations/{REP}"])
    premis_bytes = _xml_bytes(premis_tree, "premis.xml", objid)
    rep_premis_tree = premis.build_premis([obj for _, obj in data_files], [digest_event], [software],
                                          schema_prefix="../../../../")
    rep_premis_bytes = _xml_bytes(rep_premis_tree, f"representations/{REP}/metadata/preservation/premis.xml", objid)

    agents = profile.agents((ag.archive_creator.name, ag.archive_creator.organisationsnummer),
                            (ag.submitter.name, ag.submitter.organisationsnummer))
    cit, other_cit = profile.content_information_type, profile.other_content_information_type
    rep_mets = build_mets(
        objid=REP, label=f"{label} ({REP})", profile=profile, package_type="SIP", created=now,
        agents=[profile.software_agent()],
        metadata=[MetadataRef("digiprovMD", _ref("digiprov-premis-rep1", "metadata/preservation/premis.xml",
                                                 rep_premis_bytes, "application/xml", now), "PREMIS")],
        groups=[FileGroup(f"Representations/{REP}/data", [ref for ref, _ in data_files], cit, other_cit)]
        if data_files else [],
        schema_prefix="../../",
    )
    rep_bytes = _xml_bytes(rep_mets, f"representations/{REP}/METS.xml", objid)

    docs = _data_dictionary(system)
    trees = [rep_mets, premis_tree, rep_premis_tree, dictionary_tree]
    used = set().union(*(schemas_used(t) for t in trees))
    if descriptive:
        # The descriptive documents are ERMS, whose schema imports nothing: no need to parse them
        # again (that second tree cost hundreds of MB on large packages, see bench/README.md).
        used.add("ERMS.xsd")
    used |= {"mets.xsd", "xlink.xsd", "DILCISExtensionMETS.xsd", "DILCISExtensionSIPMETS.xsd",
             "arkivflode-retention-1.xsd"}
    schema_refs = []
    for i, name in enumerate(sorted(used)):
        data = (SCHEMA_DIR / name).read_bytes()
        _add_bytes(tar, objid, f"schemas/{name}", data, now)
        schema_refs.append(_ref(f"schema-{i}", f"schemas/{name}", data, "application/xml", now))
    _add_bytes(tar, objid, "documentation/data-dictionary.csv", docs, now)
    _add_bytes(tar, objid, "documentation/data-dictionary.xml", dictionary_bytes, now)
    dmd = []
    for name, data, mdtype, other in descriptive:
        _add_bytes(tar, objid, f"metadata/descriptive/{name}", data, now)
        dmd.append(MetadataRef("dmdSec", _ref(f"dmd-{safe_name(name.lower().rsplit('.', 1)[0])}",
                                              f"metadata/descriptive/{name}", data, "application/xml", now),
                               mdtype, other))
    _add_bytes(tar, objid, "metadata/descriptive/retention.xml", retention_bytes, now)
    dmd.append(MetadataRef("dmdSec", _ref("dmd-retention", "metadata/descriptive/retention.xml", retention_bytes,
                                          "application/xml", now), "OTHER", "ARKIVFLODE-RETENTION"))
    _add_bytes(tar, objid, "metadata/preservation/premis.xml", premis_bytes, now)
    _add_bytes(tar, objid, f"representations/{REP}/metadata/preservation/premis.xml", rep_premis_bytes, now)
    _add_bytes(tar, objid, f"representations/{REP}/METS.xml", rep_bytes, now)

    reference = ag.reference_code + (f"/{ag.series}" if ag.series else "")
    root_mets = build_mets(
        objid=objid, label=label, profile=profile, package_type="SIP", created=now, agents=agents,
        alt_record_ids=profile.alt_record_ids(ag.submission_agreement, reference),
        metadata=[*dmd, MetadataRef("digiprovMD", _ref("digiprov-premis", "metadata/preservation/premis.xml",
                                                       premis_bytes, "application/xml", now), "PREMIS")],
        groups=[
            FileGroup("Documentation", [
                _ref("doc-data-dictionary", "documentation/data-dictionary.csv", docs, "text/csv", now),
                _ref("doc-data-dictionary-xml", "documentation/data-dictionary.xml", dictionary_bytes,
                     "application/xml", now)]),
            FileGroup("Schemas", schema_refs),
            FileGroup(f"Representations/{REP}", [_ref(f"mets-{REP}", f"representations/{REP}/METS.xml", rep_bytes,
                                                      "application/xml", now)], cit, other_cit),  # CSIP62/63
        ],
        representations=[(REP, f"representations/{REP}/METS.xml")],
    )
    _add_bytes(tar, objid, "METS.xml", _xml_bytes(root_mets, "METS.xml", objid), now)
