"""What the end-to-end tests share: the run's environment, ``airflow dags test`` and readers of
what a run left behind (the Airflow home fixture is in conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from transforms.catalogue import Catalogue

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOGICAL_DATE = "2026-01-02"  # the yearly run whose data interval is 2025
#: output of commands the current test ran (what, text): scanned for sensitive values after the test
CAPTURED: list[tuple[str, str]] = []


def captured(what: str, run: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Keep a command's output for the sensitive-value scan after the test; returns ``run``."""
    CAPTURED.append((what, (run.stdout or "") + (run.stderr or "")))
    return run


def _env(home: Path, source: dict, airflow_home: Path) -> dict:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "ARKIV_HOME": str(home),
        "ARKIV_LEX_FILES": str(source["files"]),
        "AIRFLOW_CONN_LEX_DB": json.dumps({"conn_type": "sqlite", "host": source["url"].removeprefix("sqlite:///")}),
        "GX_ANALYTICS_ENABLED": "False",
    }


def dags_test(env: dict) -> subprocess.CompletedProcess:
    return captured("airflow dags test lex", subprocess.run(
        [BIN / "airflow", "dags", "test", "lex", LOGICAL_DATE], env=env, capture_output=True, text=True, timeout=900))


def _catalogue(home: Path) -> Catalogue:
    return Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")


def _stored(home: Path) -> list[Path]:
    return sorted((home / "mellanarkiv").rglob("*.tar"))

