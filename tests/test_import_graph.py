"""The domain library's import graph: no cycle inside transforms/, imports inside functions counted too
(a cycle dodged by a function-level import is still a cycle in the design), and no Airflow in it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
IMPORT_CYCLES = PROJECT.parent / "shared" / "tools" / "import_cycles.py"


def test_transforms_has_no_import_cycle():
    run = subprocess.run([sys.executable, str(IMPORT_CYCLES), str(PROJECT), "transforms"], capture_output=True,
                         text=True, timeout=120)
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 import cycle(s)" in run.stdout, run.stdout


def test_transforms_imports_no_airflow():
    offenders = [p.relative_to(PROJECT).as_posix() for p in (PROJECT / "transforms").rglob("*.py")
                 if any(line.lstrip().startswith(("import airflow", "from airflow"))
                        for line in p.read_text(encoding="utf-8").splitlines())]
    assert not offenders, offenders
