"""Arkivflöde: one DAG per source system, built from dags/systems/*.yaml.

Adding a system is a YAML file and a quality suite; this file never changes. Parsing reads
only the YAML files (milliseconds); all work happens inside the tasks.
"""

from pathlib import Path

from arkivflode_airflow.factory import build_system_dag

for _path in sorted((Path(__file__).parent / "systems").glob("*.yaml")):
    globals()[f"dag_{_path.stem}"] = build_system_dag(_path)
