"""Agreement of a validator with the official E-ARK IP test corpus (CSIP/SIP 2.1.0).

Usage::

    python bench/corpus_agreement.py CORPUS_DIR [--validator arkiv|eark] [--compare]
                                     [--no-integrity] [--as-stored] [--json OUT] [--keep-copy]

CORPUS_DIR is a checkout of DILCISBoard/eark-ip-test-corpus (the folder holding ``corpus/``).
Every ``corpus/{CSIP,SIP}/*/testCase.xml`` names one requirement and lists packages marked
``isValid`` TRUE/FALSE under rules that each give an error level (ERROR, WARNING, INFO); those
with ``isImplemented="TRUE"`` whose folder exists are validated once each (a package listed by
two test cases counts for the first). ``--compare`` runs ours and the reference validator
(``../shared/tools/eark-validate``) in the same invocation and prints them side by side.

**Published bytes.** The corpus was authored on Windows checkouts: many METS list the SIZE and
CHECKSUM of text files with CRLF line endings, while git stores (and a Linux checkout writes)
them with LF. By default the ``corpus/`` folder is copied to a temporary directory (the
checkout is never modified) and every file that a METS lists with a CHECKSUM that does not match
its stored bytes but *does* match them after converting LF to CRLF is written with CRLF line
endings - exactly what a Windows git checkout of that text file produces. Nothing else is
changed: a file whose CRLF form does not match stays as it is. ``--as-stored`` skips this.

Three measures, each per validator:

* **(i) verdict** - the validator's verdict (valid = no ERROR) equals the corpus's ``isValid``.
* **(ii) requirement-scoped** - what the corpus is built for: a package marked valid agrees when
  the validator reports no ERROR on the tested requirement ID; a package marked invalid agrees
  when the validator reports the tested requirement ID at the level the corpus's own test rule
  names (an ERROR rule needs an ERROR; a WARNING rule a WARNING or ERROR; an INFO rule any
  finding - the corpus marks packages "invalid" for SHOULD and MAY rules too). The strict form,
  an ERROR on the tested ID for every invalid package, is printed as well.
* **(iii)** - (ii) on the packages whose tested requirement the validator claims to check
  (ours: ``list_requirements(...).checked``; the reference: the rule IDs of its CSIP/SIP 2.1.0
  Schematron files and structure checks).

For the reference validator every message is read from its ``--json`` report (errors, warnings
and infos with their rule IDs); its verdict is its own ``is_valid``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transforms.common import xmltools  # noqa: E402
from transforms.validation.context import resolve_href as _resolve_href  # noqa: E402
from transforms.validation.validator import list_requirements, validate_package  # noqa: E402

EARK = Path(__file__).resolve().parents[2] / "shared" / "tools" / "eark-validate"
EARK_LABEL = "eark-validator 1.1.3"
_SEV_RANK = {"INFO": 1, "WARNING": 2, "ERROR": 3}
_METS_NS = "{http://www.loc.gov/METS/}"
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_HASHES = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}


# --------------------------------------------------------------------------------------------
# Test cases
# --------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What one validator said about one package."""

    valid: bool | None = None
    findings: dict[str, dict[str, str]] = field(default_factory=dict)  # rid -> severity -> first message
    note: str = ""
    version: str = ""  # the E-ARK version whose rules were applied (ours say it in the report)

    def add(self, rid: str, severity: str, message: str) -> None:
        self.findings.setdefault(rid, {}).setdefault(severity, message)

    def severity(self, rid: str) -> str | None:
        sevs = self.findings.get(rid, {})
        return max(sevs, key=_SEV_RANK.__getitem__) if sevs else None

    def errors(self) -> list[str]:
        return [r for r, s in self.findings.items() if "ERROR" in s]


@dataclass
class Case:
    rel: str  # package folder relative to the corpus checkout
    requirement: str
    specification: str  # CSIP | SIP
    expected_valid: bool
    level: str  # error level of the corpus rule listing the package: ERROR | WARNING | INFO
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def verdict_agrees(self, v: str) -> bool:
        return self.outcomes[v].valid == self.expected_valid

    def requirement_agrees(self, v: str, *, strict: bool = False) -> bool:
        sev = self.outcomes[v].severity(self.requirement)
        if self.expected_valid:
            return "ERROR" not in self.outcomes[v].findings.get(self.requirement, {})
        need = "ERROR" if strict else self.level
        return sev is not None and _SEV_RANK[sev] >= _SEV_RANK.get(need, 3)


def load_cases(corpus: Path) -> list[Case]:
    """Every implemented package of the CSIP and SIP test cases, once each."""
    cases: dict[str, Case] = {}
    for tc in sorted((corpus / "corpus").glob("*/*/testCase.xml")):
        spec_dir = tc.parent.parent.name
        if spec_dir not in ("CSIP", "SIP"):
            continue
        root = xmltools.parse_file(tc).getroot()
        rid = root.find("id").get("requirementId")
        for rule in root.iter("rule"):
            err = rule.find("error")
            level = (err.get("level") if err is not None else None) or "ERROR"
            for pkg in rule.iter("package"):
                if pkg.get("isImplemented") != "TRUE":
                    continue
                rel_path = (pkg.findtext("path") or "").strip()
                if not rel_path:
                    continue
                rel = os.path.normpath(os.path.relpath(tc.parent / rel_path, corpus))
                if rel in cases or not (corpus / rel).exists():
                    continue
                cases[rel] = Case(rel, rid, spec_dir, pkg.get("isValid") == "TRUE", level.upper())
    return list(cases.values())


# --------------------------------------------------------------------------------------------
# Reconstructing the published bytes (CRLF text files)
# --------------------------------------------------------------------------------------------
def _digest(data: bytes, ctype: str) -> str | None:
    upper = ctype.strip().upper()
    if upper in _HASHES:
        return hashlib.new(_HASHES[upper], data).hexdigest()
    if upper == "CRC32":
        return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"
    if upper == "ADLER-32":
        return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"
    return None


def _to_crlf(data: bytes) -> bytes:
    """What a Windows git checkout (core.autocrlf) writes for an LF text file."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def _find_ci(folder: Path, rel: str) -> Path | None:
    """``folder/rel``, matching each name case-insensitively (a Windows checkout resolves so)."""
    here = folder
    for part in rel.split("/"):
        exact = here / part
        if exact.exists():
            here = exact
            continue
        if not here.is_dir():
            return None
        low = [c for c in here.iterdir() if c.name.lower() == part.lower()]
        if not low:
            return None
        here = low[0]
    return here if here.is_file() else None


@dataclass
class Restoration:
    mets_read: int = 0
    listed: int = 0  # file/mdRef entries with a checksum that resolve to a file
    mismatched: int = 0  # ... whose stored bytes do not match the listed checksum
    restored: list[str] = field(default_factory=list)  # files written with CRLF
    conflicts: list[str] = field(default_factory=list)  # listed with LF and CRLF checksums

    def to_dict(self) -> dict:
        return {"mets_read": self.mets_read, "listed": self.listed, "mismatched": self.mismatched,
                "restored": len(self.restored), "restored_files": self.restored,
                "conflicts": self.conflicts}


def restore_published_bytes(corpus_copy: Path) -> Restoration:
    """Rewrite with CRLF every listed file whose CRLF form (only) matches its METS checksum."""
    out = Restoration()
    votes: dict[Path, dict[str, int]] = defaultdict(lambda: {"lf": 0, "crlf": 0})
    for mets in sorted(corpus_copy.rglob("*")):
        if mets.name.lower() != "mets.xml" or not mets.is_file():
            continue
        try:
            tree = xmltools.parse_bytes(mets.read_bytes(), name=str(mets))
        except (xmltools.XMLRejected, ValueError):
            continue  # empty placeholders, malformed test METS
        out.mets_read += 1
        for el in tree.getroot().iter(f"{_METS_NS}file", f"{_METS_NS}mdRef"):
            locat = el if el.tag == f"{_METS_NS}mdRef" else el.find(f"{_METS_NS}FLocat")
            checksum, ctype = el.get("CHECKSUM"), el.get("CHECKSUMTYPE")
            href = locat.get(_XLINK_HREF) if locat is not None else None
            if not checksum or not ctype or not href:
                continue
            rel, _why = _resolve_href(href.strip(), "")
            target = _find_ci(mets.parent, rel) if rel else None
            if target is None:
                continue
            data = target.read_bytes()
            want = checksum.strip().lower()
            stored = _digest(data, ctype)
            if stored is None:
                continue
            out.listed += 1
            if stored == want:
                votes[target]["lf"] += 1
                continue
            out.mismatched += 1
            if b"\n" in data and _digest(_to_crlf(data), ctype) == want:
                votes[target]["crlf"] += 1
    for target, v in sorted(votes.items()):
        if not v["crlf"]:
            continue
        rel = str(target.relative_to(corpus_copy))
        if v["lf"]:
            out.conflicts.append(rel)  # one METS lists the LF bytes, another the CRLF bytes: keep
            continue
        target.write_bytes(_to_crlf(target.read_bytes()))
        out.restored.append(rel)
    return out


def prepare_corpus(corpus: Path, as_stored: bool) -> tuple[Path, Restoration | None, Path | None]:
    """The folder to validate: the checkout itself (--as-stored) or a restored temporary copy."""
    if as_stored:
        return corpus, None, None
    tmp = Path(tempfile.mkdtemp(prefix="corpus-agreement-"))
    shutil.copytree(corpus / "corpus", tmp / "corpus", symlinks=True)
    return tmp, restore_published_bytes(tmp / "corpus"), tmp


def corpus_commit(corpus: Path) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(corpus), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=False)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


# --------------------------------------------------------------------------------------------
# Running the validators
# --------------------------------------------------------------------------------------------
def arkiv_checked() -> frozenset[str]:
    return frozenset(r.id for p in ("csip", "sip") for r in list_requirements(p) if r.checked)


def run_arkiv(cases: list[Case], root: Path, integrity: bool) -> None:
    for c in cases:
        # The corpus says which specification a test case targets; a SIP test is validated as a
        # SIP (as `arkiv validate --profile sip` would), a CSIP test as CSIP (`--profile csip`):
        # the corpus's CSIP packages declare OAISPACKAGETYPE="SIP" under the CSIP profile URL,
        # which auto-detection rightly treats as a SIP, while the test case scores CSIP only.
        profile = "sip" if c.specification == "SIP" else "csip"
        rep = validate_package(root / c.rel, profile, check_integrity=integrity)
        out = Outcome(valid=rep.valid, version=rep.spec_version)
        for f in rep.findings:
            out.add(f.requirement, f.severity, f"{f.message} [{f.location}]" if f.location else f.message)
        c.outcomes["arkiv"] = out


def _eark_site() -> Path | None:
    env = os.environ.get("EARK_VALIDATOR_ENV") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eark-validator-1.1.3")
    found = sorted(Path(env).glob("lib/python*/site-packages/eark_validator"))
    return found[0] if found else None


def eark_checked() -> frozenset[str]:
    """Rule IDs the reference validator can report: its 2.1.0 CSIP/SIP Schematron and structure checks."""
    site = _eark_site()
    if site is None:
        return frozenset()
    ids: set[str] = set()
    for f in site.glob("ipxml/resources/schematron/V2.1.0/*/*.xml"):
        if f.parent.name in ("CSIP", "SIP"):
            ids.update(re.findall(r'<(?:\w+:)?(?:assert|report)\b[^>]*\bid="([A-Z]+\d+)"', f.read_text("utf-8")))
    structure = (site / "structure.py").read_text("utf-8")
    ids.update(f"CSIPSTR{n}" for n in re.findall(r"test_result_from_id\((\d+)", structure))
    return frozenset(ids)


_EARK_SEV = {"ERROR": "ERROR", "WARN": "WARNING", "WARNING": "WARNING", "INFO": "INFO"}


def _eark_batch(paths: list[str]) -> list[tuple[str, str]]:
    proc = subprocess.run([str(EARK), "--json", *paths], capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("{", "INVALID ", "VALID "))]
    return list(zip(paths, lines + [""] * (len(paths) - len(lines)), strict=False))


def _eark_outcome(line: str) -> Outcome:
    if not line.startswith("{"):
        return Outcome(valid=False, note=line or "validator produced no verdict")
    rep = json.loads(line)
    out = Outcome()
    structure, metadata = rep.get("structure"), rep.get("metadata")
    parts = [("structure", structure)]
    if metadata:
        parts += [("schema", metadata.get("schema_results")), ("schematron", metadata.get("schematron_results"))]
    for _part, res in parts:
        for m in (res or {}).get("messages") or []:
            sev = _EARK_SEV.get(str(m.get("severity", "")).upper(), "INFO")
            msg = re.sub(r"\s+", " ", str(m.get("message", ""))).strip()
            out.add(str(m.get("rule_id") or "?"), sev, msg)
    out.valid = bool(structure and metadata and structure.get("status") == "WellFormed"
                     and (metadata.get("schema_results") or {}).get("status") == "VALID"
                     and (metadata.get("schematron_results") or {}).get("status") == "VALID")
    return out


def run_eark(cases: list[Case], root: Path, batch: int = 20, workers: int = 2) -> None:
    by_path = {str(root / c.rel): c for c in cases}
    paths = list(by_path)
    chunks = [paths[i:i + batch] for i in range(0, len(paths), batch)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(_eark_batch, chunks):
            for p, line in result:
                by_path[p].outcomes["eark"] = _eark_outcome(line.replace(f"{root}{os.sep}", ""))


# --------------------------------------------------------------------------------------------
# Measures and report
# --------------------------------------------------------------------------------------------
def _short(msg: str, n: int = 110) -> str:
    msg = re.sub(r"\s+", " ", msg).strip()
    return msg if len(msg) <= n else msg[: n - 1] + "…"


def reason(c: Case, v: str, checked: frozenset[str]) -> str:
    """One line: why validator ``v`` disagrees with the corpus on this package."""
    out = c.outcomes[v]
    rid = c.requirement
    if out.note:
        return out.note
    if c.expected_valid:
        if "ERROR" in out.findings.get(rid, {}):
            return f"ERROR {rid}: {_short(out.findings[rid]['ERROR'])}"
        errs = out.errors()
        first = errs[0] if errs else "?"
        return (f"other errors {', '.join(sorted(errs)[:6])}{' …' if len(errs) > 6 else ''}; "
                f"first {first}: {_short(out.findings.get(first, {}).get('ERROR', ''), 90)}")
    sev = out.severity(rid)
    if sev is not None:
        return (f"reports {rid} only as {sev} (corpus rule level {c.level}): "
                f"{_short(out.findings[rid][sev])}")
    scope = "" if rid in checked else " (not a requirement this validator checks)"
    errs = out.errors()
    if errs:
        return f"no finding on {rid}{scope}; reports {', '.join(sorted(errs)[:6])}{' …' if len(errs) > 6 else ''}"
    return f"no finding on {rid}{scope}; package reported valid"


def measures(cases: list[Case], v: str, checked: frozenset[str]) -> dict:
    n = len(cases)
    valid = [c for c in cases if c.expected_valid]
    scoped = [c for c in cases if c.requirement in checked]
    return {
        "packages": n,
        "marked_valid": len(valid),
        "marked_invalid": n - len(valid),
        "verdict": sum(c.verdict_agrees(v) for c in cases),
        "verdict_valid_accepted": sum(c.verdict_agrees(v) for c in valid),
        "verdict_invalid_rejected": sum(c.verdict_agrees(v) for c in cases if not c.expected_valid),
        "requirement": sum(c.requirement_agrees(v) for c in cases),
        "requirement_strict_error": sum(c.requirement_agrees(v, strict=True) for c in cases),
        "checked_packages": len(scoped),
        "checked_requirements": len({c.requirement for c in scoped}),
        "checked_requirement": sum(c.requirement_agrees(v) for c in scoped),
        "checked_requirement_strict_error": sum(c.requirement_agrees(v, strict=True) for c in scoped),
    }


def _frac(a: int, b: int) -> str:
    return f"{a}/{b} = {100.0 * a / b:.1f}%" if b else "n/a"


def print_table(results: dict[str, dict], labels: dict[str, str]) -> None:
    keys = list(results)
    rows = [
        ("packages (valid / invalid)", lambda m: f"{m['packages']} ({m['marked_valid']} / {m['marked_invalid']})"),
        ("(i) verdict", lambda m: _frac(m["verdict"], m["packages"])),
        ("    marked valid, accepted", lambda m: f"{m['verdict_valid_accepted']}/{m['marked_valid']}"),
        ("    marked invalid, rejected", lambda m: f"{m['verdict_invalid_rejected']}/{m['marked_invalid']}"),
        ("(ii) requirement-scoped", lambda m: _frac(m["requirement"], m["packages"])),
        ("    strict (invalid needs an ERROR)", lambda m: _frac(m["requirement_strict_error"], m["packages"])),
        ("(iii) on requirements it checks", lambda m: _frac(m["checked_requirement"], m["checked_packages"])),
        ("    strict (invalid needs an ERROR)",
         lambda m: _frac(m["checked_requirement_strict_error"], m["checked_packages"])),
        ("    requirements in scope", lambda m: str(m["checked_requirements"])),
    ]
    width = max(len(r[0]) for r in rows) + 2
    cols = [max(len(labels[k]), 24) + 2 for k in keys]
    print("measure".ljust(width) + "".join(labels[k].ljust(w) for k, w in zip(keys, cols, strict=True)))
    print("-" * (width + sum(cols)))
    for name, fn in rows:
        print(name.ljust(width) + "".join(fn(results[k]).ljust(w) for k, w in zip(keys, cols, strict=True)))


def disagreements(cases: list[Case], v: str, checked: frozenset[str]) -> dict[str, list[dict]]:
    """Per tested requirement: every package where (i) or (ii) disagrees, with a reason."""
    per: dict[str, list[dict]] = defaultdict(list)
    for c in cases:
        v_ok, r_ok = c.verdict_agrees(v), c.requirement_agrees(v)
        if v_ok and r_ok:
            continue
        kind = "(i)+(ii)" if not (v_ok or r_ok) else ("(ii)" if not r_ok else "(i)")
        per[c.requirement].append({
            "package": c.rel, "expected": "valid" if c.expected_valid else f"invalid ({c.level})",
            "got": "valid" if c.outcomes[v].valid else "invalid", "measures": kind,
            "in_scope": c.requirement in checked, "reason": reason(c, v, checked)})
    return dict(per)


def _rid_key(rid: str) -> tuple:
    m = re.match(r"([A-Z\-]+?)(\d*)$", rid)
    return (m.group(1), int(m.group(2) or 0)) if m else (rid, 0)


def print_disagreements(per: dict[str, list[dict]], label: str) -> None:
    total = sum(len(x) for x in per.values())
    print(f"\n== {label}: {total} packages disagree on (i) or (ii), by tested requirement")
    for rid in sorted(per, key=_rid_key):
        items = per[rid]
        scope = "" if items[0]["in_scope"] else "  [not checked]"
        print(f"  {rid} ({len(items)}){scope}")
        for d in items:
            name = d["package"].split("/", 3)[-1]
            print(f"    {d['measures']:<8} exp {d['expected']:<17} got {d['got']:<7} {name}: {d['reason']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus", type=Path, help="checkout of DILCISBoard/eark-ip-test-corpus")
    ap.add_argument("--validator", choices=("arkiv", "eark"), default="arkiv")
    ap.add_argument("--compare", action="store_true", help="run ours and the reference validator side by side")
    ap.add_argument("--no-integrity", action="store_true", help="arkiv: skip size/checksum checks")
    ap.add_argument("--as-stored", action="store_true",
                    help="validate the files as git stores them (LF), without restoring the CRLF text files")
    ap.add_argument("--json", type=Path, help="also write figures and disagreements as JSON here")
    ap.add_argument("--keep-copy", action="store_true", help="keep the restored temporary copy (path is printed)")
    ap.add_argument("--quiet", action="store_true", help="print only the table")
    args = ap.parse_args(argv)
    corpus = args.corpus.resolve()
    cases = load_cases(corpus)
    if not cases:
        print(f"no test cases under {corpus}/corpus", file=sys.stderr)
        return 2
    commit = corpus_commit(corpus)
    root, restoration, tmp = prepare_corpus(corpus, args.as_stored)
    try:
        which = ["arkiv", "eark"] if args.compare else [args.validator]
        labels = {"arkiv": "arkiv validate" + (" --no-integrity" if args.no_integrity else ""), "eark": EARK_LABEL}
        checked = {"arkiv": arkiv_checked(), "eark": eark_checked()}
        if "arkiv" in which:
            run_arkiv(cases, root, integrity=not args.no_integrity)
        if "eark" in which:
            run_eark(cases, root)
    finally:
        if tmp is not None and not args.keep_copy:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"corpus {corpus} (commit {commit or 'unknown: not a git checkout'}); {len(cases)} packages")
    if restoration is None:
        print("files validated as stored (LF); no CRLF reconstruction (--as-stored)")
    else:
        print(f"published bytes: {len(restoration.restored)} text files restored to CRLF (of "
              f"{restoration.mismatched} listed checksums that do not match the stored bytes; "
              f"{restoration.listed} checksummed references in {restoration.mets_read} METS; "
              f"{len(restoration.conflicts)} conflicting)" + (f"; copy kept at {root}" if args.keep_copy else ""))
    results = {v: measures(cases, v, checked[v]) for v in which}
    print()
    print_table(results, labels)
    per = {v: disagreements(cases, v, checked[v]) for v in which}
    if not args.quiet:
        for v in which:
            print_disagreements(per[v], labels[v])
    if args.json:
        args.json.write_text(json.dumps({
            "corpus": str(corpus), "commit": commit, "packages": len(cases),
            "as_stored": args.as_stored, "integrity": not args.no_integrity,
            "restoration": restoration.to_dict() if restoration else None,
            "validators": {v: {"label": labels[v], **results[v], "checked_ids": sorted(checked[v], key=_rid_key),
                               "disagreements": per[v]} for v in which},
            "applied_versions": {c.rel: c.outcomes["arkiv"].version for c in cases if "arkiv" in c.outcomes},
        }, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
