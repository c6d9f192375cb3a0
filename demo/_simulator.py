"""The mechanics every source-system simulator shares, and nothing of any one system's domain.

Drawing dates and planting a check-digit typo; writing what a simulator produces — a database
dropped and refilled in batches, document files listed in a manifest so that a rerun removes
exactly its own files, a delivery folder swapped in whole with its ``manifest.json`` — and
the command line's parser and timed report line. Code lists, schemas and bad-row kinds stay
in each simulator.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from transforms.common.identifiers import luhn_digit

T = TypeVar("T")

#: The ways a file-export delivery itself can be broken, the same for every file-export system (its
#: ``DEFECTS``): what the reader must quarantine before a row is staged.
DELIVERY_DEFECTS = ("wrong_encoding", "ragged_row", "unknown_column", "bad_value", "checksum_mismatch",
                    "missing_file", "unlisted_file")
#: rows per executemany insert
BATCH_SIZE = 1000

# Characters not allowed in a file name on Windows (the files travel in zip packages).
_UNSAFE_FILENAME = re.compile(r'[\\/:*?"<>|\x00-\x1f]')

# ------------------------------------------------------------------------- drawing


def days_between(rng: random.Random, start: dt.date, end: dt.date) -> dt.date:
    """A uniformly drawn date in [start, end] (start when end precedes it)."""
    span = (end - start).days
    return start + dt.timedelta(days=rng.randint(0, span)) if span > 0 else start


def month_end(d: dt.date) -> dt.date:
    """The last day of ``d``'s month."""
    first_next = dt.date(d.year + (d.month == 12), d.month % 12 + 1, 1)
    return first_next - dt.timedelta(days=1)


def safe_filename(name: str) -> str:
    """A file name that is valid on Windows and in zip packages."""
    return _UNSAFE_FILENAME.sub("_", name).strip(" .")[:90] or "handling"


def wrong_check_digit(rng: random.Random, number: str) -> str:
    """``number`` (personnummer or organisationsnummer) with its last digit replaced by any other: a typo."""
    wrong = (int(number[-1]) + rng.randint(1, 9)) % 10  # any other digit fails the Luhn check
    digits = "".join(ch for ch in number if ch.isdigit())[-10:]
    assert luhn_digit(digits[:9]) != wrong
    return number[:-1] + str(wrong)


# -------------------------------------------------------------------------- writing


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary name, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def replace_tables(url: str, metadata: sa.MetaData, tables: Iterable[tuple[sa.Table, Sequence[dict]]]) -> None:
    """Drop and recreate ``metadata``'s tables at ``url``, then insert the rows in batches, in the order given."""
    db = make_url(url)
    if db.get_backend_name() == "sqlite" and db.database and db.database != ":memory:":
        Path(db.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            metadata.drop_all(conn)
            metadata.create_all(conn)
            for table, rows in tables:
                for start in range(0, len(rows), BATCH_SIZE):
                    conn.execute(table.insert(), rows[start : start + BATCH_SIZE])
    finally:
        engine.dispose()


def clear_listed(folder: Path, manifest: str) -> None:
    """Remove the files the previous run listed in ``folder / manifest``, and folders left empty."""
    listing = folder / manifest
    if not listing.exists():
        return
    dirs: set[Path] = set()
    for rel in listing.read_text(encoding="utf-8").splitlines():
        if not rel or rel.startswith("/") or ".." in Path(rel).parts:
            continue  # never follow a tampered manifest out of the folder
        target = folder / rel
        target.unlink(missing_ok=True)
        dirs.update(p for p in target.parents if folder in p.parents)
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty: someone else's files live there too
            d.rmdir()
    listing.unlink()


def write_listing(folder: Path, manifest: str, names: Iterable[str]) -> None:
    """List ``names`` (sorted, one a line) in ``folder / manifest`` for the next run's :func:`clear_listed`."""
    write_atomic(folder / manifest, "".join(f"{name}\n" for name in sorted(names)).encode("utf-8"))


def write_listed(folder: Path, manifest: str, files: Iterable[tuple[str, bytes]]) -> int:
    """Replace the previous run's files in ``folder`` by ``files`` (relative path, bytes) and list them.

    Files not listed by the previous run are left alone. Returns the bytes written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    clear_listed(folder, manifest)
    total = 0
    written = []
    for rel, data in files:
        write_atomic(folder / rel, data)
        written.append(rel)
        total += len(data)
    write_listing(folder, manifest, written)
    return total


def delivery_manifest(system: str, period: str, created: dt.datetime, files: dict[str, bytes]) -> bytes:
    """The ``manifest.json`` of a file-export delivery: every file's path, size and SHA-256."""
    manifest = {
        "system": system,
        "period": period,
        "created": created.isoformat(),
        "files": [{"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                  for rel, data in sorted(files.items())],
    }
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


@contextlib.contextmanager
def swapped_in(folder: Path) -> Iterator[Path]:
    """A work folder beside ``folder`` that replaces it whole when the block ends, or is removed if it fails.

    Whoever reads ``folder`` never sees a half-written delivery.
    """
    work = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    work.mkdir(parents=True)
    try:
        yield work
        old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
        if folder.exists():
            os.replace(folder, old)
        os.replace(work, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


# --------------------------------------------------------------------- command line


def parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The argument parser of ``python -m <module>``, described by the first line of its docstring."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])


def timed(run: Callable[[], T]) -> tuple[T, float]:
    """``run()`` and the seconds it took (for the report only; never part of the data)."""
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def report(run: Callable[[], T]) -> T:
    """Run a simulator and print its summary's one-line description with the time taken."""
    summary, seconds = timed(run)
    print(f"{summary.describe()} in {seconds:.1f} s")  # type: ignore[attr-defined]
    return summary
