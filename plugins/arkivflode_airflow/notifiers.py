"""Where an alert goes: e-mail and a webhook, both as Airflow notifiers.

The alert itself (``alerts.alert_line``) is built from safe lines only; these notifiers carry it
and add nothing from a record. Nothing here holds an address of a server or a secret: the SMTP
server, its credentials and the sender are the Airflow connection ``ARKIV_ALERT_SMTP_CONN``
names (default ``smtp_default``); the webhook's URL and headers are the HTTP connection
``ARKIV_ALERT_WEBHOOK_CONN`` names. Recipients are plain environment variables: who acts
decides who is written to (docs/operations.md, "Alerts").
"""

from __future__ import annotations

import html
import json
import os
import urllib.request
from typing import Any

from airflow.providers.common.compat.notifier import BaseNotifier

#: who acts -> the variable naming that role's recipients (besides ARKIV_ALERT_EMAIL, which gets all)
ROLE_RECIPIENTS = {
    "archivists": "ARKIV_ALERT_EMAIL_ARCHIVISTS",
    "IT operations": "ARKIV_ALERT_EMAIL_IT",
    "system owner": "ARKIV_ALERT_EMAIL_SYSTEM_OWNER",
}
#: the alert's fields, in the order a person reads them, with their Swedish and English labels
FIELDS = (
    ("system", "System"), ("period", "Period / Period"), ("kind", "Slag / Kind"),
    ("who_acts", "Vem agerar / Who acts"), ("message", "Vad hände / What happened"),
    ("run_url", "Körningen i Airflow / The run in Airflow"),
    ("case_url", "Karantänärendet / The quarantine case"),
    ("dag_id", "DAG"), ("task_id", "Task"), ("run_id", "Run"), ("try_number", "Try"),
)
KIND_LABELS = {
    "content": "innehållsproblem / content problem",
    "system": "systemfel / system error",
    "delivery_missing": "leverans saknas / delivery missing",
    "fixity": "fixitetsfel / fixity failure",
}
WEBHOOK_TIMEOUT_SECONDS = 10


def recipients_for(who_acts: str, env: dict[str, str] | os._Environ | None = None) -> list[str]:
    """Everyone in ``ARKIV_ALERT_EMAIL`` plus the recipients of each role named in ``who_acts``."""
    env = os.environ if env is None else env
    names = [env.get("ARKIV_ALERT_EMAIL", "")]
    names += [env.get(var, "") for role, var in ROLE_RECIPIENTS.items() if role in who_acts]
    seen: dict[str, None] = {}
    for value in names:
        for address in value.replace(";", ",").split(","):
            if address.strip():
                seen.setdefault(address.strip(), None)
    return list(seen)


def subject_of(line: dict[str, Any]) -> str:
    period = f" {line['period']}" if line.get("period") else ""
    kind = KIND_LABELS.get(line["kind"], line["kind"])
    return f"[Arkivflöde] {line.get('system') or line.get('dag_id')}{period}: {kind} — {line['who_acts']}"


def html_of(line: dict[str, Any]) -> str:
    rows = []
    for key, label in FIELDS:
        value = line.get(key)
        if value in (None, ""):
            continue
        shown = html.escape(KIND_LABELS.get(value, value) if key == "kind" else str(value))
        if key.endswith("_url"):
            shown = f'<a href="{shown}">{shown}</a>'
        rows.append(f"<tr><th align=\"left\">{html.escape(label)}</th><td>{shown}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def email_notifier(line: dict[str, Any], to: list[str]) -> BaseNotifier:
    """The SMTP provider's notifier, with our subject and body already written."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    return SmtpNotifier(to=to, subject=subject_of(line), html_content=html_of(line),
                        smtp_conn_id=os.environ.get("ARKIV_ALERT_SMTP_CONN") or None,
                        custom_headers={"X-Arkivflode-Kind": line["kind"]})


class WebhookNotifier(BaseNotifier):
    """POST the alert as JSON to the URL of an HTTP connection.

    The connection's host is the whole URL (JSON form: ``{"conn_type": "http", "host":
    "https://chat.example/hooks/…"}``) or host, port and scheme in their own fields; its extra
    may hold ``{"headers": {…}}`` (e.g. an ``Authorization``). A webhook that needs a token in its URL keeps
    it there, in the connection, not in code or the DAG.
    """

    template_fields = ()

    def __init__(self, payload: dict[str, Any], conn_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.payload, self.conn_id = payload, conn_id

    def target(self) -> tuple[str, dict[str, str]]:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(self.conn_id)
        host = conn.host or ""
        if "://" in host:
            url = host
        else:
            scheme = conn.conn_type if conn.conn_type in ("http", "https") else "https"
            url = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
            if conn.schema:
                url += "/" + conn.schema.lstrip("/")
        headers = (conn.extra_dejson or {}).get("headers") or {}
        return url, {str(k): str(v) for k, v in headers.items()}

    def notify(self, context: Any) -> None:
        url, headers = self.target()
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"connection {self.conn_id}: the webhook needs an http(s) URL")
        body = json.dumps(self.payload, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - http(s) only, checked above
                                         headers={**headers, "Content-Type": "application/json; charset=utf-8"})
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:  # noqa: S310
            if not 200 <= response.status < 300:
                raise OSError(f"webhook answered {response.status}")


def notifiers_for(line: dict[str, Any]) -> list[tuple[str, BaseNotifier]]:
    """The channels configured here, each as (name, notifier); none when nothing is configured."""
    out: list[tuple[str, BaseNotifier]] = []
    to = recipients_for(line["who_acts"])
    if to:
        out.append(("email", email_notifier(line, to)))
    conn_id = os.environ.get("ARKIV_ALERT_WEBHOOK_CONN")
    if conn_id:
        out.append(("webhook", WebhookNotifier(line, conn_id)))
    return out
