"""`arkiv retention approve-plan`: a signed-in archivist approves the retention plan's transfers (through the real
OpenID Connect provider, the device flow played by the test); with ARKIV_RETENTION_PLAN_APPROVAL=1 the transfers
wait for it, and the approval names the person in the catalogue, in `arkiv decisions` and in the AIP's PREMIS."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from oidc.oidctest import oidc_provider_fixture  # noqa: F401 - the fixture

from transforms.catalogue import Catalogue, Event
from transforms.cli import main

AS_OF = "2040-01-01"


@pytest.fixture
def signed_in_lex(tmp_path, lex_source, archive_helpers, oidc_provider, monkeypatch):
    """An archived Lex whose CLI users sign in through the provider; the tokens of an archivist and a researcher."""
    settings = archive_helpers["archive_lex"](tmp_path / "var", lex_source)
    monkeypatch.delenv("ARKIV_SLUTARKIV", raising=False)
    tokens = oidc_provider.sign_cli_in(monkeypatch, settings.home, tmp_path / "config", ("anna", "rut"))
    cat = Catalogue(settings.catalogue_url)
    keep = sorted(p.id for p in cat.packages() if p.retention_action == "keep")
    assert keep, "the generated Lex has no package to keep"
    return {"settings": settings, "cat": cat, "keep": keep, "tokens": tokens}


def _plan_events(cat: Catalogue) -> list[Event]:
    with cat.session() as s:
        return list(s.scalars(sa.select(Event).where(Event.type == "decision",
                                                     Event.detail.startswith("retention plan as of "))))


def test_a_transfer_waits_for_the_signed_in_archivists_approval(signed_in_lex, monkeypatch, capsys):
    cat, keep, tokens = signed_in_lex["cat"], signed_in_lex["keep"], signed_in_lex["tokens"]
    approve = ["retention", "approve-plan", "--as-of", AS_OF, "--reason", "Enligt informationshanteringsplanen",
               "--yes"]
    monkeypatch.setenv("ARKIV_RETENTION_PLAN_APPROVAL", "1")
    assert main(["retention", "run", "--as-of", AS_OF]) == 1
    err = capsys.readouterr().err
    assert "waits for an archivist's approval" in err and "arkiv retention approve-plan" in err
    assert "no retention plan has been approved yet" in err
    assert {p.storage for p in cat.packages() if p.id in keep} == {"mellanarkiv"}

    assert main(approve) == 1  # not signed in
    assert "arkiv login" in capsys.readouterr().err
    monkeypatch.setenv("ARKIV_TOKEN", tokens["rut"])
    assert main(approve) == 1  # a researcher cannot approve
    assert "archivist role" in capsys.readouterr().err
    assert main([*approve, "--by", "Anna Arkivarie"]) == 2  # no typed names when a provider is configured
    assert _plan_events(cat) == []

    monkeypatch.setenv("ARKIV_TOKEN", tokens["anna"])
    assert main(approve) == 0
    out = capsys.readouterr().out
    assert f"Retention plan as of {AS_OF}" in out and all(pid in out for pid in keep)  # what it approves
    assert f"approved by Anna Arkivarie: {len(keep)} transfer(s)" in out
    events = _plan_events(cat)
    assert sorted(e.package_id for e in events) == keep
    assert {(e.agent, e.agent_id, e.agent_roles) for e in events} == {("Anna Arkivarie", "anna", "archivist")}

    assert main(["decisions", "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["kind"] == "retention plan"]
    assert len(rows) == 1 and rows[0]["what"] == f"retention plan as of {AS_OF}"
    assert rows[0]["packages"] == len(keep) and rows[0]["status"] == "approved"
    assert (rows[0]["first"]["id"], rows[0]["first"]["name"]) == ("anna", "Anna Arkivarie")
    assert rows[0]["first"]["note"] == "Enligt informationshanteringsplanen"

    monkeypatch.delenv("ARKIV_TOKEN")  # the retention run itself is the software's, not a person's
    assert main(["retention", "run", "--as-of", AS_OF]) == 0
    assert {p.storage for p in cat.packages() if p.id in keep} == {"slutarkiv"}
    # the AIP's PREMIS history names the archivist as the authorizer of the transfer
    root = signed_in_lex["settings"].home / "slutarkiv"
    premis = [p.read_text(encoding="utf-8") for pid in keep for p in (root / pid).rglob("premis-history.xml")]
    assert len(premis) == len(keep), "a transferred AIP has no PREMIS history"
    for text in premis:
        assert f"retention plan as of {AS_OF} approved by Anna Arkivarie" in text
        assert "person-Anna Arkivarie" in text and "authorizer" in text


def test_without_a_provider_the_approval_takes_a_typed_name(signed_in_lex, monkeypatch, capsys):
    cat = signed_in_lex["cat"]
    monkeypatch.delenv("ARKIV_OIDC_ISSUER")
    approve = ["retention", "approve-plan", "--as-of", AS_OF, "--reason", "IHP", "--yes"]
    assert main(approve) == 2
    assert "--by NAME" in capsys.readouterr().err
    assert main([*approve, "--by", "Anna Arkivarie"]) == 0
    assert {e.agent_id for e in _plan_events(cat)} == {"unauthenticated name:Anna Arkivarie"}
    assert main(["retention", "approve-plan", "--as-of", "2020-01-01", "--reason", "IHP", "--by", "Anna"]) == 0
    assert "nothing to approve" in capsys.readouterr().out
