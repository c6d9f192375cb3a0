"""Local services for the tests — PostgreSQL, MariaDB, moto's S3 server — started when absent.

Plain functions and constants, importable by any test (``from testservices import …``); the
fixtures built on them are in conftest.py. (A test module cannot import ``conftest`` reliably:
every test folder may have its own.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get("ARKIV_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _answers(url: str) -> bool:
    """True when the database server at ``url`` answers a query."""
    try:
        eng = sa.create_engine(url)
        with eng.connect() as c:
            c.execute(sa.text("SELECT 1"))
        eng.dispose()
        return True
    except sa.exc.OperationalError:
        return False


def _postgres_up() -> bool:
    return _answers(PG_ADMIN_URL)


def ensure_postgres() -> None:
    """Start the machine's PostgreSQL cluster if it is not answering (CI machines start it anyway)."""
    if _postgres_up():
        return
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if versions and shutil.which("pg_ctlcluster"):
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=False)
        for _ in range(30):
            if _postgres_up():
                return
            time.sleep(1)
    raise RuntimeError(f"PostgreSQL is not reachable at {PG_ADMIN_URL} and could not be started")


@contextmanager
def throwaway_postgres_database(prefix: str = "arkiv_test") -> Iterator[str]:
    """A new PostgreSQL database (the server is started if it is down), dropped afterwards; yields its URL."""
    ensure_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


MARIADB_ADMIN_URL = os.environ.get("ARKIV_TEST_MARIADB_ADMIN_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def _mariadb_up() -> bool:
    return _answers(MARIADB_ADMIN_URL)


def ensure_mariadb() -> None:
    """Start the machine's MariaDB server if it is not answering."""
    if _mariadb_up():
        return
    daemon = shutil.which("start-stop-daemon") or "/sbin/start-stop-daemon"
    subprocess.run([daemon, "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd"], check=False)
    for _ in range(30):
        if _mariadb_up():
            return
        time.sleep(1)
    raise RuntimeError(f"MariaDB is not reachable at {MARIADB_ADMIN_URL} and could not be started")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


S3_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "arkiv-test", "AWS_SECRET_ACCESS_KEY": "arkiv-test-secret",
                       "AWS_DEFAULT_REGION": "eu-north-1"}


def make_bucket(endpoint: str, *, object_lock: bool = False) -> str:
    """A new, uniquely named bucket on ``endpoint`` (Object Lock enabled when asked)."""
    import boto3

    name = f"arkiv-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="eu-north-1",
                          aws_access_key_id=S3_TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=S3_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-north-1"},
                         ObjectLockEnabledForBucket=object_lock)
    return name


