"""Agreement of a validator with the official E-ARK IP test corpus (CSIP/SIP 2.1.0).

Usage::

    python bench/corpus_agreement.py CORPUS_DIR [--validator arkiv|eark] [--no-integrity] [--json OUT]

CORPUS_DIR is a checkout of DILCISBoard/eark-ip-test-corpus (the folder holding ``corpus/``).
Every ``corpus/{CSIP,SIP}/*/testCase.xml`` names one requirement and lists packages marked
``isValid`` TRUE/FALSE; those with ``isImplemented="TRUE"`` whose folder exists are validated
once each. Two measures are printed:

* **verdict agreement** - a package marked valid must be reported valid (no ERROR); a package
  marked invalid must be reported invalid *or* get a finding on the tested requirement (the
  corpus marks packages "invalid" for SHOULD/MAY rules too, which only warn).
* **requirement agreement** - as above, but a package marked invalid must get a finding that
  names the tested requirement ID.

``--validator eark`` runs the reference validator (``../shared/tools/eark-validate``), for which
only ERROR lines are visible. ``--no-integrity`` runs ours without size/checksum checks (the
reference validator does not check them either). Nothing is written into the corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transforms import xmltools  # noqa: E402
from transforms.validate import CHECKED, validate_package  # noqa: E402

EARK = Path(__file__).resolve().parents[2] / "shared" / "tools" / "eark-validate"


@dataclass
class Case:
    path: Path
    requirement: str
    specification: str
    expected_valid: bool
    outcome_valid: bool | None = None
    flagged_ids: set[str] = field(default_factory=set)  # requirement IDs with any finding
    error_ids: set[str] = field(default_factory=set)
    note: str = ""
    agrees_without_integrity: bool | None = None  # arkiv only: same verdict with size/checksum off

    @property
    def verdict_agrees(self) -> bool:
        if self.expected_valid:
            return bool(self.outcome_valid)
        return (not self.outcome_valid) or self.requirement in self.flagged_ids

    @property
    def requirement_agrees(self) -> bool:
        if self.expected_valid:
            return bool(self.outcome_valid)
        return self.requirement in self.flagged_ids


def load_cases(corpus: Path) -> list[Case]:
    """Every implemented package of the CSIP and SIP test cases, once each."""
    cases: dict[Path, Case] = {}
    for tc in sorted((corpus / "corpus").glob("*/*/testCase.xml")):
        spec_dir = tc.parent.parent.name
        if spec_dir not in ("CSIP", "SIP"):
            continue
        root = xmltools.parse_file(tc).getroot()
        rid = root.find("id").get("requirementId")
        for pkg in root.iter("package"):
            if pkg.get("isImplemented") != "TRUE":
                continue
            rel = (pkg.findtext("path") or "").strip()
            path = (tc.parent / rel).resolve() if rel else None
            if path is None or not path.exists() or path in cases:
                continue
            cases[path] = Case(path, rid, spec_dir, pkg.get("isValid") == "TRUE")
    return list(cases.values())


def run_arkiv(cases: list[Case], integrity: bool) -> None:
    for c in cases:
        # The corpus says which specification a test case targets; a SIP test is validated as a
        # SIP (as `arkiv validate --profile sip` would), a CSIP test by auto-detection.
        profile = "sip" if c.specification == "SIP" else None
        rep = validate_package(c.path, profile, check_integrity=integrity)
        c.outcome_valid = rep.valid
        c.flagged_ids = {f.requirement for f in rep.findings}
        c.error_ids = {f.requirement for f in rep.findings if f.severity == "ERROR"}
        c.note = "; ".join(sorted(c.error_ids))
        if integrity and not c.verdict_agrees:
            # Is the disagreement only about the stored files (sizes, checksums, file names)?
            light = validate_package(c.path, profile, check_integrity=False)
            flagged = {f.requirement for f in light.findings}
            c.agrees_without_integrity = (light.valid if c.expected_valid
                                          else (not light.valid) or c.requirement in flagged)


def run_eark(cases: list[Case], batch: int = 40) -> None:
    by_path = {str(c.path): c for c in cases}
    paths = list(by_path)
    for i in range(0, len(paths), batch):
        chunk = paths[i:i + batch]
        proc = subprocess.run([str(EARK), *chunk], capture_output=True, text=True, check=False)
        current = None
        for line in proc.stdout.splitlines():
            m = re.match(r"^(VALID|INVALID) (.+?)( \(.*\))?$", line)
            if m and m.group(2) in by_path:
                current = by_path[m.group(2)]
                current.outcome_valid = m.group(1) == "VALID"
                continue
            m = re.match(r"^\s+\S+ ([A-Z]+[A-Z0-9_-]*\d+): ", line)
            if m and current is not None:
                current.flagged_ids.add(m.group(1))
                current.error_ids.add(m.group(1))
        for c in (by_path[p] for p in chunk):
            if c.outcome_valid is None:
                c.outcome_valid = False
                c.note = "validator produced no verdict"
            else:
                c.note = "; ".join(sorted(c.error_ids))


def _pct(n: int, d: int) -> str:
    return f"{100.0 * n / d:5.1f}%" if d else "  n/a"


def summarise(cases: list[Case], label: str) -> dict:
    n = len(cases)
    verdict = sum(c.verdict_agrees for c in cases)
    requirement = sum(c.requirement_agrees for c in cases)
    checked = [c for c in cases if c.requirement in CHECKED]
    v_checked = sum(c.verdict_agrees for c in checked)
    r_checked = sum(c.requirement_agrees for c in checked)
    valid = [c for c in cases if c.expected_valid]
    invalid = [c for c in cases if not c.expected_valid]
    print(f"== {label}: {n} packages ({len(valid)} marked valid, {len(invalid)} marked invalid)")
    print(f"   verdict agreement      {verdict}/{n} {_pct(verdict, n)}"
          f"   valid {sum(c.verdict_agrees for c in valid)}/{len(valid)}"
          f"   invalid {sum(c.verdict_agrees for c in invalid)}/{len(invalid)}")
    print(f"   requirement agreement  {requirement}/{n} {_pct(requirement, n)}")
    print(f"   on requirements arkiv checks ({len(checked)} packages): verdict {v_checked}/{len(checked)} "
          f"{_pct(v_checked, len(checked))}, requirement {r_checked}/{len(checked)} {_pct(r_checked, len(checked))}")
    per: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        per[c.requirement].append(c)
    integrity_only = [c for c in cases if not c.verdict_agrees and c.agrees_without_integrity]
    if integrity_only:
        rest = n - len(integrity_only)
        print(f"   {len(integrity_only)} verdict disagreements are only about the stored files (a SIZE, CHECKSUM "
              "or file name in the METS that does not match the corpus file);")
        print(f"   without those packages: verdict {verdict}/{rest} {_pct(verdict, rest)}")
    print("   per requirement (verdict / requirement agreement):")
    for rid in sorted(per, key=lambda r: (re.sub(r"\d+", "", r), int(re.sub(r"\D", "", r) or 0))):
        items = per[rid]
        v = sum(c.verdict_agrees for c in items)
        r = sum(c.requirement_agrees for c in items)
        mark = "" if rid in CHECKED else "  (not checked by arkiv)"
        print(f"     {rid:<10} {v:>3}/{len(items):<3} {r:>3}/{len(items):<3}{mark}")
    print("   disagreements:")
    for c in cases:
        if not c.requirement_agrees:
            exp = "valid" if c.expected_valid else "invalid"
            got = "valid" if c.outcome_valid else "invalid"
            kind = "verdict" if not c.verdict_agrees else "rule"
            if c.agrees_without_integrity:
                kind = "files"
            print(f"     [{kind}] {c.requirement:<9} expected {exp:<7} got {got:<7} "
                  f"{os.path.relpath(c.path)}  {c.note[:160]}")
    return {"label": label, "packages": n, "verdict_agree": verdict, "requirement_agree": requirement,
            "checked_packages": len(checked), "checked_verdict_agree": v_checked,
            "checked_requirement_agree": r_checked}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--validator", choices=("arkiv", "eark"), default="arkiv")
    ap.add_argument("--no-integrity", action="store_true", help="arkiv: skip size/checksum checks")
    ap.add_argument("--json", type=Path, help="also write the summary as JSON here")
    args = ap.parse_args(argv)
    cases = load_cases(args.corpus)
    if not cases:
        print(f"no test cases under {args.corpus}/corpus", file=sys.stderr)
        return 2
    if args.validator == "eark":
        run_eark(cases)
        label = "eark-validator 1.1.3"
    else:
        run_arkiv(cases, integrity=not args.no_integrity)
        label = "arkiv validate" + (" (no size/checksum checks)" if args.no_integrity else "")
    summary = summarise(cases, label)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    _ = etree  # lxml is imported for its side effect of failing early when missing
    sys.exit(main())
