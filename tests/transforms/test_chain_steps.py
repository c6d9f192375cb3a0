"""The chain declared once: arkiv run and the DAG run the same steps in the same order; what differs
between kinds of delivery is the delivery's; the sidecar has one shape; statuses are the catalogue's strings."""

import ast
import json
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from transforms.chain import CHAIN, Each

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def lex_env(monkeypatch, tmp_path, lex_source):
    home = tmp_path / "var"
    monkeypatch.setenv("ARKIV_HOME", str(home))
    monkeypatch.setenv("ARKIV_LEX_FILES", str(lex_source["files"]))
    monkeypatch.setenv("ARKIV_CONN_LEX_DB", lex_source["url"])
    return home


def test_every_step_names_a_function_of_the_pipeline():
    from transforms import pipeline

    assert len({s.name for s in CHAIN}) == len(CHAIN)
    for s in CHAIN:
        assert callable(getattr(pipeline, s.function)), s
    assert [s.name for s in CHAIN].index("update_index") == [s.name for s in CHAIN].index("finish") + 1
    assert [s.name for s in CHAIN if s.always] == ["update_index"]


def test_arkiv_run_goes_through_the_declared_steps_in_order_and_indexes_after_finish(lex_env, lex_source):
    from transforms import pipeline
    from transforms.access.service import Archive
    from transforms.config.settings import Settings

    settings = Settings.from_env().ensure()
    seen: list[tuple[str, object]] = []
    done = pipeline.run_interval(settings, "lex", "2025-01-01", "2026-01-01", lex_source["url"],
                                 on_step=lambda step, value: seen.append((step.name, value)))
    assert [n for n, _ in seen] == [s.name for s in CHAIN]
    values = dict(seen)
    assert done == values["finish"] and done["packages_new"] >= 1
    recorded = [r["package_id"] for r in values["record"] if r["recorded"]]
    assert values["update_index"] == {"indexed": len(recorded), "failed": 0}
    assert "source_url" not in values["extract"], "a database URL is never handed on between steps"
    # the interval was claimed and given back; the packages are findable
    cat = pipeline.catalogue(settings)
    with cat.session() as ses:
        assert ses.execute(sa.text("select count(*) from interval_claims")).scalar() == 0
    arc = Archive(settings)
    try:
        with arc.cat.session() as ses:
            indexed = {r[0] for r in ses.execute(sa.text("select distinct package_id from access_packages"))}
    finally:
        arc.cat.dispose()
    assert set(recorded) <= indexed


def test_a_failing_index_is_logged_and_fails_nothing(lex_env, lex_source, monkeypatch, caplog):
    from transforms import pipeline
    from transforms.access import service
    from transforms.catalogue import Batch
    from transforms.config.settings import Settings

    def broken(settings, package_id):
        raise OSError("index disk gone")

    monkeypatch.setattr(service, "index_recorded_package", broken)
    settings = Settings.from_env().ensure()
    with caplog.at_level(logging.ERROR, logger="arkivflode"):
        done = pipeline.run_interval(settings, "lex", "2025-01-01", "2026-01-01", lex_source["url"])
    assert done["packages_new"] >= 1
    with pipeline.catalogue(settings).session() as ses:
        assert ses.get(Batch, "lex/2025").status == "archived"
    assert "search index not updated" in caplog.text and "index disk gone" not in caplog.text


def test_a_file_export_not_delivered_stops_arkiv_run_before_anything_is_recorded(monkeypatch, tmp_path, capsys):
    from transforms.catalogue import Catalogue
    from transforms.cli import main

    home, inbox = tmp_path / "var", tmp_path / "inbox"
    inbox.mkdir()
    monkeypatch.setenv("ARKIV_HOME", str(home))
    monkeypatch.setenv("ARKIV_TRESERVA_INBOX", str(inbox))
    assert main(["run", "treserva", "--start", "2025-12-01", "--end", "2026-01-01"]) == 1
    err = capsys.readouterr().err
    assert "the delivery is not there yet" in err and "2025-12" in err
    cat = Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")
    cat.migrate()
    with cat.session() as ses:
        assert ses.execute(sa.text("select count(*) from batches")).scalar() == 0
        assert ses.execute(sa.text("select count(*) from interval_claims")).scalar() == 0


def test_each_kind_of_delivery_says_what_it_waits_for(monkeypatch, tmp_path):
    from transforms.config.settings import Settings
    from transforms.config.systems import load_systems
    from transforms.intake.delivery import (
        DatabaseDelivery,
        FileExportDelivery,
        PreparedDelivery,
        delivery_for,
    )

    monkeypatch.setenv("ARKIV_TRESERVA_INBOX", str(tmp_path / "t"))
    monkeypatch.setenv("ARKIV_CASTOR_INBOX", str(tmp_path / "c"))
    systems = load_systems(Settings.from_env({"ARKIV_HOME": str(tmp_path / "var")}).systems_dir)
    lex, treserva, castor = (delivery_for(systems[n]) for n in ("lex", "treserva", "castor"))
    assert isinstance(lex, DatabaseDelivery) and not lex.waits and not lex.queue
    assert lex.expected("2025") is None
    assert isinstance(treserva, FileExportDelivery) and treserva.waits and not treserva.queue
    assert treserva.expected("2025-12") == tmp_path / "t" / "2025-12" / "manifest.json"
    assert isinstance(castor, PreparedDelivery) and castor.waits and castor.queue
    assert castor.expected("2025-12-31") == tmp_path / "c"
    kinds = {delivery_for(s).kind for s in systems.values()}
    assert kinds == {"database", "file_export", "prepared"}


def test_the_chain_never_compares_the_kind_of_delivery():
    """Only the delivery knows its kind: no module of the chain or the DAG factory reads ``extract_kind``."""
    for rel in ("transforms/pipeline.py", "transforms/cli.py", "transforms/chain.py", "transforms/drill.py",
                "plugins/arkivflode_airflow/factory.py", "plugins/arkivflode_airflow/steps.py"):
        tree = ast.parse((PROJECT / rel).read_text(encoding="utf-8"))
        reads = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "extract_kind"]
        assert not reads, f"{rel} reads extract_kind at line(s) {reads}"


def test_the_sidecar_has_one_shape_for_built_and_delivered_packages(tmp_path):
    from transforms.intake.delivery import PackageSidecar
    from transforms.intake.prepared import Intake, IntakeOutcome
    from transforms.packaging.sip import BuiltPackage, RecordEntry

    built = BuiltPackage(package_id="uuid-1", path=str(tmp_path / "uuid-1.tar"), size=10, sha256="a" * 64,
                         system="lex", record_class="diarium", period="2025", content_digest="d" * 64,
                         record_count=1, document_count=2, document_bytes=30,
                         records=[RecordEntry("1", "KS 2025/1", "2025-01-02", None, None)],
                         quarantined=[{"path": "x.doc", "folder": "q", "reason": "policy"}])
    delivered = Intake(source="pkg.zip", outcome=IntakeOutcome.REPAIRED, package_id="uuid-2",
                       path=str(tmp_path / "uuid-2.zip"), sha256="b" * 64, size=20, repairs=["schemas added"],
                       records=[{"source_id": "7", "reference": "R-7", "opened": "2024-01-01",
                                 "closed": "2024-06-30"}])
    for sidecar, package in ((PackageSidecar.built(built, "2026-01-01T00:00:00"), built.path),
                             (PackageSidecar.delivered(delivered, "castor", "arende", "2025", "2026-01-01T00:00:00"),
                              delivered.path)):
        where = sidecar.write(package)
        assert where == Path(package + ".json")
        assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
        back = PackageSidecar.read(package)
        assert back == sidecar
        assert set(json.loads(where.read_text(encoding="utf-8"))) == set(PackageSidecar.__dataclass_fields__)
        PackageSidecar.remove(package)
        assert not where.exists()
    d = PackageSidecar.delivered(delivered, "castor", "arende", "2025", "t")
    assert d.records[0].retention_start == "2024-06-30"  # a delivered record's retention counts from its closing
    assert d.outcome == "repaired" and d.delivered_as == "pkg.zip" and d.content_digest == d.sha256


def test_statuses_are_the_strings_the_catalogue_keeps(lex_env, lex_source):
    from transforms import pipeline
    from transforms.catalogue import BatchStatus, PackageStatus
    from transforms.config.settings import Settings

    assert {s.value for s in BatchStatus} == {"delivery_missing", "staged", "quality_failed", "quality_passed",
                                              "archived"}
    assert {s.value for s in PackageStatus} == {"stored", "transferred", "disposed"}
    settings = Settings.from_env().ensure()
    pipeline.run_interval(settings, "lex", "2025-01-01", "2026-01-01", lex_source["url"])
    with pipeline.catalogue(settings).session() as ses:
        assert ses.execute(sa.text("select status from batches")).scalars().all() == ["archived"]
        stored = set(ses.execute(sa.text("select status from packages")).scalars())
    assert stored == {"stored"} and BatchStatus("archived") is BatchStatus.ARCHIVED


def test_the_dag_makes_one_task_per_step_in_the_chains_order():
    from airflow.dag_processing.dagbag import DagBag

    dags = DagBag(dag_folder=str(PROJECT / "dags")).dags
    glue = {"partitions", "collect"}  # Airflow's fan-out: one entry per record class, one list of packages
    for name, waits in (("lex", False), ("treserva", True), ("castor", True)):
        dag = dags[name]
        order = [t.task_id for t in dag.topological_sort() if t.task_id not in glue]
        assert order == [s.name for s in CHAIN if waits or s.name != "await_delivery"], name
        for s in CHAIN:
            if s.name in order:
                mapped = bool(getattr(dag.get_task(s.name), "is_mapped", False))
                assert mapped == (s.each in (Each.RECORD_CLASS, Each.PACKAGE)), (name, s.name)
        assert dag.get_task("update_index").trigger_rule == "all_done_min_one_success"
        assert "finish" in dag.get_task("update_index").upstream_task_ids
