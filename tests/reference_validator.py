"""The E-ARK reference validator as a second opinion, in one place for every test that asks it.

``../shared/tools/eark-validate`` runs eark-validator 1.1.3 offline. It is known to be wrong on a
few rules (shared/tools/README.md), each of which our own validator checks correctly instead:
CSIP2 (accepts only "Other"), CSIP4/CSIP5 (outdated vocabulary), CSIP12/13/15/16 (applies
software-agent rules to the SIP submitter agent, which SIP15–20 require to be an organisation),
CSIP63 (fires when the optional attribute is absent), CSIP103 (wants a division labelled exactly
"Representations"; CSIP105–107 ask for "Representations/rep1"), SIP14 (requires
IDENTIFICATIONCODE on the software agent, contradicting CSIP16).

:func:`reference_rules` fails instead of passing quietly when the validator did not really run:
a traceback, an exit code other than 0 or 1, a package without its verdict line, or a package
called INVALID without a single rule (then nothing was checked, and "no unknown rule" would be
true of nothing).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
EARK_VALIDATE = PROJECT.parent / "shared" / "tools" / "eark-validate"
KNOWN_FALSE = frozenset({"CSIP2", "CSIP4", "CSIP5", "CSIP12", "CSIP13", "CSIP15", "CSIP16", "CSIP63", "CSIP103",
                         "SIP14"})
_VERDICT = re.compile(r"^(VALID|INVALID) (.+?)(?: \(\d+ errors?\))?$")
_RULE = re.compile(r"^\s+\S+ ([A-Z]+[0-9]+):")


def reference_rules(paths: Iterable[Path | str], *, timeout: int = 900) -> dict[str, set[str]]:
    """The rules the reference validator reports as errors, per package (path as given)."""
    paths = [str(p) for p in paths]
    assert paths, "no package to give the reference validator"
    run = subprocess.run([str(EARK_VALIDATE), *paths], capture_output=True, text=True, timeout=timeout,
                         cwd=PROJECT)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.returncode in (0, 1), f"eark-validate exited {run.returncode}: {run.stderr[-3000:]}"
    verdicts: dict[str, str] = {}
    rules: dict[str, set[str]] = {}
    current: str | None = None
    for line in run.stdout.splitlines():
        if m := _VERDICT.match(line):
            current = m.group(2)
            verdicts[current] = m.group(1)
            rules[current] = set()
        elif (m := _RULE.match(line)) and current is not None:
            rules[current].add(m.group(1))
    missing = [p for p in paths if p not in verdicts]
    assert not missing, f"no verdict for {missing}: {run.stdout[-3000:]}"
    silent = [p for p in paths if verdicts[p] == "INVALID" and not rules[p]]
    assert not silent, f"called INVALID without any rule (nothing was checked): {silent}"
    return rules


def real_findings(paths: Iterable[Path | str]) -> dict[str, list[str]]:
    """Per package, the rules the reference validator reports beyond its known false ones."""
    return {p: sorted(r - KNOWN_FALSE) for p, r in reference_rules(paths).items() if r - KNOWN_FALSE}
