"""The archivist's page in a real Airflow API server, driven by Debian's headless Chromium.

An Airflow 3.3 API server (simple auth manager, two users: ``archivist`` with role user and
``reader`` with role viewer) mounts the plugin. Chromium logs in through Airflow's own login
page, opens the list of quarantine cases, opens a case's report and its Data Docs, approves
the case with a justification and opens the overview chart. Screenshots are saved under the
test's output folder (``test-output/ui/`` in the checkout, or ``$ARKIV_TEST_OUTPUT``).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from testservices import airflow_api_server

from transforms.catalogue import Catalogue
from transforms.cli import main
from transforms.quality import quarantine as review

# A group of its own (one worker, one API server for the module): it uses none of the "airflow"
# group's per-worker Airflow home, and in that group it waited behind the other slow Airflow files.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("airflow-archivist-page")]

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PASSWORDS = {"archivist": "arkiv-test-1", "reader": "las-test-1"}
OUTPUT = Path(os.environ.get("ARKIV_TEST_OUTPUT") or PROJECT / "test-output") / "ui"


def _personnummer(url: str) -> set[str]:
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return {r[0] for r in db.execute("SELECT personnummer FROM parties WHERE personnummer IS NOT NULL")}
    finally:
        db.close()


@pytest.fixture(scope="module")
def quarantined(tmp_path_factory, lex_bad_source) -> dict:
    """A catalogue with one open quality case, made by a real run of the Lex pipeline (`arkiv run`)."""
    home = tmp_path_factory.mktemp("ui") / "var"
    env = {"ARKIV_HOME": str(home), "ARKIV_LEX_FILES": str(lex_bad_source["files"]),
           "ARKIV_CONN_LEX_DB": lex_bad_source["url"]}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        assert main(["run", "lex", "--start", "2025-01-01", "--end", "2026-01-01"]) == 1
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    cat = Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")
    (case,) = review.cases(cat, status="open")
    return {"home": home, "case": case.id, "catalogue": cat, "pnr": _personnummer(lex_bad_source["url"])}


SERVER_LOG: dict[str, Path] = {}


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> dict:
    """An Airflow home whose metadata database ``airflow db migrate`` is migrating in the background,
    while ``quarantined`` runs the Lex pipeline (the two took turns before)."""
    root = tmp_path_factory.mktemp("airflow-ui")
    (root / "passwords.json").write_text(json.dumps(PASSWORDS), encoding="utf-8")
    env = {**os.environ, "AIRFLOW_HOME": str(root / "airflow"), "ARKIV_HOME": str(root / "var"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "archivist:user,reader:viewer",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
           "GX_ANALYTICS_ENABLED": "False"}
    with open(root / "db-migrate.log", "wb") as log:
        migrating = subprocess.Popen([BIN / "airflow", "db", "migrate"], env=env, stdout=log,
                                     stderr=subprocess.STDOUT)
    yield {"root": root, "env": env, "migrating": migrating}
    if migrating.poll() is None:  # a failed fixture before the server: end what this test started
        migrating.kill()
        migrating.wait(timeout=30)


@pytest.fixture(scope="module")
def api_server(airflow_home, quarantined) -> str:
    root = airflow_home["root"]
    try:
        migrated = airflow_home["migrating"].wait(timeout=600)
    except subprocess.TimeoutExpired:
        migrated = None
    assert migrated == 0, "airflow db migrate failed:\n" + (root / "db-migrate.log").read_text()[-5000:]
    env = {**airflow_home["env"], "ARKIV_HOME": str(quarantined["home"])}  # the home with the open case
    SERVER_LOG["path"] = root / "api-server.log"
    with airflow_api_server(env, root / "api-server.log") as base:
        yield base


def _token(base: str, user: str) -> str:
    req = urllib.request.Request(f"{base}/auth/token", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"username": user, "password": PASSWORDS[user]}).encode())
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
        return json.load(r)["access_token"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _request(url: str, token: str | None = None, data: dict | None = None) -> tuple[int, str, dict]:
    opener = urllib.request.build_opener(_NoRedirect)
    headers = {"Cookie": f"_token={token}"} if token else {}
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with opener.open(urllib.request.Request(url, data=body, headers=headers), timeout=60) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace"), dict(exc.headers)


def test_without_a_session_the_page_sends_you_to_airflows_login(api_server):
    status, _, headers = _request(f"{api_server}/arkiv/")
    assert status == 303
    assert headers["location"].startswith(f"{api_server}/auth/login?next=%2Farkiv%2F") or \
        headers["location"].startswith("/auth/login?next=%2Farkiv%2F")


def test_a_viewer_reads_but_may_not_decide(api_server, quarantined):
    token = _token(api_server, "reader")
    case = urllib.parse.quote(quarantined["case"], safe="")
    status, page, _ = _request(f"{api_server}/arkiv/case?id={case}", token)
    assert status == 200 and "valid_personnummer" in page
    assert "You may read but not decide" in page and 'name="reason"' not in page
    status, _, _ = _request(f"{api_server}/arkiv/case/decision", token,
                            {"id": quarantined["case"], "action": "approve", "reason": "försök"})
    assert status == 403
    assert review.cases(quarantined["catalogue"], status="open")  # nothing was decided


def _post(url: str, token: str, data: dict, headers: dict) -> int:
    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode(),
                                 headers={"Cookie": f"_token={token}", **headers})
    try:
        with opener.open(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_cross_site_post_decides_nothing(api_server, quarantined):
    """A page on another site makes the archivist's browser POST a decision (the session cookie goes
    along): without the form's token, with a token for another case, or from another origin, it is refused."""
    import re

    token = _token(api_server, "archivist")
    case = quarantined["case"]
    status, page, _ = _request(f"{api_server}/arkiv/case?id={urllib.parse.quote(case, safe='')}", token)
    assert status == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    url = f"{api_server}/arkiv/case/decision"
    form = {"id": case, "action": "approve", "reason": "förfalskat"}
    here = api_server.removeprefix("http://")
    attempts = [
        ({}, {}),  # no token at all (a plain cross-site form)
        ({"csrf": "1." + "0" * 64}, {}),  # a made-up token
        ({"csrf": csrf}, {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}),
        ({"csrf": csrf}, {"Origin": "null"}),
        ({"csrf": csrf}, {"Sec-Fetch-Site": "same-site"}),
        ({"csrf": csrf[:-1] + ("0" if csrf[-1] != "0" else "1")}, {"Origin": f"http://{here}"}),
    ]
    for extra, headers in attempts:
        assert _post(url, token, {**form, **extra}, headers) == 403, (extra, headers)
        assert [c.id for c in review.cases(quarantined["catalogue"], status="open")] == [case]
    # a reader's token is not an archivist's: the viewer cannot reuse it either
    assert _post(url, _token(api_server, "reader"), {**form, "csrf": csrf}, {"Origin": f"http://{here}"}) == 403
    assert [c.id for c in review.cases(quarantined["catalogue"], status="open")] == [case]


def test_a_decision_without_the_confirmation_decides_nothing(api_server, quarantined):
    import re

    token = _token(api_server, "archivist")
    case = quarantined["case"]
    status, page, _ = _request(f"{api_server}/arkiv/case?id={urllib.parse.quote(case, safe='')}", token)
    assert status == 200 and 'name="confirm"' in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    here = api_server.removeprefix("http://")
    form = {"id": case, "action": "approve", "reason": "Kända fel", "csrf": csrf}
    assert _post(f"{api_server}/arkiv/case/decision", token, form, {"Origin": f"http://{here}"}) == 400
    assert [c.id for c in review.cases(quarantined["catalogue"], status="open")] == [case]


def test_the_api_servers_request_log_holds_no_query_string_of_ours(api_server, quarantined):
    import re

    pnr = sorted(quarantined["pnr"])[0]
    for path in (f"/arkiv-api/api/v1/search?personnummer={pnr}&q=Anna%20Andersson",
                 f"/arkiv-api/api/v1/records/lex/1?purpose={pnr}",
                 f"/arkiv-api/api/v1/records/lex/{pnr}",
                 f"/arkiv/case?id={pnr}"):
        status, body, _ = _request(f"{api_server}{path}")
        assert status < 500 and pnr not in body
    def logged() -> str | None:  # the server writes the line just after it answers
        text = SERVER_LOG["path"].read_text(encoding="utf-8", errors="replace")
        return text if "/arkiv/case" in text else None

    deadline = time.monotonic() + 10
    while not (log := logged()) and time.monotonic() < deadline:
        time.sleep(0.1)
    log = log or SERVER_LOG["path"].read_text(encoding="utf-8", errors="replace")
    assert "/arkiv-api/api/v1/search" in log, log[-3000:]  # the request log is on: it is what we read
    assert pnr not in log and pnr.replace("-", "") not in log and "Anna" not in log
    ours = [line for line in log.splitlines() if "/arkiv-api/" in line or "/arkiv/" in line]
    assert ours and not any("?" in line or re.search(r"query='[^']", line) for line in ours), ours


def test_archivist_logs_in_opens_the_list_and_the_report_and_decides_in_chromium(api_server, quarantined):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "Debian's chromium and chromium-driver (make install)"
    if OUTPUT.exists():
        shutil.rmtree(OUTPUT)
    OUTPUT.mkdir(parents=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    wait = WebDriverWait(driver, 60)
    try:
        driver.get(f"{api_server}/arkiv/")
        wait.until(ec.presence_of_element_located((By.NAME, "username")))  # Airflow's own login page
        driver.save_screenshot(str(OUTPUT / "1-login.png"))
        driver.find_element(By.NAME, "username").send_keys("archivist")
        driver.find_element(By.NAME, "password").send_keys(PASSWORDS["archivist"])
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

        table = wait.until(ec.presence_of_element_located((By.ID, "cases")))
        assert quarantined["case"] in table.text and "awaiting decision" in table.text
        driver.save_screenshot(str(OUTPUT / "2-cases.png"))
        # the filters narrow the list
        driver.get(f"{api_server}/arkiv/?status=approved")
        assert "No cases" in wait.until(ec.presence_of_element_located((By.ID, "cases"))).text
        driver.get(f"{api_server}/arkiv/?system=lex&status=open")
        wait.until(ec.presence_of_element_located((By.LINK_TEXT, quarantined["case"]))).click()

        wait.until(ec.presence_of_element_located((By.ID, "history")))
        page = driver.page_source
        assert "Ogiltigt personnummer" in page and "Invalid personnummer" in page and "XXXXXX-XXXX" in page
        assert "datetime.date(" not in page
        for pnr in quarantined["pnr"]:
            assert pnr not in page, "a personnummer in clear text on the report page"
        driver.save_screenshot(str(OUTPUT / "3-report.png"))

        driver.find_element(By.LINK_TEXT, "alla kontroller i detalj / every check in detail").click()
        wait.until(ec.presence_of_element_located((By.LINK_TEXT, "parties"))).click()
        wait.until(lambda d: "valid_personnummer" in d.page_source)
        for pnr in quarantined["pnr"]:
            assert pnr not in driver.page_source, "a personnummer in clear text in the Data Docs"
        driver.save_screenshot(str(OUTPUT / "4-datadocs.png"))

        driver.back()
        driver.back()
        wait.until(ec.presence_of_element_located((By.NAME, "reason"))).send_keys("Kända fel, dokumenterade")
        # not confirmed: the browser holds the form back (the box is required) and nothing is decided
        driver.find_element(By.CSS_SELECTOR, "button[value=approve]").click()
        assert driver.find_element(By.NAME, "confirm").get_attribute("validationMessage")
        assert [c.id for c in review.cases(quarantined["catalogue"], status="open")] == [quarantined["case"]]
        driver.find_element(By.NAME, "confirm").click()
        driver.find_element(By.CSS_SELECTOR, "button[value=approve]").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "approved"))
        assert "archivist" in driver.find_element(By.ID, "status").find_element(By.XPATH, "..").text
        driver.save_screenshot(str(OUTPUT / "5-decided.png"))

        driver.get(f"{api_server}/arkiv/overview")
        chart = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "svg.chart")))
        assert chart.get_attribute("aria-label") == "lex"
        assert "lex" in driver.find_element(By.ID, "outcomes").text
        driver.save_screenshot(str(OUTPUT / "6-overview.png"))
    finally:
        driver.quit()

    (case,) = review.cases(quarantined["catalogue"], status="approved")
    assert case.decided_by == "archivist" and case.justification == "Kända fel, dokumenterade"
    events = quarantined["catalogue"].events(batch_id=case.batch_id)
    assert any(ev.type == "decision" and ev.agent == "archivist" for ev in events)
    for shot in ("1-login", "2-cases", "3-report", "4-datadocs", "5-decided", "6-overview"):
        assert (OUTPUT / f"{shot}.png").stat().st_size > 5000


def test_the_archive_api_is_mounted_beside_it(api_server):
    status, body, _ = _request(f"{api_server}/arkiv-api/openapi.json")
    assert status == 200
    paths = json.loads(body)["paths"]
    assert any(p.startswith("/api/v1/records") for p in paths) and any("receipt" in p for p in paths)
    status, _, _ = _request(f"{api_server}/arkiv-api/api/v1/search?system=lex")
    assert status == 401  # the archive API wants its own credential
    status, _, _ = _request(f"{api_server}/arkiv-api/api/v1/search?q=bygglov")
    assert status == 400  # and search text is never taken from a URL, whoever sends it
