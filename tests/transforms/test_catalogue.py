import pytest
import sqlalchemy as sa

from transforms.catalogue import MIGRATIONS, Catalogue, Package, SchemaVersion


@pytest.fixture(params=["sqlite", "postgresql"])
def catalogue(request, tmp_path):
    if request.param == "sqlite":
        cat = Catalogue(f"sqlite:///{tmp_path / 'catalogue.sqlite'}")
    else:
        cat = Catalogue(request.getfixturevalue("pg_url"))
    yield cat
    cat.dispose()


def test_migrations_run_once(catalogue):
    latest = MIGRATIONS[-1][0]
    assert catalogue.migrate() == latest
    assert catalogue.migrate() == latest
    with catalogue.engine.connect() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM schema_version").scalar() == len(MIGRATIONS)


def test_an_old_catalogue_is_upgraded_in_place(catalogue):
    # A catalogue created by the first release: only migration 1 has run.
    with catalogue.engine.begin() as conn:
        SchemaVersion.__table__.create(conn)
        MIGRATIONS[0][2](conn)
        conn.execute(sa.insert(SchemaVersion).values(version=1, name=MIGRATIONS[0][1]))
        conn.exec_driver_sql(
            "INSERT INTO packages (id, system, record_class, period, batch_id, package_type, status, size, sha256, "
            "content_digest, storage, location, record_count, document_count, created_at) VALUES ('uuid-old', 'lex', "
            "'c', '2024', 'lex/2024', 'SIP', 'stored', 1, 'a', 'b', 'mellanarkiv', 'k', 0, 0, '2025-01-01 00:00:00')")
    catalogue.migrate()
    pkg = catalogue.package("uuid-old")
    assert pkg is not None and pkg.series_code is None


def test_upsert_batch_reports_whether_anything_changed(catalogue):
    catalogue.migrate()
    args = dict(batch_id="lex/2025", system="lex", period="2025", interval_start="2025-01-01",
                interval_end="2026-01-01", status="staged", rows={"cases": 3})
    assert catalogue.upsert_batch(**args) is True
    before = catalogue.snapshot()
    assert catalogue.upsert_batch(**args) is False
    assert catalogue.snapshot() == before
    assert catalogue.upsert_batch(**{**args, "status": "archived"}) is True


def test_packages_and_events(catalogue):
    catalogue.migrate()
    with catalogue.session() as s:
        s.add(Package(id="uuid-1", system="lex", record_class="c", period="2025", batch_id="lex/2025", status="stored",
                      size=10, sha256="a" * 64, content_digest="b" * 64, storage="mellanarkiv", location="lex/x.tar"))
        catalogue.add_event(s, type="ingestion", outcome="success", agent="test", package_id="uuid-1")
    assert [p.id for p in catalogue.packages("lex")] == ["uuid-1"]
    assert [e.type for e in catalogue.events(package_id="uuid-1")] == ["ingestion"]
    with pytest.raises(sa.exc.IntegrityError), catalogue.session() as s:  # a duplicate package id is refused
        s.add(Package(id="uuid-1", system="lex", record_class="c", period="2025", batch_id="lex/2025",
                      status="stored", size=10, sha256="a" * 64, content_digest="b" * 64, storage="m", location="x"))
    assert len(catalogue.packages()) == 1
