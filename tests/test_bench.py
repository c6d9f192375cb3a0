"""The benchmarks still run: ``python -m bench --size tiny`` once, and its JSON has every section.

No timing is asserted: benchmarks measure, they do not pass or fail on speed.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.xdist_group("bench")]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-results")
    work = tmp_path_factory.mktemp("bench-work")
    r = subprocess.run([sys.executable, "-m", "bench", "--size", "tiny", "--out", str(out), "--work", str(work)],
                       cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    files = list(out.glob("*-tiny.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text()), r.stdout, work


def test_json_has_every_section(tiny_run):
    data, _, _ = tiny_run
    for key in ("machine", "limits", "corpus", "build", "validate", "extract", "memory", "workers", "dagparse"):
        assert key in data, key
    m = data["machine"]
    for key in ("cpu_count", "ram_bytes", "disk_free_bytes", "python", "versions", "git_commit"):
        assert key in m, key
    assert {"pyarrow", "lxml"} <= set(m["versions"])


def test_every_benchmark_ran_side_by_side(tiny_run):
    data, _, _ = tiny_run
    assert set(data["build"]["warm"]) == {"ours", "one_pass", "cp_sha256sum", "bagit"}
    assert data["validate"]["ours_tar"]["valid"] is True
    assert {"ours_tar", "ours_folder", "sha256sum_c", "eark"} <= set(data["validate"])
    if data["extract"].get("available"):
        assert {"ours", "copy", "pandas"} <= set(data["extract"])
        assert data["extract"]["pandas"]["rows"] == data["extract"]["rows"]
    mem = data["memory"]
    assert mem["one_package_1x"]["build"]["max_rss_mb"] > 0
    assert "single_file" in mem
    assert {"workers_1", "workers_2", "speedup"} <= set(data["workers"])
    assert data["dagparse"]["dagbag_project"]["import_errors"] == 0
    assert "empty_dag.py (baseline)" in data["dagparse"]["files"]


def test_prints_the_table_and_cleans_up(tiny_run):
    _, stdout, work = tiny_run
    for heading in ("1. Package build", "2. Validation", "3. Extraction", "4. Peak RSS", "5. Workers",
                    "6. DAG parse"):
        assert heading in stdout
    assert list(work.iterdir()) == []  # the work folder is removed
