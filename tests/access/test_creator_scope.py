"""A person limited to some archive creators reads only what those creators made, through the HTTP API with tokens
of the real OpenID Connect provider (oidc-provider on loopback): search, record, document, history, package list,
receipt and DIP; anything else answers 404, exactly as a record that does not exist, and the refusal is logged.

Two archive creators in one system: Lex is archived for Strängnäs kommun, then the archival description gains a
second creator (a municipal housing company whose cases the same Lex holds) and one package is catalogued as
that company's and indexed again, as happens when the description is corrected after delivery.
"""

from __future__ import annotations

import io
import tarfile

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from oidc.oidctest import CLIENT_ID, oidc_provider_fixture  # noqa: F401 - the fixture

from transforms.access.api import create_app
from transforms.access.oidc import OidcConfig
from transforms.catalogue import ArchiveCreator, Package

KOMMUN = ("Strängnäs kommun", "212000-0357")
BOSTAD = ("Strängnäs Bostads AB", "556000-0133")

ROLE_MAPPING = f"""\
groups:
  arkiv-arkivarier: {{role: archivist}}
  kommunens-arkivarier: {{role: archivist, creators: ["{KOMMUN[1]}"]}}
  bostad-forskare: {{role: researcher, creators: ["{BOSTAD[0]}"]}}
  lex-systemagare: {{role: system_owner, systems: [lex], creators: ["{KOMMUN[1]}"]}}
clients:
  lex-system: {{system: lex}}
"""


@pytest.fixture(scope="module")
def two_creators(lex_archive):
    """Lex with its packages split between two archive creators, re-indexed; (kommun's, company's) package ids."""
    arc = lex_archive["archive"]
    pids = sorted(p.id for p in arc.cat.packages("lex"))
    assert len(pids) >= 2, "the generated Lex has one package; the test needs two"
    with arc.cat.session() as s:
        for (name, number), key in ((KOMMUN, "ks"), (BOSTAD, "bostad")):
            s.merge(ArchiveCreator(id=f"visualarkiv:{key}", name=name, organisationsnummer=number,
                                   source_system="visualarkiv"))
        s.get(Package, pids[0]).archive_creator = BOSTAD[1]
    for pid in pids:
        arc.index_package(pid)
    return pids[1:], pids[:1]


@pytest.fixture(scope="module")
def api(lex_archive, oidc_provider, tmp_path_factory, two_creators):
    mapping = tmp_path_factory.mktemp("mapping") / "role-mapping.yaml"
    mapping.write_text(ROLE_MAPPING, encoding="utf-8")
    config = OidcConfig(issuer=oidc_provider.issuer, client_id=CLIENT_ID, audience=CLIENT_ID, mapping_path=mapping)
    p = oidc_provider
    tokens = {"sara": p.device_token("sara"), "anna": p.device_token("anna"),
              "lex": p.client_credentials("lex-system"),
              "karin": p.forge(p.claims("karin", name="Karin Kommunarkivarie", groups=["kommunens-arkivarier"])),
              "bo": p.forge(p.claims("bo", name="Bo Forskare", groups=["bostad-forskare"])),
              # an archivist of every creator who also owns Lex for the kommun acts, unlimited, as archivist
              "greta": p.forge(p.claims("greta", name="Greta Båda", groups=["lex-systemagare", "arkiv-arkivarier"]))}
    app = create_app(lex_archive["settings"], archive=lex_archive["archive"], oidc=config)
    kommun, bostad = two_creators
    return {"client": TestClient(app), "tokens": tokens, "kommun": kommun, "bostad": bostad}


def _h(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _hits(api, who: str) -> list[dict]:
    r = api["client"].post("/api/v1/search", json={"q": "", "limit": 500}, headers=_h(api["tokens"][who]))
    assert r.status_code == 200, r.text
    return r.json()["hits"]


def _record_with_document(api, package_ids: list[str]) -> tuple[str, str]:
    for h in _hits(api, "anna"):
        if h["package_id"] in package_ids and not h["classified"]:
            rec = api["client"].get(h["link"], headers=_h(api["tokens"]["anna"])).json()
            docs = [d for d in rec["documents"] if d.get("content")]
            if docs:
                return h["source_id"], docs[0]["document_id"]
    raise AssertionError(f"no public record with a document in {package_ids}")


def _refusals(lex_archive, actor: str) -> list[dict]:
    with lex_archive["archive"].cat.engine.connect() as c:
        return [dict(r) for r in c.execute(sa.text(
            "SELECT action, target, outcome, detail FROM access_log WHERE actor = :a AND outcome = 'refused' "
            "ORDER BY id"), {"a": actor}).mappings()]


def test_whoami_names_the_creators_of_the_acting_role(api):
    c, t = api["client"], api["tokens"]
    assert c.get("/api/v1/whoami", headers=_h(t["sara"])).json()["creators"] == [KOMMUN[1]]
    assert c.get("/api/v1/whoami", headers=_h(t["bo"])).json()["creators"] == [BOSTAD[0]]
    greta = c.get("/api/v1/whoami", headers=_h(t["greta"])).json()
    assert greta["role"] == "archivist" and greta["creators"] == []  # her archivist group names no creator
    assert c.get("/api/v1/whoami", headers=_h(t["lex"])).json()["creators"] == []


def test_search_finds_only_the_readers_archive_creators(api):
    everything = {h["package_id"] for h in _hits(api, "anna")}
    assert everything == set(api["kommun"]) | set(api["bostad"])
    for who in ("sara", "karin"):  # limited by organisationsnummer
        hits = _hits(api, who)
        assert hits and {h["package_id"] for h in hits} <= set(api["kommun"])
        assert {h["archive_creator"] for h in hits} == {KOMMUN[0]}
    hits = _hits(api, "bo")  # limited by name
    assert hits and {h["package_id"] for h in hits} == set(api["bostad"])
    assert {h["archive_creator"] for h in hits} == {BOSTAD[0]}
    # not limited: the archive's own business-system client and an archivist of every creator
    for who in ("lex", "greta"):
        assert {h["package_id"] for h in _hits(api, who)} == everything


def test_another_creators_record_answers_as_if_it_did_not_exist(api, lex_archive):
    c, t = api["client"], api["tokens"]
    theirs, doc = _record_with_document(api, api["bostad"])
    mine, my_doc = _record_with_document(api, api["kommun"])
    assert c.get(f"/api/v1/records/lex/{mine}", headers=_h(t["sara"])).status_code == 200
    assert c.get(f"/api/v1/records/lex/{mine}/documents/{my_doc}", headers=_h(t["sara"])).status_code == 200
    refused = c.get(f"/api/v1/records/lex/{theirs}", headers=_h(t["sara"]))
    absent = c.get("/api/v1/records/lex/999999999", headers=_h(t["sara"]))
    assert refused.status_code == absent.status_code == 404
    assert refused.json()["detail"] == absent.json()["detail"].replace("999999999", theirs)
    assert c.get(f"/api/v1/records/lex/{theirs}/documents/{doc}", headers=_h(t["sara"])).status_code == 404
    # the company's reader is refused the kommun's record and gets the company's document
    assert c.get(f"/api/v1/records/lex/{mine}", headers=_h(t["bo"])).status_code == 404
    assert c.get(f"/api/v1/records/lex/{theirs}/documents/{doc}", headers=_h(t["bo"])).status_code == 200
    assert c.get(f"/api/v1/records/lex/{theirs}", headers=_h(t["greta"])).status_code == 200
    logged = _refusals(lex_archive, "sara")
    assert {("record", f"lex/{theirs}"), ("document", f"lex/{theirs}")} <= {(r["action"], r["target"])
                                                                          for r in logged}
    assert all("archive creators" in r["detail"] for r in logged)


def test_packages_histories_and_receipts_of_another_creator_are_not_found(api, lex_archive):
    c, t = api["client"], api["tokens"]
    listed = {p["id"] for p in c.get("/api/v1/packages", headers=_h(t["sara"])).json()["packages"]}
    assert listed == set(api["kommun"])
    assert {p["id"] for p in c.get("/api/v1/packages", headers=_h(t["lex"])).json()["packages"]} \
        == set(api["kommun"]) | set(api["bostad"])
    mine, theirs = api["kommun"][0], api["bostad"][0]
    assert c.get(f"/api/v1/packages/{mine}/history", headers=_h(t["sara"])).status_code == 200
    assert c.get(f"/api/v1/receipts/{mine}", headers=_h(t["sara"])).status_code == 200
    for url in (f"/api/v1/packages/{theirs}/history", f"/api/v1/receipts/{theirs}"):
        refused, absent = (c.get(u, headers=_h(t["sara"])) for u in (url, url.replace(theirs, "no-such-package")))
        assert refused.status_code == absent.status_code == 404, url
        assert refused.json()["detail"] == absent.json()["detail"].replace("no-such-package", theirs)
    assert c.get(f"/api/v1/receipts/{theirs}", headers=_h(t["lex"])).status_code == 200
    logged = {(r["action"], r["target"]) for r in _refusals(lex_archive, "sara")}
    assert {("history", theirs), ("receipt", theirs)} <= logged


def test_a_dip_holds_only_the_readers_creators_records(api):
    c, t = api["client"], api["tokens"]
    theirs, _ = _record_with_document(api, api["bostad"])
    mine, _ = _record_with_document(api, api["kommun"])
    body = {"records": [f"lex/{theirs}", f"lex/{mine}"], "purpose": "Begäran KS 2026/17"}
    r = c.post("/api/v1/exports", json=body, headers=_h(t["sara"]))
    assert r.status_code == 200, r.text
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        names = tar.getnames()
        ermses = [tar.extractfile(n).read().decode() for n in names if n.endswith("ERMS.xml")]
    assert ermses and any(f'systemIdentifier="{mine}"' in x for x in ermses)
    assert not any(f'systemIdentifier="{theirs}"' in x for x in ermses)
    only_theirs = c.post("/api/v1/exports", json={**body, "records": [f"lex/{theirs}"]}, headers=_h(t["sara"]))
    assert only_theirs.status_code == 404
    # the company's reader receives the company's record
    r = c.post("/api/v1/exports", json={**body, "records": [f"lex/{theirs}"]}, headers=_h(t["bo"]))
    assert r.status_code == 200
