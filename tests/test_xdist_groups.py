"""`make test` runs with ``--dist loadgroup``: the tests of one ``xdist_group`` share a worker.

The slow groups (``airflow``, ``airflow-systems``, ``bench``) rely on it: their module and
session fixtures (a migrated Airflow home, an archived world, a benchmark run of minutes) are
made once, not once per worker. Each file that starts a whole Airflow stack of its own has a group
of its own (``airflow-roles``, ``airflow-shared-nothing``, ``airflow-celery``,
``airflow-archivist-page``, ``airflow-signin``): one stack per module on one worker, and the
heavy files spread over both workers instead of queueing behind each other.

pytest 9.2 moved a node's id to ``Node._id`` while pytest-xdist 3.8 still renames ``Node._nodeid``
to add the group, so with that pair every group was silently ignored and the benchmark ran twice
(pyproject.toml pins pytest below 9.2). This test runs a small suite the way the Makefile does
and fails if grouping stops working again.
"""

import os
import re
import subprocess
import sys

GROUPED = r'''
import os, pytest
pytestmark = pytest.mark.xdist_group("together")

@pytest.mark.parametrize("n", range(4))
def test_grouped(n):
    with open(os.environ["WORKERS_FILE"], "a") as fh:
        fh.write(os.environ["PYTEST_XDIST_WORKER"] + "\n")
'''
LOOSE = '''
import time, pytest

@pytest.mark.parametrize("n", range(6))
def test_loose(n):
    time.sleep(0.05)
'''


def test_a_group_runs_on_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_loose.py").write_text(LOOSE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
                        "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "WORKERS_FILE": str(tmp_path / "workers.txt")})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the scheduler's unit is the id with the group's name added; without it the group is ignored
    grouped_ids = re.findall(r"test_grouped\.py::test_grouped\[\d\]\S*", r.stdout)
    assert grouped_ids and all(i.endswith("@together") for i in grouped_ids), grouped_ids
    workers = (tmp_path / "workers.txt").read_text().split()
    assert len(workers) == 4 and len(set(workers)) == 1, workers
