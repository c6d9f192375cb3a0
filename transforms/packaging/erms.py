"""FGS Ärendehantering 2.0 (E-ARK CITS ERMS 2.1) descriptive metadata for case-shaped records.

One ``aggregation`` of type ``caseFile`` per case (ärende) with its parties as agents and
its documents (handlingar) as ``record`` children; each record points at its file inside the
representation through an ``appendix``. The mapping from a system's columns to these fields
is the ``content:`` section of the system YAML, so nothing here knows a system by name.

Each element has one serialiser: an ``aggregation`` (a case with its records), which grows with
the package, is formatted as text (:func:`_aggregation_text`); the ``control`` section is built
with lxml and streamed by :class:`~transforms.common.xmltools.PrettyStream` with the same
indentation. :func:`build_erms` is what :func:`write_erms` writes, parsed.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from lxml import etree

from transforms.common.xmltools import (
    NS_ERMS,
    NS_XSI,
    Fragment,
    PrettyStream,
    as_is,
    escape,
    indent,
    leaf_text,
    parse_bytes,
)

E = f"{{{NS_ERMS}}}"

# Source systems speak English or Swedish; ERMS has one vocabulary (compared in lower case).
DIRECTIONS = {
    "incoming": "incoming", "inkommande": "incoming", "inkommen": "incoming",
    "outgoing": "outgoing", "utgående": "outgoing", "utgaende": "outgoing", "expedierad": "outgoing",
    "internal": "internal_memo_without_follow-up", "upprättad": "internal_memo_without_follow-up",
    "intern": "internal_memo_without_follow-up",
}
MISSING_FILE_NOTE = ("Filen saknades i verksamhetssystemet vid uttaget; avvikelsen godkändes av en arkivarie. "
                     "/ The file was missing at extraction; an archivist approved the deviation.")
CASE_STATUS = {
    "open": "open", "öppen": "open", "pågående": "in_progress", "aktiv": "in_progress",
    "closed": "closed", "avslutad": "closed", "avslutat": "closed",
}


@dataclass(slots=True)
class Document:
    """A record (handling) and the path of its file inside the package."""

    fields: Mapping[str, object]
    package_path: str
    size: int


@dataclass
class Case:
    """A case (ärende) with its parties and documents, as mapped columns."""

    fields: Mapping[str, object]
    parties: list[Mapping[str, object]] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)


def _dt(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.replace(microsecond=0).isoformat()
    if isinstance(value, dt.date):
        return f"{value.isoformat()}T00:00:00"
    return str(value)


def _sub(parent: etree._Element, tag: str, text: object = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, E + tag, {k: v for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = str(text)
    return el


def _date_items(pairs: Iterable[tuple[str, object]]) -> list[tuple[str, str | None]]:
    """The ``(dateType, value)`` of the dates that are known."""
    return [(t, _dt(v)) for t, v in pairs if v is not None]


def _erms_root(*, system_title: str, creator_name: str, creator_orgnr: str, package_id: str,
               created: dt.datetime, software: str) -> etree._Element:
    """The ``erms`` element with its ``control`` section and an empty ``aggregations``."""
    root = etree.Element(E + "erms", nsmap={None: NS_ERMS, "xsi": NS_XSI})
    root.set(f"{{{NS_XSI}}}schemaLocation", f"{NS_ERMS} ../../schemas/ERMS.xsd")
    control = _sub(root, "control")
    _sub(control, "identification", package_id, identificationType="package")
    _sub(control, "identification", system_title, identificationType="system")
    maint = _sub(control, "maintenanceInformation")
    _sub(maint, "maintenanceStatus", value="new")
    agency = _sub(maint, "maintenanceAgency")
    _sub(agency, "agencyCode", creator_orgnr, type="organisationsnummer")
    _sub(agency, "agencyName", creator_name)
    history = _sub(maint, "maintenanceHistory")
    event = _sub(history, "maintenanceEvent")
    _sub(event, "eventType", value="created")
    _sub(event, "eventDateTime", _dt(created))
    agent = _sub(event, "agent", agentType="other", otherAgentType="software")
    _sub(agent, "name", software)
    _sub(root, "aggregations")
    return root


def build_erms(cases: Iterable[Case], **kwargs) -> etree._ElementTree:
    """The document :func:`write_erms` writes with the same arguments, parsed."""
    out = io.BytesIO()
    write_erms(out, cases, **kwargs)
    return parse_bytes(out.getvalue(), name="ERMS.xml")


def write_erms(
    out: BinaryIO,
    cases: Iterable[Case],
    *,
    mapping: Mapping[str, Mapping[str, str]],
    system_title: str,
    creator_name: str,
    creator_orgnr: str,
    package_id: str,
    created: dt.datetime,
    software: str,
    retention: Mapping[str, object] | None = None,
) -> int:
    """The ERMS document for a package's cases, one case at a time; ``mapping`` is the YAML ``content`` section.

    Only the ``control`` section and one ``aggregation`` are ever in memory (see
    :class:`xmltools.PrettyStream`). A value XML cannot carry raises
    :class:`~transforms.common.xmltools.NotXmlText`. Returns the number of cases written.
    """
    root = _erms_root(system_title=system_title, creator_name=creator_name, creator_orgnr=creator_orgnr,
                      package_id=package_id, created=created, software=software)
    aggs = root[-1]
    root.remove(aggs)  # opened below as the element whose children stream
    count = 0
    with PrettyStream(out, root) as stream:
        root.append(aggs)
        with stream.element(aggs):
            for case in cases:
                stream.add_text(_aggregation_text(stream.depth, case, mapping, creator_name, retention), (NS_ERMS,))
                count += 1
    return count


def _disposal_terms(retention: Mapping[str, object], start: object) -> tuple[str, str] | None:
    """``(disposable, disposalAction)`` of the case's retention rule, or None while the date it
    counts from is not known (an open case): then the rule is left out."""
    if not isinstance(start, dt.date):
        return None
    return ("true", "gallras") if retention["action"] == "dispose" else ("false", "bevaras")


# --- values of the case ------------------------------------------------------------------------------------

def _status(f: Mapping[str, object], cm: Mapping[str, str]) -> str | None:
    return CASE_STATUS.get(str(f.get(cm.get("status", "")) or "").strip().lower())


def _direction(f: Mapping[str, object], dm: Mapping[str, str]) -> str | None:
    return DIRECTIONS.get(str(f.get(dm.get("direction", "")) or "").strip().lower())


def _id_number(party: Mapping[str, object], pm: Mapping[str, str]) -> tuple[object, str]:
    """A party's personnummer, or else its organisationsnummer, and which of the two it is."""
    number = party.get(pm.get("personnummer", "")) or party.get(pm.get("organisationsnummer", ""))
    return number, "personnummer" if party.get(pm.get("personnummer", "")) else "organisationsnummer"


def _appendix(doc: Document, dm: Mapping[str, str]) -> dict[str, str]:
    """The attributes of a record's ``appendix``: the original file's name, its path and its format."""
    f = doc.fields
    return {"name": str(f.get(dm.get("file_name", "")) or doc.package_path.rsplit("/", 1)[-1]),
            "path": doc.package_path,
            "fileFormat": str(f.get(dm.get("mime_type", "")) or "application/octet-stream")}


# --- an aggregation as text: what write_erms streams -------------------------------------------------------

def _aggregation_text(depth: int, case: Case, mapping: Mapping[str, Mapping[str, str]], creator_name: str,
                      retention: Mapping[str, object] | None) -> bytes:
    """One case as an ``aggregation`` of type ``caseFile``, as the pretty-printed document has it,
    ``depth`` levels below its root (unprefixed: ERMS is the root's default namespace).

    When no value of the case, its parties, the creator's name or the retention rule needs
    escaping (:func:`xmltools.as_is`, asked once for all of them) it is formatted as plain text
    (:func:`_plain_aggregation_text`); otherwise with :class:`Fragment`, which escapes each value.
    """
    values = [str(v) for v in case.fields.values() if v is not None]
    for party in case.parties:
        values += [str(v) for v in party.values() if v is not None]
    values.append(str(creator_name))
    if retention:
        values += [str(v) for v in retention.values() if v is not None]
    if as_is(values):
        return _plain_aggregation_text(depth, case, mapping, creator_name, retention)
    return _escaped_aggregation_text(depth, case, mapping, creator_name, retention)


def _leaf(at: str, tag: str, value: object) -> str:
    """An element with a value that needs no escaping (``<tag/>`` for None), as ``leaf_text`` writes it."""
    return f"{at}<{tag}/>\n" if value is None else f"{at}<{tag}>{value}</{tag}>\n"


def _plain_aggregation_text(depth: int, case: Case, mapping: Mapping[str, Mapping[str, str]], creator_name: str,
                            retention: Mapping[str, object] | None) -> bytes:
    """:func:`_escaped_aggregation_text` for a case none of whose values needs escaping: the same
    elements in the same order, each line one formatted string."""
    cm, dm, pm = mapping["case"], mapping["document"], mapping.get("party", {})
    f = case.fields
    i0, i1, i2, i3, i4 = (indent(depth + k) for k in range(5))
    parts = [f'{i0}<aggregation systemIdentifier="{f[cm["id"]]}" aggregationType="caseFile">\n',
             _leaf(i1, "objectId", f[cm["reference"]])]
    secret = f.get(cm.get("secrecy", ""))
    if secret:
        parts.append(f"{i1}<securityClass>secret</securityClass>\n")
    if cm.get("classification") and f.get(cm["classification"]) is not None:
        code = f[cm["classification"]]
        parts.append(f'{i1}<classification classificationCode="{code}">{code}</classification>\n')
    parts.append(_leaf(i1, "title", f[cm["title"]]))
    status = _status(f, cm)
    if status:
        parts.append(f'{i1}<status value="{status}"/>\n')
    if secret:
        parts += (f'{i1}<restriction restrictionType="confidential">\n',
                  _leaf(i2, "regulation", f.get(cm.get("secrecy_reference", "")) or "OSL"), f"{i1}</restriction>\n")
    if retention:
        start = f.get(str(retention.get("counted_from", "")))
        terms = _disposal_terms(retention, start)
        if terms is not None:
            disposable, action = terms
            parts += (f'{i1}<disposal disposable="{disposable}">\n',
                      _leaf(i2, "disposalScheduleId", retention["record_class"]),
                      _leaf(i2, "disposalAction", action), _leaf(i2, "disposalPeriod", retention["period"]),
                      _leaf(i2, "disposalMandate", retention["basis"]), f"{i2}<dates>\n",
                      f'{i3}<disposalDate dateType="retention_period_start">{_dt(start)}</disposalDate>\n',
                      f"{i2}</dates>\n", f"{i1}</disposal>\n")
    parts += (f"{i1}<agents>\n", f'{i2}<agent agentType="responsible_person">\n',
              _leaf(i3, "name", f.get(cm.get("officer", "")) or "okänd"), _leaf(i3, "organisation", creator_name))
    if cm.get("unit") and f.get(cm["unit"]):
        parts.append(_leaf(i3, "unitName", f[cm["unit"]]))
    parts.append(f"{i2}</agent>\n")
    for party in case.parties:
        parts += (f'{i2}<agent agentType="counterpart">\n', _leaf(i3, "name", party.get(pm.get("name", "")) or "okänd"))
        number, kind = _id_number(party, pm)
        if number:
            parts.append(f'{i3}<idNumber idNumberType="{kind}">{number}</idNumber>\n')
        if party.get(pm.get("role", "")):
            parts.append(_leaf(i3, "role", party[pm["role"]]))
        parts.append(f"{i2}</agent>\n")
    parts.append(f"{i1}</agents>\n")
    dates = _date_items([("opened", f.get(cm.get("opened", ""))), ("closed", f.get(cm.get("closed", "")))])
    if dates:
        parts.append(f"{i1}<dates>\n")
        parts += (f'{i2}<date dateType="{dtype}">{value}</date>\n' for dtype, value in dates)
        parts.append(f"{i1}</dates>\n")
    parts += (_record_str(depth + 1, doc, dm) for doc in case.documents)
    parts.append(f"{i0}</aggregation>\n")
    return "".join(parts).encode()


def _escaped_aggregation_text(depth: int, case: Case, mapping: Mapping[str, Mapping[str, str]], creator_name: str,
                              retention: Mapping[str, object] | None) -> bytes:
    """:func:`_aggregation_text` with every value escaped as it is written (:class:`Fragment`)."""
    cm, dm, pm = mapping["case"], mapping["document"], mapping.get("party", {})
    f = case.fields
    out = Fragment(depth)
    out.start("aggregation", {"systemIdentifier": str(f[cm["id"]]), "aggregationType": "caseFile"})
    out.leaf("objectId", f[cm["reference"]])
    secret = f.get(cm.get("secrecy", ""))
    if secret:
        out.leaf("securityClass", "secret")
    if cm.get("classification") and f.get(cm["classification"]) is not None:
        out.leaf("classification", f[cm["classification"]], {"classificationCode": str(f[cm["classification"]])})
    out.leaf("title", f[cm["title"]])
    status = _status(f, cm)
    if status:
        out.leaf("status", None, {"value": status})
    if secret:
        out.start("restriction", {"restrictionType": "confidential"})
        out.leaf("regulation", f.get(cm.get("secrecy_reference", "")) or "OSL")
        out.end()
    if retention:
        start = f.get(str(retention.get("counted_from", "")))
        terms = _disposal_terms(retention, start)
        if terms is not None:
            disposable, action = terms
            out.start("disposal", {"disposable": disposable})
            out.leaf("disposalScheduleId", retention["record_class"])
            out.leaf("disposalAction", action)
            out.leaf("disposalPeriod", retention["period"])
            out.leaf("disposalMandate", retention["basis"])
            out.start("dates")
            out.leaf("disposalDate", _dt(start), {"dateType": "retention_period_start"})
            out.end()
            out.end()
    out.start("agents")
    out.start("agent", {"agentType": "responsible_person"})
    out.leaf("name", f.get(cm.get("officer", "")) or "okänd")
    out.leaf("organisation", creator_name)
    if cm.get("unit") and f.get(cm["unit"]):
        out.leaf("unitName", f[cm["unit"]])
    out.end()
    for party in case.parties:
        out.start("agent", {"agentType": "counterpart"})
        out.leaf("name", party.get(pm.get("name", "")) or "okänd")
        number, kind = _id_number(party, pm)
        if number:
            out.leaf("idNumber", number, {"idNumberType": kind})
        if party.get(pm.get("role", "")):
            out.leaf("role", party[pm["role"]])
        out.end()
    out.end()
    _dates_text(out, [("opened", f.get(cm.get("opened", ""))), ("closed", f.get(cm.get("closed", "")))])
    for doc in case.documents:
        _record_text(out, doc, dm)
    out.end()
    return out.getvalue()


def _dates_text(out: Fragment, pairs: Iterable[tuple[str, object]]) -> None:
    items = _date_items(pairs)
    if items:
        out.start("dates")
        for dtype, value in items:
            out.leaf("date", value, {"dateType": dtype})
        out.end()


def _record_text(out: Fragment, doc: Document, dm: Mapping[str, str]) -> None:
    """A record (document) of a case, appended to ``out`` (:func:`_record_str`)."""
    out.add(_record_str(out.level, doc, dm))


def _record_str(level: int, doc: Document, dm: Mapping[str, str]) -> str:
    """A record (document) of a case ``level`` levels below the root: one formatted string per part
    of fixed shape (with :class:`Fragment` calls a record cost about as much as its PREMIS object
    did). Its values are escaped one by one only when they need it (:func:`xmltools.as_is`)."""
    f = doc.fields
    i0, i1, i2 = (indent(level + k) for k in range(3))
    doc_id = str(f[dm["id"]])
    secret = f.get(dm.get("secrecy", ""))
    title = f[dm["title"]]
    title = None if title is None else str(title)
    number = int(f[dm["number"]]) if dm.get("number") and f.get(dm["number"]) is not None else None
    regulation = str(f.get(dm.get("secrecy_reference", "")) or "OSL") if secret else None
    dates = _date_items([("created", f.get(dm.get("date", ""))), ("captured", f.get(dm.get("registered", "")))])
    appendix = _appendix(doc, dm) if doc.package_path else None
    values = [doc_id, title or "", regulation or "", *(value for _, value in dates),  # type: ignore[misc]
              *(appendix.values() if appendix else ())]
    text, attr = (str, str) if as_is(values) else (escape, functools.partial(escape, attribute=True))
    parts = [f'{i0}<record systemIdentifier="{attr(doc_id)}" recordType="document">\n',
             f"{i1}<objectId>{text(doc_id)}</objectId>\n"]
    if secret:
        parts.append(f"{i1}<securityClass>secret</securityClass>\n")
    parts.append(f"{i1}<title/>\n" if title is None else f"{i1}<title>{text(title)}</title>\n")
    if number is not None:
        parts.append(f"{i1}<runningNumber>{number}</runningNumber>\n")
    if secret:
        parts += (f'{i1}<restriction restrictionType="confidential">\n',
                  f"{i2}<regulation>{text(regulation)}</regulation>\n", f"{i1}</restriction>\n")
    direction = _direction(f, dm)  # a word of ERMS's own vocabulary: nothing to escape
    if direction:
        parts.append(f'{i1}<direction directionDefinition="{direction}"/>\n')
    if dates:
        parts.append(f"{i1}<dates>\n")
        parts += (f'{i2}<date dateType="{dtype}">{text(value)}</date>\n' for dtype, value in dates)
        parts.append(f"{i1}</dates>\n")
    if appendix is None:
        parts += (f"{i1}<notes>\n", leaf_text(i2, "note", MISSING_FILE_NOTE, {"noteType": "arkivflode-missing-file"}),
                  f"{i1}</notes>\n")
    else:
        parts += (f"{i1}<additionalInformation>\n",
                  f'{i2}<appendix name="{attr(appendix["name"])}" path="{attr(appendix["path"])}" '
                  f'fileFormat="{attr(appendix["fileFormat"])}"/>\n',
                  f"{i1}</additionalInformation>\n")
    parts.append(f"{i0}</record>\n")
    return "".join(parts)


# --- a delivered ERMS: does every case's appendix point at a file of its own? ---------------------------------

#: names and folders of a package's metadata: never a case's document
_METADATA_NAMES = frozenset({"erms.xml", "mets.xml", "premis.xml"})
_METADATA_FOLDERS = frozenset({"metadata", "schemas"})
_DATA_PATH = re.compile(r"^representations/[^/]+/data/.")


def appendix_problems(data: bytes, erms_at: str = "metadata/descriptive/ERMS.xml") -> list[str]:
    """Every appendix of an ERMS document that is not a document of its own case (aggregation).

    ``erms_at`` is where the ERMS document is in the package (appendix paths are relative to
    it). An appendix must lead to a file under ``representations/<name>/data/``, not to a
    metadata file (ERMS, METS, PREMIS, ``metadata/``, ``schemas/``), not out of the package
    (absolute, a URL, ``..`` past the root), and no two cases may name the same file. Each
    problem names the ERMS file, the line, the case's position and the rule; never the path,
    a name or any other value.
    """
    tree = parse_bytes(data, name=erms_at)
    base = posixpath.dirname(erms_at)
    owner: dict[str, int] = {}  # file in the package -> the case (position) that named it first
    problems: list[str] = []
    top = tree.getroot().iterfind(f"{{{NS_ERMS}}}aggregations/{{{NS_ERMS}}}aggregation")
    for n, agg in enumerate(top, start=1):
        for appendix in agg.iter(f"{{{NS_ERMS}}}appendix"):
            href = (appendix.get("path") or "").strip()
            where = f"{erms_at} line {appendix.sourceline}, case {n}"
            if not href:
                continue  # a record without a file (it says so in a note)
            text = href.replace("\\", "/")
            if text.startswith("/") or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", text):
                problems.append(f"{where}: appendix path is absolute or a URL: it must name a file in the package")
                continue
            target = posixpath.normpath(posixpath.join(base, text))
            parts = [p.lower() for p in target.split("/")]
            if target == ".." or target.startswith("../"):
                problems.append(f"{where}: appendix path leads out of the package")
            elif parts[-1] in _METADATA_NAMES or any(p in _METADATA_FOLDERS for p in parts[:-1]):
                problems.append(f"{where}: appendix path points at a metadata file (ERMS, METS, PREMIS, metadata/ "
                                "or schemas/)")
            elif not _DATA_PATH.match(target):
                problems.append(f"{where}: appendix path is not a document of the package (representations/*/data/)")
            elif owner.setdefault(target, n) != n:
                problems.append(f"{where}: appendix path names the document of another case (case {owner[target]}); "
                                "a file belongs to exactly one case")
    return problems
