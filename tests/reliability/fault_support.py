"""Helpers of the fault-injection suite: run the real CLI, two backends, copies of an archived state.

A fault scenario needs a fresh archive each time. Building one is the slow part (the quality
gate and the package builder take ~12 s), so the retention scenarios start from a copy of a
state built once per backend: a folder tree and a SQLite file are copied; a PostgreSQL
catalogue is cloned with ``CREATE DATABASE … TEMPLATE`` and the buckets' objects are copied
server-side (with their recorded SHA-256 metadata).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import sqlalchemy as sa
from testservices import PG_ADMIN_URL, S3_TEST_CREDENTIALS, ensure_postgres, make_bucket

BIN = Path(sys.executable).parent
INTERVAL = ["--start", "2025-01-01", "--end", "2026-01-01"]
AS_OF = "2040-01-01"  # Lex: kept cases due after P2Y, disposable ones after P10Y
KILLED = 137  # what retention.failpoint exits with (os._exit: no cleanup, no finally blocks)
BACKENDS = ["sqlite+folder", "postgres+s3"]

#: failpoint × backend -> outcome, printed at the end of the session (and written for `make reliability`)
RESULTS: list[dict] = []
#: fuzz target -> examples tried (Hypothesis runs each test body once per example)
FUZZ: Counter = Counter()


def arkiv(env: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real ``arkiv`` console script in its own process."""
    return subprocess.run([str(BIN / "arkiv"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _base_env(home: Path, source: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARKIV_", "AWS_"))}
    return {**env, "ARKIV_HOME": str(home), "ARKIV_LEX_FILES": str(source["files"]),
            "ARKIV_CONN_LEX_DB": source["url"]}


# --- PostgreSQL and S3 helpers (the session-wide servers of tests/conftest.py) -------------------------

def _pg_create(template: str | None = None) -> str:
    ensure_postgres()
    name = f"arkiv_fault_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    admin.dispose()
    return name


def _pg_drop(name: str) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _pg_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _s3_client(endpoint: str):
    import boto3

    c = S3_TEST_CREDENTIALS
    return boto3.client("s3", endpoint_url=endpoint, region_name=c["AWS_DEFAULT_REGION"],
                        aws_access_key_id=c["AWS_ACCESS_KEY_ID"], aws_secret_access_key=c["AWS_SECRET_ACCESS_KEY"])


def _copy_bucket(endpoint: str, source: str, *, object_lock: bool) -> str:
    """A new bucket holding a server-side copy of every object of ``source`` (metadata kept)."""
    target = make_bucket(endpoint, object_lock=object_lock)
    client = _s3_client(endpoint)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=source):
        for item in page.get("Contents", []):
            client.copy_object(Bucket=target, Key=item["Key"], CopySource={"Bucket": source, "Key": item["Key"]},
                               MetadataDirective="COPY", ChecksumAlgorithm="SHA256")
    return target


class Backend:
    """One archive (catalogue, mellanarkiv, slutarkiv, ARKIV_HOME) on one backend, and how to copy it."""

    def __init__(self, kind: str, home: Path, source: dict, endpoint: str | None = None):
        self.kind, self.home, self.source, self.endpoint = kind, home, source, endpoint
        self.env = _base_env(home, source)
        self.db: str | None = None
        self.buckets: dict[str, str] = {}

    @classmethod
    def fresh(cls, kind: str, home: Path, source: dict, endpoint: str | None = None) -> Backend:
        b = cls(kind, home, source, endpoint)
        if kind == "postgres+s3":
            b.db = _pg_create()
            b.buckets = {"mellanarkiv": make_bucket(endpoint), "slutarkiv": make_bucket(endpoint, object_lock=True)}
            b._s3_env(S3_TEST_CREDENTIALS)
        return b

    def _s3_env(self, credentials: dict) -> None:
        self.env.update(credentials)
        self.env.update({"ARKIV_S3_ENDPOINT_URL": self.endpoint, "ARKIV_CATALOGUE_URL": _pg_url(self.db),
                         "ARKIV_MELLANARKIV": f"s3://{self.buckets['mellanarkiv']}/sip",
                         "ARKIV_SLUTARKIV": f"s3://{self.buckets['slutarkiv']}/ocfl"})

    def clone(self, home: Path) -> Backend:
        """An independent copy of this archive's whole state under ``home``."""
        shutil.copytree(self.home, home, symlinks=True)
        b = Backend(self.kind, home, self.source, self.endpoint)
        if self.kind == "postgres+s3":
            b.db = _pg_create(template=self.db)
            b.buckets = {"mellanarkiv": _copy_bucket(self.endpoint, self.buckets["mellanarkiv"], object_lock=False),
                         "slutarkiv": _copy_bucket(self.endpoint, self.buckets["slutarkiv"], object_lock=True)}
            b._s3_env(S3_TEST_CREDENTIALS)
        return b

    def drop(self) -> None:
        if self.db:
            _pg_drop(self.db)

    @property
    def catalogue_url(self) -> str:
        return self.env.get("ARKIV_CATALOGUE_URL") or f"sqlite:///{self.home / 'catalogue' / 'catalogue.sqlite'}"
