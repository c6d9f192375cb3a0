"""DAG parse time: each DAG file's import and a DagBag of the project, against an empty DAG file.

Every measurement is a fresh interpreter with ``AIRFLOW_HOME`` in a temporary folder and
``AIRFLOW__CORE__LOAD_EXAMPLES=False``. Airflow itself is imported first and not counted (the
DAG processor has it loaded already); then the DAG file is executed as a new module: the first
execution in the process (what the DAG processor pays for a new file) and the median of
``repeats`` re-executions (a re-parse). The DagBag figure is ``DagBag(dag_folder=…)`` for the
project's ``dags/`` and for a folder holding only the empty DAG file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from bench.common import PROJECT, PYTHON, child_env, run_measured

EMPTY_DAG = '''"""Baseline: an empty DAG."""
import datetime

from airflow.sdk import DAG

with DAG("empty_baseline", schedule=None, start_date=datetime.datetime(2025, 1, 1)):
    pass
'''

_FILE_TIMER = r"""
import importlib.util, json, statistics, sys, time
path, repeats = sys.argv[1], int(sys.argv[2])
import airflow, airflow.sdk  # noqa: F401 - loaded before the clock starts, as in the DAG processor
def load(i):
    spec = importlib.util.spec_from_file_location(f"bench_dag_{i}", path)
    mod = importlib.util.module_from_spec(spec)
    t = time.perf_counter()
    spec.loader.exec_module(mod)
    return time.perf_counter() - t
first = load(0)
again = [load(i + 1) for i in range(repeats)]
print(json.dumps({"first_ms": first * 1e3, "reparse_ms": statistics.median(again) * 1e3}))
"""

_DAGBAG_TIMER = r"""
import json, sys, time
folder = sys.argv[1]
import airflow  # noqa: F401
from airflow.dag_processing.dagbag import DagBag
t = time.perf_counter()
bag = DagBag(dag_folder=folder)
ms = (time.perf_counter() - t) * 1e3
stats = [{"file": s.file, "duration_ms": s.duration.total_seconds() * 1e3, "dags": s.dag_num}
         for s in getattr(bag, "dagbag_stats", [])]
print(json.dumps({"ms": ms, "dags": len(bag.dag_ids), "import_errors": len(bag.import_errors), "stats": stats}))
"""


def _env(home: Path, dags: Path) -> dict[str, str]:
    return child_env(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
                     AIRFLOW__CORE__DAGS_FOLDER=str(dags), AIRFLOW__CORE__PLUGINS_FOLDER=str(PROJECT / "plugins"),
                     PYTHONPATH=os.pathsep.join([str(PROJECT / "plugins"), str(PROJECT)]))


def _json(r: dict) -> dict:
    if r["returncode"] != 0:
        raise RuntimeError(r["stderr"])
    return json.loads(r["stdout"].strip().splitlines()[-1])


def run(*, repeats: int, log) -> dict:
    res: dict = {"files": {}}
    with tempfile.TemporaryDirectory(prefix="arkiv-bench-airflow-") as tmp:
        home, empty_dir = Path(tmp) / "home", Path(tmp) / "empty-dags"
        home.mkdir()
        empty_dir.mkdir()
        (empty_dir / "empty_dag.py").write_text(EMPTY_DAG, encoding="utf-8")
        dag_files = sorted((PROJECT / "dags").glob("*.py"))
        targets = [("empty_dag.py (baseline)", empty_dir / "empty_dag.py", empty_dir)] + \
                  [(f"dags/{p.name}", p, PROJECT / "dags") for p in dag_files]
        for label, path, folder in targets:
            r = _json(run_measured([PYTHON, "-c", _FILE_TIMER, str(path), str(repeats)], env=_env(home, folder)))
            res["files"][label] = r
            log(f"  dag file {label:28} first {r['first_ms']:8.1f} ms  re-parse {r['reparse_ms']:8.1f} ms")
        for label, folder in (("empty", empty_dir), ("project", PROJECT / "dags")):
            r = _json(run_measured([PYTHON, "-c", _DAGBAG_TIMER, str(folder)], env=_env(home, folder)))
            res[f"dagbag_{label}"] = r
            log(f"  dagbag {label:8} {r['ms']:8.1f} ms  ({r['dags']} DAGs, {r['import_errors']} import errors)")
    return res
