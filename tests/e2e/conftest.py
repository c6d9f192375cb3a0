"""The end-to-end tests' fixtures: one migrated Airflow home per test run (xdist worker), and after
every test a scan of what its run wrote outside the packages for sensitive values (must find none)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_support import BIN, CAPTURED, PROJECT

sys.path.insert(0, str(PROJECT / "tests"))
import sensitive_scan  # noqa: E402  (tests/ holds the scanner; it is not a package)

from transforms.config.systems import load_systems  # noqa: E402

#: where each test's scan counts go (one JSON file per test), for the reliability report
SCAN_OUTPUT = PROJECT / "test-output" / "sensitive-scan" / "e2e"
_SYSTEMS = load_systems(PROJECT / "dags" / "systems")
_VALUES: dict[tuple, sensitive_scan.Values] = {}


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    subprocess.run([BIN / "airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    return home


def _run_env(request) -> tuple[dict | None, dict[str, str]]:
    """The environment of the test's run (from the fixture that made it) and the output it captured."""
    args = request.node.funcargs
    texts: dict[str, str] = {}
    for name in ("archived", "world"):
        if isinstance(args.get(name), dict) and "env" in args[name]:
            found = args[name]
            texts.update({f"airflow dags test {k}": v for k, v in (found.get("runs") or {}).items()})
            if found.get("log"):
                texts["airflow dags test lex"] = found["log"]
            return found["env"], texts
    if isinstance(args.get("review_env"), dict):
        return args["review_env"], texts
    return None, texts


@pytest.fixture(autouse=True)
def no_sensitive_value_outside_the_packages(request):
    """After the test: nothing its run wrote outside the packages holds a sensitive value of its sources."""
    CAPTURED.clear()
    yield
    env, texts = _run_env(request)
    if env is None:
        return
    started = time.monotonic()
    home = Path(env["ARKIV_HOME"])
    sources = sensitive_scan.sources_from_env(_SYSTEMS, env)
    key = tuple((s.system.name, s.url, str(s.inbox)) for s in sources)
    if key not in _VALUES:
        _VALUES[key] = sensitive_scan.collect(sources)
    texts.update({f"captured {i}: {what}": text for i, (what, text) in enumerate(CAPTURED)})
    extra = sorted(home.parent.glob("*.log"))  # output a test sent to a file beside the home
    result = sensitive_scan.scan(home, Path(env["AIRFLOW_HOME"]), sources, texts=texts, extra_files=extra,
                                 values=_VALUES[key])
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("tests/e2e/", 1)[-1])
    sensitive_scan.write_counts(result, SCAN_OUTPUT / f"{name}.json", test=request.node.nodeid,
                                systems=[s.system.name for s in sources],
                                seconds=round(time.monotonic() - started, 2))
    assert sources, "the scan found no source to take sensitive values from"
    assert not result.hits, result.report()
