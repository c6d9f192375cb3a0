import hashlib

import pytest

from transforms.archive.storage import FileSystemStorage
from transforms.common.errors import StorageError


def _file(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p, hashlib.sha256(data).hexdigest()


def test_put_verifies_and_is_idempotent(tmp_path):
    store = FileSystemStorage(tmp_path / "mellanarkiv")
    src, digest = _file(tmp_path, "p.tar", b"package bytes" * 1000)
    obj = store.put(src, "lex/2025/p.tar", expected_sha256=digest)
    assert obj.sha256 == digest and obj.size == 13000
    assert store.exists("lex/2025/p.tar") and store.stat("lex/2025/p.tar").sha256 == digest
    assert store.put(src, "lex/2025/p.tar", expected_sha256=digest) == obj  # rerun: same object, no error
    assert list(store.list()) == ["lex/2025/p.tar"]
    with store.open("lex/2025/p.tar") as f:
        assert f.read() == src.read_bytes()


def test_put_never_overwrites_other_content(tmp_path):
    store = FileSystemStorage(tmp_path / "m")
    a, da = _file(tmp_path, "a", b"first")
    b, db = _file(tmp_path, "b", b"second")
    store.put(a, "k.tar", expected_sha256=da)
    with pytest.raises(StorageError, match="refusing to overwrite"):
        store.put(b, "k.tar", expected_sha256=db)
    assert store.stat("k.tar").sha256 == da


def test_put_rejects_a_source_that_does_not_match_its_checksum(tmp_path):
    store = FileSystemStorage(tmp_path / "m")
    src, _ = _file(tmp_path, "a", b"content")
    with pytest.raises(StorageError, match="differs from expected"):
        store.put(src, "k.tar", expected_sha256="0" * 64)
    assert not store.exists("k.tar")
    assert not any(p.name.startswith(".") for p in (tmp_path / "m").rglob("*"))  # no temp file left


def test_delete_requires_the_checksum_of_a_verified_copy(tmp_path):
    store = FileSystemStorage(tmp_path / "m")
    src, digest = _file(tmp_path, "a", b"content")
    store.put(src, "k.tar", expected_sha256=digest)
    with pytest.raises(StorageError, match="refusing to delete"):
        store.delete("k.tar", verified_copy_sha256="f" * 64)
    store.delete("k.tar", verified_copy_sha256=digest)
    assert not store.exists("k.tar")


@pytest.mark.parametrize("key", ["../x", "/abs", "a/../../b", "", ".hidden", "a\\b"])
def test_keys_are_confined_to_the_root(tmp_path, key):
    store = FileSystemStorage(tmp_path / "m")
    with pytest.raises(ValueError):
        store.exists(key)
