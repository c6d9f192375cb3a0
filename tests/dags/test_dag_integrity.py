"""Every DAG imports cleanly, is configured for operations, and parses fast without heavy imports."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
DAGS = PROJECT / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_one_dag_per_system_yaml(dagbag):
    systems = {p.stem for p in (DAGS / "systems").glob("*.yaml")}
    assert systems <= set(dagbag.dag_ids)


def test_every_dag_has_owner_tags_and_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", (dag_id, task.task_id)
            assert task.retries >= 1, (dag_id, task.task_id)


def test_source_system_dag_shape(dagbag):
    dag = dagbag.dags["lex"]
    assert [t.task_id for t in dag.topological_sort()] == [
        "extract", "quality", "await_decision", "partitions", "package", "collect", "ship", "verify", "record",
        "finish", "update_index"]
    # extraction needs real data intervals; the run IDs name the period archived
    assert type(dag.timetable).__name__ == "PeriodTimetable"
    assert dag.get_task("finish").outlets  # the mellanarkiv Asset


def test_a_delivering_system_waits_for_its_delivery_before_extracting(dagbag):
    dag = dagbag.dags["treserva"]
    order = [t.task_id for t in dag.topological_sort()]
    assert order[:3] == ["await_delivery", "extract", "quality"]
    wait = dag.get_task("await_delivery")
    assert wait.mode == "reschedule" and wait.retries >= 1
    assert dag.get_task("await_decision").trigger_rule == "all_done_min_one_success"
    assert dag.get_task("finish").trigger_rule == "none_failed_min_one_success"


def test_later_intervals_are_not_held_back_by_a_waiting_one(dagbag):
    for name in ("lex", "treserva", "viva"):
        assert dagbag.dags[name].max_active_runs > 1, name
    assert dagbag.dags["castor"].max_active_runs == 1  # a prepared inbox is one queue


def test_each_dag_names_the_period_its_runs_archive(dagbag):
    assert "föregående år" in dagbag.dags["lex"].dag_display_name
    assert "föregående månad" in dagbag.dags["treserva"].dag_display_name


def test_dag_files_parse_fast_without_heavy_imports():
    # A fresh interpreter, as the DAG processor has: import Airflow first (its own cost),
    # then time only our DAG files and record which heavy modules they pulled in. Nothing is
    # warmed up: the first Asset made with a public scheme would load every provider's URI
    # handlers (the Amazon provider's imports boto3); ours use a private x- scheme.
    code = """
import importlib.util, json, sys, time
import airflow.sdk  # noqa
heavy = ["great_expectations", "pandas", "pyarrow", "lxml", "boto3", "sqlalchemy"]
before = {m for m in heavy if m in sys.modules}
times = {}
for path in sys.argv[1:]:
    t = time.perf_counter()
    spec = importlib.util.spec_from_file_location("dagfile_" + str(len(times)), path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    times[path] = time.perf_counter() - t
print(json.dumps({"times": times, "heavy": sorted({m for m in heavy if m in sys.modules} - before)}))
"""
    files = [str(p) for p in sorted(DAGS.rglob("*.py"))]  # the systems' loaders too
    assert len(files) >= 3 + len(list((DAGS / "systems").glob("*.yaml")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(DAGS), str(PROJECT / "plugins"), str(PROJECT)])}
    out = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, env=env, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], f"DAG files import heavy modules at parse time: {result['heavy']}"
    for path, seconds in result["times"].items():
        assert seconds < 0.5, f"{path} took {seconds:.3f}s to parse"
