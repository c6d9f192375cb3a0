"""What a validation says: the severity of a finding, the finding, and the report of one package.

Severity follows the requirement level (:meth:`Severity.for_level`): a MUST broken is an ERROR
(the package is invalid), a SHOULD a WARNING, a MAY an INFO. Where a requirement of any level is
*used* with an illegal value, the rule reports an ERROR itself: the optional thing is present but
wrong. Severities are a string enum, so reports and JSON print "ERROR", "WARNING", "INFO".
"""

from __future__ import annotations

import enum
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from transforms.common.masking import scrub
from transforms.validation.registry import titles
from transforms.validation.requirements import FGS_SPEC_VERSION


class Severity(enum.StrEnum):
    """How serious a finding is; only an ERROR makes a package invalid."""

    ERROR = "ERROR"
    WARNING = "WARNING"
    INFO = "INFO"

    @classmethod
    def for_level(cls, level: str) -> Severity:
        """The severity of breaking a requirement of ``level`` (MUST, SHOULD, MAY)."""
        return _LEVELS.get(level, cls.ERROR)


_LEVELS = {"MUST": Severity.ERROR, "SHOULD": Severity.WARNING, "MAY": Severity.INFO}
SEVERITIES = tuple(s.value for s in Severity)

#: Findings kept per requirement per package; the rest are counted, so memory stays bounded.
MAX_FINDINGS_PER_REQUIREMENT = 200


@dataclass(frozen=True)
class Finding:
    """One failed check: which requirement, how serious, what is wrong and where."""

    requirement: str
    severity: Severity  # a plain "ERROR" | "WARNING" | "INFO" is accepted and converted
    message: str
    location: str = ""

    def __post_init__(self):
        if type(self.severity) is not Severity:
            object.__setattr__(self, "severity", Severity(self.severity))

    def to_dict(self) -> dict:
        return {"requirement": self.requirement, "severity": self.severity.value,
                "message": self.message, "location": self.location}


@dataclass
class ValidationReport:
    """The outcome of validating one package."""

    path: str
    profile: str
    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    files_checked: int = 0
    bytes_checked: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)  # findings over the per-rule cap
    spec_version: str = FGS_SPEC_VERSION  # the E-ARK version whose rules were applied
    declared_version: str = ""  # what the package declares ("1.x" for a refused first-generation package)
    spec_reason: str = ""  # why that version (what the package declares, or a forced choice)

    @property
    def valid(self) -> bool:
        """True when no finding is an ERROR (warnings and infos do not make a package invalid)."""
        return not any(f.severity is Severity.ERROR for f in self.findings)

    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    def requirements_failed(self, severity: str | None = None) -> list[str]:
        """IDs with at least one finding (of ``severity`` if given), in report order."""
        seen: dict[str, None] = {}
        for f in self.findings:
            if severity is None or f.severity == severity:
                seen.setdefault(f.requirement, None)
        return list(seen)

    def to_dict(self) -> dict:
        return {
            "path": clean(self.path), "valid": self.valid, "profile": self.profile,
            "spec_version": self.spec_version, "declared_version": self.declared_version,
            "spec_reason": clean(self.spec_reason),
            "files_checked": self.files_checked, "bytes_checked": self.bytes_checked,
            "counts": dict(Counter(f.severity.value for f in self.findings)),
            "findings": [f.to_dict() for f in self.findings],
            "suppressed": dict(self.suppressed),
            "requirements_checked": list(self.checked),
        }

    def to_text(self, *, show_info: bool = False) -> str:
        """One header line, then one line per failed requirement (ID, severity, count, first problem)."""
        counts = Counter(f.severity.value for f in self.findings)
        verdict = "VALID" if self.valid else "INVALID"
        lines = [f"{verdict} {clean(self.path)} (profile {self.profile}; {counts['ERROR']} errors, "
                 f"{counts['WARNING']} warnings, {counts['INFO']} notes; {self.files_checked} files, "
                 f"{self.bytes_checked} bytes checked)"]
        if self.spec_reason:
            rules = {"csip": "CSIP", "sip": "CSIP+SIP", "fgs": "CSIP+SIP+FGS", "dip": "CSIP+DIP"}[self.profile]
            lines.append(f"  rules applied: {rules} {self.spec_version} ({clean(self.spec_reason)})")
        groups: dict[tuple[str, str], list[Finding]] = defaultdict(list)
        for f in self.findings:
            groups[(f.severity.value, f.requirement)].append(f)
        order = {s: i for i, s in enumerate(SEVERITIES)}
        for (sev, rid), items in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], id_key(kv[0][1]))):
            if sev == "INFO" and not show_info:
                continue
            first = items[0]
            extra = len(items) - 1 + self.suppressed.get(rid, 0) * (sev == "ERROR")
            more = f" (+{extra} more)" if extra > 0 else ""
            title = titles(self.spec_version).get(rid, "")
            where = f" [{first.location}]" if first.location else ""
            lines.append(f"  {sev:<7} {rid:<9} {title}: {first.message}{where}{more}")
        if counts["INFO"] and not show_info:
            lines.append(f"  ({counts['INFO']} informational notes on optional (MAY) items; see --json)")
        return "\n".join(lines)


def id_key(rid: str) -> tuple:
    """Sort key of a requirement ID: prefix, then number (CSIP2 before CSIP10)."""
    m = re.match(r"([A-Z\-]+?)(\d*)$", rid)
    return (m.group(1), int(m.group(2) or 0)) if m else (rid, 0)


def clean(text: str) -> str:
    """A finding's text as it may be written anywhere: one printable line, personnummer masked.

    Member names, hrefs and attribute values quoted in a finding come from the delivery, so a
    control character in one is escaped and whatever looks like a personnummer is masked.
    """
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return scrub(text)
