"""The system YAML's JSON Schema and ``arkiv check-config``.

The schema accepts every shipped YAML; it refuses, as the loader does, each malformed case the
configuration safety tests plant (and a set of other broken YAMLs); check-config names file,
line and key for each, never a value, and exits 0 / 1 / 2.
"""

import copy
import json
from pathlib import Path

import pytest
import yaml

from transforms.cli import main
from transforms.common.errors import ConfigError
from transforms.config.checkconfig import (
    SCHEMA_PATH,
    _as_json,
    _describe,
    check_file,
    key_path,
    load_schema,
    validator_for,
)
from transforms.config.systems import load_system

SYSTEMS = Path(__file__).resolve().parents[2] / "dags" / "systems"
SHIPPED = sorted(SYSTEMS.glob("*.yaml"))
PNR = "19121212-1212"


@pytest.fixture(scope="module")
def validator():
    return validator_for(load_schema())


def _schema_errors(validator, path: Path) -> list:
    return list(validator.iter_errors(_as_json(yaml.safe_load(path.read_text(encoding="utf-8")))))


def test_the_schema_is_draft_7_and_sits_where_the_dag_loader_does_not_look():
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"  # what editors' YAML extensions read
    assert SCHEMA_PATH.parent == SYSTEMS and SCHEMA_PATH.suffix == ".json"  # not *.yaml, not *.py


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_the_schema_accepts_every_shipped_yaml(validator, path):
    assert _schema_errors(validator, path) == []
    assert [f for f in check_file(path, validator) if f.level == "error"] == []


def test_there_are_shipped_yamls_to_check():
    assert len(SHIPPED) >= 7


def _write(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _shipped(name: str) -> dict:
    return yaml.safe_load((SYSTEMS / f"{name}.yaml").read_text(encoding="utf-8"))


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def mutate(d):
        node = d
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return mutate


def _rename_table(new):
    def mutate(d):
        tables = d["extract"]["tables"]
        tables[new] = tables.pop("documents")
    return mutate


# The cases tests/transforms/test_system_config_safety.py plants, each with the key it must name.
PLANTED = [
    *[("lex", _set("extract", "tables", "documents", "query", sql), "extract.tables.documents.query")
      for sql in ("DROP TABLE cases", "DELETE FROM cases RETURNING *", "UPDATE cases SET title = 'x' RETURNING *",
                  "SELECT 1; DROP TABLE cases", "WITH d AS (DELETE FROM cases RETURNING *) SELECT * FROM d",
                  "SELECT * FROM cases FOR UPDATE")],
    *[("lex", _set("extract", "tables", "documents", "files", "root_env", v), "extract.tables.documents.files.root_env")
      for v in ("/srv/lex/../../etc", "ARKIV_LEX_FILES/..")],
    *[("lex", _set("quality", "suite", v), "quality.suite") for v in ("../../../etc/passwd", "/etc/passwd",
                                                                     "sub/lex.json")],
    *[("treserva", _set("extract", "tables", "akter", "file", v), "extract.tables.akter.file")
      for v in ("../akter.csv", "../../etc/passwd", "/etc/passwd", "dokument/../../x.csv", "C:\\akter.csv",
                "dok\\akter.csv", "./akter.csv", "akter.csv/", "~/akter.csv", "akter\n.csv", "")],
    *[("treserva", _set("extract", "inbox_env", v), "extract.inbox_env")
      for v in ("/srv/inbox", "../inbox", "ARKIV_INBOX/x", "arkiv inbox")],
    *[("lex", _rename_table(v), "extract.tables.") for v in ("../staging", "a/b", "Cases", "ärenden", "x\ny")],
    *[("lex", _set("extract", "connection", v), "extract.connection")
      for v in ("postgresql://arkiv@db/lex", "../lex_db", "lex-db", "lex db", "_x", "")],
    ("lex", _set("extract", "batch_rows", 0), "extract.batch_rows"),
    ("lex", _set("extract", "batch_rows", -5), "extract.batch_rows"),
    ("lex", _set("package", {"max_records": 0}), "package.max_records"),
    ("lex", _set("package", {"max_bytes": -1}), "package.max_bytes"),
    ("lex", _set("retries", -1), "retries"),
    ("lex", _set("start_date", "yesterday"), "start_date"),
    ("lex", _set("sensitive", {"cases": "title"}), "sensitive.cases"),
]
# Other broken YAMLs, as a system owner could write them.
BROKEN = [
    ("lex", lambda d: d.pop("title"), "title"),
    ("lex", _set("record_classes", []), "record_classes"),
    ("lex", lambda d: d["record_classes"][0]["retention"].update(period="P"), "record_classes[0].retention.period"),
    ("lex", lambda d: d["record_classes"][1]["retention"].update(action="burn"), "record_classes[1].retention.action"),
    ("lex", lambda d: d["record_classes"][0].update(name="Ärenden bevaras"), "record_classes[0].name"),
    ("lex", _set("extract", "kind", "ftp"), "extract.kind"),
    ("lex", lambda d: d["extract"]["tables"]["cases"]["columns"]["title"].update(type="varchar"),
     "extract.tables.cases.columns.title.type"),
    ("lex", _set("content", "kind", "prepared"), "content.kind"),
    ("lex", lambda d: d["extract"]["tables"]["cases"].pop("key"), "extract.tables.cases.key"),
    ("lex", _set("system", "Lex"), "system"),
    ("treserva", lambda d: d["extract"].pop("encoding"), "extract.encoding"),
    ("treserva", _set("extract", "encoding", "latin9"), "extract.encoding"),
    ("treserva", _set("extract", "csv", "decimal", ";"), "extract.csv.decimal"),
    ("castor", _set("extract", "tables", {"a": {"key": "id", "columns": {"id": {"type": "string"}}}}),
     "extract.tables"),
    ("castor", _set("content", "kind", "erms"), "content.kind"),
    ("hrplus", lambda d: d["quality"].update(suite=None), "quality.suite"),
]


@pytest.mark.parametrize("system, mutate, key", PLANTED + BROKEN, ids=[f"{c[0]}-{c[2]}-{i}" for i, c in
                                                                          enumerate(PLANTED + BROKEN)])
def test_schema_and_loader_both_refuse_and_check_config_names_line_and_key(tmp_path, validator, system, mutate,
                                                                           key):
    data = copy.deepcopy(_shipped(system))
    mutate(data)
    path = _write(tmp_path, data.get("system", system) if key == "system" else system, data)
    if key == "system":
        path = path.rename(tmp_path / f"{system}.yaml")
    # the schema alone names the key (an editor shows it while the owner types) …
    assert any(key_path(_describe(e)[0]).startswith(key) for e in _schema_errors(validator, path)), \
        "the schema accepts it or names another key"
    # … and the loader refuses it all the same
    with pytest.raises(ConfigError):
        load_system(path)
    errors = [f for f in check_file(path, validator) if f.level == "error"]
    lines = path.read_text(encoding="utf-8").splitlines()
    named = [f for f in errors if f.key.startswith(key)]
    assert named, [str(f) for f in errors]
    for f in named:
        assert f.line is not None and 1 <= f.line <= len(lines)
        last = f.key.rsplit(".", 1)[-1].split("[")[0]
        if last.isidentifier() and f.key == key:  # the line is the key's own (or its mapping's, when missing)
            assert last in lines[f.line - 1] or f.message == "is required", (str(f), lines[f.line - 1])
        assert str(f).startswith(f"{path}:{f.line}: {f.key}: ")


def test_a_line_number_is_the_line_in_the_file_as_written(tmp_path, validator):
    text = (SYSTEMS / "lex.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines, 1) if "batch_rows: 5000" in line)
    (tmp_path / "lex.yaml").write_text(text.replace("batch_rows: 5000", "batch_rows: 0"), encoding="utf-8")
    [finding] = [f for f in check_file(tmp_path / "lex.yaml", validator) if f.level == "error"]
    assert (finding.line, finding.key, finding.message) == (at, "extract.batch_rows", "must be at least 1")


def test_a_typo_in_a_key_is_named_though_the_loader_would_ignore_it(tmp_path, validator):
    text = (SYSTEMS / "lex.yaml").read_text(encoding="utf-8").replace("\ncatchup: false", "\ncatch_up: false")
    (tmp_path / "lex.yaml").write_text(text, encoding="utf-8")
    load_system(tmp_path / "lex.yaml")  # the loader takes the default
    [finding] = [f for f in check_file(tmp_path / "lex.yaml", validator) if f.level == "error"]
    assert finding.key == "catch_up" and "typo" in finding.message


def test_a_value_split_by_a_comma_is_an_error_with_its_line_and_what_to_do(tmp_path, validator):
    text = (SYSTEMS / "lex.yaml").read_text(encoding="utf-8").replace(
        "title: {type: string, description: Case title (ärendemening)}",
        "title: {type: string, description: Case title, ärendemening}")
    (tmp_path / "lex.yaml").write_text(text, encoding="utf-8")
    at = next(i for i, line in enumerate(text.splitlines(), 1) if "title, ärendemening" in line)
    warnings = [f for f in check_file(tmp_path / "lex.yaml", validator) if f.key.endswith("ärendemening}")
                or f.key.endswith("ärendemening")]
    assert [(f.level, f.line) for f in warnings] == [("error", at)]
    assert "quotes" in warnings[0].message
    assert not [f for f in check_file(tmp_path / "lex.yaml", validator) if "not a key of this mapping" in f.message]


def test_cli_exit_codes_and_no_value_in_the_output(tmp_path, capsys):
    assert main(["check-config", str(SYSTEMS)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(f"{len(SHIPPED)} file(s) checked, 0 with errors")

    folder = tmp_path / "systems"
    folder.mkdir()
    (folder / "lex.yaml").write_text((SYSTEMS / "lex.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    data = _shipped("viva")
    data[PNR] = "x"  # a stray key shaped like a personnummer: named, but masked
    data["extract"]["connection"] = f"postgresql://{PNR}@db/viva"
    _write(folder, "viva", data)
    assert main(["check-config", str(folder)]) == 1
    out = capsys.readouterr().out
    assert PNR not in out and "postgresql" not in out
    assert f"{folder / 'viva.yaml'}:" in out and "extract.connection: must be a connection id" in out
    assert f"{folder / 'lex.yaml'}: valid" in out and "2 file(s) checked, 1 with errors" in out

    assert main(["check-config", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["check-config", "--no-such-option"]) == 2


def test_not_yaml_and_not_utf8_are_errors_with_a_line(tmp_path, validator):
    (tmp_path / "lex.yaml").write_text("system: lex\nextract: [unclosed\n", encoding="utf-8")
    [finding] = check_file(tmp_path / "lex.yaml", validator)
    assert finding.message.startswith("not valid YAML") and finding.line is not None
    (tmp_path / "lex.yaml").write_bytes("title: Ärenden\n".encode("latin-1"))
    [finding] = check_file(tmp_path / "lex.yaml", validator)
    assert finding.message == "not UTF-8 text"
