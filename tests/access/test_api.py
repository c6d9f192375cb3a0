"""The archive API over a real archived Lex (SQLite catalogue, FileSystem mellanarkiv), via FastAPI's TestClient."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from html import escape
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from transforms.access.api import create_app
from transforms.validation.validator import validate_package


@pytest.fixture(scope="module")
def client(lex_archive):
    return TestClient(create_app(lex_archive["settings"], archive=lex_archive["archive"]))


def _h(lex_archive, who: str, purpose: str | None = None) -> dict:
    h = {"Authorization": f"Bearer {lex_archive['tokens'][who]}"}
    if purpose:
        h["X-Purpose"] = quote(purpose)
    return h


def _ids(resp) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {h["source_id"] for h in resp.json()["hits"]}


def _log(lex_archive, actor: str) -> list[dict]:
    with lex_archive["archive"].cat.engine.connect() as c:
        rows = c.execute(sa.text("SELECT action, target, outcome, purpose FROM access_log WHERE actor = :a "
                                 "ORDER BY id"), {"a": actor}).mappings().all()
    return [dict(r) for r in rows]


def test_openapi_documents_every_route(client):
    spec = client.get("/openapi.json").json()
    for path in ("/api/v1/search", "/api/v1/records/{system}/{source_id}",
                 "/api/v1/records/{system}/{source_id}/documents/{document_id}", "/api/v1/receipts/{package_id}",
                 "/api/v1/packages/{package_id}/history", "/api/v1/access-log", "/api/v1/exports"):
        assert path in spec["paths"], path


def test_no_or_unknown_credential_is_refused(client):
    assert client.post("/api/v1/search", json={"q": "bygglov"}).status_code == 401
    assert client.get("/api/v1/search", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_search_finds_by_each_field(client, lex_archive):
    case = lex_archive["pick"]["public"]
    cid = str(case["case_id"])
    h = _h(lex_archive, "archivist")
    # diarienummer, exactly and as words
    assert _ids(client.post("/api/v1/search", json={"q": case["diarienummer"]}, headers=h)) == {cid}
    # a word of the title
    word = max(re.findall(r"\w+", case["title"]), key=len)
    assert cid in _ids(client.post("/api/v1/search", json={"q": word}, headers=h))
    # a party's name
    party = case["parties"][0]["name"].split()[-1]
    assert cid in _ids(client.post("/api/v1/search", json={"q": party}, headers=h))
    # system, record class, archive creator and series
    every = _ids(client.post("/api/v1/search", json={"system": "lex", "limit": 500}, headers=h))
    assert cid in every and len(every) == len({r for r in every})
    hit = next(x for x in client.post("/api/v1/search", json={"q": case["diarienummer"]}, headers=h).json()["hits"])
    assert hit["storage"] == "mellanarkiv" and hit["archive_creator"] == "Strängnäs kommun"
    assert cid in _ids(client.post("/api/v1/search", json={"record_class": hit["record_class"], "limit": 500},
                                  headers=h))
    assert cid in _ids(client.post("/api/v1/search", json={"q": "Strängnäs", "limit": 500}, headers=h))
    assert cid in _ids(client.post("/api/v1/search", json={"q": "Diarieförda", "limit": 500}, headers=h))
    # dates
    closed = str(case["closed_date"])[:10]
    dated = client.post("/api/v1/search", json={"closed_from": closed, "closed_to": closed, "limit": 500},
                       headers=h).json()["hits"]
    assert cid in {x["source_id"] for x in dated} and all(x["closed"] == closed for x in dated)
    # hits never carry parties or personnummer
    text = json.dumps(dated, ensure_ascii=False)
    assert case["parties"][0]["name"] not in text
    assert not any(p["personnummer"] and p["personnummer"] in text for p in case["parties"])


def test_personnummer_exact_match_for_authorised_roles_only(client, lex_archive):
    case = lex_archive["pick"]["public"]
    pnr = next(p["personnummer"] for p in case["parties"] if p["personnummer"])
    cid = str(case["case_id"])
    assert cid in _ids(client.post("/api/v1/search", json={"personnummer": pnr},
                                  headers=_h(lex_archive, "archivist")))
    # the 10-digit form is the same number; a prefix is not a match
    assert cid in _ids(client.post("/api/v1/search", json={"personnummer": pnr[2:]},
                                  headers=_h(lex_archive, "owner")))
    assert _ids(client.post("/api/v1/search", json={"personnummer": pnr[:8]},
                           headers=_h(lex_archive, "archivist"))) == set()
    for who in ("researcher", "lex"):
        assert client.post("/api/v1/search", json={"personnummer": pnr},
                          headers=_h(lex_archive, who)).status_code == 403
    # a personnummer is not free text either, and the index never stores it
    assert cid not in _ids(client.post("/api/v1/search", json={"q": pnr}, headers=_h(lex_archive, "archivist")))
    snapshot = json.dumps(lex_archive["archive"].cat.snapshot(), default=str)
    assert pnr not in snapshot and pnr.replace("-", "") not in snapshot


def test_record_view_lists_documents_and_streams_them(client, lex_archive):
    case = lex_archive["pick"]["public"]
    h = _h(lex_archive, "lex", "Lex: visa arkiverat ärende")
    r = client.get(f"/api/v1/records/lex/{case['case_id']}", headers=h)
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["storage"] == "mellanarkiv" and rec["reference"] == case["diarienummer"]
    assert rec["title"] == case["title"] and rec["package"]["verified"] is True
    assert {d["document_id"] for d in rec["documents"]} == {str(d["document_id"]) for d in case["documents"]}
    for doc in rec["documents"]:
        got = client.get(doc["content"], headers=h)
        assert got.status_code == 200 and got.headers["x-arkiv-storage"] == "mellanarkiv"
        assert hashlib.sha256(got.content).hexdigest() == doc["sha256"] and len(got.content) == doc["size"]
        original = next(c for c in doc["copies"] if c["copy"] == "original")
        got = client.get(original["content"], headers=h)
        src = next(d for d in case["documents"] if str(d["document_id"]) == doc["document_id"])
        assert got.content == (lex_archive["files"] / src["file_path"]).read_bytes()
    log = _log(lex_archive, "lex-client")
    assert {"action": "record", "target": f"lex/{case['case_id']}", "outcome": "granted",
            "purpose": "Lex: visa arkiverat ärende"} in log
    assert sum(1 for e in log if e["action"] == "document" and e["outcome"] == "granted") >= len(rec["documents"])


def test_other_systems_credential_cannot_read_lex(client, lex_archive):
    case = lex_archive["pick"]["public"]
    h = _h(lex_archive, "viva")
    assert client.get(f"/api/v1/records/lex/{case['case_id']}", headers=h).status_code == 404
    doc = case["documents"][0]["document_id"]
    assert client.get(f"/api/v1/records/lex/{case['case_id']}/documents/{doc}", headers=h).status_code == 404
    assert _ids(client.post("/api/v1/search", json={"q": case["diarienummer"]}, headers=h)) == set()
    assert _ids(client.post("/api/v1/search", json={"system": "lex"}, headers=h)) == set()
    pkg = lex_archive["archive"].cat.packages("lex")[0].id
    assert client.get(f"/api/v1/receipts/{pkg}", headers=h).status_code == 404
    assert client.get("/api/v1/packages", headers=h).json()["packages"] == []
    assert {"action": "record", "target": f"lex/{case['case_id']}", "outcome": "refused", "purpose": ""} \
        in _log(lex_archive, "viva-client")


def test_secret_case_withheld_in_search_record_document_and_dip(client, lex_archive, tmp_path):
    case = lex_archive["pick"]["secret"]
    cid = str(case["case_id"])
    word = max(re.findall(r"\w+", case["title"]), key=len)
    for who in ("researcher", "lex"):
        h = _h(lex_archive, who)
        hits = client.post("/api/v1/search", json={"q": case["diarienummer"]}, headers=h).json()["hits"]
        assert [(x["source_id"], x["classified"], x["title"]) for x in hits] == [(cid, True, None)]
        assert cid not in _ids(client.post("/api/v1/search", json={"q": word, "limit": 500}, headers=h))
        rec = client.get(f"/api/v1/records/lex/{cid}", headers=h).json()
        assert rec["classified"] is True and rec["title"] is None and rec["documents"] is None
        assert rec["secrecy_reference"] == case["secrecy_reference"]
        assert case["title"] not in json.dumps(rec, ensure_ascii=False)
        for d in case.get("documents", []):
            r = client.get(f"/api/v1/records/lex/{cid}/documents/{d['document_id']}", headers=h)
            assert r.status_code == 403 and r.json()["classified"] is True
    # cleared roles see it
    for who in ("archivist", "owner", "lex_cleared"):
        h = _h(lex_archive, who)
        assert cid in _ids(client.post("/api/v1/search", json={"q": word, "limit": 500}, headers=h))
        assert client.get(f"/api/v1/records/lex/{cid}", headers=h).json()["title"] == case["title"]
    assert {"action": "record", "target": f"lex/{cid}", "outcome": "withheld", "purpose": ""} \
        in _log(lex_archive, "rita-forskare")

    # the DIP for a researcher: the case is listed by its diarienummer only, its documents are left out
    public = lex_archive["pick"]["public"]
    r = client.post("/api/v1/exports", headers=_h(lex_archive, "researcher"),
                    json={"records": [f"lex/{cid}", f"lex/{public['case_id']}"], "purpose": "Begäran KS 2026/0042"})
    assert r.status_code == 200, r.text
    dip = tmp_path / "dip.tar"
    dip.write_bytes(r.content)
    report = validate_package(dip, "dip")
    assert report.valid, [f.message for f in report.findings if f.severity == "ERROR"][:5]
    assert report.profile == "dip"
    with tarfile.open(dip) as tar:
        names = tar.getnames()
        root = names[0].split("/")[0]
        erms = tar.extractfile(f"{root}/metadata/descriptive/ERMS.xml").read().decode()
        manifest = json.loads(tar.extractfile(f"{root}/documentation/withheld.json").read())
        mets = tar.extractfile(f"{root}/METS.xml").read().decode()
    assert 'OAISPACKAGETYPE="DIP"' in mets
    assert escape(case["title"], quote=False) not in erms and case["diarienummer"] in erms
    assert escape(public["title"], quote=False) in erms
    assert not any(p["personnummer"] and p["personnummer"] in erms for p in public["parties"])
    secret_files = {d["file_name"] for d in case.get("documents", [])}
    assert not any(n.endswith(f) for n in names for f in secret_files if f)
    whys = {(w["record"], w["what"].split(" ")[0]) for w in manifest["withheld"]}
    assert (f"lex/{cid}", "title,") in whys and (f"lex/{public['case_id']}", "personnummer") in whys
    assert manifest["purpose"] == "Begäran KS 2026/0042"
    copies = client.get(f"/api/v1/records/lex/{public['case_id']}", headers=_h(lex_archive, "researcher")).json()
    assert len([n for n in names if "/representations/rep1/data/" in n]) == \
        sum(len(d["copies"]) for d in copies["documents"])
    log = _log(lex_archive, "rita-forskare")
    assert {"action": "export", "target": f"lex/{cid}", "outcome": "withheld", "purpose": "Begäran KS 2026/0042"} \
        in log


def test_secret_document_in_public_case(client, lex_archive):
    case = lex_archive["pick"]["secret_doc"]
    secret = next(d for d in case["documents"] if d["secrecy"])
    h = _h(lex_archive, "researcher")
    rec = client.get(f"/api/v1/records/lex/{case['case_id']}", headers=h).json()
    view = next(d for d in rec["documents"] if d["document_id"] == str(secret["document_id"]))
    assert view["classified"] is True and view["title"] is None and "content" not in view
    r = client.get(f"/api/v1/records/lex/{case['case_id']}/documents/{secret['document_id']}", headers=h)
    assert r.status_code == 403
    r = client.get(f"/api/v1/records/lex/{case['case_id']}/documents/{secret['document_id']}",
                   headers=_h(lex_archive, "archivist"))
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == view["sha256"]


def test_receipt_lists_exactly_the_stored_records(client, lex_archive):
    arc = lex_archive["archive"]
    for pkg in arc.cat.packages("lex"):
        r = client.get(f"/api/v1/receipts/{pkg.id}", headers=_h(lex_archive, "lex"))
        assert r.status_code == 200, r.text
        receipt = r.json()
        with arc.cat.engine.connect() as c:
            stored = {(s, ref) for s, ref in c.execute(sa.text(
                "SELECT source_id, reference FROM records WHERE package_id = :p"), {"p": pkg.id})}
        assert {(x["source_id"], x["reference"]) for x in receipt["records"]} == stored
        assert receipt["record_count"] == pkg.record_count and receipt["not_listed"] == []
        assert receipt["package_sha256"] == pkg.sha256 and receipt["storage"] == "mellanarkiv"
        for rec in receipt["records"]:
            case = lex_archive["cases"][rec["source_id"]]
            assert {d["document_id"] for d in rec["documents"]} == {str(d["document_id"])
                                                                     for d in case.get("documents", [])}
        assert arc.cat.events(package_id=pkg.id)[-1].type == "receipt"
    assert client.get(f"/api/v1/receipts/{pkg.id}", headers=_h(lex_archive, "researcher")).status_code == 403


def test_history_and_access_log(client, lex_archive):
    pkg = lex_archive["archive"].cat.packages("lex")[0]
    r = client.get(f"/api/v1/packages/{pkg.id}/history", headers=_h(lex_archive, "owner"))
    assert r.status_code == 200
    hist = r.json()
    assert hist["storage"] == "mellanarkiv" and hist["validation"] and hist["validation"][0]["outcome"] == "success"
    assert [e["type"] for e in hist["events"]][:1] == ["capture"]
    assert client.get(f"/api/v1/packages/{pkg.id}/history", headers=_h(lex_archive, "researcher")).status_code == 403
    assert client.get("/api/v1/access-log", headers=_h(lex_archive, "lex")).status_code == 403
    log = client.get("/api/v1/access-log", params={"actor": "lex-owner"}, headers=_h(lex_archive, "archivist"))
    assert log.status_code == 200
    assert any(e["action"] == "history" and e["target"] == pkg.id for e in log.json()["entries"])


def test_access_log_is_append_only(lex_archive):
    eng = lex_archive["archive"].cat.engine
    with eng.begin() as c:
        before = c.execute(sa.text("SELECT count(*) FROM access_log")).scalar()
    assert before > 0
    for stmt in ("UPDATE access_log SET actor = 'nobody'", "DELETE FROM access_log"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), eng.begin() as c:
            c.execute(sa.text(stmt))
    with eng.begin() as c:
        assert c.execute(sa.text("SELECT count(*) FROM access_log")).scalar() == before
        assert c.execute(sa.text("SELECT count(*) FROM access_log WHERE actor = 'nobody'")).scalar() == 0


def test_dip_export_from_the_cli_validates(lex_archive, tmp_path, capsys):
    from transforms.cli import main

    case = lex_archive["pick"]["public"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARKIV_HOME", str(lex_archive["settings"].home))
        assert main(["export", "--q", case["diarienummer"], "--role", "researcher", "--as", "cli-rita",
                     "--purpose", "Begäran 2026/7", "--out", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        dips = list(tmp_path.glob("*.tar"))
        assert len(dips) == 1 and "1 record(s)" in out
        assert main(["validate", "--profile", "dip", str(dips[0])]) == 0
        capsys.readouterr()
        assert main(["access-log", "--actor", "cli-rita", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
    assert {"export", "search"} <= {r["action"] for r in rows}
    assert all(r["purpose"] == "Begäran 2026/7" for r in rows)


def test_the_app_works_mounted_under_a_prefix(lex_archive):
    """As the Airflow plugin mounts it: routes, OpenAPI and the page under the prefix."""
    from fastapi import FastAPI

    parent = FastAPI()
    parent.mount("/arkiv", create_app(lex_archive["settings"], archive=lex_archive["archive"]))
    c = TestClient(parent)
    assert c.get("/arkiv/api/v1/whoami", headers=_h(lex_archive, "lex")).json()["system"] == "lex"
    assert "/api/v1/search" in c.get("/arkiv/openapi.json").json()["paths"]
    assert "Arkivflöde" in c.get("/arkiv/archive").text
