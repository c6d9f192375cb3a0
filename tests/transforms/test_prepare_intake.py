"""The prepared-system intake runs ``arkiv prepare``: other tools' packages are archived, damage is not."""

from __future__ import annotations

import json
from pathlib import Path

from test_prepare import CommonsIP2, Meemoo22, Sip220, _break, as_tar, as_zip, make_1x, make_package

from transforms.intake.prepared import take_in
from transforms.validation import validator as v


def test_intake_prepares_other_tools_packages_and_quarantines_damage(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    src = tmp_path / "src"
    good_tar = as_tar(make_package(src / "a", Sip220(), objid="sip220-pkg"))
    good_zip = as_zip(make_package(src / "b", Meemoo22(), objid="meemoo-pkg"))
    damaged = make_package(src / "c", CommonsIP2(), objid="damaged-pkg")
    _break("checksum mismatch", damaged)
    damaged_tar = as_tar(damaged)
    old_tar = as_tar(make_1x(src / "d"))
    for f in (good_tar, good_zip, damaged_tar, old_tar):
        (inbox / f.name).write_bytes(f.read_bytes())

    intakes = {i.source: i for i in take_in(inbox, tmp_path / "build", tmp_path / "quarantine")}

    for name in ("sip220-pkg.tar", "meemoo-pkg.zip"):
        got = intakes[name]
        assert got.outcome == "repaired", got.findings
        assert Path(got.path).suffix == ".tar"
        report = v.validate_package(got.path, "fgs")
        assert report.valid and report.spec_version == "2.1.0", report.to_text()
        # every change is said (these become catalogue events), naming requirement and original value
        assert any(r.startswith("SIP2: ") and "E-ARK-SIP-v2-2-0.xml" in r for r in got.repairs), got.repairs
        assert any("kept unchanged" in r for r in got.repairs)
        # format identification of the delivered files is recorded
        data = [f for f in got.formats if f["path"].endswith("ärende 1.txt")]
        assert data and data[0]["puid"] == "x-fmt/111"

    bad = intakes["damaged-pkg.tar"]
    assert bad.outcome == "quarantined" and any(f.startswith("CSIP71") for f in bad.findings), bad.findings
    saved = json.loads(Path(bad.report).read_text(encoding="utf-8"))
    assert saved["spec_version"] == "2.1.0" and "CSIP71" in {f["requirement"] for f in saved["findings"]}

    old = intakes["old-1x.tar"]
    assert old.outcome == "quarantined" and any("1.x" in f for f in old.findings), old.findings
    assert not [p for p in (tmp_path / "build").iterdir() if p.name.startswith(("damaged", "old"))]
