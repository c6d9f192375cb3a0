"""Reading back what a simulator produced: every file under a folder, every row of a database in key order."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa


def read_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by its relative POSIX path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_rows(url: str, tables: Iterable[sa.Table]) -> dict[str, list[dict]]:
    """Every row of ``tables`` at ``url``, in primary-key order, as typed Python values."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {t.name: [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
                    for t in tables}
    finally:
        engine.dispose()
