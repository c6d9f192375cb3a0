"""Shared fixtures: settings under a temporary ARKIV_HOME, a generated Lex, throwaway PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# One Airflow home per test run (per xdist worker), never the developer's ~/airflow or var/.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="arkiv-test-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["GX_ANALYTICS_ENABLED"] = "False"

import pytest
import sqlalchemy as sa
from testservices import (
    MARIADB_ADMIN_URL,
    S3_TEST_CREDENTIALS,
    ensure_mariadb,
    free_port,
    make_bucket,
    throwaway_postgres_database,
)

from transforms.config.settings import Settings

PROJECT = Path(__file__).resolve().parent.parent
#: xdist groups, longest first (as measured in full runs): `make test` hands them out before everything else,
#: so that the long ones start at once on both workers and the many short tests fill in around them,
#: instead of one long group starting last while the other worker has nothing left to do.
LONGEST_GROUPS_FIRST = ("airflow", "airflow-shared-nothing", "bench", "airflow-systems", "airflow-roles",
                        "airflow-celery", "airflow-signin", "airflow-archivist-page")


def pytest_collection_modifyitems(config, items):
    """Order the collected tests: the known long xdist groups first (longest first), then other grouped
    tests, then the rest, each in collection order (a stable sort; every worker computes the same)."""
    def rank(item) -> int:
        mark = item.get_closest_marker("xdist_group")
        if mark is None:
            return len(LONGEST_GROUPS_FIRST) + 1
        name = mark.args[0] if mark.args else mark.kwargs.get("name")
        return LONGEST_GROUPS_FIRST.index(name) if name in LONGEST_GROUPS_FIRST else len(LONGEST_GROUPS_FIRST)

    items.sort(key=rank)


def settings_for(home: Path) -> Settings:
    """Settings with every location under ``home`` (as the embedded default does under var/)."""
    return Settings.from_env({"ARKIV_HOME": str(home)}).ensure()


@pytest.fixture
def settings(tmp_path) -> Settings:
    return settings_for(tmp_path / "var")


@pytest.fixture(scope="session")
def lex_source(tmp_path_factory) -> dict:
    """A small generated Lex (SQLite + document files), shared by the tests of one worker."""
    from demo import lex

    root = tmp_path_factory.mktemp("lex-source")
    url = f"sqlite:///{root / 'lex.sqlite'}"
    summary = lex.generate(url, root / "files", cases=40, seed=2, year=2025)
    return {"url": url, "files": root / "files", "summary": summary}


@pytest.fixture(scope="session")
def lex_bad_source(tmp_path_factory) -> dict:
    """A generated Lex with one bad row of every kind the quality gate must catch."""
    from demo import lex

    root = tmp_path_factory.mktemp("lex-bad")
    url = f"sqlite:///{root / 'lex.sqlite'}"
    summary = lex.generate(url, root / "files", cases=40, seed=2, year=2025, bad=1)
    return {"url": url, "files": root / "files", "summary": summary}


@pytest.fixture
def pg_url() -> str:
    """A throwaway PostgreSQL database, dropped after the test."""
    with throwaway_postgres_database() as url:
        yield url


@pytest.fixture
def mariadb_url(request) -> str:
    """A throwaway MariaDB database in utf8mb4, dropped after the test; the server is started if it is down.

    The collation is ``utf8mb4_bin`` unless the test asks for another one:
    ``@pytest.mark.parametrize("mariadb_url", ["utf8mb4_swedish_ci"], indirect=True)``.
    """
    ensure_mariadb()
    collation = getattr(request, "param", "utf8mb4_bin")
    name = f"arkiv_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(MARIADB_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE {collation}"))
    try:
        yield MARIADB_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}?charset=utf8mb4"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


# --- S3: moto's server mode over real HTTP on loopback ---------------------------------------------------

@pytest.fixture(scope="session")
def moto_server() -> str:
    """moto's S3 server in its own process on a free loopback port: real HTTP, the real S3 wire protocol.

    Yields the endpoint URL. A separate process (not a thread of the test process) so that memory
    measured in a test is the client's alone. Nothing is set in the environment: tests that want
    the ``ARKIV_S3_*``/``AWS_*`` variables take ``s3_env``.
    """
    import urllib.request

    exe = Path(sys.executable).parent / "moto_server"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)  # noqa: S310 — loopback only
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"moto_server exited with {proc.returncode}") from None
                time.sleep(0.1)
        else:
            raise RuntimeError(f"moto_server did not answer on {url}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def s3_env(moto_server, monkeypatch) -> dict:
    """The environment that points Arkivflöde at moto (for this test only) and two fresh buckets.

    ``mellanarkiv`` is a plain bucket, ``slutarkiv`` one with Object Lock enabled; the locations
    themselves (``ARKIV_MELLANARKIV``/``ARKIV_SLUTARKIV``) are left to the test.
    """
    env = {**S3_TEST_CREDENTIALS, "ARKIV_S3_ENDPOINT_URL": moto_server}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "ARKIV_S3_SSE", "ARKIV_S3_PART_SIZE_MB",
              "ARKIV_SLUTARKIV_OBJECT_LOCK_MODE", "ARKIV_SLUTARKIV_OBJECT_LOCK_DAYS"):
        monkeypatch.delenv(k, raising=False)
    return {"endpoint": moto_server, "env": env, "mellanarkiv": make_bucket(moto_server),
            "slutarkiv": make_bucket(moto_server, object_lock=True)}
