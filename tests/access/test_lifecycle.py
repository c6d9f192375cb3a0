"""The index through a package's life (mellanarkiv → slutarkiv or disposal), receipts that refuse, big documents."""

from __future__ import annotations

import hashlib
import os
import tarfile
import tracemalloc

import pytest

from transforms.access import index
from transforms.access import packages as pk
from transforms.access.auth import NotFound, Principal
from transforms.access.receipts import ReceiptRefused, build_receipt
from transforms.access.service import Archive
from transforms.archive.storage import FileSystemStorage
from transforms.cli import main
from transforms.common.errors import StorageError

ARCHIVIST = Principal("anna", "archivist")
RESEARCHER = Principal("rita", "researcher")


@pytest.fixture
def archived(tmp_path, lex_source, archive_helpers):
    settings = archive_helpers["archive_lex"](tmp_path / "var", lex_source)
    arc = Archive(settings)
    arc.sync()
    return {"settings": settings, "archive": arc,
            "pick": archive_helpers["pick"](arc, archive_helpers["source_cases"](lex_source))}


def test_transfer_and_disposal_update_the_index(archived, monkeypatch):
    arc, settings = archived["archive"], archived["settings"]
    keep = [p for p in arc.cat.packages() if p.retention_action == "keep"]
    dispose = [p for p in arc.cat.packages() if p.retention_action == "dispose"]
    assert keep and dispose
    monkeypatch.setenv("ARKIV_HOME", str(settings.home))
    assert main(["retention", "run", "--as-of", "2040-01-01"]) == 0  # transfers; proposes the disposal list
    lists = arc.cat.engine.connect().exec_driver_sql("SELECT id FROM disposal_lists").scalars().all()
    assert main(["gallring", "approve", lists[0], "--by", "Anna Arkivarie", "--reason", "IHP 4.2"]) == 0
    assert main(["retention", "run", "--as-of", "2040-01-01"]) == 0
    # the retention runs brought the index up to date themselves: nothing is left to do
    assert arc.sync() == {"indexed": 0, "moved": 0, "tombstoned": 0, "failed": []}

    # a kept record now answers from the slutarkiv, and its documents stream from the OCFL object
    hits = arc.search(ARCHIVIST, "", storage="slutarkiv", limit=500).hits
    assert hits and {h["package_id"] for h in hits} == {p.id for p in keep}
    rec = next(r for r in (arc.record(ARCHIVIST, "lex", h["source_id"]) for h in hits) if r["documents"])
    assert rec["storage"] == "slutarkiv"
    doc = rec["documents"][0]
    got = arc.document(ARCHIVIST, "lex", rec["source_id"], doc["document_id"])
    data = b"".join(got.chunks)
    assert got.storage == "slutarkiv" and hashlib.sha256(data).hexdigest() == doc["sha256"]
    # both copies of a converted document stream from the OCFL object, each with its own checksum
    two = [(r, d) for r in (arc.record(ARCHIVIST, "lex", h["source_id"]) for h in hits)
           for d in r["documents"] if len(d["copies"]) == 2]
    assert two, "no converted document among the kept records"
    r2, d2 = two[0]
    for c in d2["copies"]:
        got = arc.document(ARCHIVIST, "lex", r2["source_id"], d2["document_id"], copy=c["copy"])
        assert got.storage == "slutarkiv" and hashlib.sha256(b"".join(got.chunks)).hexdigest() == c["sha256"]
    assert arc.history(ARCHIVIST, keep[0].id)["storage"] == "slutarkiv"

    # a disposed record is findable only as a tombstone: reference, class, period — nothing else
    gone = arc.search(RESEARCHER, "", storage="disposed", limit=500).hits
    assert len(gone) == sum(p.record_count for p in dispose)
    assert all(h["tombstone"] and h["title"] is None for h in gone)
    ref = gone[0]["reference"]
    assert [h["storage"] for h in arc.search(ARCHIVIST, ref).hits] == ["disposed"]
    rec = arc.record(ARCHIVIST, "lex", gone[0]["source_id"])
    assert rec["disposed"] and rec["documents"] == [] and rec["parties"] == []
    with arc.cat.engine.connect() as c:
        left = c.exec_driver_sql(
            "SELECT count(*) FROM access_documents d JOIN access_entries e ON e.id = d.entry_id "
            "WHERE e.storage = 'disposed'").scalar()
        pnr = c.exec_driver_sql(
            "SELECT count(*) FROM access_personnummer p JOIN access_entries e ON e.id = p.entry_id "
            "WHERE e.storage = 'disposed'").scalar()
    assert left == 0 and pnr == 0
    # the receipt stays available once the package moved to the slutarkiv: from the AIP, re-read ...
    stored = {(r.source_id, r.reference) for r in _records(arc.cat, keep[0].id)}
    aip = build_receipt(arc.cat, arc.store, keep[0].id, issued_to="lex", slutarkiv=settings.slutarkiv)
    assert aip["storage"] == "slutarkiv" and aip["transfer"]["verified"] == "re-read now"
    assert {(r["source_id"], r["reference"]) for r in aip["records"]} == stored and aip["not_listed"] == []
    assert any(r["documents"] for r in aip["records"])
    # ... or, where the slutarkiv cannot be read, from the catalogue's record of the verified transfer
    recorded = build_receipt(arc.cat, arc.store, keep[0].id, issued_to="lex")
    assert recorded["transfer"]["verified"] == "at transfer" and len(recorded["transfer"]["aip_receipt_sha256"]) == 64
    assert {(r["source_id"], r["reference"]) for r in recorded["records"]} == stored
    # the archive API's path gives it too (it answered 409 once the package had moved)
    served = arc.receipt(ARCHIVIST, keep[0].id)
    assert served["storage"] == "slutarkiv" and served["record_count"] == keep[0].record_count
    assert arc.cat.events(package_id=keep[0].id)[-1].type == "receipt"
    # a disposed package has no receipt
    with pytest.raises(ReceiptRefused):
        build_receipt(arc.cat, arc.store, dispose[0].id, issued_to="lex")


def test_a_damaged_package_gets_no_receipt_and_its_document_is_not_served(archived):
    arc, settings = archived["archive"], archived["settings"]
    case = archived["pick"]["public"]
    rec = arc.record(ARCHIVIST, "lex", str(case["case_id"]))
    pkg = arc.cat.package(rec["package_id"])
    assert build_receipt(arc.cat, arc.store, pkg.id, issued_to="lex")["record_count"] == pkg.record_count
    doc = rec["documents"][0]
    entry = index.find_entry(arc.cat, "lex", rec["source_id"])
    entry_doc = next(d for d in index.documents_of(arc.cat, entry.id) if d.document_id == doc["document_id"])
    path = settings.mellanarkiv / pkg.location
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:  # one flipped byte inside the document (bit rot)
        f.seek(entry_doc.tar_offset + entry_doc.size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(ReceiptRefused, match="no longer matches"):
        build_receipt(arc.cat, arc.store, pkg.id, issued_to="lex")
    # the flipped byte is in the original (documents_of lists originals): that is the copy read
    download = arc.document(ARCHIVIST, "lex", rec["source_id"], doc["document_id"], copy="original")
    with pytest.raises(StorageError, match="no longer matches its checksum"):
        b"".join(download.chunks)
    # the same for a preservation copy: read from its own place in the TAR, cut off when damaged
    _, preserved = index.copies_of(arc.cat, entry.id)
    assert preserved, "the public case has no converted document"
    doc_id, pdf = next(iter(preserved.items()))
    whole = b"".join(arc.document(ARCHIVIST, "lex", rec["source_id"], doc_id, copy="preservation").chunks)
    assert whole.startswith(b"%PDF") and hashlib.sha256(whole).hexdigest() == pdf.sha256
    with open(path, "r+b") as f:
        f.seek(pdf.tar_offset + pdf.size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    download = arc.document(ARCHIVIST, "lex", rec["source_id"], doc_id)
    with pytest.raises(StorageError, match="no longer matches its checksum"):
        b"".join(download.chunks)
    with pytest.raises(NotFound):
        arc.record(Principal("viva", "client", "viva"), "lex", rec["source_id"])


def test_a_large_document_streams_with_bounded_memory(tmp_path):
    """A 64 MiB member served from a stored TAR through the storage's open(): memory stays at a few chunks."""
    size = 64 * 1024 * 1024
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        block = hashlib.sha256(b"x").digest() * 2048  # 64 KiB, not all zeros
        for _ in range(size // len(block)):
            f.write(block)
    tar_path = tmp_path / "pkg.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(src, arcname="uuid-x/representations/rep1/data/big.bin")
        tar.add(src, arcname="uuid-x/representations/rep1/data/second.bin")
    store = FileSystemStorage(tmp_path / "mellanarkiv")
    stored = store.put(tar_path, "lex/2025/pkg.tar")
    with store.open(stored.key) as f:
        scan = pk.scan_tar(f)
    assert scan.sha256 == stored.sha256
    member = scan.members["representations/rep1/data/second.bin"]
    tracemalloc.start()
    h, n = hashlib.sha256(), 0
    for chunk in pk.stream_range(lambda: store.open(stored.key), member.offset, member.size, member.sha256):
        h.update(chunk)
        n += len(chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == size and h.hexdigest() == member.sha256
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes while streaming {size}"

    # a storage whose open() gives a plain stream (no seek) is read past, still in bounded memory
    class _Plain:
        def __init__(self, raw):
            self.raw = raw

        def read(self, n=-1):
            return self.raw.read(n)

        def close(self):
            self.raw.close()

    tracemalloc.start()
    data_len = sum(len(c) for c in pk.stream_range(lambda: _Plain(store.open(stored.key)), member.offset,
                                                   member.size, member.sha256))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert data_len == size and peak < 2 * 1024 * 1024


def _records(cat, package_id):
    from transforms.catalogue import Record

    with cat.session() as s:
        return list(s.query(Record).filter(Record.package_id == package_id))


def test_transfers_receipts_and_certificates_at_the_command_line(archived, monkeypatch, capsys):
    """Listing transfers and disposals, a receipt in Swedish and English and as schema-valid XML, the
    AIP's transfer receipt, the disposal certificate; a tampered AIP receipt or AIP is refused."""
    from lxml import etree

    from transforms.access.receipts import receipt_xml
    from transforms.archive import ocfl
    from transforms.common.xmltools import SCHEMA_DIR
    from transforms.packaging.aip import RECEIPT

    arc, settings = archived["archive"], archived["settings"]
    keep = [p for p in arc.cat.packages() if p.retention_action == "keep"]
    monkeypatch.setenv("ARKIV_HOME", str(settings.home))
    assert main(["retention", "run", "--as-of", "2040-01-01"]) == 0
    (list_id,) = arc.cat.engine.connect().exec_driver_sql("SELECT id FROM disposal_lists").scalars().all()
    capsys.readouterr()
    assert main(["gallring", "show", list_id]) == 0
    proposed = capsys.readouterr().out
    assert "records, due" in proposed and "rule / regel: P" in proposed  # the record class's rule, e.g. P10Y
    assert main(["gallring", "reject", list_id, "--by", "Anna Arkivarie"]) == 2  # no justification: refused
    assert main(["gallring", "approve", list_id, "--by", "Anna Arkivarie", "--reason", "IHP 4.2", "--yes"]) == 0
    assert f"disposal list {list_id} approved by Anna Arkivarie" in capsys.readouterr().out
    assert main(["retention", "run", "--as-of", "2040-01-01"]) == 0
    capsys.readouterr()

    assert main(["transfers"]) == 0
    out = capsys.readouterr().out
    assert all(p.id in out for p in keep)
    assert main(["receipt", keep[0].id, "--transfer"]) == 0
    out = capsys.readouterr().out
    assert "Kvittens på överföring / Transfer receipt" in out and f"{keep[0].record_count} poster / records" in out
    assert main(["receipt", keep[0].id, "--transfer", "--xml"]) == 0
    assert b"<receipt" in capsys.readouterr().out.encode()

    assert main(["receipt", keep[0].id, "--text"]) == 0
    out = capsys.readouterr().out
    assert "Kvittens / Receipt" in out and "slutarkivet / slutarkiv" in out
    assert main(["receipt", keep[0].id, "--xml"]) == 0
    doc = etree.fromstring(capsys.readouterr().out.encode())
    schema = etree.XMLSchema(etree.parse(str(SCHEMA_DIR / "arkivflode-kvittens-1.xsd")))
    assert schema.validate(doc), schema.error_log
    assert int(doc.find("{*}records").get("count")) == keep[0].record_count

    assert main(["gallring", "list"]) == 0
    out = capsys.readouterr().out
    assert f"certificate: `arkiv certificate {list_id}`" in out and "rule / regel:" in out
    assert main(["certificate", list_id]) == 0
    out = capsys.readouterr().out
    assert "Gallringsbevis / Disposal certificate" in out and "Godkänd av / Approved by: Anna Arkivarie" in out
    assert "regel / rule:" in out
    assert main(["certificate", list_id, "--xml"]) == 0
    assert "disposalCertificate" in capsys.readouterr().out

    # the fault: a receipt made to disagree with its schema is never handed out
    bad = build_receipt(arc.cat, arc.store, keep[0].id, issued_to="lex") | {"package_sha256": "not a digest"}
    with pytest.raises(ReceiptRefused, match="does not validate"):
        receipt_xml(bad)
    # the fault: the AIP's receipt altered in the slutarkiv is refused, not shown
    obj = ocfl.object_path(settings.slutarkiv, keep[0].id)  # the object is named by the package
    stored = pk.ocfl_file(obj, RECEIPT)
    os.chmod(stored, 0o644)
    stored.write_bytes(stored.read_bytes().replace(b"<records>", b"<records>1"))
    assert main(["receipt", keep[0].id, "--transfer"]) == 1
    assert "does not match" in capsys.readouterr().err
    with pytest.raises(ReceiptRefused, match="does not verify"):
        build_receipt(arc.cat, arc.store, keep[0].id, issued_to="lex", slutarkiv=settings.slutarkiv)
