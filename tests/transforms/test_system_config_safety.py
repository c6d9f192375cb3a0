"""A system YAML cannot make extraction write, nor read outside the folders it is configured for.

The queries of a system must be single read statements (checked when the YAML is loaded); the
paths a YAML names are relative names inside a configured root; a document path in the source's
rows that leads out of the document store (absolute, '..', a link out, a folder) stops staging
before anything is read; a link swapped in after that check is refused when the file is opened.
Messages name file, system, key, row and column, never a query's text or a row's value.
"""

import datetime as dt
import os
from pathlib import Path

import pytest
import yaml

from transforms.common.errors import ConfigError, ContentError
from transforms.config.systems import QueryRefused, check_read_query, load_system, load_systems
from transforms.staging.batch import RowSource, _DocumentStore, open_document, stage

SYSTEMS = Path(__file__).resolve().parents[2] / "dags" / "systems"
Y2025 = (dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1))
PNR = "19121212-1212"  # Skatteverket's test personnummer: planted, must never appear in a message


def test_every_shipped_query_is_a_single_read_statement():
    systems = load_systems(SYSTEMS)
    queries = [t.query for s in systems.values() for t in s.tables.values() if s.extract_kind == "database"]
    assert len(queries) >= 15
    for q in queries:
        check_read_query(q)


READS = [
    "SELECT 1",
    "select a from t where d >= :start and d < :end;",
    "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
    "VALUES (1, 'a')",
    "TABLE cases",
    "(SELECT 1) UNION ALL (SELECT 2)",
    "SELECT 'a;b' AS s, \"c;d\" AS q -- a comment; with a semicolon\n",
    "SELECT 1 /* a ; in a comment */",
    "SELECT x::date, t.update, `odd;name` FROM t",
    "SELECT 'it''s', replace(a, 'x', 'y') FROM t",
    "SELECT CAST(a AS CHAR CHARACTER SET utf8mb4) FROM t",
    "SELECT $q$ dollar $q$",
    "SELECT 1 FOR XML",  # not a lock (SQL Server's FOR XML)
]


@pytest.mark.parametrize("sql", READS)
def test_read_statements_are_accepted(sql):
    check_read_query(sql)


WRITES = {
    "drop": ("DROP TABLE cases", "DROP"),
    "delete-returning": ("DELETE FROM cases RETURNING *", "DELETE"),
    "update-returning": ("UPDATE cases SET title = 'x' RETURNING *", "UPDATE"),
    "insert-returning": ("INSERT INTO cases (id) VALUES (1) RETURNING *", "INSERT"),
    "merge": ("MERGE INTO cases USING x ON true WHEN MATCHED THEN DELETE", "MERGE"),
    "call": ("CALL wipe()", "CALL"),
    "copy": ("COPY cases TO '/tmp/out'", "COPY"),
    "set": ("SET search_path = evil", "SET"),
    "lock": ("LOCK TABLE cases", "LOCK"),
    "select-into": ("SELECT * INTO stolen FROM cases", "INTO"),
    "into-outfile": ("SELECT * FROM cases INTO OUTFILE '/tmp/x'", "INTO"),
    "for-update": ("SELECT * FROM cases FOR UPDATE", "UPDATE"),
    "for-no-key-update": ("SELECT * FROM cases FOR NO KEY UPDATE", "UPDATE"),
    "for-share": ("SELECT * FROM cases FOR SHARE", "SHARE"),
    "for-key-share": ("SELECT * FROM cases FOR KEY SHARE", "SHARE"),
    "lock-in-share-mode": ("SELECT * FROM cases LOCK IN SHARE MODE", "LOCK"),
    "cte-delete": ("WITH d AS (DELETE FROM cases RETURNING *) SELECT * FROM d", "DELETE"),
    "cte-insert": ("WITH i AS (INSERT INTO log VALUES (1) RETURNING *) SELECT 1", "INSERT"),
    "two-statements": ("SELECT 1; DROP TABLE cases", "statement"),
    "two-reads": ("SELECT 1; SELECT 2", "statement"),
    # hidden from one server's reading by another's: each must still be refused
    "backslash-in-string": ("SELECT 'a\\' ; DROP TABLE cases; -- '", "statement"),
    "e-string": ("SELECT E'a\\' ; DROP TABLE cases; -- '", "statement"),
    "nested-comment": ("SELECT 1 /* /* */ ; DROP TABLE cases */", "statement"),
    "dollar-quote": ("SELECT $x$ ; DROP TABLE cases; $x$", "statement"),
    "brackets": ("SELECT [a; DROP TABLE cases] FROM t", "statement"),
    "executable-comment": ("SELECT 1 /*!50000 ; DROP TABLE cases */", "executable comment"),
    "unterminated": ("SELECT 'a; DROP TABLE cases", "unterminated"),
    "parenthesised-delete": ("(DELETE FROM cases)", "DELETE"),
    "empty": ("  ; ", "empty"),
    "nul": ("SELECT 1\x00; DROP TABLE cases", "NUL"),
    "unknown-parameter": ("SELECT * FROM cases WHERE d >= :start AND owner = :user", "only parameters"),
}


@pytest.mark.parametrize("sql, rule", WRITES.values(), ids=WRITES.keys())
def test_writing_locking_and_multiple_statements_are_refused(sql, rule):
    with pytest.raises(QueryRefused, match=rule):
        check_read_query(sql)


def _lex_with(tmp_path: Path, mutate, name: str = "lex") -> Path:
    data = yaml.safe_load((SYSTEMS / "lex.yaml").read_text(encoding="utf-8"))
    data["system"] = name
    mutate(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("sql, rule", [WRITES[k] for k in ("drop", "delete-returning", "update-returning",
                                                           "two-statements", "cte-delete", "for-update")])
def test_a_yaml_whose_query_would_write_fails_to_load_naming_file_system_and_query(tmp_path, sql, rule):
    secret = "secret_registry"  # a name from the query's text: the message names a keyword at most

    def plant(d):
        d["extract"]["tables"]["documents"]["query"] = sql.replace("cases", secret)

    path = _lex_with(tmp_path, plant, name="hostile")
    with pytest.raises(ConfigError) as caught:
        load_system(path)
    msg = str(caught.value)
    assert msg.startswith("hostile.yaml: extract.tables.documents.query: refused for system hostile: "), msg
    assert rule in msg and secret not in msg and "RETURNING" not in msg


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d["extract"]["tables"]["documents"]["files"].update(root_env="/srv/lex/../../etc"),
     "extract.tables.documents.files.root_env"),
    (lambda d: d["extract"]["tables"]["documents"]["files"].update(root_env="ARKIV_LEX_FILES/.."),
     "extract.tables.documents.files.root_env"),
    (lambda d: d["quality"].update(suite="../../../etc/passwd"), "quality.suite"),
    (lambda d: d["quality"].update(suite="/etc/passwd"), "quality.suite"),
    (lambda d: d["quality"].update(suite="sub/lex.json"), "quality.suite"),
])
def test_paths_a_database_yaml_names_stay_inside_their_roots(tmp_path, mutate, where):
    with pytest.raises(ConfigError, match=rf"^lex\.yaml: {where.replace('.', '[.]')}: "):
        load_system(_lex_with(tmp_path, mutate))


def _treserva_with(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((SYSTEMS / "treserva.yaml").read_text(encoding="utf-8"))
    mutate(data)
    path = tmp_path / "treserva.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("file", ["../akter.csv", "../../etc/passwd", "/etc/passwd", "dokument/../../x.csv",
                                  "C:\\akter.csv", "dok\\akter.csv", "./akter.csv", "akter.csv/", "~/akter.csv",
                                  "akter\n.csv", ""])
def test_a_file_export_table_file_stays_inside_the_delivery(tmp_path, file):
    with pytest.raises(ConfigError, match=r"^treserva\.yaml: extract\.tables\.akter\.file: "):
        load_system(_treserva_with(tmp_path, lambda d: d["extract"]["tables"]["akter"].update(file=file)))


@pytest.mark.parametrize("inbox", ["/srv/inbox", "../inbox", "ARKIV_INBOX/x", "arkiv inbox"])
def test_an_inbox_is_named_by_its_environment_variable_not_a_path(tmp_path, inbox):
    with pytest.raises(ConfigError, match=r"^treserva\.yaml: extract\.inbox_env: "):
        load_system(_treserva_with(tmp_path, lambda d: d["extract"].update(inbox_env=inbox)))


def test_a_file_export_table_file_may_sit_in_a_sub_folder(tmp_path):
    path = _treserva_with(tmp_path, lambda d: d["extract"]["tables"]["akter"].update(file="tabeller/akter.csv"))
    assert load_system(path).tables["akter"].file == "tabeller/akter.csv"


# --- Document paths from the source's rows ------------------------------------------------------

DOCS_YAML = """
system: docs
title: Documents
schedule: "0 4 1 * *"
start_date: 2024-01-01
agreement:
  archive_creator: {name: Strängnäs kommun, organisationsnummer: "212000-0357"}
  submitter: {name: Strängnäs kommun, organisationsnummer: "212000-0357"}
  submission_agreement: LA-1
  reference_code: SE/X
extract:
  kind: database
  connection: docs_db
  batch_rows: 2
  tables:
    cases:
      key: id
      query: SELECT id, pnr FROM cases
      columns:
        id: {type: string}
        pnr: {type: string}
    docs:
      key: doc_id
      parent: {table: cases, column: case_id}
      query: SELECT doc_id, case_id, path FROM docs
      columns:
        doc_id: {type: int64}
        case_id: {type: string}
        path: {type: string}
      files: {root_env: DOCS_FILES, path_column: path}
record_classes:
  - {name: alla, title: Alla, match: {default: true},
     retention: {action: keep, counted_from: id, period: P0D, basis: t}}
content: {kind: tabular}
quality: {suite: docs.json}
"""


class ListSource(RowSource):
    def __init__(self, system, rows, files: Path):
        self.system, self.rows, self.files = system, rows, files

    def chunks(self, table):
        rows = self.rows[table.name]
        for i in range(0, len(rows), self.system.batch_rows):
            yield rows[i:i + self.system.batch_rows]

    def files_root(self, table):
        return self.files.resolve() if table.files_path_column else None


@pytest.fixture
def store(tmp_path):
    """A document store as a file server holds one: folders per year, a link that stays inside,
    and next to it a secret that is not part of it."""
    (tmp_path / "docs.yaml").write_text(DOCS_YAML, encoding="utf-8")
    root = tmp_path / "store"
    (root / "2025" / "03").mkdir(parents=True)
    (root / "2025" / "03" / "a.pdf").write_bytes(b"%PDF-1.7 a")
    (root / "senaste").symlink_to(root / "2025")  # a folder link that stays inside: allowed
    secret = tmp_path / "hemligt"
    secret.mkdir()
    (secret / f"{PNR}.pdf").write_bytes(b"%PDF-1.7 secret")
    (root / "2025" / "03" / "ut.pdf").symlink_to(secret / f"{PNR}.pdf")  # a file link out
    (root / "ut").symlink_to(secret)  # a folder link out
    return load_system(tmp_path / "docs.yaml"), root, secret


def _rows(paths):
    cases = [{"id": PNR, "pnr": PNR}]
    return {"cases": cases, "docs": [{"doc_id": i, "case_id": PNR, "path": p} for i, p in enumerate(paths, 1)]}


def test_document_paths_inside_the_store_stage(store, tmp_path):
    system, root, _ = store
    staged = stage(system, ListSource(system, _rows(["2025/03/a.pdf", "senaste/03/a.pdf", "2025/03/saknas.pdf",
                                                       None, ""]), root), *Y2025, tmp_path / "out")
    assert staged.tables == {"cases": 1, "docs": 5}


@pytest.mark.parametrize("hostile", [
    "ut/{pnr}.pdf",  # a symlinked folder that leads out
    "2025/03/ut.pdf",  # a symlinked file that leads out
    "../hemligt/{pnr}.pdf",  # '..' out of the store
    "2025/../../hemligt/{pnr}.pdf",
    "{secret}/{pnr}.pdf",  # an absolute path
    "2025/03/",  # a folder, not a file
    "2025/..",
])
def test_a_document_path_out_of_the_store_stops_staging_before_anything_is_read(store, tmp_path, hostile):
    system, root, secret = store
    path = hostile.format(pnr=PNR, secret=secret)
    rows = _rows(["2025/03/a.pdf", "2025/03/a.pdf", path])  # the bad path in the second chunk (batch_rows 2)
    before = os.stat(secret / f"{PNR}.pdf").st_atime_ns
    with pytest.raises(ContentError) as caught:
        stage(system, ListSource(system, rows, root), *Y2025, tmp_path / "out")
    msg = str(caught.value)
    assert msg.startswith("docs.docs: row 3: column path: the document path leads out of the document store "
                          "(DOCS_FILES)"), msg
    assert PNR not in msg and "hemligt" not in msg and str(root) not in msg
    assert not any((tmp_path / "out" / "docs").iterdir())  # nothing staged
    assert os.stat(secret / f"{PNR}.pdf").st_atime_ns == before


def test_a_row_from_a_file_is_named_by_its_file_and_line(store, tmp_path):
    from transforms.staging.batch import WHERE

    system, root, _ = store
    rows = _rows(["../x.pdf"])
    rows["docs"][0][WHERE] = "dokument.csv: line 2"
    with pytest.raises(ContentError, match=r"^dokument\.csv: line 2: column path: the document path leads out"):
        stage(system, ListSource(system, rows, root), *Y2025, tmp_path / "out")


def test_open_document_reads_what_the_store_resolved(store):
    _, root, _ = store
    real = _DocumentStore(root.resolve()).resolve("senaste/03/a.pdf")
    with open_document(real) as fh:
        assert fh.read() == b"%PDF-1.7 a"


def test_a_link_swapped_in_after_the_check_is_not_followed(store, tmp_path):
    """The store resolved the path; then the file, or a folder on its way, became a link out."""
    _, root, secret = store
    resolved = _DocumentStore(root.resolve()).resolve("2025/03/a.pdf")
    assert resolved
    target = root.resolve() / "2025" / "03" / "a.pdf"
    target.unlink()
    target.symlink_to(secret / f"{PNR}.pdf")
    with pytest.raises(ContentError, match="became a link") as caught:
        open_document(resolved)
    assert PNR not in str(caught.value)
    target.unlink()
    target.write_bytes(b"%PDF-1.7 a")
    folder = root.resolve() / "2025" / "03"
    os.rename(folder, root.resolve() / "2025" / "03-old")
    folder.symlink_to(secret)
    (secret / "a.pdf").write_bytes(b"%PDF-1.7 secret")
    with pytest.raises(ContentError, match="folder became a link"):
        open_document(resolved)


def test_open_document_refuses_what_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ContentError, match="not a regular file"):
        open_document(fifo)
    for bad in ("relative/a.pdf", str(tmp_path / ".." / "a.pdf"), ""):
        with pytest.raises(ContentError):
            open_document(bad)


# --- Values never appear in extraction's messages ------------------------------------------------

def test_a_bad_value_is_named_by_row_number_and_column_never_by_key_or_value(store, tmp_path):
    system, root, _ = store
    rows = _rows(["2025/03/a.pdf", "2025/03/a.pdf", "2025/03/a.pdf"])
    rows["docs"][2]["doc_id"] = f"{PNR} Anna Andersson"  # not an int64
    with pytest.raises(ContentError) as caught:
        stage(system, ListSource(system, rows, root), *Y2025, tmp_path / "out")
    msg = str(caught.value)
    assert msg == "docs.docs: row 3: column doc_id does not hold a int64 (ValueError)"
    assert PNR not in msg and "Anna" not in msg


def test_rows_matching_no_record_class_are_named_by_row_number_not_key(store, tmp_path):
    from dataclasses import replace

    system, root, _ = store
    narrow = replace(system, record_classes=(replace(system.record_classes[0], default=False, column="pnr",
                                                     values=("nobody",)),))
    rows = _rows([])
    rows["cases"].append({"id": "19800101-0000", "pnr": "19800101-0000"})
    with pytest.raises(ContentError) as caught:
        stage(narrow, ListSource(narrow, rows, root), *Y2025, tmp_path / "out")
    text = str(caught.value)
    assert "2 row(s) match no record class" in text and "row 1" in text and "row 2" in text
    assert PNR not in text and "19800101" not in text


@pytest.mark.parametrize("table", ["../staging", "a/b", "Cases", "ärenden", "x\ny"])
def test_a_table_name_cannot_become_a_path_in_staging(tmp_path, table):
    def rename(d):
        tables = d["extract"]["tables"]
        tables[table] = tables.pop("documents")

    with pytest.raises(ConfigError, match=r"^lex\.yaml: extract\.tables\.[^\n]*: a table's name must be") as caught:
        load_system(_lex_with(tmp_path, rename))
    assert "\n" not in str(caught.value)  # a name cannot forge a second log line


ODD_VALUES = [None, 1, -1, True, "", "x", [], {}, [1], {"a": 1}, "../x", 1.5, "2025-13-01", {"default": True},
              ["a"], "P", "a;b", "/etc/passwd", "DROP TABLE cases", {"kind": "erms"}]


def _nodes(data, prefix=()):
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*prefix, key)
            yield from _nodes(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield (*prefix, i)
            yield from _nodes(value, (*prefix, i))


def test_a_mangled_system_yaml_fails_with_a_config_error_never_another_exception(tmp_path):
    """Every shipped YAML with one value replaced by something odd (or a key removed): it loads,
    or it fails with a ConfigError; no TypeError, ValueError or KeyError reaches the DAG processor."""
    import copy
    import random

    rng = random.Random(20)
    shipped = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(SYSTEMS.glob("*.yaml"))}
    refused = 0
    for _ in range(250):
        name = rng.choice(sorted(shipped))
        data = copy.deepcopy(shipped[name])
        where = rng.choice(list(_nodes(data)))
        node = data
        for key in where[:-1]:
            node = node[key]
        if isinstance(node, dict) and rng.random() < 0.2:
            del node[where[-1]]
        else:
            node[where[-1]] = rng.choice(ODD_VALUES)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        try:
            load_system(path)
        except ConfigError as exc:
            assert str(exc).startswith(f"{name}.yaml: "), str(exc)
            refused += 1
    assert refused > 80


def test_a_yaml_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "lex.yaml"
    path.write_bytes((SYSTEMS / "lex.yaml").read_bytes().replace("Ärenden".encode(), "Ärenden".encode("latin-1")))
    with pytest.raises(ConfigError, match=r"^lex\.yaml: not UTF-8 text$"):
        load_system(path)


@pytest.mark.parametrize("connection", ["postgresql://arkiv@db/lex", "../lex_db", "lex-db", "lex db", "_x", ""])
def test_a_connection_is_named_by_its_id_not_a_url_or_path(tmp_path, connection):
    with pytest.raises(ConfigError, match=r"^lex\.yaml: extract\.connection: "):
        load_system(_lex_with(tmp_path, lambda d: d["extract"].update(connection=connection)))


def test_settings_look_up_only_connection_ids():
    from transforms.config.settings import Settings

    settings = Settings.from_env({})
    env = {"ARKIV_CONN_LEX_DB": "sqlite:///lex.sqlite", "ARKIV_CATALOGUE_URL": "postgresql://catalogue"}
    assert settings.connection_url("lex_db", env) == "sqlite:///lex.sqlite"
    for hostile in ("lex_db\n", "../catalogue", "LEX_DB=1"):
        with pytest.raises(ConfigError, match="connection id"):
            settings.connection_url(hostile, env)


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d["extract"].update(batch_rows=0), "extract.batch_rows"),
    (lambda d: d["extract"].update(batch_rows=-5), "extract.batch_rows"),
    (lambda d: d.update(package={"max_records": 0}), "package.max_records"),
    (lambda d: d.update(package={"max_bytes": -1}), "package.max_bytes"),
    (lambda d: d.update(retries=-1), "retries"),
    (lambda d: d.update(start_date="yesterday"), "start_date"),
    (lambda d: d.update(sensitive={"cases": "title"}), "sensitive.cases"),
])
def test_numbers_and_dates_out_of_range_are_config_errors(tmp_path, mutate, where):
    with pytest.raises(ConfigError, match=rf"^lex\.yaml: {where.replace('.', '[.]')}: "):
        load_system(_lex_with(tmp_path, mutate))


def test_a_treserva_delivery_whose_document_links_out_is_refused_before_it_is_read(tmp_path):
    """A Treserva export as the supplier writes it, with one document swapped for a link to a file
    outside the delivery: staging stops with a ContentError, the linked file is never staged and
    never named."""
    import csv

    from demo import treserva
    from transforms.intake.file_export import FileExportSource

    inbox = tmp_path / "inbox"
    treserva.generate(inbox, period="2025-12", size=3, seed=4)
    delivery = inbox / "2025-12"
    with open(delivery / "dokument.csv", encoding="windows-1252", newline="") as fh:
        first = next(csv.DictReader(fh, delimiter=";"))
    secret = tmp_path / "hemligt" / f"{PNR}.pdf"
    secret.parent.mkdir()
    secret.write_bytes(b"%PDF-1.7 not part of the delivery")
    document = delivery / first["fil"]
    document.unlink()
    document.symlink_to(secret)
    system = load_system(SYSTEMS / "treserva.yaml")
    with pytest.raises(ContentError) as caught:
        stage(system, FileExportSource(system, delivery), dt.datetime(2025, 12, 1), dt.datetime(2026, 1, 1),
              tmp_path / "staging")
    msg = str(caught.value)
    assert PNR not in msg and "hemligt" not in msg, msg
    staged = [p for p in (tmp_path / "staging").rglob("*") if p.is_file()] if (tmp_path / "staging").exists() else []
    assert staged == []
