import pytest
import sqlalchemy as sa

from transforms.catalogue import Catalogue, Package


@pytest.fixture(params=["sqlite", "postgresql"])
def catalogue(request, tmp_path):
    if request.param == "sqlite":
        cat = Catalogue(f"sqlite:///{tmp_path / 'catalogue.sqlite'}")
    else:
        cat = Catalogue(request.getfixturevalue("pg_url"))
    yield cat
    cat.dispose()


def test_migrations_run_once(catalogue):
    assert catalogue.migrate() == 1
    assert catalogue.migrate() == 1
    with catalogue.engine.connect() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM schema_version").scalar() == 1


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
