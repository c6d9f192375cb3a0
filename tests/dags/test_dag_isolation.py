"""A broken system YAML is one import error for its own DAG file, naming the file and the key;
the other systems' DAGs still load (parsed by a real DagBag, as the DAG processor does)."""

import shutil
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
DAGS = PROJECT / "dags"


def _bag(folder: Path):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(folder))


@pytest.fixture
def dags_copy(tmp_path) -> Path:
    folder = tmp_path / "dags"
    shutil.copytree(DAGS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def _systems() -> set[str]:
    return {p.stem for p in (DAGS / "systems").glob("*.yaml")}


def test_one_broken_yaml_is_one_import_error_naming_file_and_key(dags_copy):
    yaml = dags_copy / "systems" / "treserva.yaml"
    text = yaml.read_text(encoding="utf-8")
    assert 'organisationsnummer: "212000-0357"}\n  submitter' in text
    # an organisationsnummer with a wrong check digit, in the archive creator of the agreement
    yaml.write_text(text.replace('organisationsnummer: "212000-0357"}\n  submitter',
                                 'organisationsnummer: "212000-0358"}\n  submitter', 1), encoding="utf-8")
    bag = _bag(dags_copy)
    assert set(bag.dag_ids) >= _systems() - {"treserva"}
    assert "treserva" not in bag.dag_ids
    assert len(_systems() - {"treserva"}) == 6
    assert len(bag.import_errors) == 1, bag.import_errors
    ((where, error),) = bag.import_errors.items()
    assert where.endswith("systems/treserva.py")
    assert "treserva.yaml" in error and "agreement.archive_creator.organisationsnummer" in error, error


def test_yaml_that_does_not_parse_fails_alone(dags_copy):
    (dags_copy / "systems" / "viva.yaml").write_text("system: viva\ntitle: [unclosed\n", encoding="utf-8")
    bag = _bag(dags_copy)
    assert set(bag.dag_ids) >= _systems() - {"viva"}
    ((where, error),) = bag.import_errors.items()
    assert where.endswith("systems/viva.py") and "viva.yaml: not valid YAML" in error, error


def test_yaml_without_its_loader_is_an_import_error_not_a_silent_gap(dags_copy):
    shutil.copy(dags_copy / "systems" / "lex.yaml", dags_copy / "systems" / "lex2.yaml")
    bag = _bag(dags_copy)
    assert set(bag.dag_ids) >= _systems()
    ((where, error),) = bag.import_errors.items()
    assert where.endswith("source_systems.py") and "lex2.yaml" in error, error


def test_every_system_yaml_has_its_loader_and_the_loaders_are_one_text():
    loaders = {p.stem: p.read_text(encoding="utf-8") for p in (DAGS / "systems").glob("*.py")}
    assert set(loaders) == _systems()
    assert len(set(loaders.values())) == 1  # a new system copies any of them under its own name
