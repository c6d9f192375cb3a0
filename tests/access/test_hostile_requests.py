"""Hostile and malformed requests against the archive API: each plants a fault and asserts the safe outcome.

Over a real archived Lex (SQLite catalogue, file-system mellanarkiv): a secret case's file reached
through a public case, personnummer and names in URLs and headers, CR/LF in the purpose, NUL and
out-of-range numbers, credentials that are not one Bearer token, expired and rotated tokens. The
last tests start the real server (``arkiv api``, uvicorn, in a subprocess) and read what it printed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from testservices import free_port

from transforms.access import accesslog, auth
from transforms.access.api import RedactQuery, create_app
from transforms.catalogue import AccessCredential, AccessDocument, AccessEntry, utcnow
from transforms.cli import main


@pytest.fixture(scope="module")
def hostile(lex_archive):
    arc = lex_archive["archive"]
    picked = lex_archive["pick"]
    public, secret = picked["public"], picked["secret"]
    with arc.cat.session() as s:
        # a secret case with a file, and a public case of the same package to reach it through
        sec, sec_doc, host = None, None, None
        for cand in s.scalars(sa.select(AccessEntry).where(AccessEntry.system == "lex", AccessEntry.secret)):
            doc = s.scalars(sa.select(AccessDocument).where(AccessDocument.entry_id == cand.id,
                                                            AccessDocument.path.is_not(None))).first()
            # a public case with two files or more, so that a DIP of it still holds one when the other is withheld
            # (documents, not rows: a converted document has a row for each of its two copies)
            n_files = (sa.select(sa.func.count(sa.distinct(AccessDocument.document_id))).select_from(AccessDocument)
                       .where(AccessDocument.entry_id == AccessEntry.id, AccessDocument.path.is_not(None),
                              AccessDocument.secret.is_(False)).scalar_subquery())
            other = s.scalars(sa.select(AccessEntry).where(AccessEntry.package_id == cand.package_id,
                                                           AccessEntry.secret.is_(False), n_files >= 2)).first()
            if doc is not None and other is not None:
                sec, sec_doc, host = cand, doc, other
                break
        assert sec is not None, "the generated Lex has no package with both a secret and a public case"
        # What indexing a package whose ERMS gives the public case an appendix pointing at the secret
        # case's file (or at the package's METS) leaves in the index: the public case claims the file.
        s.add(AccessDocument(entry_id=host.id, document_id="planted-secret", number=99, title="Bilaga",
                             path=sec_doc.path, name="bilaga.pdf", mimetype=sec_doc.mimetype, size=sec_doc.size,
                             sha256=sec_doc.sha256, tar_offset=sec_doc.tar_offset, secret=False))
        # a file in the secret case's folder that no document of the secret case names: still the secret case's
        folder_path = "/".join(sec_doc.path.split("/")[:4] + ["unnamed.pdf"])
        s.add(AccessDocument(entry_id=host.id, document_id="planted-folder", number=97, title="Bilaga 3",
                             path=folder_path, name="unnamed.pdf", mimetype="application/pdf", size=1, sha256=None,
                             tar_offset=None, secret=False))
        s.add(AccessDocument(entry_id=host.id, document_id="planted-mets", number=98, title="Bilaga 2",
                             path="METS.xml", name="mets.xml", mimetype="application/xml", size=10, sha256=None,
                             tar_offset=0, secret=False))
        # and one of the public case's own documents re-pointed at the secret file, as the DIP reads them
        own = s.scalars(sa.select(AccessDocument).where(AccessDocument.entry_id == host.id,
                                                        AccessDocument.path.is_not(None))).first()
        assert own is not None
        own.path, own.size, own.sha256, own.tar_offset = sec_doc.path, sec_doc.size, sec_doc.sha256, sec_doc.tar_offset
        sec_path, sec_sha, host_id, hijacked = sec_doc.path, sec_doc.sha256, host.source_id, own.document_id
        secret_in_package = sec.source_id
    secret_bytes = b"".join(arc.document_chunks(sec, sec_doc))
    pnr = next(p["personnummer"] for p in public["parties"] if p["personnummer"])
    party = next(p["name"] for p in public["parties"] if p["name"])
    return {"client": TestClient(create_app(lex_archive["settings"], archive=arc), raise_server_exceptions=False),
            "archive": arc, "tokens": lex_archive["tokens"], "public": str(public["case_id"]),
            "secret": str(secret["case_id"]), "secret_path": sec_path, "secret_sha": sec_sha,
            "secret_bytes": secret_bytes, "host": host_id, "hijacked": hijacked,
            "secret_case_in_package": secret_in_package, "pnr": pnr, "party": party,
            "settings": lex_archive["settings"]}


def _h(m, who: str, purpose: str | None = None) -> dict:
    h = {"Authorization": f"Bearer {m['tokens'][who]}"}
    if purpose is not None:
        h["X-Purpose"] = quote(purpose)
    return h


def _log_since(arc, since: int) -> list[dict]:
    with arc.cat.engine.connect() as c:
        return [dict(r) for r in c.execute(sa.text("SELECT * FROM access_log WHERE id > :i ORDER BY id"),
                                           {"i": since}).mappings()]


def _last_id(arc) -> int:
    with arc.cat.engine.connect() as c:
        return c.execute(sa.text("SELECT coalesce(max(id), 0) FROM access_log")).scalar()


def _all_log_text(arc) -> str:
    with arc.cat.engine.connect() as c:
        return json.dumps([list(r) for r in c.execute(sa.text("SELECT * FROM access_log"))], default=str,
                          ensure_ascii=False)


def _forms(pnr: str) -> list[str]:
    """A personnummer in every way people write it."""
    d = "".join(ch for ch in pnr if ch.isdigit())
    d12 = d if len(d) == 12 else "19" + d
    d10 = d12[2:]
    return [f"{d12[:8]}-{d12[8:]}", f"{d10[:6]}-{d10[6:]}", f"{d10[:6]}+{d10[6:]}", f"{d12[:8]}\u2013{d12[8:]}",
            f"{d10[:6]}\u2013{d10[6:]}", f"{d12[:8]} {d12[8:]}", f"{d10[:6]} {d10[6:]}", d12, d10,
            f"{d12[:8]} - {d12[8:]}"]


def _leaks(text: str, pnr: str) -> list[str]:
    d = "".join(ch for ch in pnr if ch.isdigit())
    return [f for f in _forms(pnr) if f in text] + ([d[-10:]] if d[-10:] in text.replace("-", "") else [])


# --- a file belongs to its record ------------------------------------------------------------------------

@pytest.mark.parametrize("doc", ["planted-secret", "hijacked", "planted-folder"])
@pytest.mark.parametrize("who", ["researcher", "lex"])
def test_a_secret_cases_file_is_unreachable_through_a_public_case(hostile, who, doc):
    m = hostile
    doc = m["hijacked"] if doc == "hijacked" else doc
    before = _last_id(m["archive"])
    r = m["client"].get(f"/api/v1/records/lex/{m['host']}/documents/{doc}", headers=_h(m, who))
    assert r.status_code == 403 and r.json()["classified"] is True
    assert m["secret_bytes"][:200] not in r.content
    (row,) = _log_since(m["archive"], before)
    assert row["outcome"] == "withheld" and row["action"] == "document"
    # the record view does not offer it either
    rec = m["client"].get(f"/api/v1/records/lex/{m['host']}", headers=_h(m, who)).json()
    planted = next(d for d in rec["documents"] if d["document_id"] == doc)
    assert "content" not in planted and planted["available"] is False


def test_a_cleared_reader_still_gets_the_file(hostile):
    r = hostile["client"].get(f"/api/v1/records/lex/{hostile['host']}/documents/planted-secret",
                              headers=_h(hostile, "archivist"))
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == hostile["secret_sha"]


@pytest.mark.parametrize("who", ["researcher", "archivist"])
def test_a_metadata_file_is_never_a_document(hostile, who):
    r = hostile["client"].get(f"/api/v1/records/lex/{hostile['host']}/documents/planted-mets",
                              headers=_h(hostile, who))
    assert r.status_code == 403
    assert b"<mets" not in r.content.lower()


@pytest.mark.parametrize("doc", ["..%2F..%2FMETS.xml", "%2e%2e", "..%5c..%5cMETS.xml",
                                 "planted-secret%00", "../" + "planted-secret"])
def test_path_tricks_in_a_document_id_reach_nothing(hostile, doc):
    r = hostile["client"].get(f"/api/v1/records/lex/{hostile['host']}/documents/{doc}",
                              headers=_h(hostile, "researcher"))
    assert r.status_code in (400, 404, 422), (doc, r.status_code)
    assert hostile["secret_bytes"][:200] not in r.content


def test_the_dip_applies_the_same_rule(hostile, tmp_path):
    from transforms.access import dip
    from transforms.access.auth import Principal

    who = Principal("rita-forskare", "researcher")
    result = dip.export(hostile["archive"], who, records=[f"lex/{hostile['host']}"], purpose="Forskning",
                        dest=tmp_path)
    with tarfile.open(result["path"]) as tar:
        digests = {hashlib.sha256(tar.extractfile(i).read()).hexdigest() for i in tar if i.isfile()}
    assert hostile["secret_sha"] not in digests
    assert any(w.get("document") == hostile["hijacked"] for w in result["withheld"])


# --- search never in a URL ---------------------------------------------------------------------------------

@pytest.mark.parametrize("param", ["q", "personnummer", "name", "purpose", "system"])
def test_a_personnummer_in_a_query_string_is_refused(hostile, param):
    m = hostile
    before = _last_id(m["archive"])
    r = m["client"].get("/api/v1/search", params={param: m["pnr"]}, headers=_h(m, "archivist"))
    assert r.status_code == 400 and ("POST" in r.json()["detail"] or "X-Purpose" in r.json()["detail"])
    assert not _leaks(r.text, m["pnr"])
    rows = _log_since(m["archive"], before)
    assert rows and all(x["outcome"] == "refused" for x in rows)
    assert not _leaks(json.dumps(rows, default=str), m["pnr"])


def test_search_in_the_body_finds_and_logs_neither_the_name_nor_the_number(hostile):
    m = hostile
    before = _last_id(m["archive"])
    r = m["client"].post("/api/v1/search", json={"q": m["party"]}, headers=_h(m, "archivist", f"fråga om {m['party']}"))
    assert r.status_code == 200 and m["public"] in {h["source_id"] for h in r.json()["hits"]}
    r = m["client"].post("/api/v1/search", json={"personnummer": m["pnr"]}, headers=_h(m, "archivist"))
    assert r.status_code == 200 and m["public"] in {h["source_id"] for h in r.json()["hits"]}
    rows = json.dumps(_log_since(m["archive"], before), default=str, ensure_ascii=False)
    assert m["party"] not in rows and not any(w in rows for w in m["party"].split() if len(w) > 2)
    assert not _leaks(rows, m["pnr"])
    assert "query hmac:" + accesslog.query_digest(m["archive"].key, m["party"]) in rows


# --- the access log: masked and unforgeable ----------------------------------------------------------------

@pytest.mark.parametrize("form", range(10))
def test_a_personnummer_in_the_purpose_is_masked_in_every_form(hostile, form):
    m = hostile
    written = _forms(m["pnr"])[form]
    before = _last_id(m["archive"])
    r = m["client"].get(f"/api/v1/records/lex/{m['public']}", headers=_h(m, "archivist", f"Begäran gällande {written}"))
    assert r.status_code == 200
    (row,) = _log_since(m["archive"], before)
    assert row["purpose"] == "Begäran gällande [personnummer]", row["purpose"]


def test_party_names_in_the_purpose_are_masked(hostile):
    m = hostile
    before = _last_id(m["archive"])
    m["client"].get(f"/api/v1/records/lex/{m['public']}", headers=_h(m, "archivist", f"Ansökan från {m['party']}"))
    (row,) = _log_since(m["archive"], before)
    assert m["party"] not in row["purpose"] and "[namn]" in row["purpose"]


@pytest.mark.parametrize("purpose", ["ok\r\n2026-01-01 anna archivist document lex/1 granted",
                                     "a\x00b", "x\u2028y\u202ez", "\x1b[31mröd"])
def test_control_characters_in_a_header_cannot_forge_an_entry(hostile, purpose):
    m = hostile
    before = _last_id(m["archive"])
    r = m["client"].get(f"/api/v1/records/lex/{m['public']}", headers=_h(m, "archivist", purpose))
    assert r.status_code == 200
    (row,) = _log_since(m["archive"], before)
    for ch in "\r\n\x00\x1b\u2028\u202e":
        assert ch not in row["purpose"]
    assert "\\" in row["purpose"]


def test_a_control_character_in_the_credential_name_cannot_forge_an_entry(hostile):
    with pytest.raises(ValueError):
        auth.add_credential(hostile["archive"].cat, "x\r\nfake", "researcher", by="test")


# --- malformed input: a 4xx with a logged refusal, never a 500 ---------------------------------------------

MALFORMED = [
    ("GET", "/api/v1/records/lex/1%00", None, 400),
    ("GET", "/api/v1/records/lex%00/1/documents/1", None, 400),
    ("GET", "/api/v1/records/lex/%FF%FE", None, 400),
    ("GET", "/api/v1/search?limit=1000000000000000000000000000000", None, 422),
    ("GET", "/api/v1/search?limit=-1", None, 422),
    ("GET", "/api/v1/search?offset=-5", None, 422),
    ("GET", "/api/v1/search?offset=1000000000000000000000", None, 422),
    ("GET", "/api/v1/search?limit=abc", None, 422),
    ("GET", "/api/v1/search?system=%00", None, 400),
    ("GET", "/api/v1/access-log?limit=99999999999999999999", None, 422),
    ("GET", "/api/v1/records/lex/" + "9" * 5000, None, 414),
    ("GET", "/api/v1/records/lex/" + "9" * 300, None, 422),
    ("GET", "/api/v1/packages/" + "x" * 300 + "/history", None, 422),
    ("POST", "/api/v1/search", {"json": {"q": "a\u0000b"}}, 422),
    ("POST", "/api/v1/search", {"json": {"limit": 10**30}}, 422),
    ("POST", "/api/v1/search", {"json": {"offset": -1}}, 422),
    ("POST", "/api/v1/search", {"json": {"q": "x" * 5000}}, 422),
    ("POST", "/api/v1/search", {"content": b'{"q": "\xff\xfe"}', "headers": {"content-type": "application/json"}},
     400),
    ("POST", "/api/v1/search", {"content": b"\x00\x01", "headers": {"content-type": "application/json"}}, 422),
    ("POST", "/api/v1/search", {"content": b"[" * 100_000, "headers": {"content-type": "application/json"}}, 400),
    ("POST", "/api/v1/search", {"content": b" " * (2 * 1024 * 1024), "headers": {"content-type": "application/json"}},
     413),
    ("POST", "/api/v1/exports", {"json": {"records": ["lex/1"] * 5000, "purpose": "x"}}, 422),
    ("POST", "/api/v1/exports", {"json": {"records": ["lex/1\u0000"], "purpose": "x"}}, 422),
    ("POST", "/api/v1/exports", {"json": {"records": ["lex/" + "1" * 1000], "purpose": "x"}}, 422),
    ("POST", "/api/v1/exports", {"json": {"records": "lex/1", "purpose": 5}}, 422),
]


@pytest.mark.parametrize("method, url, kw, status", MALFORMED, ids=[f"{i}" for i in range(len(MALFORMED))])
def test_malformed_requests_get_a_4xx_never_a_500(hostile, caplog, method, url, kw, status):
    m = hostile
    kw = dict(kw or {})
    headers = {**_h(m, "archivist"), **kw.pop("headers", {})}
    before = _last_id(m["archive"])
    with caplog.at_level("WARNING", logger="arkivflode.access"):
        r = m["client"].request(method, url, headers=headers, **kw)
    assert r.status_code == status, (url, r.status_code, r.text[:300])
    assert "Traceback" not in r.text and "\\u0000" not in r.text and "\xff" not in r.text
    logged = _log_since(m["archive"], before)
    assert any(x["outcome"] == "refused" for x in logged) or "refused" in caplog.text, "the refusal is not logged"


def test_a_planted_personnummer_in_a_rejected_value_is_not_echoed(hostile):
    m = hostile
    r = m["client"].post("/api/v1/search", json={"limit": m["pnr"], "q": "x"}, headers=_h(m, "archivist"))
    assert r.status_code == 422 and not _leaks(r.text, m["pnr"])


# --- credentials -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("header, status", [
    ("bearer {t}", 200), ("BEARER {t}", 200), ("Bearer {t}", 200), ("Bearer  {t}", 200),
    ("Basic {t}", 401), ("Token {t}", 401), ("Bearer a b", 400), ("Bearer {t} {t}", 400), ("Bearer", 400),
    ("Bearer {t},x", 400), ("{t}", 401), ("Bearer \"{t}\"", 400), ("Bearer {t}\u00e9", 400), ("", 401),
    ("Bearer " + "A" * 9000, 400), ("Bearer arkiv_doesnotexist", 401),
])
def test_authorization_is_one_bearer_token(hostile, header, status):
    value = header.format(t=hostile["tokens"]["researcher"]).encode("utf-8")
    r = hostile["client"].get("/api/v1/whoami", headers={"Authorization": value})
    assert r.status_code == status, (header, r.text)
    if status != 200:
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_a_token_in_the_query_string_is_refused(hostile):
    t = hostile["tokens"]["researcher"]
    assert hostile["client"].get(f"/api/v1/whoami?access_token={t}").status_code == 400
    assert hostile["client"].get(f"/api/v1/whoami?access_token={t}",
                                 headers=_h(hostile, "researcher")).status_code == 400


def test_an_expired_token_is_refused_and_logged(hostile):
    cat = hostile["archive"].cat
    # the catalogue keeps whole seconds: a 3 s token lives at least 2 s, time enough for the first call on a busy
    # machine
    token = auth.add_credential(cat, "kort-liv", "researcher", by="test", ttl=dt.timedelta(seconds=3))
    assert hostile["client"].get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    time.sleep(3.1)
    before = _last_id(hostile["archive"])
    r = hostile["client"].get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    (row,) = _log_since(hostile["archive"], before)
    assert (row["actor"], row["action"], row["outcome"]) == ("kort-liv", "authenticate", "refused")


def test_default_lifetimes_by_role_and_configuration(hostile, monkeypatch):
    cat = hostile["archive"].cat
    auth.add_credential(cat, "life-person", "archivist", by="test")
    auth.add_credential(cat, "life-system", "client", system="lex", by="test")
    monkeypatch.setenv("ARKIV_TOKEN_TTL_HOURS_RESEARCHER", "1")
    auth.add_credential(cat, "life-configured", "researcher", by="test")
    got = {c.id: auth.expires_at(c) - c.created_at for c in auth.credentials(cat)}
    assert got["life-person"] == dt.timedelta(hours=12)
    assert got["life-system"] == dt.timedelta(days=90)
    assert got["life-configured"] == dt.timedelta(hours=1)
    # a credential made before tokens expired has no end of its own: its role's lifetime from its creation
    with cat.session() as s:
        s.add(AccessCredential(id="legacy-person", role="archivist", token_sha256=auth.token_digest("legacy-tok"),
                               created_by="test", created_at=utcnow() - dt.timedelta(hours=13)))
    r = hostile["client"].get("/api/v1/whoami", headers={"Authorization": "Bearer legacy-tok"})
    assert r.status_code == 401


def test_a_rotated_token_stops_working_and_the_new_one_works(hostile, capsys, monkeypatch):
    cat = hostile["archive"].cat
    old = auth.add_credential(cat, "rot-client", "client", system="lex", by="test")
    c = hostile["client"]
    assert c.get("/api/v1/whoami", headers={"Authorization": f"Bearer {old}"}).status_code == 200
    monkeypatch.setenv("ARKIV_HOME", str(hostile["settings"].home))
    monkeypatch.delenv("ARKIV_CATALOGUE_URL", raising=False)
    assert main(["access-token", "rotate", "rot-client"]) == 0
    new = capsys.readouterr().out.strip().splitlines()[-1]
    assert new.startswith("arkiv_") and new != old
    assert c.get("/api/v1/whoami", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    who = c.get("/api/v1/whoami", headers={"Authorization": f"Bearer {new}"})
    assert who.status_code == 200 and who.json()["name"] == "rot-client"


# --- the server's own request log ------------------------------------------------------------------------

def test_the_request_log_filter_strips_query_strings_and_masks_paths():
    import logging

    rec = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', (
        "127.0.0.1:5", "GET", "/api/v1/records/lex/199001011234?q=Anna&personnummer=19900101-1234", "1.1", 200),
        None)
    RedactQuery().filter(rec)
    line = rec.getMessage()
    assert "?" not in line and "1990" not in line and "Anna" not in line
    rec = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', (
        "127.0.0.1:5", "GET", "/api/v2/dags?limit=5", "1.1", 200), None)
    RedactQuery(("/arkiv-api",)).filter(rec)
    assert "?limit=5" in rec.getMessage()  # not ours: left as it was


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def test_the_real_server_logs_no_query_string_and_answers_hostile_requests_with_4xx(hostile, tmp_path):
    m = hostile
    port = free_port()
    env = {**os.environ, "ARKIV_HOME": str(m["settings"].home), "PYTHONUNBUFFERED": "1"}
    env.pop("ARKIV_CATALOGUE_URL", None)
    out = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "transforms.cli", "api", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.3)
        token = m["tokens"]["archivist"].encode()
        auth_h = b"Authorization: Bearer " + token + b"\r\n"
        pnr = m["pnr"].encode()
        party = quote(m["party"]).encode()
        statuses = {}
        requests = {
            "pnr-in-query": b"GET /api/v1/search?personnummer=" + pnr + b"&q=" + party + b" HTTP/1.1\r\n",
            "purpose-in-query": b"GET /api/v1/records/lex/" + m["public"].encode() + b"?purpose=" + pnr
                                + b" HTTP/1.1\r\n",
            "pnr-in-path": b"GET /api/v1/records/lex/" + pnr + b"?x=" + pnr + b" HTTP/1.1\r\n",
            "nul-in-path": b"GET /api/v1/records/lex/1%00 HTTP/1.1\r\n",
            "bad-utf8-path": b"GET /api/v1/records/lex/%ff%fe HTTP/1.1\r\n",
            "limit": b"GET /api/v1/search?limit=1000000000000000000000000000000 HTTP/1.1\r\n",
            "offset": b"GET /api/v1/search?offset=-1 HTTP/1.1\r\n",
            "token-in-query": b"GET /api/v1/whoami?access_token=" + token + b" HTTP/1.1\r\n",
        }
        for name, line in requests.items():
            resp = _raw(port, line + b"Host: 127.0.0.1\r\n" + auth_h + b"Connection: close\r\n\r\n")
            statuses[name] = int(resp.split(b" ", 2)[1])
            assert pnr not in resp and m["pnr"][2:].encode() not in resp, name
        body = json.dumps({"q": "\udcff"}, ensure_ascii=True).encode()
        resp = _raw(port, b"POST /api/v1/search HTTP/1.1\r\nHost: x\r\n" + auth_h
                    + b"Content-Type: application/json\r\nContent-Length: 5\r\nConnection: close\r\n\r\n\xff\xfe{}\x00")
        statuses["bad-utf8-body"] = int(resp.split(b" ", 2)[1])
        resp = _raw(port, b"POST /api/v1/search HTTP/1.1\r\nHost: x\r\n" + auth_h + b"Content-Type: application/json"
                    b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        statuses["lone-surrogate"] = int(resp.split(b" ", 2)[1])
        ok = _raw(port, b"GET /api/v1/search?system=lex HTTP/1.1\r\nHost: x\r\n" + auth_h
                  + b"Connection: close\r\n\r\n")
        statuses["ok"] = int(ok.split(b" ", 2)[1])
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        out.close()
    assert statuses["ok"] == 200, statuses
    assert all(400 <= s < 500 for k, s in statuses.items() if k not in ("ok", "lone-surrogate")), statuses
    assert statuses["lone-surrogate"] in (200, 422), statuses
    log = (tmp_path / "server.log").read_text(encoding="utf-8", errors="replace")
    assert "GET /api/v1/search" in log, log[-2000:]  # the access log is on, and it is what we read
    assert "?" not in "".join(line for line in log.splitlines() if '"GET ' in line or '"POST ' in line), log
    assert not _leaks(log, m["pnr"]) and m["party"] not in log and quote(m["party"]) not in log
    assert m["tokens"]["archivist"] not in log
    assert "Traceback" not in log and " 500" not in log
    assert not _leaks(_all_log_text(m["archive"]), m["pnr"])
    assert m["party"] not in _all_log_text(m["archive"])


def test_nothing_planted_is_anywhere_in_the_access_log(hostile):
    text = _all_log_text(hostile["archive"])
    assert not _leaks(text, hostile["pnr"])
    assert hostile["party"] not in text
    for ch in ("\r", "\n", "\x00"):
        assert ch not in text.replace("\\r", "").replace("\\n", "")


def test_csrf_tokens_are_bound_to_user_case_and_time():
    from transforms.quality.quarantine_page import csrf_token, csrf_valid, same_origin

    key = b"k" * 32
    t = csrf_token(key, "archivist", "case-1", now=1_000_000)
    assert csrf_valid(key, t, "archivist", "case-1", now=1_000_100)
    assert not csrf_valid(key, t, "reader", "case-1", now=1_000_100)
    assert not csrf_valid(key, t, "archivist", "case-2", now=1_000_100)
    assert not csrf_valid(key, t, "archivist", "case-1", now=1_000_000 + 13 * 3600)
    assert not csrf_valid(b"other" * 8, t, "archivist", "case-1", now=1_000_100)
    for bad in ("", None, "x", "1.2", t + "0", "9" * 20 + "." + "a" * 64):
        assert not csrf_valid(key, bad, "archivist", "case-1", now=1_000_100)
    assert same_origin({"origin": "http://arkiv:8080", "sec-fetch-site": "same-origin"}, "arkiv:8080")
    assert same_origin({}, "arkiv:8080")
    assert not same_origin({"origin": "https://evil.example"}, "arkiv:8080")
    assert not same_origin({"sec-fetch-site": "cross-site"}, "arkiv:8080")
    assert not same_origin({"origin": "null"}, "arkiv:8080")


def test_page_searches_by_post(hostile):
    from transforms.access.page import PAGE

    assert "/api/v1/search?" not in PAGE and 'method = "POST"' in PAGE



# --- the same through a real package: an ERMS that points a public case at a secret case's file ------------

def test_a_stored_package_whose_erms_points_a_public_case_at_a_secret_file(hostile, tmp_path):
    """The package in the mellanarkiv is rewritten so that the public case's first document's appendix names
    the secret case's file, and indexed again from its bytes, as a package from before the intake check
    (or from another tool) would be. The file is still served only to readers cleared for the secret case."""
    from lxml import etree

    from transforms.access import index
    from transforms.catalogue import Package
    from transforms.common.xmltools import NS_ERMS, parse_bytes

    arc = hostile["archive"]
    e_ = f"{{{NS_ERMS}}}"
    host = index.find_entry(arc.cat, "lex", hostile["host"])
    pkg = arc.cat.package(host.package_id)
    erms_at = index.indexed_package(arc.cat, pkg.id).erms_path
    src = tmp_path / "old.tar"
    with arc.store.open(pkg.location) as f, open(src, "wb") as out:
        out.write(f.read())
    with tarfile.open(src) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    erms_member = next(m for m, _ in members if m.name.split("/", 1)[-1] == erms_at)
    tree = parse_bytes(dict((m.name, d) for m, d in members)[erms_member.name], name="ERMS.xml")
    aggs = {a.get("systemIdentifier"): a for a in tree.iter(e_ + "aggregation")}
    secret_app = next(a for r in aggs[hostile["secret_case_in_package"]].findall(e_ + "record")
                      for a in r.iter(e_ + "appendix") if a.get("path"))
    host_record = next(r for r in aggs[hostile["host"]].findall(e_ + "record")
                       if r.find(f".//{e_}appendix") is not None)
    host_record.find(f".//{e_}appendix").set("path", secret_app.get("path"))
    new_erms = etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
    dst = tmp_path / "new.tar"
    with tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tar:
        for m, data in members:
            if m.name == erms_member.name:
                data = new_erms
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
    key = pkg.location + ".rewritten.tar"
    stored = arc.store.put(dst, key)
    with arc.cat.session() as s:
        row = s.get(Package, pkg.id)
        row.location, row.sha256, row.size = key, stored.sha256, stored.size
    arc.index_package(pkg.id)
    doc_id = host_record.get("systemIdentifier")
    url = f"/api/v1/records/lex/{hostile['host']}/documents/{doc_id}"
    for who in ("researcher", "lex"):
        r = hostile["client"].get(url, headers=_h(hostile, who))
        assert r.status_code == 403 and hostile["secret_bytes"][:200] not in r.content, (who, r.status_code)
        rec = hostile["client"].get(f"/api/v1/records/lex/{hostile['host']}", headers=_h(hostile, who)).json()
        assert not any(d["document_id"] == doc_id and d.get("content") for d in rec["documents"])
    r = hostile["client"].get(url, headers=_h(hostile, "archivist"))
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == hostile["secret_sha"]


def test_the_cli_reads_a_personnummer_from_standard_input(hostile, monkeypatch, capsys):
    """`arkiv search --personnummer -`: the number stays out of the shell history and the process list."""
    monkeypatch.setenv("ARKIV_HOME", str(hostile["settings"].home))
    monkeypatch.delenv("ARKIV_CATALOGUE_URL", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(hostile["pnr"] + "\n"))
    assert main(["search", "--personnummer", "-", "--json", "--as", "cli-anna"]) == 0
    out = capsys.readouterr().out
    assert hostile["public"] in {h["source_id"] for h in json.loads(out)["hits"]}
    assert not _leaks(out, hostile["pnr"])
