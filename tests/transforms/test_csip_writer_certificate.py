"""The disposal certificate as the CSIP writer packs it: a valid package (ours and the reference validator), kept
as an OCFL object, whose PREMIS names the archivists who decided the disposal, not the software."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from lxml import etree
from reference_validator import real_findings

from transforms.archive import ocfl
from transforms.archive.certificate import archive_certificate, certificate_html, certificate_xml
from transforms.catalogue import Catalogue, DisposalList
from transforms.common.xmltools import NS_DISPOSAL, NS_PREMIS, schema_errors
from transforms.packaging import agents
from transforms.validation.validator import validate_package

P = {"p": NS_PREMIS, "d": NS_DISPOSAL}


def test_the_certificate_package_names_who_decided(tmp_path):
    cat = Catalogue(f"sqlite:///{tmp_path / 'catalogue.sqlite'}")
    cat.migrate()
    with cat.session() as s:
        s.add(DisposalList(id="gallring-2040-01-01", as_of="2040-01-01", status="approved", items=json.dumps([]),
                           reviewed_by="Rut Granskare", reviewed_by_id="rut", reviewed_at=dt.datetime(2040, 1, 1, 15),
                           review_note="Granskad mot IHP", decided_by="Anna Arkivarie", decided_by_id="anna",
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
    assert json.loads(disposal.findtext("p:eventDetailInformation/p:eventDetail", namespaces=P))["reviewed_by"] == {
        "name": "Rut Granskare", "id": "rut"}

    # the certificate itself names both archivists, with the identifiers they signed with
    data = package / "representations/rep1/data"
    cert = etree.parse(str(data / "gallringsbevis.xml")).getroot()
    assert not schema_errors(cert)
    assert [(el.tag.split("}")[1], el.text) for el in cert if el.tag.split("}")[1] not in ("executedAt",
                                                                                            "notDisposed")] == [
        ("approvedBy", "Anna Arkivarie"), ("approvedById", "anna"), ("approvedAt", "2040-01-02T09:00:00"),
        ("justification", "IHP 3.1: 10 år"), ("reviewedBy", "Rut Granskare"), ("reviewedById", "rut"),
        ("reviewedAt", "2040-01-01T15:00:00"), ("reviewNote", "Granskad mot IHP")]
    page = (data / "gallringsbevis.html").read_text(encoding="utf-8")
    reviewed = page.split('<p id="reviewed">')[1].split("</p>")[0]
    approved = page.split('<p id="approved">')[1].split("</p>")[0]
    assert "Rut Granskare" in reviewed and "<code>rut</code>" in reviewed and "Granskad mot IHP" in reviewed
    assert "Anna Arkivarie" in approved and "<code>anna</code>" in approved and "IHP 3.1" in approved
    # a rerun finds the object and writes nothing
    assert archive_certificate(cat, slutarkiv, "gallring-2040-01-01", [], []) == object_id


def _list(**kw) -> DisposalList:
    return DisposalList(id="gallring-x", as_of="2040-01-01", status="approved", items="[]",
                        decided_at=dt.datetime(2040, 1, 2, 9, 0), justification="IHP", **kw)


def test_a_certificate_of_a_list_approved_by_one_unvouched_name_says_so():
    dl = _list(decided_by="Anna <Arkivarie>", decided_by_id="unauthenticated name:Anna <Arkivarie>")
    root = etree.fromstring(certificate_xml(dl, [], {}, [], dt.datetime(2040, 1, 3)))
    assert root.find("d:reviewedBy", P) is None
    assert root.findtext("d:approvedById", namespaces=P) == "unauthenticated name:Anna <Arkivarie>"
    page = certificate_html(dl, [], [], dt.datetime(2040, 1, 3)).decode()
    assert "Anna &lt;Arkivarie&gt;" in page and "unauthenticated name" in page and "<Arkivarie>" not in page
    assert "no separate review" in page


def test_certificates_written_before_the_signatures_were_recorded_stay_valid():
    old = etree.fromstring(f"""<disposalCertificate xmlns="{NS_DISPOSAL}" list="gallring-1">
      <approvedBy>Anna Arkivarie</approvedBy><approvedAt>2030-01-02T09:00:00</approvedAt>
      <justification>IHP</justification><executedAt>2030-01-03T01:00:00</executedAt>
      <disposed package="p" system="lex" recordClass="arenden" period="2025" records="1" bytes="1" sha256="0"
                rule="10 år"/></disposalCertificate>""".encode())
    assert not schema_errors(old)


@pytest.mark.parametrize("fields", [
    "<reviewedById>rut</reviewedById>",  # an identifier without the name it belongs to
    "<reviewedBy>Rut</reviewedBy><reviewedAt>igår</reviewedAt>",  # not a time
    "<reviewedBy>Rut</reviewedBy><reviewedBy>Bo</reviewedBy>",  # one reviewer
])
def test_the_schema_refuses_a_malformed_review(fields):
    bad = etree.fromstring(f"""<disposalCertificate xmlns="{NS_DISPOSAL}" list="gallring-1">
      <approvedBy>Anna</approvedBy><approvedAt>2030-01-02T09:00:00</approvedAt><justification>IHP</justification>
      {fields}<executedAt>2030-01-03T01:00:00</executedAt></disposalCertificate>""".encode())
    assert schema_errors(bad)
