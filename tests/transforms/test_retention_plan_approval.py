"""Approval of a retention plan's transfers: an archivist's decision, and a transfer that waits for it when asked to."""

from __future__ import annotations

import pytest

from transforms.archive import retention
from transforms.catalogue import Catalogue, Package, Person

ANNA = Person("anna", "Anna Arkivarie", ("archivist",))
RUT = Person("rut", "Rut Forskare", ("researcher",))


@pytest.fixture
def cat(tmp_path):
    cat = Catalogue(f"sqlite:///{tmp_path / 'catalogue.sqlite'}")
    cat.migrate()
    with cat.session() as s:
        for pid in ("k-1", "k-2"):
            s.add(Package(id=pid, system="lex", record_class="arenden", period="2025", batch_id="lex/2025",
                          status="stored", size=1, sha256="0" * 64, content_digest="0" * 64, storage="mellanarkiv",
                          location=f"{pid}.tar", retention_action="keep", due_date="2028-01-01"))
    return cat


def test_an_archivist_approves_the_plans_transfers(cat):
    plan = retention.Plan("2040-01-01", transfer=["k-1"])
    with pytest.raises(retention.DecisionRefused, match="archivist role"):
        retention.approve_plan(cat, plan, by=RUT, justification="enligt plan")
    with pytest.raises(ValueError, match="justification"):
        retention.approve_plan(cat, plan, by=ANNA, justification=" ")
    assert retention.approve_plan(cat, plan, by=ANNA, justification="enligt IHP") == 1
    assert retention.plan_approved(cat, "k-1") and not retention.plan_approved(cat, "k-2")
    event = cat.events(package_id="k-1")[-1]
    assert (event.agent, event.agent_id, event.agent_roles, event.executing_agent) == (
        "Anna Arkivarie", "anna", "archivist", retention.AGENT)


def test_a_transfer_waits_for_the_approval_only_when_asked_to(cat):
    retention.require_plan_approval(cat, "k-2", env={})  # the default: the schedule alone decides
    on = {"ARKIV_RETENTION_PLAN_APPROVAL": "1"}
    with pytest.raises(retention.DecisionRefused, match="waits for an archivist's approval"):
        retention.require_plan_approval(cat, "k-2", env=on)
    retention.approve_plan(cat, retention.Plan("2040-01-01", transfer=["k-2"]), by="Anna", justification="IHP")
    retention.require_plan_approval(cat, "k-2", env=on)
