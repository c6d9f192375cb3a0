"""The index through a package's life (mellanarkiv → slutarkiv or disposal), receipts that refuse, big documents.

What reads the slutarkiv is run twice, with the slutarkiv a folder and a bucket with Object Lock on
moto's S3 server: the same assertions must hold on both.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path

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


SLUTARKIV_KINDS = ["folder", pytest.param("s3", marks=pytest.mark.integration)]


@pytest.fixture
def archived(request, tmp_path, lex_source, archive_helpers, monkeypatch):
    """An archived Lex; ``request.param`` says where its slutarkiv is: ``folder`` (default) or ``s3``."""
    kind = getattr(request, "param", "folder")
    if kind == "s3":
        s3_env = request.getfixturevalue("s3_env")
        monkeypatch.setenv("ARKIV_SLUTARKIV", f"s3://{s3_env['slutarkiv']}/ocfl")
        monkeypatch.setenv("ARKIV_SLUTARKIV_OBJECT_LOCK_MODE", "GOVERNANCE")
        monkeypatch.setenv("ARKIV_SLUTARKIV_OBJECT_LOCK_DAYS", "3650")
    else:
        monkeypatch.delenv("ARKIV_SLUTARKIV", raising=False)
    settings = archive_helpers["archive_lex"](tmp_path / "var", lex_source)
    arc = Archive(settings)
    arc.sync()
    assert type(arc.slutarkiv).__name__ == ("S3Storage" if kind == "s3" else "PosixPath")
    return {"settings": settings, "archive": arc, "kind": kind, "s3": request.getfixturevalue("s3_env")
            if kind == "s3" else None,
            "pick": archive_helpers["pick"](arc, archive_helpers["source_cases"](lex_source))}


def _ocfl_validate(root, tmp_path: Path) -> None:
    """ocfl-py's validator over the whole storage root; a bucket's objects are first copied to a folder, key by key."""
    if not isinstance(root, Path):
        local = tmp_path / "ocfl-check"
        for key in root.list():
            dest = local / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            with root.open(key) as f, open(dest, "wb") as out:
                while chunk := f.read(1024 * 1024):
                    out.write(chunk)
        root = local
    # the root's structure, then each object with its digests (ocfl-py's root check does not fail on a bad object)
    objects = sorted(p for p in root.iterdir() if (p / "0=ocfl_object_1.1").is_file())
    assert objects
    run = subprocess.run([sys.executable, "-W", "ignore", Path(sys.executable).parent / "ocfl-validate.py",
                          str(root), *map(str, objects)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.count(" is VALID") == len(objects), run.stdout + run.stderr


def _rewrite_in_slutarkiv(archived, object_id: str, rel: str, change) -> None:
    """Change a stored file of an AIP behind the archive's back (``rel`` from the package root): the file in
    a folder, a new current version of the key in a bucket (Object Lock keeps each version, not the key)."""
    import boto3
    from testservices import S3_TEST_CREDENTIALS as c

    root = archived["archive"].slutarkiv
    content = pk.ocfl_content(root, object_id, rel)
    if isinstance(root, Path):
        stored = root / object_id / content
        os.chmod(stored, 0o644)
        stored.write_bytes(change(stored.read_bytes()))
        return
    with root.open(f"{object_id}/{content}") as f:
        data = f.read()
    raw = boto3.client("s3", endpoint_url=archived["s3"]["endpoint"], region_name="eu-north-1",
                       aws_access_key_id=c["AWS_ACCESS_KEY_ID"], aws_secret_access_key=c["AWS_SECRET_ACCESS_KEY"])
    raw.put_object(Bucket=root.bucket, Key=f"{root.prefix}/{object_id}/{content}", Body=change(data))


@pytest.mark.parametrize("archived", SLUTARKIV_KINDS, indirect=True)
def test_transfer_and_disposal_update_the_index(archived, monkeypatch, tmp_path):
    arc, settings = archived["archive"], archived["settings"]
    keep = [p for p in arc.cat.packages() if p.retention_action == "keep"]
    dispose = [p for p in arc.cat.packages() if p.retention_action == "dispose"]
    assert keep and dispose
    monkeypatch.setenv("ARKIV_HOME", str(settings.home))
    assert main(["retention", "run", "--as-of", "2040-01-01"]) == 0  # transfers; proposes the disposal list
    lists = arc.cat.engine.connect().exec_driver_sql("SELECT id FROM disposal_lists").scalars().all()
    # one archivist reviews the list, another approves it
    assert main(["gallring", "review", lists[0], "--by", "Rut Granskare", "--reason", "Granskad mot IHP"]) == 0
    assert main(["gallring", "approve", lists[0], "--by", "Anna Arkivarie", "--reason", "IHP 4.2"]) == 0
    assert main(["retention", "run", "--as-of", "2040-01-01"]) == 0
    # the retention runs brought the index up to date themselves: nothing is left to do
    assert arc.sync() == {"indexed": 0, "moved": 0, "tombstoned": 0, "failed": []}
    # the storage root holds exactly the AIPs and the certificate, and is valid OCFL for ocfl-py
    from transforms.archive import ocfl

    assert set(ocfl.objects(arc.slutarkiv)) >= {p.id for p in keep}
    if archived["kind"] == "s3":
        assert not (settings.home / "slutarkiv").exists()  # nothing went to a folder instead
    _ocfl_validate(arc.slutarkiv, tmp_path)

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
    # a new index built from nothing finds the same records in the slutarkiv (read by key, folder or bucket)
    with arc.cat.engine.begin() as c:
        c.exec_driver_sql("DELETE FROM access_packages")
    again = arc.sync()
    assert again["failed"] == [] and again["indexed"] + again["moved"] + again["tombstoned"] == len(arc.cat.packages())
    assert {h["package_id"] for h in arc.search(ARCHIVIST, "", storage="slutarkiv", limit=500).hits} == \
        {p.id for p in keep}
    # the ERMS of a transferred package is read from its AIP, as a DIP export reads it
    row = index.indexed_package(arc.cat, keep[0].id)
    erms = arc.member_bytes(keep[0].id, row.erms_path)
    assert erms is not None and b"ERMS" in erms and b"caseFile" in erms
    assert arc.member_bytes(keep[0].id, row.erms_path, limit=10) is None  # over the limit: not read whole

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
    aip = build_receipt(arc.cat, arc.store, keep[0].id, issued_to="lex", slutarkiv=arc.slutarkiv)
    assert aip["storage"] == "slutarkiv" and aip["transfer"]["verified"] == "re-read now"
    assert {(r["source_id"], r["reference"]) for r in aip["records"]} == stored and aip["not_listed"] == []
    assert any(r["documents"] for r in aip["records"])
    # ... or, where the slutarkiv cannot be read, from the catalogue's record of the verified transfer
    recorded = build_receipt(arc.cat, arc.store, keep[0].id, issued_to="lex")
    assert recorded["transfer"]["verified"] == "at transfer" and len(recorded["transfer"]["aip_receipt_sha256"]) == 64
    assert {(r["source_id"], r["reference"]) for r in recorded["records"]} == stored
    # the archive API's path gives it too, re-reading the AIP wherever the slutarkiv is
    served = arc.receipt(ARCHIVIST, keep[0].id)
    assert served["storage"] == "slutarkiv" and served["record_count"] == keep[0].record_count
    assert served["transfer"]["verified"] == "re-read now" and served["records"] == aip["records"]
    assert arc.cat.events(package_id=keep[0].id)[-1].type == "receipt"
    # a disposed package has no receipt
    with pytest.raises(ReceiptRefused):
        build_receipt(arc.cat, arc.store, dispose[0].id, issued_to="lex")

    # bit rot in the slutarkiv: the damaged document is cut off, not delivered, and the fixity audit fails
    kept = next(r for r in (arc.record(ARCHIVIST, "lex", h["source_id"]) for h in hits) if r["documents"])
    entry = index.find_entry(arc.cat, "lex", kept["source_id"])
    damaged = index.documents_of(arc.cat, entry.id)[0]
    _rewrite_in_slutarkiv(archived, entry.package_id, damaged.path,
                          lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 0xFF]) + b[len(b) // 2 + 1:])
    with pytest.raises(StorageError, match="no longer matches its checksum"):
        b"".join(arc.document(ARCHIVIST, "lex", kept["source_id"], damaged.document_id, copy="original").chunks)
    assert main(["audit"]) == 1


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


@pytest.mark.parametrize("archived", SLUTARKIV_KINDS, indirect=True)
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
    assert main(["gallring", "review", list_id, "--by", "Rut Granskare", "--reason", "Granskad mot IHP"]) == 0
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
    assert ocfl.object_exists(arc.slutarkiv, keep[0].id)  # the object is named by the package
    _rewrite_in_slutarkiv(archived, keep[0].id, RECEIPT, lambda b: b.replace(b"<records>", b"<records>1"))
    assert main(["receipt", keep[0].id, "--transfer"]) == 1
    assert "does not match" in capsys.readouterr().err
    with pytest.raises(ReceiptRefused, match="does not verify"):
        build_receipt(arc.cat, arc.store, keep[0].id, issued_to="lex", slutarkiv=arc.slutarkiv)
    with pytest.raises(ReceiptRefused, match="does not verify"):  # nor through the archive API
        arc.receipt(ARCHIVIST, keep[0].id)
