"""The data-quality gate: a staged batch is checked against its system's suite before packaging.

A batch arrives as Parquet staging files, one or more per table. :func:`check_batch` reads
each table into one pandas DataFrame, validates it with Great Expectations (GX 1.x, an
ephemeral context: nothing is stored or sent anywhere) and writes two reports for the
archivists: a JSON summary (our own format, read by the quarantine page) and GX's own
Data Docs (static HTML, one page per table). A batch whose result is not ``success`` must
never be packaged.

Records carry personnummer and secret (OSL) data. The reports name offending records by
their ``id_column`` and show a few example values per failed check — and every value of a
column marked ``sensitive`` in the system YAML is masked (:mod:`transforms.common.masking`):
a personnummer as ``19XXXXXX-XXXX``, anything else by its length. Everything that looks
like a personnummer is masked even in unmarked columns. GX's result is masked *before*
Data Docs render it, and the HTML is checked once more against the batch's sensitive
values. Nothing from a record is logged; a table's id column may not be sensitive.

The suite is our own thin JSON wrapper around GX expectation configurations::

    {"name": "lex", "description": "...",
     "tables": {"cases": {"id_column": "case_id",
                          "expectations": [{"type": "expect_column_values_to_not_be_null",
                                            "kwargs": {"column": "title"},
                                            "meta": {"notes": "why an archivist cares"}}]}}}

Besides the suite, the gate checks the text of every text column of every staged table,
whatever the source: a value holding NUL or another control character (tab, CR and LF
excepted), a byte-order mark, or UTF-8 that was read as windows-1252/ISO-8859-1 (``Ã¥`` for
``å``) is a failed check (``arkiv_text_…``) naming table, column, rule, count and the
records' ids — never the value. Such checks appear in the report only when they fail.

great_expectations is imported only inside the functions that need it: the import takes
seconds, and the Airflow DAG processor imports this module.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transforms import SOFTWARE_NAME
from transforms.common.errors import ConfigError, ContentError, StorageError
from transforms.common.masking import shown

log = logging.getLogger(__name__)

#: At most this many offending record IDs are kept per check.
MAX_OFFENDING_IDS = 1000
#: At most this many example values (masked where sensitive) are shown per failed check.
MAX_EXAMPLES = 20

# Pseudo-checks for problems found before GX runs; named so that nobody mistakes them for
# GX expectation types.
TABLE_STAGED = "arkiv_table_is_staged"
ID_COLUMN_PRESENT = "arkiv_id_column_is_present"

# Checks of the text itself, run over every text column of every staged table (a database
# sends NUL and control characters as readily as a file does).
TEXT_CONTROL = "arkiv_text_has_no_control_characters"
TEXT_BOM = "arkiv_text_has_no_byte_order_mark"
TEXT_MOJIBAKE = "arkiv_text_is_not_double_encoded"
#: rule -> what the offending values hold (never the values themselves)
TEXT_RULES = {
    TEXT_CONTROL: "hold NUL or another control character (only tab, CR and LF belong in text)",
    TEXT_BOM: "hold a byte-order mark (U+FEFF), which belongs only in the first bytes of a file",
    TEXT_MOJIBAKE: "hold UTF-8 read as a single-byte encoding (mojibake: \"Ã¥\" where \"å\" was meant)",
}
_CONTROL_RANGES = [(0x00, 0x08), (0x0B, 0x0C), (0x0E, 0x1F), (0x7F, 0x9F)]
_CONTROL = re.compile("[" + "".join(f"\\x{a:02x}-\\x{b:02x}" for a, b in _CONTROL_RANGES) + "]")


def _continuation_chars() -> list[str]:
    """How UTF-8's continuation bytes (0x80-0xBF) look when read as windows-1252 or ISO-8859-1."""
    chars = {chr(b) for b in range(0x80, 0xC0)}  # ISO-8859-1: every byte is the code point
    # 0x81, 0x8D, 0x8F, 0x90 and 0x9D are undefined in windows-1252: ignored, they add nothing
    chars.update(bytes([b]).decode("cp1252", "ignore") for b in range(0x80, 0xC0))
    chars.discard("")
    return sorted(chars)


_CONTINUATION = _continuation_chars()
# A UTF-8 lead byte (0xC2-0xF4) read as a single-byte encoding, then what its continuation
# bytes became: "Ã¥" is "å" (C3 A5), "â€“" is "–" (E2 80 93).
_MOJIBAKE = re.compile("[\u00c2-\u00f4][" + "".join(re.escape(c) for c in _CONTINUATION) + "]+")
# The same, for Arrow's RE2 (a first pass over whole columns; hits are classified in Python).
_SUSPECT_RE2 = ("[" + "".join(f"\\x{{{a:02X}}}-\\x{{{b:02X}}}" for a, b in _CONTROL_RANGES) + "\\x{FEFF}]|"
                "[\\x{C2}-\\x{F4}][" + "".join(f"\\x{{{ord(c):X}}}" for c in _CONTINUATION) + "]")


_SUSPECT = re.compile(_CONTROL.pattern + "|\ufeff|" + _MOJIBAKE.pattern)


def may_be_faulty(text: str) -> bool:
    """A cheap first pass: False means :func:`text_faults` would find nothing in ``text``."""
    return _SUSPECT.search(text) is not None


def _as_byte(ch: str) -> int:
    try:
        return ch.encode("cp1252")[0]
    except UnicodeEncodeError:
        return ord(ch)  # ISO-8859-1's view of 0x80-0x9F


# Punctuation that follows a word in real text ("GÅ…", "”NÄ”", "Ü½"): after a capital letter
# other than Â and Ã (the leads of Latin-1's own letters in UTF-8) it is taken as meant.
_AFTER_A_WORD = frozenset(b"\x85\x92\x93\x94\x96\x97\xa0\xab\xb0\xb7\xbb\xbc\xbd\xbe")


def is_mojibake(text: str) -> bool:
    """Whether ``text`` holds a UTF-8 multibyte sequence that was decoded as windows-1252/ISO-8859-1."""
    for m in _MOJIBAKE.finditer(text):
        raw = bytes(_as_byte(c) for c in m.group())
        size = 2 if raw[0] < 0xE0 else 3 if raw[0] < 0xF0 else 4
        if len(raw) < size or (size == 2 and raw[0] > 0xC3 and raw[1] in _AFTER_A_WORD):
            continue
        try:
            raw[:size].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return True
    return False


def text_faults(text: str) -> tuple[str, ...]:
    """The text rules a value breaks (:data:`TEXT_RULES` keys), in a fixed order; () for clean text."""
    faults = []
    if _CONTROL.search(text):
        faults.append(TEXT_CONTROL)
    if "\ufeff" in text:
        faults.append(TEXT_BOM)
    if is_mojibake(text):
        faults.append(TEXT_MOJIBAKE)
    return tuple(faults)


_TYPE_RE = re.compile(r"^expect_[a-z0-9_]+$")
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Warning|Exit|Interrupt))(?::|$)")
_SUITE_KEYS = {"name", "description", "tables"}
_TABLE_KEYS = {"id_column", "reference_column", "description", "expectations"}
_EXPECTATION_KEYS = {"type", "kwargs", "meta"}
# Set by the gate itself: a suite that changed the result format could make GX return (and
# us keep) values, and catch_exceptions=False would turn one bad metric into a crash.
_RESERVED_KWARGS = {"result_format", "catch_exceptions", "batch_id"}
# Used to find our way back from a GX result to the suite entry it came from: GX does not
# return results in suite order.
_INDEX_META_KEY = "arkiv_check_index"
_WITHHELD = "[withheld]"


# --------------------------------------------------------------------------------------
# What a failed check means, in the words of the people who decide on it

#: Suite meta keys that override the wording below for one entry (``notes`` is the English "why").
_TEXT_META_KEYS = ("title_sv", "title_en", "notes_sv")

#: expectation type -> (Swedish headline, English headline, why it matters in Swedish, in English).
#: Headlines are templates over the entry's kwargs ({column}, {column_A}, {min_value} …),
#: formatted as a person reads them; a suite entry's meta (title_sv, title_en, notes_sv,
#: notes) overrides any of the four.
CHECK_TEXTS: dict[str, tuple[str, str, str, str]] = {
    "expect_column_values_to_not_be_null": (
        "Uppgift saknas: {column}", "Missing value: {column}",
        "En uppgift som måste finnas saknas, så posten är ofullständig.",
        "A value that must be present is missing, so the record is incomplete."),
    "expect_column_values_to_be_null": (
        "{column} har ett värde där inget ska finnas", "{column} holds a value where none belongs",
        "Posten säger emot sig själv; arkivarien kan inte avgöra vilken uppgift som stämmer.",
        "The record contradicts itself; the archivist cannot tell which value is true."),
    "expect_column_values_to_be_unique": (
        "Samma {column} förekommer mer än en gång", "{column} occurs more than once",
        "Två poster med samma identitet kan slås ihop och en av dem gå förlorad.",
        "Two records with one identity can be merged and one of them lost."),
    "expect_compound_columns_to_be_unique": (
        "Samma kombination av {column} förekommer mer än en gång", "The combination {column} occurs more than once",
        "Två poster med samma identitet kan slås ihop och en av dem gå förlorad.",
        "Two records with one identity can be merged and one of them lost."),
    "expect_column_values_to_match_regex": (
        "{column} har inte den form som krävs", "{column} is not in the required form",
        "En uppgift i fel form kan inte citeras, sökas eller tolkas säkert.",
        "A value in the wrong form cannot be cited, searched or read reliably."),
    "expect_column_values_to_be_between": (
        "{column} ligger utanför {min_value} – {max_value}", "{column} is outside {min_value} – {max_value}",
        "Ett värde utanför det rimliga är ett inmatnings- eller konverteringsfel, inte en verklig uppgift.",
        "A value outside the plausible range is a data-entry or conversion error, not a real value."),
    "expect_column_values_to_be_in_set": (
        "{column} har ett värde som inte är tillåtet (tillåtna: {value_set})",
        "{column} has a value that is not allowed (allowed: {value_set})",
        "Ett okänt värde betyder oftast att exportens mappning är inaktuell.",
        "An unknown value usually means the export's mapping is out of date."),
    "expect_column_pair_values_a_to_be_greater_than_b": (
        "{column_A} ligger före {column_B}", "{column_A} is before {column_B}",
        "Uppgifterna säger emot varandra; det senare datumet kan inte ligga före det tidigare.",
        "The values contradict each other; the later date cannot be before the earlier one."),
    "expect_column_values_to_be_valid_personnummer": (
        "Ogiltigt personnummer i {column}", "Invalid personnummer in {column}",
        "Ett personnummer med fel datum eller kontrollsiffra pekar ut fel person, eller ingen.",
        "A personnummer with a wrong date or check digit identifies the wrong person, or no one."),
    "expect_column_values_to_be_valid_organisationsnummer": (
        "Ogiltigt organisationsnummer i {column}", "Invalid organisationsnummer in {column}",
        "Ett organisationsnummer med fel kontrollsiffra pekar ut fel organisation, eller ingen.",
        "An organisationsnummer with a wrong check digit identifies the wrong organisation, or none."),
    "expect_column_values_to_be_existing_files": (
        "Filen som {column} anger finns inte i leveransen", "The file named in {column} is not in the delivery",
        "Filen är själva handlingen; utan den är posten ofullständig.",
        "The file is the record itself; without it the record is incomplete."),
    TABLE_STAGED: (
        "Tabellen {table} levererades inte", "The table {table} was not delivered",
        "En tabell som saknas betyder att uttaget är ofullständigt.",
        "A missing table means the extract is incomplete."),
    ID_COLUMN_PRESENT: (
        "Identitetskolumnen {column} saknas", "The identity column {column} is missing",
        "Utan postens identitet kan inget fel spåras tillbaka till källsystemet.",
        "Without the record's identity no problem can be traced back to the source system."),
    TEXT_CONTROL: (
        "Otillåtna styrtecken i texten i {column}", "Control characters in the text of {column}",
        "Texten är inte den som källan anger och får inte arkiveras som handlingen.",
        "The text is not what the source declares and must not be archived as the record."),
    TEXT_BOM: (
        "Byte-order mark mitt i texten i {column}", "Byte-order mark inside the text of {column}",
        "Texten är inte den som källan anger och får inte arkiveras som handlingen.",
        "The text is not what the source declares and must not be archived as the record."),
    TEXT_MOJIBAKE: (
        "Felkodade tecken i {column} (\u00c3\u00a5 i stället för å)",
        "Mis-encoded characters in {column} (\u00c3\u00a5 for å)",
        "Texten är inte den som källan anger och får inte arkiveras som handlingen.",
        "The text is not what the source declares and must not be archived as the record."),
}
_FALLBACK_TEXT = (
    "Kontrollen av {column} uppfylldes inte", "The check of {column} did not pass",
    "Uppgifterna uppfyller inte leveransöverenskommelsens krav.",
    "The data do not meet the submission agreement's requirements.")


def check_texts(expectation: str, kwargs: Mapping[str, Any], meta: Mapping[str, Any] | None = None, *,
                table: str = "", column: str | None = None) -> dict[str, dict[str, str]]:
    """``{"title": {"sv", "en"}, "why": {"sv", "en"}}`` for one check, from :data:`CHECK_TEXTS` and the entry's meta."""
    title_sv, title_en, why_sv, why_en = CHECK_TEXTS.get(expectation, _FALLBACK_TEXT)
    meta = meta or {}
    fields: dict[str, str] = {k: readable(v) for k, v in kwargs.items()}
    fields["table"] = table
    fields.setdefault("column", column or "")
    fields.setdefault("column_A", column or "")
    fields.setdefault("column_B", column or "")
    if "column_list" in kwargs:
        fields["column"] = column or fields["column_list"]

    def fill(template: str) -> str:
        try:
            return template.format_map(_Missing(fields))
        except (ValueError, IndexError):  # a suite's own wording with a stray brace
            return template
    return {
        "title": {"sv": fill(str(meta.get("title_sv") or title_sv)), "en": fill(str(meta.get("title_en") or title_en))},
        "why": {"sv": str(meta.get("notes_sv") or why_sv), "en": str(meta.get("notes") or why_en)},
    }


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "…"


def readable(value: Any) -> str | None:
    """A value as a person reads it: ISO dates, Swedish numbers (``12 345``, ``1,5``), ja/nej; None for empty."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalar
        with contextlib.suppress(TypeError, ValueError):
            value = value.item()
    if value is None:
        return None
    if isinstance(value, bool):
        return "ja" if value else "nej"
    if isinstance(value, int):
        return _thousands(str(abs(value)), "-" if value < 0 else "")
    if isinstance(value, float):
        if value != value:  # NaN
            return None
        whole, _, frac = f"{abs(value):.6f}".rstrip("0").partition(".")
        number = _thousands(whole, "-" if value < 0 else "")
        return number + ("," + frac if frac else "")
    if isinstance(value, dt.datetime) or type(value).__name__ == "Timestamp":
        if str(value) == "NaT":
            return None
        return value.strftime("%Y-%m-%d") if (value.hour, value.minute, value.second) == (0, 0, 0) \
            else value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.strftime("%H:%M")
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {readable(v) or '(tomt)'}" for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(readable(v) or "(tomt)" for v in value)
    return str(value)


def _thousands(digits: str, sign: str) -> str:
    # Swedish style: groups of three set apart by a space from five digits up (1234, 12 345).
    if len(digits) <= 4:
        return sign + digits
    groups = []
    while digits:
        groups.insert(0, digits[-3:])
        digits = digits[:-3]
    return sign + "\u00a0".join(groups)


# --------------------------------------------------------------------------------------
# Suite file


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation of a suite, as written in the file (not yet a GX object)."""

    type: str
    kwargs: dict[str, Any]
    meta: dict[str, Any]
    key: str  # where it sits in the file, e.g. "tables.cases.expectations[3]"

    @property
    def columns(self) -> list[str]:
        """Every column the expectation reads (column, column_A/B or column_list)."""
        cols: list[str] = []
        for k in ("column", "column_A", "column_B"):
            if isinstance(self.kwargs.get(k), str):
                cols.append(self.kwargs[k])
        cols.extend(c for c in self.kwargs.get("column_list") or [] if isinstance(c, str))
        return cols

    @property
    def column_label(self) -> str | None:
        """The column(s) for a report: ``title`` or ``closed_date, registered_date``."""
        cols = self.columns
        return ", ".join(cols) if cols else None

    @property
    def notes(self) -> str:
        notes = self.meta.get("notes")
        return notes if isinstance(notes, str) else ""


@dataclass(frozen=True)
class TableSuite:
    """The expectations for one staged table."""

    name: str
    id_column: str
    expectations: tuple[ExpectationSpec, ...]
    description: str = ""
    #: the column a person knows the record by (diarienummer, aktnummer); None: the id column
    reference_column: str | None = None


@dataclass(frozen=True)
class Suite:
    """A system's quality suite as read by :func:`load_suite`."""

    name: str
    description: str
    tables: dict[str, TableSuite]
    path: Path


def load_suite(path: Path) -> Suite:
    """Read and structurally validate a suite file.

    Checks the shape of the JSON (keys, types, expectation type names that look like GX
    types, reserved kwargs) without importing great_expectations; whether each type exists
    and its kwargs are acceptable is checked when :func:`check_batch` builds the GX suite.

    Raises:
        ConfigError: naming the file and the offending key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read quality suite: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from exc

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: {problem}")

    if not isinstance(data, dict):
        raise fail("(top level)", "must be a JSON object")
    _reject_unknown(data, _SUITE_KEYS, "", fail)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail("name", "must be a non-empty string")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description", "must be a string")
    raw_tables = data.get("tables")
    if not isinstance(raw_tables, dict) or not raw_tables:
        raise fail("tables", "must be a non-empty object mapping table name to its expectations")

    tables: dict[str, TableSuite] = {}
    for tname, tdata in raw_tables.items():
        tkey = f"tables.{tname}"
        if not isinstance(tdata, dict):
            raise fail(tkey, "must be an object with id_column and expectations")
        _reject_unknown(tdata, _TABLE_KEYS, f"{tkey}.", fail)
        id_column = tdata.get("id_column")
        if not isinstance(id_column, str) or not id_column.strip():
            raise fail(f"{tkey}.id_column", "must be a non-empty string naming the table's record id column")
        reference = tdata.get("reference_column")
        if reference is not None and (not isinstance(reference, str) or not reference.strip()):
            raise fail(f"{tkey}.reference_column", "must be a non-empty string naming the column records are known by")
        tdesc = tdata.get("description", "")
        if not isinstance(tdesc, str):
            raise fail(f"{tkey}.description", "must be a string")
        raw_exps = tdata.get("expectations")
        if not isinstance(raw_exps, list):
            raise fail(f"{tkey}.expectations", "must be a list")
        specs = [_parse_expectation(e, f"{tkey}.expectations[{i}]", fail) for i, e in enumerate(raw_exps)]
        tables[tname] = TableSuite(tname, id_column, tuple(specs), tdesc, reference)
    return Suite(name=name, description=description, tables=tables, path=path)


def _reject_unknown(obj: dict, allowed: set[str], prefix: str, fail) -> None:
    # A misspelt key ("expectation", "kwarg") would otherwise silently drop checks.
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise fail(f"{prefix}{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _parse_expectation(raw: object, key: str, fail) -> ExpectationSpec:
    if not isinstance(raw, dict):
        raise fail(key, "must be an object with type, kwargs and meta")
    _reject_unknown(raw, _EXPECTATION_KEYS, f"{key}.", fail)
    etype = raw.get("type")
    if not isinstance(etype, str) or not _TYPE_RE.match(etype):
        raise fail(f"{key}.type", f"must be a GX expectation type in snake_case (expect_…), got {etype!r}")
    kwargs = raw.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise fail(f"{key}.kwargs", "must be an object")
    reserved = sorted(_RESERVED_KWARGS & set(kwargs))
    if reserved:
        raise fail(f"{key}.kwargs.{reserved[0]}", "is set by the quality gate and may not appear in a suite")
    meta = raw.get("meta", {})
    if not isinstance(meta, dict):
        raise fail(f"{key}.meta", "must be an object")
    for text_key in ("notes", *_TEXT_META_KEYS):
        if text_key in meta and not isinstance(meta[text_key], str):
            raise fail(f"{key}.meta.{text_key}", "must be a string")
    if _INDEX_META_KEY in meta:
        raise fail(f"{key}.meta.{_INDEX_META_KEY}", "is reserved for the quality gate")
    return ExpectationSpec(type=etype, kwargs=dict(kwargs), meta=dict(meta), key=key)


# --------------------------------------------------------------------------------------
# Results


@dataclass
class CheckResult:
    """The outcome of one expectation on one table: counts, record IDs and masked examples."""

    table: str
    expectation: str
    column: str | None
    kwargs_summary: str
    success: bool
    element_count: int
    unexpected_count: int
    offending_ids: list[str]  # values of the table's id column, at most MAX_OFFENDING_IDS
    notes: str = ""  # the suite's meta.notes: why an archivist cares
    error: str | None = None  # set when the check could not be evaluated at all
    #: a few unexpected values with their counts, as shown: masked when the column is sensitive
    examples: list[dict[str, Any]] | None = None
    sensitive: bool = False  # the check reads a column marked sensitive
    #: {"title": {"sv", "en"}, "why": {"sv", "en"}}: the check in words (:func:`check_texts`)
    texts: dict[str, dict[str, str]] | None = None
    #: the offending records as a person names them (diarienummer, or the case's and the row's id)
    records: list[str] | None = None

    def describe(self) -> str:
        """``cases.expect_column_values_to_be_unique(diarienummer)``."""
        col = f"({self.column})" if self.column else ""
        return f"{self.table}.{self.expectation}{col}"


@dataclass
class QualityResult:
    """The outcome of :func:`check_batch` for one batch."""

    system: str
    batch: str
    success: bool
    checks: list[CheckResult]
    tables: dict[str, int]  # rows per staged table
    result_path: Path | None  # the JSON report in report_dir
    duration_seconds: float = 0.0
    data_docs: Path | None = None  # GX Data Docs (index.html), rendered from the masked result

    def failed(self) -> list[CheckResult]:
        """The checks that did not pass, in suite order."""
        return [c for c in self.checks if not c.success]

    def summary(self) -> str:
        """One readable paragraph: how many checks, which failed and on how many rows; no values."""
        failed = self.failed()
        rows = ", ".join(f"{t} {n} rows" for t, n in self.tables.items()) or "no tables staged"
        head = (
            f"Quality check of {self.system} batch {self.batch}: {len(self.checks)} checks on "
            f"{len(self.tables)} tables ({rows}); "
        )
        if not failed:
            return head + "all passed."
        parts = []
        for c in failed:
            if c.error:
                parts.append(f"{c.describe()}: {c.error}")
            elif c.element_count or c.unexpected_count:
                parts.append(f"{c.describe()} failed on {c.unexpected_count} of {c.element_count} rows")
            else:
                parts.append(f"{c.describe()} failed")
        where = ""
        if self.result_path:
            what = "Offending record IDs and details" if any(c.offending_ids for c in failed) else "Details"
            where = f" {what} are in {self.result_path}."
        return head + f"{len(failed)} failed: " + "; ".join(parts) + "." + where + " The batch must not be packaged."


# --------------------------------------------------------------------------------------
# The gate


def check_batch(
    suite_path: Path,
    tables: dict[str, list[Path]],
    *,
    system: str,
    batch: str,
    report_dir: Path,
    sensitive_columns: dict[str, list[str]] | None = None,
    reference_columns: dict[str, str] | None = None,
) -> QualityResult:
    """Validate a staged batch against a suite and write the JSON report.

    Args:
        suite_path: the system's suite file (see :func:`load_suite`).
        tables: table name -> the Parquet files staged for it (read into one DataFrame).
        system, batch: name the report ``report_dir / f"{system}-{batch}-quality.json"``.
        report_dir: where the report goes (created if missing).
        sensitive_columns: table -> columns whose values must never be reported; the report
            holds no values at all, so this guards the id columns and the final scan.
        reference_columns: table -> the column its records are known by (the system YAML's
            ``content`` reference, e.g. ``diarienummer``); overrides the suite's
            ``reference_column``. A reference column marked sensitive is not used: such
            records are named by their id.

    Returns:
        The result; ``success`` is False when any check failed, including a suite table
        that was not staged. Content problems are results, not exceptions.

    Raises:
        ConfigError: the suite is malformed, names an unknown expectation type or bad
            kwargs, or an id column is marked sensitive.
        StorageError: a staging file cannot be read or the report cannot be written.
    """
    started = time.monotonic()
    _check_file_component("system", system)
    _check_file_component("batch", batch)
    suite = load_suite(suite_path)
    sensitive = {t: set(cols) for t, cols in (sensitive_columns or {}).items()}
    for tname, tsuite in suite.tables.items():
        if tsuite.id_column in sensitive.get(tname, set()):
            raise ConfigError(
                f"{suite.path}: tables.{tname}.id_column: {tsuite.id_column!r} is marked sensitive, so "
                "offending record IDs could not be reported; use a non-sensitive id column"
            )

    gx = _import_gx()
    # Build every GX expectation before touching data, so a bad suite fails fast and clearly.
    gx_expectations = {t: [_to_gx(spec, suite.path) for spec in ts.expectations] for t, ts in suite.tables.items()}

    context = gx.get_context(mode="ephemeral")
    _quiet_progress_bars(context)
    datasource = context.data_sources.add_pandas(f"arkiv-{system}")

    checks: list[CheckResult] = []
    rows: dict[str, int] = {}
    withheld_values: set[str] = set()
    validations: dict[str, Any] = {}  # table -> GX result, masked, for Data Docs
    references = {t: ts.reference_column for t, ts in suite.tables.items() if ts.reference_column}
    references.update(reference_columns or {})
    id_columns = {t: ts.id_column for t, ts in suite.tables.items()}
    naming: dict[str, Any] = {}  # table -> the few columns that name its records
    for tname, tsuite in suite.tables.items():
        files = tables.get(tname)
        if not files:
            checks.append(
                CheckResult(
                    table=tname, expectation=TABLE_STAGED, column=None, kwargs_summary="", success=False,
                    element_count=0, unexpected_count=0, offending_ids=[],
                    notes="Every table in the suite must be staged; a missing table means the extract is incomplete.",
                    error=f"table {tname!r} is in suite {suite.name!r} but was not staged",
                )
            )
            continue
        arrow = _read_arrow(tname, files)
        df = _to_pandas(arrow)
        rows[tname] = len(df)
        wanted = [c for c in dict.fromkeys([tsuite.id_column, references.get(tname), *id_columns.values()])
                  if c and c in df.columns and c not in sensitive.get(tname, set())]
        if tsuite.id_column in wanted:
            naming[tname] = df[wanted]
        checks.extend(_text_checks(tname, arrow, tsuite.id_column, sensitive.get(tname, set())))
        table_values = _sensitive_values(df, sensitive.get(tname, set()))
        withheld_values |= table_values
        table_checks, validation = _check_table(gx, datasource, tsuite, gx_expectations[tname], df,
                                                sensitive.get(tname, set()), _guard(table_values))
        checks.extend(table_checks)
        if validation is not None:
            validations[tname] = validation
    for tname, files in tables.items():
        if tname not in suite.tables:
            # Not a failure (the suite decides what is checked), but worth a line in the log.
            log.warning("table %s is staged but suite %s has no expectations for it", tname, suite.name)
            arrow = _read_arrow(tname, files, strings_only=True)
            rows[tname] = arrow.num_rows
            checks.extend(_text_checks(tname, arrow, None, sensitive.get(tname, set())))

    _withhold(checks, withheld_values)
    _name_records(checks, naming, references, id_columns, withheld_values)
    for c in checks:
        if c.texts is None:
            c.texts = check_texts(c.expectation, {}, table=c.table, column=c.column)
    success = all(c.success for c in checks)
    result = QualityResult(
        system=system, batch=batch, success=success, checks=checks, tables=rows, result_path=None,
        duration_seconds=round(time.monotonic() - started, 3),
    )
    result.data_docs = _write_data_docs(validations, result, Path(report_dir), withheld_values)
    result.result_path = _write_report(result, suite, Path(report_dir), gx.__version__)
    if success:
        log.info("%s", result.summary())
    else:
        log.warning("%s", result.summary())
    return result


def reference_columns_of(content: Mapping[str, Any]) -> dict[str, str]:
    """Table -> the column its records are known by, from a system YAML's ``content`` mapping
    (``case: {table: cases, reference: diarienummer}``, and Visual Arkiv's archive structure)."""
    parts = [m for m in content.values() if isinstance(m, Mapping)]
    structure = content.get("archive_structure")
    if isinstance(structure, Mapping):
        parts += [m for m in structure.values() if isinstance(m, Mapping)]
    return {m["table"]: m["reference"] for m in parts
            if isinstance(m.get("table"), str) and isinstance(m.get("reference"), str)}


def _check_file_component(name: str, value: str) -> None:
    # system and batch become part of a file name; a "/" would write outside report_dir.
    if not isinstance(value, str) or value in {"", ".", ".."} or any(ch in value for ch in "/\\\0"):
        raise ValueError(f"{name} must be a non-empty string usable in a file name, got {value!r}")


def _import_gx():
    # Set before the import: GX reads it when its usage-statistics machinery initialises.
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx

    import expectations.custom  # noqa: F401  (registers our expectation types with GX)

    return gx


def _quiet_progress_bars(context) -> None:
    # tqdm bars on stderr fill Airflow task logs with noise for every metric calculation.
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    except Exception:  # pragma: no cover - cosmetic only; a GX refactor must not break the gate
        log.debug("could not disable GX progress bars", exc_info=True)


def _to_gx(spec: ExpectationSpec, suite_path: Path):
    """Instantiate the GX expectation for ``spec``, turning every failure into a ConfigError."""
    from great_expectations.exceptions import ExpectationNotFoundError
    from great_expectations.expectations.registry import get_expectation_impl

    from expectations.custom import CUSTOM_EXPECTATION_TYPES

    try:
        impl = get_expectation_impl(spec.type)
    except ExpectationNotFoundError:
        raise ConfigError(
            f"{suite_path}: {spec.key}.type: unknown expectation type {spec.type!r}; use a Great Expectations "
            f"built-in or one of {SOFTWARE_NAME}'s own ({', '.join(CUSTOM_EXPECTATION_TYPES)})"
        ) from None
    meta = {**spec.meta, _INDEX_META_KEY: spec.key}
    try:
        return impl(**spec.kwargs, meta=meta)
    except Exception as exc:  # pydantic and GX raise several unrelated types for bad kwargs
        problem = " ".join(str(exc).split())
        raise ConfigError(f"{suite_path}: {spec.key}.kwargs: invalid for {spec.type}: {problem}") from exc


def _read_table(tname: str, files: Iterable[Path]):
    return _to_pandas(_read_arrow(tname, files))


def _to_pandas(table):
    # integer_object_nulls keeps integer ids integers when the column has a null (otherwise
    # pandas makes them floats and "17" is reported as "17.0"). date32 stays datetime.date,
    # which GX's between-check compares with the suite's ISO date strings.
    return table.to_pandas(integer_object_nulls=True)


def _read_arrow(tname: str, files: Iterable[Path], *, strings_only: bool = False):
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = []
    for f in files:
        try:
            if strings_only:
                schema = pq.read_schema(f)
                parts.append(pq.read_table(f, columns=[n.name for n in schema if _is_text(n.type)]))
            else:
                parts.append(pq.read_table(f))
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"cannot read staging file {f} of table {tname}: {exc}") from exc
    try:
        return pa.concat_tables(parts, promote_options="default") if len(parts) > 1 else parts[0]
    except pa.ArrowException as exc:
        raise ContentError(f"staging files of table {tname} have incompatible schemas: {exc}") from exc


def _is_text(arrow_type) -> bool:
    import pyarrow as pa

    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def _text_checks(tname: str, table, id_column: str | None, sensitive: set[str]) -> list[CheckResult]:
    """One failed check per text column and rule that some value breaks; nothing when the text is clean.

    Offending rows are named by the id column (or, in a table the suite does not know, by
    their position); the values never leave this function.
    """
    import numpy as np
    import pyarrow.compute as pc

    ids_of = None
    if id_column is not None and id_column in table.column_names:
        ids_of = table.column(id_column)
    results: list[CheckResult] = []
    for field in table.schema:
        if not _is_text(field.type) or field.name == "record_class":
            continue
        column = table.column(field.name)
        hits = pc.fill_null(pc.match_substring_regex(column, _SUSPECT_RE2), False)
        if not pc.any(hits).as_py():
            continue
        positions = np.flatnonzero(hits.to_numpy(zero_copy_only=False))
        values = column.take(positions).to_pylist()
        found: dict[str, list[int]] = {}
        for pos, value in zip(positions.tolist(), values, strict=True):
            for rule in text_faults(value):
                found.setdefault(rule, []).append(pos)
        for rule in TEXT_RULES:
            where = found.get(rule)
            if not where:
                continue
            if ids_of is not None:
                ids = list(dict.fromkeys(_id_text(v) for v in ids_of.take(where[:MAX_OFFENDING_IDS]).to_pylist()))
            else:
                ids = [f"row {p + 1}" for p in where[:MAX_OFFENDING_IDS]]
            results.append(CheckResult(
                table=tname, expectation=rule, column=field.name, kwargs_summary="", success=False,
                element_count=table.num_rows, unexpected_count=len(where), offending_ids=ids,
                notes=f"{len(where)} value(s) {TEXT_RULES[rule]}; the text is not what the source declares, "
                      "so it must not be archived as the record.",
                sensitive=field.name in sensitive,
            ))
            log.warning("%s.%s: %d value(s) break %s", tname, field.name, len(where), rule)
    return results


def _count_rows(tname: str, files: Iterable[Path]) -> int:
    import pyarrow.parquet as pq

    try:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except OSError as exc:
        raise StorageError(f"cannot read staging file of table {tname}: {exc}") from exc


def _check_table(gx, datasource, tsuite: TableSuite, gx_exps: list, df,
                 sensitive: set[str], guard: list[str] = ()) -> tuple[list[CheckResult], Any]:
    """Run one table's expectations; results come back in suite order, with GX's (masked) result."""
    results: dict[str, CheckResult] = {}
    present = set(map(str, df.columns))
    has_id = tsuite.id_column in present
    lead: list[CheckResult] = []
    if not has_id:
        lead.append(
            CheckResult(
                table=tsuite.name, expectation=ID_COLUMN_PRESENT, column=tsuite.id_column, kwargs_summary="",
                success=False, element_count=len(df), unexpected_count=0, offending_ids=[],
                notes="Without its id column no offending record can be named.",
                error=f"id column {tsuite.id_column!r} is missing from the staged table",
            )
        )

    runnable = []
    validation = None
    for spec, exp in zip(tsuite.expectations, gx_exps, strict=True):
        missing = [c for c in spec.columns if c not in present]
        if missing:
            # Checked here rather than left to GX: GX's own error is buried in a traceback.
            results[spec.key] = _result(
                tsuite.name, spec, False, len(df), 0, [], error=f"column {missing[0]!r} is missing from the table"
            )
        else:
            runnable.append(exp)

    if runnable:
        asset = datasource.add_dataframe_asset(tsuite.name)
        batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": df})
        gx_suite = gx.ExpectationSuite(name=tsuite.name, expectations=runnable)
        result_format: dict[str, Any] = {
            "result_format": "SUMMARY",
            "partial_unexpected_count": MAX_OFFENDING_IDS,
            "include_unexpected_rows": False,
            "return_unexpected_index_query": False,
        }
        if has_id:
            result_format["unexpected_index_column_names"] = [tsuite.id_column]
        validation = batch.validate(gx_suite, result_format=result_format)
        by_key = {spec.key: spec for spec in tsuite.expectations}
        for evr in validation.results:
            key = evr.expectation_config.meta.get(_INDEX_META_KEY)
            spec = by_key[key]
            results[key] = _from_gx(tsuite, spec, evr, len(df), has_id, sensitive, guard,
                                    _path_roots(df, spec) if not evr.success else None)
        _mask_gx_result(validation, tsuite, sensitive, guard)
    # GX returns one result per expectation; should a future version drop one, the check
    # fails visibly rather than passing by omission.
    return lead + [
        results.get(spec.key) or _result(tsuite.name, spec, False, len(df), 0, [], error="no result from GX")
        for spec in tsuite.expectations
    ], validation


def _from_gx(tsuite: TableSuite, spec: ExpectationSpec, evr, rows: int, has_id: bool,
             sensitive: set[str], guard: list[str] = (), roots: Mapping[str, str] | None = None) -> CheckResult:
    """Keep counts, ids and a few examples (masked where sensitive) from a GX result."""
    error = _exception_type(evr.exception_info)
    if error:
        # The message and traceback may quote record values, so only the type is kept.
        log.warning("%s.%s (%s) could not be evaluated: %s", tsuite.name, spec.type, spec.key, error)
        return _result(tsuite.name, spec, False, rows, 0, [], error=f"could not be evaluated ({error})")
    res = evr.result or {}
    ids: list[str] = []
    if has_id:
        index_list = res.get("partial_unexpected_index_list") or res.get("unexpected_index_list") or []
        seen: set[str] = set()
        for entry in index_list:
            if not isinstance(entry, Mapping) or tsuite.id_column not in entry:
                continue
            text = _id_text(entry[tsuite.id_column])
            if text not in seen:
                seen.add(text)
                ids.append(text)
            if len(ids) >= MAX_OFFENDING_IDS:
                break
    is_sensitive = any(c in sensitive for c in spec.columns)
    examples = []
    if not evr.success:
        for entry in (res.get("partial_unexpected_counts") or [])[:MAX_EXAMPLES]:
            if isinstance(entry, Mapping):
                examples.append({"value": _shown(_example(entry.get("value"), spec, roots), is_sensitive, guard),
                                 "count": _int(entry.get("count"), 1)})
        if not examples and "observed_value" in res:
            examples.append({"value": _shown(_example(res["observed_value"], spec, roots), is_sensitive, guard),
                             "observed": True})
    result = _result(
        tsuite.name, spec, bool(evr.success), _int(res.get("element_count"), rows),
        _int(res.get("unexpected_count"), 0), ids,
    )
    result.examples, result.sensitive = examples, is_sensitive
    return result


# Keys of a GX result that hold counts and percentages, never record values.
_COUNT_KEYS = {"element_count", "unexpected_count", "unexpected_percent", "missing_count", "missing_percent",
               "unexpected_percent_total", "unexpected_percent_nonmissing", "unexpected_index_column_names"}


def _mask_gx_result(validation, tsuite: TableSuite, sensitive: set[str], guard: list[str] = ()) -> None:
    """Mask, in place, every record value in GX's result before anything renders it.

    Values of the checked column are masked when it is sensitive (and scrubbed of anything
    personnummer-like otherwise); in the index lists, each column's value is masked by that
    column's own marking and the id column is kept; exception messages, which can quote
    values, are cut down to the exception's type.
    """
    by_key = {spec.key: spec for spec in tsuite.expectations}

    def walk(value: Any, is_sensitive: bool) -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v, is_sensitive) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, is_sensitive) for v in value]
        if isinstance(value, bool | int | float) and not is_sensitive:
            return value
        return _shown(value, is_sensitive, guard)

    for evr in validation.results:
        spec = by_key.get(evr.expectation_config.meta.get(_INDEX_META_KEY))
        is_sensitive = spec is None or any(c in sensitive for c in spec.columns)
        res = dict(evr.result or {})
        for key, value in list(res.items()):
            if key in _COUNT_KEYS:
                continue
            if key in {"partial_unexpected_index_list", "unexpected_index_list"} and isinstance(value, list):
                res[key] = [{col: (v if col == tsuite.id_column else _shown(v, col in sensitive, guard))
                             for col, v in entry.items()} if isinstance(entry, Mapping) else walk(entry, True)
                            for entry in value]
            elif key == "partial_unexpected_counts" and isinstance(value, list):
                res[key] = [{"value": _shown(e.get("value"), is_sensitive, guard), "count": e.get("count")}
                            if isinstance(e, Mapping) else walk(e, is_sensitive) for e in value]
            else:
                res[key] = walk(value, is_sensitive)
        evr.result = res
        info = evr.exception_info or {}
        if isinstance(info, Mapping) and info.get("raised_exception"):
            evr.exception_info = {"raised_exception": True, "exception_traceback": None,
                                  "exception_message": _exception_type(info) or "exception"}


def _result(table: str, spec: ExpectationSpec, success: bool, elements: int, unexpected: int,
            ids: list[str], *, error: str | None = None) -> CheckResult:
    return CheckResult(
        table=table, expectation=spec.type, column=spec.column_label, kwargs_summary=_kwargs_summary(spec.kwargs),
        success=success, element_count=elements, unexpected_count=unexpected, offending_ids=ids,
        notes=spec.notes, error=error,
        texts=check_texts(spec.type, spec.kwargs, spec.meta, table=table, column=spec.column_label),
    )


def _example(value: Any, spec: ExpectationSpec, roots: Mapping[str, str] | None) -> Any:
    """An unexpected value as a person reads it; a pair as ``column: value`` each, a path relative to its store."""
    if isinstance(value, list | tuple) and len(value) == len(spec.columns) > 1:
        return ", ".join(f"{col}: {readable(v) or '(tomt)'}" for col, v in zip(spec.columns, value, strict=True))
    if roots and isinstance(value, str):
        for root in roots.values():
            if value.startswith(root + os.sep):
                return value[len(root) + 1:]
    return readable(value)


def _path_roots(df, spec: ExpectationSpec) -> dict[str, str]:
    """Column -> the directory its absolute paths share (where the delivery's files were put), for
    showing a file as it is named in the delivery rather than where this machine keeps it."""
    if spec.type != "expect_column_values_to_be_existing_files":
        return {}
    roots = {}
    for col in spec.columns:
        dirs = {os.path.dirname(v) for v in df[col].dropna().unique() if isinstance(v, str) and os.path.isabs(v)}
        if dirs:
            try:
                roots[col] = os.path.commonpath(sorted(dirs))
            except ValueError:  # paths on different drives
                continue
    return roots


def _name_records(checks: list[CheckResult], naming: Mapping[str, Any], references: Mapping[str, str],
                  id_columns: Mapping[str, str], withheld: set[str]) -> None:
    """Name each check's offending records as people know them (:attr:`CheckResult.records`).

    A table with a reference column names a record by it (the diarienummer); a table whose
    rows point at such a table (a document's case_id) names a record by its case's
    reference and its own id; otherwise the id stays. A reference that is a sensitive value
    of the batch is never used.
    """
    def text(v: Any) -> str | None:
        t = readable(v)
        return None if t is None or t in withheld else t

    ref_of: dict[str, dict[str, str]] = {}
    for tname, frame in naming.items():
        ref = references.get(tname)
        if ref and ref in frame.columns:
            ref_of[tname] = {_id_text(i): r for i, r in zip(frame[id_columns[tname]], frame[ref].map(text),
                                                             strict=True) if r}
    for c in checks:
        frame = naming.get(c.table)
        if not c.offending_ids or frame is None:
            continue
        id_col = id_columns.get(c.table, "")
        own = ref_of.get(c.table)
        parent = next((t for t, col in id_columns.items() if t != c.table and t in ref_of
                       and col in frame.columns and col != id_col), None)
        parent_of = ({_id_text(i): _id_text(p) for i, p in zip(frame[id_col], frame[id_columns[parent]], strict=True)}
                     if parent and own is None else {})
        names = []
        for i in c.offending_ids:
            if i == _WITHHELD:
                names.append(i)
            elif own is not None and i in own:
                names.append(own[i])
            elif parent and parent_of.get(i) in ref_of[parent]:
                names.append(f"{ref_of[parent][parent_of[i]]} ({id_col} {i})")
            else:
                names.append(f"{id_col} {i}" if id_col else i)
        c.records = names


def _exception_type(info: object) -> str | None:
    """The exception class name from GX's exception_info, or None when nothing was raised.

    GX 1.x reports either ``{"raised_exception": bool, ...}`` or, when a metric failed,
    ``{metric_id: {"raised_exception": ..., "exception_traceback": ...}, ...}``.
    """
    if not isinstance(info, Mapping):
        return None
    entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, Mapping)]
    for entry in entries:
        if entry.get("raised_exception"):
            # Unindented "Name: message" lines of the traceback are the exceptions, the root
            # cause first (GX wraps it in MetricResolutionError, which tells a reader nothing).
            for line in (entry.get("exception_traceback") or "").splitlines():
                m = _EXC_LINE.match(line)
                if m:
                    return m.group(1).rsplit(".", 1)[-1]
            return "exception"
    return None


def _id_text(value: object) -> str:
    if value is None:
        return "(null)"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "item"):  # numpy scalar
        return _id_text(value.item())
    return str(value)


def _int(value: object, default: int) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _kwargs_summary(kwargs: Mapping[str, Any], limit: int = 240) -> str:
    """``column=title, regex=\\S`` — the suite's own settings, never data."""
    parts = []
    for k, v in kwargs.items():
        if k in {"column", "column_A", "column_B", "column_list"}:
            continue  # already in CheckResult.column
        if k == "row_condition" and isinstance(v, Mapping):
            v = _condition_text(v)
        elif isinstance(v, (list, tuple)):
            v = "[" + ", ".join(map(str, v)) + "]"
        parts.append(f"{k}={v}")
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _condition_text(cond: Mapping[str, Any]) -> str:
    kind = cond.get("type")
    if kind in {"and", "or"}:
        return f" {kind} ".join(_condition_text(c) for c in cond.get("conditions", []) if isinstance(c, Mapping))
    col = cond.get("column", {})
    name = col.get("name") if isinstance(col, Mapping) else col
    if kind == "nullity":
        return f"{name} is {'null' if cond.get('is_null') else 'not null'}"
    if kind == "comparison":
        return f"{name} {cond.get('operator')} {cond.get('parameter')}"
    return str(cond.get("pass_through_filter", cond))


def _guard(values: set[str]) -> list[str]:
    """The sensitive values worth looking for inside other text, longest first (short ones match anywhere)."""
    return sorted((v for v in values if len(v) >= 6), key=len, reverse=True)


def _shown(value: Any, is_sensitive: bool, guard: list[str]) -> str:
    """:func:`shown`, but a value of a column nobody marked sensitive is first cleared of any sensitive
    value of the same table it contains (a document's path holds its sensitive file name) — before
    it is shortened, so that a cut-off copy cannot slip through either."""
    if not is_sensitive and guard and isinstance(value, str):
        for v in guard:
            if v in value:
                value = value.replace(v, shown(v, sensitive=True))
    return shown(value, sensitive=is_sensitive)


def _sensitive_values(df, columns: set[str]) -> set[str]:
    values: set[str] = set()
    for col in columns:
        if col in df.columns:
            values.update(str(v) for v in df[col].dropna().unique())
    return values


def _withhold(checks: list[CheckResult], values: set[str]) -> None:
    """Last guard: drop any reported id that equals a sensitive value of the batch, mask any in an example.

    IDs come from a non-sensitive column, but a source system may use, say, the
    personnummer as a party's id; then the id *is* the secret and must not be written.
    """
    if not values:
        return
    guard = sorted((v for v in values if len(v) >= 6), key=len, reverse=True)
    for c in checks:
        if any(i in values for i in c.offending_ids):
            n = sum(i in values for i in c.offending_ids)
            c.offending_ids = [_WITHHELD if i in values else i for i in c.offending_ids]
            log.warning("%s: %d offending ids equal a sensitive value and were withheld", c.describe(), n)
        # An example from a column nobody marked sensitive can still contain a sensitive value of
        # the same rows: a document's file path holds its (sensitive) file name.
        for example in c.examples or ():
            text = example.get("value")
            if c.sensitive or not isinstance(text, str):
                continue
            masked = text
            for value in guard:
                if value in masked:
                    masked = masked.replace(value, shown(value, sensitive=True))
            if masked != text:
                example["value"] = masked
                log.warning("%s: an example value contained a sensitive value and was masked", c.describe())


# Data Docs pages load Bootstrap, jQuery and Vega from public CDNs. An archive's report must
# open offline and must not tell a third party what is being read: those tags are removed
# and a small stylesheet of our own stands in.
_EXTERNAL_TAG = re.compile(r"<(?:link|script|img)\b[^>]*(?:href|src)=\"https?://[^\"]*\"[^>]*>(?:\s*</script>)?", re.I)
_EXTERNAL_CSS = re.compile(r"url\(\s*['\"]?https?://[^)]*\)", re.I)
_OFFLINE_STYLE = """<style>body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;
margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 6px;vertical-align:top}.text-danger{color:#b00020}
.text-success{color:#1b5e20}.hide,.collapse:not(.show){display:none}</style>"""


_FOOTER = re.compile(r"<footer\b.*?</footer>", re.I | re.S)
_TITLE = re.compile(r"<title>.*?</title>", re.I | re.S)
_ICON = re.compile(r"<link\b[^>]*rel=\"(?:shortcut )?icon\"[^>]*>", re.I)


def _unbranded(page: str, what: str) -> str:
    """A Data Docs page as our technical appendix: no vendor footer (its newsletter link), title or icon."""
    page = _FOOTER.sub("", page)
    page = _ICON.sub("", page)
    return _TITLE.sub(f"<title>Teknisk bilaga / Technical appendix: {html.escape(what)}</title>", page, count=1)


def _write_data_docs(validations: dict[str, Any], result: QualityResult, report_dir: Path,
                     withheld_values: set[str]) -> Path | None:
    """Render GX Data Docs (one static page per table, and an index) from the masked results."""
    if not validations:
        return None
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    target = report_dir / f"{result.system}-{result.batch}-datadocs"
    tmp = report_dir / f".{target.name}.tmp-{os.getpid()}"
    guard = sorted((v for v in withheld_values if len(v) >= 6), key=len, reverse=True)
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        links = []
        for tname, validation in validations.items():
            page = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(validation))
            page = _EXTERNAL_CSS.sub("none", _EXTERNAL_TAG.sub("", page))
            page = page.replace("</head>", _OFFLINE_STYLE + "</head>", 1)
            page = _unbranded(page, f"{result.system} {result.batch}: {tname}")
            for value in guard:  # last guard: GX rendered something we did not mask
                if value in page:
                    log.warning("%s: a sensitive value reached the Data Docs page of %s and was masked",
                                result.batch, tname)
                    page = page.replace(value, shown(value, sensitive=True))
            (tmp / f"{tname}.html").write_text(page, encoding="utf-8")
            ok = all(c.success for c in result.checks if c.table == tname)
            links.append(f'<li><a href="{tname}.html">{tname}</a> — {"ok" if ok else "FAILED / UNDERKÄND"}</li>')
        (tmp / "index.html").write_text(
            f"<!DOCTYPE html><html lang=\"sv\"><head><meta charset=\"utf-8\"><title>Teknisk bilaga {result.system} "
            f"{result.batch}</title>{_OFFLINE_STYLE}</head><body><h1>Teknisk bilaga / Technical appendix</h1>"
            f"<p>{result.system} {result.batch}: känsliga värden maskerade / sensitive values masked.</p>"
            f"<ul>{''.join(links)}</ul></body></html>\n", encoding="utf-8")
        if target.exists():
            old = report_dir / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except OSError as exc:
        raise StorageError(f"cannot write Data Docs {target}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target / "index.html"


def _write_report(result: QualityResult, suite: Suite, report_dir: Path, gx_version: str) -> Path:
    """Write the report atomically: readers never see a half-written file."""
    checks = []
    for c in result.checks:
        checks.append(
            {
                "table": c.table,
                "expectation": c.expectation,
                "column": c.column,
                "kwargs": c.kwargs_summary,
                "success": c.success,
                "element_count": c.element_count,
                "unexpected_count": c.unexpected_count,
                "offending_ids": c.offending_ids,
                "offending_ids_truncated": c.unexpected_count > len(c.offending_ids) and bool(c.offending_ids),
                "notes": c.notes,
                "error": c.error,
                "sensitive": c.sensitive,
                "examples": c.examples or [],
                "title": (c.texts or {}).get("title"),
                "why": (c.texts or {}).get("why"),
                "records": c.records if c.records is not None else list(c.offending_ids),
            }
        )
    doc = {
        "system": result.system,
        "batch": result.batch,
        "success": result.success,
        "suite": {"name": suite.name, "path": str(suite.path)},
        "tables": result.tables,
        "checks_total": len(result.checks),
        "checks_failed": len(result.failed()),
        "checks": checks,
        "great_expectations_version": gx_version,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_seconds": result.duration_seconds,
        "values_included": "examples only; values of sensitive columns and personnummer-like text masked",
        "data_docs": str(result.data_docs) if result.data_docs else None,
    }
    target = report_dir / f"{result.system}-{result.batch}-quality.json"
    tmp_name = None
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=report_dir, prefix=f".{target.name}.", suffix=".tmp", delete=False
        ) as fh:
            tmp_name = fh.name
            json.dump(doc, fh, ensure_ascii=False, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
        tmp_name = None
    except OSError as exc:
        raise StorageError(f"cannot write quality report {target}: {exc}") from exc
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
    return target


__all__ = [
    "ID_COLUMN_PRESENT",
    "MAX_OFFENDING_IDS",
    "TABLE_STAGED",
    "CheckResult",
    "ExpectationSpec",
    "QualityResult",
    "Suite",
    "TableSuite",
    "check_batch",
    "check_texts",
    "load_suite",
    "readable",
    "reference_columns_of",
]
