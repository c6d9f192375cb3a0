"""The same index and access log on PostgreSQL (tsvector, Swedish configuration; triggers refuse changes)."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from transforms.access.api import create_app
from transforms.access.auth import AccessDenied, Principal, add_credential
from transforms.access.service import Archive

pytestmark = pytest.mark.integration

ARCHIVIST = Principal("anna", "archivist")
RESEARCHER = Principal("rita", "researcher")


def test_search_record_and_log_on_postgresql(tmp_path, lex_source, pg_url, archive_helpers):
    settings = archive_helpers["archive_lex"](tmp_path / "var", lex_source, catalogue_url=pg_url)
    assert settings.catalogue_url == pg_url
    arc = Archive(settings)
    assert arc.cat.engine.dialect.name == "postgresql"
    assert arc.sync()["indexed"] == 0  # the pipeline indexed every package as it recorded it
    with arc.cat.engine.connect() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM access_packages").scalar() == len(arc.cat.packages()) > 0
    picked = archive_helpers["pick"](arc, archive_helpers["source_cases"](lex_source))
    case, secret = picked["public"], picked["secret"]
    cid = str(case["case_id"])

    def ids(*a, who=ARCHIVIST, **kw):
        return {h["source_id"] for h in arc.search(who, *a, limit=500, **kw).hits}

    assert ids(case["diarienummer"]) == {cid}
    assert cid in ids(max(re.findall(r"\w+", case["title"]), key=len))
    assert cid in ids(case["parties"][0]["name"].split()[-1])
    assert cid in ids("Strängnäs") and cid in ids("Diarieförda") and cid in ids(system="lex")
    closed = str(case["closed_date"])[:10]
    assert cid in ids(closed_from=closed, closed_to=closed)
    pnr = next(p["personnummer"] for p in case["parties"] if p["personnummer"])
    assert cid in ids(personnummer=pnr) and ids(personnummer=pnr[:8]) == set()
    with pytest.raises(AccessDenied):
        arc.search(RESEARCHER, personnummer=pnr)

    # secrecy: found by diarienummer as classified, never by its title, for the uncleared
    word = max(re.findall(r"\w+", secret["title"]), key=len)
    hits = arc.search(RESEARCHER, secret["diarienummer"]).hits
    assert [(h["classified"], h["title"]) for h in hits] == [(True, None)]
    assert str(secret["case_id"]) not in ids(word, who=RESEARCHER)
    assert str(secret["case_id"]) in ids(word)

    # scoped to archive creators, in SQL on PostgreSQL: the package's own creator finds it, another none
    creator = next(p.archive_creator for p in arc.cat.packages() if p.archive_creator)
    assert cid in ids(case["diarienummer"], who=Principal("lena", "archivist", creators=(creator,)))
    assert ids(case["diarienummer"], who=Principal("olle", "archivist", creators=("000000-0000",))) == set()

    # the API on PostgreSQL: the Lex client opens a document; another system's client cannot
    lex = add_credential(arc.cat, "lex-client", "client", system="lex", by="test")
    viva = add_credential(arc.cat, "viva-client", "client", system="viva", by="test")
    client = TestClient(create_app(settings, archive=arc))
    rec = client.get(f"/api/v1/records/lex/{cid}", headers={"Authorization": f"Bearer {lex}"}).json()
    assert rec["storage"] == "mellanarkiv" and rec["documents"]
    got = client.get(rec["documents"][0]["content"], headers={"Authorization": f"Bearer {lex}"})
    assert got.status_code == 200 and len(got.content) == rec["documents"][0]["size"]
    assert client.get(f"/api/v1/records/lex/{cid}", headers={"Authorization": f"Bearer {viva}"}).status_code == 404

    # every access is in the log, and the log cannot be changed
    log = arc.access_log(ARCHIVIST, limit=1000)
    assert {("lex-client", "record", "granted"), ("lex-client", "document", "granted"),
            ("viva-client", "record", "refused")} <= {(e["actor"], e["action"], e["outcome"]) for e in log}
    for stmt in ("UPDATE access_log SET actor = 'x'", "DELETE FROM access_log", "TRUNCATE access_log"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), arc.cat.engine.begin() as c:
            c.execute(sa.text(stmt))
    arc.cat.dispose()
