"""The archive API's authorisation matrix: every role × every endpoint × every kind of target.

Targets: the caller's own system's records and packages, another system's (for credentials scoped
to Viva, the archived Lex is the other system), guessed and sequential IDs, secret (OSL) records
and documents, and requests without a credential, with an unknown one or a revoked one. Each cell
says the status and the access-log outcome. A record, document or package of another system must
answer exactly as one that does not exist (same status, same body but for the ID). The endpoints are
read from the app's routes: a new endpoint without rows here fails :func:`test_every_endpoint_is_in_the_matrix`.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from transforms.access.api import content_disposition, create_app
from transforms.access.auth import add_credential, revoke_credential

# principal -> (credential name, role, system, cleared); None: not a valid credential
PRINCIPALS = {
    "archivist": "anna-arkivarie",
    "owner": "lex-owner",            # system_owner of lex
    "client": "lex-client",          # client of lex, not cleared
    "client_cleared": "lex-cleared",  # client of lex, cleared for secrecy
    "researcher": "rita-forskare",
    "other_owner": "viva-owner",     # system_owner of another system
    "other_client": "viva-client",   # client of another system
    "none": None, "bad": None, "revoked": None,
}
VALID = [p for p, name in PRINCIPALS.items() if name]
INVALID = [p for p, name in PRINCIPALS.items() if not name]
OWN_READERS = ["archivist", "owner", "client", "client_cleared", "researcher"]  # may read lex records
CLEARED = {"archivist", "owner", "client_cleared"}
OTHER = {"other_owner", "other_client"}

# every API route (method, path) and the matrix rows that cover it
ENDPOINTS = {
    ("GET", "/api/v1/whoami"): "whoami",
    ("GET", "/api/v1/search"): "search",
    ("POST", "/api/v1/search"): "search",
    ("GET", "/api/v1/records/{system}/{source_id}"): "record",
    ("GET", "/api/v1/records/{system}/{source_id}/documents/{document_id}"): "document",
    ("GET", "/api/v1/packages"): "packages",
    ("GET", "/api/v1/packages/{package_id}/history"): "history",
    ("GET", "/api/v1/receipts/{package_id}"): "receipt",
    ("GET", "/api/v1/access-log"): "access-log",
    ("POST", "/api/v1/exports"): "export",
    ("GET", "/api/v1/quarantine"): "quarantine",
    ("POST", "/api/v1/quarantine/decisions"): "decision",
}
# pages outside the API that hold no record (the archivist's page is HTML + the reader's own token)
NOT_IN_MATRIX = {("GET", "/archive")}
# how to sign in (the identity provider's issuer and client ID, or none): public, no token, no record
PUBLIC = {("GET", "/api/v1/sign-in")}


def _record_expect(who: str, target: str) -> tuple[int, str | None]:
    if who in INVALID:
        return 401, None
    if target == "missing":
        return 404, "not_found"
    if who in OTHER:
        return 404, "refused"
    if target == "secret" and who not in CLEARED:
        return 200, "withheld"
    return 200, "granted"


def _document_expect(who: str, target: str) -> tuple[int, str | None]:
    if who in INVALID:
        return 401, None
    if who in OTHER:
        return 404, "refused"
    if target == "missing":
        return 404, "not_found"
    if target in ("secret_doc", "doc_of_secret_case") and who not in CLEARED:
        return 403, "withheld"
    return 200, "granted"


def _package_expect(endpoint: str, who: str, target: str) -> tuple[int, str | None]:
    if who in INVALID:
        return 401, None
    if who == "researcher":
        return 403, "refused"  # by role, before the lookup: existing or not
    if target == "missing":
        return 404, "not_found"
    if who in OTHER:
        return 404, "refused"
    return 200, "granted"


@pytest.fixture(scope="module")
def matrix(lex_archive):
    arc = lex_archive["archive"]
    tokens = dict(lex_archive["tokens"])
    tokens["other_owner"] = add_credential(arc.cat, "viva-owner", "system_owner", system="viva", by="test")
    revoked = add_credential(arc.cat, "revoked-archivist", "archivist", by="test")
    revoke_credential(arc.cat, "revoked-archivist")
    headers = {
        "archivist": tokens["archivist"], "owner": tokens["owner"], "client": tokens["lex"],
        "client_cleared": tokens["lex_cleared"], "researcher": tokens["researcher"],
        "other_owner": tokens["other_owner"], "other_client": tokens["viva"], "bad": "arkiv_" + "x" * 43,
        "revoked": revoked,
    }
    headers = {p: {"Authorization": f"Bearer {t}", "X-Purpose": quote("Behörighetsprov")} for p, t in headers.items()}
    headers["none"] = {}
    picked = lex_archive["pick"]
    public, secret, secret_doc = picked["public"], picked["secret"], picked["secret_doc"]

    def doc_with(case, secret_wanted: bool | None) -> str:
        docs = [d for d in case["documents"] if secret_wanted is None or bool(d["secrecy"]) == secret_wanted]
        return str(docs[0]["document_id"])

    with arc.cat.engine.connect() as c:
        archived = sorted(int(r[0]) for r in c.execute(sa.text("SELECT source_id FROM records WHERE system='lex'")))
    client = TestClient(create_app(lex_archive["settings"], archive=arc))
    return {
        "client": client, "headers": headers, "archive": arc,
        "records": {"public": str(public["case_id"]), "secret": str(secret["case_id"]), "missing": "999999"},
        "documents": {"public_doc": (str(public["case_id"]), doc_with(public, False)),
                      "secret_doc": (str(secret_doc["case_id"]), doc_with(secret_doc, True)),
                      "doc_of_secret_case": (str(secret["case_id"]), doc_with(secret, None)),
                      "missing": (str(public["case_id"]), "999999")},
        "package": arc.cat.packages("lex")[0].id, "archived": archived,
        "pnr": next(p["personnummer"] for p in public["parties"] if p["personnummer"]),
        "public_case": public,
    }


def _log_rows(arc) -> int:
    with arc.cat.engine.connect() as c:
        return c.execute(sa.text("SELECT max(id) FROM access_log")).scalar() or 0


def _new_log(arc, since: int) -> list[dict]:
    with arc.cat.engine.connect() as c:
        return [dict(r) for r in c.execute(sa.text(
            "SELECT actor, role, action, target, outcome, purpose FROM access_log WHERE id > :i ORDER BY id"),
            {"i": since}).mappings()]


def _call(m, who: str, method: str, url: str, *, action: str, outcome: str | None, status: int, **kw):
    """One request; checks its status and that it left exactly the expected access-log entry (or none)."""
    arc = m["archive"]
    before = _log_rows(arc)
    r = m["client"].request(method, url, headers=m["headers"][who], **kw)
    assert r.status_code == status, f"{who} {method} {url}: {r.status_code} {r.text[:300]}"
    rows = _new_log(arc, before)
    if who == "revoked":
        # a known credential that no longer works: the refusal is logged under its name, before any lookup
        assert [(x["actor"], x["action"], x["outcome"]) for x in rows] == \
            [("revoked-archivist", "authenticate", "refused")], rows
    elif outcome is None:
        assert rows == [], f"{who} {method} {url}: logged {rows}"
    else:
        mine = [x for x in rows if x["action"] == action]
        assert mine, f"{who} {method} {url}: no {action!r} entry in the access log ({rows})"
        assert all(x["actor"] == PRINCIPALS[who] for x in rows), rows
        assert mine[-1]["outcome"] == outcome, f"{who} {method} {url}: logged {mine[-1]}"
        if action not in ("export", "packages", "access-log", "request"):
            assert len(rows) == 1, rows
            assert mine[0]["purpose"] == "Behörighetsprov"
    return r


def test_every_endpoint_is_in_the_matrix(matrix):
    routes = {(method, r.path) for r in matrix["client"].app.routes if isinstance(r, APIRoute)
              for method in r.methods if method != "HEAD"}
    api = {x for x in routes if x[1].startswith("/api/")} - PUBLIC
    assert api == set(ENDPOINTS), f"endpoints without a matrix entry: {sorted(api - set(ENDPOINTS))}"
    assert routes - api <= NOT_IN_MATRIX | PUBLIC, sorted(routes - api - NOT_IN_MATRIX - PUBLIC)
    assert matrix["client"].get("/api/v1/sign-in").json() == {"provider": None}  # the embedded default


@pytest.mark.parametrize("who", list(PRINCIPALS))
def test_whoami(matrix, who):
    _call(matrix, who, "GET", "/api/v1/whoami", action="whoami", outcome=None,
          status=401 if who in INVALID else 200)


@pytest.mark.parametrize("who", list(PRINCIPALS))
def test_search(matrix, who):
    case = matrix["public_case"]
    url = "/api/v1/search"
    if who in INVALID:
        _call(matrix, who, "POST", url, action="search", outcome=None, status=401, json={"q": case["diarienummer"]})
        _call(matrix, who, "GET", url, action="search", outcome=None, status=401, params={"system": "lex"})
        return
    r = _call(matrix, who, "POST", url, action="search", outcome="granted", status=200,
              json={"q": case["diarienummer"]})
    found = {h["source_id"] for h in r.json()["hits"]}
    assert (str(case["case_id"]) in found) == (who not in OTHER), (who, found)
    # naming the other system explicitly gives nothing either
    r = _call(matrix, who, "POST", url, action="search", outcome="granted", status=200,
              json={"q": case["diarienummer"], "system": "lex"})
    assert (r.json()["total"] > 0) == (who not in OTHER)
    # browsing by filters in the URL: the same scope
    r = _call(matrix, who, "GET", url, action="search", outcome="granted", status=200,
              params={"system": "lex", "limit": 500})
    assert (str(case["case_id"]) in {h["source_id"] for h in r.json()["hits"]}) == (who not in OTHER)
    # search text or a personnummer in the URL: refused for everyone, whatever their role
    _call(matrix, who, "GET", url, action="request", outcome="refused", status=400, params={"q": case["diarienummer"]})
    _call(matrix, who, "GET", url, action="request", outcome="refused", status=400,
          params={"personnummer": matrix["pnr"]})
    # personnummer: archivists and system owners only (the other system's owner finds nothing)
    allowed = who in ("archivist", "owner", "other_owner")
    r = _call(matrix, who, "POST", url, action="search", outcome="granted" if allowed else "refused",
              status=200 if allowed else 403, json={"personnummer": matrix["pnr"]})
    if allowed:
        found = {h["source_id"] for h in r.json()["hits"]}
        assert (str(case["case_id"]) in found) == (who != "other_owner")
        assert matrix["pnr"] not in r.text


@pytest.mark.parametrize("target", ["public", "secret", "missing"])
@pytest.mark.parametrize("who", list(PRINCIPALS))
def test_record(matrix, who, target):
    sid = matrix["records"][target]
    status, outcome = _record_expect(who, target)
    r = _call(matrix, who, "GET", f"/api/v1/records/lex/{sid}", action="record", outcome=outcome, status=status)
    if status == 200:
        body = r.json()
        hidden = target == "secret" and who not in CLEARED
        assert (body.get("withheld") is not None) == hidden
        assert (body["parties"] is None) == hidden and (body["documents"] is None) == hidden
    if status == 404:
        assert r.json() == {"detail": f"no record lex/{sid} in the archive"}


@pytest.mark.parametrize("target", ["public_doc", "secret_doc", "doc_of_secret_case", "missing"])
@pytest.mark.parametrize("who", list(PRINCIPALS))
def test_document(matrix, who, target):
    case_id, doc_id = matrix["documents"][target]
    status, outcome = _document_expect(who, target)
    r = _call(matrix, who, "GET", f"/api/v1/records/lex/{case_id}/documents/{doc_id}", action="document",
              outcome=outcome, status=status)
    if status == 200:
        cd = r.headers["content-disposition"]
        assert re.fullmatch(r'attachment; filename="[A-Za-z0-9._ -]+"; filename\*=UTF-8\'\'[A-Za-z0-9%._~-]+', cd), cd
        assert r.content and len(r.content) == int(r.headers["content-length"])
    if status == 403 and who not in INVALID:
        assert r.json()["classified"] is True and "secrecy_reference" in r.json()


@pytest.mark.parametrize("who", list(PRINCIPALS))
def test_packages(matrix, who):
    if who in INVALID:
        _call(matrix, who, "GET", "/api/v1/packages", action="packages", outcome=None, status=401)
        return
    refused = who == "researcher"
    r = _call(matrix, who, "GET", "/api/v1/packages", action="packages", outcome="refused" if refused else "granted",
              status=403 if refused else 200)
    if not refused:
        systems = {p["system"] for p in r.json()["packages"]}
        assert systems == (set() if who in OTHER else {"lex"})
        # asking for the other system by name changes nothing
        r = _call(matrix, who, "GET", "/api/v1/packages", action="packages", outcome="granted", status=200,
                  params={"system": "lex"})
        assert ({p["system"] for p in r.json()["packages"]} == {"lex"}) == (who not in OTHER)


@pytest.mark.parametrize("target", ["own", "missing"])
@pytest.mark.parametrize("who", list(PRINCIPALS))
def test_history(matrix, who, target):
    pkg = matrix["package"] if target == "own" else "uuid-00000000-0000-4000-8000-000000000000"
    status, outcome = _package_expect("history", who, target)
    r = _call(matrix, who, "GET", f"/api/v1/packages/{pkg}/history", action="history", outcome=outcome,
              status=status)
    if status == 404:
        assert r.json() == {"detail": f"no package {pkg}"}


@pytest.mark.parametrize("target", ["own", "missing"])
@pytest.mark.parametrize("who", list(PRINCIPALS))
def test_receipt(matrix, who, target):
    pkg = matrix["package"] if target == "own" else "uuid-00000000-0000-4000-8000-000000000000"
    status, outcome = _package_expect("receipt", who, target)
    r = _call(matrix, who, "GET", f"/api/v1/receipts/{pkg}", action="receipt", outcome=outcome, status=status)
    if status == 404:
        assert r.json() == {"detail": f"no package {pkg}"}
    if status == 200:
        assert r.json()["package_id"] == pkg


@pytest.mark.parametrize("who", list(PRINCIPALS))
def test_access_log(matrix, who):
    if who in INVALID:
        _call(matrix, who, "GET", "/api/v1/access-log", action="access-log", outcome=None, status=401)
        return
    ok = who == "archivist"
    _call(matrix, who, "GET", "/api/v1/access-log", action="access-log", outcome="granted" if ok else "refused",
          status=200 if ok else 403)


@pytest.mark.parametrize("who", list(PRINCIPALS))
def test_quarantine_cases_and_decisions(matrix, who):
    body = {"case_id": "lex/2025/finns-inte", "decision": "reject", "justification": "Behörighetsprov"}
    if who in INVALID:
        _call(matrix, who, "GET", "/api/v1/quarantine", action="quarantine", outcome=None, status=401)
        _call(matrix, who, "POST", "/api/v1/quarantine/decisions", action="decision", outcome=None, status=401,
              json=body)
        return
    ok = who == "archivist"
    _call(matrix, who, "GET", "/api/v1/quarantine", action="quarantine", outcome="granted" if ok else "refused",
          status=200 if ok else 403)
    # an archivist's decision on a case that does not exist is refused (409) and logged; others by role (403)
    _call(matrix, who, "POST", "/api/v1/quarantine/decisions", action="decision", outcome="refused",
          status=409 if ok else 403, json=body)


@pytest.mark.parametrize("who", list(PRINCIPALS))
def test_export(matrix, who):
    body = {"records": [f"lex/{matrix['records']['public']}"], "purpose": "Begäran KS 2026/0001"}
    if who in INVALID:
        _call(matrix, who, "POST", "/api/v1/exports", action="export", outcome=None, status=401, json=body)
        return
    if who in ("client", "client_cleared", "other_client"):
        status, outcome = 403, "refused"
    elif who == "other_owner":
        status, outcome = 404, "not_found"  # the other system's record is not in its selection
    else:
        status, outcome = 200, "granted"
    r = _call(matrix, who, "POST", "/api/v1/exports", action="export", outcome=outcome, status=status, json=body)
    if status == 200:
        assert r.headers["content-disposition"].startswith('attachment; filename="uuid-')
        assert r.headers["x-arkiv-dip"]
    if who == "other_owner":
        missing = _call(matrix, "owner", "POST", "/api/v1/exports", action="export", outcome="not_found",
                        status=404, json={**body, "records": ["lex/999999"]})
        assert missing.json() == r.json()  # another system's record answers as a record that does not exist


def test_guessing_sequential_ids_of_another_system_finds_nothing(matrix):
    """A Viva credential walks Lex's IDs 1…max+3: every answer is the answer for an ID that does not exist."""
    ids = range(1, max(matrix["archived"]) + 4)
    arc = matrix["archive"]
    for who in ("other_client", "other_owner"):
        before = _log_rows(arc)
        for sid in ids:
            r = matrix["client"].get(f"/api/v1/records/lex/{sid}", headers=matrix["headers"][who])
            assert r.status_code == 404 and r.json() == {"detail": f"no record lex/{sid} in the archive"}
            d = matrix["client"].get(f"/api/v1/records/lex/{sid}/documents/1", headers=matrix["headers"][who])
            assert d.status_code == 404 and d.json() == {"detail": f"no record lex/{sid} in the archive"}
        rows = _new_log(arc, before)
        assert len(rows) == 2 * len(ids)  # every guess is in the log, with what it really was
        archived = {str(i) for i in matrix["archived"]}
        for row in rows:
            sid = row["target"].split("/")[1]
            assert row["outcome"] == ("refused" if sid in archived else "not_found"), row
    # and the owner of Lex, guessing past its own IDs, gets the same answer for what does not exist
    sid = max(matrix["archived"]) + 1
    r = matrix["client"].get(f"/api/v1/records/lex/{sid}", headers=matrix["headers"]["owner"])
    assert r.status_code == 404 and r.json() == {"detail": f"no record lex/{sid} in the archive"}


@pytest.mark.parametrize("name, plain", [
    ("Ansökan.docx", "Ansokan.docx"), ("../../etc/passwd", "passwd"), ("C:\\temp\\x.pdf", "x.pdf"),
    ('a"b;c\r\nX-Evil: 1.pdf', "a_b_cX-Evil_ 1.pdf"), ("..", "document"), ("", "document"),
    (".hidden", "hidden"),
])
def test_content_disposition_is_safe(name, plain):
    cd = content_disposition(name)
    assert cd.startswith(f'attachment; filename="{plain}"; filename*=UTF-8\'\'')
    assert "\r" not in cd and "\n" not in cd and "/" not in cd and "\\" not in cd
    assert cd.count('"') == 2


def test_export_of_only_withheld_documents_is_refused_as_classified(matrix):
    """A researcher asks for a secret case alone: nothing but its diarienummer could go out, and a DIP
    needs a file (CSIP114), so the answer is 403 classified (it was a schema-invalid DIP and a 500)."""
    body = {"records": [f"lex/{matrix['records']['secret']}"], "purpose": "Forskning"}
    r = _call(matrix, "researcher", "POST", "/api/v1/exports", action="export", outcome="withheld", status=403,
              json=body)
    assert r.json()["classified"] is True
    ok = _call(matrix, "archivist", "POST", "/api/v1/exports", action="export", outcome="granted", status=200,
               json=body)
    assert ok.headers["x-arkiv-withheld"] == "0"
