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
import shutil
import tarfile
from pathlib import Path

import pytest
from fault_support import FUZZ
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from transforms.validate import validate_package

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
