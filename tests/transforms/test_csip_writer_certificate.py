"""The disposal certificate as the CSIP writer packs it: a valid package (ours and the reference validator), kept
as an OCFL object, whose PREMIS names the archivists who decided the disposal, not the software."""

from __future__ import annotations

import datetime as dt
import json

from lxml import etree
from reference_validator import real_findings

from transforms.archive import ocfl
from transforms.archive.certificate import archive_certificate
from transforms.catalogue import Catalogue, DisposalList
from transforms.common.xmltools import NS_PREMIS
from transforms.packaging import agents
from transforms.validation.validator import validate_package

P = {"p": NS_PREMIS}


def test_the_certificate_package_names_who_decided(tmp_path):
    cat = Catalogue(f"sqlite:///{tmp_path / 'catalogue.sqlite'}")
    cat.migrate()
    with cat.session() as s:
        s.add(DisposalList(id="gallring-2040-01-01", as_of="2040-01-01", status="approved", items=json.dumps([]),
                           reviewed_by="Rut Granskare", decided_by="Anna Arkivarie",
                           decided_at=dt.datetime(2040, 1, 2, 9, 0), justification="IHP 3.1: 10 år"))
    slutarkiv = tmp_path / "slutarkiv"
    object_id = archive_certificate(cat, slutarkiv, "gallring-2040-01-01", [], [("uuid-kept", "on hold")])
    package = ocfl.object_path(slutarkiv, object_id) / "v1" / "content" / object_id
    report = validate_package(package, "csip")
    assert report.valid, [f"{f.requirement}: {f.message}" for f in report.findings if f.severity == "ERROR"]
    assert not real_findings([package])

    doc = etree.parse(str(package / "metadata/preservation/premis.xml"))
    disposal = doc.find("p:event[p:eventType='deletion']", P)
    links = [(el.findtext("p:linkingAgentIdentifierValue", namespaces=P), el.findtext("p:linkingAgentRole",
                                                                                       namespaces=P))
             for el in disposal.iterfind("p:linkingAgentIdentifier", P)]
    assert links == [(agents.SOFTWARE_ID, agents.EXECUTING_PROGRAM), ("person-Anna Arkivarie", agents.AUTHORIZER),
                     ("person-Rut Granskare", agents.VALIDATOR)]
    listed = {el.findtext("p:agentIdentifier/p:agentIdentifierValue", namespaces=P): el.findtext("p:agentType",
                                                                                               namespaces=P)
              for el in doc.iterfind("p:agent", P)}
    assert listed == {agents.SOFTWARE_ID: "software", "person-Anna Arkivarie": "person",
                      "person-Rut Granskare": "person"}
    # a rerun finds the object and writes nothing
    assert archive_certificate(cat, slutarkiv, "gallring-2040-01-01", [], []) == object_id
