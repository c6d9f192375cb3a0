"""PREMIS and METS written one file at a time: libxml2's pretty print of the document, validated while read."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import tracemalloc
from collections.abc import Iterator

import pytest
from lxml import etree

from transforms.common.xmltools import (
    NS_METS,
    NS_PREMIS,
    NS_XLINK,
    PrettyStream,
    file_schema_errors,
    schemas_used,
)
from transforms.packaging import premis
from transforms.packaging.fgs import FGS_ERMS, FGS_TABULAR, MetsAgent
from transforms.packaging.mets import FileGroup, FileRef, MetadataRef, build_mets, write_mets

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=dt.UTC)
SHA = "0123456789abcdef" * 4
# Markup characters, quotes for attribute values, Swedish letters, a line break and leading spaces.
AWKWARD = "Å ä ö & <b> \"dq\" 'sq' ]]>\n  indrag"


def _tostring(tree: etree._ElementTree) -> bytes:
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _reindented(data: bytes) -> bytes:
    """libxml2's own pretty print of ``data``: parsed without the blank text between elements, written again."""
    return _tostring(etree.fromstring(data, etree.XMLParser(remove_blank_text=True)).getroottree())


def _object(i: int, name: str = "fil") -> premis.FileObject:
    """A file object; ``i`` switches the optional parts on and off in every combination over 32 files."""
    return premis.FileObject(
        identifier=f"representations/rep1/data/{name} {i}.pdf", sha256=SHA, size=i * 1000, format_name="PDF/A-1b",
        original_name=f"{name} {i}.docx" if i & 1 else None, puid="fmt/354" if i & 2 else None,
        format_version="1b" if i & 4 else "", format_note="identified by fido, signature match" if i & 8 else "",
        creating_application=("LibreOffice", "7.6") if i & 16 else None,
        derived_from=f"representations/rep1-original/data/{name} {i}.docx" if i & 16 else None)


def _objects(n: int, name: str = "fil") -> Iterator[premis.FileObject]:
    return (_object(i, name) for i in range(n))


def _events(links: list[str]) -> list[premis.Event]:
    return [
        premis.Event("pkg-format-identification", "format identification", NOW, "success",
                     detail=f"{len(links)} file(s) identified", agents=(("fido", "executing program"),),
                     objects=tuple(links)),
        premis.Event("pkg-migration-1", "migration", NOW, "failure", detail=AWKWARD, outcome_note=AWKWARD,
                     agents=(("libreoffice", "executing program"), ("arkivflode", "authorizer")),
                     objects=(("a.docx", "source"), ("a.pdf", "outcome"))),
        premis.Event("pkg-digest", "message digest calculation", NOW, "success"),
    ]


AGENTS = [premis.Agent("arkivflode", "Arkivflöde", "software", "1.0", notes=(AWKWARD, "andra")),
          premis.Agent("212000-0000", "Testkommun & Co", "organization", identifier_type="organisationsnummer")]


def _premis_pair(n: int, *, name: str = "fil", events: bool = True, agents: bool = True,
                 representations: tuple[str, ...] = ()) -> tuple[bytes, bytes, list[str]]:
    """(streamed bytes, libxml2's pretty print of them, schemas the writer reported)."""
    links = [o.identifier for o in _objects(n, name)]
    kwargs = {"representations": representations, "schema_prefix": "../../../../"}
    evs, ags = (_events(links) if events else []), (AGENTS if agents else [])
    out = io.BytesIO()
    schemas = premis.write_premis(out, _objects(n, name), evs, ags, **kwargs)
    return out.getvalue(), _reindented(out.getvalue()), schemas


@pytest.mark.parametrize("n", [0, 1, 32, 2500])
def test_streamed_premis_is_libxml2s_pretty_print(n):
    streamed, whole, schemas = _premis_pair(n, name=AWKWARD, representations=("representations/rep1",))
    assert streamed == whole
    assert whole.count(b'xsi:type="premis:file"') == n
    assert schemas == schemas_used(etree.fromstring(whole)) == ["premis-v3-0.xsd"]


def test_streamed_premis_without_events_agents_or_anything():
    streamed, whole, _ = _premis_pair(3, events=False, agents=False)
    assert streamed == whole
    streamed, whole, _ = _premis_pair(0, events=False, agents=False)
    assert streamed == whole
    assert whole.rstrip().endswith(b"premis-v3-0.xsd\"/>")  # the empty root is one element, <premis:premis/>


def test_streamed_premis_keeps_awkward_text_exactly():
    streamed, whole, _ = _premis_pair(2, name=AWKWARD)
    assert streamed == whole
    assert b"&lt;b&gt; \"dq\" 'sq' ]]&gt;\n  indrag" in streamed
    assert "Å ä ö".encode() in streamed


def _file_ref(i: int, prefix: str = "data", name: str = AWKWARD) -> FileRef:
    return FileRef(f"file-{i}", f"{prefix}/{name}-{i}.pdf", "application/pdf", i, SHA, NOW)


def _mets_kwargs(groups: list[FileGroup], **extra) -> dict:
    agents = FGS_ERMS.agents(("Testkommun \"&\" <Kultur>", "212000-0000"), ("Lämnare", "212000-0001"))
    agents.append(MetsAgent("OTHER", "INDIVIDUAL", "Ärla", None))
    metadata = [MetadataRef("dmdSec", _file_ref(900, "metadata", "ERMS"), "OTHER", "ERMS"),
                MetadataRef("digiprovMD", _file_ref(901, "metadata", "premis"), "PREMIS"),
                MetadataRef("dmdSec", _file_ref(902, "metadata", "retention"), "OTHER", "ARKIVFLODE-RETENTION")]
    return {"objid": "uuid-1", "label": f"Lex: {AWKWARD}", "profile": FGS_ERMS, "package_type": "SIP",
            "created": NOW, "agents": agents, "alt_record_ids": FGS_ERMS.alt_record_ids("LÖ 1 & 2", "SE/1"),
            "metadata": metadata, "groups": groups, "schema_prefix": "../../", **extra}


def _mets_pair(groups: list[tuple[str, int]], **extra) -> tuple[bytes, bytes, list[str]]:
    """(streamed, libxml2's pretty print of it, reported schemas); the groups' files are generators, read once."""
    def files(use: str, n: int):
        return (_file_ref(i, use) for i in range(n))

    out = io.BytesIO()
    schemas = write_mets(out, **_mets_kwargs([FileGroup(u, files(u, n), "OTHER", "Arkivflode-Tabular-1.0")
                                              for u, n in groups], **extra))
    return out.getvalue(), _reindented(out.getvalue()), schemas


@pytest.mark.parametrize("n", [0, 1, 2500])
def test_streamed_mets_is_libxml2s_pretty_print(n):
    streamed, whole, schemas = _mets_pair([("Representations/rep1/data", n)])
    assert streamed == whole
    assert whole.count(b"<mets:file ") == n
    assert schemas == schemas_used(etree.fromstring(whole))
    assert "xlink.xsd" in schemas and "mets.xsd" in schemas


def test_streamed_mets_with_several_groups_representations_and_none():
    groups = [("Documentation", 2), ("Schemas", 0), ("Representations/rep1", 1), ("Representations/rep2", 3)]
    reps = [("rep1", "representations/rep1/METS.xml"), ("rep2", "representations/rep2/METS.xml")]
    streamed, whole, _ = _mets_pair(groups, representations=reps, profile=FGS_TABULAR)
    assert streamed == whole
    assert b'USE="Schemas" csip:CONTENTINFORMATIONTYPE="OTHER" csip:OTHERCONTENTINFORMATIONTYPE=' \
           b'"Arkivflode-Tabular-1.0"/>' in whole  # a group without files is an empty element
    assert whole.count(b"<mets:mptr ") == 2
    # No groups, no metadata: an empty fileSec and no metadata division.
    streamed, whole, _ = _mets_pair([], metadata=[])
    assert streamed == whole
    assert b'<mets:fileSec ID="uuid-1-filesec"/>' in whole and b"div-metadata" not in whole


def test_written_premis_and_mets_validate_and_broken_ones_are_reported(tmp_path):
    path = tmp_path / "premis.xml"
    links = [o.identifier for o in _objects(40, AWKWARD)]
    with open(path, "wb") as fh:
        premis.write_premis(fh, _objects(40, AWKWARD), _events(links), AGENTS, representations=("rep1",))
    assert file_schema_errors(path, NS_PREMIS) == []

    broken = premis.FileObject("broken.pdf", SHA, "ett tusen", "PDF")  # type: ignore[arg-type]  # size not a number
    with open(path, "wb") as fh:
        premis.write_premis(fh, iter([*_objects(3), broken]), [], AGENTS)
    errors = file_schema_errors(path, NS_PREMIS)
    assert errors and "size" in errors[0] and "ett tusen" in errors[0]

    path = tmp_path / "METS.xml"
    with open(path, "wb") as fh:
        write_mets(fh, **_mets_kwargs([FileGroup("Representations/rep1/data", _objects_refs(40), "OTHER", "X")]))
    assert file_schema_errors(path, NS_METS) == []

    bad_ref = FileRef("not an id", "data/x.pdf", "application/pdf", 1, SHA, NOW)  # an ID has no spaces
    with open(path, "wb") as fh:
        write_mets(fh, **_mets_kwargs([FileGroup("Representations/rep1/data", iter([bad_ref]), "OTHER", "X")]))
    errors = file_schema_errors(path, NS_METS)
    assert errors and "not an id" in " ".join(errors)


def _objects_refs(n: int) -> Iterator[FileRef]:
    return (_file_ref(i, name="åäö&fil") for i in range(n))  # a valid xs:anyURI, unlike AWKWARD


class _Sink(io.RawIOBase):
    """A writable that keeps only a byte count: the measurement is the writer's memory, not the output's."""

    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.size += len(data)
        return len(data)


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow  # tracemalloc over 50,000 files, tree and stream
def test_streamed_premis_memory_is_bounded():
    n = 50_000
    sink = _Sink()
    streamed = _peak(lambda: premis.write_premis(sink, _objects(n), [], AGENTS))
    tree = _peak(lambda: _tostring(premis.build_premis(_objects(n), [], AGENTS)))  # the same document as a tree
    assert sink.size > 50 * 1024 * 1024  # the document is big ...
    assert streamed < 10 * 1024 * 1024  # ... the writer is not
    assert streamed < tree / 5


@pytest.mark.slow  # tracemalloc over 50,000 files, tree and stream
def test_streamed_mets_memory_is_bounded():
    n = 50_000
    sink = _Sink()
    streamed = _peak(lambda: write_mets(sink, **_mets_kwargs([FileGroup("data", _objects_refs(n), "OTHER", "X")])))
    tree = _peak(lambda: _tostring(build_mets(**_mets_kwargs([FileGroup("data", _objects_refs(n), "OTHER", "X")]))))
    # (the same document as a tree)
    assert sink.size > 10 * 1024 * 1024
    assert streamed < 10 * 1024 * 1024
    assert streamed < tree / 5


def test_stream_writes_nested_and_empty_elements_and_reports_their_namespaces():
    # A tree written both ways: namespaces declared on the root and only on a child, empty
    # elements at every level, an element opened with children of its own and nothing streamed,
    # and text that looks like the stream's marker or a prefix.
    A, B = "urn:a", "urn:b"

    def fill(root: etree._Element, stream: PrettyStream | None) -> None:
        add = stream.add if stream else (lambda el: None)
        element = stream.element if stream else _no_stream
        el = etree.SubElement(root, f"{{{A}}}first")
        el.text = "<arkivflode-stream-marker/> premis: xmlns"
        add(el)
        with element(etree.SubElement(root, f"{{{A}}}empty")):
            pass
        opened = etree.SubElement(root, f"{{{A}}}opened", n="1")
        etree.SubElement(opened, f"{{{A}}}fixed").text = "å"
        with element(opened):
            pass
        with element(etree.SubElement(root, "plain")) as outer:
            for i in range(3):
                with element(etree.SubElement(outer, "level", i=str(i))) as inner:
                    if i:
                        leaf = etree.SubElement(inner, f"{{{B}}}leaf")
                        leaf.set(f"{{{NS_XLINK}}}href", f"x/{i}")
                        add(leaf)
        add(etree.SubElement(root, f"{{{NS_PREMIS}}}object"))

    def new_root() -> etree._Element:
        return etree.Element(f"{{{A}}}root", nsmap={"a": A, "premis": NS_PREMIS})

    tree_root = new_root()
    fill(tree_root, None)
    whole = _tostring(tree_root.getroottree())
    out = io.BytesIO()
    root = new_root()
    with PrettyStream(out, root) as stream:
        fill(root, stream)
    assert out.getvalue() == whole
    assert stream.schemas == schemas_used(tree_root) == ["premis-v3-0.xsd", "xlink.xsd"]
    assert b"<a:empty/>" in whole and b'<level i="0"/>' in whole and b"</a:opened>" in whole
    assert len(root) == 0  # nothing written stays in memory


@contextlib.contextmanager
def _no_stream(element):
    yield element


def test_stream_refuses_what_it_cannot_write_identically():
    root = etree.Element("root")
    with PrettyStream(io.BytesIO(), root) as stream:
        orphan = etree.Element("child")
        with pytest.raises(ValueError, match="innermost open element"):
            stream.add(orphan)
        tailed = etree.SubElement(root, "tailed")
        tailed.tail = "text"
        with pytest.raises(ValueError, match="text after it"):
            stream.add(tailed)
        root.remove(tailed)
        mixed = etree.SubElement(root, "mixed")
        mixed.text = "text"
        etree.SubElement(mixed, "inner")
        with pytest.raises(ValueError, match="text beside its children"), stream.element(mixed):
            pass
