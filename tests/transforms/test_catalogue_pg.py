"""The catalogue on PostgreSQL, and concurrent writers that must neither corrupt nor duplicate.

On the production path tasks of two DAG runs (or a retry and a slow original, or the CLI and
a DAG) can write the same batch or package at the same moment from different workers. Each
test starts two real processes that wait at a barrier and then do the same thing against one
throwaway PostgreSQL database.
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import traceback

import pytest
import sqlalchemy as sa

from transforms import pipeline
from transforms.catalogue import MIGRATIONS, Base, Batch, Catalogue, Event, Package, Record
from transforms.config.settings import Settings

pytestmark = pytest.mark.integration

FORK = mp.get_context("fork")  # the children inherit the test's imports; each opens its own connections


def _together(target, *per_process_args) -> list:
    """Run ``target(barrier, *args)`` in one process per args tuple, released at once by a barrier.

    Returns each process's result in order; a child's exception fails the test with its traceback.
    """
    barrier, results = FORK.Barrier(len(per_process_args)), FORK.Queue()

    def child(i, args):
        try:
            results.put((i, "ok", target(barrier, *args)))
        except BaseException:
            results.put((i, "error", traceback.format_exc()))

    procs = [FORK.Process(target=child, args=(i, args)) for i, args in enumerate(per_process_args)]
    for p in procs:
        p.start()
    out = dict.fromkeys(range(len(procs)))
    for _ in procs:
        i, status, value = results.get(timeout=300)
        assert status == "ok", f"process {i} failed:\n{value}"
        out[i] = value
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return [out[i] for i in range(len(procs))]


def test_the_migrations_build_the_models_schema_on_postgresql(pg_url):
    cat = Catalogue(pg_url)
    try:
        assert cat.migrate() == MIGRATIONS[-1][0]
        inspector = sa.inspect(cat.engine)
        for table in Base.metadata.sorted_tables:
            columns = {c["name"]: c for c in inspector.get_columns(table.name)}
            # every model column exists (a migration may add PostgreSQL-only extras, e.g. search vectors)
            assert {c.name for c in table.columns} <= set(columns), table.name
            for c in table.columns:
                assert columns[c.name]["nullable"] == (c.nullable and not c.primary_key), (table.name, c.name)
            assert set(inspector.get_pk_constraint(table.name)["constrained_columns"]) == \
                {c.name for c in table.primary_key}, table.name
    finally:
        cat.dispose()


def _migrate(barrier, url):
    cat = Catalogue(url)
    try:
        barrier.wait()
        return cat.migrate()
    finally:
        cat.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_two_processes_migrating_a_new_catalogue_at_once_run_each_migration_once(dialect, request, tmp_path):
    url = request.getfixturevalue("pg_url") if dialect == "postgresql" else f"sqlite:///{tmp_path / 'c.sqlite'}"
    assert _together(_migrate, (url,), (url,)) == [MIGRATIONS[-1][0]] * 2
    cat = Catalogue(url)
    try:
        with cat.engine.connect() as c:
            versions = [v for (v,) in c.exec_driver_sql("SELECT version FROM schema_version ORDER BY version")]
        assert versions == [v for v, _, _ in MIGRATIONS]
    finally:
        cat.dispose()


BATCHES = [f"lex/{year}" for year in range(1990, 2030)]


def _upsert_batches(barrier, url):
    cat = Catalogue(url)
    created = []
    try:
        barrier.wait()
        for batch_id in BATCHES:
            created.append(cat.upsert_batch(batch_id=batch_id, system="lex", period=batch_id[4:],
                                            interval_start="x", interval_end="y", status="staged",
                                            rows={"cases": 3}))
        return created
    finally:
        cat.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_two_writers_creating_the_same_batches_at_once_create_each_exactly_once(dialect, request, tmp_path):
    url = request.getfixturevalue("pg_url") if dialect == "postgresql" else f"sqlite:///{tmp_path / 'c.sqlite'}"
    Catalogue(url).migrate()
    a, b = _together(_upsert_batches, (url,), (url,))
    # for every batch exactly one writer created it; the other found it unchanged
    assert [x + y for x, y in zip(a, b, strict=True)] == [1] * len(BATCHES)
    cat = Catalogue(url)
    try:
        with cat.session() as s:
            assert sorted(s.scalars(sa.select(Batch.id))) == sorted(BATCHES)
    finally:
        cat.dispose()


@pytest.fixture
def verified_packages(tmp_path, pg_url, lex_source, monkeypatch) -> tuple[Settings, list[dict]]:
    """Lex 2025 through the real chain up to (not including) ``record``, catalogue on PostgreSQL."""
    monkeypatch.setenv("ARKIV_LEX_FILES", str(lex_source["files"]))
    settings = Settings.from_env({"ARKIV_HOME": str(tmp_path / "var"), "ARKIV_CATALOGUE_URL": pg_url}).ensure()
    batch = pipeline.extract(settings, "lex", "2025-01-01", "2026-01-01", lex_source["url"])
    assert pipeline.check_quality(settings, "lex", batch["manifest"])["success"]
    built = [p for rc in batch["record_classes"] for p in pipeline.package(settings, "lex", batch["manifest"], rc)]
    assert len(built) >= 2
    return settings, [pipeline.verify(settings, pipeline.ship(settings, p)) for p in built]


def _copy_build(pkg: dict, tag: str) -> dict:
    """Each writer has its own copy of the built package (record removes it once recorded)."""
    path = f"{pkg['path']}.{tag}"
    shutil.copyfile(pkg["path"], path)
    shutil.copyfile(pkg["path"] + ".json", path + ".json")
    return {**pkg, "path": path}


def _record_all(barrier, settings, pkgs):
    barrier.wait()
    return [pipeline.record(settings, p) for p in pkgs]


def test_two_writers_recording_the_same_packages_at_once_record_each_once(verified_packages):
    settings, pkgs = verified_packages
    a = [_copy_build(p, "a") for p in pkgs]
    b = [_copy_build(p, "b") for p in pkgs]
    _together(_record_all, (settings, a), (settings, b))  # both finish without an error
    cat = Catalogue(settings.catalogue_url)
    try:
        with cat.session() as s:
            assert sorted(s.scalars(sa.select(Package.id))) == sorted(p["package_id"] for p in pkgs)
            for p in s.scalars(sa.select(Package)):
                records = s.scalars(sa.select(Record).where(Record.package_id == p.id)).all()
                assert len(records) == p.record_count > 0
                assert len({r.source_id for r in records}) == len(records)
                types = s.scalars(sa.select(Event.type).where(Event.package_id == p.id).order_by(Event.id)).all()
                assert types == ["creation", "replication", "fixity check", "validation", "ingestion"]
    finally:
        cat.dispose()
