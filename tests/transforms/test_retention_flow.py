"""Retention end to end through the CLI, with the clock moved forward (no waiting years)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from transforms.catalogue import Catalogue
from transforms.cli import main

BIN = Path(sys.executable).parent
AS_OF = "2040-01-01"  # Lex: kept cases due after P2Y, disposable ones after P10Y from closing in 2025


@pytest.fixture
def archived(monkeypatch, tmp_path, lex_source):
    home = tmp_path / "var"
    env = {"ARKIV_HOME": str(home), "ARKIV_LEX_FILES": str(lex_source["files"]), "ARKIV_CONN_LEX_DB": lex_source["url"]}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["run", "lex", "--start", "2025-01-01", "--end", "2026-01-01"]) == 0
    cat = Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")
    return {"home": home, "cat": cat, "env": {**os.environ, **env}}


def _by_action(cat):
    keep = [p for p in cat.packages() if p.retention_action == "keep"]
    dispose = [p for p in cat.packages() if p.retention_action == "dispose"]
    return keep, dispose


def _ocfl_valid(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "ignore", BIN / "ocfl-validate.py", str(path)], capture_output=True,
                          text=True, timeout=120)


def test_nothing_is_due_before_its_time(archived, capsys):
    assert main(["retention", "plan", "--as-of", "2026-06-01", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["transfer"] == [] and plan["dispose"] == [] and plan["not_due"] == len(archived["cat"].packages())


def test_transfer_disposal_with_approval_and_certificate(archived, capsys):
    home, cat = archived["home"], archived["cat"]
    keep, dispose = _by_action(cat)
    assert keep and dispose
    assert main(["retention", "plan", "--as-of", AS_OF, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert sorted(plan["transfer"]) == sorted(p.id for p in keep)
    assert sorted(plan["dispose"]) == sorted(p.id for p in dispose)

    assert main(["retention", "run", "--as-of", AS_OF]) == 0
    out = capsys.readouterr().out
    for p in keep:
        stored = cat.package(p.id)
        assert (stored.status, stored.storage, stored.package_type) == ("transferred", "slutarkiv", "AIP")
        obj = home / "slutarkiv" / p.id
        assert _ocfl_valid(obj).returncode == 0, _ocfl_valid(obj).stdout
        assert main(["validate", str(obj / "v1" / "content" / p.id)]) == 0
        assert not (home / "mellanarkiv" / p.location).exists()
        types = [e.type for e in cat.events(package_id=p.id)]
        assert types[-4:] == ["transfer", "fixity check", "receipt", "deletion"]
        aip = obj / "v1" / "content" / p.id
        assert (aip / "metadata" / "preservation" / "kvittens.xml").is_file()
        history = (aip / "metadata" / "preservation" / "premis-history.xml").read_text(encoding="utf-8")
        for event in ("capture", "validation", "creation", "replication", "ingestion", "transfer"):
            assert f"<premis:eventType>{event}</premis:eventType>" in history
    # disposal waits for an archivist: proposed, nothing deleted
    assert "proposed" in out
    list_id = out.split("disposal list ")[1].split(" ")[0]
    for p in dispose:
        assert cat.package(p.id).status == "stored" and (home / "mellanarkiv" / p.location).exists()
    assert main(["retention", "run", "--as-of", AS_OF]) == 0  # a rerun neither disposes nor duplicates
    assert all(cat.package(p.id).status == "stored" for p in dispose)
    with cat.engine.connect() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM disposal_lists").scalar() == 1
    capsys.readouterr()

    # two archivists: one reviews, another approves; the same name cannot sign twice, nor one name alone
    assert main(["gallring", "approve", list_id, "--by", "Anna Arkivarie", "--reason", "Enligt IHP 4.2"]) == 1
    assert main(["gallring", "review", list_id, "--by", "Rut Granskare", "--reason", "Granskad mot IHP"]) == 0
    assert main(["gallring", "approve", list_id, "--by", "rut  granskare", "--reason", "Enligt IHP 4.2"]) == 1
    assert "nobody approves their own proposal" in capsys.readouterr().err
    assert main(["gallring", "approve", list_id, "--by", "Anna Arkivarie", "--reason", "Enligt IHP 4.2"]) == 0
    assert main(["retention", "run", "--as-of", AS_OF]) == 0
    out = capsys.readouterr().out
    for p in dispose:
        assert cat.package(p.id).status == "disposed"
        assert not (home / "mellanarkiv" / p.location).exists()
    with cat.engine.connect() as c:
        stones = c.exec_driver_sql("SELECT package_id, approved_by, sha256 FROM tombstones").all()
        certificate = c.exec_driver_sql("SELECT certificate FROM disposal_lists").scalar()
    assert {s[0] for s in stones} == {p.id for p in dispose}
    assert all(s[1] == "Anna Arkivarie" for s in stones)
    cert = home / "slutarkiv" / certificate
    assert _ocfl_valid(cert).returncode == 0
    assert main(["validate", str(cert / "v1" / "content" / certificate)]) == 0
    html = (cert / "v1" / "content" / certificate / "representations/rep1/data/gallringsbevis.html").read_text()
    assert "Anna Arkivarie" in html and "Rut Granskare" in html and all(p.id in html for p in dispose)
    capsys.readouterr()
    assert main(["certificate", list_id]) == 0  # the text view names both signatures with their identifiers
    text = capsys.readouterr().out
    assert "Reviewed by: Rut Granskare [unauthenticated name:Rut Granskare]" in text
    assert "Approved by: Anna Arkivarie [unauthenticated name:Anna Arkivarie]" in text


def test_legal_holds_block_transfer_and_disposal(archived, capsys):
    cat = archived["cat"]
    keep, dispose = _by_action(cat)
    assert main(["hold", "add", "--package", keep[0].id, "--by", "Jurist", "--reason", "Tvist"]) == 0
    assert main(["hold", "add", "--record-class", f"lex:{dispose[0].record_class}", "--by", "Jurist",
                 "--reason", "Begäran om utlämnande pågår"]) == 0
    capsys.readouterr()
    assert main(["retention", "plan", "--as-of", AS_OF]) == 0
    report = capsys.readouterr().out
    assert "Tvist" in report and "Begäran om utlämnande pågår" in report
    assert main(["retention", "run", "--as-of", AS_OF]) == 0
    assert cat.package(keep[0].id).status == "stored"
    assert all(cat.package(p.id).status == "stored" for p in dispose)
    with cat.engine.connect() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM disposal_lists").scalar() == 0
    assert main(["hold", "remove", "1", "--by", "Jurist", "--reason", "Tvisten avgjord"]) == 0
    assert main(["retention", "run", "--as-of", AS_OF]) == 0
    assert cat.package(keep[0].id).status == "transferred"


def test_a_kill_between_copy_and_delete_recovers_on_rerun(archived):
    home, cat = archived["home"], archived["cat"]
    keep, _ = _by_action(cat)
    env = {**archived["env"], "ARKIV_FAILPOINT": "transfer.after_record_before_delete"}
    run = subprocess.run([BIN / "arkiv", "retention", "run", "--as-of", AS_OF], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 137  # killed hard, mid-transfer
    p = keep[0]
    # the package is in both places (never in neither): the verified AIP and the untouched SIP
    assert (home / "slutarkiv" / p.id / "inventory.json").is_file()
    assert (home / "mellanarkiv" / p.location).is_file()
    rerun = subprocess.run([BIN / "arkiv", "retention", "run", "--as-of", AS_OF], env=archived["env"],
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert not (home / "mellanarkiv" / p.location).exists()
    assert cat.package(p.id).status == "transferred"
    assert [e.type for e in cat.events(package_id=p.id)].count("transfer") == 1
    assert len([d for d in (home / "slutarkiv").iterdir() if d.name == p.id]) == 1


def test_audit_finds_a_flipped_byte(archived, capsys):
    home, cat = archived["home"], archived["cat"]
    keep, dispose = _by_action(cat)
    assert main(["audit"]) == 0
    victim = home / "mellanarkiv" / dispose[0].location
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["audit"]) == 1
    out = capsys.readouterr().out
    assert dispose[0].id in out and "DOES NOT MATCH" in out
    events = [e for e in cat.events(package_id=dispose[0].id) if e.type == "fixity check"]
    assert events[-1].outcome == "failure"


def test_a_delivered_package_reaches_the_slutarkiv_with_the_puid_of_every_file(monkeypatch, tmp_path):
    """A prepared system's package, taken in as the supplier made it, gets the catalogue's format
    identification (PUIDs) in its AIP's PREMIS at transfer."""
    from lxml import etree

    from demo import castor
    from transforms.catalogue import FileFormat
    from transforms.common.xmltools import NS_PREMIS

    inbox, home = tmp_path / "inbox", tmp_path / "var"
    castor.generate(inbox, size=1, seed=4, as_zip=0)
    monkeypatch.setenv("ARKIV_HOME", str(home))
    monkeypatch.setenv("ARKIV_CASTOR_INBOX", str(inbox))
    assert main(["run", "castor", "--start", "2026-01-01", "--end", "2026-01-02"]) == 0
    cat = Catalogue(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")
    (pkg,) = cat.packages("castor")
    with cat.session() as s:
        identified = {r.path: r.puid for r in s.query(FileFormat).filter_by(package_id=pkg.id)
                      if "/data/" in r.path}
    assert identified and all(identified.values())
    assert main(["retention", "run", "--as-of", "2080-01-01"]) == 0
    content = home / "slutarkiv" / pkg.id / "v1" / "content" / pkg.id
    history = etree.parse(str(content / "metadata" / "preservation" / "premis-history.xml"))
    p = {"p": NS_PREMIS}
    puids = {o.findtext("p:objectIdentifier/p:objectIdentifierValue", namespaces=p):
             o.findtext(".//p:formatRegistryKey", namespaces=p) for o in history.iterfind("p:object", p)}
    assert {path: puids.get(path) for path in identified} == identified
