"""Extraction reads its source and never writes it, on PostgreSQL, MariaDB and SQLite for real.

Two lines of defence, each planted against: a YAML whose query would write fails when it is
loaded (naming file, system and query); and a write that gets past that check (hidden in a
function, or with the check switched off as a System built in code would be) is refused by the
database, because every extraction runs in a read-only transaction, the PostgreSQL COPY path
included. Either way the run ends in a ConfigError naming the system and the query, never a
driver traceback, and the source's rows, tables and sequences are what they were.
"""

import datetime as dt
import hashlib
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from transforms.common.errors import ConfigError
from transforms.config.systems import load_system
from transforms.intake import database as extract
from transforms.intake.database import extract_database

Y2025 = (dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1))

SYSTEM_YAML = """
system: kalla
title: Källa
schedule: "0 4 1 * *"
start_date: 2024-01-01
agreement:
  archive_creator: {name: Strängnäs kommun, organisationsnummer: "212000-0357"}
  submitter: {name: Strängnäs kommun, organisationsnummer: "212000-0357"}
  submission_agreement: LA-1
  reference_code: SE/X
extract:
  kind: database
  connection: kalla_db
  batch_rows: 2
  tables:
    cases:
      key: id
      query: SELECT id, title FROM cases ORDER BY id
      columns:
        id: {type: int64}
        title: {type: string}
record_classes:
  - {name: alla, title: Alla, match: {default: true},
     retention: {action: keep, counted_from: id, period: P0D, basis: t}}
content: {kind: tabular}
quality: {suite: kalla.json}
"""

ROWS = [(1, "Bygglov Storgatan 1"), (2, "Anna Andersson 19121212-1212"), (3, "Överklagande")]

#: what a hostile system owner (or a careless one) puts in a YAML: the query of table 'cases'
HOSTILE = {
    "drop-table": "DROP TABLE cases",
    "delete-returning": "DELETE FROM cases RETURNING id, title",
    "update-returning": "UPDATE cases SET title = 'x' RETURNING id, title",
    "two-statements": "SELECT id, title FROM cases ORDER BY id; DROP TABLE cases",
    "data-modifying-cte": "WITH d AS (DELETE FROM cases RETURNING id, title) SELECT id, title FROM d",
    "for-update": "SELECT id, title FROM cases ORDER BY id FOR UPDATE",
}
#: the same writes as the server would see them past the load-time check (per backend: the forms
#: its SQL accepts)
REACHING = {
    "sqlite": ["DELETE FROM cases RETURNING id, title", "UPDATE cases SET title = 'x' RETURNING id, title",
               "INSERT INTO cases VALUES (9, 'x') RETURNING id, title", "DROP TABLE cases",
               "WITH d AS (SELECT 1) DELETE FROM cases RETURNING id, title"],
    "postgresql": ["DELETE FROM cases RETURNING id, title", "SELECT id, title FROM cases ORDER BY id FOR UPDATE",
                   "SELECT nextval('cases_seq') AS id, 'x'::text AS title", "DROP TABLE cases",
                   "WITH d AS (DELETE FROM cases RETURNING id, title) SELECT id, title FROM d",
                   "SELECT id, title FROM cases ORDER BY id; DROP TABLE cases",
                   "SELECT id, title FROM cases; UPDATE cases SET title = 'x'"],
    "mariadb": ["DELETE FROM cases RETURNING id, title", "SELECT id, title FROM cases ORDER BY id FOR UPDATE",
                "SELECT NEXTVAL(cases_seq) AS id, 'x' AS title", "DROP TABLE cases",
                "INSERT INTO cases VALUES (9, 'x') RETURNING id, title",
                "SELECT id, title FROM cases ORDER BY id; DROP TABLE cases", "CREATE TABLE stolen (i int)"],
}


def _system(tmp_path: Path, query: str | None = None):
    doc = yaml.safe_load(SYSTEM_YAML)
    if query is not None:
        doc["extract"]["tables"]["cases"]["query"] = query
    path = tmp_path / "kalla.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def _fingerprint(url: str, backend: str) -> str:
    """The source's state as a digest: every table's rows, and the sequence's position."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            tables = sorted(sa.inspect(c).get_table_names())
            parts = [repr(tables)]
            for t in tables:
                rows = c.exec_driver_sql(f"SELECT * FROM {t} ORDER BY 1").all()
                parts.append(f"{t}:{[tuple(r) for r in rows]!r}")
            if backend == "postgresql":
                parts.append(repr(c.exec_driver_sql("SELECT last_value, is_called FROM cases_seq").one()))
            elif backend == "mariadb":
                parts.append(repr(c.exec_driver_sql("SELECT next_not_cached_value FROM cases_seq").one()))
    finally:
        engine.dispose()
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def source(request, tmp_path):
    """A source database with a table of cases (and, where the server has them, a sequence and a
    function that deletes every case when called)."""
    backend = request.param
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / f'kalla-{uuid.uuid4().hex[:6]}.sqlite'}"
    else:
        url = request.getfixturevalue("pg_url" if backend == "postgresql" else "mariadb_url")
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE cases (id bigint PRIMARY KEY, title varchar(200))")
        c.execute(sa.text("INSERT INTO cases VALUES (:id, :title)"), [{"id": i, "title": t} for i, t in ROWS])
        if backend == "postgresql":
            c.exec_driver_sql("CREATE SEQUENCE cases_seq")
            c.exec_driver_sql("CREATE FUNCTION wipe() RETURNS bigint LANGUAGE sql AS "
                              "'DELETE FROM cases; SELECT 1::bigint'")
        elif backend == "mariadb":
            c.exec_driver_sql("CREATE SEQUENCE cases_seq")
            c.exec_driver_sql("CREATE FUNCTION wipe() RETURNS bigint MODIFIES SQL DATA "
                              "BEGIN DELETE FROM cases; RETURN 1; END")
    engine.dispose()
    return backend, url


def test_a_reading_query_stages_every_row(source, tmp_path):
    backend, url = source
    staged = extract_database(load_system(_system(tmp_path)), url, *Y2025, tmp_path / "out", env={})
    assert staged.tables == {"cases": 3}


@pytest.mark.parametrize("query", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_yaml_that_would_write_fails_at_load_and_the_source_is_unchanged(source, tmp_path, query):
    backend, url = source
    before = _fingerprint(url, backend)
    with pytest.raises(ConfigError) as caught:
        system = load_system(_system(tmp_path, query))
        extract_database(system, url, *Y2025, tmp_path / "out", env={})
    msg = str(caught.value)
    assert msg.startswith("kalla.yaml: extract.tables.cases.query: refused for system kalla: "), msg
    assert "cases ORDER" not in msg and "RETURNING" not in msg  # a keyword at most, never the query
    assert _fingerprint(url, backend) == before


def _bypassing_the_check(monkeypatch, tmp_path, query):
    """The system as code could build it: the query set after loading, the load-time check off."""
    monkeypatch.setattr(extract, "check_read_query", lambda sql: None)
    system = load_system(_system(tmp_path))
    return replace(system, tables={"cases": replace(system.tables["cases"], query=query)})


def test_a_write_that_reaches_the_database_is_refused_by_it(source, tmp_path, monkeypatch):
    backend, url = source
    before = _fingerprint(url, backend)
    for i, query in enumerate(REACHING[backend]):
        system = _bypassing_the_check(monkeypatch, tmp_path, query)
        with pytest.raises(ConfigError) as caught:
            extract_database(system, url, *Y2025, tmp_path / f"out{i}", env={})
        msg = str(caught.value)
        assert msg.startswith("kalla.yaml: extract.tables.cases.query: system kalla: the "), (query, msg)
        assert "refused" in msg or "cannot run the query" in msg, (query, msg)
        assert "RETURNING" not in msg and "Traceback" not in msg
        assert not any((tmp_path / f"out{i}" / "kalla").iterdir())  # nothing staged
        assert _fingerprint(url, backend) == before, query


def test_the_write_refusal_names_the_read_only_transaction(source, tmp_path, monkeypatch):
    backend, url = source
    # a write each server will start on through a streaming cursor (PostgreSQL declares a cursor,
    # which takes no DELETE: a locking read is its write here)
    query = {"sqlite": "DELETE FROM cases RETURNING id, title"}.get(
        backend, "SELECT id, title FROM cases ORDER BY id FOR UPDATE")
    system = _bypassing_the_check(monkeypatch, tmp_path, query)
    with pytest.raises(ConfigError, match=r"tried to write and the source database refused it \(extraction runs "
                                          r"in a read-only transaction"):
        extract_database(system, url, *Y2025, tmp_path / "out", env={})


@pytest.mark.parametrize("source", ["postgresql", "mariadb"], indirect=True)
def test_a_write_hidden_in_a_function_passes_the_check_and_is_refused_by_the_database(source, tmp_path):
    """A validator cannot see into a function; the read-only transaction can."""
    backend, url = source
    before = _fingerprint(url, backend)
    system = load_system(_system(tmp_path, "SELECT wipe() AS id, 'x' AS title"))  # loads: it is a SELECT
    with pytest.raises(ConfigError, match=r"^kalla\.yaml: extract\.tables\.cases\.query: system kalla: the query "
                                          r"tried to write and the source database refused it"):
        extract_database(system, url, *Y2025, tmp_path / "out", env={})
    assert _fingerprint(url, backend) == before


def _copy_spy(monkeypatch) -> list[bool]:
    used: list[bool] = []
    plan = extract._PostgresCopy.plan

    def spy(source, table):
        copy = plan(source, table)
        used.append(copy is not None)
        return copy

    monkeypatch.setattr(extract._PostgresCopy, "plan", staticmethod(spy))
    return used


@pytest.mark.parametrize("source", ["postgresql"], indirect=True)
def test_the_postgresql_copy_path_runs_in_the_read_only_transaction(source, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    _, url = source
    used = _copy_spy(monkeypatch)
    system = load_system(_system(tmp_path, "SELECT id, current_setting('transaction_read_only') AS title "
                                           "FROM cases ORDER BY id"))
    staged = extract_database(system, url, *Y2025, tmp_path / "out", env={})
    assert used == [True]  # read through COPY
    titles = {r["title"] for f in staged.table_files()["cases"] for r in pq.read_table(f).to_pylist()}
    assert titles == {"on"}


@pytest.mark.parametrize("source", ["postgresql"], indirect=True)
def test_a_write_through_the_copy_path_is_refused(source, tmp_path, monkeypatch):
    backend, url = source
    before = _fingerprint(url, backend)
    used = _copy_spy(monkeypatch)
    for i, query in enumerate(["SELECT nextval('cases_seq') AS id, 'x'::text AS title",
                               "SELECT wipe() AS id, 'x'::text AS title"]):
        system = load_system(_system(tmp_path, query))
        with pytest.raises(ConfigError, match="refused it"):
            extract_database(system, url, *Y2025, tmp_path / f"out{i}", env={})
    assert used == [True, True]  # both planned as COPY: the refusal came from the COPY itself
    assert _fingerprint(url, backend) == before


@pytest.mark.parametrize("source", ["mariadb"], indirect=True)
def test_mariadb_reads_in_a_read_only_transaction(source, tmp_path):
    import pyarrow.parquet as pq

    _, url = source
    system = load_system(_system(tmp_path, "SELECT id, CAST(@@session.tx_read_only + 0 AS CHAR) AS title "
                                           "FROM cases"))
    staged = extract_database(system, url, *Y2025, tmp_path / "out", env={})
    titles = {r["title"] for f in staged.table_files()["cases"] for r in pq.read_table(f).to_pylist()}
    assert titles == {"1"}


@pytest.mark.parametrize("source", ["sqlite"], indirect=True)
def test_sqlite_reads_with_query_only_on(source, tmp_path):
    import pyarrow.parquet as pq

    _, url = source
    system = load_system(_system(tmp_path, "SELECT id, (SELECT query_only FROM pragma_query_only) AS title "
                                           "FROM cases"))
    staged = extract_database(system, url, *Y2025, tmp_path / "out", env={})
    titles = {r["title"] for f in staged.table_files()["cases"] for r in pq.read_table(f).to_pylist()}
    assert titles == {"1"}


def test_a_sqlite_source_that_does_not_exist_is_not_created(tmp_path):
    missing = tmp_path / "no-such-source.sqlite"
    with pytest.raises(ConfigError, match=r"^kalla\.yaml: extract\.connection: system kalla: the source database "
                                          r"file does not exist"):
        extract_database(load_system(_system(tmp_path)), f"sqlite:///{missing}", *Y2025, tmp_path / "out", env={})
    assert not missing.exists()


@pytest.mark.parametrize("url", ["postgresql://arkiv:hemligt-lösen@127.0.0.1:5432/x?sslmode=nonsense%",
                                 "nosuchdialect://arkiv:hemligt-lösen@host/db", "not a url hemligt-lösen"])
def test_an_unusable_source_url_is_a_config_error_that_does_not_repeat_it(tmp_path, url):
    try:
        extract_database(load_system(_system(tmp_path)), url, *Y2025, tmp_path / "out", env={})
    except ConfigError as exc:
        assert "hemligt" not in str(exc)
    except sa.exc.OperationalError as exc:  # a URL that parses is tried: the server's own refusal, retried
        assert "hemligt" not in str(exc)
    else:
        pytest.fail("an unusable URL was used")


def test_a_query_with_a_parameter_it_is_not_given_is_a_config_error(source, tmp_path, monkeypatch):
    backend, url = source
    system = _bypassing_the_check(monkeypatch, tmp_path, "SELECT id, title FROM cases WHERE title <> :owner")
    with pytest.raises(ConfigError, match=r"^kalla\.yaml: extract\.tables\.cases\.query: system kalla: the query "
                                          r"cannot be sent \(.*\); its only parameters are :start and :end$"):
        extract_database(system, url, *Y2025, tmp_path / "out", env={})


@pytest.mark.parametrize("source", ["postgresql"], indirect=True)
@pytest.mark.parametrize("path", ["copy", "cursor"])
def test_a_value_the_driver_cannot_convert_is_named_by_table_never_quoted(source, tmp_path, monkeypatch, path):
    """psycopg2 cannot make a Python date of a BC date; its message quotes the year. The run's
    error names system, table and rule; the planted personnummer and year appear nowhere."""
    from transforms.common.errors import ContentError

    _, url = source
    doc = yaml.safe_load(SYSTEM_YAML)
    cases = doc["extract"]["tables"]["cases"]
    cases["columns"]["opened"] = {"type": "date"}
    cases["query"] = "SELECT id, title, '0044-03-15 BC'::date AS opened FROM cases ORDER BY id"
    (tmp_path / "kalla.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    used = _copy_spy(monkeypatch)
    if path == "cursor":
        monkeypatch.setattr(extract._PostgresCopy, "plan", staticmethod(lambda source, table: None))
    with pytest.raises(ContentError) as caught:
        extract_database(load_system(tmp_path / "kalla.yaml"), url, *Y2025, tmp_path / "out", env={})
    msg = str(caught.value)
    assert msg.startswith("kalla.yaml: extract.tables.cases.query: system kalla: a value the source returned "), msg
    assert "1212" not in msg and "-43" not in msg and "0044" not in msg
    assert used == ([True] if path == "copy" else [])


@pytest.mark.parametrize("source", ["postgresql"], indirect=True)
def test_a_query_that_turns_the_transaction_read_write_is_refused(source, tmp_path):
    """set_config passes the check (it is a function call); the server refuses to leave read-only."""
    backend, url = source
    before = _fingerprint(url, backend)
    system = load_system(_system(tmp_path, "SELECT id, set_config('transaction_read_only', 'off', false) AS title "
                                           "FROM cases"))
    with pytest.raises(ConfigError, match="refused it"):
        extract_database(system, url, *Y2025, tmp_path / "out", env={})
    assert _fingerprint(url, backend) == before


@pytest.mark.parametrize("source", ["postgresql"], indirect=True)
def test_the_extraction_transaction_is_never_committed(source, tmp_path):
    """What the server lets a read-only transaction do (create a large object) is undone at the end."""
    _, url = source
    system = load_system(_system(tmp_path, "SELECT lo_create(0)::bigint AS id, 'x'::text AS title"))
    extract_database(system, url, *Y2025, tmp_path / "out", env={})
    engine = sa.create_engine(url)
    with engine.connect() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM pg_largeobject_metadata").scalar() == 0
    engine.dispose()


@pytest.mark.parametrize("source", ["postgresql", "mariadb"], indirect=True)
@pytest.mark.parametrize("query, kind", [
    ("WITH d AS (DELETE FROM cases RETURNING id, title) SELECT id, title FROM d", "at load"),
    ("SELECT wipe() AS id, 'x' AS title", "by the database"),
])
def test_arkiv_run_refuses_a_writing_query_cleanly(source, tmp_path, query, kind):
    """The real CLI, as an operator runs it: exit 2, a one-line reason naming system and query, no
    traceback, and the source as it was."""
    import os
    import subprocess
    import sys

    backend, url = source
    before = _fingerprint(url, backend)
    systems = tmp_path / "systems"
    systems.mkdir()
    _system(systems, query)
    env = {**os.environ, "ARKIV_HOME": str(tmp_path / "home"), "ARKIV_SYSTEMS_DIR": str(systems),
           "ARKIV_CONN_KALLA_DB": url}
    run = subprocess.run([str(Path(sys.executable).parent / "arkiv"), "run", "kalla", "--start", "2025-01-01",
                          "--end", "2026-01-01"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr and "RETURNING" not in run.stderr and "FROM cases" not in run.stderr
    assert "kalla.yaml: extract.tables.cases.query" in run.stderr and "system kalla" in run.stderr
    assert ("refused for system kalla" if kind == "at load" else "the source database refused it") in run.stderr
    assert _fingerprint(url, backend) == before
