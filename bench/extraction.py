"""Extraction: rows/s from PostgreSQL into Parquet through the extractor, against ``COPY`` and pandas.

A throwaway database is created, Lex's schema is created in it with the simulator's DDL and
the corpus's rows are loaded ``factor`` times (fresh ids per copy) with ``COPY FROM``; it is
dropped afterwards. The three methods run Lex's own three queries (``dags/systems/lex.yaml``)
for 2025:

* ours: ``transforms.intake.database.extract_database`` (on PostgreSQL: ``COPY`` text parsed by
  Arrow's CSV reader in batches, record classes, document paths checked, Parquet per record
  class, content digest);
* ceiling: ``COPY (query) TO STDOUT`` through psycopg2 into a byte counter — the server's
  own text output, no client-side parsing at all;
* pandas: ``pandas.read_sql`` then ``DataFrame.to_parquet`` (zstd), what people would write.

Each method runs ``repeats`` times, taking turns; the best run counts (see :func:`run`).
"""

from __future__ import annotations

import io
import os
import re
import sqlite3
import uuid
from pathlib import Path

import pandas as pd
import psycopg2
import sqlalchemy as sa

from bench.common import clear, timed
from bench.corpus import END, FILES_ENV, LEX, START
from demo import lex as lexsim
from transforms.intake.database import extract_database

ADMIN_URL = os.environ.get("ARKIV_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


class _Sink(io.RawIOBase):
    def __init__(self):
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.bytes += len(b)
        return len(b)


def _pg_literal_row(row: tuple) -> str:
    out = []
    for v in row:
        if v is None:
            out.append("\\N")
        else:
            s = str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
            out.append(s)
    return "\t".join(out) + "\n"


def _load(db_url: str, sqlite_db: Path, factor: int) -> dict[str, int]:
    """Create Lex's tables in PostgreSQL and COPY the SQLite rows in, ``factor`` times."""
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        lexsim.metadata.create_all(conn)
    engine.dispose()
    src = sqlite3.connect(sqlite_db)
    counts: dict[str, int] = {}
    pg = psycopg2.connect(_dsn(db_url))
    try:
        with pg, pg.cursor() as cur:
            offsets = {t: src.execute(f"SELECT COALESCE(MAX({k}), 0) FROM {t}").fetchone()[0]  # noqa: S608
                       for t, k in (("cases", "case_id"), ("documents", "document_id"), ("parties", "party_id"))}
            for table in ("classification", "cases", "documents", "parties"):
                cols = [c.name for c in lexsim.metadata.tables[table].columns]
                bools = {i for i, c in enumerate(lexsim.metadata.tables[table].columns)
                         if isinstance(c.type, sa.Boolean)}
                rows = src.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()  # noqa: S608
                copies = 1 if table == "classification" else factor
                buf = io.StringIO()
                for k in range(copies):
                    for row in rows:
                        r = list(row)
                        for i in bools:
                            r[i] = None if r[i] is None else ("t" if r[i] else "f")
                        if table == "cases":
                            r[0] += k * offsets["cases"]
                        elif table == "documents":
                            r[0] += k * offsets["documents"]
                            r[1] += k * offsets["cases"]
                        elif table == "parties":
                            r[0] += k * offsets["parties"]
                            r[1] += k * offsets["cases"]
                        buf.write(_pg_literal_row(tuple(r)))
                buf.seek(0)
                cur.copy_expert(f"COPY {table} ({', '.join(cols)}) FROM STDIN", buf)
                counts[table] = len(rows) * copies
            cur.execute("ANALYZE")
    finally:
        pg.close()
        src.close()
    return counts


def _dsn(url: str) -> str:
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _psycopg_query(sql: str) -> str:
    return re.sub(r":(start|end)\b", r"%(\1)s", sql)


def run(sqlite_db: Path, files: Path, work: Path, *, factor: int, log, repeats: int = 5) -> dict:
    """Each method ``repeats`` times, taking turns, the best run kept (all runs are in the JSON).

    Taking turns and keeping the best gives every method the same warm start: the first run in
    the process also pays one-off imports (the PostgreSQL dialect, psycopg2's extensions) and
    PostgreSQL's cold buffers, and it used to be always ours.
    """
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"arkiv_bench_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        return {"available": False, "error": str(exc).splitlines()[0]}
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    res: dict = {"available": True, "factor": factor, "repeats": repeats}
    try:
        res["loaded"] = _load(url, sqlite_db, factor)
        params = {"start": START.date(), "end": END.date()}
        tables = list(LEX.tables.values())
        staging = work / "extract-ours"
        out = work / "extract-pandas"

        def ours():
            clear(staging)
            return extract_database(LEX, url, START, END, staging, env={FILES_ENV: str(files)})

        def copy_out():
            conn = psycopg2.connect(_dsn(url))
            sink = _Sink()
            try:
                with conn.cursor() as cur:
                    for t in tables:
                        q = cur.mogrify(_psycopg_query(t.query), params).decode()
                        cur.copy_expert(f"COPY ({q}) TO STDOUT", sink)
            finally:
                conn.close()
            return sink.bytes

        def pandas_way():
            clear(out)
            out.mkdir(parents=True)
            engine = sa.create_engine(url)
            n = 0
            try:
                with engine.connect() as conn:
                    for t in tables:
                        df = pd.read_sql(sa.text(t.query), conn, params=params)
                        df.to_parquet(out / f"{t.name}.parquet", compression="zstd")
                        n += len(df)
            finally:
                engine.dispose()
            return n

        runs: dict[str, list[float]] = {"ours": [], "copy": [], "pandas": []}
        for _ in range(repeats):
            seconds, staged = timed(ours)
            runs["ours"].append(seconds)
            seconds, nbytes = timed(copy_out)
            runs["copy"].append(seconds)
            seconds, n = timed(pandas_way)
            runs["pandas"].append(seconds)
        rows = sum(staged.tables.values())
        res["rows"] = rows
        res["tables"] = dict(staged.tables)
        best = {k: min(v) for k, v in runs.items()}
        res["ours"] = {"seconds": best["ours"], "rows_s": rows / best["ours"], "runs": runs["ours"],
                       "parquet_bytes": sum(f.stat().st_size for f in staging.rglob("*.parquet"))}
        res["copy"] = {"seconds": best["copy"], "rows_s": rows / best["copy"], "runs": runs["copy"],
                       "text_bytes": nbytes}
        res["pandas"] = {"seconds": best["pandas"], "rows_s": n / best["pandas"], "rows": n, "runs": runs["pandas"],
                         "parquet_bytes": sum(f.stat().st_size for f in out.glob("*.parquet"))}
        clear(staging)
        clear(out)
        for k in ("ours", "copy", "pandas"):
            log(f"  extract {k:7} {res[k]['seconds']:7.2f} s  {res[k]['rows_s']:10.0f} rows/s"
                f"  (runs: {', '.join(f'{x:.2f}' for x in runs[k])} s)")
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return res
