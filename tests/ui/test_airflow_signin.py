"""Airflow's own UI signs people in through the OpenID Connect provider, driven by Debian's headless Chromium.

A real ``airflow api-server`` with the FAB auth manager and deploy/airflow/webserver_config.py
(SQLite, its own AIRFLOW_HOME) and the tests' provider (tests/oidc/provider.mjs, client
``airflow``) with the role mapping the archive's API uses. Chromium opens the Airflow UI, is sent
to the provider, signs in as an archivist and comes back signed in; Airflow's user is the
provider's subject with the person's name, and the archive role maps to Airflow's role ``User``.
IT operations get ``Operations`` (Airflow's ``Op`` less answering *Required actions*, which are
archivists' decisions); a researcher (no Airflow role mapped) signs in too but gets only
``Public``: the API refuses them.
Screenshots go to ``test-output/airflow-signin/`` (or under ``$ARKIV_TEST_OUTPUT``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from oidc.oidctest import PASSWORD, oidc_provider_fixture  # noqa: F401 - the fixture
from testservices import airflow_api_server, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("airflow-signin")]

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
OUTPUT = Path(os.environ.get("ARKIV_TEST_OUTPUT") or PROJECT / "test-output") / "airflow-signin"
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, oidc_provider) -> dict:
    """An API server with the FAB auth manager signing in through the provider; yields its URL and database."""
    root = tmp_path_factory.mktemp("airflow-signin")
    (root / "dags").mkdir()
    port = free_port()  # the server's own URL is in its configuration (the provider redirects back to it)
    env = {**os.environ, **oidc_provider.airflow_env(),
           "AIRFLOW_HOME": str(root / "airflow"),
           "AIRFLOW__CORE__AUTH_MANAGER": FAB,
           "AIRFLOW__FAB__CONFIG_FILE": str(PROJECT / "deploy" / "airflow" / "webserver_config.py"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
           "AIRFLOW__API__SECRET_KEY": "airflow-signin-test-secret-key",
           "AIRFLOW__API_AUTH__JWT_SECRET": "airflow-signin-test-jwt-secret",
           "PYTHONPATH": str(PROJECT)}
    # `airflow db migrate` creates FAB's tables too (the auth manager's database manager)
    subprocess.run([BIN / "airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    with airflow_api_server(env, root / "api-server.log", port=port, start_timeout=120,
                            stop_grace=30) as base:
        yield {"base": base, "db": root / "airflow" / "airflow.db", "log": root / "api-server.log",
               "issuer": oidc_provider.issuer}


@pytest.fixture(scope="module")
def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

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
    yield driver
    driver.quit()


def _sign_in(driver, airflow: dict, login: str, shot: str) -> str:
    """Open the Airflow UI in a fresh browser session and sign in at the provider; returns Airflow's token."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base = airflow["base"]
    wait = WebDriverWait(driver, 60)
    driver.delete_all_cookies()
    driver.get(f"{base}/")
    # not signed in: Airflow's sign-in page, which offers the provider
    wait.until(ec.element_to_be_clickable((By.ID, "btn-signin-oidc")))
    assert driver.current_url.startswith(f"{base}/auth/login/")
    driver.save_screenshot(str(OUTPUT / f"{shot}-1-airflow-login.png"))
    driver.find_element(By.ID, "btn-signin-oidc").click()
    wait.until(ec.presence_of_element_located((By.ID, "login")))  # the provider's own page
    assert driver.current_url.startswith(f"{airflow['issuer']}/interaction/")
    driver.save_screenshot(str(OUTPUT / f"{shot}-2-provider.png"))
    driver.find_element(By.ID, "login").send_keys(login)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "submit").click()
    # back in Airflow, which has issued its own token for the UI
    wait.until(lambda d: d.current_url.startswith(f"{base}/") and "/auth/" not in d.current_url
               and d.get_cookie("_token"))
    return driver.get_cookie("_token")["value"]


def _api(base: str, path: str, token: str) -> tuple[int, dict]:
    req = urllib.request.Request(f"{base}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def _answer_required_action(base: str, token: str) -> int:
    """Answer a human-in-the-loop request of a DAG that does not exist: 404 if Airflow lets this user answer
    Required actions at all (it checks that first), 403 if not."""
    req = urllib.request.Request(
        f"{base}/api/v2/dags/no_such_dag/dagRuns/no_such_run/taskInstances/await_decision/-1/hitlDetails",
        method="PATCH", data=json.dumps({"chosen_options": ["x"]}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _user(db: Path, username: str) -> tuple[tuple, set[str]]:
    con = sqlite3.connect(db)
    try:
        row = con.execute("SELECT id, first_name, last_name FROM ab_user WHERE username = ?", (username,)).fetchone()
        roles = {r for (r,) in con.execute(
            "SELECT r.name FROM ab_user_role ur JOIN ab_role r ON r.id = ur.role_id WHERE ur.user_id = ?", (row[0],))}
        return row, roles
    finally:
        con.close()


def test_an_archivist_signs_in_to_airflow_at_the_provider_and_gets_the_mapped_role(airflow, chromium):
    token = _sign_in(chromium, airflow, "anna", "archivist")
    # Airflow's user is the provider's subject, named as the provider names the person
    (user_id, first, last), roles = _user(airflow["db"], "anna")
    assert (first, last) == ("Anna", "Arkivarie")
    assert roles == {"User", "Public"}  # arkiv-arkivarier -> archivist -> User (and the registration role)
    assert _claims(token)["sub"] == str(user_id)
    # the session works against Airflow's API
    status, body = _api(airflow["base"], "/api/v2/dags", token)
    assert status == 200 and "dags" in body
    assert _answer_required_action(airflow["base"], token) == 404  # an archivist may answer Required actions
    # the UI is signed in as her: the user menu names her Airflow user
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(chromium, 60)
    wait.until(ec.presence_of_element_located((By.XPATH, "//*[self::h1 or self::h2][contains(., 'Welcome')]")))
    wait.until(ec.element_to_be_clickable((By.XPATH, "//button[contains(., 'User')]"))).click()
    menu = wait.until(ec.visibility_of_element_located((By.XPATH, "//*[contains(text(), 'Signed in as')]/..")))
    assert f"anna (id: {user_id})" in menu.text
    chromium.save_screenshot(str(OUTPUT / "archivist-3-signed-in.png"))


def test_a_person_in_no_mapped_group_signs_in_but_airflow_allows_them_nothing(airflow, chromium):
    token = _sign_in(chromium, airflow, "rut", "researcher")
    (_, first, last), roles = _user(airflow["db"], "rut")
    assert (first, last) == ("Rut", "Forskare")
    assert roles == {"Public"}  # arkiv-forskare -> researcher, which has no Airflow role
    status, _ = _api(airflow["base"], "/api/v2/dags", token)
    assert status == 403
    assert _answer_required_action(airflow["base"], token) == 403


def test_it_operations_run_airflow_but_cannot_answer_required_actions(airflow, chromium):
    token = _sign_in(chromium, airflow, "ivar", "it-operations")
    _, roles = _user(airflow["db"], "ivar")
    assert roles == {"Operations", "Public"}  # it-drift -> it_operations -> Operations
    status, _ = _api(airflow["base"], "/api/v2/pools", token)
    assert status == 200  # what Airflow's Op may do
    # but an answer in Required actions is recorded as an archivist's decision: not theirs to give
    assert _answer_required_action(airflow["base"], token) == 403


def _webserver_config():
    import importlib.util

    spec = importlib.util.spec_from_file_location("webserver_config", PROJECT / "deploy/airflow/webserver_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_deployment_signs_in_with_the_shipped_role_mapping_and_refuses_to_start_half_configured(monkeypatch):
    import yaml

    from transforms.access.oidc import PERSON_ROLES, RoleMapping

    compose = yaml.safe_load((PROJECT / "docker-compose.yml").read_text(encoding="utf-8"))
    env = compose["services"]["api-server"]["environment"]
    default = {k: v.split(":-", 1)[1].removesuffix("}") for k, v in env.items()
               if isinstance(v, str) and v.startswith("${") and ":-" in v}
    mounts = {v.rsplit(":", 2)[1]: v.rsplit(":", 2)[0] for v in compose["services"]["api-server"]["volumes"]
              if v.endswith(":ro")}
    assert mounts["/opt/airflow/webserver_config.py"] == "./deploy/airflow/webserver_config.py"
    assert env["ARKIV_OIDC_ROLE_MAPPING"] == "/opt/airflow/role-mapping.yaml" in mounts
    assert mounts["/opt/airflow/role-mapping.yaml"].endswith("./deploy/airflow/role-mapping.yaml}")
    assert RoleMapping.load(PROJECT / "deploy/airflow/role-mapping.yaml").groups  # the shipped example reads
    # the FAB auth manager is opt-in: by default Airflow keeps its own users
    assert default["AIRFLOW__CORE__AUTH_MANAGER"].endswith(".SimpleAuthManager")

    for name in ("ARKIV_OIDC_ISSUER", "ARKIV_AIRFLOW_OIDC_CLIENT_ID", "ARKIV_AIRFLOW_OIDC_CLIENT_SECRET"):
        monkeypatch.setenv(name, "https://login.example.se/tenant" if name.endswith("ISSUER") else "x")
    for name in ("ARKIV_AIRFLOW_ROLES", "ARKIV_AIRFLOW_DEFAULT_ROLE", "ARKIV_AIRFLOW_OIDC_SCOPE"):
        monkeypatch.setenv(name, default[name])
    config = _webserver_config()
    mapping = config.AUTH_ROLES_MAPPING
    assert mapping == config.roles_mapping(config.DEFAULT_ROLES)  # compose's default is the file's
    assert set(mapping) <= set(PERSON_ROLES)
    assert config.AUTH_ROLES_SYNC_AT_LOGIN and config.AUTH_USER_REGISTRATION
    assert config.AUTH_USER_REGISTRATION_ROLE == "Public"
    remote = config.OAUTH_PROVIDERS[0]["remote_app"]
    assert remote["server_metadata_url"] == "https://login.example.se/tenant/.well-known/openid-configuration"
    assert config.roles_mapping("archivist=User, it-admins=Admin,archivist=Op") == {
        "archivist": ["User", "Op"], "it-admins": ["Admin"]}
    with pytest.raises(RuntimeError, match="not key=AirflowRole"):
        config.roles_mapping("archivist")
    # no provider: Airflow does not start with a sign-in that cannot work (nor falls back to passwords)
    monkeypatch.delenv("ARKIV_OIDC_ISSUER")
    with pytest.raises(RuntimeError, match="ARKIV_OIDC_ISSUER is not set"):
        _webserver_config()
