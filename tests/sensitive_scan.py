"""A scan of everything a run wrote outside its packages for the sensitive values of its sources.

:func:`scan` takes an ARKIV_HOME, an AIRFLOW_HOME (its ``logs`` folder and its metadata
database: ``airflow.db`` in the home, or a SQLAlchemy URL) and the sources of the systems that
ran (:func:`sources_from_env` finds them from a run's environment). It collects the sensitive
values from the sources themselves and returns a :class:`ScanResult`: per location, how many
files or rows were read and how many sensitive values were found in them. A hit names where it
was found and the masked shape of the value (``19XXXXXX-XXXX``, ``(dolt / masked: 14 tecken …)``)
— never the value.

What counts as a sensitive value
  * every value of a column marked ``sensitive`` in the system's YAML, read from the source
    with the system's own reader (its extract queries over all time, or every delivery in its
    inbox);
  * anything shaped like a personnummer or samordningsnummer in any text column of the source
    (a free-text note or a title can quote one), valid or not.

Identity numbers are searched in every written form (12 or 10 digits, with ``-``, ``+``, a space
or nothing before the last four): each personnummer-shaped number in an output is reduced to its
last ten digits and looked up. Other values are searched as text, with a word boundary on each
side, in the text as written and with JSON, HTML and percent escapes undone (Airflow's JSON logs
write ``ö`` as ``\\u00f6``). A value is not searched for — and is counted under ``skipped`` with
its reason — when it cannot single anyone out:

  * ``short``: under 6 characters, no letter (amounts, quantities, booleans, dates), or a
    yes/no word; ``single word``: one word under 12 characters (``Beslut``, ``Yttrande``:
    vocabulary, where a name or a text has two words or more);
  * ``organisationsnummer``: a personnummer-shaped number that is a valid organisationsnummer
    (an organisation's number is public; no personnummer passes that check);
  * ``public``: the same value is also in a column *not* marked sensitive in the same source
    (a party who is also a case officer: the name is shown legitimately as the officer);
  * ``common``: shared by at least :data:`COMMON` rows of its table (vocabulary such as a
    document title ``Beslut``, not something that identifies a person).

Values longer than :data:`PREFIX` characters (free text) are searched by their first
:data:`PREFIX` characters, so a note shown cut off (``…``) is still found.

What is scanned (every file under each root, text or SQLite, whatever its name)
  * ARKIV_HOME: quality reports, Data Docs HTML, quarantine pages, manifests and reports,
    retention plans and disposal certificates, receipts, the catalogue database (every table;
    identity numbers only in the search index tables, which hold names and titles for search
    by design but personnummer only as an HMAC), the access log (identity numbers: its queries
    and targets are references), anything else written there;
  * AIRFLOW_HOME: every task log under ``logs/``, and the metadata database's ``xcom``,
    ``rendered_task_instance_fields`` and ``log`` tables;
  * text the test captured (CLI and ``airflow dags test`` output) and extra files it names.

What is not scanned (records by design)
  * the packages: the mellanarkiv and the slutarkiv, the ``build`` folder where packages are
    assembled, any ``.tar``/``.zip`` (a DIP is a package handed out under the reader's rights);
  * the source data itself: the demo folder, the inboxes and every source path;
  * Parquet files: staged batches and quarantined batches (what the archivist reviews);
  * the personnummer HMAC key file (a key, not a record);
  * binary files (a document held in a document quarantine is a record): counted under
    ``binary files (not read)``; SQLite's ``-wal``/``-shm`` files are read through their database.
"""

from __future__ import annotations

import html
import json
import os
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from transforms.common.identifiers import is_valid_organisationsnummer
from transforms.common.masking import PERSONNUMMER_LIKE, mask
from transforms.config.systems import System

#: values shared by this many rows of a table are vocabulary, not identifying
COMMON = 5
#: shortest value searched as text
MIN_LENGTH = 6
#: a one-word value shorter than this is vocabulary ("Beslut", "Yttrande"), not a name or a text
SINGLE_WORD = 12
#: longest part of a value searched (free text is searched by its beginning)
PREFIX = 60
_KEY = MIN_LENGTH  # index length: every searched value has at least this many characters
_YES_NO = {"true", "false", "ja", "nej", "yes", "no", "none", "null"}
_WORD_START = re.compile(r"(?<!\w)\w")
_JSON_ESCAPE = re.compile(r'\\(u[0-9a-fA-F]{4}|["\\/bfnrt])')
_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
#: catalogue tables that hold names and titles for search by design (identity numbers still forbidden)
INDEX_TABLES = re.compile(r"^access_(entries|documents|fts.*|packages|personnummer)$")
#: the access log: references and masked queries; identity numbers are forbidden in it, names may be
#: what someone searched for
ACCESS_LOG_TABLES = {"access_log"}
#: Airflow metadata tables whose text is scanned
AIRFLOW_TABLES = ("xcom", "rendered_task_instance_fields", "log")
#: folders under ARKIV_HOME that hold packages or sources
EXCLUDED_DIRS = ("mellanarkiv", "slutarkiv", "build", "staging", "demo", "inbox")
EXCLUDED_SUFFIXES = {".parquet", ".tar", ".zip", ".key"}
#: SQLite databases by name, and the files SQLite keeps beside one
SQLITE_SUFFIXES = {".sqlite", ".sqlite3", ".db"}
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
#: a file larger than this is read in its first part only (and reported)
MAX_FILE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Source:
    """Where one system's source data is: a database URL or an inbox of deliveries."""

    system: System
    url: str | None = None
    inbox: Path | None = None
    paths: tuple[Path, ...] = ()  # folders that belong to the source (never scanned)


@dataclass(frozen=True)
class Hit:
    location: str
    where: str
    kind: str
    shape: str

    def __str__(self) -> str:
        return f"{self.location}: {self.where}: {self.kind} {self.shape}"


@dataclass
class Values:
    """The sensitive values of some sources, ready to search for."""

    numbers: dict[str, str] = field(default_factory=dict)  # last ten digits -> kind ("lex.parties.personnummer")
    texts: dict[str, str] = field(default_factory=dict)  # value (or its prefix) -> kind
    skipped: Counter = field(default_factory=Counter)  # reason -> values not searched
    index: dict[str, list[str]] = field(default_factory=dict)

    def build(self) -> Values:
        idx: dict[str, list[str]] = defaultdict(list)
        for v in self.texts:
            idx[v[:_KEY]].append(v)
        self.index = dict(idx)
        return self

    def counts(self) -> dict:
        return {"identity_numbers": len(self.numbers), "text_values": len(self.texts),
                "skipped": dict(sorted(self.skipped.items()))}


@dataclass
class ScanResult:
    """Per location: files or rows read and hits; the hits themselves (masked)."""

    locations: dict[str, dict[str, int]] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    values: dict = field(default_factory=dict)

    def count(self, location: str, unit: str, n: int = 1) -> None:
        loc = self.locations.setdefault(location, {"scanned": 0, "unit": unit, "hits": 0})
        loc["scanned"] += n

    def hit(self, h: Hit) -> None:
        self.locations.setdefault(h.location, {"scanned": 0, "unit": "", "hits": 0})["hits"] += 1
        self.hits.append(h)

    @property
    def scanned(self) -> int:
        return sum(v["scanned"] for v in self.locations.values())

    def summary(self) -> dict:
        return {"locations": self.locations, "hits": len(self.hits), "values": self.values,
                "found": [str(h) for h in self.hits[:50]]}

    def report(self) -> str:
        """What was found, for an assertion message: locations and masked shapes only."""
        lines = [f"{len(self.hits)} sensitive value(s) outside the packages:"]
        lines += [f"  {h}" for h in self.hits[:40]]
        if len(self.hits) > 40:
            lines.append(f"  … and {len(self.hits) - 40} more")
        return "\n".join(lines)


# --- the sources -----------------------------------------------------------------------------------------

def sources_from_env(systems: Mapping[str, System], env: Mapping[str, str],
                     only: Iterable[str] | None = None) -> list[Source]:
    """The sources a run's environment points at (``ARKIV_CONN_*``/``AIRFLOW_CONN_*``, inbox variables)."""
    out = []
    wanted = set(only) if only is not None else None
    for name, system in systems.items():
        if wanted is not None and name not in wanted:
            continue
        if system.extract_kind == "database":
            url = _connection_url(env, system.connection or "")
            if url is None or (url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists()):
                continue
            paths = [Path(url.removeprefix("sqlite:///")).parent] if url.startswith("sqlite:///") else []
            paths += [Path(env[t.files_root_env]) for t in system.tables.values()
                      if t.files_root_env and env.get(t.files_root_env)]
            out.append(Source(system, url=url, paths=tuple(paths)))
        elif system.inbox_env and env.get(system.inbox_env) and Path(env[system.inbox_env]).is_dir():
            inbox = Path(env[system.inbox_env])
            out.append(Source(system, inbox=inbox if system.extract_kind == "file_export" else None, paths=(inbox,)))
    return out


def _connection_url(env: Mapping[str, str], conn: str) -> str | None:
    url = env.get(f"ARKIV_CONN_{conn.upper()}")
    if url:
        return url
    raw = env.get(f"AIRFLOW_CONN_{conn.upper()}")
    if not raw:
        return None
    if raw.lstrip().startswith("{"):
        spec = json.loads(raw)
        if spec.get("conn_type") == "sqlite":
            return f"sqlite:///{spec['host']}"
        return None
    return raw if raw.startswith("sqlite:") else None


def _rows(source: Source):
    """(table, rows) of a source through the system's own readers, over all time."""
    import datetime as dt

    from transforms.intake.database import DatabaseSource
    from transforms.intake.file_export import FileExportSource

    system = source.system
    if source.url:
        reader = DatabaseSource(system, source.url, dt.datetime(1800, 1, 1), dt.datetime(2300, 1, 1), env={})
        try:
            for table in system.tables.values():
                yield table, [dict(m) for chunk in reader.chunks(table) for m in chunk]
        finally:
            reader.close()
    elif source.inbox:
        for folder in sorted(p for p in source.inbox.iterdir() if p.is_dir()):
            reader = FileExportSource(system, folder)
            for table in system.tables.values():
                if table.file and (folder / table.file).is_file():
                    yield table, [dict(m) for chunk in reader.chunks(table) for m in chunk]


def collect(sources: Iterable[Source]) -> Values:
    """The sensitive values of ``sources`` (see the module docstring for what is searched and what not)."""
    values = Values()
    candidates: dict[str, str] = {}
    public: set[str] = set()
    for source in sources:
        name = source.system.name
        sensitive = source.system.sensitive
        for table, rows in _rows(source):
            marked = set(sensitive.get(table.name, ()))
            per_value: Counter = Counter()
            for row in rows:
                for col, raw in row.items():
                    if raw is None or not isinstance(raw, str | int | float | bool) and not hasattr(raw, "isoformat"):
                        continue
                    text = str(raw).strip()
                    if isinstance(raw, str):
                        for m in PERSONNUMMER_LIKE.finditer(raw):
                            if is_valid_organisationsnummer(m.group(0)):
                                values.skipped["organisationsnummer"] += 1  # an organisation's: public
                                continue
                            values.numbers.setdefault(_ten(m.group(0)), f"{name}.{table.name}.{col}")
                    if col in marked:
                        per_value[(col, text)] += 1
                    elif text:
                        public.add(text)
            for (col, text), n in per_value.items():
                kind = f"{name}.{table.name}.{col}"
                if PERSONNUMMER_LIKE.fullmatch(text):
                    continue  # an identity number: searched as one
                reason = _not_distinctive(text)
                if reason:
                    values.skipped[reason] += 1
                elif n >= COMMON:
                    values.skipped["common"] += 1
                else:
                    candidates.setdefault(text, kind)
    for text, kind in candidates.items():
        if text in public:
            values.skipped["public"] += 1
            continue
        key = _searchable(text)
        if len(key) < MIN_LENGTH:
            values.skipped["short"] += 1
            continue
        values.texts.setdefault(key, kind)
    return values.build()


def _ten(number: str) -> str:
    return re.sub(r"\D", "", number)[-10:]


def _not_distinctive(text: str) -> str | None:
    if len(text) < MIN_LENGTH or text.lower() in _YES_NO or not any(c.isalpha() for c in text):
        return "short"
    if len(text.split()) < 2 and len(text) < SINGLE_WORD:
        return "single word"
    return None


def _searchable(text: str) -> str:
    """The part of a value searched for: from its first to its last word character, at most PREFIX long."""
    m = re.search(r"\w.*\w", text, flags=re.S)
    if not m:
        return ""
    part = m.group(0)[:PREFIX]
    return re.sub(r"\W+$", "", part)


# --- searching text ----------------------------------------------------------------------------------------

def _unescape_json(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        s = m.group(1)
        return chr(int(s[1:], 16)) if s[0] == "u" else _SIMPLE[s]

    out = _JSON_ESCAPE.sub(one, text)
    return out.encode("utf-16", "surrogatepass").decode("utf-16", "replace") if "\\u" in text else out


def _variants(text: str) -> list[str]:
    out = [text]
    if "\\" in text:
        out.append(_unescape_json(text))
    if "&" in text:
        out += [html.unescape(t) for t in list(out)]
    if "%" in text:
        out.append(unquote(text))
    return out


def find(values: Values, text: str, *, numbers_only: bool = False) -> list[tuple[str, str]]:
    """(kind, masked shape) for every sensitive value in ``text`` (each value once)."""
    found: dict[str, tuple[str, str]] = {}
    for variant in _variants(text):
        if values.numbers:
            for m in PERSONNUMMER_LIKE.finditer(variant):
                ten = _ten(m.group(0))
                if ten in values.numbers:
                    found.setdefault("#" + ten, (values.numbers[ten], mask(m.group(0))))
        if numbers_only or not values.index:
            continue
        index = values.index
        n = len(variant)
        for m in _WORD_START.finditer(variant):
            pos = m.start()
            candidates = index.get(variant[pos:pos + _KEY])
            if not candidates:
                continue
            for v in candidates:
                end = pos + len(v)
                if variant.startswith(v, pos) and (end >= n or not variant[end].isalnum()) and v not in found:
                    found[v] = (values.texts[v], mask(v))
    return list(found.values())


# --- the scan ----------------------------------------------------------------------------------------------

def scan(arkiv_home: Path, airflow_home: Path | None, sources: Iterable[Source], *,
         airflow_db_url: str | None = None, texts: Mapping[str, str] | None = None,
         extra_files: Iterable[Path] = (), exclude: Iterable[Path] = (), values: Values | None = None) -> ScanResult:
    """Scan everything the run wrote outside its packages (see the module docstring); returns counts and hits."""
    sources = list(sources)
    values = values or collect(sources)
    result = ScanResult(values=values.counts())
    arkiv_home = Path(arkiv_home)
    skip = {(arkiv_home / d).resolve() for d in EXCLUDED_DIRS}
    skip |= {Path(p).resolve() for s in sources for p in s.paths}
    skip |= {Path(p).resolve() for p in exclude}
    skip |= _configured_archives()
    if arkiv_home.is_dir():
        _scan_tree(result, values, arkiv_home, arkiv_home, skip, label=None)
    if airflow_home is not None:
        airflow_home = Path(airflow_home)
        if (airflow_home / "logs").is_dir():
            _scan_tree(result, values, airflow_home / "logs", airflow_home, skip, label="airflow task logs")
        url = airflow_db_url or (f"sqlite:///{airflow_home / 'airflow.db'}"
                                 if (airflow_home / "airflow.db").exists() else None)
        if url:
            _scan_airflow_db(result, values, url)
    for path in extra_files:
        path = Path(path)
        if path.is_file():
            _scan_file(result, values, path, "captured output", str(path.name))
    for where, text in (texts or {}).items():
        result.count("captured output", "texts")
        for kind, shape in find(values, text):
            result.hit(Hit("captured output", where, kind, shape))
    return result


def _configured_archives() -> set[Path]:
    out = set()
    for var in ("ARKIV_MELLANARKIV", "ARKIV_SLUTARKIV", "ARKIV_STAGING", "ARKIV_BUILD", "ARKIV_DEMO"):
        v = os.environ.get(var)
        if v and "://" not in v:
            out.add(Path(v).resolve())
    return out


def _location(rel: Path, label: str | None) -> str:
    if label:
        return label
    top = rel.parts[0] if len(rel.parts) > 1 else "(top level)"
    if top == "reports" and len(rel.parts) > 2 and rel.parts[1] == "retention":
        return "retention plans and certificates"
    if top == "reports" and any(p.endswith("-datadocs") for p in rel.parts):
        return "Data Docs"
    return {"reports": "quality reports", "quarantine": "quarantine pages and reports", "receipts": "receipts",
            "access": "access (keys, exports)", "catalogue": "catalogue"}.get(top, top)


def _scan_tree(result: ScanResult, values: Values, root: Path, base: Path, skip: set[Path], label: str | None) -> None:
    if label:
        result.count(label, "files", 0)  # listed even when empty (`airflow dags test` logs to its stdout)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if (here / d).resolve() not in skip)
        for name in sorted(filenames):
            path = here / name
            if path.suffix.lower() in EXCLUDED_SUFFIXES or path.is_symlink():
                continue
            rel = path.relative_to(base)
            _scan_file(result, values, path, _location(rel, label), rel.as_posix())


def _scan_file(result: ScanResult, values: Values, path: Path, location: str, where: str) -> None:
    # A database is recognised by its name and read only through SQLite. Opening and closing it (or
    # its -wal/-shm) with plain file calls would drop the POSIX locks that SQLite connections of this
    # same process hold on it (a test's catalogue), and the next writer could then corrupt it.
    if path.name.endswith(SQLITE_SIDE_FILES):
        result.count("SQLite journals (read through their database)", "files")
        return
    if path.suffix.lower() in SQLITE_SUFFIXES:
        _scan_sqlite(result, values, path, where)
        return
    with open(path, "rb") as f:
        data = f.read(MAX_FILE)
    if data.startswith(b"SQLite format 3\x00"):
        _scan_sqlite(result, values, path, where)
        return
    if b"\x00" in data[:8192]:
        result.count("binary files (not read)", "files")
        return
    result.count(location, "files")
    for kind, shape in find(values, data.decode("utf-8", errors="replace")):
        result.hit(Hit(location, where, kind, shape))


def _scan_sqlite(result: ScanResult, values: Values, path: Path, where: str) -> None:
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            if table.startswith("sqlite_"):
                continue
            if INDEX_TABLES.match(table):
                location, numbers_only = "search index (identity numbers)", True
            elif table in ACCESS_LOG_TABLES:
                location, numbers_only = "access log (identity numbers)", True
            else:
                location, numbers_only = f"database {path.name}", False
            _scan_rows(result, values, db.execute(f'SELECT * FROM "{table}"'), location, f"{where}:{table}",
                       numbers_only)
    finally:
        db.close()


def _scan_rows(result: ScanResult, values: Values, rows, location: str, where: str, numbers_only: bool) -> None:
    n = 0
    for row in rows:
        n += 1
        text = "\x1f".join(_text(v) for v in row if v is not None)
        if not text:
            continue
        for kind, shape in find(values, text, numbers_only=numbers_only):
            result.hit(Hit(location, f"{where} row {n}", kind, shape))
    result.count(location, "rows", n)


def _text(v: object) -> str:
    if isinstance(v, bytes | memoryview):
        return bytes(v).decode("utf-8", errors="replace")
    return str(v)


def _scan_airflow_db(result: ScanResult, values: Values, url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            present = set(sa.inspect(c).get_table_names())
            for table in AIRFLOW_TABLES:
                if table in present:
                    label = "XComs" if table == "xcom" else f"Airflow database ({table})"
                    _scan_rows(result, values, c.execute(sa.text(f'SELECT * FROM "{table}"')), label,
                               f"airflow:{table}", False)
    finally:
        engine.dispose()


def write_counts(result: ScanResult, path: Path, **extra) -> None:
    """The counts (no values) as JSON at ``path``, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**extra, **result.summary()}, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


__all__ = ["Source", "ScanResult", "Values", "collect", "find", "scan", "sources_from_env", "write_counts"]
