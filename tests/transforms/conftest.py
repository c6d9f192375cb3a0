"""Fixtures shared by the package-building tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from transforms.config.systems import load_system
from transforms.intake.database import extract_database

LEX = load_system(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")


@pytest.fixture(scope="session")
def staged(lex_source, tmp_path_factory):
    """The generated Lex's 2025 extracted once per test process (builds only read it)."""
    root = tmp_path_factory.mktemp("staging")
    return extract_database(LEX, lex_source["url"], dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1), root,
                            env={"ARKIV_LEX_FILES": str(lex_source["files"])})
