"""No sensitive value outside the packages: a social-services system (Viva, personnummer in every
case file) through the real `arkiv` CLI — a failed quality gate with its reports, Data Docs and
quarantine page, the archivist's approval and the archived rerun, a search by personnummer, a
refused search, a DIP, a receipt, the access log and a retention plan — and then everything it
wrote outside the packages, and everything it printed, scanned by tests/sensitive_scan.py.

The scanner itself is checked too: values planted in the forms a leak would take (JSON-escaped,
HTML-escaped, ten digits without separator, cut off) are all found, and its report shows none of them.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sensitive_scan
from security_support import SENSITIVE_SCAN

from transforms.common.masking import mask
from transforms.config.systems import load_systems

pytestmark = [pytest.mark.faults, pytest.mark.slow]

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INTERVAL = ("--start", "2025-01-01", "--end", "2026-01-01")


def _arkiv(env: dict, outputs: dict, what: str, *args: str) -> subprocess.CompletedProcess:
    run = subprocess.run([str(BIN / "arkiv"), *args], env=env, capture_output=True, text=True, timeout=600)
    outputs[f"arkiv {what}"] = run.stdout + run.stderr
    return run


@pytest.fixture(scope="module")
def social_run(tmp_path_factory) -> dict:
    from demo import viva

    root = tmp_path_factory.mktemp("sensitive")
    src, home = root / "viva", root / "var"
    src.mkdir()
    url = f"sqlite:///{src / 'viva.sqlite'}"
    viva.generate(url, src / "files", size=12, seed=3, year=2025, bad=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARKIV_", "AWS_"))}
    env.update({"ARKIV_HOME": str(home), "ARKIV_CONN_VIVA_DB": url, "ARKIV_VIVA_FILES": str(src / "files")})
    out: dict[str, str] = {}

    gate = _arkiv(env, out, "run (quality gate)", "run", "viva", *INTERVAL)
    assert gate.returncode == 1 and "failed its quality gate" in gate.stdout + gate.stderr, gate.stderr[-2000:]
    case = _arkiv(env, out, "quarantine list", "quarantine", "list").stdout.split()[0]
    shown = _arkiv(env, out, "quarantine show", "quarantine", "show", case)
    assert shown.returncode == 0 and "personnummer" in shown.stdout
    assert _arkiv(env, out, "quarantine approve", "quarantine", "approve", case, "--by", "Arkivarie Test",
                  "--reason", "Kända fel i Viva, ärende SN 2026/3").returncode == 0
    rerun = _arkiv(env, out, "run (approved)", "run", "viva", *INTERVAL)
    assert rerun.returncode == 0, rerun.stderr[-2000:]

    db = sqlite3.connect(src / "viva.sqlite")
    try:
        case_id, pnr = db.execute(
            "SELECT c.case_id, i.personnummer FROM case_files c "
            "JOIN individuals i ON i.individual_id = c.individual_id "
            "WHERE c.closed_date >= '2025-01-01' AND c.closed_date < '2026-01-01' ORDER BY c.case_id").fetchone()
    finally:
        db.close()
    who = ("--as", "anna-arkivarie", "--purpose", "Begäran SN 2026/1")
    found = _arkiv(env, out, "search --personnummer (archivist)", "search", "--personnummer", pnr,
                   "--role", "archivist", *who, "--json")
    assert found.returncode == 0, found.stderr
    assert str(case_id) in {h["source_id"] for h in json.loads(found.stdout)["hits"]}
    refused = _arkiv(env, out, "search --personnummer (researcher)", "search", "--personnummer", pnr,
                     "--role", "researcher", "--as", "rita-forskare")
    assert refused.returncode != 0
    dip = _arkiv(env, out, "export", "export", "--records", f"viva/{case_id}", "--role", "archivist", *who,
                 "--out", str(home / "exports"))
    assert dip.returncode == 0, dip.stderr[-2000:]
    withheld = _arkiv(env, out, "export (researcher)", "export", "--records", f"viva/{case_id}", "--role",
                      "researcher", "--as", "rita-forskare", "--purpose", "Forskning")
    assert withheld.returncode != 0 and "classified" in withheld.stdout + withheld.stderr
    package = _arkiv(env, out, "packages", "packages", "--json")
    pkg = json.loads(package.stdout)[0]["id"]
    assert _arkiv(env, out, "receipt", "receipt", pkg, "--role", "archivist", "--as", "anna-arkivarie").returncode == 0
    log = _arkiv(env, out, "access-log", "access-log", "--role", "archivist", "--as", "anna-arkivarie")
    assert log.returncode == 0 and "search" in log.stdout and "export" in log.stdout
    plan = _arkiv(env, out, "retention plan", "retention", "plan", "--as-of", "2040-01-02")
    assert plan.returncode == 0, plan.stderr[-2000:]

    systems = load_systems(PROJECT / "dags" / "systems")
    sources = sensitive_scan.sources_from_env(systems, env)
    assert [s.system.name for s in sources] == ["viva"]
    return {"home": home, "env": env, "outputs": out, "sources": sources, "pnr": pnr,
            "values": sensitive_scan.collect(sources)}


def test_nothing_sensitive_outside_the_packages(social_run):
    result = sensitive_scan.scan(social_run["home"], None, social_run["sources"], texts=social_run["outputs"],
                                 values=social_run["values"])
    SENSITIVE_SCAN.clear()
    SENSITIVE_SCAN.update(result.locations)
    SENSITIVE_SCAN["_values"] = result.values
    report = os.environ.get("ARKIV_SECURITY_REPORT")
    if report:
        sensitive_scan.write_counts(result, Path(report), system="viva")
    assert not result.hits, result.report()
    # everything the run is meant to produce was there to be scanned
    for location in ("quality reports", "Data Docs", "quarantine pages and reports",
                     "retention plans and certificates", "captured output"):
        assert result.locations.get(location, {}).get("scanned", 0) > 0, (location, result.locations)
    for location in ("search index (identity numbers)", "access log (identity numbers)"):
        assert result.locations[location]["scanned"] > 0, result.locations
    assert result.values["identity_numbers"] >= 12 and result.values["text_values"] > 50


def test_the_scanner_finds_what_a_leak_would_look_like(social_run, tmp_path):
    values = social_run["values"]
    pnr = social_run["pnr"]
    name = next(v for v, kind in values.texts.items() if kind == "viva.parties.name")
    note = next(v for v, kind in values.texts.items() if kind == "viva.journal_notes.note_text")
    digits = re.sub(r"\D", "", pnr)[-10:]
    planted = {
        "log.json": json.dumps({"event": f"party {name}", "pnr": digits}),          # \u00f6, 10 digits
        "page.html": f"<td>{name.replace('å', '&aring;')}</td><td>{pnr[:8]} {pnr[-4:]}</td>",
        "cut.txt": note[:sensitive_scan.PREFIX] + "…",
    }
    home = tmp_path / "var"
    (home / "reports").mkdir(parents=True)
    for file, text in planted.items():
        (home / "reports" / file).write_text(text, encoding="utf-8")
    result = sensitive_scan.scan(home, None, social_run["sources"], values=values)
    where = {(h.where.rsplit("/", 1)[-1], h.kind) for h in result.hits}
    assert ("log.json", "viva.parties.name") in where
    assert any(w == "log.json" and k.endswith("personnummer") for w, k in where)
    assert ("page.html", "viva.parties.name") in where or "å" not in name
    assert any(w == "page.html" and k.endswith("personnummer") for w, k in where)
    assert ("cut.txt", "viva.journal_notes.note_text") in where
    text = result.report()
    assert pnr not in text and digits not in text and name not in text and note[:20] not in text
    assert mask(pnr) in text or "XXXXXX" in text
