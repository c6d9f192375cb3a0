"""Alerts reach people: an e-mail through a real SMTP server on loopback (aiosmtpd) and a JSON POST
to a real local HTTP server, each with the system, period, kind, who acts and the links — and no
personnummer planted in the failure's message."""

import datetime as dt
import email
import email.policy
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from aiosmtpd.controller import Controller
from airflow.sdk import DAG
from arkivflode_airflow.alerts import on_failure

PLANTED = "19121212-1212"  # shaped like a personnummer, as a record's value in an error could be
UTC = dt.UTC


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Inbox:
    def __init__(self):
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's handler name
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server(monkeypatch):
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    # the SMTP connection as an operator sets it: host, port, sender; no TLS on loopback
    monkeypatch.setenv("AIRFLOW_CONN_ARKIV_SMTP_TEST", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": controller.port,
        "extra": {"from_email": "arkivflode@kommun.example", "disable_tls": True, "disable_ssl": True,
                  "retry_limit": 1, "timeout": 10}}))
    monkeypatch.setenv("ARKIV_ALERT_SMTP_CONN", "arkiv_smtp_test")
    yield inbox
    controller.stop()


@pytest.fixture
def webhook_server(monkeypatch):
    received: list[tuple[dict, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's handler name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AIRFLOW_CONN_ARKIV_WEBHOOK_TEST", json.dumps({
        "conn_type": "http", "host": f"http://127.0.0.1:{server.server_port}/hooks/arkiv",
        "extra": {"headers": {"Authorization": "Bearer from-the-connection"}}}))
    monkeypatch.setenv("ARKIV_ALERT_WEBHOOK_CONN", "arkiv_webhook_test")
    yield received
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _no_other_recipients(monkeypatch):
    for var in ("ARKIV_ALERT_EMAIL", "ARKIV_ALERT_EMAIL_ARCHIVISTS", "ARKIV_ALERT_EMAIL_IT",
                "ARKIV_ALERT_EMAIL_SYSTEM_OWNER", "ARKIV_ALERT_WEBHOOK_CONN", "ARKIV_CATALOGUE_URL", "ARKIV_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://arkiv.kommun.example:8081")


def _context(task_id: str, message: str, exc_type=Exception) -> dict:
    ti = SimpleNamespace(dag_id="lex", task_id=task_id, run_id="scheduled__2026-01-01T00:00:00+00:00",
                         map_index=-1, try_number=1)
    return {"task_instance": ti, "exception": exc_type(message),
            "dag": DAG("lex", schedule=None, tags=["source-system"]),
            "data_interval_start": dt.datetime(2025, 1, 1, tzinfo=UTC),
            "data_interval_end": dt.datetime(2026, 1, 1, tzinfo=UTC)}


def _mail(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def _body(message) -> str:
    return "".join(part.get_content() for part in message.walk() if part.get_content_maintype() == "text")


def test_content_problem_mails_the_archivists_with_links_and_no_record_value(smtp_server, monkeypatch):
    monkeypatch.setenv("ARKIV_ALERT_EMAIL_ARCHIVISTS", "arkivarie@kommun.example")
    monkeypatch.setenv("ARKIV_ALERT_EMAIL_IT", "drift@kommun.example")
    on_failure(_context("quality", f"CONTENT PROBLEM — not retried: lex batch 2025 failed its gate: "
                                   f"personnummer {PLANTED} in row 4 breaks rule valid_personnummer"))
    [(sender, rcpt, raw)] = smtp_server.messages
    assert sender == "arkivflode@kommun.example" and rcpt == ["arkivarie@kommun.example"]  # not IT
    message = _mail(raw)
    assert message["Subject"].startswith("[Arkivflöde] lex 2025: innehållsproblem / content problem")
    assert "archivists" in message["Subject"] and message["X-Arkivflode-Kind"] == "content"
    body = _body(message)
    for expected in ("lex", "2025", "archivists", "valid_personnummer",
                     "http://arkiv.kommun.example:8081/dags/lex/runs/scheduled__2026-01-01T00%3A00%3A00%2B00%3A00"
                     "/tasks/quality",
                     "http://arkiv.kommun.example:8081/arkiv/?system=lex&amp;status=open"):
        assert expected in body
    assert PLANTED not in raw.decode("utf-8", "replace") and "121212" not in body


def test_configuration_problem_goes_to_it_operations_not_archivists(smtp_server, monkeypatch):
    monkeypatch.setenv("ARKIV_ALERT_EMAIL_ARCHIVISTS", "arkivarie@kommun.example")
    monkeypatch.setenv("ARKIV_ALERT_EMAIL_IT", "drift@kommun.example")
    on_failure(_context("extract", "CONFIGURATION PROBLEM — not retried: ARKIV_LEX_FILES is not set"))
    [(_, rcpt, raw)] = smtp_server.messages
    assert rcpt == ["drift@kommun.example"]
    body = _body(_mail(raw))
    assert "IT operations" in body and "systemfel / system error" in body and "/arkiv/" not in body


def test_missing_delivery_goes_to_the_system_owner(smtp_server, monkeypatch):
    from airflow.sdk.exceptions import AirflowSensorTimeout

    monkeypatch.setenv("ARKIV_ALERT_EMAIL_SYSTEM_OWNER", "lex-agare@kommun.example")
    monkeypatch.setenv("ARKIV_ALERT_EMAIL_IT", "drift@kommun.example")
    on_failure(_context("await_delivery", "Sensor has timed out", AirflowSensorTimeout))
    [(_, rcpt, raw)] = smtp_server.messages
    assert rcpt == ["lex-agare@kommun.example"]
    message = _mail(raw)
    assert "leverans saknas / delivery missing" in message["Subject"] and "system owner" in _body(message)


def test_webhook_receives_the_alert_as_json(webhook_server):
    on_failure(_context("quality", f"CONTENT PROBLEM — lex batch 2025: {PLANTED} in a cell\nFORGED: line"))
    [(headers, payload)] = webhook_server
    assert headers["Authorization"] == "Bearer from-the-connection"
    assert headers["Content-Type"].startswith("application/json")
    assert payload["system"] == "lex" and payload["period"] == "2025"
    assert payload["kind"] == "content" and payload["who_acts"] == "archivists"
    assert payload["run_url"].startswith("http://arkiv.kommun.example:8081/dags/lex/runs/")
    assert payload["case_url"] == "http://arkiv.kommun.example:8081/arkiv/?system=lex&status=open"
    assert PLANTED not in json.dumps(payload) and "\n" not in payload["message"]


def test_channels_fail_alone_and_the_alert_is_still_logged(smtp_server, webhook_server, monkeypatch, caplog):
    monkeypatch.setenv("ARKIV_ALERT_EMAIL", "alla@kommun.example")
    # the webhook's server is gone: the e-mail still goes, and the failure is logged, not raised
    monkeypatch.setenv("AIRFLOW_CONN_ARKIV_WEBHOOK_TEST", json.dumps(
        {"conn_type": "http", "host": f"http://127.0.0.1:{_free_port()}/gone"}))
    with caplog.at_level(logging.ERROR, logger="arkivflode.alerts"):
        on_failure(_context("extract", "OSError: disk full"))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "arkivflode.alerts"]
    assert lines[0]["kind"] == "system" and lines[0]["who_acts"] == "IT operations"
    assert {"event": "arkivflode.alert_not_sent", "channel": "webhook", "reason": "URLError"} in lines
    assert len(smtp_server.messages) == 1 and webhook_server == []


def test_the_quarantine_case_itself_is_linked_when_the_catalogue_knows_it(smtp_server, monkeypatch, tmp_path):
    from transforms.config.settings import Settings
    from transforms.pipeline import catalogue
    from transforms.quality.quarantine import open_case

    monkeypatch.setenv("ARKIV_HOME", str(tmp_path))
    monkeypatch.setenv("ARKIV_ALERT_EMAIL_ARCHIVISTS", "arkivarie@kommun.example")
    held = tmp_path / "quarantine" / "lex" / "2025"
    held.mkdir(parents=True)
    case_id = open_case(catalogue(Settings.from_env().ensure()), system="lex", batch_id="lex/2025", kind="quality",
                        reasons=["rule valid_personnummer: 1 row"], path=held)
    on_failure(_context("quality", "CONTENT PROBLEM — lex batch 2025 failed its gate"))
    [(_, _, raw)] = smtp_server.messages
    assert f"http://arkiv.kommun.example:8081/arkiv/case?id={case_id.replace('/', '%2F')}" in _body(_mail(raw))
