"""Connections: where a source system's database is, from the environment or Airflow."""

from __future__ import annotations

import os
from urllib.parse import quote

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

    conn = BaseHook.get_connection(conn_id)
    if conn.conn_type == "sqlite":
        return f"sqlite:///{conn.host}"
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
    if extra.get("sqlalchemy_url"):
        return extra["sqlalchemy_url"]
    driver = DRIVERS.get(conn.conn_type)
    if driver is None:
        raise ValueError(f"connection {conn_id!r}: type {conn.conn_type!r} is not supported; "
                         f"use one of {sorted(DRIVERS)} or sqlite, or set extra.sqlalchemy_url")
    auth = ""
    if conn.login:
        auth = quote(conn.login, safe="")
        if conn.password:
            auth += ":" + quote(conn.password, safe="")
        auth += "@"
    port = f":{conn.port}" if conn.port else ""
    return f"{driver}://{auth}{conn.host}{port}/{conn.schema or ''}"
