"""The S3 backend against moto's server mode: real HTTP, the real S3 wire protocol, on loopback."""

import hashlib
import os
import tracemalloc

import boto3
import pytest

from transforms.archive.storage import FileSystemStorage, S3Storage, storage_for
from transforms.common.errors import StorageError
from transforms.config.settings import MIB, S3Config, Settings


def _file(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p, hashlib.sha256(data).hexdigest()


def _big_file(path, size: int) -> str:
    """A file of ``size`` pseudo-random bytes (written in 1 MiB steps); its SHA-256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(0, size, MIB):
            block = hashlib.sha256(str(i).encode()).digest() * (min(MIB, size - i) // 32 + 1)
            block = block[:min(MIB, size - i)]
            h.update(block)
            f.write(block)
    return h.hexdigest()


def _config(**kw) -> S3Config:
    return S3Config.from_env({**os.environ, **kw})


def _raw(s3_env):
    """A plain client for looking behind the backend's back."""
    from testservices import S3_TEST_CREDENTIALS as c

    return boto3.client("s3", endpoint_url=s3_env["endpoint"], region_name="eu-north-1",
                        aws_access_key_id=c["AWS_ACCESS_KEY_ID"], aws_secret_access_key=c["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture
def store(s3_env, tmp_path) -> S3Storage:
    return S3Storage(s3_env["mellanarkiv"], "arkiv", "mellanarkiv", config=_config(), work_dir=tmp_path / "work")


def test_put_verifies_reads_back_and_is_idempotent(store, s3_env, tmp_path):
    src, digest = _file(tmp_path, "p.tar", b"package bytes" * 1000)
    obj = store.put(src, "lex/2025/p.tar", expected_sha256=digest)
    assert (obj.key, obj.size, obj.sha256) == ("lex/2025/p.tar", 13000, digest)
    assert store.exists("lex/2025/p.tar") and not store.exists("lex/2025/q.tar")
    assert store.stat("lex/2025/p.tar").sha256 == digest
    assert store.recorded("lex/2025/p.tar").sha256 == digest  # metadata, cheap
    head = _raw(s3_env).head_object(Bucket=s3_env["mellanarkiv"], Key="arkiv/lex/2025/p.tar", ChecksumMode="ENABLED")
    assert head["Metadata"]["sha256"] == digest and head["ChecksumSHA256"]  # the server holds our SHA-256
    assert store.put(src, "lex/2025/p.tar", expected_sha256=digest) == obj  # rerun: same object, no error
    assert list(store.list()) == ["lex/2025/p.tar"] and list(store.list("lex")) == ["lex/2025/p.tar"]
    assert list(store.list("le")) == []  # prefixes are folders, not string prefixes
    with store.open("lex/2025/p.tar") as f:
        assert f.read() == src.read_bytes()
    with store.local_copy("lex/2025/p.tar", expected_sha256=digest) as (path, stored):
        assert path.read_bytes() == src.read_bytes() and stored == obj
    assert not path.exists()  # the temporary download is gone


def test_multipart_upload_streams_in_bounded_memory(s3_env, tmp_path):
    """11 MiB with 5 MiB parts is three parts; a 48 MiB file must not need 48 MiB of memory."""
    store = S3Storage(s3_env["mellanarkiv"], "", "mellanarkiv", config=_config(ARKIV_S3_PART_SIZE_MB="5"))
    src = tmp_path / "big.tar"
    digest = _big_file(src, 11 * MIB)
    assert store.put(src, "big.tar", expected_sha256=digest).sha256 == digest
    head = _raw(s3_env).head_object(Bucket=s3_env["mellanarkiv"], Key="big.tar", ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    assert store.stat("big.tar").sha256 == digest and store.stat("big.tar").size == 11 * MIB

    large = tmp_path / "large.tar"
    digest = _big_file(large, 48 * MIB)
    tracemalloc.start()
    try:
        store.put(large, "large.tar", expected_sha256=digest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one part in memory plus the client's buffers (measured: about 7 MiB); reading whole would be 48
    assert peak < 3 * 5 * MIB, f"peak {peak / MIB:.1f} MiB for a 48 MiB file with 5 MiB parts"
    assert store.stat("large.tar").sha256 == digest
    assert not _raw(s3_env).list_multipart_uploads(Bucket=s3_env["mellanarkiv"]).get("Uploads")


def test_put_never_overwrites_other_content(store, tmp_path):
    a, da = _file(tmp_path, "a", b"first")
    b, db = _file(tmp_path, "b", b"second")
    store.put(a, "k.tar", expected_sha256=da)
    with pytest.raises(StorageError, match="refusing to overwrite"):
        store.put(b, "k.tar", expected_sha256=db)
    assert store.stat("k.tar").sha256 == da


def test_conditional_write_catches_a_concurrent_writer(store, s3_env, tmp_path):
    """Another writer gets in between our existence check and our PUT: If-None-Match stops us."""
    a, da = _file(tmp_path, "a", b"ours")
    real_head = store.head

    def racing_head(key):
        result = real_head(key)
        if result is None:  # after our check, before our write
            _raw(s3_env).put_object(Bucket=s3_env["mellanarkiv"], Key=f"arkiv/{key}", Body=b"theirs")
            store.head = real_head
        return result

    store.head = racing_head
    with pytest.raises(StorageError, match="refusing to overwrite"):
        store.put(a, "k.tar", expected_sha256=da)
    assert store.stat("k.tar").sha256 == hashlib.sha256(b"theirs").hexdigest()


def test_a_source_that_does_not_match_leaves_nothing(s3_env, tmp_path):
    store = S3Storage(s3_env["mellanarkiv"], "", "mellanarkiv", config=_config(ARKIV_S3_PART_SIZE_MB="5"))
    small, _ = _file(tmp_path, "a", b"content")
    with pytest.raises(StorageError, match="differs from expected"):
        store.put(small, "small.tar", expected_sha256="0" * 64)
    big = tmp_path / "big"
    _big_file(big, 11 * MIB)
    with pytest.raises(StorageError, match="differs from expected"):
        store.put(big, "big.tar", expected_sha256="0" * 64)
    assert not store.exists("small.tar") and not store.exists("big.tar")
    assert not _raw(s3_env).list_multipart_uploads(Bucket=s3_env["mellanarkiv"]).get("Uploads")


def test_a_failed_multipart_upload_is_aborted(s3_env, tmp_path):
    """The connection dies after the first part: no object, and no pending upload with orphaned parts."""
    store = S3Storage(s3_env["mellanarkiv"], "", "mellanarkiv", config=_config(ARKIV_S3_PART_SIZE_MB="5"))
    src = tmp_path / "big"
    digest = _big_file(src, 11 * MIB)
    real_upload_part = store.client.upload_part
    calls = []

    def failing_upload_part(**kw):
        calls.append(kw["PartNumber"])
        if kw["PartNumber"] == 2:
            raise ConnectionResetError("the network went away")
        return real_upload_part(**kw)

    store.client.upload_part = failing_upload_part
    with pytest.raises(ConnectionResetError):
        store.put(src, "big.tar", expected_sha256=digest)
    assert calls == [1, 2]
    assert not store.exists("big.tar")
    assert not _raw(s3_env).list_multipart_uploads(Bucket=s3_env["mellanarkiv"]).get("Uploads")
    store.client.upload_part = real_upload_part
    assert store.put(src, "big.tar", expected_sha256=digest).sha256 == digest  # a retry succeeds


def test_stat_detects_a_corrupted_object(store, s3_env, tmp_path):
    src, digest = _file(tmp_path, "p.tar", b"x" * 5000)
    store.put(src, "p.tar", expected_sha256=digest)
    # bit rot behind our back: same key, same metadata, one byte different
    data = bytearray(src.read_bytes())
    data[2500] ^= 0x01
    raw = _raw(s3_env)
    raw.put_object(Bucket=s3_env["mellanarkiv"], Key="arkiv/p.tar", Body=bytes(data), Metadata={"sha256": digest})
    assert store.recorded("p.tar").sha256 == digest  # the metadata still claims the old checksum
    assert store.stat("p.tar").sha256 != digest  # the fixity audit recomputes and sees it
    with pytest.raises(StorageError, match="differs from the expected"), store.local_copy("p.tar"):
        pass


def test_delete_requires_the_checksum_of_a_verified_copy(store, tmp_path):
    src, digest = _file(tmp_path, "a", b"content")
    store.put(src, "k.tar", expected_sha256=digest)
    with pytest.raises(StorageError, match="refusing to delete"):
        store.delete("k.tar", verified_copy_sha256="f" * 64)
    assert store.exists("k.tar")
    store.delete("k.tar", verified_copy_sha256=digest)
    assert not store.exists("k.tar")
    with pytest.raises(StorageError, match="does not exist"):
        store.delete("k.tar", verified_copy_sha256=digest)


@pytest.mark.parametrize("mode", ["GOVERNANCE", "COMPLIANCE"])
def test_object_lock_is_applied_and_refuses_deletion(s3_env, tmp_path, mode):
    config = _config(ARKIV_SLUTARKIV_OBJECT_LOCK_MODE=mode, ARKIV_SLUTARKIV_OBJECT_LOCK_DAYS="3650",
                     ARKIV_S3_PART_SIZE_MB="5")
    store = S3Storage(s3_env["slutarkiv"], "ocfl", "slutarkiv", config=config)
    src, digest = _file(tmp_path, "a", b"kept for ever")
    big = tmp_path / "big"
    big_digest = _big_file(big, 6 * MIB)  # multipart too
    store.put(src, "obj/a", expected_sha256=digest)
    store.put(big, "obj/big", expected_sha256=big_digest)
    raw = _raw(s3_env)
    for key in ("ocfl/obj/a", "ocfl/obj/big"):
        head = raw.head_object(Bucket=s3_env["slutarkiv"], Key=key)
        assert head["ObjectLockMode"] == mode
        assert head["ObjectLockRetainUntilDate"].year >= 2036
    with pytest.raises(StorageError, match="under Object Lock"):
        store.delete("obj/a", verified_copy_sha256=digest)
    # and S3 itself refuses, even when asked directly for that version
    version = raw.head_object(Bucket=s3_env["slutarkiv"], Key="ocfl/obj/a")["VersionId"]
    with pytest.raises(raw.exceptions.ClientError):
        raw.delete_object(Bucket=s3_env["slutarkiv"], Key="ocfl/obj/a", VersionId=version)
    assert store.stat("obj/a").sha256 == digest


def test_server_side_encryption_is_requested(s3_env, tmp_path):
    store = S3Storage(s3_env["mellanarkiv"], "", "mellanarkiv", config=_config(ARKIV_S3_SSE="AES256"))
    src, digest = _file(tmp_path, "a", b"secret-ish")
    store.put(src, "a", expected_sha256=digest)
    assert _raw(s3_env).head_object(Bucket=s3_env["mellanarkiv"], Key="a")["ServerSideEncryption"] == "AES256"


def test_storage_for_chooses_by_location(s3_env, tmp_path):
    env = {**os.environ, "ARKIV_HOME": str(tmp_path / "var"),
           "ARKIV_MELLANARKIV": f"s3://{s3_env['mellanarkiv']}/pre/fix/"}
    settings = Settings.from_env(env).ensure()
    assert settings.mellanarkiv == f"s3://{s3_env['mellanarkiv']}/pre/fix"
    assert not (tmp_path / "var" / "mellanarkiv").exists()  # a bucket is not a folder to create
    m = storage_for(settings.mellanarkiv, "mellanarkiv", settings.s3)
    s = storage_for(settings.slutarkiv, "slutarkiv", settings.s3)
    assert isinstance(m, S3Storage) and (m.bucket, m.prefix) == (s3_env["mellanarkiv"], "pre/fix")
    assert isinstance(s, FileSystemStorage) and s.root == tmp_path / "var" / "slutarkiv"


@pytest.mark.parametrize("key", ["../x", "/abs", "a/../../b", "", ".hidden", "a\\b"])
def test_keys_are_confined_to_the_prefix(store, key):
    with pytest.raises(ValueError):
        store.exists(key)


# --- the archives in buckets: the Lex chain, retention, the fixity audit ---------------------------------

AS_OF = "2040-01-01"  # Lex: kept cases due after P2Y, disposable ones after P10Y from closing in 2025


@pytest.fixture
def lex_in_s3(monkeypatch, tmp_path, lex_source, s3_env):
    """The Lex chain run with the mellanarkiv in a bucket and the slutarkiv in a locked bucket."""
    from transforms.catalogue import Catalogue
    from transforms.cli import main

    home = tmp_path / "var"
    env = {"ARKIV_HOME": str(home), "ARKIV_LEX_FILES": str(lex_source["files"]),
           "ARKIV_CONN_LEX_DB": lex_source["url"],
           "ARKIV_MELLANARKIV": f"s3://{s3_env['mellanarkiv']}/mellanarkiv",
           "ARKIV_SLUTARKIV": f"s3://{s3_env['slutarkiv']}/ocfl",
           "ARKIV_SLUTARKIV_OBJECT_LOCK_MODE": "COMPLIANCE", "ARKIV_SLUTARKIV_OBJECT_LOCK_DAYS": "3650"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["run", "lex", "--start", "2025-01-01", "--end", "2026-01-01"]) == 0
    settings = Settings.from_env()
    return {"home": home, "settings": settings, "main": main,
            "cat": Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}"),
            "mellanarkiv": storage_for(settings.mellanarkiv, "mellanarkiv", settings.s3),
            "slutarkiv": storage_for(settings.slutarkiv, "slutarkiv", settings.s3), "endpoint": s3_env["endpoint"],
            "buckets": {"mellanarkiv": s3_env["mellanarkiv"], "slutarkiv": s3_env["slutarkiv"]}}


def test_lex_chain_with_the_mellanarkiv_in_a_bucket(lex_in_s3, capsys):
    cat, store, main = lex_in_s3["cat"], lex_in_s3["mellanarkiv"], lex_in_s3["main"]
    packages = cat.packages("lex")
    assert packages and all(p.status == "stored" and p.storage == "mellanarkiv" for p in packages)
    assert sorted(store.list()) == sorted(p.location for p in packages)
    assert not (lex_in_s3["home"] / "mellanarkiv").exists()  # nothing went to a folder instead
    for p in packages:
        assert store.stat(p.location).sha256 == p.sha256 == store.recorded(p.location).sha256
        assert [e.type for e in cat.events(package_id=p.id)] == [
            "creation", "replication", "fixity check", "validation", "ingestion"]
    assert not list((lex_in_s3["home"] / "build").rglob("*.tar"))  # no download or build left behind
    # a rerun changes nothing, in the catalogue or in the bucket
    raw = _raw(lex_in_s3)
    before_objects = {o["Key"]: o["LastModified"] for o in
                      raw.list_objects_v2(Bucket=lex_in_s3["buckets"]["mellanarkiv"])["Contents"]}
    before = cat.snapshot()
    assert main(["run", "lex", "--start", "2025-01-01", "--end", "2026-01-01"]) == 0
    assert cat.snapshot() == before
    assert {o["Key"]: o["LastModified"] for o in
            raw.list_objects_v2(Bucket=lex_in_s3["buckets"]["mellanarkiv"])["Contents"]} == before_objects
    assert "0 new package(s)" in capsys.readouterr().out


def _download_object(store, object_id: str, dest):
    for key in store.list(object_id):
        path = dest / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with store.open(key) as f:
            path.write_bytes(f.read())
    return dest / object_id


def test_retention_and_audit_with_both_archives_in_buckets(lex_in_s3, tmp_path, capsys):
    import subprocess
    import sys
    from pathlib import Path

    from transforms.archive import ocfl

    cat, main = lex_in_s3["cat"], lex_in_s3["main"]
    mellan, slut = lex_in_s3["mellanarkiv"], lex_in_s3["slutarkiv"]
    keep = [p for p in cat.packages() if p.retention_action == "keep"]
    dispose = [p for p in cat.packages() if p.retention_action == "dispose"]
    assert keep and dispose
    assert main(["retention", "run", "--as-of", AS_OF]) == 0
    raw = _raw(lex_in_s3)
    for p in keep:
        stored = cat.package(p.id)
        assert (stored.status, stored.storage, stored.location) == ("transferred", "slutarkiv", f"ocfl:{p.id}")
        assert not mellan.exists(p.location)  # the SIP left the mellanarkiv only after the verified transfer
        assert ocfl.object_exists(slut, p.id) and ocfl.verify_object(slut, p.id) == []
        assert [e.type for e in cat.events(package_id=p.id)][-4:] == ["transfer", "fixity check", "receipt",
                                                                       "deletion"]
        # every file of the object is under COMPLIANCE retention
        for key in slut.list(p.id):
            head = raw.head_object(Bucket=lex_in_s3["buckets"]["slutarkiv"], Key=f"ocfl/{key}")
            assert head["ObjectLockMode"] == "COMPLIANCE", key
        # the object in the bucket is a valid OCFL object for an independent validator
        local = _download_object(slut, p.id, tmp_path / "check")
        run = subprocess.run([sys.executable, "-W", "ignore", Path(sys.executable).parent / "ocfl-validate.py",
                              str(local)], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout
    assert slut.exists("0=ocfl_1.1") and set(ocfl.objects(slut)) == {p.id for p in keep}
    with pytest.raises(StorageError, match="under Object Lock"):  # the slutarkiv keeps what it has
        key = next(iter(slut.list(keep[0].id)))
        slut.delete(key, verified_copy_sha256=slut.stat(key).sha256)

    # disposal after approval deletes from the bucket and archives the certificate in the locked bucket
    out = capsys.readouterr().out
    list_id = out.split("disposal list ")[1].split(" ")[0]
    assert main(["gallring", "review", list_id, "--by", "Rut Granskare", "--reason", "Granskad mot IHP"]) == 0
    assert main(["gallring", "approve", list_id, "--by", "Anna Arkivarie", "--reason", "Enligt IHP 4.2"]) == 0
    assert main(["retention", "run", "--as-of", AS_OF]) == 0
    for p in dispose:
        assert cat.package(p.id).status == "disposed" and not mellan.exists(p.location)
    with cat.engine.connect() as c:
        certificate = c.exec_driver_sql("SELECT certificate FROM disposal_lists").scalar()
    assert ocfl.object_exists(slut, certificate) and ocfl.verify_object(slut, certificate) == []

    # the fixity audit reads both buckets; a flipped byte in the slutarkiv is found
    capsys.readouterr()
    assert main(["audit"]) == 0
    victim = next(k for k in slut.list(keep[0].id) if "/content/" in k and k.endswith(".xml"))
    with slut.open(victim) as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0x01
    # Object Lock protects each version, not the key: a new current version (standing in for bit rot or
    # a writer with too many rights) is what the audit must catch
    raw.put_object(Bucket=lex_in_s3["buckets"]["slutarkiv"], Key=f"ocfl/{victim}", Body=bytes(data))
    assert main(["audit"]) == 1
    out = capsys.readouterr().out
    assert keep[0].id in out and "does not match its digest" in out


def test_a_partial_upload_to_the_slutarkiv_is_replaced_on_rerun(lex_in_s3, tmp_path):
    """A crash mid-upload left files of an object without its declaration: the transfer starts afresh."""
    from transforms.archive import ocfl
    from transforms.archive.retention import step_transfer

    cat, slut = lex_in_s3["cat"], lex_in_s3["slutarkiv"]
    p = next(p for p in cat.packages() if p.retention_action == "keep")
    stray, _ = _file(tmp_path, "stray", b"an unfinished upload of another attempt")
    slut.put(stray, f"{p.id}/v1/content/{p.id}/METS.xml", lock=False)
    assert not ocfl.object_exists(slut, p.id)
    assert step_transfer(lex_in_s3["settings"], p.id)["status"] == "transferred"
    assert ocfl.verify_object(slut, p.id) == []
    assert not lex_in_s3["mellanarkiv"].exists(p.location)


def test_retention_transfer_with_the_mellanarkiv_in_a_bucket_and_the_slutarkiv_a_folder(
        monkeypatch, tmp_path, lex_source, s3_env):
    from transforms.catalogue import Catalogue
    from transforms.cli import main

    home = tmp_path / "var"
    for k, v in {"ARKIV_HOME": str(home), "ARKIV_LEX_FILES": str(lex_source["files"]),
                 "ARKIV_CONN_LEX_DB": lex_source["url"],
                 "ARKIV_MELLANARKIV": f"s3://{s3_env['mellanarkiv']}"}.items():
        monkeypatch.setenv(k, v)
    assert main(["run", "lex", "--start", "2025-01-01", "--end", "2026-01-01"]) == 0
    cat = Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")
    store = storage_for(f"s3://{s3_env['mellanarkiv']}", "mellanarkiv", S3Config.from_env())
    keep = [p for p in cat.packages() if p.retention_action == "keep"]
    assert main(["retention", "run", "--as-of", AS_OF]) == 0
    for p in keep:
        assert cat.package(p.id).status == "transferred"
        assert (home / "slutarkiv" / p.id / "inventory.json").is_file()
        assert not store.exists(p.location)
    assert main(["audit"]) == 0


def test_the_airflow_side_builds_the_client_from_an_aws_connection(s3_env, monkeypatch, tmp_path):
    """ARKIV_S3_CONN_ID names an Airflow AWS connection: its credentials and endpoint are used (S3Hook)."""
    import json
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "plugins"))
    from arkivflode_airflow.hooks import with_airflow_s3

    conn = {"conn_type": "aws", "login": "arkiv-test", "password": "arkiv-test-secret",
            "extra": {"endpoint_url": s3_env["endpoint"], "region_name": "eu-north-1"}}
    monkeypatch.setenv("AIRFLOW_CONN_ARKIV_S3", json.dumps(conn))
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "ARKIV_S3_ENDPOINT_URL"):
        monkeypatch.delenv(k)  # nothing but the connection knows where S3 is
    env = {**os.environ, "ARKIV_HOME": str(tmp_path / "var"), "ARKIV_S3_CONN_ID": "arkiv_s3",
           "ARKIV_MELLANARKIV": f"s3://{s3_env['mellanarkiv']}/m"}
    plain = Settings.from_env(env)
    assert with_airflow_s3(Settings.from_env({**env, "ARKIV_S3_CONN_ID": ""})).s3.client_factory is None
    settings = with_airflow_s3(plain)
    assert settings.s3.client_factory is not None and settings == plain  # same values, another client
    store = storage_for(settings.mellanarkiv, "mellanarkiv", settings.s3)
    src, digest = _file(tmp_path, "a", b"through the connection")
    store.put(src, "a.tar", expected_sha256=digest)
    assert _raw(s3_env).head_object(Bucket=s3_env["mellanarkiv"], Key="m/a.tar")["Metadata"]["sha256"] == digest


def test_a_crash_before_sealing_is_sealed_and_finished_by_the_rerun(lex_in_s3, monkeypatch):
    """The object is uploaded whole but the process dies before Object Lock is applied: the rerun seals it."""
    from transforms.archive import ocfl
    from transforms.archive.retention import step_transfer

    cat, slut = lex_in_s3["cat"], lex_in_s3["slutarkiv"]
    p = next(p for p in cat.packages() if p.retention_action == "keep")
    real_seal = ocfl.seal

    def crash(*_):
        raise SystemExit("killed before sealing")

    monkeypatch.setattr(ocfl, "seal", crash)
    with pytest.raises(SystemExit):
        step_transfer(lex_in_s3["settings"], p.id)
    raw = _raw(lex_in_s3)
    keys = list(slut.list(p.id))
    assert ocfl.object_exists(slut, p.id) and cat.package(p.id).status == "stored"
    assert not any("ObjectLockMode" in raw.head_object(Bucket=lex_in_s3["buckets"]["slutarkiv"], Key=f"ocfl/{k}")
                   for k in keys)
    assert lex_in_s3["mellanarkiv"].exists(p.location)  # nothing recorded, so the SIP stays
    monkeypatch.setattr(ocfl, "seal", real_seal)
    assert step_transfer(lex_in_s3["settings"], p.id)["status"] == "transferred"
    assert list(slut.list(p.id)) == keys  # no second object, nothing rewritten
    assert all(raw.head_object(Bucket=lex_in_s3["buckets"]["slutarkiv"], Key=f"ocfl/{k}")["ObjectLockMode"]
               == "COMPLIANCE" for k in keys)
    assert [e.type for e in cat.events(package_id=p.id)].count("transfer") == 1
    assert not lex_in_s3["mellanarkiv"].exists(p.location)


@pytest.mark.parametrize(("env", "message"), [
    ({"ARKIV_S3_PART_SIZE_MB": "4"}, "smallest multipart part is 5 MiB"),
    ({"ARKIV_S3_SSE": "rot13"}, "use AES256 or aws:kms"),
    ({"ARKIV_S3_SSE_KMS_KEY_ID": "k"}, "not aws:kms"),
    ({"ARKIV_SLUTARKIV_OBJECT_LOCK_MODE": "FOREVER", "ARKIV_SLUTARKIV_OBJECT_LOCK_DAYS": "10"}, "GOVERNANCE or"),
    ({"ARKIV_SLUTARKIV_OBJECT_LOCK_MODE": "COMPLIANCE"}, "give both"),
])
def test_bad_s3_settings_are_configuration_errors(env, message):
    from transforms.common.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        S3Config.from_env(env)


def test_s3_settings_are_read_from_the_environment():
    config = S3Config.from_env({"ARKIV_S3_ENDPOINT_URL": "http://minio:9000", "AWS_DEFAULT_REGION": "eu-north-1",
                                "ARKIV_S3_SSE": "aws:kms", "ARKIV_S3_SSE_KMS_KEY_ID": "alias/arkiv",
                                "ARKIV_S3_PART_SIZE_MB": "64", "ARKIV_SLUTARKIV_OBJECT_LOCK_MODE": "governance",
                                "ARKIV_SLUTARKIV_OBJECT_LOCK_DAYS": "3650", "ARKIV_S3_CONN_ID": "arkiv_s3"})
    assert (config.endpoint_url, config.region, config.addressing_style) == ("http://minio:9000", "eu-north-1", "path")
    assert (config.sse, config.sse_kms_key_id, config.part_size) == ("aws:kms", "alias/arkiv", 64 * MIB)
    assert config.lock_for("slutarkiv").mode == "GOVERNANCE" and config.lock_for("slutarkiv").days == 3650
    assert config.lock_for("mellanarkiv") is None and config.conn_id == "arkiv_s3"
    assert S3Config.from_env({}).addressing_style == "auto"  # AWS itself: virtual-hosted where it can
    with pytest.raises(Exception, match="names no bucket"):
        storage_for("s3://", "mellanarkiv", config)
