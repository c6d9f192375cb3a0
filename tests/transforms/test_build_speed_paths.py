"""The package build's fast paths keep what the slow ones promised.

``open_document`` opens a staged document with one ``openat2`` where the kernel has it and
component by component elsewhere: both refuse a link at the file or at any folder on its way,
and anything but a regular file, and both read the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from transforms.common.errors import ContentError
from transforms.staging import batch
from transforms.staging.batch import open_document

HAS_OPENAT2 = batch._openat2() is not None and batch._openat2().available


@pytest.fixture(params=["openat2", "components"])
def opening(request, monkeypatch):
    """Each way open_document can open a file: openat2 (skipped where the kernel lacks it), or
    the component walk every platform has."""
    if request.param == "openat2":
        if not HAS_OPENAT2:
            pytest.skip("this kernel has no openat2")
    else:
        monkeypatch.setattr(batch, "_open_without_links", lambda path: -1)
    return request.param


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, Path]:
    """A document store with one document, and a secret folder outside it."""
    root = (tmp_path / "store").resolve()
    (root / "2025" / "03").mkdir(parents=True)
    (root / "2025" / "03" / "a.pdf").write_bytes(b"%PDF-1.7 a")
    secret = (tmp_path / "secret").resolve()
    secret.mkdir()
    (secret / "a.pdf").write_bytes(b"%PDF-1.7 secret")
    return root, secret


def test_a_document_is_read_either_way(store, opening):
    root, _ = store
    with open_document(root / "2025" / "03" / "a.pdf") as fh:
        assert fh.read() == b"%PDF-1.7 a"
        assert os.get_blocking(fh.fileno())  # opened without waiting for a FIFO's writer, read as usual
        assert not os.get_inheritable(fh.fileno())


def test_a_file_that_became_a_link_is_refused_either_way(store, opening):
    root, secret = store
    doc = root / "2025" / "03" / "a.pdf"
    doc.unlink()
    doc.symlink_to(secret / "a.pdf")
    with pytest.raises(ContentError, match="^a document became a link after it was checked"):
        open_document(doc)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_a_folder_that_became_a_link_is_refused_either_way(store, opening, level):
    """The document's folder, its parent, or the store itself: a link anywhere on the way."""
    root, secret = store
    (secret / "2025" / "03").mkdir(parents=True)
    (secret / "2025" / "03" / "a.pdf").write_bytes(b"%PDF-1.7 secret")
    (secret / "03").mkdir()
    (secret / "03" / "a.pdf").write_bytes(b"%PDF-1.7 secret")
    doc = root / "2025" / "03" / "a.pdf"
    folder, target = [(root / "2025" / "03", secret / "03"), (root / "2025", secret / "2025"), (root, secret)][level]
    os.rename(folder, folder.with_name(folder.name + "-old"))
    folder.symlink_to(target)
    with pytest.raises(ContentError, match="^a document's folder became a link after it was checked") as caught:
        open_document(doc)
    assert str(root) not in str(caught.value)


def test_what_is_not_a_regular_file_is_refused_either_way(store, opening):
    root, _ = store
    fifo = root / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ContentError, match="not a regular file"):
        open_document(fifo)  # returns at once: opening did not wait for a writer
    with pytest.raises(ContentError, match="not a regular file"):
        open_document(root / "2025")


def test_a_missing_document_is_the_same_error_either_way(store, opening):
    root, _ = store
    with pytest.raises(FileNotFoundError):
        open_document(root / "2025" / "03" / "missing.pdf")
    with pytest.raises(FileNotFoundError):
        open_document(root / "2024" / "03" / "a.pdf")


@pytest.mark.skipif(not HAS_OPENAT2, reason="this kernel has no openat2")
def test_openat2_itself_refuses_a_link_at_any_component(store):
    """Not only the component walk after it: openat2 alone opens no path that holds a link."""
    root, secret = store
    opener = batch._openat2()
    fd = opener.open(str(root / "2025" / "03" / "a.pdf"))
    assert fd >= 0
    os.close(fd)
    os.rename(root / "2025", root / "2025-old")
    (root / "2025").symlink_to(root / "2025-old")  # a link that stays inside the store: still a link
    assert opener.open(str(root / "2025" / "03" / "a.pdf")) == -1
    assert opener.available  # a link met is not a reason to stop using openat2
