"""Simulators of the municipal source systems used by the demo and the tests.

Every system in ``dags/systems/`` has a simulator ``demo/<system>.py`` with a ``generate``
function of one of three shapes, by the system's kind of delivery:

- database: ``generate(url, files_dir, *, size, seed, year, bad)`` fills a database;
- file export: ``generate(inbox, *, period, size, seed, bad)`` writes one delivery folder;
- prepared: ``generate(inbox, *, size, seed, year, ...)`` writes finished packages.

:func:`generate_all` runs each of them for the embedded default (SQLite databases and
folders under ``$ARKIV_HOME/demo`` and ``$ARKIV_HOME/inbox``) and :func:`environment` says
which Airflow connections and environment variables point the DAGs at them.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from pathlib import Path

#: the interval the demo archives: yearly systems archive 2025, monthly ones December 2025
DEMO_YEAR = 2025
DEMO_PERIOD = "2025-12"


def _places(home: Path, system) -> dict[str, Path]:
    return {"db": home / "demo" / f"{system.name}.sqlite", "files": home / "demo" / f"{system.name}-files",
            "inbox": home / "inbox" / system.name}


def environment(home: Path, systems: dict) -> dict[str, str]:
    """The variables that point every system's DAG at its demo source (Airflow connections in JSON form)."""
    env: dict[str, str] = {}
    for system in systems.values():
        p = _places(home, system)
        if system.extract_kind == "database":
            env[f"AIRFLOW_CONN_{system.connection.upper()}"] = json.dumps({"conn_type": "sqlite",
                                                                            "host": str(p["db"])})
            env[f"ARKIV_CONN_{system.connection.upper()}"] = f"sqlite:///{p['db']}"
            for table in system.tables.values():
                if table.files_root_env:
                    env[table.files_root_env] = str(p["files"])
        else:
            env[system.inbox_env] = str(p["inbox"])
    return env


def generate_all(home: Path, systems: dict, *, size: int, seed: int = 1, bad: int = 0,
                 damaged_document: bool = True) -> list[str]:
    """Generate every system's demo source; returns one line per system saying what was made.

    With ``damaged_document`` (the default), one Lex Word document is replaced by one no office
    suite can open, to show the document quarantine (see :func:`damage_one_document`).
    """
    lines = []
    for system in systems.values():
        module = importlib.import_module(f"demo.{system.name}")
        params = inspect.signature(module.generate).parameters
        p = _places(home, system)
        sized = {"size": size} if "size" in params else {"cases": size}
        if system.extract_kind == "database":
            p["db"].parent.mkdir(parents=True, exist_ok=True)
            summary = module.generate(f"sqlite:///{p['db']}", p["files"], seed=seed, year=DEMO_YEAR, bad=bad, **sized)
        elif system.extract_kind == "file_export":
            summary = module.generate(p["inbox"], period=DEMO_PERIOD, seed=seed, bad=bad, **sized)
        else:
            # a prepared system delivers a handful of packages, each with several cases
            summary = module.generate(p["inbox"], seed=seed, year=DEMO_YEAR, size=max(2, size // 40))
        describe = getattr(summary, "describe", None)
        lines.append(describe() if callable(describe) else f"{system.name}: {summary}")
        if system.name == "lex" and damaged_document:
            lines.append(f"lex: damaged on purpose (a Word file no office suite can open): {damage_one_document(p)}")
    return lines


def damage_one_document(places: dict[str, Path]) -> str:
    """Replace the first Word document of a case closed in the demo year by one that cannot be opened.

    The demo's way to show that a document that cannot be converted to PDF/A is held back
    in a document quarantine with its reasons — not lost and not shipped half-converted.
    """
    import sqlite3

    from demo.documents import make_damaged_docx

    db = sqlite3.connect(places["db"])
    try:
        row = db.execute(
            "SELECT d.file_path FROM documents d JOIN cases c ON c.case_id = d.case_id "
            "WHERE d.file_path LIKE '%.docx' AND c.closed_date >= ? AND c.closed_date < ? AND NOT d.secrecy "
            "ORDER BY d.document_id LIMIT 1", (f"{DEMO_YEAR}-01-01", f"{DEMO_YEAR + 1}-01-01")).fetchone()
    finally:
        db.close()
    if row is None:
        return "no Word document to damage"
    target = places["files"] / row[0]
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(make_damaged_docx(["Detta dokument sparades inte färdigt."]))
    os.replace(tmp, target)
    return row[0]
