"""The whole chain through the ``arkiv`` CLI (no Airflow): archive, rerun, bad rows."""

import json

import pytest

from transforms.catalogue import Catalogue
from transforms.cli import main


@pytest.fixture
def env(monkeypatch, tmp_path, lex_source):
    home = tmp_path / "var"
    monkeypatch.setenv("ARKIV_HOME", str(home))
    monkeypatch.setenv("ARKIV_LEX_FILES", str(lex_source["files"]))
    monkeypatch.setenv("ARKIV_CONN_LEX_DB", lex_source["url"])
    return home


def _run(*extra):
    return main(["run", "lex", "--start", "2025-01-01", "--end", "2026-01-01", *extra])


def test_run_archives_the_interval_and_a_rerun_changes_nothing(env, capsys):
    assert _run() == 0
    cat = Catalogue(f"sqlite:///{env / 'catalogue' / 'catalogue.sqlite'}")
    packages = cat.packages("lex")
    assert packages and all(p.status == "stored" and p.storage == "mellanarkiv" for p in packages)
    stored = sorted(p.relative_to(env / "mellanarkiv").as_posix() for p in (env / "mellanarkiv").rglob("*.tar"))
    assert stored == sorted(p.location for p in packages)
    for p in packages:
        assert [e.type for e in cat.events(package_id=p.id)] == [
            "creation", "replication", "fixity check", "validation", "ingestion"]
    assert not list((env / "build").rglob("*.tar"))  # build artefacts removed once recorded
    assert not (env / "staging" / "lex" / "2025").exists()

    before = cat.snapshot()
    mtimes = {p: p.stat().st_mtime_ns for p in (env / "mellanarkiv").rglob("*.tar")}
    assert _run() == 0
    assert cat.snapshot() == before
    assert {p: p.stat().st_mtime_ns for p in (env / "mellanarkiv").rglob("*.tar")} == mtimes
    assert "0 new package(s)" in capsys.readouterr().out

    assert main(["packages", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {p["id"] for p in listed} == {p.id for p in packages}


def test_bad_rows_stop_the_batch_at_the_quality_gate(monkeypatch, tmp_path, lex_bad_source, capsys):
    home = tmp_path / "var"
    monkeypatch.setenv("ARKIV_HOME", str(home))
    monkeypatch.setenv("ARKIV_LEX_FILES", str(lex_bad_source["files"]))
    monkeypatch.setenv("ARKIV_CONN_LEX_DB", lex_bad_source["url"])
    assert _run() == 1
    err = capsys.readouterr().err
    assert "failed its quality gate" in err and "quarantined" in err
    assert not list((home / "mellanarkiv").rglob("*")), "nothing may be shipped"
    assert Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}").packages() == []
    report = json.loads((home / "reports" / "lex" / "lex-2025-quality.json").read_text(encoding="utf-8"))
    failed = {c["expectation"] for c in report["checks"] if not c["success"]}
    assert {"expect_column_values_to_be_unique", "expect_column_values_to_be_valid_personnummer",
            "expect_column_values_to_be_existing_files"} <= failed
    assert list((home / "quarantine" / "lex").iterdir()), "the staged batch is kept in quarantine"


def test_configuration_errors_exit_2(env, capsys):
    assert main(["run", "nosuchsystem", "--start", "2025-01-01", "--end", "2026-01-01"]) == 2
    assert "no system 'nosuchsystem'" in capsys.readouterr().err


def test_source_changed_after_archiving_is_stopped_not_duplicated(env, lex_source, tmp_path, monkeypatch, capsys):
    import shutil

    import sqlalchemy as sa

    copy = tmp_path / "lex-copy.sqlite"
    shutil.copy(lex_source["url"].removeprefix("sqlite:///"), copy)
    monkeypatch.setenv("ARKIV_CONN_LEX_DB", f"sqlite:///{copy}")
    assert _run() == 0
    cat = Catalogue(f"sqlite:///{env / 'catalogue' / 'catalogue.sqlite'}")
    packages = {p.id for p in cat.packages()}
    eng = sa.create_engine(f"sqlite:///{copy}")
    with eng.begin() as c:  # a closed case is edited in the source after it was archived
        changed = c.exec_driver_sql(
            "UPDATE cases SET case_officer = 'Ny Handläggare' WHERE case_id = (SELECT min(case_id) FROM cases "
            "WHERE closed_date >= '2025-01-01' AND closed_date < '2026-01-01')").rowcount
    assert changed == 1
    eng.dispose()
    capsys.readouterr()
    assert _run() == 1
    assert "already archived" in capsys.readouterr().err
    assert {p.id for p in cat.packages()} == packages
    assert list((env / "quarantine" / "lex").iterdir())


def test_prepared_delivery_ingests_valid_repairs_what_is_safe_and_quarantines_the_rest(monkeypatch, tmp_path, capsys):
    from demo import castor

    home, inbox = tmp_path / "var", tmp_path / "inbox"
    monkeypatch.setenv("ARKIV_HOME", str(home))
    monkeypatch.setenv("ARKIV_CASTOR_INBOX", str(inbox))
    summary = castor.generate(inbox, size=2, seed=3, year=2025, bad=2, repairable=2, as_zip=1)
    kinds = dict(summary.kinds)
    assert main(["run", "castor", "--start", "2025-12-31", "--end", "2026-01-01"]) == 1
    err = capsys.readouterr().err
    assert "2 delivered package(s) are invalid and were quarantined" in err
    cat = Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")
    packages = cat.packages("castor")
    assert len(packages) == 4  # 2 valid + 2 repaired
    repaired = [p for p in packages if any(e.type == "modification" for e in cat.events(package_id=p.id))]
    assert len(repaired) == 2
    assert len(list((home / "quarantine" / "castor").iterdir())) == 2
    # originals leave the inbox only once their package is verified in the mellanarkiv
    archived = sorted(p.name for p in (inbox / ".archived").iterdir())
    assert archived == sorted(name for name, kind in kinds.items() if kind in ("valid", "schemas_missing",
                                                                                 "file_attributes_missing"))
    assert not [p for p in inbox.iterdir() if p.is_file() and not p.name.startswith(".")]
    # a second run finds an empty inbox and changes nothing
    before = cat.snapshot()
    assert main(["run", "castor", "--start", "2025-12-31", "--end", "2026-01-01"]) == 0
    assert cat.snapshot() == before


@pytest.mark.parametrize("defect", ["wrong_encoding", "ragged_row", "checksum_mismatch"])
def test_a_delivery_that_does_not_match_its_declaration_is_quarantined_whole(monkeypatch, tmp_path, capsys, defect):
    from demo import treserva

    home, inbox = tmp_path / "var", tmp_path / "inbox"
    monkeypatch.setenv("ARKIV_HOME", str(home))
    monkeypatch.setenv("ARKIV_TRESERVA_INBOX", str(inbox))
    treserva.generate(inbox, period="2025-12", size=8, seed=2, defect=defect)
    assert main(["run", "treserva", "--start", "2025-12-01", "--end", "2026-01-01"]) == 1
    err = capsys.readouterr().err
    assert "quarantined" in err and "nothing was staged" in err
    assert not (inbox / "2025-12").exists(), "the bad delivery left the inbox"
    [held] = list((home / "quarantine" / "treserva").iterdir())
    assert (held / "delivery" / "manifest.json").is_file() and (held / "reason.txt").read_text(encoding="utf-8")
    assert not (home / "staging" / "treserva" / "2025-12").exists()
    cat = Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")
    cat.migrate()
    assert cat.packages() == []


def test_quarantine_case_approved_with_deviation_is_archived_once_with_the_deviation_in_premis(
        monkeypatch, tmp_path, lex_bad_source, capsys):
    import tarfile

    home = tmp_path / "var"
    monkeypatch.setenv("ARKIV_HOME", str(home))
    monkeypatch.setenv("ARKIV_LEX_FILES", str(lex_bad_source["files"]))
    monkeypatch.setenv("ARKIV_CONN_LEX_DB", lex_bad_source["url"])
    assert _run() == 1
    capsys.readouterr()
    assert main(["quarantine", "list", "--status", "open"]) == 0
    listing = capsys.readouterr().out
    case_id = listing.split()[0]
    assert "quality" in listing and "open" in listing
    page = next((home / "quarantine" / "lex").glob("*/rapport.html")).read_text(encoding="utf-8")
    assert "Karantän / Quarantine" in page and "expect_column_values_to_be_valid_personnummer" in page
    for pnr in _personnummer(lex_bad_source["url"]):
        assert pnr not in page, "no personnummer in clear text in the report page"
    with pytest.raises(SystemExit):  # a decision without a reason is refused
        raise SystemExit(main(["quarantine", "approve", case_id, "--by", "Anna"]))
    assert main(["quarantine", "approve", case_id, "--by", "Anna Arkivarie",
                 "--reason", "Kända fel i Lex; rättas inte i efterhand"]) == 0
    assert _run() == 0
    cat = Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")
    packages = cat.packages("lex")
    assert packages
    with tarfile.open(home / "mellanarkiv" / packages[0].location) as tar:
        premis = tar.extractfile(f"{packages[0].id}/metadata/preservation/premis.xml").read().decode()
    assert "quality deviation approved by Anna Arkivarie" in premis
    assert _run() == 0  # once: a rerun ships nothing new
    assert {p.id for p in cat.packages("lex")} == {p.id for p in packages}


def _personnummer(url):
    import sqlalchemy as sa

    eng = sa.create_engine(url)
    with eng.connect() as c:
        values = [r[0] for r in c.exec_driver_sql("SELECT personnummer FROM parties WHERE personnummer IS NOT NULL")]
    eng.dispose()
    return values


def test_record_classes_are_mapped_largest_first():
    """The DAG maps ``package`` over the batch's record classes in this order, and the scheduler
    starts mapped tasks by map index: the largest partitions first, ties by name."""
    from transforms.pipeline import largest_first
    from transforms.staging.batch import Partition, StagedBatch

    sizes = {"1.1": {"cases": 3, "documents": 9}, "2.1": {"cases": 40, "documents": 120}, "3.1": {"cases": 1},
             "1.2": {"cases": 40, "documents": 120}, "4.1": {}}
    staged = StagedBatch("lex", "2025", "2025-01-01", "2026-01-01", "/nowhere", {},
                         {rc: Partition(rc, rows=rows) for rc, rows in sizes.items()})
    assert largest_first(staged) == ["1.2", "2.1", "1.1", "3.1", "4.1"]


#: the tax agency's test personnummer and a name no generator makes, planted in a record
PLANTED_PNR = "19121212-1212"
PLANTED_NAME = "Zäta Läckström"


def _forms(pnr: str) -> list[str]:
    """Every way a personnummer can be written: with or without century, with or without dash."""
    digits = pnr.replace("-", "")
    return [pnr, digits, pnr[2:], digits[2:]]


def test_a_planted_personnummer_and_name_reach_no_message_of_a_failed_run(tmp_path, lex_source, monkeypatch,
                                                                          caplog, capsys):
    """Values never in the chain's messages: a party's personnummer and name, in the record and in
    a delivered file name, and a batch that fails (a document that belongs to two cases). Neither
    may appear in any catalogue row, the review case and its page, the task log or the alert."""
    import logging
    import os
    import shutil
    from pathlib import Path

    import sqlalchemy as sa
    from airflow.sdk.exceptions import AirflowFailException
    from arkivflode_airflow import alerts, steps

    from transforms import pipeline
    from transforms.quality import quarantine as review

    root = tmp_path / "lex"
    root.mkdir()
    shutil.copy(lex_source["url"].removeprefix("sqlite:///"), root / "lex.sqlite")
    shutil.copytree(lex_source["files"], root / "files")
    url = f"sqlite:///{root / 'lex.sqlite'}"
    for k in list(os.environ):
        if k.startswith("ARKIV_"):
            monkeypatch.delenv(k)
    home = tmp_path / "var"
    monkeypatch.setenv("ARKIV_HOME", str(home))
    monkeypatch.setenv("ARKIV_LEX_FILES", str(root / "files"))
    engine = sa.create_engine(url)
    with engine.begin() as c:
        docs = [dict(r._mapping) for r in c.execute(sa.text(
            "SELECT d.* FROM documents d JOIN cases c ON c.case_id = d.case_id WHERE c.closed_date >= '2025-01-01' "
            "AND c.closed_date < '2026-01-01' ORDER BY d.document_id"))]
        a = docs[0]
        b = next(d for d in docs if d["case_id"] != a["case_id"])
        party = c.execute(sa.text("SELECT min(party_id) FROM parties")).scalar()
        c.execute(sa.text("UPDATE parties SET case_id = :c, party_type = 'person', name = :n, personnummer = :p "
                          "WHERE party_id = :id"), {"c": a["case_id"], "n": PLANTED_NAME, "p": PLANTED_PNR,
                                                    "id": party})
        c.execute(sa.text("UPDATE cases SET title = :t WHERE case_id = :c"),
                  {"t": f"Ansökan från {PLANTED_NAME} ({PLANTED_PNR})", "c": a["case_id"]})
        # the supplier names the file after the person; a second case's row points at the same file
        rel = f"{a['file_path'].rsplit('/', 1)[0]}/{PLANTED_PNR} {PLANTED_NAME}.pdf"
        (root / "files" / a["file_path"]).rename(root / "files" / rel)
        c.execute(sa.text("UPDATE documents SET file_path = :r, file_name = :n WHERE document_id = :d"),
                  {"r": rel, "n": f"{PLANTED_NAME} {PLANTED_PNR}.pdf", "d": a["document_id"]})
        new_id = c.execute(sa.text("SELECT max(document_id) + 1 FROM documents")).scalar()
        row = {**b, "document_id": new_id, "document_number": 99, "file_path": rel,
               "file_name": f"{PLANTED_NAME}.pdf", "title": f"Yttrande om {PLANTED_NAME}"}
        c.execute(sa.text(f"INSERT INTO documents ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})"),
                  row)
    engine.dispose()

    caplog.set_level(logging.DEBUG)
    batch = steps.run(pipeline.extract, "lex", "2025-01-01", "2026-01-01", url)
    with pytest.raises(AirflowFailException) as failed:
        steps.run(pipeline.check_quality, "lex", batch["manifest"])
    alerts.on_failure({"exception": failed.value, "ti": None})
    alert = json.dumps(alerts.alert_line({"exception": failed.value}), ensure_ascii=False)
    assert f"document_id={new_id}" in alert, "the alert names the row and the rule"

    settings = pipeline.Settings.from_env()
    cat = Catalogue(settings.catalogue_url)
    rows = json.dumps({t: [[str(v) for v in r] for r in rs] for t, rs in cat.snapshot().items()},
                      ensure_ascii=False)
    (case,) = review.cases(cat)
    page = next(Path(case.path).glob("rapport.html")).read_text(encoding="utf-8")
    out = capsys.readouterr()
    outputs = {"catalogue": rows, "review case": case.reasons + (case.justification or ""), "review page": page,
               "alert": alert, "task failure": str(failed.value), "log": caplog.text, "output": out.out + out.err}
    for where, text in outputs.items():
        for value in [*_forms(PLANTED_PNR), PLANTED_NAME, PLANTED_NAME.split()[1]]:
            assert value not in text, f"{value!r} leaked into the {where}"


def test_a_foreign_exception_quoting_a_value_is_retried_without_its_message(tmp_path, monkeypatch, caplog):
    """A parser's or converter's error may quote the cell it choked on: the task log and the failure
    keep its type and where it was raised, never its message; a content error keeps its rows and
    rules with control characters escaped and personnummer masked."""
    import logging

    from airflow.sdk.exceptions import AirflowFailException
    from arkivflode_airflow import alerts, steps

    from transforms.common.errors import ContentError

    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "var"))
    caplog.set_level(logging.DEBUG)

    def parse(settings):
        raise ValueError(f"could not convert {PLANTED_NAME!r} ({PLANTED_PNR}) to int64")

    with pytest.raises(steps.SystemStepError) as failed:
        steps.run(parse)
    assert "ValueError in parse" in str(failed.value)

    def bad_rows(settings):
        raise ContentError(f"lex.parties: delivered file {PLANTED_PNR}.csv\nforged: line", ["row 3: rule x\r\n"])

    with pytest.raises(AirflowFailException) as content:
        steps.run(bad_rows)
    alert = alerts.alert_line({"exception": content.value})
    assert alert["kind"] == "content"
    for text in (str(content.value), alert["message"]):
        assert "\n" not in text and "\r" not in text and "X.csv\\nforged: line" in text, text
    for text in (str(failed.value), caplog.text, str(content.value), alert["message"]):
        for value in [*_forms(PLANTED_PNR), PLANTED_NAME]:
            assert value not in text
    assert "row 3: rule x\\r\\n" in str(content.value), "a line break in a detail is escaped, not written"


# --- one run at a time per interval; a missing delivery; who acts on a failure --------------------------

def test_one_interval_is_archived_by_one_run_at_a_time(settings):
    """DAG runs (claim_interval) and arkiv run (interval_guard) share one claim per interval, whatever
    form the interval's bounds come in (the CLI's dates, a DAG run's UTC times)."""
    from transforms import pipeline
    from transforms.catalogue import IntervalClaim
    from transforms.common.errors import AlreadyRunning

    dag_a, dag_b = "dag-run:lex/scheduled__2026-01-01", "dag-run:lex/manual__2026-01-05"
    # the yearly interval 2025 in Stockholm, as a DAG run's data interval in UTC
    utc = ("2024-12-31T23:00:00+00:00", "2025-12-31T23:00:00+00:00")
    assert pipeline.claim_interval(settings, "lex", *utc, dag_a)["interval"] == "lex/2025"
    assert pipeline.claim_interval(settings, "lex", *utc, dag_a)  # its own claim again (a retried task)
    with pytest.raises(AlreadyRunning, match=r"lex/2025 is being archived by dag-run:lex/scheduled"):
        pipeline.claim_interval(settings, "lex", *utc, dag_b, lambda holder: True)
    # the CLI cannot ask Airflow: a DAG run's claim counts as live
    with pytest.raises(AlreadyRunning), pipeline.interval_guard(settings, "lex", "2025-01-01", "2026-01-01"):
        pytest.fail("arkiv run went ahead while a DAG run held the interval")
    # another interval of the same system is not held back
    assert pipeline.claim_interval(settings, "lex", "2024-01-01", "2025-01-01", dag_b)["interval"] == "lex/2024"

    manifest = str(settings.staging / "lex" / "2025" / "manifest.json")
    pipeline.check_claim(settings, "lex", manifest, dag_a)
    # run A ended without finishing (failed): run B takes the interval over, and A may do nothing more
    pipeline.claim_interval(settings, "lex", *utc, dag_b, lambda holder: False)
    with pytest.raises(AlreadyRunning, match="taken over by dag-run:lex/manual"):
        pipeline.check_claim(settings, "lex", manifest, dag_a)
    pipeline.release_interval(settings, "lex", manifest, dag_a)  # not A's any more: stays B's
    pipeline.check_claim(settings, "lex", manifest, dag_b)
    pipeline.release_interval(settings, "lex", manifest, dag_b)
    with pipeline.catalogue(settings).session() as ses:
        assert ses.get(IntervalClaim, "lex/2025") is None  # a finished run leaves no row behind

    # while arkiv run holds the interval, a DAG run of it stops at once, before any work
    with pipeline.interval_guard(settings, "lex", "2025-01-01", "2026-01-01") as key:
        assert key == "lex/2025"
        with pytest.raises(AlreadyRunning, match="archiving lex/2025 is already running"):
            pipeline.claim_interval(settings, "lex", *utc, dag_a, lambda holder: True)
    # and once it has finished, the DAG run may
    pipeline.claim_interval(settings, "lex", *utc, dag_a, lambda holder: True)


def test_a_missing_delivery_waits_until_its_deadline_then_is_recorded_for_the_system_owner(
        settings, tmp_path, monkeypatch):
    from transforms import pipeline
    from transforms.catalogue import Batch
    from transforms.common.errors import ContentError

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    monkeypatch.setenv("ARKIV_TRESERVA_INBOX", str(inbox))
    # December 2025 (monthly, Stockholm); the deadline is 72 hours after it ended
    start, end = "2025-12-01", "2026-01-01"
    import datetime as dt

    hours_since_end = (dt.datetime.now() - dt.datetime(2026, 1, 1)).total_seconds() / 3600
    waiting = pipeline.await_delivery(settings, "treserva", start, end, hours_since_end + 72)
    assert waiting["state"] == "waiting" and waiting["interval"] == "treserva/2025-12"

    (inbox / "2025-12").mkdir()  # the supplier is still copying: no manifest yet
    assert pipeline.await_delivery(settings, "treserva", start, end, hours_since_end + 72)["state"] == "waiting"
    missing = r"treserva/2025-12: delivery missing — .*deadline \d\d [A-Z][a-z]+ 2026 00:00 \(72 h after the interval"
    with pytest.raises(ContentError, match=missing):
        pipeline.await_delivery(settings, "treserva", start, end, 72)
    cat = pipeline.catalogue(settings)
    with cat.session() as ses:
        assert ses.get(Batch, "treserva/2025-12").status == "delivery_missing"
    assert [e.outcome for e in cat.events(batch_id="treserva/2025-12")] == ["failure"]

    (inbox / "2025-12" / "manifest.json").write_text("{}", encoding="utf-8")
    assert pipeline.await_delivery(settings, "treserva", start, end, 72)["state"] == "delivered"
    assert pipeline.await_delivery(settings, "lex", "2025-01-01", "2026-01-01", 72)["state"] == "delivered"


def test_each_failure_says_who_acts(tmp_path, monkeypatch):
    """A configuration problem is IT operations' (system), not the archivists'; a content problem is
    theirs; another run holding the interval is a skip, not a failure."""
    from airflow.sdk.exceptions import AirflowSkipException
    from arkivflode_airflow import alerts, hooks, steps

    from transforms import pipeline
    from transforms.common.errors import AlreadyRunning, ConfigError, ContentError

    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "var"))
    monkeypatch.delenv("ARKIV_CONN_NO_SUCH_DB", raising=False)

    def raising(exc):
        def step(settings):
            raise exc
        return step

    with pytest.raises(steps.StepFailure) as config:
        steps.run(raising(ConfigError("treserva: extract.inbox_env: environment variable X is not set")))
    assert config.value.kind == "system"
    assert alerts.alert_line({"exception": config.value})["kind"] == "system"
    with pytest.raises(steps.StepFailure) as content:
        steps.run(raising(ContentError("lex batch 2025 failed its quality gate")))
    assert content.value.kind == "content"
    assert alerts.alert_line({"exception": content.value})["kind"] == "content"
    with pytest.raises(AirflowSkipException):
        steps.run(raising(AlreadyRunning("lex/2025 is being archived by dag-run:lex/x")))
    with pytest.raises(steps.StepFailure) as missing:
        steps.run(raising(pipeline.DeliveryNotArrived("treserva/2025-12: delivery missing — nothing at inbox")))
    assert missing.value.kind == "delivery_missing"
    assert alerts.alert_line({"exception": missing.value})["kind"] == "delivery_missing"
    with pytest.raises(steps.StepFailure) as no_conn:  # an undefined connection is configuration, named
        steps.guard(hooks.source_url, "no_such_db")
    assert no_conn.value.kind == "system" and "ARKIV_CONN_NO_SUCH_DB" in str(no_conn.value)
    with pytest.raises(AirflowSkipException):
        steps.skip_unless_extracted(None)
