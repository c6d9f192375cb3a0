"""Reproducible packages: the same staged batch built twice gives byte-identical TARs, with and
without PDF/A conversion; converted PDFs carry dates and IDs derived from their input."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import tarfile
import time
from pathlib import Path

import pytest
from format_corpus import make_corpus
from lxml import etree

from transforms.common.xmltools import NS_METS, NS_PREMIS
from transforms.config.systems import load_system
from transforms.formats.conversion import ConversionCache, Converter, Job, check_pdf, make_reproducible
from transforms.intake.database import extract_database
from transforms.packaging.sip import batch_time, build_packages
from transforms.validation.validator import validate_package

LEX = load_system(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")
NS = {"m": NS_METS, "p": NS_PREMIS}


@pytest.fixture(scope="module")
def lex_batch(tmp_path_factory):
    """A small generated Lex with DOCX among its documents (which Lex's policy converts)."""
    from demo import lex

    root = tmp_path_factory.mktemp("lex-reproducible")
    url = f"sqlite:///{root / 'lex.sqlite'}"
    lex.generate(url, root / "files", cases=8, seed=5, year=2025)
    staged = extract_database(LEX, url, dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1), root / "staging",
                              env={"ARKIV_LEX_FILES": str(root / "files")})
    return staged


def _build(staged, out: Path, **kw) -> dict[str, str]:
    built = [p for rc in sorted(staged.partitions) for p in build_packages(LEX, staged, rc, out, **kw)]
    assert built
    digests = {}
    for p in built:
        digests[p.package_id] = hashlib.sha256(Path(p.path).read_bytes()).hexdigest()
        assert digests[p.package_id] == p.sha256
    return digests


class _Counted:
    """Counts the LibreOffice processes the real converter starts (it still starts them)."""

    def __init__(self, monkeypatch):
        self.n = 0
        real = Converter._invoke

        def invoke(conv, *args, **kwargs):
            self.n += 1
            return real(conv, *args, **kwargs)

        monkeypatch.setattr(Converter, "_invoke", invoke)


def test_the_same_batch_built_twice_is_byte_identical(lex_batch, tmp_path):
    policy = LEX.formats.without_conversion()
    first = _build(lex_batch, tmp_path / "a", policy=policy)
    time.sleep(1.2)  # the clock has moved on: nothing in the package may follow it
    second = _build(lex_batch, tmp_path / "b", policy=policy)
    assert first == second
    # the dates the build writes itself are the batch's, not the moment of building
    when = batch_time(lex_batch)
    assert when == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with tarfile.open(next((tmp_path / "a").glob("*.tar"))) as tar:
        mets_member = next(m for m in tar.getmembers() if m.name.endswith("/METS.xml") and m.name.count("/") == 1)
        assert mets_member.mtime == int(when.timestamp())
        mets = etree.fromstring(tar.extractfile(mets_member).read())
    assert mets.find("m:metsHdr", NS).get("CREATEDATE") == when.isoformat()


def test_a_batch_staged_before_its_interval_ended_is_dated_when_it_was_staged(lex_batch, tmp_path):
    manifest = Path(lex_batch.manifest_path)
    staged_at = dt.datetime.fromtimestamp(manifest.stat().st_mtime, dt.UTC).replace(microsecond=0)
    from dataclasses import replace

    still_open = replace(lex_batch, interval_end=(staged_at + dt.timedelta(days=30)).isoformat())
    assert batch_time(still_open) == staged_at  # never a moment that had not come when it was built


def test_with_conversion_a_rebuild_is_identical_and_converts_nothing(lex_batch, tmp_path, monkeypatch):
    counted = _Counted(monkeypatch)
    cache = tmp_path / "cache"
    first = _build(lex_batch, tmp_path / "a", conversion_cache=cache)
    assert counted.n >= 1, "the sample should have documents to convert"
    stored = sorted(cache.rglob("*.pdf"))
    assert stored and not list(cache.rglob("*.part"))
    time.sleep(1.2)
    before = counted.n
    second = _build(lex_batch, tmp_path / "b", conversion_cache=cache)
    assert counted.n == before  # every PDF/A came from the cache: no LibreOffice started
    assert first == second
    for pkg in (tmp_path / "b").glob("*.tar"):
        report = validate_package(pkg, "fgs")
        assert report.valid, report.to_text()


def test_a_cold_conversion_gives_the_same_pdf_as_the_first(lex_batch, tmp_path):
    # Two caches: LibreOffice converts both times, and the PDFs still carry the same bytes.
    _build(lex_batch, tmp_path / "a", conversion_cache=tmp_path / "cache-a")
    time.sleep(1.2)
    _build(lex_batch, tmp_path / "b", conversion_cache=tmp_path / "cache-b")
    a = {p.name: p.read_bytes() for p in (tmp_path / "cache-a").rglob("*.pdf")}
    b = {p.name: p.read_bytes() for p in (tmp_path / "cache-b").rglob("*.pdf")}
    assert a and a.keys() == b.keys()
    differing = [k for k in a if a[k] != b[k]]
    assert not differing, f"{len(differing)} of {len(a)} conversions differ between two runs"


def test_a_damaged_cache_entry_is_converted_again_not_used(lex_batch, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = _build(lex_batch, tmp_path / "a", conversion_cache=cache)
    entry = sorted(cache.rglob("*.pdf"))[0]
    good = entry.read_bytes()
    entry.write_bytes(good[:-300])  # cut off: no %%EOF, no cross-reference
    counted = _Counted(monkeypatch)
    assert _build(lex_batch, tmp_path / "b", conversion_cache=cache) == first
    assert counted.n >= 1
    assert entry.read_bytes() == good


def test_pruning_removes_only_entries_unused_for_the_days_given(lex_batch, tmp_path, monkeypatch, capsys):
    """An entry's time is its last use: a rebuild renews what it takes, prune removes only what nothing
    used for the days given, a dry run removes nothing, and a pruned entry is converted again to the
    same bytes."""
    from transforms.cli import main

    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ARKIV_WORK", raising=False)
    monkeypatch.setenv("ARKIV_CONVERSION_CACHE", str(tmp_path / "cache"))
    cache = ConversionCache(tmp_path / "cache")
    counted = _Counted(monkeypatch)
    first = _build(lex_batch, tmp_path / "a", conversion_cache=cache)
    converted = counted.n
    entries = sorted(p for p, _, _ in cache.entries())
    assert converted >= 1 and entries

    def age(days: int) -> None:
        then = time.time() - days * 86400
        for path in entries:
            os.utime(path, (then, then))

    age(200)
    assert _build(lex_batch, tmp_path / "b", conversion_cache=cache) == first  # takes (and renews) every entry
    assert counted.n == converted
    assert cache.prune(180 * 86400).removed_entries == 0

    age(200)
    # files the cache did not name itself (a folder given by mistake) are never its entries
    foreign = [tmp_path / "cache" / "01" / "bygglov.pdf", tmp_path / "cache" / entries[0].parent.name / "x.pdf"]
    for f in foreign:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"%PDF-1.4 a delivered document\n%%EOF\n")
        os.utime(f, (time.time() - 400 * 86400,) * 2)
    assert main(["conversions"]) == 0
    assert f"{len(entries)} entries" in capsys.readouterr().out
    assert main(["conversions", "prune", "--unused-days", "180", "--dry-run"]) == 0
    assert f"would remove {len(entries)} entries" in capsys.readouterr().out
    assert sorted(p for p, _, _ in cache.entries()) == entries
    assert main(["conversions", "prune"]) == 2  # how long unused must be said
    assert main(["conversions", "prune", "--unused-days", "180"]) == 0
    assert f"removed {len(entries)} entries" in capsys.readouterr().out
    assert list(cache.entries()) == []
    assert all(f.is_file() for f in foreign)
    assert _build(lex_batch, tmp_path / "c", conversion_cache=cache) == first
    assert counted.n > converted


def test_converted_pdf_dates_and_ids_follow_the_input(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    src = corpus["docx"]
    os.utime(src, (1_700_000_000, 1_700_000_000))
    with Converter() as conv:
        [r] = conv.convert([Job(src, "fmt/412")], tmp_path / "out")
    assert r.ok, r.detail
    data = r.output.read_bytes()
    ok, _, pdfa = check_pdf(r.output, 2)
    assert ok and pdfa == "2B"
    seed = hashlib.sha256(src.read_bytes()).hexdigest()[:32].upper().encode()
    assert re.search(rb"/ID\s*\[\s*<" + seed + rb">\s*<" + seed + rb">\s*\]", data)
    assert b"/DocChecksum" not in data
    assert re.search(rb"/CreationDate\(D:20231114221320Z'\)", data)
    assert b"<xmp:CreateDate>2023-11-14T22:13:20Z</xmp:CreateDate>" in data
    this_year = str(time.gmtime().tm_year).encode()
    assert this_year not in re.sub(rb"stream\r?\n.*?endstream", b"", data, flags=re.S)  # no clock outside streams


def test_a_pdf_another_tool_wrote_is_left_alone_or_rewritten_consistently(tmp_path):
    from format_corpus import make_pdf

    pdf = tmp_path / "brev.pdf"
    pdf.write_bytes(make_pdf(["Beslut om bygglov"], title="Beslut"))
    changed = make_reproducible(pdf, 1_700_000_000, b"\x01" * 32)
    assert check_pdf(pdf)[0]
    once = pdf.read_bytes()
    assert make_reproducible(pdf, 1_700_000_000, b"\x01" * 32) is changed
    assert pdf.read_bytes() == once  # a second pass changes nothing
    # an incrementally updated PDF (two cross-reference sections) is not ours to rewrite
    updated = tmp_path / "uppdaterad.pdf"
    body = once + b"xref\n0 1\n0000000000 65535 f \ntrailer\n<</Size 1>>\nstartxref\n%d\n%%%%EOF\n" % len(once)
    updated.write_bytes(body)
    assert make_reproducible(updated, 1_700_000_000, b"\x01" * 32) is False
    assert updated.read_bytes() == body


def test_cache_entries_are_keyed_by_input_time_and_converter(tmp_path):
    src = tmp_path / "a.docx"
    src.write_bytes(b"x")
    job = Job(src, "fmt/412")
    digest = hashlib.sha256(b"x").hexdigest()
    k1 = ConversionCache.key(job, digest, "LibreOffice 7.4.7.2")
    assert ConversionCache.key(job, digest, "LibreOffice 7.5.1.1") != k1
    os.utime(src, (1_600_000_000, 1_600_000_000))
    assert ConversionCache.key(job, digest, "LibreOffice 7.4.7.2") != k1


def _structure_problems(data: bytes) -> list[str]:
    """What a reader would trip over: xref entries that miss their object, dangling references,
    stream lengths that do not match, streams that do not inflate."""
    import struct
    import zlib

    problems = []
    sx = int(re.findall(rb"startxref\s+(\d+)", data)[-1])
    m = re.match(rb"xref\s+0\s+(\d+)\s+", data[sx:])
    assert m, "no classic cross-reference table"
    entries = data[sx + m.end():sx + m.end() + 20 * int(m.group(1))]
    offsets = {}
    for n in range(int(m.group(1))):
        e = entries[20 * n:20 * n + 20]
        if e[17:18] == b"n":
            offsets[n] = int(e[:10])
            if not data.startswith(b"%d 0 obj" % n, offsets[n]):
                problems.append(f"xref entry {n} does not point at object {n}")
    for ref in re.findall(rb"(\d+) 0 R\b", re.sub(rb"stream\r?\n.*?endstream", b"", data, flags=re.S)):
        if int(ref) not in offsets:
            problems.append(f"reference to missing object {int(ref)}")
    for n, at in offsets.items():
        body = data[at:data.index(b"endobj", at)]
        s = re.search(rb"stream\r?\n", body)
        if not s:
            continue
        length = re.search(rb"/Length (\d+)( 0 R)?", body).groups()
        size = int(length[0]) if not length[1] else \
            int(re.match(rb"\d+ 0 obj\s*(\d+)", data[offsets[int(length[0])]:]).group(1))
        raw = body[s.end():s.end() + size]
        if not re.match(rb"(\r\n|\n|\r)?endstream", body[s.end() + size:]):
            problems.append(f"object {n}: /Length does not reach endstream")
        if b"/FlateDecode" in body[:s.start()]:
            try:
                plain = zlib.decompress(raw)
            except zlib.error:
                problems.append(f"object {n}: stream does not inflate")
                continue
            if plain[36:40] == b"acsp" and struct.unpack(">I", plain[:4])[0] != len(plain):
                problems.append(f"object {n}: ICC profile's size does not match its header")
    return problems


def test_rewritten_pdfs_are_whole(lex_batch, tmp_path):
    _build(lex_batch, tmp_path / "a", conversion_cache=tmp_path / "cache")
    pdfs = sorted((tmp_path / "cache").rglob("*.pdf"))
    assert pdfs
    for pdf in pdfs:
        assert not _structure_problems(pdf.read_bytes()), pdf.name
    # the check itself sees a stream whose /Length falls short of its data
    data = pdfs[0].read_bytes()
    m = re.search(rb"/Length (\d+)/Filter", data)
    broken = data[:m.start(1)] + b"%d" % (int(m.group(1)) - 5) + data[m.end(1):]
    assert _structure_problems(broken)


def test_workers_with_no_disk_in_common_share_conversions_through_the_working_bucket(
        lex_batch, tmp_path, monkeypatch, s3_env):
    """A conversion made on one worker is taken from the working bucket by another with an empty disk
    (no LibreOffice started, the same packages); an entry whose bytes no longer hash to what was
    published is not used but converted again."""
    from testservices import make_bucket

    from transforms.archive.workarea import shared_files
    from transforms.config.settings import Settings

    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "home"))
    bucket = make_bucket(s3_env["endpoint"])
    settings = Settings.from_env()
    env = {"ARKIV_WORK": f"s3://{bucket}/work"}
    assert shared_files(settings, "conversions", {}) is None  # no working bucket: the folder is the cache

    def worker(name: str) -> ConversionCache:
        return ConversionCache(tmp_path / name / "cache", shared_files(settings, "conversions", env))

    counted = _Counted(monkeypatch)
    first = _build(lex_batch, tmp_path / "a", conversion_cache=worker("a"))
    converted = counted.n
    assert converted >= 1
    client = settings.s3.client()
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="work/conversions/")["Contents"])
    assert len(keys) == len(list((tmp_path / "a" / "cache").rglob("*.pdf")))

    b = worker("b")
    assert _build(lex_batch, tmp_path / "b", conversion_cache=b) == first
    assert counted.n == converted and b.hits >= 1 and b.stored == 0  # all from the bucket

    damaged = keys[0]
    head = client.head_object(Bucket=bucket, Key=damaged)
    client.put_object(Bucket=bucket, Key=damaged, Body=b"%PDF-1.7 not the published bytes %%EOF",
                      Metadata=head["Metadata"])
    c = worker("c")
    assert _build(lex_batch, tmp_path / "c", conversion_cache=c) == first
    assert counted.n > converted and c.stored >= 1  # the damaged entry was converted again, not used

    # pruning the shared entries goes by when they were stored
    shared = c.shared
    stored = sorted(name for name, _, _ in shared.entries())
    assert len(stored) == len(keys)
    assert shared.prune(time.time() - 3600) == (0, 0)
    removed, size = shared.prune(time.time() + 60, dry_run=True)
    assert removed == len(keys) and size > 0
    assert sorted(name for name, _, _ in shared.entries()) == stored
    assert shared.prune(time.time() + 60)[0] == len(keys)
    assert list(shared.entries()) == []
