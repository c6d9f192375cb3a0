"""Arkivflöde's source systems: each ``dags/systems/<system>.yaml`` has a DAG loader beside it.

The DAGs themselves are built by the loaders ``dags/systems/<system>.py`` (one Airflow DAG file
per system, so one broken YAML cannot take the others down). This file only checks that no YAML
lacks its loader and no loader its YAML: a mismatch is an import error here naming the files,
never a system that silently has no DAG.
"""

from pathlib import Path

from arkivflode_airflow.factory import check_system_loaders

check_system_loaders(Path(__file__).parent / "systems")
