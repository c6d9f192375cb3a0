"""ERMS, PREMIS and METS as their one serialiser writes them, on real and generated values.

The elements that grow with a package (an ERMS aggregation, a PREMIS file object and object link, a
METS file entry) are formatted as text. Their oracle is libxml2: what we write must be what lxml's
pretty print gives for the same document parsed without its indentation, carry every value back
unchanged when parsed, validate against the schema, and refuse a value XML cannot carry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import mimetypes
import re
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
    NotXmlText,
    PrettyStream,
    escape,
    schema_errors,
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


def _reindented(data: bytes) -> bytes:
    """libxml2's own pretty print of ``data``: parsed without the blank text between elements, written again."""
    tree = etree.fromstring(data, etree.XMLParser(remove_blank_text=True))
    return _tostring(tree.getroottree())


def _roundtrip(data: bytes) -> bytes:
    """``data`` parsed and written again by lxml (escaping and attribute quoting as libxml2 does them); an
    empty text written as ``<a></a>`` comes back as ``<a/>`` (parsed, it is no text), so it is written so here."""
    return re.sub(rb"<([\w:]+)([^<>]*)></\1>", rb"<\1\2/>", _tostring(etree.fromstring(data).getroottree()))


def _empty_as_parsed(data: bytes) -> bytes:
    return re.sub(rb"<([\w:]+)([^<>]*)></\1>", rb"<\1\2/>", data)


# --- ERMS -------------------------------------------------------------------------------------------------------

def _erms_kwargs(**extra) -> dict:
    return {"mapping": CONTENT, "system_title": "Lex", "creator_name": "Testkommun & <Co>",
            "creator_orgnr": "212000-0000", "package_id": "uuid-test", "created": NOW, "software": "arkivflode 0",
            "retention": RETENTION, **extra}


def _erms_written(cases: list[erms.Case], **extra) -> bytes:
    out = io.BytesIO()
    assert erms.write_erms(out, iter(cases), **_erms_kwargs(**extra)) == len(cases)
    return out.getvalue()


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


def test_real_cases_are_written_as_libxml2_pretty_prints_them(lex_cases):
    assert len(lex_cases) > 20 and any(c.fields["secrecy"] for c in lex_cases)
    assert any(len(c.documents) > 3 for c in lex_cases), "a record without a file is among them"
    for retention in (RETENTION, None):
        written = _erms_written(lex_cases, retention=retention)
        assert written == _reindented(written)
        assert schema_errors(etree.fromstring(written)) == []
        tree = etree.fromstring(written)
        titles = [el.text for el in tree.iterfind(f"{{{NS_ERMS}}}aggregations/{{{NS_ERMS}}}aggregation/"
                                                  f"{{{NS_ERMS}}}title")]
        assert titles == [c.fields[CONTENT["case"]["title"]] for c in lex_cases]
    assert erms.build_erms(lex_cases, **_erms_kwargs()).getroot().tag == f"{{{NS_ERMS}}}erms"


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
        doc[dm["number"]] = draw(st.one_of(st.none(), st.integers(), st.sampled_from(["7", 2.5])))
        doc[dm["direction"]] = draw(st.one_of(value, st.sampled_from(["Inkommande", "UTGÅENDE ", "intern"])))
        path = draw(st.one_of(st.just(""), st.text(), st.just("../../representations/rep1/data/a & b/<1>.pdf")))
        case.documents.append(erms.Document(fields=doc, package_path=path, size=0))
    return case


def _has_non_xml_char(values) -> bool:
    return any(isinstance(v, str) and _NOT_XML.search(v) for v in values)


_NOT_XML = re.compile(r"[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _case_values(case: erms.Case) -> list:
    return [*case.fields.values(), *(v for p in case.parties for v in p.values()),
            *(v for d in case.documents for v in (*d.fields.values(), d.package_path))]


@SETTINGS
@given(cases=st.lists(_cases(), max_size=3), retention=st.sampled_from([RETENTION, None, {**RETENTION, "action": "keep",
                                                                                          "period": "P&<10>Y"}]))
def test_generated_cases_are_written_as_libxml2_writes_them_or_refused(cases, retention):
    try:
        written = _erms_written(cases, retention=retention)
    except NotXmlText:
        assert any(_has_non_xml_char(_case_values(c)) for c in cases)
        return
    assert _empty_as_parsed(written) == _roundtrip(written)
    assert written.count(b"<aggregation ") == len(cases)
    ids = [el.get("systemIdentifier") for el in etree.fromstring(written).iter(f"{{{NS_ERMS}}}aggregation")]
    assert ids == [str(c.fields[CONTENT["case"]["id"]]) for c in cases]


def test_a_control_character_is_refused_with_a_value_error_that_does_not_show_it():
    case = erms.Case(fields={"case_id": 1, "diarienummer": "KS 1", "title": "bad \x01 hemlig titel"})
    with pytest.raises(NotXmlText) as raised:
        _erms_written([case])
    assert isinstance(raised.value, ValueError) and "hemlig" not in str(raised.value)


# --- PREMIS -----------------------------------------------------------------------------------------------------

def _premis_written(objects: list[premis.FileObject], links: tuple) -> tuple[bytes, list[str]]:
    """The document for ``objects`` and one event linking ``links``, and the schemas it reports."""
    event = premis.Event("ev-1", "format identification", NOW, "success", detail="d", objects=links,
                         agents=(("fido", "executing program"),))
    agents = [premis.Agent("fido", "fido", "software", "1.6")]
    out = io.BytesIO()
    schemas = premis.write_premis(out, iter(objects), [event], agents, representations=("representations/rep1",))
    return out.getvalue(), schemas


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


def test_real_files_are_written_as_libxml2_pretty_prints_them(lex_objects):
    assert len(lex_objects) > 40
    links = tuple(o.identifier if i % 2 else (o.identifier, "outcome") for i, o in enumerate(lex_objects))
    written, schemas = _premis_written(lex_objects, links)
    assert written == _reindented(written)
    tree = etree.fromstring(written)
    assert schema_errors(tree) == []
    assert schemas == schemas_used(tree) == ["premis-v3-0.xsd"]
    P = f"{{{NS_PREMIS}}}"
    digests = [el.text for el in tree.iter(P + "messageDigest")]
    assert digests == [o.sha256 for o in lex_objects]
    assert [el.text for el in tree.iter(P + "linkingObjectIdentifierValue")] == [o.identifier for o in lex_objects]
    assert premis.build_premis(lex_objects, [], []).getroot().tag == P + "premis"


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
def test_generated_files_and_links_are_written_as_libxml2_writes_them_or_refused(objects, links):
    values = [v for o in objects for v in (o.identifier, o.sha256, o.size, o.format_name, o.original_name, o.puid,
                                           o.format_version, o.format_note, o.derived_from,
                                           *(o.creating_application or ()))]
    values += [v for link in links for v in ((link,) if isinstance(link, str) else link)]
    try:
        written, _ = _premis_written(objects, tuple(links))
    except NotXmlText:
        assert _has_non_xml_char(values)
        return
    assert not _has_non_xml_char(values)
    assert _empty_as_parsed(written) == _roundtrip(written)
    tree = etree.fromstring(written)
    assert [el.text or "" for el in tree.iter(f"{{{NS_PREMIS}}}objectIdentifierValue")][1:] == \
        [o.identifier for o in objects]  # the first is the representation's


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


def _mets_written(files: list[list[mets.FileRef]]) -> tuple[bytes, list[str]]:
    out = io.BytesIO()
    schemas = mets.write_mets(out, **_mets_kwargs(_mets_groups([iter(fs) for fs in files])))
    return out.getvalue(), schemas


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


def test_real_file_entries_are_written_as_libxml2_pretty_prints_them(lex_file_refs):
    assert len(lex_file_refs) > 40
    written, schemas = _mets_written([lex_file_refs, lex_file_refs[:7]])
    assert written.count(b"<mets:file ") == len(lex_file_refs) + 7
    assert written == _reindented(written)
    tree = etree.fromstring(written)
    assert schemas == schemas_used(tree)
    assert schema_errors(etree.fromstring(_mets_written([lex_file_refs])[0])) == []  # (IDs above are listed twice)
    checksums = [el.get("CHECKSUM") for el in tree.iter(f"{{{mets.NS_METS}}}file")]
    assert checksums == [r.sha256 for r in [*lex_file_refs, *lex_file_refs[:7]]]
    assert mets.build_mets(**_mets_kwargs(_mets_groups([lex_file_refs]))).getroot().get("OBJID") == "rep1"


_awkward = st.sampled_from(["", " ", "a b", "&<>\"'", "a\r\nb\tc", "  indrag\n", "&amp;", "åäö ÅÄÖ é ß 😀", "]]>",
                            "\u2028", "x" * 3000, "data/KS 2025-1/1_Beslut & <bilaga> \"slutlig\" 'v2'.pdf"])
_text = st.one_of(st.text(), st.text(st.characters(codec="utf-8")), _awkward)
_offsets = st.timedeltas(min_value=-dt.timedelta(hours=23, minutes=59), max_value=dt.timedelta(hours=23, minutes=59))


@st.composite
def _file_refs(draw) -> mets.FileRef:
    created = draw(st.datetimes(timezones=st.one_of(st.none(), st.just(dt.UTC), st.builds(dt.timezone, _offsets))))
    return mets.FileRef(
        id=draw(st.one_of(_text, st.from_regex(r"file-[a-z0-9-]{1,20}", fullmatch=True))), href=draw(_text),
        mimetype=draw(st.one_of(_text, st.sampled_from(["application/pdf", "text/plain; charset=utf-8"]))),
        size=draw(st.one_of(st.integers(), st.integers(0, 10**12))),
        sha256=draw(st.one_of(_text, st.from_regex(r"[0-9a-f]{64}", fullmatch=True))), created=created)


@SETTINGS
@given(files=st.lists(st.lists(_file_refs(), max_size=4), max_size=2))
def test_generated_file_entries_are_written_as_libxml2_writes_them_or_refused(files):
    refs = [f for fs in files for f in fs]
    try:
        written, _ = _mets_written(files)
    except NotXmlText:
        assert _has_non_xml_char([v for r in refs for v in (r.id, r.href, r.mimetype, r.sha256)])
        return
    assert _empty_as_parsed(written) == _roundtrip(written)
    tree = etree.fromstring(written)
    hrefs = [el.get(f"{{{mets.NS_XLINK}}}href") for el in tree.iter(f"{{{mets.NS_METS}}}FLocat")]
    assert hrefs == [r.href for r in refs]
    for ref in refs:  # a file entry read back as an element carries its values
        el = mets.file_element(ref)
        assert (el.get("ID"), el.get("SIZE"), el.get("CHECKSUM")) == (ref.id, str(ref.size), ref.sha256)


@SETTINGS
@given(ref=_file_refs(), depth=st.integers(1, 40))
def test_a_file_entry_is_indented_for_its_depth_as_libxml2_indents(ref, depth):
    try:
        piece = mets._file_text(depth, ref)
    except NotXmlText:
        return
    # Deeper than 30 levels libxml2 indents by 60 spaces at most.
    opening = "".join(f'{"  " * min(k, 30)}<mets:div>\n' for k in range(1, depth))
    closing = "".join(f'{"  " * min(k, 30)}</mets:div>\n' for k in reversed(range(1, depth)))
    doc = b"".join((f'<?xml version=\'1.0\' encoding=\'UTF-8\'?>\n<mets:mets xmlns:mets="{mets.NS_METS}" '
                    f'xmlns:xlink="{mets.NS_XLINK}">\n'.encode(), opening.encode(), piece, closing.encode(),
                    b"</mets:mets>\n"))
    assert doc == _reindented(doc)


# --- the pieces ---------------------------------------------------------------------------------------------------

@SETTINGS
@given(value=st.one_of(st.text(), st.text(st.characters(codec="utf-8")), st.integers(), st.floats(allow_nan=False)))
def test_escape_is_what_libxml2_writes_in_text_and_attributes(value):
    element = etree.Element("e")
    try:
        element.text = str(value)
        element.set("a", str(value))
    except ValueError:
        with pytest.raises(NotXmlText):
            escape(value)
        with pytest.raises(NotXmlText):
            escape(value, attribute=True)
        return
    expected = f'<e a="{escape(value, attribute=True)}">{escape(value)}</e>'.encode()
    assert etree.tostring(element, encoding="UTF-8") == expected


def test_escape_details():
    assert escape("<&>\"'\t\n\r") == "&lt;&amp;&gt;\"'\t\n&#13;"
    assert escape("<&>\"'\t\n\r", attribute=True) == "&lt;&amp;&gt;&quot;'&#9;&#10;&#13;"
    assert escape(12) == "12" and escape("åäö😀") == "åäö😀"
    for bad in ("\x00", "\x08", "\x1f", "\ufffe", "\uffff", "\ud800"):
        with pytest.raises(NotXmlText):
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
