"""Fixtures shared by the package-building tests."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from testservices import make_bucket

from transforms.archive.workarea import work_area
from transforms.catalogue import Catalogue
from transforms.config.settings import Settings
from transforms.config.systems import load_system
from transforms.formats.identification import Identifier
from transforms.intake.database import extract_database

LEX = load_system(Path(__file__).resolve().parents[2] / "dags" / "systems" / "lex.yaml")


@pytest.fixture(scope="session")
def staged(lex_source, tmp_path_factory):
    """The generated Lex's 2025 extracted once per test process (builds only read it)."""
    root = tmp_path_factory.mktemp("staging")
    return extract_database(LEX, lex_source["url"], dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1), root,
                            env={"ARKIV_LEX_FILES": str(lex_source["files"])})


@pytest.fixture
def cat(tmp_path) -> Catalogue:
    """A migrated SQLite catalogue of the test's own (``<tmp_path>/catalogue.sqlite``)."""
    c = Catalogue(f"sqlite:///{tmp_path / 'catalogue.sqlite'}")
    c.migrate()
    yield c
    c.dispose()


@pytest.fixture
def identify_calls(monkeypatch) -> list[str]:
    """The paths the real format identifier is asked about, in this process."""
    asked: list[str] = []
    real = Identifier.identify

    def counting(self, path):
        asked.append(str(path))
        return real(self, path)

    monkeypatch.setattr(Identifier, "identify", counting)
    return asked


@pytest.fixture
def bucket_worker(tmp_path, monkeypatch, s3_env) -> SimpleNamespace:
    """A worker whose working area is a fresh bucket on moto (``ARKIV_WORK``), with a home and catalogue of its
    own: ``settings``, ``area`` (the working area), ``cat``, ``bucket`` and ``tmp``."""
    for k in list(os.environ):
        if k.startswith("ARKIV_") and k not in s3_env["env"]:
            monkeypatch.delenv(k)
    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "worker"))
    bucket = make_bucket(s3_env["endpoint"])
    monkeypatch.setenv("ARKIV_WORK", f"s3://{bucket}/work")
    settings = Settings.from_env().ensure()
    cat = Catalogue(settings.catalogue_url)
    cat.migrate()
    return SimpleNamespace(settings=settings, area=work_area(settings), cat=cat, bucket=bucket, tmp=tmp_path)
