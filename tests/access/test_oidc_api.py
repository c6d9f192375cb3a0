"""The archive API and the archivist's page signed in through a real OpenID Connect provider (oidc-provider on
loopback): business systems with client credentials, people with the device flow and, in Chromium, the
authorization code flow with PKCE; bad tokens refused with 401 and a logged refusal."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import threading
import time

import pytest
import sqlalchemy as sa
import uvicorn
from fastapi.testclient import TestClient
from oidc.oidctest import oidc_provider_fixture  # noqa: F401 - the fixture

from transforms.access.api import create_app
from transforms.access.oidc import OidcConfig

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def signed(lex_archive, oidc_provider):
    config = OidcConfig.from_env(oidc_provider.env())
    app = create_app(lex_archive["settings"], archive=lex_archive["archive"], oidc=config)
    tokens = {"lex": oidc_provider.client_credentials("lex-system"),
              "viva": oidc_provider.client_credentials("viva-system"),
              "anna": oidc_provider.device_token("anna"), "rut": oidc_provider.device_token("rut")}
    return {"client": TestClient(app), "app": app, "tokens": tokens, "provider": oidc_provider}


def _h(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _log(lex_archive, **where) -> list[dict]:
    q = "SELECT actor, person_name, roles, action, outcome, detail FROM access_log"
    if where:
        q += " WHERE " + " AND ".join(f"{k} = :{k}" for k in where)
    with lex_archive["archive"].cat.engine.connect() as c:
        return [dict(r) for r in c.execute(sa.text(q + " ORDER BY id"), where).mappings()]


def test_a_business_system_reads_only_its_own_records(signed, lex_archive):
    client, tokens = signed["client"], signed["tokens"]
    case = lex_archive["pick"]["public"]
    url = f"/api/v1/records/lex/{case['case_id']}"
    me = client.get("/api/v1/whoami", headers=_h(tokens["lex"])).json()
    assert (me["name"], me["role"], me["system"]) == ("lex-system", "client", "lex")
    assert client.get(url, headers=_h(tokens["lex"])).status_code == 200
    assert client.get(url, headers=_h(tokens["viva"])).status_code == 404
    hits = client.post("/api/v1/search", json={"q": ""}, headers=_h(tokens["viva"])).json()
    assert hits["total"] == 0
    lex_packages = client.get("/api/v1/packages", headers=_h(tokens["lex"])).json()["packages"]
    assert lex_packages and {p["system"] for p in lex_packages} == {"lex"}
    assert client.get("/api/v1/packages", headers=_h(tokens["viva"])).json()["packages"] == []
    receipt = client.get(f"/api/v1/receipts/{lex_packages[0]['id']}", headers=_h(tokens["lex"]))
    assert receipt.status_code == 200
    assert client.get(f"/api/v1/receipts/{lex_packages[0]['id']}", headers=_h(tokens["viva"])).status_code == 404


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["groups"] = ["arkiv-arkivarier"]
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{body}.{signature}"


def test_expired_forged_and_foreign_tokens_get_401_and_a_logged_refusal(signed, lex_archive, caplog):
    p, client = signed["provider"], signed["client"]
    now = int(time.time())
    bad = {
        "expired": p.forge(p.claims("anna", iat=now - 3600, exp=now - 600)),
        "wrong audience": p.client_credentials("lex-system", resource="urn:arkiv:annat-api"),
        "wrong issuer": p.forge(p.claims("anna", iss="https://idp.example.org")),
        "tampered": _tampered(signed["tokens"]["rut"]),
        "unsigned": signed["tokens"]["rut"].rsplit(".", 1)[0] + ".",
    }
    expected = {"expired": "expired", "wrong audience": "not meant for this archive",
                "wrong issuer": "another issuer", "tampered": "signature does not verify",
                "unsigned": "signature does not verify"}
    for what, token in bad.items():
        caplog.clear()
        with caplog.at_level("WARNING", logger="arkivflode.access"):
            r = client.post("/api/v1/search", json={"q": "bygglov"}, headers=_h(token))
        assert r.status_code == 401, (what, r.text)
        assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"', what
        assert expected[what] in r.json()["detail"], (what, r.json())
        logged = caplog.text + json.dumps(_log(lex_archive, action="authenticate"))
        assert expected[what] in logged, f"the refusal of the {what} token is not logged"
        assert token not in logged and token.split(".")[1] not in logged, "a token was logged"
    # the expired one was correctly signed: its refusal names the person in the access log
    rows = _log(lex_archive, action="authenticate", actor="anna")
    assert rows and rows[-1]["outcome"] == "refused" and "expired" in rows[-1]["detail"]
    assert rows[-1]["person_name"] == "Anna Arkivarie"


def test_the_archives_own_tokens_give_way_to_the_provider(signed, lex_archive, monkeypatch):
    client = signed["client"]
    local = lex_archive["tokens"]["archivist"]
    r = client.get("/api/v1/whoami", headers=_h(local))
    assert r.status_code == 401 and "identity provider" in r.json()["detail"]
    monkeypatch.setenv("ARKIV_OIDC_LOCAL_TOKENS", "1")  # a changeover period
    assert client.get("/api/v1/whoami", headers=_h(local)).status_code == 200


def test_people_act_in_their_roles_and_the_log_names_them(signed, lex_archive):
    client, tokens, p = signed["client"], signed["tokens"], signed["provider"]
    me = client.get("/api/v1/whoami", headers=_h(tokens["anna"])).json()
    assert (me["name"], me["display_name"], me["role"], me["roles"]) == ("anna", "Anna Arkivarie", "archivist",
                                                                          ["archivist"])
    case = lex_archive["pick"]["secret"]
    url = f"/api/v1/records/lex/{case['case_id']}"
    assert client.get(url, headers=_h(tokens["anna"])).json().get("title")  # archivists are cleared
    assert client.get(url, headers=_h(tokens["rut"])).json().get("title") is None  # researchers are not
    assert client.get("/api/v1/access-log", headers=_h(tokens["rut"])).status_code == 403
    entries = client.get("/api/v1/access-log?limit=50", headers=_h(tokens["anna"])).json()["entries"]
    mine = [e for e in entries if e["actor"] == "anna" and e["action"] == "record"]
    assert mine and mine[0]["name"] == "Anna Arkivarie" and mine[0]["roles"] == ["archivist"]
    # IT operations: packages and their histories, never a record
    ivar = p.forge(p.claims("ivar"))
    assert client.get(url, headers=_h(ivar)).status_code == 404
    pkgs = client.get("/api/v1/packages", headers=_h(ivar)).json()["packages"]
    assert pkgs and client.get(f"/api/v1/packages/{pkgs[0]['id']}/history", headers=_h(ivar)).status_code == 200
    # a valid token of somebody in no mapped group: authenticated, but no archive role
    nobody = p.forge(p.claims("okand", groups=["kommunens-personal"]))
    assert client.get("/api/v1/whoami", headers=_h(nobody)).status_code == 403
    info = client.get("/api/v1/sign-in").json()["provider"]
    assert info["issuer"] == p.issuer and info["client_id"] == "arkivflode"
    assert info["authorization_endpoint"].startswith(p.issuer)


@pytest.fixture(scope="module")
def page_server(signed):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(signed["app"], host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and CHROMEDRIVER, "make install provides chromium and chromedriver"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def test_the_page_signs_in_with_authorization_code_and_pkce(page_server, browser, lex_archive):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(page_server + "/archive")
    button = wait.until(lambda d: d.find_element(By.ID, "signin") if d.find_element(By.ID, "signin").is_displayed()
                        else None)
    assert not browser.find_element(By.ID, "token").is_displayed()  # no token to paste with a provider
    button.click()
    # the provider's own sign-in page (it refuses an authorization request without a PKCE challenge)
    wait.until(lambda d: d.find_elements(By.ID, "password"))
    assert browser.current_url.startswith("http://127.0.0.1:") and "/interaction/" in browser.current_url
    browser.find_element(By.ID, "login").send_keys("bertil")
    browser.find_element(By.ID, "password").send_keys("test")
    browser.find_element(By.ID, "submit").click()
    who = wait.until(lambda d: d.find_element(By.ID, "who").text if "Bertil" in d.find_element(By.ID, "who").text
                     else None)
    assert who == "Bertil Bevarare (archivist, researcher)"
    assert browser.current_url == page_server + "/archive"  # the code is gone from the address bar
    case = lex_archive["pick"]["public"]
    browser.find_element(By.ID, "q").send_keys(case["diarienummer"])
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "a.hit"))
    browser.find_element(By.ID, "showlog").click()
    rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.logrow"))
    assert any("bertil" in r.text and "Bertil Bevarare" in r.text and "search" in r.text for r in rows)
    token = browser.execute_script("return sessionStorage.getItem('arkiv-token')")
    assert token.count(".") == 2 and token not in browser.page_source


def test_arkiv_access_log_shows_who_with_name_and_roles(signed, lex_archive, monkeypatch, capsys):
    from transforms.cli import main

    client, tokens, p = signed["client"], signed["tokens"], signed["provider"]
    assert client.post("/api/v1/search", json={"q": "bygglov"}, headers=_h(tokens["anna"])).status_code == 200
    monkeypatch.setenv("ARKIV_HOME", str(lex_archive["settings"].home))
    monkeypatch.delenv("ARKIV_CATALOGUE_URL", raising=False)
    for k, v in p.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("ARKIV_TOKEN", tokens["anna"])
    assert main(["access-log", "--actor", "anna", "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "anna (Anna Arkivarie)" in out and "archivist" in out and "search" in out
    assert main(["access-log", "--as", "someone"]) == 2  # no self-chosen names with a provider
    monkeypatch.setenv("ARKIV_TOKEN", tokens["rut"])
    assert main(["access-log"]) == 1  # a researcher reads no access log


def test_an_archivist_signs_in_and_decides_a_quarantine_case_in_the_browser(page_server, browser, signed,
                                                                               lex_archive, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from transforms.catalogue import QuarantineCase
    from transforms.quality import quarantine as review

    cat = lex_archive["archive"].cat
    held = tmp_path / "held"
    held.mkdir()
    case_id = review.open_case(cat, system="lex", batch_id="lex/2024", kind="quality", path=held,
                               reasons=["expect_column_values_to_not_be_null(diarienummer): 2 of 40 rows"])
    rut = signed["client"].post("/api/v1/quarantine/decisions", headers=_h(signed["tokens"]["rut"]), json={
        "case_id": case_id, "decision": "approve", "justification": "ser bra ut"})
    assert rut.status_code == 403  # a researcher does not decide

    wait = WebDriverWait(browser, 30)
    browser.get(signed["provider"].issuer + "/.well-known/openid-configuration")
    browser.delete_all_cookies()  # no provider session left from an earlier sign-in
    browser.get(page_server + "/archive")
    browser.execute_script("sessionStorage.clear()")
    browser.get(page_server + "/archive")
    wait.until(lambda d: d.find_element(By.ID, "signin").is_displayed())
    browser.find_element(By.ID, "signin").click()
    wait.until(lambda d: d.find_elements(By.ID, "password"))
    browser.find_element(By.ID, "login").send_keys("anna")
    browser.find_element(By.ID, "password").send_keys("test")
    browser.find_element(By.ID, "submit").click()
    wait.until(lambda d: "Anna Arkivarie" in d.find_element(By.ID, "who").text)
    browser.find_element(By.ID, "showcases").click()
    row = wait.until(lambda d: next((r for r in d.find_elements(By.CSS_SELECTOR, "tr.case")
                                     if r.get_attribute("data-case") == case_id), None))
    row.find_element(By.CSS_SELECTOR, "input.why").send_keys("Kända fel i Lex, rättas vid nästa leverans")
    row.find_element(By.CSS_SELECTOR, "button.approve").click()
    wait.until(lambda d: "godkänt med avvikelse av Anna Arkivarie" in d.find_element(By.ID, "status").text)
    with cat.session() as s:
        case = s.get(QuarantineCase, case_id)
        assert (case.status, case.decided_by, case.decided_by_id) == ("approved", "Anna Arkivarie", "anna")
        assert case.justification == "Kända fel i Lex, rättas vid nästa leverans"
    decision = [e for e in cat.events(batch_id="lex/2024") if e.type == "decision"]
    assert decision and decision[-1].agent == "Anna Arkivarie"
    again = signed["client"].post("/api/v1/quarantine/decisions", headers=_h(signed["tokens"]["anna"]), json={
        "case_id": case_id, "decision": "reject", "justification": "ångrar mig"})
    assert again.status_code == 409  # decided once
