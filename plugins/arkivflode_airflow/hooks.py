"""Connections: where a source system's database is and how to reach the S3 archives (environment or Airflow)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from transforms.common.errors import ConfigError

#: Airflow connection type -> SQLAlchemy driver
DRIVERS = {
    "postgres": "postgresql+psycopg2",
    "postgresql": "postgresql+psycopg2",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}


def source_url(conn_id: str) -> str:
    """A SQLAlchemy URL for ``conn_id``.

    ``ARKIV_CONN_<ID>`` (a SQLAlchemy URL) wins, so that the CLI and tests work without an
    Airflow database; otherwise the Airflow connection of that id is used (any secrets
    backend Airflow is configured with applies).
    """
    env = os.environ.get(f"ARKIV_CONN_{conn_id.upper()}")
    if env:
        return env
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        # a setting IT operations owns, not a content problem: name both ways of giving it
        raise ConfigError(f"connection {conn_id!r} is not defined: add the Airflow connection {conn_id!r} or set "
                          f"ARKIV_CONN_{conn_id.upper()}") from None
    if conn.conn_type == "sqlite":
        return f"sqlite:///{conn.host}"
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
    if extra.get("sqlalchemy_url"):
        return extra["sqlalchemy_url"]
    driver = DRIVERS.get(conn.conn_type)
    if driver is None:
        raise ConfigError(f"connection {conn_id!r}: type {conn.conn_type!r} is not supported; "
                         f"use one of {sorted(DRIVERS)} or sqlite, or set extra.sqlalchemy_url")
    auth = ""
    if conn.login:
        auth = quote(conn.login, safe="")
        if conn.password:
            auth += ":" + quote(conn.password, safe="")
        auth += "@"
    port = f":{conn.port}" if conn.port else ""
    return f"{driver}://{auth}{conn.host}{port}/{conn.schema or ''}"


# --- S3 for the mellanarkiv and slutarkiv ------------------------------------------------------------------

def s3_client_factory(conn_id: str, max_attempts: int = 5, addressing_style: str = "auto") -> Callable[[], Any]:
    """Builds the boto3 S3 client from the Airflow AWS connection ``conn_id`` (through the Amazon provider).

    The connection's credentials, role, region (``region_name``) and endpoint (``endpoint_url`` in
    its extra, for MinIO) apply, with any secrets backend Airflow is configured with. The client
    gets the same retry policy as the plain boto3 client of ``transforms/archive/storage.py``.
    """

    def build():
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from botocore.config import Config

        config = Config(retries={"mode": "standard", "total_max_attempts": max_attempts},
                        s3={"addressing_style": addressing_style}, connect_timeout=10, read_timeout=120)
        return S3Hook(aws_conn_id=conn_id, config=config).get_conn()

    return build


def with_airflow_s3(settings):
    """``settings`` whose S3 client comes from the Airflow connection named by ``ARKIV_S3_CONN_ID``.

    Without that variable (or when neither archive is a bucket) the settings are returned as they
    are, and boto3's standard chain (``AWS_*`` variables, instance role) applies.
    """
    from dataclasses import replace

    from transforms.config.settings import is_s3

    s3 = settings.s3
    if not s3.conn_id or not (is_s3(settings.mellanarkiv) or is_s3(settings.slutarkiv)):
        return settings
    factory = s3_client_factory(s3.conn_id, s3.max_attempts, s3.addressing_style)
    return replace(settings, s3=replace(s3, client_factory=factory))
