"""The end-to-end tests' fixture: one migrated Airflow home per test run (xdist worker)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from e2e_support import BIN


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    subprocess.run([BIN / "airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    return home
