"""A real Airflow run whose extract fails: IT operations' alert arrives at a real SMTP server on
loopback with the right kind, the period, and a link to the run — through the DAG's own failure
callback, with the context Airflow's task runner gives it."""

from __future__ import annotations

import email
import email.policy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("airflow")]

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


class _Inbox:
    def __init__(self):
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's handler name
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failed_extract_mails_it_operations_with_kind_period_and_run_link(tmp_path, lex_source):
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        airflow_home = tmp_path / "airflow"
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("ARKIV_", "AIRFLOW_CONN_", "AIRFLOW__"))}
        env = {**base, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
        subprocess.run([BIN / "airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
        env.update({
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
            "AIRFLOW__API__BASE_URL": "http://arkiv.kommun.example:8081",
            "ARKIV_HOME": str(tmp_path / "var"),
            "ARKIV_LEX_FILES": str(lex_source["files"]),
            "GX_ANALYTICS_ENABLED": "False",
            # lex's source connection is not defined: a configuration problem, IT operations' to fix
            "ARKIV_ALERT_EMAIL_IT": "drift@kommun.example",
            "ARKIV_ALERT_EMAIL_ARCHIVISTS": "arkivarie@kommun.example",
            "ARKIV_ALERT_SMTP_CONN": "arkiv_smtp",
            "AIRFLOW_CONN_ARKIV_SMTP": json.dumps({
                "conn_type": "smtp", "host": "127.0.0.1", "port": controller.port,
                "extra": {"from_email": "arkivflode@kommun.example", "disable_tls": True, "disable_ssl": True,
                          "retry_limit": 1, "timeout": 10}}),
        })
        run = subprocess.run([BIN / "airflow", "dags", "test", "lex", "2026-01-02"], env=env, capture_output=True,
                             text=True, timeout=900)
    finally:
        controller.stop()
    out = run.stdout + run.stderr
    assert "arkivflode.task_failed" in out, out[-3000:]
    assert len(inbox.messages) == 1, (len(inbox.messages), out[-3000:])  # one failure, one mail: none downstream
    [(rcpt, raw)] = inbox.messages
    assert rcpt == ["drift@kommun.example"]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Subject"].startswith("[Arkivflöde] lex 2025: systemfel / system error — IT operations")
    assert message["X-Arkivflode-Kind"] == "system"
    body = "".join(p.get_content() for p in message.walk() if p.get_content_maintype() == "text")
    assert "http://arkiv.kommun.example:8081/dags/lex/runs/manual__" in body and "/tasks/extract" in body
    assert "LEX_DB" in body  # the message names the missing connection
