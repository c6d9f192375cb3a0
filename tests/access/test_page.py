"""The archivist's page in headless Chromium: search, open a record and a document, read the access log."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest
import uvicorn

from transforms.access.api import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def server(lex_archive):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(lex_archive["settings"], archive=lex_archive["archive"]), host="127.0.0.1",
                            port=port, log_level="warning")
    srv = uvicorn.Server(config)
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


def _login(browser, wait, token: str, purpose: str = "") -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "token").clear()
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "purpose").clear()
    browser.find_element(By.ID, "purpose").send_keys(purpose)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    wait.until(lambda d: d.find_element(By.ID, "who").text)


def test_search_open_a_document_and_see_it_in_the_log(server, browser, lex_archive):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    case = lex_archive["pick"]["public"]
    wait = WebDriverWait(browser, 20)
    browser.get(server + "/archive")
    _login(browser, wait, lex_archive["tokens"]["lex"], "Lex: öppna arkiverat ärende")
    assert "lex-client (client, lex)" in browser.find_element(By.ID, "who").text
    browser.find_element(By.ID, "q").send_keys(case["diarienummer"])
    browser.find_element(By.ID, "go").click()
    hit = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "a.hit"))[0]
    assert hit.text == case["diarienummer"]
    hit.click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "button.open"))
    assert case["title"] in browser.find_element(By.CSS_SELECTOR, "#record h2").text
    # each document offers its original; a converted one also its preservation copy (PDF/A), listed first
    browser.find_elements(By.CSS_SELECTOR, "button.open.original")[0].click()
    link = wait.until(lambda d: d.find_elements(By.ID, "download"))[0]
    first = case["documents"][0]
    size = (lex_archive["files"] / first["file_path"]).stat().st_size
    assert f": {size} byte" in browser.find_element(By.ID, "status").text
    assert link.get_attribute("href").startswith("blob:")
    rows = browser.find_elements(By.CSS_SELECTOR, "#record table")[0].find_elements(By.CSS_SELECTOR, "tr")[1:]
    buttons = [[b.get_attribute("class") for b in r.find_elements(By.CSS_SELECTOR, "button")] for r in rows]
    docx = sum(1 for d in case["documents"] if d["file_path"].endswith(".docx"))
    assert buttons.count(["open preservation", "open original"]) == docx and docx
    assert buttons.count(["open original"]) == len(case["documents"]) - docx
    browser.find_elements(By.CSS_SELECTOR, "button.open.preservation")[0].click()
    wait.until(lambda d: "(bevarandeexemplar)" in d.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "download").get_attribute("download").endswith(".pdf")

    # the secret case: found as classified, nothing to open
    secret = lex_archive["pick"]["secret"]
    browser.find_element(By.ID, "q").clear()
    browser.find_element(By.ID, "q").send_keys(secret["diarienummer"])
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "td.classified"))
    assert secret["title"] not in browser.page_source

    # the archivist sees the Lex client's reads in the access log
    _login(browser, wait, lex_archive["tokens"]["archivist"])
    browser.find_element(By.ID, "showlog").click()
    rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.logrow"))
    texts = [r.text for r in rows]
    assert any("lex-client" in t and "document" in t and "Lex: öppna arkiverat ärende" in t for t in texts)
