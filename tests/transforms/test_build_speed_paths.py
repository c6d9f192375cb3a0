"""The package build's fast paths keep what the slow ones promised.

``open_document`` opens a staged document with one ``openat2`` where the kernel has it and
component by component elsewhere: both refuse a link at the file or at any folder on its way,
and anything but a regular file, and both read the same bytes. The package's own digest and
writes happen on a helper thread (:class:`BackgroundHashingWriter`): the same bytes and digest
as in the caller's thread, and a write error still fails the build and leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import errno
import io
import os
import random
import resource
import signal
import threading
from pathlib import Path

import pytest

from transforms.common.errors import ContentError
from transforms.common.hashing import BackgroundHashingWriter, HashingWriter
from transforms.packaging.csip import PackageWriter
from transforms.packaging.fgs import FGS_TABULAR
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


# --- the package's digest and writes on a helper thread --------------------------------------------------


def _writer_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("package-sha256-write")]


@pytest.mark.parametrize("buffer_size", [7, 64, 1 << 20])
def test_the_background_writer_writes_and_hashes_what_a_hashing_writer_does(buffer_size):
    rng = random.Random(buffer_size)
    pieces = [b"", b"x", bytes(buffer_size - 1), bytes(buffer_size), bytes(buffer_size + 1)]
    sizes = [1, 3, 50, 511, 4096] + ([70_000, 3 << 20] if buffer_size > 4096 else [])
    pieces += [rng.randbytes(rng.choice(sizes)) for _ in range(40)]
    plain, background = HashingWriter(io.BytesIO()), BackgroundHashingWriter(io.BytesIO(), buffer_size)
    for piece in pieces:
        # a reused buffer, as TarStream passes a document's chunks: overwritten once write returns
        reused = bytearray(piece)
        plain.write(piece)
        assert background.write(memoryview(reused)) == len(piece)
        reused[:] = bytes(len(reused))
    background.close()
    assert background.raw.getvalue() == plain.raw.getvalue()
    assert (background.size, background.hexdigest()) == (plain.size, plain.hexdigest())
    assert _writer_threads() == []


class _FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, room: int):
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return len(data)


def test_a_full_disk_under_the_background_writer_is_raised_by_the_next_call_and_every_one_after():
    out = BackgroundHashingWriter(_FullDisk(100), 64)
    out.write(bytes(64))  # handed over: written
    out.write(bytes(64))  # handed over: fails on the helper thread
    with pytest.raises(OSError, match="No space"):
        out.write(bytes(64))  # waits for the helper before it hands over again
    with pytest.raises(OSError, match="No space"):
        out.write(b"x")
    with pytest.raises(OSError, match="No space"):
        out.close()
    assert _writer_threads() == []


def test_abandoning_the_background_writer_stops_its_thread_without_raising():
    out = BackgroundHashingWriter(_FullDisk(10), 64)
    out.write(bytes(64))  # handed over: fails on the helper thread
    out.write(bytes(5))
    out.abandon()
    assert _writer_threads() == []


def test_a_package_too_large_for_its_file_system_leaves_nothing_behind(tmp_path):
    """A real write error (the file size limit, as a full disk would say) while the helper thread
    writes: the build fails with it, and no temporary package, work folder or thread is left."""
    doc = tmp_path / "big.bin"
    doc.write_bytes(random.Random(1).randbytes(3 << 20))
    dest = tmp_path / "packages"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (3 << 20, hard))
        with pytest.raises(OSError) as caught, PackageWriter(
                dest, "uuid-0b6f1c52-3a4e-5f0e-9d1c-000000000009", profile=FGS_TABULAR, package_type="AIP",
                created=dt.datetime(2026, 3, 4, tzinfo=dt.UTC)) as w:
            w.add("representations/rep1/data/big.bin", doc, file_id="file-1", mime="application/octet-stream")
            w.add("representations/rep1/data/again.bin", doc, file_id="file-2", mime="application/octet-stream")
            w.finish(label="Testpaket")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert caught.value.errno == errno.EFBIG
    assert list(dest.iterdir()) == []
    assert _writer_threads() == []


# --- an entry's values checked for escaping at once --------------------------------------------------------


def test_as_is_holds_exactly_for_the_characters_escape_leaves_unchanged_in_text_and_attributes():
    """Every code point: as_is says "unchanged" only where escape gives the character back in text and
    in an attribute, and says "escape" for every character either context changes or refuses."""
    from transforms.common.xmltools import NotXmlText, as_is, escape

    def unchanged(ch: str) -> bool:
        try:
            return escape(ch) == ch and escape(ch, attribute=True) == ch
        except NotXmlText:
            return False

    wrong = [hex(c) for c in range(0x110000) if as_is([chr(c)]) != unchanged(chr(c))]
    assert wrong == []
    assert as_is(["Bygglov Storgatan 1", "åäö", "2025-03-01T00:00:00", ""])
    assert not as_is(["Bygglov", 'a "quote"'])
    assert not as_is(["x", "tab\there"])  # unchanged in text, not in an attribute: escaped


def _erms_case(i: int, *, secret: bool = False, parties: int = 2, docs: int = 2, closed=None, title="Bygglov",
               missing_file: bool = False):
    import datetime as dt

    from transforms.packaging import erms

    fields = {"case_id": i, "diarienummer": f"KS 2025/{i}", "title": title, "unit": "Bygg" if i % 2 else None,
              "case_officer": None if i % 3 else "Handläggare", "classification_code": "1.2",
              "status": ["Avslutad", "öppen", "okänt"][i % 3], "registered_date": dt.date(2025, 1, 1),
              "closed_date": closed, "secrecy": secret, "secrecy_reference": "OSL 26:1" if secret and i % 2 else None}
    case = erms.Case(fields=fields)
    for p in range(parties):
        case.parties.append({"party_id": p, "case_id": i, "name": None if p == 2 else f"Part {p}",
                             "role": "sökande" if p else None, "personnummer": "19121212-1212" if p == 1 else None,
                             "organisationsnummer": "556000-0000" if p % 2 else None})
    for d in range(docs):
        doc = {"document_id": i * 100 + d, "case_id": i, "document_number": d + 1 if d != 1 else None,
               "title": None if d == 2 else f"Handling {d} åäö",
               "direction": ["Inkommande", "upprättad", "annat"][d % 3],
               "document_date": dt.datetime(2025, 2, d + 1, 8), "registered_date": dt.date(2025, 2, 2) if d else None,
               "file_name": f"fil {d}.pdf" if d else None, "mime_type": "application/pdf" if d else None,
               "secrecy": secret and d == 0, "secrecy_reference": None}
        path = "" if missing_file and d == 0 else f"../../representations/rep1/data/KS_2025_{i}/{d + 1}_fil.pdf"
        case.documents.append(erms.Document(fields=doc, package_path=path, size=10))
    return case


@pytest.mark.parametrize("retention", [None, "keep", "dispose"])
def test_an_aggregation_written_as_plain_text_is_what_the_escaping_writer_writes(retention):
    """Every shape of case the writer knows (secret or not, with or without parties, documents, dates,
    unit, status, a missing file, an open case): the plain path gives the escaping path's bytes."""
    import datetime as dt

    from transforms.config.systems import load_system
    from transforms.packaging import erms

    lex = load_system(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")
    rule = None if retention is None else {"record_class": "arenden", "action": retention, "period": "P2Y",
                                           "basis": "IHP 3.1", "counted_from": "closed_date"}
    cases = [_erms_case(1), _erms_case(2, secret=True, parties=3, docs=4, closed=dt.date(2025, 3, 1)),
             _erms_case(3, parties=0, docs=0, title=None), _erms_case(4, missing_file=True, closed=dt.date(2025, 1, 9)),
             _erms_case(5, secret=True, title="", closed=dt.datetime(2025, 5, 6, 7, 8, 9))]
    for case in cases:
        for depth in (2, 3):
            args = (depth, case, lex.content, "Testkommun", rule)
            plain = erms._plain_aggregation_text(*args)
            assert plain == erms._escaped_aggregation_text(*args)
            assert erms._aggregation_text(*args) == plain
    awkward = _erms_case(6, title='<a> & "b"')
    args = (2, awkward, lex.content, "Testkommun", rule)
    assert b"&lt;a&gt; &amp;" in erms._aggregation_text(*args)  # a value that needs escaping takes the escaping path
