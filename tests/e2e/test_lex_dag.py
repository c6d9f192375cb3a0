"""The Lex DAG in a real Airflow run (``airflow dags test``) on a temporary AIRFLOW_HOME.

Checks what the foundation promises: packages land in the mellanarkiv and pass our
validator, the E-ARK reference validator (apart from its known false errors) and a second
XSD engine; a rerun of the same interval ships nothing and leaves the catalogue unchanged;
bad rows are covered in test_quality_review.py.
"""

from __future__ import annotations

import json
import subprocess
import tarfile

import pytest
import xmlschema
from e2e_support import BIN, _catalogue, _env, _stored, dags_test
from lxml import etree
from reference_validator import real_findings

from transforms.catalogue import Batch
from transforms.common.xmltools import NS_ERMS, NS_METS, NS_PREMIS, SCHEMA_DIR

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("airflow")]


@pytest.fixture(scope="session")
def archived(tmp_path_factory, airflow_home, lex_source) -> dict:
    home = tmp_path_factory.mktemp("e2e") / "var"
    env = _env(home, lex_source, airflow_home)
    run = dags_test(env)
    assert "state=success" in run.stdout + run.stderr, (run.stdout + run.stderr)[-5000:]
    return {"home": home, "env": env, "log": run.stdout + run.stderr}


def test_packages_in_mellanarkiv_match_the_catalogue(archived, lex_source):
    home = archived["home"]
    cat = _catalogue(home)
    packages = cat.packages("lex")
    assert {p.location for p in packages} == {p.relative_to(home / "mellanarkiv").as_posix() for p in _stored(home)}
    assert len(packages) >= 1
    records = sum(p.record_count for p in packages)
    with cat.session() as s:
        batch = s.get(Batch, "lex/2025")
        assert batch.status == "archived"
        assert records == json.loads(batch.rows)["tables"]["cases"] > 0
    for p in packages:
        types = [e.type for e in cat.events(package_id=p.id)]
        assert types == ["creation", "replication", "fixity check", "validation", "ingestion"]


def test_packages_pass_arkiv_validate(archived):
    stored = _stored(archived["home"])
    run = subprocess.run([BIN / "arkiv", "validate", "--profile", "fgs", *map(str, stored)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("VALID ") == len(stored)


def test_reference_validator_reports_only_its_known_false_errors(archived):
    stored = _stored(archived["home"])
    assert stored, "no package in the mellanarkiv"
    findings = real_findings(stored)
    assert not findings, f"real findings from the reference validator: {findings}"


def test_every_xml_validates_with_xmlschema(archived):
    local = {"http://www.w3.org/1999/xlink": str(SCHEMA_DIR / "xlink.xsd"),
             "http://www.w3.org/XML/1998/namespace": str(SCHEMA_DIR / "xml.xsd")}
    engines = {
        NS_METS: xmlschema.XMLSchema([str(SCHEMA_DIR / n) for n in ("mets.xsd", "DILCISExtensionMETS.xsd",
                                      "DILCISExtensionSIPMETS.xsd")], locations=local, allow="local"),
        NS_PREMIS: xmlschema.XMLSchema(str(SCHEMA_DIR / "premis-v3-0.xsd"), locations=local, allow="local"),
        NS_ERMS: xmlschema.XMLSchema(str(SCHEMA_DIR / "ERMS.xsd"), locations=local, allow="local"),
        "https://arkivflode.se/xml/retention/1": xmlschema.XMLSchema(str(SCHEMA_DIR / "arkivflode-retention-1.xsd"),
                                                                     allow="local"),
        "https://arkivflode.se/xml/datadictionary/1": xmlschema.XMLSchema(
            str(SCHEMA_DIR / "arkivflode-datadictionary-1.xsd"), allow="local"),
    }
    validated = 0
    for path in _stored(archived["home"]):
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                if m.isfile() and m.name.endswith(".xml") and "/data/" not in m.name:
                    data = tar.extractfile(m).read()
                    ns = etree.QName(etree.fromstring(data)).namespace
                    engines[ns].validate(data.decode("utf-8"))
                    validated += 1
    assert validated >= 6


def test_rerun_of_the_same_interval_ships_nothing_and_changes_nothing(archived):
    home = archived["home"]
    cat = _catalogue(home)
    before = cat.snapshot()
    files = {p: p.stat().st_mtime_ns for p in _stored(home)}
    run = dags_test(archived["env"])
    assert "state=success" in run.stdout + run.stderr, (run.stdout + run.stderr)[-5000:]
    assert cat.snapshot() == before
    assert {p: p.stat().st_mtime_ns for p in _stored(home)} == files


