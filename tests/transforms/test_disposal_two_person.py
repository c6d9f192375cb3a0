"""Disposal needs two different archivists; holds need one: in the library, and in the CLI signed in through a
real OpenID Connect provider (the device flow played by the test)."""

from __future__ import annotations

import json
import stat

import pytest
import sqlalchemy as sa
from oidc.oidctest import oidc_provider_fixture  # noqa: F401 - the fixture

from transforms.archive import retention
from transforms.catalogue import Catalogue, DisposalList, Event, Hold, Package, Person
from transforms.cli import main

ANNA = Person("anna", "Anna Arkivarie", ("archivist",))
BERTIL = Person("bertil", "Bertil Bevarare", ("archivist", "researcher"))
RUT = Person("rut", "Rut Forskare", ("researcher",))


def _catalogue(url: str) -> Catalogue:
    cat = Catalogue(url)
    cat.migrate()
    with cat.session() as s:
        for pid in ("p-1", "p-2"):
            s.add(Package(id=pid, system="lex", record_class="arenden", period="2025", batch_id="lex/2025",
                          status="stored", size=1, sha256="0" * 64, content_digest="0" * 64, storage="mellanarkiv",
                          location=f"{pid}.tar", retention_action="dispose", due_date="2036-01-01"))
        s.add(DisposalList(id="gallring-1", as_of="2040-01-01", status="proposed", items=json.dumps(["p-1", "p-2"])))
    return cat


@pytest.fixture
def cat(tmp_path):
    return _catalogue(f"sqlite:///{tmp_path / 'catalogue.sqlite'}")


def test_two_archivists_sign_and_both_are_recorded(cat):
    with pytest.raises(retention.DecisionRefused, match="needs two archivists"):
        retention.decide_disposal(cat, "gallring-1", approve=True, by=ANNA, justification="IHP 4.2", approvers=2)
    retention.review_disposal(cat, "gallring-1", by=ANNA, note="Granskad mot IHP")
    with pytest.raises(retention.DecisionRefused, match="nobody approves their own proposal"):
        retention.decide_disposal(cat, "gallring-1", approve=True, by=ANNA, justification="IHP 4.2", approvers=2)
    retention.decide_disposal(cat, "gallring-1", approve=True, by=BERTIL, justification="IHP 4.2", approvers=2)
    with cat.session() as s:
        dl = s.get(DisposalList, "gallring-1")
        assert (dl.status, dl.reviewed_by, dl.reviewed_by_id, dl.decided_by, dl.decided_by_id) == (
            "approved", "Anna Arkivarie", "anna", "Bertil Bevarare", "bertil")
        events = list(s.scalars(sa.select(Event).where(Event.type == "decision").order_by(Event.id)))
    assert [(e.package_id, e.agent, e.agent_id, e.executing_agent) for e in events] == [
        ("p-1", "Anna Arkivarie", "anna", retention.AGENT), ("p-2", "Anna Arkivarie", "anna", retention.AGENT),
        ("p-1", "Bertil Bevarare", "bertil", retention.AGENT), ("p-2", "Bertil Bevarare", "bertil", retention.AGENT)]
    assert events[-1].agent_roles == "archivist,researcher"
    assert "reviewed by Anna Arkivarie" in events[-1].detail
    # the AIP's PREMIS names the person as authorizer and the software as executing program
    premis = retention._premis_event(events[-1])
    assert premis.agents[0] == ("person-Bertil Bevarare", "authorizer")
    assert premis.agents[1][1] == "executing program"


def test_only_archivists_decide(cat):
    for decide in (lambda: retention.review_disposal(cat, "gallring-1", by=RUT, note="x"),
                   lambda: retention.decide_disposal(cat, "gallring-1", approve=False, by=RUT, justification="x"),
                   lambda: retention.add_hold(cat, "package", "p-1", "Tvist", RUT)):
        with pytest.raises(retention.DecisionRefused, match="archivist role"):
            decide()
    hid = retention.add_hold(cat, "package", "p-1", "Tvist", ANNA)
    with pytest.raises(retention.DecisionRefused):
        retention.lift_hold(cat, hid, RUT, "avgjord")
    retention.lift_hold(cat, hid, BERTIL, "avgjord")
    with cat.session() as s:
        h = s.get(Hold, hid)
        assert (h.placed_by, h.placed_by_id, h.lifted_by, h.lifted_by_id) == ("Anna Arkivarie", "anna",
                                                                              "Bertil Bevarare", "bertil")


def test_one_archivist_rejects(cat):
    retention.decide_disposal(cat, "gallring-1", approve=False, by=ANNA, justification="fel lista", approvers=2)
    assert cat.events(package_id="p-1")[-1].outcome == "failure"


def test_without_a_provider_names_are_unauthenticated_and_two_are_needed(cat, monkeypatch):
    monkeypatch.delenv("ARKIV_OIDC_ISSUER", raising=False)
    monkeypatch.delenv("ARKIV_DISPOSAL_APPROVERS", raising=False)
    assert retention.approvers_required() == 2
    assert retention.approvers_required({"ARKIV_DISPOSAL_APPROVERS": "1"}) == 1
    assert retention.approvers_required({"ARKIV_DISPOSAL_APPROVERS": "1", "ARKIV_OIDC_ISSUER": "https://idp"}) == 2
    with pytest.raises(retention.ConfigError):
        retention.approvers_required({"ARKIV_DISPOSAL_APPROVERS": "3"})
    with pytest.raises(retention.DecisionRefused, match="needs two archivists"):
        retention.decide_disposal(cat, "gallring-1", approve=True, by="Anna", justification="IHP")
    retention.review_disposal(cat, "gallring-1", by="Anna", note="granskad")
    # the same typed name, whatever its case and spacing, is the same person
    for same in ("Anna", " anna ", "ANNA"):
        with pytest.raises(retention.DecisionRefused, match="nobody approves their own proposal"):
            retention.decide_disposal(cat, "gallring-1", approve=True, by=same, justification="IHP")
    retention.decide_disposal(cat, "gallring-1", approve=True, by="Bertil", justification="IHP")
    with cat.session() as s:
        dl = s.get(DisposalList, "gallring-1")
        assert dl.decided_by == "Bertil" and dl.decided_by_id == "unauthenticated name:Bertil"
        assert dl.reviewed_by_id == "unauthenticated name:Anna"


def test_one_name_alone_only_where_the_installation_says_so(cat, monkeypatch):
    monkeypatch.delenv("ARKIV_OIDC_ISSUER", raising=False)
    monkeypatch.setenv("ARKIV_DISPOSAL_APPROVERS", "1")
    retention.decide_disposal(cat, "gallring-1", approve=True, by="Anna", justification="IHP")
    with cat.session() as s:
        assert s.get(DisposalList, "gallring-1").status == "approved"


def test_a_signed_in_person_is_not_an_unauthenticated_name_of_the_same_spelling(cat):
    retention.review_disposal(cat, "gallring-1", by="anna", note="granskad")
    retention.decide_disposal(cat, "gallring-1", approve=True, by=ANNA, justification="IHP", approvers=2)
    with cat.session() as s:
        dl = s.get(DisposalList, "gallring-1")
        assert (dl.reviewed_by_id, dl.decided_by_id) == ("unauthenticated name:anna", "anna")


@pytest.fixture
def signed_in_home(tmp_path, monkeypatch, oidc_provider):
    home = tmp_path / "var"
    (home / "catalogue").mkdir(parents=True)
    cat = _catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")
    tokens = oidc_provider.sign_cli_in(monkeypatch, home, tmp_path / "config", ("anna", "bertil", "rut"))
    return {"cat": cat, "tokens": tokens}


def test_cli_decisions_are_the_signed_in_persons(signed_in_home, monkeypatch, capsys):
    cat, tokens = signed_in_home["cat"], signed_in_home["tokens"]
    args = ["gallring", "approve", "gallring-1", "--reason", "IHP 4.2", "--yes"]
    assert main(["gallring", "review", "gallring-1", "--reason", "Granskad", "--yes"]) == 1  # not signed in
    assert "arkiv login" in capsys.readouterr().err
    monkeypatch.setenv("ARKIV_TOKEN", tokens["anna"])
    assert main([*args, "--by", "Någon Annan"]) == 2  # no typed names when a provider is configured
    assert main(args) == 1  # the first signature must be a review
    assert main(["gallring", "review", "gallring-1", "--reason", "Granskad", "--yes"]) == 0
    assert main(args) == 1  # … and Anna cannot also approve what she reviewed
    assert "nobody approves their own proposal" in capsys.readouterr().err
    monkeypatch.setenv("ARKIV_TOKEN", tokens["rut"])
    assert main(args) == 1  # a researcher cannot decide
    assert "archivist role" in capsys.readouterr().err
    assert main(["hold", "add", "--package", "p-1", "--reason", "Tvist"]) == 1
    monkeypatch.setenv("ARKIV_TOKEN", tokens["bertil"])
    assert main(args) == 0
    assert "approved by Bertil Bevarare" in capsys.readouterr().out
    with cat.session() as s:
        dl = s.get(DisposalList, "gallring-1")
        assert (dl.reviewed_by_id, dl.decided_by_id) == ("anna", "bertil")
    assert main(["hold", "add", "--package", "p-2", "--reason", "Tvist"]) == 0
    with cat.session() as s:
        assert s.scalars(sa.select(Hold.placed_by_id)).one() == "bertil"


def test_arkiv_login_keeps_the_token_for_its_owner_only(signed_in_home, oidc_provider, monkeypatch, capsys):
    import threading

    from transforms.access import identity

    shown = {}

    def play():  # the person at the browser, once the CLI has shown the code
        for _ in range(100):
            if "uri" in shown:
                oidc_provider.play_device_user(shown["uri"], "anna")
                return
            threading.Event().wait(0.05)

    real_show = identity.device_login

    def quick_login(config, *, show, sleep=None, now=None):
        def show_and_remember(started):
            shown["uri"] = started["verification_uri_complete"]
            show(started)
        return real_show(config, show=show_and_remember, sleep=lambda s: threading.Event().wait(0.2))

    monkeypatch.setattr(identity, "device_login", quick_login)
    player = threading.Thread(target=play)
    player.start()
    assert main(["login"]) == 0
    player.join(10)
    out = capsys.readouterr().out
    assert "user code" in out.lower() or "kod" in out.lower()
    assert "Anna Arkivarie" in out
    path = identity.token_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["access_token"].count(".") == 2
    assert main(["gallring", "review", "gallring-1", "--reason", "Granskad", "--yes"]) == 0
    with signed_in_home["cat"].session() as s:
        assert s.get(DisposalList, "gallring-1").reviewed_by_id == "anna"
    assert main(["logout"]) == 0 and not path.exists()


def test_decisions_report_lists_both_signatures(signed_in_home, monkeypatch, capsys):
    tokens = signed_in_home["tokens"]
    monkeypatch.setenv("ARKIV_TOKEN", tokens["anna"])
    assert main(["gallring", "review", "gallring-1", "--reason", "Granskad", "--yes"]) == 0
    monkeypatch.setenv("ARKIV_TOKEN", tokens["bertil"])
    assert main(["gallring", "approve", "gallring-1", "--reason", "IHP 4.2", "--yes"]) == 0
    capsys.readouterr()
    assert main(["decisions", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(r for r in rows if r["what"] == "disposal list gallring-1")
    assert (row["first"]["id"], row["second"]["id"]) == ("anna", "bertil")
    assert row["second"]["name"] == "Bertil Bevarare" and row["status"] == "approved"
    monkeypatch.setenv("ARKIV_TOKEN", tokens["rut"])
    assert main(["decisions"]) == 1  # archivists only
