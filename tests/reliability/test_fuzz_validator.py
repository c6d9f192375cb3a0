"""The package validator against mutated packages: METS, PREMIS and the archive's members.

``validate_package`` promises never to raise on bad content: whatever a submitter sends, the
answer is a report. And the checksums in METS must catch every changed byte of a file they
cover. Hypothesis mutates a small valid package (the one tests/transforms/test_validate.py
builds) in the ways a damaged or hostile delivery would differ, and checks both promises.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import random
import shutil
import struct
import tarfile
import time
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import pytest
from fault_support import FUZZ
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from transforms.validation.validator import validate_package

FUZZ_SETTINGS = settings(max_examples=150, deadline=5000,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
COVERED = ["metadata/preservation/premis.xml", "representations/rep1/METS.xml", "documentation/readme.txt",
           "representations/rep1/data/doc.txt"]


def _builder():
    path = Path(__file__).resolve().parents[1] / "transforms" / "test_validate.py"
    spec = importlib.util.spec_from_file_location("arkiv_validate_fixture", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_package


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = _builder()(tmp_path_factory.mktemp("pristine"))
    assert validate_package(root).valid
    return root


def _copy(pristine: Path, tmp: Path) -> Path:
    target = tmp / "case" / pristine.name
    shutil.rmtree(tmp / "case", ignore_errors=True)
    shutil.copytree(pristine, target)
    return target


TEXT = st.text(max_size=30)
TREE_MUTATION = st.one_of(
    st.tuples(st.just("drop"), st.integers(0, 200)),
    st.tuples(st.just("duplicate"), st.integers(0, 200)),
    st.tuples(st.just("attribute"), st.integers(0, 200), st.sampled_from(
        ["ID", "OBJID", "TYPE", "PROFILE", "CHECKSUM", "CHECKSUMTYPE", "SIZE", "MIMETYPE", "CREATED", "USE",
         "{http://www.w3.org/1999/xlink}href", "FILEID", "ADMID", "LABEL"]), TEXT),
    st.tuples(st.just("text"), st.integers(0, 200), TEXT),
    st.tuples(st.just("move"), st.integers(0, 200), st.integers(0, 200)),
)
BYTE_MUTATION = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
)


def _apply_tree(path: Path, mutations) -> None:
    tree = etree.parse(str(path))
    for m in mutations:
        elements = list(tree.getroot().iter())
        el = elements[m[1] % len(elements)]
        if m[0] == "drop" and el.getparent() is not None:
            el.getparent().remove(el)
        elif m[0] == "duplicate" and el.getparent() is not None:
            el.addnext(etree.fromstring(etree.tostring(el)))
        elif m[0] == "attribute":
            with contextlib.suppress(ValueError):  # lxml refuses text XML cannot hold (control characters)
                el.set(m[2], m[3])
        elif m[0] == "text" and isinstance(el.tag, str):
            with contextlib.suppress(ValueError):
                el.text = m[2]
        elif m[0] == "move":
            other = elements[m[2] % len(elements)]
            if other.getparent() is not None:
                with contextlib.suppress(ValueError):  # lxml refuses to move an element into itself
                    el.append(other)
    tree.write(str(path), xml_declaration=True, encoding="UTF-8")


def _apply_bytes(path: Path, m) -> bool:
    """Change the file's bytes; False when the mutation happened to leave them as they were."""
    data = path.read_bytes()
    at = int(len(data) * m[1])
    if m[0] == "truncate":
        new = data[:at]
    elif m[0] == "flip":
        at = min(at, len(data) - 1)
        new = data[:at] + bytes([data[at] ^ m[2]]) + data[at + 1:]
    else:
        new = data[:at] + m[2] + data[at:]
    path.write_bytes(new)
    return new != data


@FUZZ_SETTINGS
@given(mutations=st.lists(TREE_MUTATION, min_size=1, max_size=4), target=st.sampled_from(
    ["METS.xml", "representations/rep1/METS.xml", "metadata/preservation/premis.xml"]))
def test_mutated_mets_and_premis_give_a_report_never_an_exception(pristine, tmp_path, mutations, target):
    FUZZ["validator: mutated METS/PREMIS trees"] += 1
    root = _copy(pristine, tmp_path)
    before = (root / target).read_bytes()
    _apply_tree(root / target, mutations)
    report = validate_package(root)
    if target in COVERED and (root / target).read_bytes() != before:
        assert not report.valid, f"a changed {target} went unnoticed"


@FUZZ_SETTINGS
@given(mutation=BYTE_MUTATION, target=st.sampled_from(["METS.xml", *COVERED]))
def test_every_changed_byte_of_a_covered_file_is_caught(pristine, tmp_path, mutation, target):
    FUZZ["validator: byte mutations"] += 1
    root = _copy(pristine, tmp_path)
    changed = _apply_bytes(root / target, mutation)
    report = validate_package(root)
    if changed and target in COVERED:
        assert not report.valid and report.findings, f"a changed {target} went unnoticed"


MEMBER_MUTATION = st.one_of(
    st.tuples(st.just("cut"), st.floats(0.05, 0.99)),  # the tar file itself truncated
    st.tuples(st.just("drop"), st.integers(0, 50)),  # a member left out
    st.tuples(st.just("rename"), st.integers(0, 50), st.text(min_size=1, max_size=20)),
    st.tuples(st.just("extra"), st.text(min_size=1, max_size=30), st.binary(max_size=40)),
    st.tuples(st.just("resize"), st.integers(0, 50), st.binary(max_size=40)),
)


@FUZZ_SETTINGS
@given(mutations=st.lists(MEMBER_MUTATION, min_size=1, max_size=3))
def test_tar_packages_with_mutated_members_give_a_report(pristine, tmp_path, mutations):
    FUZZ["validator: mutated archive members"] += 1
    members = sorted(p for p in pristine.rglob("*") if p.is_file())
    entries = [[f"{pristine.name}/{p.relative_to(pristine).as_posix()}", p.read_bytes()] for p in members]
    cut = None
    for m in mutations:
        if m[0] == "cut":
            cut = m[1]
        elif m[0] == "drop" and entries:
            entries.pop(m[1] % len(entries))
        elif m[0] == "rename" and entries:
            entries[m[1] % len(entries)][0] = f"{pristine.name}/{m[2]}"
        elif m[0] == "extra":
            entries.append([m[1], m[2]])
        elif m[0] == "resize" and entries:
            entries[m[1] % len(entries)][1] = m[2]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    data = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:  # where the last member's bytes end (then only padding)
        end_of_members = max((m.offset_data + m.size for m in tf.getmembers()), default=0)
    if cut is not None:
        data = data[: int(len(data) * cut)]
        if len(data) >= end_of_members:
            cut = None  # only the end-of-archive padding went: every member is still whole
    path = tmp_path / "pkg.tar"
    path.write_bytes(data)
    original = {f"{pristine.name}/{p.relative_to(pristine).as_posix()}": p.read_bytes() for p in members}
    report = validate_package(path)
    if cut is not None or {n: d for n, d in entries} != original:
        changed = [n for n, d in original.items() if dict(entries).get(n) != d and n.split("/", 1)[1] in COVERED]
        if changed or cut is not None:
            assert not report.valid


# --------------------------------------------------------------------------------------------
# The containers themselves: real tars and zips of the valid package, damaged byte by byte
# --------------------------------------------------------------------------------------------
FUZZ_SEED = 20261207
CONTAINER_CASES = 320


def _streamed_zip(members: list[tuple[str, bytes]]) -> bytes:
    """A zip as streaming tools write one: deflate, a data descriptor after each member (flag
    bit 3, sizes zero in the local header), no folder entries, zip64 extra fields and end records."""
    out, central = bytearray(), bytearray()
    for name, data in members:
        raw = name.encode("utf-8")
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        packed = comp.compress(data) + comp.flush()
        crc, offset = zlib.crc32(data), len(out)
        local_extra = struct.pack("<HHQQ", 1, 16, 0, 0)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0x0808, 8, 0, 0x5021, 0, 0xFFFFFFFF, 0xFFFFFFFF,
                           len(raw), len(local_extra)) + raw + local_extra + packed
        out += struct.pack("<4sIQQ", b"PK\x07\x08", crc, len(packed), len(data))
        extra = struct.pack("<HHQQQ", 1, 24, len(data), len(packed), offset)
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", (3 << 8) | 45, 45, 0x0808, 8, 0, 0x5021, crc,
                               0xFFFFFFFF, 0xFFFFFFFF, len(raw), len(extra), 0, 0, 0, 0o100644 << 16,
                               0xFFFFFFFF) + raw + extra
    cd_off = len(out)
    out += central
    rec = len(out)
    out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, len(members), len(members), len(central),
                       cd_off)
    out += struct.pack("<4sIQI", b"PK\x06\x07", 0, rec, 1)
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(out)


def _containers(pristine: Path) -> dict[str, tuple[bytes, list[int]]]:
    """The valid package as tars and zips of several makes, each with the offsets of its headers."""
    members = [(f"{pristine.name}/{p.relative_to(pristine).as_posix()}", p.read_bytes())
               for p in sorted(pristine.rglob("*")) if p.is_file()]
    out: dict[str, tuple[bytes, list[int]]] = {}
    for label, fmt in (("pax.tar", tarfile.PAX_FORMAT), ("gnu.tar", tarfile.GNU_FORMAT)):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            tf.add(pristine, arcname=pristine.name)
        data = buf.getvalue()
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            heads = [m.offset for m in tf.getmembers()] + [tf.offset]
        out[label] = (data, heads)
    for label, method in (("deflate.zip", zipfile.ZIP_DEFLATED), ("stored.zip", zipfile.ZIP_STORED)):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", method) as zf:
            for name, data in members:
                zf.writestr(name, data)
        out[label] = (buf.getvalue(), [])
    out["streamed.zip"] = (_streamed_zip(members), [])
    for label in ("deflate.zip", "stored.zip", "streamed.zip"):
        data = out[label][0]
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            heads = [i.header_offset for i in zf.infolist()] + [zf.start_dir]
        out[label] = (data, [*heads, data.rfind(b"PK\x05\x06")])
    return out


def _mutate(rng: random.Random, data: bytes, heads: list[int], other: bytes) -> tuple[str, bytes]:
    def spot() -> int:  # half the time in or near a header, where the structure lives
        if heads and rng.random() < 0.5:
            return min(len(data) - 1, rng.choice(heads) + rng.randrange(0, 64))
        return rng.randrange(len(data))

    kind = rng.choice(["flip", "flip", "flip", "truncate", "splice", "append", "prepend", "duplicate", "zero"])
    buf = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            buf[spot()] ^= rng.randint(1, 255)
    elif kind == "truncate":
        del buf[spot():]
    elif kind == "splice" and len(heads) > 1:
        a, b = rng.sample(heads, 2)
        n = rng.choice([4, 30, 46, 512])
        buf[b:b + n] = data[a:a + n]
    elif kind == "append":
        buf += other
    elif kind == "prepend":
        buf[:0] = other[: rng.choice([2, 512, len(other)])]
    elif kind == "duplicate":
        at = spot()
        buf[at:at] = data[at:at + rng.randint(1, 600)]
    else:
        at = spot()
        buf[at:at + rng.randint(1, 1024)] = bytes(min(1024, len(buf) - at))
    return kind, bytes(buf)


def _has_readable_root_mets(path: Path) -> bool:
    from transforms.common.safe_archive import open_package
    from transforms.common.xmltools import parse_bytes

    try:
        with open_package(path) as reader:
            data = reader.read_bytes("METS.xml", 64 * 1024 * 1024)
        return parse_bytes(data, name="METS.xml").getroot().tag == "{http://www.loc.gov/METS/}mets"
    except Exception:
        return False


def test_damaged_tars_and_zips_of_a_real_package_give_a_report_never_an_exception(pristine, tmp_path):
    """Flipped bytes (mostly in headers), cuts, spliced headers, a second archive appended or
    prepended, repeated and zeroed regions, over five makes of container: every case ends in a
    report, and no case without a readable root METS.xml is ever valid."""
    corpus = _containers(pristine)
    for label, (data, _) in corpus.items():
        path = tmp_path / f"{pristine.name}.{label.rsplit('.', 1)[1]}"
        path.write_bytes(data)
        assert validate_package(path, "fgs").valid, label
    rng = random.Random(FUZZ_SEED)
    labels = sorted(corpus)
    outcomes: Counter = Counter()
    started = time.monotonic()
    for i in range(CONTAINER_CASES):
        label = labels[i % len(labels)]
        data, heads = corpus[label]
        other = corpus[rng.choice([lb for lb in labels if lb.rsplit(".", 1)[1] != label.rsplit(".", 1)[1]])][0]
        kind, mutated = _mutate(rng, data, heads, other)
        path = tmp_path / f"case-{i}.{label.rsplit('.', 1)[1]}"
        path.write_bytes(mutated)
        FUZZ["validator: damaged containers of a real package"] += 1
        report = validate_package(path)  # raising here fails the test: no byte sequence may
        assert isinstance(report.valid, bool)
        if report.valid:
            assert _has_readable_root_mets(path), f"case {i} ({label}, {kind}) valid without a root METS.xml"
        outcomes["valid" if report.valid else "invalid"] += 1
        path.unlink()
    assert outcomes["invalid"] > CONTAINER_CASES // 2
    assert time.monotonic() - started < 30


def test_an_inbox_of_damaged_deliveries_still_takes_in_the_good_one(pristine, tmp_path):
    """Damaged tars and zips of the package in one inbox with a good copy: intake never raises,
    every delivery gets an outcome, the good one is accepted and nothing accepted lacks a METS."""
    from transforms.intake.prepared import take_in

    corpus = _containers(pristine)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rng = random.Random(FUZZ_SEED + 1)
    labels = sorted(corpus)
    for i in range(60):
        label = labels[i % len(labels)]
        data, heads = corpus[label]
        other = corpus[rng.choice(labels)][0]
        _, mutated = _mutate(rng, data, heads, other)
        (inbox / f"case-{i:02d}.{label.rsplit('.', 1)[1]}").write_bytes(mutated)
    (inbox / "0-good.tar").write_bytes(corpus["pax.tar"][0])
    FUZZ["intake: damaged deliveries in one inbox"] += 61
    intakes = take_in(inbox, tmp_path / "build", tmp_path / "quarantine")
    assert len(intakes) == 61
    left = {p.name for p in inbox.iterdir()}
    assert left == {i.source for i in intakes if i.outcome != "quarantined"}  # accepted ones are copied
    by_source = {i.source: i for i in intakes}
    assert by_source["0-good.tar"].outcome == "valid"
    for intake in intakes:
        assert intake.outcome in ("valid", "repaired", "quarantined")
        if intake.outcome != "quarantined":
            assert _has_readable_root_mets(Path(intake.path))
        assert all("\n" not in f for f in intake.findings)


def _prepare_support():
    path = Path(__file__).resolve().parents[1] / "transforms" / "test_prepare.py"
    spec = importlib.util.spec_from_file_location("arkiv_prepare_fixture", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@settings(max_examples=60, deadline=20000,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mutations=st.lists(TREE_MUTATION, min_size=1, max_size=3), target=st.sampled_from(
    ["METS.xml", "representations/rep1/METS.xml"]), producer=st.integers(0, 4))
def test_prepare_of_mutated_deliveries_refuses_or_gives_a_valid_package(tmp_path, mutations, target, producer):
    """Whatever a delivery's METS says, prepare answers (never raises), never changes the delivery,
    never accepts a representation METS whose bytes differ from the checksum the package lists, and
    anything it calls prepared is valid FGS."""
    from transforms.packaging.prepare import prepare_package

    FUZZ["prepare: mutated METS of other tools' packages"] += 1
    support = _prepare_support()
    case = tmp_path / "case"
    shutil.rmtree(case, ignore_errors=True)
    root = support.make_package(case, support.PRODUCERS[producer])
    before_target = (root / target).read_bytes()
    _apply_tree(root / target, mutations)
    delivered = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    result = prepare_package(root, out, identifier=support._StubIdentifier())
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == delivered
    if result.ok:
        assert validate_package(result.package, "fgs").valid
        if target != "METS.xml":
            assert (root / target).read_bytes() == before_target or _unlisted(root, target), \
                "a changed representation METS was prepared"
    else:
        assert result.findings and all(f.severity == "ERROR" for f in result.findings)


def _unlisted(root: Path, target: str) -> bool:
    """True when the package METS no longer lists ``target`` with a checksum (a mutation may drop it)."""
    try:
        mets = etree.parse(str(root / "METS.xml"))
    except etree.XMLSyntaxError:
        return True
    return not any(loc.get("{http://www.w3.org/1999/xlink}href") == target and loc.getparent().get("CHECKSUM")
                   for loc in mets.iter("{http://www.loc.gov/METS/}FLocat"))
