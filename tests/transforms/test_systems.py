from pathlib import Path

import pytest
import yaml

from transforms.common.errors import ConfigError
from transforms.config.systems import load_system, load_systems

SYSTEMS = Path(__file__).resolve().parents[2] / "dags" / "systems"


def test_every_system_yaml_loads():
    systems = load_systems(SYSTEMS)
    assert "lex" in systems
    lex = systems["lex"]
    assert lex.root_table.name == "cases"
    assert lex.tables["documents"].parent_table == "cases"
    assert lex.record_class_of("2.1") == "arenden-bevaras"
    assert lex.record_class_of("4.2") == "arenden-gallras-10ar"
    assert lex.record_class_of("9.9") is None
    assert all(rc.retention.period.startswith("P") for rc in lex.record_classes)


def _broken(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((SYSTEMS / "lex.yaml").read_text(encoding="utf-8"))
    mutate(data)
    path = tmp_path / "lex.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d["agreement"]["archive_creator"].update(organisationsnummer="212000-0358"),
     "agreement.archive_creator.organisationsnummer"),
    (lambda d: d["record_classes"][0]["retention"].update(period="two years"), "record_classes[0].retention.period"),
    (lambda d: d["record_classes"][0]["retention"].update(action="burn"), "record_classes[0].retention.action"),
    (lambda d: d["record_classes"][0]["match"].update(column="nope"), "record_classes[0].match.column"),
    (lambda d: d["extract"]["tables"]["cases"]["columns"]["title"].update(type="text"),
     "extract.tables.cases.columns.title.type"),
    (lambda d: d["extract"].update(kind="carrier-pigeon"), "extract.kind"),
    (lambda d: d["sensitive"].update(parties=["shoe_size"]), "sensitive.parties"),
    (lambda d: d.pop("quality"), "quality"),
    (lambda d: d.update(system="other"), "system"),
])
def test_config_errors_name_file_and_key(tmp_path, mutate, where):
    with pytest.raises(ConfigError) as err:
        load_system(_broken(tmp_path, mutate))
    assert str(err.value).startswith(f"lex.yaml: {where}")


def test_not_yaml(tmp_path):
    p = tmp_path / "lex.yaml"
    p.write_text("system: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_system(p)
