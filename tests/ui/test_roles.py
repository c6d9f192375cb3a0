"""Each role's main flow in a real Airflow, driven by Debian's headless Chromium.

One Airflow 3.3 deployment on this machine — api-server, scheduler (LocalExecutor), dag-processor
and triggerer, PostgreSQL for the metadata, the project's DAGs and plugin (the same stack as
tests/integration/airflow_cluster.py) — and three people:

* the archivist: the Lex DAG's scheduled run for 2025 stops at a failed quality gate and waits;
  the archivist opens Airflow's *Required actions*, reads the request, approves with a deviation,
  a justification and the confirmation; the same run resumes and archives, the catalogue records
  the decision once, by the signed-in Airflow user, and the PREMIS carries the deviation. The run
  list names the period (``lex · period 2025``) in the run's note;
* the system owner: the Arkivflöde status page shows HR+'s months with no delivery as missing;
* IT operations: Procapita's run fails at extract (its source connection is not configured) and
  the alert arrives at a real SMTP server on loopback with kind ``system``, for IT operations.

Screenshots go to the test's tmp folder (``screens/``) and, as for the archivist's page test, to
``test-output/ui/roles/`` in the checkout (or ``$ARKIV_TEST_OUTPUT``).
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import importlib.util
import json
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import uuid
from pathlib import Path

import pytest
from arkivflode_airflow import hitl

from transforms.catalogue import Catalogue
from transforms.quality import quarantine as review

# A group of its own (one worker, one stack for the module): nothing here shares the "airflow" group's
# per-worker Airflow home, and in that group it waited behind the other slow Airflow files.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration, pytest.mark.xdist_group("airflow-roles")]

PROJECT = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PASSWORDS = {"admin": "admin-test-1", "archivist": "arkiv-test-1", "owner": "agare-test-1"}
OUTPUT = Path(os.environ.get("ARKIV_TEST_OUTPUT") or PROJECT / "test-output") / "ui" / "roles"
IT_MAIL, ARCHIVIST_MAIL = "drift@kommun.example", "arkivarie@kommun.example"


def _cluster_module():
    if "airflow_cluster" in sys.modules:
        return sys.modules["airflow_cluster"]
    spec = importlib.util.spec_from_file_location("airflow_cluster", PROJECT / "tests/integration/airflow_cluster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["airflow_cluster"] = module
    spec.loader.exec_module(module)
    return module


class _Inbox:
    def __init__(self):
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's handler name
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, lex_bad_source):
    """The running deployment, its SMTP inbox, and where the archive's files are."""
    import sqlalchemy as sa
    from aiosmtpd.controller import Controller
    from testservices import PG_ADMIN_URL, ensure_postgres

    ac = _cluster_module()
    root = tmp_path_factory.mktemp("roles")
    home = root / "var"
    (root / "hrplus-inbox").mkdir()
    inbox = _Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=ac.free_port())
    smtp.start()
    ensure_postgres()
    name = f"arkiv_roles_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    metadata = sa.engine.make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg2", database=name) \
        .render_as_string(hide_password=False)
    api_port = ac.free_port()
    base = f"http://127.0.0.1:{api_port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ARKIV_", "AWS_"))},
        **ac.read_env_file(),  # deploy/airflow.env, on one machine:
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "AIRFLOW__CORE__FERNET_KEY": "",
        "AIRFLOW__METRICS__STATSD_ON": "False",
        # the two DAGs the tests run (the status page reads every system's YAML from the checkout)
        "AIRFLOW__CORE__DAGS_FOLDER": str(ac.dags_folder(root / "dags", ("lex", "procapita"))),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__DEFAULT_TIMEZONE": "Europe/Stockholm",
        **ac.PARSE_ONCE,
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,archivist:user,owner:viewer",
        "ARKIV_HOME": str(home),
        "ARKIV_LEX_FILES": str(lex_bad_source["files"]),
        "AIRFLOW_CONN_LEX_DB": json.dumps({"conn_type": "sqlite",
                                           "host": lex_bad_source["url"].removeprefix("sqlite:///")}),
        "ARKIV_HRPLUS_INBOX": str(root / "hrplus-inbox"),
        "ARKIV_DECISION_POKE_SECONDS": "2",
        "ARKIV_ALERT_EMAIL_IT": IT_MAIL,
        "ARKIV_ALERT_EMAIL_ARCHIVISTS": ARCHIVIST_MAIL,
        "ARKIV_ALERT_SMTP_CONN": "arkiv_smtp",
        "AIRFLOW_CONN_ARKIV_SMTP": json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": smtp.port,
            "extra": {"from_email": "arkivflode@kommun.example", "disable_tls": True, "disable_ssl": True,
                      "retry_limit": 1, "timeout": 10}}),
    }
    cluster = ac.AirflowCluster(root=root / "airflow", env=env, api_port=api_port)

    def write_passwords() -> None:
        (cluster.root / "api-server").mkdir(parents=True, exist_ok=True)
        (cluster.root / "api-server" / "passwords.json").write_text(json.dumps(PASSWORDS), encoding="utf-8")

    cluster.write_password = write_passwords
    cluster.password = PASSWORDS["admin"]
    try:
        cluster.start_core()
        cluster.start("triggerer", "triggerer")
        cluster.wait_for_api(timeout=300)
        yield {"cluster": cluster, "base": base, "home": home, "inbox": inbox, "root": root,
               "pnr": lex_bad_source}
    except BaseException:
        print(cluster.logs(80))
        raise
    finally:
        cluster.stop()
        print("roles stack timings (s):", cluster.timings)  # shown with -rP
        smtp.stop()
        with contextlib.suppress(sa.exc.SQLAlchemyError), admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _api(stack, method: str, path: str, body: dict | None = None) -> dict:
    cluster = stack["cluster"]
    token = stack.get("token") or cluster.token()
    stack["token"] = token
    try:
        return cluster.request(method, "/api/v2" + path, body, token=token)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{method} {path}: HTTP {exc.code} {exc.read()[:2000]!r}") from None


def _wait(stack, what: str, check, timeout: float = 600, interval: float = 2):
    try:
        return stack["cluster"].wait(what, check, timeout, interval)
    except (TimeoutError, RuntimeError):
        print(stack["cluster"].logs(120))
        raise


def _unpause(stack, dag_id: str) -> dict:
    def parsed():
        with contextlib.suppress(AssertionError):
            return _api(stack, "GET", f"/dags/{dag_id}")
        return None

    _wait(stack, f"the dag-processor parses {dag_id}", parsed, 300)
    return _api(stack, "PATCH", f"/dags/{dag_id}", {"is_paused": False})


def _runs(stack, dag_id: str) -> list[dict]:
    return _api(stack, "GET", f"/dags/{dag_id}/dagRuns?order_by=-run_after")["dag_runs"]


def _task_state(stack, dag_id: str, run_id: str, task_id: str) -> str | None:
    with contextlib.suppress(AssertionError):
        ti = _api(stack, "GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/"
                                f"{task_id}")
        return ti.get("state")
    return None


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "Debian's chromium and chromium-driver (make install)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1100", "--lang=en-US"):
        opts.add_argument(arg)
    # the browser is in Sweden: Airflow's UI shows times in the browser's own zone
    service = Service(str(CHROMEDRIVER), env={**os.environ, "TZ": "Europe/Stockholm"})
    driver = webdriver.Chrome(service=service, options=opts)
    yield driver
    driver.quit()


class Screens:
    def __init__(self, tmp: Path, role: str):
        self.dirs = [tmp / "screens", OUTPUT / role]
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        self.taken: list[str] = []

    def __call__(self, driver, name: str) -> None:
        for d in self.dirs:
            driver.save_screenshot(str(d / f"{name}.png"))
        self.taken.append(name)

    def check(self) -> None:
        for name in self.taken:
            assert (self.dirs[0] / f"{name}.png").stat().st_size > 5000, name


def _login(driver, base: str, user: str, next_path: str = "/") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.delete_all_cookies()
    driver.get(f"{base}/auth/login?next={urllib.parse.quote(next_path, safe='')}")
    wait = WebDriverWait(driver, 60)
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(PASSWORDS[user])
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "/auth/login" not in d.current_url)


def test_the_archivist_decides_in_airflows_required_actions_and_the_run_archives(stack, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Screens(tmp_path, "archivist")
    base, home = stack["base"], stack["home"]
    _unpause(stack, "lex")  # catchup off: the scheduler starts the latest full interval, the year 2025
    run = _wait(stack, "the scheduler starts the lex run", lambda: (_runs(stack, "lex") or [None])[0], 300)
    run_id = run["dag_run_id"]
    _wait(stack, "the lex run waits for a decision (await_decision deferred)",
          lambda: _task_state(stack, "lex", run_id, "await_decision") == "deferred", 600)
    (case,) = review.cases(Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}"), status="open")

    # the run names its period, and the waiting batch is a required action
    run = _api(stack, "GET", f"/dags/lex/dagRuns/{urllib.parse.quote(run_id, safe='')}")
    assert run["note"] == "lex · period 2025", run
    pending = _api(stack, "GET", "/dags/~/dagRuns/~/hitlDetails?response_received=false")["hitl_details"]
    assert [(d["task_instance"]["dag_id"], d["task_instance"]["task_id"]) for d in pending] == [
        ("lex", "await_decision")]
    assert case.id in pending[0]["body"] and "lex 2025" in pending[0]["subject"]

    wait = WebDriverWait(browser, 60)
    run_page = f"{base}/dags/lex/runs/{urllib.parse.quote(run_id, safe='')}"
    _login(browser, base, "archivist", "/")
    browser.get(run_page)
    wait.until(lambda d: "lex · period 2025" in d.find_element(By.TAG_NAME, "body").text)  # the run's note
    shots(browser, "1-run-with-period")

    browser.get(f"{run_page}/tasks/await_decision/required_actions")
    wait.until(lambda d: "decision needed" in d.find_element(By.TAG_NAME, "body").text)
    approve = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f'button[data-testid="hitl-option-{hitl.APPROVE}"]'))
    shots(browser, "2-required-action")
    text = browser.find_element(By.TAG_NAME, "body").text
    assert case.id in text and "Invalid personnummer" in text and "Read the report" in text
    for pnr in _personnummer(stack["pnr"]["url"]):
        assert pnr not in browser.page_source, "a personnummer in clear text in the required action"

    # Airflow's form holds the answer back until the justification is written ...
    assert approve.get_attribute("disabled") is not None
    field = browser.find_element(By.ID, f"element_{hitl.JUSTIFICATION}")
    field.send_keys("Kända fel i källsystemet, dokumenterade i ärende 2026/17")
    wait.until(lambda d: approve.get_attribute("disabled") is None)
    # ... and an answer without the confirmation decides nothing: the request is asked again
    approve.click()
    wait.until(lambda d: "response successful" in d.find_element(By.TAG_NAME, "body").text)
    ti_path = f"/dags/lex/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/await_decision"
    _wait(stack, "the unconfirmed answer is asked again", lambda: (
        _task_state(stack, "lex", run_id, "await_decision") == "deferred"
        and not _api(stack, "GET", f"{ti_path}/-1/hitlDetails")["response_received"]), 300)
    assert review.case_status(Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}"), case.id) == "open"

    browser.get(f"{run_page}/tasks/await_decision/required_actions")
    approve = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f'button[data-testid="hitl-option-{hitl.APPROVE}"]'))
    browser.find_element(By.ID, f"element_{hitl.JUSTIFICATION}").send_keys(
        "Kända fel i källsystemet, dokumenterade i ärende 2026/17")
    confirm = browser.find_element(By.ID, f"switch:element_{hitl.CONFIRM}")
    browser.execute_script("arguments[0].scrollIntoView();", confirm)
    confirm.click()
    wait.until(lambda d: approve.get_attribute("disabled") is None and confirm.get_attribute("data-state") == "checked")
    shots(browser, "3-filled-in")
    approve.click()
    wait.until(lambda d: "response successful" in d.find_element(By.TAG_NAME, "body").text)

    _wait(stack, "the lex run resumes and archives", lambda: (
        _api(stack, "GET", f"/dags/lex/dagRuns/{urllib.parse.quote(run_id, safe='')}")["state"]
        in ("success", "failed")), 900)
    run = _api(stack, "GET", f"/dags/lex/dagRuns/{urllib.parse.quote(run_id, safe='')}")
    assert run["state"] == "success", stack["cluster"].logs(150)
    browser.get(run_page)
    wait.until(lambda d: "Success" in d.find_element(By.TAG_NAME, "body").text)
    time.sleep(2)
    shots(browser, "4-run-archived")
    shots.check()

    cat = Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")
    (decided,) = review.cases(cat)
    assert (decided.status, decided.decided_by) == ("approved", "archivist")
    assert decided.justification == "Kända fel i källsystemet, dokumenterade i ärende 2026/17"
    decisions = [e for e in cat.events(batch_id="lex/2025") if e.type == "decision"]
    assert len(decisions) == 1 and "in Airflow's Required actions" in decisions[0].detail
    stored = sorted((home / "mellanarkiv").rglob("*.tar"))
    assert stored and len(stored) == len(cat.packages())
    with tarfile.open(stored[0]) as t:
        premis = "".join(t.extractfile(m).read().decode("utf-8") for m in t.getmembers()
                         if m.name.endswith("premis.xml"))
    assert "deviation approved by archivist" in premis and "dokumenterade i ärende 2026/17" in premis
    answered = _api(stack, "GET", "/dags/lex/dagRuns/~/hitlDetails")["hitl_details"]
    assert answered[0]["responded_by_user"]["name"] == "archivist"


def _personnummer(url: str) -> set[str]:
    import sqlite3

    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return {r[0] for r in db.execute("SELECT personnummer FROM parties WHERE personnummer IS NOT NULL")}
    finally:
        db.close()


def test_the_system_owners_status_page_shows_a_missing_delivery(stack, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Screens(tmp_path, "system-owner")
    base = stack["base"]
    _login(browser, base, "owner", "/arkiv/status")
    wait = WebDriverWait(browser, 60)
    browser.get(f"{base}/arkiv/status?system=hrplus")
    table = wait.until(ec.presence_of_element_located((By.ID, "intervals")))
    rows = table.find_elements(By.CSS_SELECTOR, "tr[data-system=hrplus]")
    assert rows, table.text
    # HR+ delivers monthly into its inbox; nothing was delivered and every deadline has passed
    states = {r.get_attribute("data-period"): r.find_element(By.CSS_SELECTOR, "td.state").text for r in rows}
    assert "2025-01" in states and all("delivery missing" in s for s in states.values()), states
    assert "leverans saknas" in browser.find_element(By.ID, "summary").text
    shots(browser, "1-status-hrplus")
    browser.get(f"{base}/arkiv/status")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "tr[data-system=lex]")))
    shots(browser, "2-status-all")
    shots.check()


def test_it_operations_get_the_failed_extract_by_mail_as_a_system_problem(stack, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Screens(tmp_path, "it-operations")
    base = stack["base"]
    _unpause(stack, "procapita")  # its source connection is not configured here: a configuration problem
    run = _wait(stack, "the scheduler starts the procapita run", lambda: (_runs(stack, "procapita") or [None])[0],
                300)
    run_id = run["dag_run_id"]
    _wait(stack, "procapita's extract fails", lambda: _task_state(stack, "procapita", run_id, "extract") == "failed",
          600)
    _wait(stack, "procapita's run ends", lambda: _api(
        stack, "GET", f"/dags/procapita/dagRuns/{urllib.parse.quote(run_id, safe='')}")["state"] != "running", 300)
    _wait(stack, "the alert mail arrives", lambda: stack["inbox"].messages, 60, 1)
    time.sleep(3)  # nothing else may follow: one failure, one mail
    mine = [(rcpt, raw) for rcpt, raw in stack["inbox"].messages if b"procapita" in raw]
    assert len(mine) == 1, [m[0] for m in stack["inbox"].messages]
    [(rcpt, raw)] = mine
    assert rcpt == [IT_MAIL]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["X-Arkivflode-Kind"] == "system"
    assert message["Subject"].startswith("[Arkivflöde] procapita 2025: systemfel / system error — IT operations")
    body = "".join(p.get_content() for p in message.walk() if p.get_content_maintype() == "text")
    assert f"{base}/dags/procapita/runs/" in body and "/tasks/extract" in body
    assert _task_state(stack, "procapita", run_id, "quality") == "upstream_failed"
    assert _task_state(stack, "procapita", run_id, "await_decision") == "upstream_failed"

    _login(browser, base, "admin", f"/dags/procapita/runs/{urllib.parse.quote(run_id, safe='')}")
    WebDriverWait(browser, 60).until(lambda d: "procapita · period 2025" in d.find_element(By.TAG_NAME, "body").text)
    time.sleep(2)
    shots(browser, "1-failed-run")
    (OUTPUT / "it-operations" / "alert.eml").write_bytes(raw)
    shots.check()
    # and the run itself says it failed: a run that archived nothing is never green
    run = _api(stack, "GET", f"/dags/procapita/dagRuns/{urllib.parse.quote(run_id, safe='')}")
    assert run["state"] == "failed", run["state"]
