"""Every source system's DAG in a real Airflow run, on small generated data.

One DAG per YAML in dags/systems, built by the same factory; the three kinds of delivery
(database, file export, prepared packages) each end in valid packages in the mellanarkiv.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from reference_validator import real_findings

import demo
from transforms.catalogue import Catalogue
from transforms.config.systems import load_systems

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("airflow-systems")]

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SYSTEMS = load_systems(PROJECT / "dags" / "systems")
LOGICAL_DATE = "2026-01-02"


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> dict:
    """All seven demo sources, one ARKIV_HOME and one Airflow home for this test session."""
    root = tmp_path_factory.mktemp("all-systems")
    home, airflow_home = root / "var", root / "airflow"
    airflow_home.mkdir()
    demo.generate_all(home, SYSTEMS, size=12)
    env = {**os.environ, **demo.environment(home, SYSTEMS), "AIRFLOW_HOME": str(airflow_home),
           "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "ARKIV_HOME": str(home), "GX_ANALYTICS_ENABLED": "False"}
    subprocess.run([BIN / "airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    return {"home": home, "env": env, "runs": {}}


def _run(world: dict, system: str) -> str:
    if system not in world["runs"]:
        run = subprocess.run([BIN / "airflow", "dags", "test", system, LOGICAL_DATE], env=world["env"],
                             capture_output=True, text=True, timeout=900)
        world["runs"][system] = run.stdout + run.stderr
    return world["runs"][system]


def _stored(home: Path, system: str) -> list[Path]:
    return sorted(p for p in (home / "mellanarkiv" / system).rglob("*") if p.is_file())


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_dag_archives_into_the_mellanarkiv(world, system):
    out = _run(world, system)
    assert "state=success" in out, out[-4000:]
    stored = _stored(world["home"], system)
    assert stored, f"{system}: no package in the mellanarkiv"
    cat = Catalogue(f"sqlite:///{world['home'] / 'catalogue' / 'catalogue.sqlite'}")
    packages = cat.packages(system)
    assert {p.location for p in packages} == {s.relative_to(world["home"] / "mellanarkiv").as_posix() for s in stored}
    assert all(p.record_count > 0 for p in packages)
    if SYSTEMS[system].agreement.series:
        assert all(p.series_code == SYSTEMS[system].agreement.series for p in packages)
    # our own packages must meet our FGS rules too; a supplier's prepared packages the SIP profile
    profile = "sip" if SYSTEMS[system].extract_kind == "prepared" else "fgs"
    run = subprocess.run([BIN / "arkiv", "validate", "--profile", profile, *map(str, stored)], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:]


def test_reference_validator_on_every_system(world):
    for system in SYSTEMS:
        _run(world, system)
    stored = [p for s in SYSTEMS for p in _stored(world["home"], s)]
    assert len(stored) >= len(SYSTEMS), "every system stored at least one package"
    assert not real_findings(stored), real_findings(stored)


def test_archive_structure_links_packages_to_series(world):
    structure = [s for s in SYSTEMS.values() if s.content.get("archive_structure")]
    assert structure, "one system must deliver the archival description"
    for system in SYSTEMS:
        _run(world, system)
    cat = Catalogue(f"sqlite:///{world['home'] / 'catalogue' / 'catalogue.sqlite'}")
    with cat.engine.connect() as c:
        creators = c.exec_driver_sql("SELECT count(*) FROM archive_creators").scalar()
        series = c.exec_driver_sql("SELECT count(*) FROM series").scalar()
    assert creators > 0 and series > 0
    # whichever ran first, every package that names a series is linked to it once both are in
    named = [p for p in cat.packages() if p.series_code]
    assert named and all(p.series_id for p in named), [(p.system, p.series_code, p.series_id) for p in named]


ACCEPTED_IN_PRESERVATION = {".pdf", ".tif", ".tiff", ".jpg", ".jpeg", ".png", ".txt", ".csv", ".xml"}


def test_every_file_is_identified_and_only_accepted_formats_are_preserved(world):
    """PUIDs in PREMIS for every data file; nothing unaccepted in a preservation representation; the
    demo's damaged Word document held back in a document quarantine.

    It reads the SIPs in the mellanarkiv, so it runs before the retention test moves them (tests of
    one module run in file order); the count below makes it fail, not pass empty, if that changes."""
    import tarfile

    from lxml import etree

    from transforms.common.xmltools import NS_PREMIS
    from transforms.quality import quarantine as review

    ns = {"p": NS_PREMIS, "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
    checked: dict[str, int] = {}
    for system in SYSTEMS:
        _run(world, system)
        if SYSTEMS[system].extract_kind == "prepared":
            continue  # a supplier's own PREMIS; identified at intake, reported, not rewritten
        for path in _stored(world["home"], system):
            checked[system] = checked.get(system, 0) + 1
            with tarfile.open(path) as tar:
                members = tar.getmembers()
                data = [m.name for m in members if m.isfile() and "/representations/" in m.name and "/data/" in m.name]
                files = []
                for m in members:
                    if m.name.endswith("premis.xml"):
                        root = etree.fromstring(tar.extractfile(m).read())
                        files += root.xpath("//p:object[@xsi:type='premis:file']", namespaces=ns)
            assert len(files) >= len(data), f"{path.name}: {len(data)} data files, {len(files)} PREMIS file objects"
            missing = [f for f in files if not f.xpath(".//p:formatRegistryKey/text()", namespaces=ns)]
            assert not missing, f"{path.name}: {len(missing)} file object(s) without a PUID"
            preserved = [n for n in data if "/representations/rep1/" in n]
            bad = [n for n in preserved if Path(n).suffix.lower() not in ACCEPTED_IN_PRESERVATION]
            assert not bad, f"{path.name}: not accepted for preservation but in rep1: {bad}"
    built = {s for s, sys_ in SYSTEMS.items() if sys_.extract_kind != "prepared"}
    assert set(checked) == built, f"systems with no SIP left to check: {sorted(built - set(checked))}"
    held = [c for c in review.cases(Catalogue(f"sqlite:///{world['home'] / 'catalogue' / 'catalogue.sqlite'}"))
            if c.kind == "document" and c.system == "lex"]
    assert held, "the demo's damaged Word document was not held back in a document quarantine"
    assert all(Path(c.path).exists() for c in held)


def test_retention_dag_with_the_clock_moved_forward(world):
    """The retention DAG in a real run as of 2040: AIPs in an OCFL slutarkiv, disposal only when approved."""
    for system in SYSTEMS:
        _run(world, system)
    home, env = world["home"], world["env"]
    cat = Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")
    keep = [p.id for p in cat.packages() if p.retention_action == "keep" and p.status == "stored"]
    dispose = [p.id for p in cat.packages() if p.retention_action == "dispose" and p.status == "stored"]
    run = subprocess.run([BIN / "airflow", "dags", "test", "retention", "2040-01-02"], env=env, capture_output=True,
                         text=True, timeout=1800)
    assert "state=success" in run.stdout + run.stderr, (run.stdout + run.stderr)[-4000:]
    assert all(cat.package(pid).status == "transferred" for pid in keep)
    assert all(cat.package(pid).status == "stored" for pid in dispose), "no disposal without approval"
    objects = [home / "slutarkiv" / pid for pid in keep]
    for obj in objects:
        check = subprocess.run([sys.executable, "-W", "ignore", BIN / "ocfl-validate.py", str(obj)],
                               capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check.stdout
    aips = [str(obj / "v1" / "content" / obj.name) for obj in objects]
    ours = subprocess.run([BIN / "arkiv", "validate", *aips], capture_output=True, text=True, timeout=600)
    assert ours.returncode == 0, ours.stdout[-3000:]
    assert aips, "the retention run transferred no AIP"
    findings = real_findings(aips)
    assert not findings, f"real findings on AIPs: {findings}"

    # one archivist reviews the proposed list, another approves it; the next run disposes and archives a certificate
    lists = subprocess.run([BIN / "arkiv", "gallring", "list"], env=env, capture_output=True, text=True)
    list_id = lists.stdout.split()[0]
    reviewed = subprocess.run([BIN / "arkiv", "gallring", "review", list_id, "--by", "Rut Granskare",
                               "--reason", "Granskad mot informationshanteringsplanen"], env=env,
                              capture_output=True, text=True)
    assert reviewed.returncode == 0, reviewed.stderr
    approve = subprocess.run([BIN / "arkiv", "gallring", "approve", list_id, "--by", "Anna Arkivarie",
                              "--reason", "Gallras enligt informationshanteringsplanen"], env=env,
                             capture_output=True, text=True)
    assert approve.returncode == 0, approve.stderr
    run = subprocess.run([BIN / "airflow", "dags", "test", "retention", "2040-01-03"], env=env, capture_output=True,
                         text=True, timeout=1800)
    assert "state=success" in run.stdout + run.stderr, (run.stdout + run.stderr)[-4000:]
    assert all(cat.package(pid).status == "disposed" for pid in dispose)
    assert not [p for p in (home / "mellanarkiv").rglob("*") if p.is_file()], "the mellanarkiv is empty"

    # the fixity audit passes, then finds a flipped byte in the slutarkiv and names the package
    audit = subprocess.run([BIN / "airflow", "dags", "test", "fixity_audit", "2040-01-04"], env=env,
                           capture_output=True, text=True, timeout=1800)
    assert "state=success" in audit.stdout + audit.stderr
    victim = next(p for p in (objects[0] / "v1" / "content").rglob("*.xml") if "data" not in p.parts)
    data = bytearray(victim.read_bytes())
    data[10] ^= 0x01
    victim.write_bytes(bytes(data))
    audit = subprocess.run([BIN / "airflow", "dags", "test", "fixity_audit", "2040-01-05"], env=env,
                           capture_output=True, text=True, timeout=1800)
    out = audit.stdout + audit.stderr
    assert "state=failed" in out and "FIXITY FAILURE" in out and objects[0].name in out


