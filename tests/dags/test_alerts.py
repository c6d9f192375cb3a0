import json
import logging
from types import SimpleNamespace

from arkivflode_airflow.alerts import alert_line, classify, on_failure


def test_content_and_system_failures_are_told_apart():
    assert classify(Exception("CONTENT PROBLEM — not a system error, not retried: lex batch 2025 …")) == "content"
    # a bad YAML or a missing variable is IT's to fix, not the archivists'
    assert classify(Exception("CONFIGURATION PROBLEM — not retried: lex.yaml …")) == "system"
    assert classify(Exception("STATE PROBLEM — not retried: extract did not finish")) == "system"
    assert classify(Exception("DeliveryMissing: lex: no delivery in 2025-12")) == "delivery_missing"
    assert classify(Exception("FIXITY FAILURE: 1 of 19 package(s) …")) == "fixity"
    assert classify(ConnectionError("could not connect to server")) == "system"
    # what the task glue raises carries its kind: that decides, whatever the message says
    delivery = Exception("treserva/2025-12: nothing in the inbox")
    delivery.kind = "delivery_missing"
    assert classify(delivery) == "delivery_missing"


def test_failure_callback_logs_one_structured_line(caplog, monkeypatch):
    monkeypatch.delenv("ARKIV_ALERT_EMAIL", raising=False)
    ti = SimpleNamespace(dag_id="lex", task_id="quality", run_id="r1", map_index=-1, try_number=1)
    context = {"task_instance": ti, "exception": Exception("CONTENT PROBLEM — lex batch 2025 failed its gate")}
    with caplog.at_level(logging.ERROR, logger="arkivflode.alerts"):
        on_failure(context)
    [record] = [r for r in caplog.records if r.name == "arkivflode.alerts"]
    line = json.loads(record.getMessage())
    assert line == {**alert_line(context), "kind": "content"} and line["who_acts"] == "archivists"


def test_mail_trouble_does_not_hide_the_failure(caplog, monkeypatch):
    # No SMTP server is configured here: whatever the notifier does, the callback must not raise
    # and the structured line must already be logged.
    monkeypatch.setenv("ARKIV_ALERT_EMAIL", "arkiv@example.invalid")
    ti = SimpleNamespace(dag_id="lex", task_id="extract", run_id="r1", map_index=-1, try_number=1)
    with caplog.at_level(logging.ERROR, logger="arkivflode.alerts"):
        on_failure({"task_instance": ti, "exception": OSError("disk full")})
    messages = [json.loads(r.getMessage()) for r in caplog.records if r.name == "arkivflode.alerts"]
    assert messages[0]["kind"] == "system" and messages[0]["who_acts"] == "IT operations"


def test_no_decision_in_time_is_the_archivists_to_act_on():
    from airflow.sdk.exceptions import AirflowSensorTimeout

    ti = SimpleNamespace(dag_id="lex", task_id="await_decision", run_id="r1", map_index=-1, try_number=1)
    line = alert_line({"task_instance": ti, "exception": AirflowSensorTimeout("Sensor has timed out")})
    assert line["kind"] == "content" and line["who_acts"] == "archivists"
    assert "no archivist decision" in line["message"] and "arkiv quarantine" in line["message"]
    # the same exception elsewhere is IT's
    ti.task_id = "extract"
    assert alert_line({"task_instance": ti, "exception": AirflowSensorTimeout("x")})["kind"] == "system"


def test_the_hitl_waits_own_deadline_is_the_archivists_a_wait_nobody_looked_after_is_its():
    from airflow.sdk.exceptions import TaskDeferralTimeout
    from arkivflode_airflow.steps import ContentFailure

    ti = SimpleNamespace(dag_id="lex", task_id="await_decision", run_id="r1", map_index=-1, try_number=1)
    missed = ContentFailure("CONTENT PROBLEM — no archivist decision on the quarantined batch in time (case x)")
    line = alert_line({"task_instance": ti, "exception": missed})
    assert (line["kind"], line["who_acts"]) == ("content", "archivists")
    line = alert_line({"task_instance": ti, "exception": TaskDeferralTimeout("deferral timed out")})
    assert (line["kind"], line["who_acts"]) == ("system", "IT operations") and "triggerer" in line["message"]


def test_namespace_levels_hold_for_standard_library_loggers_even_a_child_that_sets_its_own():
    import io

    from arkivflode_airflow.alerts import apply_namespace_levels

    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        assert apply_namespace_levels("arkivtest.noisy=WARNING, bad-entry other=LOUD") == \
            {"arkivtest.noisy": logging.WARNING}
        child = logging.getLogger("arkivtest.noisy.types.base")
        child.setLevel(logging.INFO)  # as a library may do when it is imported
        child.info("noise")
        child.warning("worth reading")
        logging.getLogger("arkivtest.other").info("kept")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert stream.getvalue().splitlines() == ["worth reading", "kept"]
