"""Source-system configuration: one YAML file per system in ``dags/systems/``.

The YAML is the submission agreement in code. :func:`load_system` reads and checks it and
returns a :class:`System`; every error names the file and the key so that a system owner
can fix it without reading Python.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from transforms import SOFTWARE_ID
from transforms.common.errors import ConfigError
from transforms.common.identifiers import is_valid_organisationsnummer
from transforms.common.masking import safe_name

COLUMN_TYPES = {"int64", "float64", "string", "bool", "date", "timestamp", "decimal"}
DELIVERY_KINDS = {"database", "file_export", "prepared"}
CONTENT_KINDS = {"erms", "tabular", "prepared"}
FILE_FORMATS = {"csv", "jsonl", "xml"}
ENCODINGS = {"utf-8", "utf-8-sig", "windows-1252", "iso-8859-1"}
RETENTION_ACTIONS = {"keep", "dispose"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_CLASS_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DURATION = re.compile(r"^P(?:\d+Y)?(?:\d+M)?(?:\d+D)?$")
#: a source connection's id: an Airflow connection id that is also a part of an environment variable's name
CONNECTION_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: an environment variable's name, as a YAML may give it (root_env, inbox_env)
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


@dataclass(frozen=True)
class Agent:
    name: str
    organisationsnummer: str


@dataclass(frozen=True)
class Agreement:
    """Who delivers what under which agreement (the SIP agents and identifiers)."""

    archive_creator: Agent
    submitter: Agent
    submission_agreement: str
    reference_code: str
    series: str | None = None  # series code in the archival description, e.g. "F 2"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str


@dataclass(frozen=True)
class Table:
    name: str
    key: str
    query: str
    columns: tuple[Column, ...]
    parent_table: str | None = None
    parent_column: str | None = None
    files_root_env: str | None = None
    files_path_column: str | None = None
    file: str | None = None  # file_export: the table's file in a delivery

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class Retention:
    action: str
    counted_from: str
    period: str
    basis: str


@dataclass(frozen=True)
class RecordClass:
    """A group of records with one retention rule; ``match`` decides membership per root row."""

    name: str
    title: str
    column: str | None
    prefixes: tuple[str, ...]
    retention: Retention
    values: tuple[str, ...] = ()
    default: bool = False

    def matches(self, row: object) -> bool:
        if self.default:
            return True
        value = row.get(self.column) if hasattr(row, "get") else row
        if value is None:
            return False
        if self.values:
            return str(value) in self.values
        return str(value).startswith(self.prefixes)


@dataclass(frozen=True)
class FileExport:
    """How a file-export system's deliveries are read (encoding and dialect are explicit)."""

    inbox_env: str
    format: str
    encoding: str
    delimiter: str = ","
    quotechar: str = '"'
    decimal: str = "."
    date_format: str | None = None
    timestamp_format: str | None = None


@dataclass(frozen=True)
class System:
    """A source system as its YAML describes it."""

    name: str
    title: str
    description: str
    owner: str
    schedule: str
    timezone: str
    start_date: dt.date
    catchup: bool
    tags: tuple[str, ...]
    retries: int
    agreement: Agreement
    extract_kind: str
    connection: str | None
    batch_rows: int
    tables: dict[str, Table]
    record_classes: tuple[RecordClass, ...]
    content: dict[str, Any]
    quality_suite: str | None
    sensitive: dict[str, tuple[str, ...]]
    max_records: int
    max_bytes: int
    source: Path = field(compare=False, default=Path("."))
    file_export: FileExport | None = None
    inbox_env: str | None = None
    #: overrides of the default format policy (same keys as transforms/policies/format-policy.yaml)
    format_policy: dict[str, Any] | None = field(compare=False, default=None)

    @property
    def formats(self):
        """The format policy for this system: the default with this system's overrides."""
        from transforms.formats.identification import policy_for

        return policy_for(self.format_policy)

    @property
    def content_kind(self) -> str:
        return self.content.get("kind", "erms")

    def record_class_of(self, row: object) -> str | None:
        """The first record class whose rule matches a root row (a mapping); None when none does."""
        for rc in self.record_classes:
            if rc.matches(row):
                return rc.name
        return None

    def record_class(self, name: str) -> RecordClass:
        for rc in self.record_classes:
            if rc.name == name:
                return rc
        raise KeyError(name)

    @property
    def root_table(self) -> Table:
        """The table whose rows are the package's units (cases); children hang off it."""
        return next(t for t in self.tables.values() if t.parent_table is None)

    def table_order(self) -> list[Table]:
        """Tables with every parent before its children (extraction needs the parents' classes)."""
        done: list[Table] = []
        pending = list(self.tables.values())
        while pending:
            for t in pending:
                if t.parent_table is None or any(d.name == t.parent_table for d in done):
                    done.append(t)
                    pending.remove(t)
                    break
        return done


# --- A system's queries read, and only read -----------------------------------------------------
#
# The database's read-only transaction (transforms/intake/database.py) is what keeps a source unchanged;
# this check is the first line: a YAML that would write fails when it is loaded, with a message
# a system owner can act on. It lexes the query three times, as PostgreSQL, MariaDB/MySQL and
# SQLite would (they disagree on backslashes in strings, nested and '#' comments, dollar quotes
# and [brackets]), and a query must pass under every reading: text that one server would run as a
# second statement cannot hide inside what another server calls a string or a comment.

#: the parameters every query is given: the run's data interval [start, end)
QUERY_PARAMETERS = frozenset({"start", "end"})
#: the statements a query may be: the read statements of standard SQL
READ_STATEMENTS = frozenset({"SELECT", "WITH", "VALUES", "TABLE"})
#: words that make a statement write or lock, wherever they stand (a data-modifying CTE, SELECT … INTO,
#: FOR UPDATE, LOCK IN SHARE MODE); a qualified name (``t.update``) or a quoted one is not such a word
_WRITING_WORDS = frozenset({
    "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "TRUNCATE", "DROP", "CREATE", "ALTER", "RENAME", "GRANT",
    "REVOKE", "CALL", "COPY", "LOCK", "INTO", "EXECUTE", "PREPARE", "ATTACH", "DETACH", "PRAGMA", "VACUUM",
    "COMMIT", "ROLLBACK", "SAVEPOINT", "HANDLER", "LOAD", "OUTFILE", "DUMPFILE",
})


@dataclass(frozen=True)
class _Dialect:
    backslash_escapes: bool  # MySQL: '\'' is a quote inside a string
    nested_comments: bool  # PostgreSQL: /* /* */ */ is one comment
    hash_comments: bool  # MySQL: '#' starts a comment
    dollar_quotes: bool  # PostgreSQL: $tag$ … $tag$ is a string
    brackets: bool  # SQLite: [name] is a quoted identifier


_DIALECTS = (
    _Dialect(backslash_escapes=False, nested_comments=True, hash_comments=False, dollar_quotes=True, brackets=False),
    _Dialect(backslash_escapes=True, nested_comments=False, hash_comments=True, dollar_quotes=False, brackets=False),
    _Dialect(backslash_escapes=False, nested_comments=False, hash_comments=False, dollar_quotes=False, brackets=True),
)
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$")
_WORD = re.compile(r"[A-Za-z_\u0080-\uffff][\w$\u0080-\uffff]*")


class QueryRefused(ValueError):
    """A query that is not a single read statement; the message is the rule, never the query's text."""


def _lex(sql: str, d: _Dialect) -> list[tuple[str, str]]:
    """The query as (kind, text) tokens: word, punct, literal (strings, quoted names, numbers) or param.

    Whitespace and comments separate tokens and are dropped. Raises QueryRefused for text that
    no server would read the same way (an unterminated string or comment, MySQL's executable
    comments).
    """
    out: list[tuple[str, str]] = []
    i, n = 0, len(sql)

    def closing(quote: str, start: int, backslash: bool) -> int:
        j = start
        while j < n:
            c = sql[j]
            if backslash and c == "\\":
                j += 2
                continue
            if c == quote:
                if j + 1 < n and sql[j + 1] == quote:  # a doubled quote stands for itself
                    j += 2
                    continue
                return j + 1
            j += 1
        raise QueryRefused("an unterminated string or quoted name")

    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif (c == "#" and d.hash_comments) or (
                sql.startswith("--", i) and (not d.hash_comments or i + 2 >= n or sql[i + 2] in " \t\r\n\f\v")):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            if sql.startswith(("/*!", "/*M!"), i):
                raise QueryRefused("a MySQL executable comment (/*! … */)")
            depth, j = 1, i + 2
            while depth:
                if j >= n:
                    raise QueryRefused("an unterminated comment")
                if sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                elif d.nested_comments and sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                else:
                    j += 1
            i = j
        elif c == "'":
            i = closing("'", i + 1, d.backslash_escapes)
            out.append(("literal", "'"))
        elif c in "eE" and sql.startswith("'", i + 1) and not d.brackets:
            i = closing("'", i + 2, True)  # PostgreSQL's E'…' reads backslash escapes
            out.append(("literal", "'"))
        elif c == '"':
            i = closing('"', i + 1, d.backslash_escapes)  # MySQL: a string; elsewhere a quoted name
            out.append(("literal", '"'))
        elif c == "`":
            i = closing("`", i + 1, False)
            out.append(("literal", "`"))
        elif c == "[" and d.brackets:
            end = sql.find("]", i + 1)
            if end < 0:
                raise QueryRefused("an unterminated quoted name")
            i = end + 1
            out.append(("literal", "["))
        elif c == "$" and d.dollar_quotes and (m := _DOLLAR_TAG.match(sql, i)):
            end = sql.find(m.group(), m.end())
            if end < 0:
                raise QueryRefused("an unterminated dollar-quoted string")
            i = end + len(m.group())
            out.append(("literal", "$"))
        elif c == ":" and i + 1 < n and sql[i + 1] != ":" and (m := _WORD.match(sql, i + 1)) \
                and not (i and sql[i - 1] == ":"):
            out.append(("param", m.group()))
            i = m.end()
        elif m := _WORD.match(sql, i):
            out.append(("word", m.group().upper()))
            i = m.end()
        elif c.isdigit():
            j = i
            while j < n and (sql[j].isalnum() or sql[j] in "._"):
                j += 1
            out.append(("literal", sql[i:j]))
            i = j
        else:
            out.append(("punct", c))
            i += 1
    return out


def check_read_query(sql: str) -> None:
    """Raise QueryRefused unless ``sql`` is one read statement (SELECT, WITH … SELECT, VALUES, TABLE).

    The rule it breaks is the message, naming at most a keyword of the query, never its text.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise QueryRefused("the query is empty")
    if "\x00" in sql:
        raise QueryRefused("the query holds a NUL character")
    for dialect in _DIALECTS:
        tokens = _lex(sql, dialect)
        while tokens and tokens[-1] == ("punct", ";"):  # a closing semicolon ends the one statement
            tokens.pop()
        if ("punct", ";") in tokens:
            raise QueryRefused("it holds more than one statement (a ';' between statements)")
        first = next((t for t in tokens if t != ("punct", "(")), None)
        if first is None:
            raise QueryRefused("the query is empty")
        if first[0] != "word" or first[1] not in READ_STATEMENTS:
            keyword = f" {first[1][:20]}" if first[0] == "word" else ""
            raise QueryRefused(f"it must be a read statement (SELECT, WITH … SELECT, VALUES or TABLE), "
                               f"not{keyword or ' this'}")
        for k, (kind, text) in enumerate(tokens):
            if kind != "word" or (k and tokens[k - 1] == ("punct", ".")):
                continue
            previous = tokens[k - 1][1] if k else ""
            if text in _WRITING_WORDS or (text == "SHARE" and previous in ("FOR", "KEY")):
                raise QueryRefused(f"a read statement holds no {text} (writing, locking or SELECT … INTO)")
            if text == "SET" and previous != "CHARACTER":
                raise QueryRefused("a read statement holds no SET")
        unknown = sorted({text for kind, text in tokens if kind == "param"} - QUERY_PARAMETERS)
        if unknown:
            raise QueryRefused(f"its only parameters are :start and :end, not :{unknown[0][:40]}")


class _Reader:
    """Reads keys from a mapping and turns every problem into a ConfigError with its path."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.path.name}: {where}: {msg}")

    def get(self, data: Any, key: str, where: str, kind: type | tuple[type, ...] = str, default: Any = ...) -> Any:
        if not isinstance(data, dict):
            raise self.fail(where, "expected a mapping")
        if key not in data or data[key] is None:
            if default is ...:
                raise self.fail(f"{where}.{key}" if where else key, "is required")
            return default
        value = data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(f"{where}.{key}" if where else key, f"expected {names}, got {type(value).__name__}")
        return value


def load_system(path: Path | str) -> System:
    """Read and check one system YAML; raises ConfigError naming the file and key."""
    path = Path(path)
    try:
        # The C loader when available: the DAG processor parses every YAML on each cycle.
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: not valid YAML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path.name}: not UTF-8 text") from None
    r = _Reader(path)
    if not isinstance(data, dict):
        raise r.fail("(top)", "expected a mapping")
    name = r.get(data, "system", "")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise r.fail("system", f"{name!r} must be lower-case letters, digits and _")
    if path.stem != name:
        raise r.fail("system", f"{name!r} must match the file name {path.stem!r}")

    ag = r.get(data, "agreement", "", dict)
    agents = {}
    for role in ("archive_creator", "submitter"):
        a = r.get(ag, role, "agreement", dict)
        orgnr = str(r.get(a, "organisationsnummer", f"agreement.{role}", (str, int)))
        if not is_valid_organisationsnummer(orgnr):
            raise r.fail(f"agreement.{role}.organisationsnummer", f"{orgnr!r} is not a valid organisationsnummer")
        agents[role] = Agent(r.get(a, "name", f"agreement.{role}"), orgnr)
    series = r.get(ag, "series", "agreement", (str, type(None)), default=None)
    agreement = Agreement(
        agents["archive_creator"], agents["submitter"],
        str(r.get(ag, "submission_agreement", "agreement")), str(r.get(ag, "reference_code", "agreement")),
        series,
    )

    ex = r.get(data, "extract", "", dict)
    kind = r.get(ex, "kind", "extract")
    if kind not in DELIVERY_KINDS:
        raise r.fail("extract.kind", f"{kind!r} is not one of {sorted(DELIVERY_KINDS)}")
    file_export = _file_export(r, ex) if kind == "file_export" else None
    tables = _tables(r, ex, kind, name) if kind != "prepared" else {}
    if kind == "prepared" and "tables" in ex:
        raise r.fail("extract.tables", "a prepared system delivers packages, not tables")
    roots = [t for t in tables.values() if t.parent_table is None]
    if kind != "prepared":
        if len(roots) != 1:
            raise r.fail("extract.tables", "exactly one table must have no parent (the package unit, e.g. cases)")
        for t in tables.values():
            if t.parent_table and t.parent_table not in tables:
                raise r.fail(f"extract.tables.{t.name}.parent.table", f"{t.parent_table!r} is not a table here")
            if t.parent_column and t.parent_column not in t.column_names:
                raise r.fail(f"extract.tables.{t.name}.parent.column", f"{t.parent_column!r} is not a column here")

    classes = _record_classes(r, data, roots[0] if roots else None)
    content = r.get(data, "content", "", dict)
    ckind = r.get(content, "kind", "content", default="erms")
    if ckind not in CONTENT_KINDS:
        raise r.fail("content.kind", f"{ckind!r} is not one of {sorted(CONTENT_KINDS)}")
    if (ckind == "prepared") != (kind == "prepared"):
        raise r.fail("content.kind", "a prepared delivery keeps its packages (content.kind: prepared), and only it")
    if ckind == "erms":
        for part in ("case", "document"):
            m = r.get(content, part, "content", dict)
            if not isinstance(m.get("table"), str) or m.get("table") not in tables:
                raise r.fail(f"content.{part}.table", f"{m.get('table')!r} is not a table of this system")
    structure = content.get("archive_structure")
    if structure is not None:
        for part, needed in (("creators", ("table", "id", "name", "organisationsnummer")),
                             ("series", ("table", "id", "creator", "code", "title"))):
            m = r.get(structure, part, "content.archive_structure", dict)
            for key in needed:
                r.get(m, key, f"content.archive_structure.{part}")
            if m["table"] not in tables:
                raise r.fail(f"content.archive_structure.{part}.table", f"{m['table']!r} is not a table here")

    sensitive = {}
    for tname, cols in (r.get(data, "sensitive", "", dict, default={}) or {}).items():
        if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
            raise r.fail(f"sensitive.{tname}", "expected a list of column names")
        sensitive[tname] = tuple(cols)
    for tname, cols in sensitive.items():
        if tname not in tables:
            raise r.fail(f"sensitive.{tname}", "is not a table of this system")
        unknown = set(cols) - set(tables[tname].column_names)
        if unknown:
            raise r.fail(f"sensitive.{tname}", f"unknown columns {sorted(unknown)}")
    quality = r.get(data, "quality", "", dict)
    suite = r.get(quality, "suite", "quality", (str, type(None)), default=None)
    if suite is not None:
        _relative_name(r, suite, "quality.suite", folders=False)
    if suite is None and kind != "prepared":
        raise r.fail("quality.suite", "is required (only prepared systems, checked by the validator, have none)")
    pkg = r.get(data, "package", "", dict, default={})
    start = r.get(data, "start_date", "", (dt.date, str))
    if not isinstance(start, dt.date):
        try:
            start = dt.date.fromisoformat(start)
        except ValueError:
            raise r.fail("start_date", "is not a date (YYYY-MM-DD)") from None
    format_policy = r.get(data, "format_policy", "", dict, default=None)
    if format_policy is not None:
        from transforms.formats.identification import policy_for

        try:
            policy_for(format_policy)
        except ConfigError as exc:
            raise r.fail("format_policy", str(exc)) from None
    return System(
        name=name, title=r.get(data, "title", ""), description=r.get(data, "description", "", default=""),
        owner=r.get(data, "owner", "", default=SOFTWARE_ID), schedule=r.get(data, "schedule", ""),
        timezone=r.get(data, "timezone", "", default="Europe/Stockholm"),
        start_date=start,
        catchup=r.get(data, "catchup", "", bool, default=False),
        tags=tuple(r.get(data, "tags", "", list, default=[])), retries=_count(r, data, "retries", "", 2, least=0),
        agreement=agreement, extract_kind=kind,
        connection=_connection_id(r, ex) if kind == "database" else None,
        batch_rows=_count(r, ex, "batch_rows", "extract", 5000), tables=tables,
        record_classes=classes, content=content, quality_suite=suite, sensitive=sensitive,
        max_records=_count(r, pkg, "max_records", "package", 2000),
        max_bytes=_count(r, pkg, "max_bytes", "package", 2_000_000_000), source=path,
        file_export=file_export,
        inbox_env=_env_name(r, ex, "inbox_env", "extract") if kind in ("file_export", "prepared") else None,
        format_policy=format_policy,
    )


def _file_export(r: _Reader, ex: dict) -> FileExport:
    fmt = r.get(ex, "format", "extract")
    if fmt not in FILE_FORMATS:
        raise r.fail("extract.format", f"{fmt!r} is not one of {sorted(FILE_FORMATS)}")
    enc = r.get(ex, "encoding", "extract")
    if enc not in ENCODINGS:
        raise r.fail("extract.encoding", f"{enc!r} is not one of {sorted(ENCODINGS)} (say which one, explicitly)")
    csv_opts = r.get(ex, "csv", "extract", dict, default={}) if fmt == "csv" else {}
    decimal = r.get(csv_opts, "decimal", "extract.csv", default=".")
    if decimal not in {".", ","}:
        raise r.fail("extract.csv.decimal", f"{decimal!r} must be '.' or ','")
    delimiter = r.get(csv_opts, "delimiter", "extract.csv", default=",")
    if len(delimiter) != 1:
        raise r.fail("extract.csv.delimiter", "must be one character")
    return FileExport(
        inbox_env=_env_name(r, ex, "inbox_env", "extract"), format=fmt, encoding=enc, delimiter=delimiter,
        quotechar=r.get(csv_opts, "quotechar", "extract.csv", default='"'), decimal=decimal,
        date_format=r.get(ex, "date_format", "extract", default=None),
        timestamp_format=r.get(ex, "timestamp_format", "extract", default=None),
    )


def _env_name(r: _Reader, data: Any, key: str, where: str) -> str:
    """An environment variable's name from the YAML (the folder it names is configured outside it)."""
    value = r.get(data, key, where)
    if not _ENV_NAME.fullmatch(value):
        raise r.fail(f"{where}.{key}", "must be the name of an environment variable (A-Z, 0-9 and _), not a path")
    return value


def _count(r: _Reader, data: Any, key: str, where: str, default: int, *, least: int = 1) -> int:
    value = r.get(data, key, where, int, default=default)
    if value < least:
        raise r.fail(f"{where}.{key}" if where else key, f"must be at least {least}")
    return value


def _connection_id(r: _Reader, ex: dict) -> str:
    """An Airflow connection id (also read as ``ARKIV_CONN_<ID>``): a name, never a URL or a path."""
    value = r.get(ex, "connection", "extract")
    if not CONNECTION_ID.fullmatch(value):
        raise r.fail("extract.connection", "must be a connection id (letters, digits and _), not a URL or a path")
    return value


def _relative_name(r: _Reader, value: str, where: str, *, folders: bool) -> str:
    """A file name the YAML gives inside a configured root: relative, no '..', no link tricks by text.

    ``folders`` allows sub-folders (``dokument/akter.csv``); otherwise a plain file name.
    """
    parts = value.replace("\\", "/").split("/")
    if (not value or value.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", value) or "\\" in value
            or any(ord(ch) < 0x20 or ch == "\x7f" for ch in value)):
        raise r.fail(where, "must be a relative path inside its folder (no absolute path, drive, backslash "
                     "or control character)")
    if any(part in ("", ".", "..") for part in parts):
        raise r.fail(where, "must stay inside its folder (no '..', '.' or empty path segment)")
    if not folders and len(parts) > 1:
        raise r.fail(where, "must be a plain file name, without a folder")
    return value


def _tables(r: _Reader, ex: dict, kind: str, system: str) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    for tname, t in r.get(ex, "tables", "extract", dict).items():
        where = f"extract.tables.{tname}"
        if not isinstance(tname, str) or not _NAME.fullmatch(tname):
            raise r.fail(f"extract.tables.{safe_name(tname)}",
                         "a table's name must be lower-case letters, digits and _")
        cols = []
        for cname, c in r.get(t, "columns", where, dict).items():
            if not isinstance(cname, str) or not cname or any(ord(ch) < 0x20 or ch == "\x7f" for ch in cname):
                raise r.fail(f"{where}.columns.{safe_name(cname)}", "a column's name must be text without control "
                             "characters")
            ctype = r.get(c, "type", f"{where}.columns.{cname}")
            if ctype not in COLUMN_TYPES:
                raise r.fail(f"{where}.columns.{cname}.type", f"{ctype!r} is not one of {sorted(COLUMN_TYPES)}")
            cols.append(Column(cname, ctype, r.get(c, "description", f"{where}.columns.{cname}", default="")))
        key = r.get(t, "key", where)
        if key not in {c.name for c in cols}:
            raise r.fail(f"{where}.key", f"{key!r} is not one of the table's columns")
        parent = r.get(t, "parent", where, dict, default=None)
        files = r.get(t, "files", where, dict, default=None)
        root_env = _env_name(r, files, "root_env", f"{where}.files") if files and kind == "database" else None
        query = r.get(t, "query", where) if kind == "database" else ""
        if kind == "database":
            try:
                check_read_query(query)
            except QueryRefused as exc:
                raise r.fail(f"{where}.query", f"refused for system {system}: {exc}") from None
        file = r.get(t, "file", where) if kind == "file_export" else None
        if file is not None:
            _relative_name(r, file, f"{where}.file", folders=True)
        tables[tname] = Table(
            name=tname, key=key, query=query, columns=tuple(cols),
            parent_table=r.get(parent, "table", f"{where}.parent") if parent else None,
            parent_column=r.get(parent, "column", f"{where}.parent") if parent else None,
            files_root_env=root_env,
            files_path_column=r.get(files, "path_column", f"{where}.files") if files else None,
            file=file,
        )
    return tables


def _record_classes(r: _Reader, data: dict, root: Table | None) -> tuple[RecordClass, ...]:
    classes = []
    raw = r.get(data, "record_classes", "", list)
    for i, rc in enumerate(raw):
        where = f"record_classes[{i}]"
        rname = r.get(rc, "name", where)
        if not _CLASS_NAME.fullmatch(rname):
            raise r.fail(f"{where}.name", f"{rname!r} must be lower-case letters, digits and -")
        m = r.get(rc, "match", where, dict)
        ret = r.get(rc, "retention", where, dict)
        action = r.get(ret, "action", f"{where}.retention")
        if action not in RETENTION_ACTIONS:
            raise r.fail(f"{where}.retention.action", f"{action!r} is not one of {sorted(RETENTION_ACTIONS)}")
        period = r.get(ret, "period", f"{where}.retention")
        if not _DURATION.match(period) or period == "P":
            raise r.fail(f"{where}.retention.period", f"{period!r} is not an ISO 8601 duration like P2Y or P10Y")
        try:
            from transforms.common.periods import add_period

            add_period(dt.date(2000, 1, 1), period)
        except ValueError:
            raise r.fail(f"{where}.retention.period", f"{period!r} reaches past the year 9999; for records kept for "
                         "ever use action: keep") from None
        retention = Retention(action, r.get(ret, "counted_from", f"{where}.retention"), period,
                              r.get(ret, "basis", f"{where}.retention"))
        title = r.get(rc, "title", where)
        if m.get("default") is True:
            if i != len(raw) - 1:
                raise r.fail(f"{where}.match.default", "a default rule must be the last record class")
            classes.append(RecordClass(rname, title, None, (), retention, default=True))
            continue
        column = r.get(m, "column", f"{where}.match")
        if root is not None and column not in root.column_names:
            raise r.fail(f"{where}.match.column", f"{column!r} is not a column of {root.name}")
        prefixes = tuple(str(p) for p in r.get(m, "prefixes", f"{where}.match", list, default=[]))
        values = tuple(str(v) for v in r.get(m, "values", f"{where}.match", list, default=[]))
        if bool(prefixes) == bool(values):
            raise r.fail(f"{where}.match", "give either prefixes or values (or default: true)")
        classes.append(RecordClass(rname, title, column, prefixes, retention, values=values))
    if not classes:
        raise r.fail("record_classes", "at least one record class is required")
    return tuple(classes)


def load_systems(directory: Path | str) -> dict[str, System]:
    """Every ``*.yaml`` in ``directory``, by system name."""
    return {s.name: s for s in (load_system(p) for p in sorted(Path(directory).glob("*.yaml")))}
