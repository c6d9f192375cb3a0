"""ERMS, PREMIS and METS written as text: the same bytes as the element builders, on real and generated values."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import mimetypes
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from transforms.common.xmltools import (
    NS_ERMS,
    NS_PREMIS,
    Fragment,
    NotPlainText,
    PrettyStream,
    escape,
    schemas_used,
)
from transforms.config.systems import load_system
from transforms.packaging import erms, mets, premis
from transforms.packaging.fgs import FGS_ERMS

LEX = load_system(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")
CONTENT = LEX.content
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
RETENTION = {"record_class": "arenden-bevaras", "action": "dispose", "period": "P2Y", "basis": "IHP 3.1",
             "counted_from": "closed_date"}
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _tostring(tree) -> bytes:
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _outcome(fn) -> bytes | tuple[type, str]:
    """What ``fn`` returns, or the type and message of what it raises (both paths must fail alike)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - compared, not swallowed
        return type(exc), str(exc)


# --- ERMS -------------------------------------------------------------------------------------------------------

def _erms_kwargs(**extra) -> dict:
    return {"mapping": CONTENT, "system_title": "Lex", "creator_name": "Testkommun & <Co>",
            "creator_orgnr": "212000-0000", "package_id": "uuid-test", "created": NOW, "software": "arkivflode 0",
            "retention": RETENTION, **extra}


def _erms_whole(cases: list[erms.Case], **extra) -> bytes:
    return _tostring(erms.build_erms(cases, **_erms_kwargs(**extra)))


def _erms_written(cases: list[erms.Case], **extra) -> bytes:
    out = io.BytesIO()
    erms.write_erms(out, iter(cases), **_erms_kwargs(**extra))
    return out.getvalue()


def _erms_element_streamed(cases: list[erms.Case], **extra) -> bytes:
    """The streamed ERMS as it was written before the text path: every aggregation built as elements."""
    kwargs = _erms_kwargs(**extra)
    root = erms._erms_root(**{k: kwargs[k] for k in ("system_title", "creator_name", "creator_orgnr", "package_id",
                                                     "created", "software")})
    aggs = root[-1]
    root.remove(aggs)
    out = io.BytesIO()
    with PrettyStream(out, root) as stream:
        root.append(aggs)
        with stream.element(aggs):
            for case in cases:
                stream.add(erms._aggregation(aggs, case, CONTENT, kwargs["creator_name"], kwargs["retention"]))
    return out.getvalue()


def _aggregation_piece(case: erms.Case, retention=RETENTION) -> bytes:
    """The bytes of the one aggregation in the whole tree of a document with only ``case``."""
    whole = _erms_whole([case], retention=retention)
    start = whole.index(b"  <aggregations>\n") + len(b"  <aggregations>\n")
    return whole[start:whole.rindex(b"  </aggregations>\n")]


@pytest.fixture(scope="module")
def lex_cases(staged) -> list[erms.Case]:
    """Every case of the generated Lex's 2025, with its parties and documents, as the builder reads them."""
    case_map, doc_map, party_map = CONTENT["case"], CONTENT["document"], CONTENT["party"]
    tables = staged.table_files()
    documents, parties = defaultdict(list), defaultdict(list)
    for row in pq.read_table(tables["documents"]).to_pylist():
        documents[row[doc_map["case"]]].append(row)
    for row in pq.read_table(tables["parties"]).to_pylist():
        parties[row[party_map["case"]]].append(row)
    cases = []
    for row in pq.read_table(tables["cases"]).to_pylist():
        case = erms.Case(fields=row, parties=parties[row[case_map["id"]]])
        for i, doc in enumerate(documents[row[case_map["id"]]]):
            path = "" if i == 3 else f"../../representations/rep1/data/{row['diarienummer']}/{doc['file_name']}"
            case.documents.append(erms.Document(fields=doc, package_path=path, size=1))
        cases.append(case)
    return cases


def test_real_cases_are_written_as_the_element_builders_write_them(lex_cases):
    assert len(lex_cases) > 20 and any(c.fields["secrecy"] for c in lex_cases)
    assert any(len(c.documents) > 3 for c in lex_cases), "a record without a file is among them"
    for retention in (RETENTION, None):
        whole = _erms_whole(lex_cases, retention=retention)
        assert _erms_written(lex_cases, retention=retention) == whole
        assert _erms_element_streamed(lex_cases, retention=retention) == whole
    for case in lex_cases:  # the text path itself, not a fallback, gives each one
        assert erms._aggregation_text(2, case, CONTENT, "Testkommun & <Co>", RETENTION) == _aggregation_piece(case)


def _value(*extra: st.SearchStrategy) -> st.SearchStrategy:
    """Field values as a source system may hold them: any text (control characters too), numbers, dates, None."""
    awkward = st.sampled_from(["", " ", "&<>\"'", "]]>", "a\r\nb\tc", "  indrag\n", "&amp;", "åäö ÅÄÖ é ß 😀",
                               "\x00", "\x0b", "\x1f", "\x7f\x85", "\ufffe", "\u2028", "x" * 5000])
    return st.one_of(st.none(), st.text(), st.text(st.characters(codec="utf-8")), awkward,
                     st.integers(-10**20, 10**20), st.datetimes(), st.dates(), st.booleans(), *extra)


@st.composite
def _cases(draw) -> erms.Case:
    cm, dm, pm = CONTENT["case"], CONTENT["document"], CONTENT["party"]
    value = _value()
    fields = {cm[k]: draw(value) for k in ("title", "unit", "officer", "classification", "status", "opened",
                                            "secrecy", "secrecy_reference")}
    fields[cm["id"]] = draw(st.one_of(st.integers(), st.text()))
    fields[cm["reference"]] = draw(value)
    fields[cm["status"]] = draw(st.one_of(value, st.sampled_from(["Avslutad", " öppen ", "AKTIV"])))
    fields[cm["closed"]] = draw(st.one_of(value, st.dates(), st.datetimes()))
    case = erms.Case(fields=fields)
    for _ in range(draw(st.integers(0, 2))):
        case.parties.append({pm[k]: draw(value) for k in ("name", "personnummer", "organisationsnummer", "role")})
    for _ in range(draw(st.integers(0, 2))):
        doc = {dm[k]: draw(value) for k in ("title", "date", "registered", "file_name", "mime_type", "secrecy",
                                            "secrecy_reference")}
        doc[dm["id"]] = draw(st.one_of(st.integers(), st.text()))
        doc[dm["number"]] = draw(st.one_of(st.none(), st.integers(), st.sampled_from(["7", "x", 2.5])))
        doc[dm["direction"]] = draw(st.one_of(value, st.sampled_from(["Inkommande", "UTGÅENDE ", "intern"])))
        path = draw(st.one_of(st.just(""), st.text(), st.just("../../representations/rep1/data/a & b/<1>.pdf")))
        case.documents.append(erms.Document(fields=doc, package_path=path, size=0))
    return case


@SETTINGS
@given(cases=st.lists(_cases(), max_size=3), retention=st.sampled_from([RETENTION, None, {**RETENTION, "action": "keep",
                                                                                          "period": "P&<10>Y"}]))
def test_generated_cases_give_the_same_bytes_or_the_same_error(cases, retention):
    whole = _outcome(lambda: _erms_whole(cases, retention=retention))
    assert _outcome(lambda: _erms_written(cases, retention=retention)) == whole
    assert _outcome(lambda: _erms_element_streamed(cases, retention=retention)) == whole
    for case in cases:
        _assert_same_piece(lambda case=case: erms._aggregation_text(2, case, CONTENT, "Testkommun & <Co>", retention),
                           lambda case=case: _aggregation_piece(case, retention))


def _assert_same_piece(text_path, element_path) -> None:
    """The text path gives the element path's bytes, or its error, or refuses (NotPlainText) where that one fails."""
    text, expected = _outcome(text_path), _outcome(element_path)
    if isinstance(text, tuple) and text[0] is NotPlainText:  # a character outside XML's Char: lxml refuses it
        assert isinstance(expected, tuple) and expected[0] is ValueError and "XML compatible" in expected[1]
    else:
        assert text == expected


def test_a_control_character_fails_the_text_path_as_it_fails_the_elements():
    case = erms.Case(fields={"case_id": 1, "diarienummer": "KS 1", "title": "bad \x01 title"})
    with pytest.raises(NotPlainText):
        erms._aggregation_text(2, case, CONTENT, "Testkommun", None)
    with pytest.raises(ValueError, match="XML compatible") as whole:
        _erms_whole([case])
    with pytest.raises(ValueError, match="XML compatible") as written:
        _erms_written([case])
    assert str(written.value) == str(whole.value)


# --- PREMIS -----------------------------------------------------------------------------------------------------

def _premis_pair(objects: list[premis.FileObject], links: tuple) -> tuple[bytes, bytes]:
    """(written, whole tree) for ``objects`` and one event linking ``links``."""
    event = premis.Event("ev-1", "format identification", NOW, "success", detail="d", objects=links,
                         agents=(("fido", "executing program"),))
    agents = [premis.Agent("fido", "fido", "software", "1.6")]
    out = io.BytesIO()
    schemas = premis.write_premis(out, iter(objects), [event], agents, representations=("representations/rep1",))
    whole = _tostring(premis.build_premis(objects, [event], agents, representations=("representations/rep1",)))
    if out.getvalue() == whole:
        assert schemas == schemas_used(etree.fromstring(whole))
    return out.getvalue(), whole


def _object_piece(obj: premis.FileObject) -> bytes:
    lines = _tostring(premis.build_premis([obj], [], [])).splitlines(keepends=True)
    return b"".join(lines[2:-1])  # between the root's start and end tags


def _link_piece(link) -> bytes:
    whole = _tostring(premis.build_premis([], [premis.Event("e", "t", NOW, "success", objects=(link,))], []))
    start = whole.index(b"    <premis:linkingObjectIdentifier>")
    end = whole.index(b"</premis:linkingObjectIdentifier>\n") + len(b"</premis:linkingObjectIdentifier>\n")
    return whole[start:end]


@pytest.fixture(scope="module")
def lex_objects(staged) -> list[premis.FileObject]:
    """A file object for every document of the generated Lex, with its real digest, size and name."""
    objects = []
    for i, doc in enumerate(pq.read_table(staged.table_files()["documents"]).to_pylist()):
        data = Path(doc["source_path"]).read_bytes()
        name = doc["file_name"]
        objects.append(premis.FileObject(
            identifier=f"representations/rep1/data/{doc['case_id']}/{name}", sha256=hashlib.sha256(data).hexdigest(),
            size=len(data), format_name=doc["mime_type"] or mimetypes.guess_type(name)[0] or "okänt",
            original_name=name if i % 2 else None, puid="fmt/354" if i % 3 else None,
            format_version="1b" if i % 4 else "", format_note="fido, signature" if i % 5 else "",
            creating_application=("LibreOffice", "7.6") if i % 6 == 0 else None,
            derived_from=f"representations/rep1-original/data/{name}" if i % 6 == 0 else None))
    return objects


def test_real_files_are_written_as_the_element_builders_write_them(lex_objects):
    assert len(lex_objects) > 40
    links = tuple(o.identifier if i % 2 else (o.identifier, "outcome") for i, o in enumerate(lex_objects))
    written, whole = _premis_pair(lex_objects, links)
    assert written == whole
    for obj in lex_objects:
        assert premis._file_object_text(1, obj) == _object_piece(obj)
    for link in links:
        assert premis._object_link_text(2, link) == _link_piece(link)


@st.composite
def _file_objects(draw) -> premis.FileObject:
    text = st.one_of(st.text(), st.text(st.characters(codec="utf-8")),
                     st.sampled_from(["", "&<>\"'", "a\r\nb\tc", "]]>", "\x01", "\ufffe", "åäö", "y" * 3000]))
    optional = st.one_of(st.none(), text)
    return premis.FileObject(
        identifier=draw(text), sha256=draw(text), size=draw(st.one_of(st.integers(), text)),
        format_name=draw(text), original_name=draw(optional), puid=draw(optional), format_version=draw(text),
        format_note=draw(text), creating_application=draw(st.one_of(st.none(), st.tuples(text, text))),
        derived_from=draw(optional))


_links = st.one_of(st.text(), st.tuples(st.text(), st.one_of(st.just(""), st.text())),
                   st.sampled_from(["a&b", ("<x>", "source"), "\x02", ("ok", "\r\n")]))


@SETTINGS
@given(objects=st.lists(_file_objects(), max_size=3), links=st.lists(_links, max_size=4))
def test_generated_files_and_links_give_the_same_bytes_or_the_same_error(objects, links):
    written = _outcome(lambda: _premis_pair(objects, tuple(links)))
    if isinstance(written, tuple) and isinstance(written[0], type):  # raised: the whole tree must raise alike
        assert _outcome(lambda: _tostring(premis.build_premis(
            objects, [premis.Event("ev-1", "format identification", NOW, "success", detail="d", objects=tuple(links),
                                   agents=(("fido", "executing program"),))],
            [premis.Agent("fido", "fido", "software", "1.6")], representations=("representations/rep1",)))) == written
    else:
        assert written[0] == written[1]
    for obj in objects:
        _assert_same_piece(lambda obj=obj: premis._file_object_text(1, obj), lambda obj=obj: _object_piece(obj))
    for link in links:
        _assert_same_piece(lambda link=link: premis._object_link_text(2, link), lambda link=link: _link_piece(link))


# --- METS -------------------------------------------------------------------------------------------------------

_PREMIS_REF = mets.FileRef("digiprov-premis-rep1", "metadata/preservation/premis.xml", "application/xml", 10, "ab" * 32,
                           NOW)


def _mets_kwargs(groups: list[mets.FileGroup]) -> dict:
    return {"objid": "rep1", "label": "Lex: Ärenden & <2025> (rep1)", "profile": FGS_ERMS, "package_type": "SIP",
            "created": NOW, "agents": [FGS_ERMS.software_agent()],
            "metadata": [mets.MetadataRef("digiprovMD", _PREMIS_REF, "PREMIS")], "groups": groups,
            "schema_prefix": "../../"}


def _mets_groups(files: list[list[mets.FileRef]]) -> list[mets.FileGroup]:
    return [mets.FileGroup(f"Representations/rep{i}/data", fs, "OTHER", "Arkivflode-ERMS")
            for i, fs in enumerate(files, 1)]


def _mets_whole(files: list[list[mets.FileRef]]) -> bytes:
    return _tostring(mets.build_mets(**_mets_kwargs(_mets_groups(files))))


def _mets_written(files: list[list[mets.FileRef]]) -> tuple[bytes, list[str]]:
    out = io.BytesIO()
    schemas = mets.write_mets(out, **_mets_kwargs(_mets_groups([iter(fs) for fs in files])))
    return out.getvalue(), schemas


def _mets_element_streamed(files: list[list[mets.FileRef]]) -> bytes:
    """The streamed METS as it was written before the text path: every file entry built as elements."""
    kwargs = _mets_kwargs(_mets_groups(files))
    root = mets._root(kwargs["objid"], kwargs["label"], kwargs["profile"], kwargs["schema_prefix"],
                      mets.SIP_PROFILE_URL)
    out = io.BytesIO()
    with PrettyStream(out, root) as stream:
        stream.add(mets._header(root, kwargs["profile"], kwargs["package_type"], NOW, kwargs["agents"], ()))
        for sec in mets._metadata_sections(root, kwargs["metadata"]):
            stream.add(sec)
        with stream.element(mets._file_sec(root, kwargs["objid"])) as file_sec:
            for g in kwargs["groups"]:
                with stream.element(mets._file_grp(file_sec, g)) as grp:
                    for f in g.files:
                        stream.add(mets._file(grp, f))
        stream.add(mets._struct_map(root, kwargs["objid"], kwargs["metadata"], kwargs["groups"], ()))
    return out.getvalue()


def _file_piece(ref: mets.FileRef) -> bytes:
    """The bytes of the one file entry in the whole tree of a METS with only ``ref``."""
    whole = _mets_whole([[ref]])
    start = whole.index(b'USE="Representations/rep1/data"')
    start = whole.index(b">\n", start) + 2
    return whole[start:whole.rindex(b"    </mets:fileGrp>\n")]


def _assert_same_mets(files: list[list[mets.FileRef]]) -> None:
    """write_mets gives build_mets' bytes (and its schemas) or its error, as the element-only stream does."""
    whole = _outcome(lambda: _mets_whole(files))
    written = _outcome(lambda: _mets_written(files))
    if isinstance(whole, bytes):
        assert written == (whole, schemas_used(etree.fromstring(whole)))
    else:
        assert written == whole
    assert _outcome(lambda: _mets_element_streamed(files)) == whole


@pytest.fixture(scope="module")
def lex_file_refs(staged) -> list[mets.FileRef]:
    """A METS entry for every document of the generated Lex, as the package builder makes it from the file."""
    refs = []
    for doc in pq.read_table(staged.table_files()["documents"]).to_pylist():
        src = Path(doc["source_path"])
        data, st_ = src.read_bytes(), src.stat()
        mime = doc["mime_type"] or mimetypes.guess_type(doc["file_name"])[0] or "application/octet-stream"
        refs.append(mets.FileRef(
            f"file-{doc['document_id']}", f"data/{doc['case_id']}/{doc['document_number']}_{doc['file_name']}",
            mime, len(data), hashlib.sha256(data).hexdigest(),
            dt.datetime.fromtimestamp(st_.st_mtime, dt.UTC).replace(microsecond=0)))
    return refs


def test_real_file_entries_are_written_as_the_element_builders_write_them(lex_file_refs):
    assert len(lex_file_refs) > 40
    whole = _mets_whole([lex_file_refs, lex_file_refs[:7]])
    assert whole.count(b"<mets:file ") == len(lex_file_refs) + 7
    assert _mets_written([lex_file_refs, lex_file_refs[:7]]) == (whole, schemas_used(etree.fromstring(whole)))
    assert _mets_element_streamed([lex_file_refs, lex_file_refs[:7]]) == whole
    for ref in lex_file_refs:  # the text path itself, not a fallback, gives each one
        assert mets._file_text(3, ref) == _file_piece(ref)


_awkward = st.sampled_from(["", " ", "a b", "&<>\"'", "a\r\nb\tc", "  indrag\n", "&amp;", "åäö ÅÄÖ é ß 😀", "]]>",
                            "\u2028", "x" * 3000, "data/KS 2025-1/1_Beslut & <bilaga> \"slutlig\" 'v2'.pdf"])
_text = st.one_of(st.text(), st.text(st.characters(codec="utf-8")), _awkward)
#: Text with only characters XML allows (its Char production): the text path takes all of it.
_xml_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=[
    *(chr(c) for c in range(32) if chr(c) not in "\t\n\r"), "\ufffe", "\uffff"]))
_not_plain = st.sampled_from(["\x00", "a\x01b", "\x1f", "\ufffe", "\ud800", None, b"bytes-are-taken", 7])
_offsets = st.timedeltas(min_value=-dt.timedelta(hours=23, minutes=59), max_value=dt.timedelta(hours=23, minutes=59))


@st.composite
def _file_refs(draw, *, plain: bool = False) -> mets.FileRef:
    text = st.one_of(_xml_text, _awkward) if plain else st.one_of(_text, _text, _text, _not_plain)
    created = draw(st.datetimes(timezones=st.one_of(st.none(), st.just(dt.UTC), st.builds(dt.timezone, _offsets))))
    return mets.FileRef(
        id=draw(st.one_of(text, st.from_regex(r"file-[a-z0-9-]{1,20}", fullmatch=True))), href=draw(text),
        mimetype=draw(st.one_of(text, st.sampled_from(["application/pdf", "text/plain; charset=utf-8"]))),
        size=draw(st.one_of(st.integers(), st.integers(0, 10**12), st.sampled_from([0, -1, 2.5, "12 & 13"]))),
        sha256=draw(st.one_of(text, st.from_regex(r"[0-9a-f]{64}", fullmatch=True))), created=created)


@SETTINGS
@given(files=st.lists(st.lists(_file_refs(), max_size=4), max_size=2))
def test_generated_file_entries_give_the_same_bytes_or_the_same_error(files):
    _assert_same_mets(files)
    for ref in (f for fs in files for f in fs):
        text, expected = _outcome(lambda ref=ref: mets._file_text(3, ref)), _outcome(lambda ref=ref: _file_piece(ref))
        if isinstance(text, tuple) and text[0] is NotPlainText:  # the element path decides: it refuses, or takes bytes
            if all(isinstance(v, str) for v in (ref.id, ref.href, ref.mimetype, ref.sha256)):  # a bad character
                assert isinstance(expected, tuple)
                assert expected[0] is UnicodeEncodeError or (expected[0] is ValueError
                                                             and "XML compatible" in expected[1])
        else:
            assert text == expected


def _file_piece_at(ref: mets.FileRef, depth: int) -> bytes:
    """The bytes of :func:`mets._file` for ``ref`` in a METS where it sits ``depth`` (at least 1) levels deep."""
    parent = root = mets._root("x", "x", FGS_ERMS, "", mets.SIP_PROFILE_URL)
    for _ in range(depth - 1):
        parent = etree.SubElement(parent, f"{{{mets.NS_METS}}}div")
    mets._file(parent, ref)
    whole = _tostring(root)
    start = whole.rindex(b"\n", 0, whole.index(b"<mets:file ")) + 1
    return whole[start:whole.index(b"</mets:file>\n") + len(b"</mets:file>\n")]


@SETTINGS
@given(ref=_file_refs(plain=True), depth=st.integers(1, 40))
def test_plain_file_entries_take_the_text_path_at_any_depth(ref, depth):
    # Deeper than 30 levels libxml2 indents by 60 spaces at most.
    assert mets._file_text(depth, ref) == _file_piece_at(ref, depth)  # NotPlainText would fail this


def test_a_control_character_fails_the_file_entry_as_it_fails_the_elements():
    ok = mets.FileRef("file-1", "data/a & b.pdf", "application/pdf", 1, "ab" * 32, NOW)
    bad = mets.FileRef("file-2", "data/bad \x01 name.pdf", "application/pdf", 2, "ab" * 32, NOW)
    with pytest.raises(NotPlainText):
        mets._file_text(3, bad)
    with pytest.raises(ValueError, match="XML compatible") as whole:
        _mets_whole([[ok, bad]])
    with pytest.raises(ValueError, match="XML compatible") as written:
        _mets_written([[ok, bad]])
    assert str(written.value) == str(whole.value)


def test_a_value_lxml_takes_but_the_text_path_does_not_goes_through_the_elements():
    refs = [mets.FileRef("file-1", "data/a.pdf", "application/pdf", 1, "ab" * 32, NOW),
            mets.FileRef("file-2", b"data/b.pdf", "application/pdf", 2, "ab" * 32, NOW),  # type: ignore[arg-type]
            mets.FileRef("file-3", "data/c.pdf", "application/pdf", 3, "ab" * 32, NOW)]
    with pytest.raises(NotPlainText):
        mets._file_text(3, refs[1])
    whole = _mets_whole([refs])
    assert b'xlink:href="data/b.pdf"' in whole
    assert _mets_written([refs]) == (whole, schemas_used(etree.fromstring(whole)))


# --- the pieces ---------------------------------------------------------------------------------------------------

@SETTINGS
@given(value=st.one_of(st.text(), st.text(st.characters(codec="utf-8")), st.integers(), st.floats(allow_nan=False)))
def test_escape_is_what_libxml2_writes_in_text_and_attributes(value):
    element = etree.Element("e")
    try:
        element.text = str(value)
        element.set("a", str(value))
    except ValueError:
        with pytest.raises(NotPlainText):
            escape(value)
        with pytest.raises(NotPlainText):
            escape(value, attribute=True)
        return
    expected = f'<e a="{escape(value, attribute=True)}">{escape(value)}</e>'.encode()
    assert etree.tostring(element, encoding="UTF-8") == expected


def test_escape_details():
    assert escape("<&>\"'\t\n\r") == "&lt;&amp;&gt;\"'\t\n&#13;"
    assert escape("<&>\"'\t\n\r", attribute=True) == "&lt;&amp;&gt;&quot;'&#9;&#10;&#13;"
    assert escape(12) == "12" and escape("åäö😀") == "åäö😀"
    for bad in ("\x00", "\x08", "\x1f", "\ufffe", "\uffff", "\ud800"):
        with pytest.raises(NotPlainText):
            escape(f"a{bad}")


def test_fragment_indents_nests_and_writes_empty_elements_as_libxml2_does():
    root = etree.Element("root")
    outer = etree.SubElement(root, "outer", {"a": "1", "b": 'x"y'})
    etree.SubElement(outer, "empty")
    etree.SubElement(outer, "blank").text = ""
    etree.SubElement(outer, "text", c="\n").text = "a\n  b"
    etree.SubElement(outer, "childless-container")
    deep = outer
    for _ in range(35):  # deeper than libxml2's 60 spaces of indentation
        deep = etree.SubElement(deep, "deep")
    deep.text = "bottom"

    fragment = Fragment(1)
    fragment.start("outer", {"a": "1", "b": 'x"y', "skipped": None})
    fragment.leaf("empty")
    fragment.leaf("blank", "")
    fragment.leaf("text", "a\n  b", {"c": "\n"})
    fragment.start("childless-container")
    fragment.end()
    for _ in range(34):
        fragment.start("deep")
    fragment.leaf("deep", "bottom")
    for _ in range(35):
        fragment.end()
    assert b"<root>\n" + fragment.getvalue() + b"</root>\n" == etree.tostring(root, pretty_print=True)

    unfinished = Fragment(0)
    unfinished.start("open")
    with pytest.raises(ValueError, match="open is not ended"):
        unfinished.getvalue()


def test_stream_mixes_text_and_elements_and_checks_the_indentation():
    def fill(root, stream):
        first = etree.SubElement(root, f"{{{NS_PREMIS}}}object")
        stream.add(first)
        piece = Fragment(stream.depth)
        piece.leaf("premis:object", "x")
        stream.add_text(piece.getvalue(), (NS_PREMIS,))
        with stream.element(etree.SubElement(root, f"{{{NS_PREMIS}}}event")):
            wrong = Fragment(1)  # the depth of the root's children, not the event's
            wrong.leaf("premis:linkingObjectIdentifier")
            with pytest.raises(ValueError, match="indented for depth 2"):
                stream.add_text(wrong.getvalue(), (NS_PREMIS,))
            right = Fragment(stream.depth)
            right.leaf("premis:linkingObjectIdentifier")
            stream.add_text(right.getvalue(), (NS_PREMIS, NS_ERMS))

    whole_root = etree.Element(f"{{{NS_PREMIS}}}premis", nsmap={"premis": NS_PREMIS})
    etree.SubElement(whole_root, f"{{{NS_PREMIS}}}object")
    etree.SubElement(whole_root, f"{{{NS_PREMIS}}}object").text = "x"
    etree.SubElement(etree.SubElement(whole_root, f"{{{NS_PREMIS}}}event"), f"{{{NS_PREMIS}}}linkingObjectIdentifier")
    out = io.BytesIO()
    root = etree.Element(f"{{{NS_PREMIS}}}premis", nsmap={"premis": NS_PREMIS})
    with PrettyStream(out, root) as stream:
        fill(root, stream)
    assert out.getvalue() == _tostring(whole_root)
    assert stream.schemas == ["ERMS.xsd", "premis-v3-0.xsd"]  # as declared by the caller of add_text
