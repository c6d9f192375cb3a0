"""Quality suites (one ``<system>.json`` per source system) and Arkivflöde's custom expectations.

The JSON suites are read by :func:`transforms.quality.checks.load_suite`. The custom Great
Expectations live in :mod:`expectations.custom`; this package deliberately does not import
that module, because importing great_expectations takes seconds and most users of this
package (the DAG parser, the CLI) only need the path of a suite file.
"""

from __future__ import annotations

from pathlib import Path

SUITE_DIR = Path(__file__).resolve().parent


def suite_path(system: str) -> Path:
    """The path of the packaged suite for ``system`` (the file need not exist)."""
    return SUITE_DIR / f"{system}.json"
