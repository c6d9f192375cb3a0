"""Validate an information package against E-ARK CSIP 2.1.0, SIP 2.1.0 and our FGS rules.

``validate_package(path)`` opens a folder, tar or zip package safely (:mod:`transforms.common.safe_archive`),
checks its structure, every METS document (the package METS and each representation METS), every
file reference (size and checksum, streamed) and every XML document it can match to a bundled
schema, and returns a :class:`ValidationReport` whose findings name the requirement they break:
``CSIP60``, ``SIP4``, ``CSIPSTR4`` (structure, CSIP section 4), ``ARK2`` (ours, FGS profile) …

Requirements are read from the official METS profiles in ``transforms/profiles``;
:func:`list_requirements` says for each one whether this module checks it. Severity follows the
requirement level: a MUST broken is an ERROR (the package is invalid), a SHOULD a WARNING, a MAY
an INFO. Where a requirement of any level is *used* with an illegal value (a STATUS outside its
vocabulary, a LASTMODDATE in the future, an ADMID pointing nowhere), that is an ERROR: the optional
thing is present but wrong.

Where the E-ARK reference validator (eark-validator 1.1.3) applies a rule differently from the
specification, this module follows the specification; those places carry a comment with the ID.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import mimetypes
import posixpath
import re
import sys
import tempfile
import urllib.parse
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from lxml import etree

from transforms.common import xmltools
from transforms.common.errors import ContentError
from transforms.common.identifiers import is_valid_organisationsnummer
from transforms.common.masking import safe_name, scrub
from transforms.common.safe_archive import DEFAULT_LIMITS, Limits, PackageReader, UnsafeArchive, open_package
from transforms.common.xmltools import NS_CSIP, NS_METS, NS_SIP, NS_XLINK, SAFE_PARSE, NullTarget

_log = logging.getLogger(__name__)

PROFILE_DIR = Path(str(resources.files("transforms") / "profiles"))
VOCABULARY_DIR = Path(str(resources.files("transforms") / "vocabularies"))

CSIP_PROFILE_URL = "https://earkcsip.dilcis.eu/profile/E-ARK-CSIP.xml"
SIP_PROFILE_URL = "https://earksip.dilcis.eu/profile/E-ARK-SIP.xml"
PROFILES = ("csip", "sip", "fgs", "dip")
#: The E-ARK versions whose official profiles and vocabularies ship in transforms/profiles and
#: transforms/vocabularies; FGS Paketstruktur 2.0 is CSIP/SIP 2.1.0.
SPEC_VERSIONS = ("2.0.4", "2.1.0", "2.2.0")
FGS_SPEC_VERSION = "2.1.0"
SIP_PROFILE_URL_220 = "https://earksip.dilcis.eu/profile/E-ARK-SIP-v2-2-0.xml"
#: What SIP2 demands as mets/@PROFILE: 2.0.4 and 2.1.0 share the unversioned URL.
SIP_PROFILE_URLS = {"2.0.4": SIP_PROFILE_URL, "2.1.0": SIP_PROFILE_URL, "2.2.0": SIP_PROFILE_URL_220}

SEVERITIES = ("ERROR", "WARNING", "INFO")
_LEVEL_SEVERITY = {"MUST": "ERROR", "SHOULD": "WARNING", "MAY": "INFO"}

#: Findings kept per requirement per package; the rest are counted, so memory stays bounded.
MAX_FINDINGS_PER_REQUIREMENT = 200
_CHUNK = 1024 * 1024

_M = f"{{{NS_METS}}}"
_XL = f"{{{NS_XLINK}}}"
_CS = f"{{{NS_CSIP}}}"
_SP = f"{{{NS_SIP}}}"


# --------------------------------------------------------------------------------------------
# Requirements
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Requirement:
    """One requirement: its ID, level, title, text, METS location and whether we check it."""

    id: str
    level: str  # MUST | SHOULD | MAY
    source: str  # "CSIP 2.1.0 profile", "SIP 2.1.0 profile", "CSIP 2.1.0 §4", "Arkivflöde"
    title: str
    description: str
    location: str = ""
    cardinality: str = ""
    checked: bool = False
    note: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# CSIP 2.1.0 section 4 (folder structure). These are not in the METS profile, so their
# wording is summarised here from the specification text.
_STRUCTURE = [
    ("CSIPSTR1", "MUST", "Package root folder",
     "An information package is contained in a single root folder; an archive (tar, zip) must "
     "unpack to a single root folder."),
    ("CSIPSTR2", "SHOULD", "Root folder name",
     "The package root folder should be named with the package ID, the METS @OBJID."),
    ("CSIPSTR3", "MAY", "Compressed package", "The package root folder may be packed in an archive (tar, zip)."),
    ("CSIPSTR4", "MUST", "Package METS", "The package root folder must contain a metadata file named METS.xml."),
    ("CSIPSTR5", "SHOULD", "Metadata folder", "The package root folder should contain a folder named metadata."),
    ("CSIPSTR6", "SHOULD", "Preservation metadata folder",
     "Preservation metadata should be placed in the sub-folder metadata/preservation."),
    ("CSIPSTR7", "SHOULD", "Descriptive metadata folder",
     "Descriptive metadata should be placed in the sub-folder metadata/descriptive."),
    ("CSIPSTR8", "MAY", "Other metadata folders", "Other metadata may be placed in further sub-folders of metadata."),
    ("CSIPSTR9", "SHOULD", "Representations folder",
     "The package root folder should contain a folder named representations."),
    ("CSIPSTR10", "SHOULD", "Representation folders",
     "The representations folder should contain one sub-folder per representation."),
    ("CSIPSTR11", "SHOULD", "Representation data folder",
     "A representation folder should contain a folder named data."),
    ("CSIPSTR12", "SHOULD", "Representation METS", "A representation folder should contain a METS.xml."),
    ("CSIPSTR13", "SHOULD", "Representation metadata folder",
     "A representation folder should contain a folder named metadata."),
    ("CSIPSTR14", "MAY", "Additional folders", "The package and representation folders may have further sub-folders."),
    ("CSIPSTR15", "SHOULD", "Schemas folder",
     "XML schemas used in the package should be placed in a folder named schemas."),
    ("CSIPSTR16", "SHOULD", "Documentation folder",
     "Supplementary documentation should be placed in a folder named documentation."),
]

# Our own rules. METS-XML/METS-XSD apply to every profile; ARK* only to --profile fgs.
_OWN = [
    ("METS-XML", "MUST", "METS is safe, well-formed XML",
     "Every METS document parses without DOCTYPE or entities and within the size limit.", ""),
    ("SPEC-VERSION", "MUST", "A supported E-ARK version",
     "The package declares E-ARK CSIP/SIP 2.0.4, 2.1.0 or 2.2.0 (mets/@PROFILE); 1.x packages are refused.", ""),
    ("METS-XSD", "MUST", "METS is schema-valid",
     "Every METS document is valid against METS 1.12 with the CSIP and SIP extension schemas.", ""),
    ("ARK1", "MUST", "SHA-256 checksums",
     "Every file and mdRef in every METS carries CHECKSUMTYPE=\"SHA-256\" (FGS profile).", "fgs"),
    ("ARK2", "MUST", "No unlisted files",
     "Every file in the package except the METS documents is referenced from a METS file or mdRef "
     "(FGS profile).", "fgs"),
    ("ARK3", "MUST", "Metadata validates",
     "Every XML file under metadata/ (package and representations) is safe, well-formed and valid "
     "against its bundled schema (METS, PREMIS 3, ERMS) (FGS profile).", "fgs"),
    ("ARK4", "MUST", "Organisations identified",
     "The archival creator (ROLE=ARCHIVIST) and the submitting agent are present, and every "
     "organisation agent carries an IDENTIFICATIONCODE note holding a valid Swedish "
     "organisationsnummer (FGS profile).", "fgs"),
    ("ARK5", "MUST", "Schemas included",
     "The package's schemas/ folder holds every bundled XSD that the package's XML uses (FGS profile).", "fgs"),
    ("ARK6", "MUST", "Representation METS",
     "Every representation folder has its own METS.xml (FGS profile).", "fgs"),
    # No official E-ARK DIP METS profile ships with this project (shared/vendor has CSIP and SIP
    # only): a DIP is checked as CSIP plus these two rules of ours.
    ("DIP1", "MUST", "Package type DIP",
     "Every METS document (package and representations) says metsHdr/@csip:OAISPACKAGETYPE=\"DIP\" "
     "(DIP profile).", "dip"),
    ("DIP2", "MUST", "Withholdings declared",
     "documentation/withheld.json exists and is a JSON list (or an object with a list \"withheld\") of what was "
     "withheld or masked and why — empty when nothing was (DIP profile).", "dip"),
]

#: Requirement IDs this module checks (fully or in their machine-checkable part).
CHECKED: frozenset[str] = frozenset(
    [f"CSIP{i}" for i in range(1, 120) if i != 87]
    + [f"CSIPSTR{i}" for i in (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 15, 16)]
    + ["SIP1", "SIP2", "SIP3", "SIP4", "SIP5", "SIP6", "SIP7", "SIP8"]
    + [f"SIP{i}" for i in range(9, 36)]
    + ["SPEC-VERSION", "METS-XML", "METS-XSD", "ARK1", "ARK2", "ARK3", "ARK4", "ARK5", "ARK6", "DIP1", "DIP2"]
)

#: Why some requirements are not (fully) checked; shown by ``--requirements``.
UNCHECKED_NOTES = {
    "CSIPSTR3": "a permission (packages may be archived); nothing to violate",
    "CSIPSTR8": "a permission (other metadata folders); nothing to violate",
    "CSIPSTR14": "a permission (additional folders); nothing to violate",
    "REF_CSIP_1": "reference to the CSIP dmdSec rules, which are checked under their own IDs",
    "REF_CSIP_2": "reference to the CSIP amdSec rules, which are checked under their own IDs",
    "REF_CSIP_3": "reference to the CSIP structMap rules, which are checked under their own IDs",
    "REF_METS_1": "structLink is not used by CSIP",
    "REF_METS_2": "behaviorSec is not used by CSIP",
}

#: Parts of checked requirements that no machine can judge.
PARTIAL_NOTES = {
    "CSIP14": "the name is not verified to be a software tool's name",
    "CSIP15": "the note is not verified to be a version string",
    "CSIP26": "MIMETYPE syntax and top-level type are checked, not that it fits the file's content",
    "CSIP40": "MIMETYPE syntax and top-level type are checked, not that it fits the file's content",
    "CSIP53": "MIMETYPE syntax and top-level type are checked, not that it fits the file's content",
    "CSIP68": "MIMETYPE syntax and top-level type are checked, not that it fits the file's content",
    "CSIP17": "checked as: descriptive metadata files present must be referenced from a dmdSec",
    "CSIP31": "checked as: preservation metadata files present must be described in the amdSec",
    "CSIP113": "checked as: a Schemas file group exists; whether it lists every schema used is ARK5",
}


def _text(el) -> str:
    return re.sub(r"\s+", " ", " ".join(el.itertext())).strip() if el is not None else ""


def _version_suffix(version: str) -> str:
    """File-name mark of a version's copy of an official file ('' for 2.1.0, the FGS version)."""
    return "" if version == FGS_SPEC_VERSION else "-v" + version.replace(".", "-")


@functools.lru_cache(maxsize=8)
def _profile_requirements(filename: str, source: str) -> tuple[Requirement, ...]:
    """Every requirement element of an official METS profile, in document order."""
    tree = xmltools.parse_file(PROFILE_DIR / filename)
    ns = "{http://www.loc.gov/METS_Profile/v2}"
    xhtml = "{http://www.w3.org/1999/xhtml}"
    out: list[Requirement] = []
    seen: set[str] = set()
    for req in tree.iter(f"{ns}requirement"):
        rid = req.get("ID")
        if not rid or rid in seen:
            continue
        seen.add(rid)
        desc = req.find(f"{ns}description")
        title = _text(desc.find(f"{ns}head")) if desc is not None else ""
        paras = [_text(p) for p in desc if etree.QName(p).localname == "p"] if desc is not None else []
        dds = [_text(dd) for dd in desc.iter(f"{xhtml}dd")] if desc is not None else []
        out.append(Requirement(
            id=rid, level=req.get("REQLEVEL") or "MAY", source=source, title=title,
            description=" ".join(paras), location=dds[0] if dds else "",
            cardinality=dds[1] if len(dds) > 1 else "",
        ))
    return tuple(out)


def _requirements(profile: str, version: str = FGS_SPEC_VERSION) -> list[Requirement]:
    if version not in SPEC_VERSIONS:
        raise ValueError(f"unknown E-ARK version {version!r}; choose one of {', '.join(SPEC_VERSIONS)}")
    tag = version.replace(".", "-")
    reqs = list(_profile_requirements(f"E-ARK-CSIP-v{tag}.xml", f"CSIP {version} profile"))
    reqs += [Requirement(i, lvl, f"CSIP {version} §4 (folder structure)", t, d) for i, lvl, t, d in _STRUCTURE]
    if profile in ("sip", "fgs"):
        csip_ids = {r.id for r in reqs}
        reqs += [r for r in _profile_requirements(f"E-ARK-SIP-v{tag}.xml", f"SIP {version} profile")
                 if r.id not in csip_ids]
    for rid, lvl, title, desc, only in _OWN:
        if not only or only == profile:
            reqs.append(Requirement(rid, lvl, "Arkivflöde", title, desc))
    return reqs


def list_requirements(profile: str = "csip", version: str = FGS_SPEC_VERSION) -> list[Requirement]:
    """Every requirement of ``profile`` ('csip', 'sip' = CSIP+SIP, 'fgs' = SIP+ARK) in E-ARK ``version``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    out = []
    for r in _requirements(profile, version):
        checked = r.id in CHECKED
        note = PARTIAL_NOTES.get(r.id, "") if checked else UNCHECKED_NOTES.get(r.id, "not checked")
        out.append(Requirement(**{**r.__dict__, "checked": checked, "note": note}))
    return out


@functools.lru_cache(maxsize=4)
def _levels(version: str = FGS_SPEC_VERSION) -> dict[str, str]:
    return {r.id: r.level for r in _requirements("fgs", version)}


@functools.lru_cache(maxsize=4)
def _titles(version: str = FGS_SPEC_VERSION) -> dict[str, str]:
    titles = {r.id: r.title for r in _requirements("fgs", version)}
    # CSIP86 left the profile in 2.1.0; its title is still needed for a 2.0.4 package's report.
    return {**{r.id: r.title for r in _requirements("fgs", "2.0.4")}, **titles}


@functools.lru_cache(maxsize=64)
def vocabulary(name: str, version: str = FGS_SPEC_VERSION) -> frozenset[str]:
    """The terms of one bundled vocabulary file, e.g. ``vocabulary('CSIPVocabularyStatus', '2.2.0')``.

    Terms are compared byte for byte after trimming: the 2.2.0 content categories mix en dashes
    and hyphen-minus, and the 2.2.0 record status file wraps its terms in whitespace."""
    tree = xmltools.parse_file(VOCABULARY_DIR / f"{name}{_version_suffix(version)}.xml")
    return frozenset((t.text or "").strip() for t in tree.iter("{*}Term"))


@functools.lru_cache(maxsize=4)
def _mets_schema(version: str) -> etree.XMLSchema:
    """METS 1.12 with the CSIP and SIP extension schemas of ``version``.

    Only 2.2.0 ships a different CSIP extension schema (more CONTENTINFORMATIONTYPE values); the
    2.1.0 one accepts every 2.0.4 value, and the vocabulary check tells the versions apart."""
    if version != "2.2.0":
        return xmltools.schema_for(NS_METS)
    wrapper = ['<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" '
               'targetNamespace="urn:arkivflode:wrapper" elementFormDefault="qualified">']
    for ns, name in ((NS_METS, "mets.xsd"), (NS_CSIP, "DILCISExtensionMETS-v2-2-0.xsd"),
                     (NS_SIP, "DILCISExtensionSIPMETS.xsd")):
        wrapper.append(f'<xs:import namespace="{ns}" schemaLocation="{(xmltools.SCHEMA_DIR / name).as_uri()}"/>')
    wrapper.append("</xs:schema>")
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    parser.resolvers.add(xmltools._LocalResolver())
    doc = etree.fromstring("".join(wrapper).encode(), parser,
                           base_url=(xmltools.SCHEMA_DIR / "wrapper-v2-2-0.xsd").as_uri())
    return etree.XMLSchema(doc)


@dataclass(frozen=True)
class SpecChoice:
    """Which E-ARK version's rules a package gets, whether the SIP rules apply, and why."""

    version: str  # one of SPEC_VERSIONS, or "1.x" for a package of the withdrawn first generation
    sip: bool
    reason: str


_PROFILE_NAME = re.compile(r"/E-ARK-(C?SIP)(?:-v(\d+)-(\d+)-(\d+))?\.xml$", re.IGNORECASE)


def detect_spec(profile_url: str | None, package_type: str | None = None, *,
                mets_type: str | None = None, has_csip_attributes: bool = True) -> SpecChoice:
    """The E-ARK version a package METS declares, from ``mets/@PROFILE`` and its package type.

    The unversioned SIP URL is shared by 2.0.4 and 2.1.0 (identical SIP rules) and the unversioned
    CSIP URL by all three; both are validated as 2.1.0. A CSIP profile URL with
    ``csip:OAISPACKAGETYPE="SIP"`` is still a SIP. Nothing is read from a profile's own title or
    ID (the 2.2.0 SIP profile still calls itself 2.1)."""
    url = (profile_url or "").strip()
    is_sip_type = (package_type or "").strip() == "SIP"
    low = url.lower()
    m = _PROFILE_NAME.search(url)
    if "eark-project.com" in low or (m and m.group(2) == "1") or re.search(r"e-ark-c?sip-?v?1[.-]", low):
        return SpecChoice("1.x", is_sip_type, f"PROFILE {url!r} is an E-ARK 1.x profile")
    if not url and not has_csip_attributes and (mets_type or "").upper() in ("SIP", "AIP", "DIP", "AIC"):
        return SpecChoice("1.x", (mets_type or "").upper() == "SIP",
                          f"no PROFILE, no csip: attributes and mets/@TYPE={mets_type!r}: the E-ARK 1.x layout")
    if not m:
        what = f"PROFILE {url!r} names no E-ARK profile" if url else "no mets/@PROFILE"
        return SpecChoice(FGS_SPEC_VERSION, is_sip_type, f"{what}; validated as 2.1.0"
                          + ('; OAISPACKAGETYPE="SIP", so the SIP rules apply' if is_sip_type else ""))
    kind = m.group(1).upper()
    sip = kind == "SIP" or is_sip_type
    if m.group(2):
        declared = f"{m.group(2)}.{m.group(3)}.{m.group(4)}"
        if declared in SPEC_VERSIONS:
            version, why = declared, f"PROFILE is the {kind} {declared} profile URL"
        else:
            major_minor = tuple(int(g) for g in m.group(2, 3, 4))
            version = "2.0.4" if major_minor < (2, 1, 0) else "2.1.0" if major_minor < (2, 2, 0) else "2.2.0"
            why = f"PROFILE declares {kind} {declared}, which has no profile of its own; the rules of {version} apply"
    elif kind == "SIP":
        version = FGS_SPEC_VERSION
        why = ("PROFILE is the unversioned SIP URL, which 2.0.4 and 2.1.0 share (their SIP rules are "
               "identical); validated as 2.1.0")
    else:
        version = FGS_SPEC_VERSION
        why = "PROFILE is the unversioned CSIP URL, which every 2.x version uses; validated as 2.1.0"
    if kind == "CSIP" and is_sip_type:
        why += '; metsHdr/@csip:OAISPACKAGETYPE="SIP", so the SIP rules apply too'
    elif kind == "CSIP":
        why += "; CSIP rules only (the package is not declared a SIP)"
    return SpecChoice(version, sip, why)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """One failed check: which requirement, how serious, what is wrong and where."""

    requirement: str
    severity: str  # ERROR | WARNING | INFO
    message: str
    location: str = ""

    def to_dict(self) -> dict:
        return {"requirement": self.requirement, "severity": self.severity,
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
        return not any(f.severity == "ERROR" for f in self.findings)

    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "ERROR"]

    def requirements_failed(self, severity: str | None = None) -> list[str]:
        """IDs with at least one finding (of ``severity`` if given), in report order."""
        seen: dict[str, None] = {}
        for f in self.findings:
            if severity is None or f.severity == severity:
                seen.setdefault(f.requirement, None)
        return list(seen)

    def to_dict(self) -> dict:
        return {
            "path": _clean(self.path), "valid": self.valid, "profile": self.profile,
            "spec_version": self.spec_version, "declared_version": self.declared_version,
            "spec_reason": _clean(self.spec_reason),
            "files_checked": self.files_checked, "bytes_checked": self.bytes_checked,
            "counts": dict(Counter(f.severity for f in self.findings)),
            "findings": [f.to_dict() for f in self.findings],
            "suppressed": dict(self.suppressed),
            "requirements_checked": list(self.checked),
        }

    def to_text(self, *, show_info: bool = False) -> str:
        """One header line, then one line per failed requirement (ID, severity, count, first problem)."""
        counts = Counter(f.severity for f in self.findings)
        verdict = "VALID" if self.valid else "INVALID"
        lines = [f"{verdict} {_clean(self.path)} (profile {self.profile}; {counts['ERROR']} errors, "
                 f"{counts['WARNING']} warnings, {counts['INFO']} notes; {self.files_checked} files, "
                 f"{self.bytes_checked} bytes checked)"]
        if self.spec_reason:
            rules = {"csip": "CSIP", "sip": "CSIP+SIP", "fgs": "CSIP+SIP+FGS", "dip": "CSIP+DIP"}[self.profile]
            lines.append(f"  rules applied: {rules} {self.spec_version} ({_clean(self.spec_reason)})")
        groups: dict[tuple[str, str], list[Finding]] = defaultdict(list)
        for f in self.findings:
            groups[(f.severity, f.requirement)].append(f)
        order = {s: i for i, s in enumerate(SEVERITIES)}
        for (sev, rid), items in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], _id_key(kv[0][1]))):
            if sev == "INFO" and not show_info:
                continue
            first = items[0]
            extra = len(items) - 1 + self.suppressed.get(rid, 0) * (sev == "ERROR")
            more = f" (+{extra} more)" if extra > 0 else ""
            title = _titles(self.spec_version).get(rid, "")
            where = f" [{first.location}]" if first.location else ""
            lines.append(f"  {sev:<7} {rid:<9} {title}: {first.message}{where}{more}")
        if counts["INFO"] and not show_info:
            lines.append(f"  ({counts['INFO']} informational notes on optional (MAY) items; see --json)")
        return "\n".join(lines)


def _id_key(rid: str) -> tuple:
    m = re.match(r"([A-Z\-]+?)(\d*)$", rid)
    return (m.group(1), int(m.group(2) or 0)) if m else (rid, 0)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
_MIME = re.compile(
    r"^(application|audio|font|example|image|message|model|multipart|text|video|chemical|x-[\w.+-]+)"
    r"/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}(\s*;\s*[A-Za-z0-9!#$&^_.+-]+=(\"[^\"]*\"|[^;\s]+))*$",
    re.IGNORECASE,
)
_KNOWN_MIME = frozenset(mimetypes.MimeTypes(filenames=()).types_map_inv[True]) | frozenset(
    mimetypes.MimeTypes(filenames=()).types_map_inv[False])
_DATETIME = re.compile(r"^-?\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")
_HASHES = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


def _known_mime(mime: str) -> bool:
    """True for media types in Python's built-in table, vendor/personal/x- trees and +suffix types."""
    base = mime.split(";", 1)[0].strip().lower()
    sub = base.split("/", 1)[1] if "/" in base else ""
    if base in _KNOWN_MIME or sub.startswith(("vnd.", "prs.", "x-", "x.")) or "+" in sub:
        return True
    return base.split("/", 1)[0] in ("multipart", "message", "example") or base in _EXTRA_MIME


#: Registered types used in archives that Python's table lacks.
_EXTRA_MIME = frozenset({"application/octet-stream", "application/siard", "image/jp2", "image/tiff",
                         "application/warc", "text/markdown", "application/pdf", "audio/flac",
                         "video/mp4", "application/gml+xml", "text/tab-separated-values"})


def _parse_datetime(value: str) -> dt.datetime | None:
    v = value.strip()
    if not _DATETIME.match(v):
        return None
    try:
        parsed = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _loc(doc: str, el) -> str:
    if el is None:
        return doc
    name = etree.QName(el).localname if isinstance(el.tag, str) else "?"
    ident = el.get("ID")
    return f"{doc}:{el.sourceline} <{name}{' ID=' + ident if ident else ''}>"


def _resolve_href(href: str, base: str) -> tuple[str | None, str]:
    """Resolve an xlink:href against a METS document's folder; (path, "") or (None, reason)."""
    if "\\" in href:
        return None, "uses backslashes; a URL path separates folders with '/'"
    parsed = urllib.parse.urlsplit(href)
    if (parsed.scheme and parsed.scheme.lower() != "file") or parsed.netloc:
        return None, "is not a relative path inside the package"
    path = urllib.parse.unquote(parsed.path)
    if parsed.scheme and path.startswith("/"):  # file:relative/path is tolerated, file:/abs is not
        return None, "is an absolute file: URL; use a path relative to the METS document"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return None, "is an absolute path; use a path relative to the METS document"
    if not path:
        return None, "is empty"
    joined = posixpath.normpath(posixpath.join(base, path)) if base else posixpath.normpath(path)
    if joined == ".." or joined.startswith("../") or joined == ".":
        return None, "points outside the package"
    return joined, ""


class _Doc:
    """A METS document and where it sits in the package.

    The document is streamed (:meth:`_Validator._load`): each ``file`` of its file section is
    checked as soon as the parser has read it and then dropped, so ``root`` holds the rest of the
    tree only. What the later checks need from the dropped elements is kept here in compact form:
    their IDs, the findings per file group (to report in document order) and format counts.
    """

    def __init__(self, rel: str, *, rep: str | None):
        self.rel = rel
        self.root = None
        self.rep = rep  # representation folder name, None for the package METS
        self.base = posixpath.dirname(rel)
        self.ids: dict[str, etree._Element] = {}
        self.removed_ids: set[str] = set()  # IDs of the file elements checked while streaming
        self.groups: dict = {}  # fileGrp element -> _GroupLog
        self.schemas: list[str] = []  # bundled schema files the document uses
        self.file_count = 0  # every mets:file element, for SIP32-35
        self.format_missing: Counter[str] = Counter()
        self.format_empty: Counter[str] = Counter()

    def attach(self, root) -> None:
        self.root = root
        for el in root.iter():
            if isinstance(el.tag, str) and el.get("ID"):
                self.ids.setdefault(el.get("ID"), el)

    def has_id(self, ident: str) -> bool:
        return ident in self.ids or ident in self.removed_ids

    def release(self, *, keep_root: bool) -> None:
        """Drop what only the per-document checks needed (the package METS keeps its tree for ARK4)."""
        self.ids, self.removed_ids, self.groups = {}, set(), {}
        if not keep_root:
            self.root = None


class _GroupLog:
    """What streaming found for the ``file`` children of one fileGrp, in document order.

    ``seq`` holds per file either the element (kept in the tree, checked later), a list of its
    buffered findings, or an int counting consecutive files that had none. ``counts``/``over``
    cap the buffered findings per requirement as :meth:`_Validator.fail` caps the report.
    """

    __slots__ = ("seq", "counts", "over")

    def __init__(self):
        self.seq: list = []
        self.counts: Counter[str] = Counter()
        self.over: Counter[str] = Counter()

    def add_clean(self) -> None:
        if self.seq and isinstance(self.seq[-1], int):
            self.seq[-1] += 1
        else:
            self.seq.append(1)


# --------------------------------------------------------------------------------------------
# Streaming XML: safe, validating, in bounded memory
# --------------------------------------------------------------------------------------------
_FORMAT_ATTRS = (("SIP32", ("FILEFORMATNAME",)), ("SIP33", ("FILEFORMATVERSION",)),
                 ("SIP34", ("FILEFORMATREGISTRY", "FORMATREGISTRY")),
                 ("SIP35", ("FILEFORMATKEY", "FORMATREGISTRYKEY")))


class _Declarations:
    """A parser target that notes only the DOCTYPE and the namespaces declared (a few calls)."""

    def __init__(self):
        self.has_doctype = False
        self.namespaces: set[str] = set()

    def doctype(self, name, pubid, system):
        self.has_doctype = True

    def start_ns(self, prefix, uri):
        self.namespaces.add(uri)

    def close(self):
        return None


def _seen_id(seen: set[int], value: str) -> bool:
    """Remember an xs:ID value (by hash: a collision only costs a second look); True if seen before."""
    h = hash(value.strip())
    if h in seen:
        return True
    seen.add(h)
    return False


@functools.lru_cache(maxsize=1)
def _xsd_id_attributes() -> tuple[dict[str, frozenset[str]], frozenset[str]]:
    """Attributes the bundled schemas type xs:ID: unqualified ones by the namespace of their
    element, and qualified ones (such as xml:id) that may sit on any element."""
    xs = "http://www.w3.org/2001/XMLSchema"
    local: dict[str, set[str]] = defaultdict(set)
    qualified: set[str] = set()
    for path in sorted(xmltools.SCHEMA_DIR.glob("*.xsd")):
        top = etree.parse(str(path), xmltools.safe_parser()).getroot()
        tns = top.get("targetNamespace") or ""
        form = top.get("attributeFormDefault", "unqualified")
        for attr in top.iter(f"{{{xs}}}attribute"):
            name, typ = attr.get("name"), attr.get("type") or ""
            prefix, _, base = typ.rpartition(":")
            if not name or base != "ID" or attr.nsmap.get(prefix or None) != xs:
                continue
            if attr.getparent() is top or attr.get("form", form) == "qualified":
                qualified.add(f"{{{tns}}}{name}")
            else:
                local[tns].add(name)
    return {ns: frozenset(names) for ns, names in local.items()}, frozenset(qualified)


def _xpath_literal(text: str) -> str:
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ", \"'\", ".join(f"'{part}'" for part in text.split("'")) + ")"


class _Scan:
    """Namespaces used and xs:ID values met in subtrees about to be dropped, found by XPath (in C).

    Only what can matter is searched: namespaces the document declares (``declared``, from the
    parser's start-ns events) that have a bundled schema and were not seen used yet, and ID
    attributes once their name has appeared in the bytes read (``id_names``). ``scope`` picks
    the subtrees: "older" (every child element but the last, with its descendants), "children"
    (every child element) or "self" (the node's tree).
    """

    _SCOPES = {"older": "child::*[position() < $n]/descendant-or-self::*",  # not last(): quadratic
               "children": "child::*/descendant-or-self::*", "self": "descendant-or-self::*"}

    def __init__(self):
        self.used: set[str] = set()  # element and attribute namespaces (xmltools.schemas_used)
        self.declared: set[str] = set()
        self.id_names: set[str] = set()  # ID attribute names seen in the bytes read so far
        self.duplicate_id = False
        self._ids: set[int] = set()
        self._paths: dict[tuple, etree.XPath] = {}

    def _path(self, key: tuple, build) -> etree.XPath:
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = build()
        return path

    def scan(self, node, scope: str) -> None:
        where = self._SCOPES[scope]
        n = int(node.xpath("count(*)")) if scope == "older" else 0
        todo = sorted((self.declared & xmltools.SCHEMA_FILES.keys()) - self.used)
        if todo:
            prefixes = {f"c{i}": ns for i, ns in enumerate(todo)}
            test = " or ".join(f"namespace-uri()={_xpath_literal(ns)} or @{p}:*" for p, ns in prefixes.items())
            path = self._path(("ns", scope, *todo), lambda: etree.XPath(f"{where}[{test}]", namespaces=prefixes))
            for el in path(node, n=n):
                for name in (el.tag, *el.attrib):
                    if name[:1] == "{":
                        self.used.add(name[1:name.index("}")])
        if not self.id_names:
            return
        id_attrs, _ = _xsd_id_attributes()
        for ns in sorted(self.declared & id_attrs.keys()):
            for name in sorted(id_attrs[ns] & self.id_names):
                path = self._path(("id", scope, name), lambda name=name: etree.XPath(f"{where}[@{name}]"))
                for el in path(node, n=n):
                    if el.tag[:1] == "{" and el.tag[1:el.tag.index("}")] == ns:
                        self.duplicate_id |= _seen_id(self._ids, el.get(name))

    def trim(self, root) -> None:
        """Scan and drop every finished subtree; what stays is the path of still open elements."""
        node = root
        while len(node):
            last = node[-1]
            is_element = isinstance(last.tag, str)
            if len(node) > 1:
                self.scan(node, "older" if is_element else "children")
                del node[:-1]
            if not is_element:
                break
            node = last


class _LimitedReader:
    """A member's stream that refuses to deliver more than ``limit`` bytes (as read_bytes does)."""

    def __init__(self, fh, source, rel: str, limit: int):
        self.fh, self.source, self.rel, self.limit = fh, source, rel, limit
        self.total = 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(_CHUNK if n is None or n < 0 else min(n, _CHUNK))
        self.total += len(data)
        if self.total > self.limit:
            raise UnsafeArchive(self.source, self.rel, "member is larger than its header says")
        return data


class _CallbackError(Exception):
    """An exception raised by a check run while a document streams (not by the document itself)."""


@dataclass
class _Streamed:
    root: object
    errors: list[str]  # schema errors, as xmltools.schema_errors words them
    schemas: list[str]  # bundled schema files the document uses (xmltools.schemas_used)


class _MetsStream:
    """Callbacks for streaming one METS: check each file of the (first) fileSec once read, drop it.

    A file is checked here, with exactly the checks :meth:`_Validator._check_file` runs later on
    the tree, only when nothing it depends on can still change: it sits in fileGrp elements of the
    document's first fileSec, holds no fileGrp itself, and every ADMID/DMDID it names is already
    known (amdSec and dmdSec precede the fileSec in a valid METS). Any other file stays in the tree
    and is checked there, so the result never depends on streaming.
    """

    def __init__(self, validator: _Validator, doc: _Doc):
        self.v = validator
        self.doc = doc
        self.root = None
        self.sec = None  # the document's first fileSec, once its start tag is read
        self.amd_ids: set[str] = set()
        self.dmd_ids: set[str] = set()

    def start(self, el) -> None:
        if self.root is None:
            self.root = el
        elif self.sec is None and el.tag == f"{_M}fileSec" and el.getparent() is self.root:
            # Everything before the fileSec is complete: the metadata sections it may refer to.
            self.sec = el
            self.amd_ids = _amd_ids_of(self.root)
            self.dmd_ids = {s.get("ID") for s in self.root.findall(f"{_M}dmdSec") if s.get("ID")}

    def end(self, el) -> None:
        if el.tag != f"{_M}file":
            return
        doc = self.doc
        doc.file_count += 1
        for rid, names in _FORMAT_ATTRS:
            vals = [el.get(f"{_SP}{n}") for n in names if el.get(f"{_SP}{n}") is not None]
            if not vals:
                doc.format_missing[rid] += 1
            elif all(_blank(v) for v in vals):
                doc.format_empty[rid] += 1
        group = el.getparent()
        if group is None or group.tag != f"{_M}fileGrp":
            return
        log = doc.groups.get(group)
        if log is None:
            log = doc.groups[group] = _GroupLog()
        if not self._streamable(el, group):
            log.seq.append(el)
            return
        items: list = []
        self.v._sink = (log, items)
        try:
            self.v._check_file(doc, el, self.amd_ids, self.dmd_ids)
        finally:
            self.v._sink = None
        if items:
            log.seq.append(items)
        else:
            log.add_clean()
        for sub in el.iter():
            if isinstance(sub.tag, str) and sub.get("ID"):
                doc.removed_ids.add(sub.get("ID"))
        group.remove(el)

    def _streamable(self, el, group) -> bool:
        if self.sec is None:
            return False
        p = group
        while p is not None and p.tag == f"{_M}fileGrp":
            p = p.getparent()
        if p is not self.sec or el.find(f".//{_M}fileGrp") is not None:
            return False
        for attr, known in (("ADMID", self.amd_ids), ("DMDID", self.dmd_ids)):
            val = el.get(attr)
            if val is not None and any(i not in known for i in val.split()):
                return False
        return True


def _amd_ids_of(root) -> set[str]:
    out = set()
    for sec in root.findall(f"{_M}amdSec"):
        for md in sec:
            if isinstance(md.tag, str) and md.get("ID"):
                out.add(md.get("ID"))
    return out


def _clean(text: str) -> str:
    """A finding's text as it may be written anywhere: one printable line, personnummer masked.

    Member names, hrefs and attribute values quoted in a finding come from the delivery, so a
    control character in one is escaped and whatever looks like a personnummer is masked.
    """
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return scrub(text)


# --------------------------------------------------------------------------------------------
# The validator
# --------------------------------------------------------------------------------------------
class _Validator:
    def __init__(self, reader: PackageReader, report: ValidationReport, profile: str | None,
                 check_integrity: bool, spec_version: str | None = None):
        self.pkg = reader
        self.report = report
        self.forced = profile
        self.profile = profile or "csip"
        self.forced_spec = spec_version
        self.spec = spec_version or FGS_SPEC_VERSION
        self.levels = _levels(self.spec)
        self.integrity = check_integrity
        self._count: Counter[str] = Counter()
        # Digests already computed, to hash a file referenced twice once: SHA-256 keyed by the
        # path alone and kept as bytes (a few dozen bytes per file of a large package).
        self._hashes: dict[str | tuple[str, str], bytes] = {}
        self.referenced: set[str] = set()  # package paths referenced from any METS
        self.mets_paths: set[str] = set()
        self.dmd_refs: set[str] = set()
        self.amd_refs: set[str] = set()
        self.digiprov_count = 0
        self.digiprov_unwrapped = 0  # digiprovMD without an embedded mdWrap (so describing a file)
        self.amd_unwrapped = 0  # empty amdSecs and amdSec children without an mdWrap
        self.dmd_count = 0
        self.amd_count = 0
        self.docs: list[_Doc] = []
        self._lower_files: dict[str, str] | None = None
        self._sink: tuple[_GroupLog, list] | None = None  # findings of a file checked while streaming
        self._spools: list = []  # temporary copies of the METS being streamed from an archive

    # -- findings ----------------------------------------------------------------------------
    def fail(self, rid: str, message: str, location: str = "", severity: str | None = None) -> None:
        message, location = _clean(message), _clean(location)
        if self._sink is not None:
            log, items = self._sink
            log.counts[rid] += 1
            if log.counts[rid] > MAX_FINDINGS_PER_REQUIREMENT:
                log.over[rid] += 1  # beyond the cap within one group, so beyond it in the report too
            else:
                items.append((rid, message, location, severity))
            return
        sev = severity or _LEVEL_SEVERITY.get(self.levels.get(rid, "MUST"), "ERROR")
        self._count[rid] += 1
        if self._count[rid] > MAX_FINDINGS_PER_REQUIREMENT:
            self.report.suppressed[rid] = self.report.suppressed.get(rid, 0) + 1
            return
        self.report.findings.append(Finding(rid, sev, message, location))

    @property
    def sip(self) -> bool:
        return self.profile in ("sip", "fgs")

    @staticmethod
    def _wrong_ns(el, local: str) -> str | None:
        """The namespace of an attribute ``local`` whose namespace is an official one in the wrong case."""
        for k in el.attrib:
            q = etree.QName(k)
            if (q.localname == local and q.namespace and q.namespace != NS_CSIP
                    and q.namespace.lower() in (NS_CSIP.lower(), NS_SIP.lower())):
                return q.namespace
        return None

    def vocab(self, name: str) -> frozenset[str]:
        return vocabulary(name, self.spec)

    def _declared(self) -> tuple[dict[str, str], str | None, bool, list[tuple[str, str]]]:
        """mets attributes, metsHdr/@OAISPACKAGETYPE, whether any csip: attribute is there, and
        attributes in a namespace that differs from an official one only in case (read up to metsHdr)."""
        attrs: dict[str, str] = {}
        ptype: str | None = None
        csip_seen = False
        near: list[tuple[str, str]] = []
        official = {NS_CSIP.lower(): NS_CSIP, NS_SIP.lower(): NS_SIP, NS_METS.lower(): NS_METS,
                    NS_XLINK.lower(): NS_XLINK}
        parser = etree.XMLPullParser(events=("start",), **SAFE_PARSE)
        try:
            with self.pkg.open("METS.xml") as fh:
                depth_done = False
                while not depth_done:
                    chunk = fh.read(65536)
                    if not chunk:
                        break
                    parser.feed(chunk)
                    for _ev, el in parser.read_events():
                        tag = etree.QName(el)
                        if tag.localname == "mets" and not attrs:
                            attrs = dict(el.attrib)
                        for k in el.attrib:
                            q = etree.QName(k)
                            if q.namespace == NS_CSIP:
                                csip_seen = True
                            elif q.namespace and q.namespace.lower() in official and q.namespace != official[
                                    q.namespace.lower()]:
                                near.append((q.localname, q.namespace))
                        if tag.localname == "metsHdr":
                            for k, v in el.attrib.items():
                                if etree.QName(k).localname == "OAISPACKAGETYPE":
                                    ptype = v
                        if tag.localname not in ("mets", "metsHdr", "agent", "name", "note", "altRecordID"):
                            depth_done = True
                            break
        except Exception as exc:  # noqa: BLE001 - the full parse below reports what is wrong with the METS
            _log.debug("reading the METS declaration stopped on %s", type(exc).__name__)
        return attrs, ptype, csip_seen, near

    def _choose_spec(self) -> None:
        """Pick the E-ARK version (and, unforced, the profile) from what the package METS declares."""
        attrs, ptype, csip_seen, self._near_ns = self._declared()
        choice = detect_spec(attrs.get("PROFILE"), ptype, mets_type=attrs.get("TYPE"),
                             has_csip_attributes=csip_seen)
        if self.forced is None:
            self.profile = "sip" if choice.sip else "csip"
        if self.forced_spec:
            self.spec, reason = self.forced_spec, f"forced with --spec-version; the package says: {choice.reason}"
        elif self.forced == "fgs":
            self.spec, reason = FGS_SPEC_VERSION, "FGS 2.0 is CSIP/SIP 2.1.0 plus the FGS rules"
        elif choice.version == "1.x":
            self.spec = FGS_SPEC_VERSION
            reason = f"{choice.reason}, refused (SPEC-VERSION); its other findings use the 2.1.0 rules"
        else:
            self.spec, reason = choice.version, choice.reason
        if choice.version == "1.x" and not self.forced_spec:
            self.fail("SPEC-VERSION", f"the package is E-ARK 1.x ({choice.reason}); only CSIP/SIP 2.0.4, 2.1.0 "
                      "and 2.2.0 are accepted: export it again with a 2.x version of the tool", "METS.xml")
        if self.forced is None and not choice.sip:
            reason += "; no SIP rules applied"
        self.levels = _levels(self.spec)
        self.report.spec_version = self.spec
        self.report.declared_version = choice.version
        self.report.spec_reason = reason

    # -- entry -------------------------------------------------------------------------------
    def run(self) -> None:
        pkg = self.pkg
        if not pkg.single_root:
            self.fail("CSIPSTR1", "the archive does not unpack to a single package root folder; "
                      "put everything inside one folder named after the package OBJID", pkg.source.name)
        if not pkg.is_file("METS.xml"):
            near = [n for n in pkg.listdir("") if n.lower().endswith(".xml")]
            hint = f" (found {', '.join(near[:3])}; the name is case-sensitive)" if near else ""
            self.fail("CSIPSTR4", f"the package root has no METS.xml{hint}", pkg.root)
            self._check_structure(None)
            return
        self._near_ns: list[tuple[str, str]] = []
        self._choose_spec()
        self.report.profile = self.profile
        root_doc = self._load("METS.xml", rep=None)
        if root_doc is not None:
            self.report.profile = self.profile
            self._check_mets(root_doc)
            root_doc.release(keep_root=True)
        self.report.profile = self.profile
        reps = self._representations()
        for rep in reps:
            rel = f"representations/{rep}/METS.xml"
            if pkg.is_file(rel):
                doc = self._load(rel, rep=rep)
                if doc is not None:
                    self._check_mets(doc)
                    doc.release(keep_root=False)
        self._check_structure(root_doc)
        if root_doc is not None:
            self._check_package_refs(root_doc, reps)
        self._check_metadata_coverage()
        self._check_unlisted()
        if self.profile == "fgs":
            self._check_fgs(reps)
        if self.profile == "dip":
            self._check_dip()

    def _check_dip(self) -> None:
        rel = "documentation/withheld.json"
        if not self.pkg.is_file(rel):
            self.fail("DIP2", "documentation/withheld.json is missing; a DIP declares what was withheld and why "
                      "(an empty list when nothing was)", rel)
            return
        try:
            data = json.loads(self.pkg.read_bytes(rel, xmltools.MAX_XML_BYTES))
        except (ValueError, RecursionError, UnsafeArchive) as exc:
            self.fail("DIP2", f"documentation/withheld.json is not readable JSON ({type(exc).__name__})", rel)
            return
        items = data.get("withheld") if isinstance(data, dict) else data
        if not isinstance(items, list):
            self.fail("DIP2", "documentation/withheld.json must hold a list of withholdings", rel)

    def _load(self, rel: str, *, rep: str | None) -> _Doc | None:
        """Stream one METS document: validate it, check each fileSec file as it is read, keep the rest."""
        self.mets_paths.add(rel)
        doc = _Doc(rel, rep=rep)
        stream = _MetsStream(self, doc)
        # Checks run while streaming must leave no trace when the document is then rejected.
        saved = (self.referenced, self.report.files_checked, self.report.bytes_checked, len(self._hashes))
        self.referenced = set()
        try:
            res = self._stream(rel, self._opener(rel, spool=True), schema=_mets_schema(self.spec),
                               on_start=stream.start, on_end=stream.end, expect=f"{_M}mets")
        except (xmltools.XMLRejected, UnsafeArchive) as exc:
            self._undo(saved)
            self.fail("METS-XML", f"{exc}; write the METS as plain well-formed XML without a DOCTYPE", rel)
            return None
        except _CallbackError as exc:
            self.referenced = saved[0]
            raise exc.__cause__ from None
        finally:
            while self._spools:
                self._spools.pop().close()
        root = res.root
        if root.tag != f"{_M}mets":
            self._undo(saved)
            q = etree.QName(root)
            if q.localname == "mets" and (q.namespace or "").lower() == NS_METS.lower():
                self.fail("METS-XML", f"the root element's namespace {q.namespace!r} differs from the METS "
                          f"namespace {NS_METS!r} only in case; namespace URIs are case-sensitive", rel)
            else:
                self.fail("METS-XML", f"root element is {root.tag!r}, not METS <mets>", rel)
            return None
        self.referenced = saved[0] | self.referenced
        doc.attach(root)
        doc.schemas = res.schemas
        self.docs.append(doc)
        for err in res.errors[:50]:
            self.fail("METS-XSD", f"not valid against METS/CSIP/SIP schema: {err}", rel)
        return doc

    def _undo(self, saved) -> None:
        self.referenced, self.report.files_checked, self.report.bytes_checked, n = saved
        for key in list(self._hashes)[n:]:
            del self._hashes[key]

    def _opener(self, rel: str, *, spool: bool):
        """A function opening ``rel`` for reading, capped at the XML size limit.

        ``spool``: from an archive, copy the member to a temporary file first (on disk above 8 MiB),
        so that files can be hashed while the document streams without seeking the archive back
        and forth (a compressed tar would decompress from its start at every backward seek).
        """
        limit = xmltools.MAX_XML_BYTES
        if self.pkg.sizes.get(rel, 0) > limit:
            raise UnsafeArchive(self.pkg.source, rel, "member is too large to read into memory", f"limit {limit}")
        if not spool or self.pkg.source.is_dir():
            @contextlib.contextmanager
            def direct():
                with self.pkg.open(rel) as fh:
                    yield _LimitedReader(fh, self.pkg.source, rel, limit)
            return direct
        tmp = tempfile.SpooledTemporaryFile(max_size=8 * _CHUNK)  # noqa: SIM115 - closed with the last use
        with self.pkg.open(rel) as fh:
            reader = _LimitedReader(fh, self.pkg.source, rel, limit)
            while chunk := reader.read(_CHUNK):
                tmp.write(chunk)
        self._spools.append(tmp)

        @contextlib.contextmanager
        def spooled():
            tmp.seek(0)
            yield tmp
        return spooled

    def _stream(self, rel: str, opener, *, schema, root_tag: str | None = None, on_start=None, on_end=None,
                expect: str | None = None) -> _Streamed:
        """Parse ``rel`` chunk by chunk, validating against ``schema`` as it goes.

        With ``on_start``/``on_end`` every element is handed to them as it is read and stays in
        the tree unless ``on_end`` removes it (a METS). Without, the tree is trimmed after each
        chunk to the path of still open elements, so memory stays flat whatever the document's
        size; ``root_tag`` (the root's tag, from :meth:`_root_tag`) is then the only element lxml
        reports, so no Python runs per element. Raises XMLRejected for what
        :func:`xmltools.parse_bytes` refuses, in the same words: not well-formed, DOCTYPE. A
        document whose root is not ``expect`` is only checked for that.

        Two parsers read the same chunks. lxml's validating parser does not report every
        well-formedness error (a namespace error or a cut-off document can pass), so a second
        parser that builds nothing judges well-formedness. Streaming validation also has no
        document to check xs:ID values are unique in, so duplicates are looked for here. lxml
        gives no line numbers while streaming: an invalid document's errors are listed from a
        tree, as before — only an invalid document pays that memory.
        """
        wellformed = etree.XMLParser(target=NullTarget(), **SAFE_PARSE)
        trim = on_end is None
        if trim:
            parser = etree.XMLPullParser(events=("start", "end", "start-ns"), tag=root_tag, schema=schema,
                                         **SAFE_PARSE)
        else:
            parser = etree.XMLPullParser(events=("start", "end"), schema=schema, **SAFE_PARSE)
        scan = _Scan()
        id_attrs, _ = _xsd_id_attributes()
        id_names = sorted({name for names in id_attrs.values() for name in names})
        root = None
        drain = doctype = ended = xml_id = False
        tail = b""
        tags: dict[str, str | None] = {}
        ids: set[int] = set()
        broken: etree.XMLSyntaxError | None = None  # not well-formed
        invalid: etree.XMLSyntaxError | None = None  # raised by the validating parser
        with opener() as fh:
            while True:
                chunk = fh.read(_CHUNK)
                try:
                    if chunk:
                        wellformed.feed(chunk)
                    else:
                        wellformed.close()
                except etree.XMLSyntaxError as exc:
                    broken = exc
                    break
                # xml:id is an ID to the parser itself (a duplicate makes the document not
                # well-formed to lxml); no package of ours uses it, so a document that does is
                # judged by the whole-tree parse below. The prefix cannot be rebound, so the
                # bytes tell. ID attribute names are looked for the same way (see _Scan).
                window = tail + chunk
                xml_id |= b"xml:id" in window
                if trim:
                    scan.id_names.update(n for n in id_names if n not in scan.id_names and n.encode() in window)
                tail = chunk[-16:]
                if invalid is not None:
                    if not chunk:
                        break
                    continue
                try:
                    if chunk:
                        parser.feed(chunk)
                    else:
                        parser.close()
                except etree.XMLSyntaxError as exc:
                    invalid = exc
                for ev, el in parser.read_events():
                    if ev == "start-ns":
                        scan.declared.add(el[1])
                        continue
                    if root is None:
                        root = el if ev == "start" else el.getroottree().getroot()
                        doctype = bool(el.getroottree().docinfo.doctype)
                        drain = doctype or (expect is not None and root.tag != expect)
                        if root.tag[:1] == "{":
                            scan.used.add(root.tag[1:root.tag.index("}")])
                    if el is root and ev == "end":
                        ended = True
                    if trim:
                        continue
                    if ev == "start":
                        if not drain:
                            self._callback(on_start, el)
                        continue
                    tag = el.tag
                    ns = tags.get(tag, "")
                    if ns == "":
                        ns = tags[tag] = tag[1:tag.index("}")] if tag[:1] == "{" else None
                        if ns is not None:
                            scan.used.add(ns)
                    for key in el.attrib:
                        if key[:1] == "{":
                            scan.used.add(key[1:key.index("}")])
                    for key in id_attrs.get(ns, ()):
                        value = el.get(key)
                        if value is not None:
                            scan.duplicate_id |= _seen_id(ids, value)
                    if drain:
                        parent = el.getparent()
                        if parent is not None:
                            parent.remove(el)
                    else:
                        self._callback(on_end, el)
                if trim and root is not None:
                    scan.trim(root)
                if not chunk:
                    break
        if trim and root is not None and broken is None and invalid is None:
            scan.scan(root, "self")
        errors = [e for e in wellformed.feed_error_log if e.level >= etree.ErrorLevels.ERROR]
        if broken is not None:
            # Fed in chunks, libxml2 words a few errors differently; read once more (no tree, the
            # parser pulls the stream) for the words a whole-document parse uses.
            with opener() as fh:
                try:
                    etree.parse(fh, etree.XMLParser(target=NullTarget(), **SAFE_PARSE))
                except etree.XMLSyntaxError as exc:
                    broken = exc
            raise xmltools.XMLRejected(f"{rel}: not well-formed XML: {broken}")
        if errors:  # namespace errors: the parser without a tree logs them and goes on
            e = errors[0]
            why = f"{e.message}, line {e.line}, column {e.column} (<string>, line {e.line})"
            raise xmltools.XMLRejected(f"{rel}: not well-formed XML: {why}")
        if root is None:  # pragma: no cover - a well-formed document has a root element
            raise xmltools.XMLRejected(f"{rel}: not well-formed XML: no root element")
        check_schema = schema is not None and not drain
        if xml_id or (check_schema and (invalid is not None or scan.duplicate_id or not ended)):
            # The whole-tree path of before (parse_bytes refuses a DOCTYPE itself).
            tree = xmltools.parse_bytes(self.pkg.read_bytes(rel, xmltools.MAX_XML_BYTES), name=rel)
            schema_errors = xmltools.schema_errors(tree) if check_schema else []
            schemas = xmltools.schemas_used(tree)  # the stream stopped at the first error
            del tree
            return _Streamed(root, schema_errors, schemas)
        if doctype:
            raise xmltools.XMLRejected(f"{rel}: has a DOCTYPE declaration, which packages must not carry")
        schemas = sorted(xmltools.SCHEMA_FILES[ns] for ns in scan.used if ns in xmltools.SCHEMA_FILES)
        schema_errors: list[str] = []
        return _Streamed(root, schema_errors, schemas)

    @staticmethod
    def _callback(fn, el) -> None:
        try:
            fn(el)
        except Exception as exc:  # a check (e.g. hashing a damaged member) failed, not the XML
            raise _CallbackError() from exc

    def _xml_file(self, rel: str) -> _Streamed:
        """Check one XML file that is not a METS against the schema of its root's namespace.

        Mostly one pass that builds no tree at all (:meth:`_check_flat`); a document that uses
        a second bundled namespace or xs:ID attributes is streamed again with :meth:`_stream`,
        which finds out which namespaces are used and whether an ID repeats.
        """
        opener = self._opener(rel, spool=False)
        tag = self._root_tag(opener)
        ns = etree.QName(tag).namespace if tag else None
        schema = xmltools.schema_for(ns) if ns in xmltools.SCHEMA_FILES else None
        res = self._check_flat(rel, opener, schema, ns)
        if res is None:
            res = self._stream(rel, opener, schema=schema, root_tag=tag)
        if schema is None:
            res.errors = [f"no bundled schema for root element namespace {ns!r}"]
        return res

    def _check_flat(self, rel: str, opener, schema, root_ns: str | None) -> _Streamed | None:
        """Validate ``rel`` while parsing it, keeping no tree; None when a closer look is needed.

        Two parsers with targets (so neither builds a tree) read the same chunks: one judges
        well-formedness and notes the DOCTYPE and the declared namespaces, the other validates
        against ``schema`` (lxml logs a target parser's validation errors instead of raising).
        """
        decls = _Declarations()
        wellformed = etree.XMLParser(target=decls, **SAFE_PARSE)
        validating = etree.XMLParser(target=NullTarget(), schema=schema, **SAFE_PARSE) if schema else None
        id_attrs, _ = _xsd_id_attributes()
        id_names = {name.encode() for names in id_attrs.values() for name in names}
        seen_names: set[bytes] = set()
        broken = invalid = xml_id = False
        tail = b""
        with opener() as fh:
            while True:
                chunk = fh.read(_CHUNK)
                window = tail + chunk
                xml_id |= b"xml:id" in window
                seen_names.update(n for n in id_names - seen_names if n in window)
                tail = chunk[-16:]
                try:
                    if chunk:
                        wellformed.feed(chunk)
                    else:
                        wellformed.close()
                except etree.XMLSyntaxError:
                    broken = True
                    break
                if validating is not None and not invalid:
                    try:
                        if chunk:
                            validating.feed(chunk)
                        else:
                            validating.close()
                    except etree.XMLSyntaxError:
                        invalid = True
                if not chunk:
                    break
        if broken or any(e.level >= etree.ErrorLevels.ERROR for e in wellformed.feed_error_log):
            return None  # _stream words it exactly as a whole-document parse does
        if validating is not None:
            invalid = invalid or any(e.level >= etree.ErrorLevels.ERROR for e in validating.feed_error_log)
        other = (decls.namespaces & xmltools.SCHEMA_FILES.keys()) - {root_ns}
        ids = any(id_attrs[ns] & {n.decode() for n in seen_names} for ns in decls.namespaces & id_attrs.keys())
        if xml_id or invalid or other or ids:
            return None
        if decls.has_doctype:
            raise xmltools.XMLRejected(f"{rel}: has a DOCTYPE declaration, which packages must not carry")
        return _Streamed(None, [], [xmltools.SCHEMA_FILES[root_ns]] if root_ns in xmltools.SCHEMA_FILES else [])

    @staticmethod
    def _root_tag(opener) -> str | None:
        """The root element's tag, reading only as far as its start tag (None if there is none)."""
        sniff = etree.XMLPullParser(events=("start",), **SAFE_PARSE)
        with opener() as fh:
            try:
                while chunk := fh.read(_CHUNK):
                    sniff.feed(chunk)
                    for _ev, el in sniff.read_events():
                        return el.tag
                sniff.close()
            except etree.XMLSyntaxError:
                return None
        return None

    def _representations(self) -> list[str]:
        return [n for n in self.pkg.listdir("representations") if self.pkg.is_dir(f"representations/{n}")]

    # -- one METS document -------------------------------------------------------------------
    def _check_mets(self, doc: _Doc) -> None:
        self._check_root(doc)
        self._check_header(doc)
        self._check_dmd(doc)
        self._check_amd(doc)
        self._check_filesec(doc)
        self._check_structmap(doc)

    def _check_root(self, doc: _Doc) -> None:
        r, d = doc.root, doc.rel
        objid = r.get("OBJID")
        if _blank(objid):
            self.fail("CSIP1", "mets/@OBJID is missing or empty; set it to the package (or representation) ID", d)
        elif doc.rep is None and objid != self.pkg.root:
            self.fail("CSIP1", f"OBJID {objid!r} differs from the package root folder name {self.pkg.root!r}",
                      d, "WARNING")
            self.fail("CSIPSTR2", f"the package root folder {self.pkg.root!r} is not named after OBJID {objid!r}",
                      d)
        elif doc.rep is not None and objid != doc.rep:
            self.fail("CSIP1", f"representation OBJID {objid!r} differs from its folder name {doc.rep!r}",
                      d, "WARNING")
        # CSIP2/CSIP3. The reference validator accepts only the vocabulary's "Other"; the
        # specification text (and the corpus) use TYPE="OTHER" with csip:OTHERTYPE, so we accept it.
        mtype = r.get("TYPE")
        othertype = r.get(f"{_CS}OTHERTYPE")
        if _blank(mtype):
            self.fail("CSIP2", "mets/@TYPE is missing; give the content category from the vocabulary", d)
        elif mtype == "OTHER":
            if _blank(othertype):
                self.fail("CSIP2", 'TYPE="OTHER" needs csip:OTHERTYPE naming the content category (CSIP3)', d)
        elif mtype not in self.vocab("CSIPVocabularyContentCategory"):
            self.fail("CSIP2", f"TYPE {mtype!r} is not in the content category vocabulary; use a listed value "
                      'or TYPE="OTHER" with csip:OTHERTYPE', d)
        if othertype is not None and mtype != "OTHER":
            self.fail("CSIP3", 'csip:OTHERTYPE is only meaningful with TYPE="OTHER"', d, "WARNING")
        # CSIP4/CSIP5: mandatory in a representation METS, recommended in the package METS.
        cit = r.get(f"{_CS}CONTENTINFORMATIONTYPE")
        other_cit = r.get(f"{_CS}OTHERCONTENTINFORMATIONTYPE")
        if cit is None and (wrong := self._wrong_ns(r, "CONTENTINFORMATIONTYPE")):
            self.fail("CSIP4", f"csip:CONTENTINFORMATIONTYPE is there, but in namespace {wrong!r}, which differs "
                      f"from the official {NS_CSIP!r} only in case; namespace URIs are case-sensitive", d, "ERROR")
        elif cit is None:
            if doc.rep is not None:
                self.fail("CSIP4", "csip:CONTENTINFORMATIONTYPE is mandatory in a representation METS", d, "ERROR")
            else:
                self.fail("CSIP4", "csip:CONTENTINFORMATIONTYPE is recommended (e.g. citserms_v2_1)", d)
        else:
            self._check_cit(cit, other_cit, "CSIP4", "CSIP5", d)
        prof = r.get("PROFILE")
        if _blank(prof):
            self.fail("CSIP6", "mets/@PROFILE is missing; give the URL of the METS profile", d)
        elif not re.match(r"^https?://\S+$", prof.strip()):
            self.fail("CSIP6", f"PROFILE {prof!r} is not a URL of a METS profile", d)
        if self.sip and doc.rep is None:
            want = SIP_PROFILE_URLS[self.spec]
            got = (prof or "").strip()
            # The versioned archive URLs (E-ARK-SIP-v2-1-0.xml …) are published and written by some
            # tools; they name the same version unambiguously, so they are accepted for it.
            archive = f"https://earksip.dilcis.eu/profile/E-ARK-SIP-v{self.spec.replace('.', '-')}.xml"
            if got not in (want, archive):
                hint = (" (that is the CSIP profile URL; a package with OAISPACKAGETYPE=\"SIP\" declares the "
                        "SIP profile)") if "earkcsip" in got.lower() else ""
                self.fail("SIP2", f"PROFILE must be {want} for a SIP {self.spec} (found {prof!r}){hint}", d)
            label = r.get("LABEL")
            if label is None:
                self.fail("SIP1", "no mets/@LABEL (optional short description of the package)", d)
            elif not label.strip():
                self.fail("SIP1", "mets/@LABEL is empty; remove it or describe the package", d, "WARNING")

    def _check_cit(self, cit: str, other: str | None, rid: str, other_rid: str, d: str) -> None:
        vocab = self.vocab("CSIPVocabularyContentInformationType")
        if cit not in vocab:
            self.fail(rid, f"CONTENTINFORMATIONTYPE {cit!r} is not in the vocabulary", d, "ERROR")
        elif cit == "OTHER":
            if _blank(other):
                # CSIP5/CSIP63 are the requirements that demand the companion attribute.
                self.fail(other_rid, f'CONTENTINFORMATIONTYPE="OTHER" ({rid}) needs a non-empty '
                          "csip:OTHERCONTENTINFORMATIONTYPE", d, "ERROR")
            elif other.strip() in vocab:
                self.fail(other_rid, f"OTHERCONTENTINFORMATIONTYPE {other!r} is a vocabulary value; "
                          "use it as CONTENTINFORMATIONTYPE instead", d, "ERROR")
        if other is not None and cit != "OTHER":
            self.fail(other_rid, 'OTHERCONTENTINFORMATIONTYPE is only allowed with CONTENTINFORMATIONTYPE="OTHER"',
                      d, "ERROR")

    def _check_header(self, doc: _Doc) -> None:
        d = doc.rel
        hdrs = doc.root.findall(f"{_M}metsHdr")
        if not hdrs:
            self.fail("CSIP117", "mets/metsHdr is missing", d)
            if self.sip and doc.rep is None:
                self.fail("SIP15", "no metsHdr, so no submitting agent", d)
            return
        hdr = hdrs[0]
        loc = _loc(d, hdr)
        if _blank(hdr.get("CREATEDATE")):
            self.fail("CSIP7", "metsHdr/@CREATEDATE is missing; record when the package was created", loc)
        lastmod = hdr.get("LASTMODDATE")
        if lastmod is None:
            self.fail("CSIP8", "metsHdr/@LASTMODDATE is missing (recommended; mandatory once modified)", loc)
        else:
            when = _parse_datetime(lastmod)
            if when is not None and when > dt.datetime.now(dt.UTC) + dt.timedelta(days=1):
                self.fail("CSIP8", f"LASTMODDATE {lastmod} is in the future", loc, "ERROR")
        ptype = hdr.get(f"{_CS}OAISPACKAGETYPE")
        if _blank(ptype) and (wrong := self._wrong_ns(hdr, "OAISPACKAGETYPE")):
            self.fail("CSIP9", f"csip:OAISPACKAGETYPE is there, but in namespace {wrong!r}, which differs from the "
                      f"official {NS_CSIP!r} only in case; namespace URIs are case-sensitive, so correct it", loc)
        elif _blank(ptype):
            self.fail("CSIP9", "metsHdr/@csip:OAISPACKAGETYPE is missing (SIP, AIP, DIP …)", loc)
        elif ptype not in self.vocab("CSIPVocabularyOAISPackageType"):
            self.fail("CSIP9", f"OAISPACKAGETYPE {ptype!r} is not in the OAIS package type vocabulary", loc)
        if self.profile == "dip" and ptype != "DIP":
            self.fail("DIP1", f'OAISPACKAGETYPE must be "DIP" in a DIP (found {ptype!r})', loc)
        sip_root = self.sip and doc.rep is None
        if sip_root:
            if ptype != "SIP":
                self.fail("SIP4", f'OAISPACKAGETYPE must be "SIP" in a SIP (found {ptype!r})', loc)
            status = hdr.get("RECORDSTATUS")
            if status is None:
                self.fail("SIP3", "no metsHdr/@RECORDSTATUS (optional; NEW is assumed)", loc)
            elif status not in self.vocab("SIPVocabularyRecordStatus"):
                self.fail("SIP3", f"RECORDSTATUS {status!r} is not in the record status vocabulary", loc, "ERROR")
            self._check_altrecordids(hdr, loc)
        self._check_agents(doc, hdr, sip_root)

    def _check_altrecordids(self, hdr, loc: str) -> None:
        rules = {"SUBMISSIONAGREEMENT": ("SIP5", 1), "PREVIOUSSUBMISSIONAGREEMENT": ("SIP6", None),
                 "REFERENCECODE": ("SIP7", 1), "PREVIOUSREFERENCECODE": ("SIP8", None)}
        found: dict[str, list] = defaultdict(list)
        for alt in hdr.findall(f"{_M}altRecordID"):
            found[alt.get("TYPE") or ""].append(alt)
        for typ, (rid, most) in rules.items():
            items = found.get(typ, [])
            if not items:
                self.fail(rid, f'no altRecordID TYPE="{typ}" (optional)', loc)
            for alt in items:
                if _blank(alt.text):
                    self.fail(rid, f'altRecordID TYPE="{typ}" is empty; give the reference', _loc(loc, alt), "ERROR")
            if most is not None and len(items) > most:
                self.fail(rid, f'altRecordID TYPE="{typ}" occurs {len(items)} times; at most {most} allowed',
                          loc, "ERROR")

    def _check_agents(self, doc: _Doc, hdr, sip_root: bool) -> None:
        loc = _loc(doc.rel, hdr)
        agents = hdr.findall(f"{_M}agent")
        if not agents:
            self.fail("CSIP10", "metsHdr has no agent; record the software that created the package", loc)
            if sip_root:
                self.fail("SIP15", "no submitting agent (ROLE=CREATOR, TYPE=ORGANIZATION or INDIVIDUAL)", loc)
            return

        def is_software(a) -> bool:
            return a.get("ROLE") == "CREATOR" and a.get("TYPE") == "OTHER" and a.get("OTHERTYPE") == "SOFTWARE"

        software = [a for a in agents if is_software(a)]
        if software:
            sw = software[0]
        else:
            # No agent has all three properties: report the missing ones on the agent that comes
            # closest (so "all criteria on different agents" is still a CSIP11 failure).
            def score(a):
                return (a.get("ROLE") == "CREATOR") + (a.get("TYPE") == "OTHER") + (a.get("OTHERTYPE") == "SOFTWARE")
            sw = max(agents, key=score)
            where = _loc(doc.rel, sw)
            if sw.get("ROLE") != "CREATOR" or score(sw) < 3:
                self.fail("CSIP11", 'no agent has ROLE="CREATOR" together with TYPE="OTHER" and '
                          'OTHERTYPE="SOFTWARE" (the software that created the package)', where)
            if sw.get("TYPE") != "OTHER":
                self.fail("CSIP12", f'the software agent needs TYPE="OTHER" (found {sw.get("TYPE")!r})', where)
            if sw.get("OTHERTYPE") != "SOFTWARE":
                self.fail("CSIP13", f'the software agent needs OTHERTYPE="SOFTWARE" (found {sw.get("OTHERTYPE")!r})',
                          where)
        # CSIP14-16 apply to the software agent only. The reference validator applies them to
        # every agent with ROLE="CREATOR", including the SIP submitting agent (SIP15-20), which
        # contradicts the SIP profile; we follow the specification (CSIP12, CSIP13, CSIP15, CSIP16).
        where = _loc(doc.rel, sw)
        names = sw.findall(f"{_M}name")
        if len(names) != 1 or _blank(names[0].text):
            self.fail("CSIP14", "the software agent needs exactly one non-empty <name> (the tool's name)", where)
        notes = sw.findall(f"{_M}note")
        if len(notes) != 1:
            self.fail("CSIP15", f"the software agent needs exactly one <note> with its version (has {len(notes)})",
                      where)
        if any(_blank(n.text) for n in notes):
            self.fail("CSIP15", "the software agent's version note is empty", where)
        if notes and not any(n.get(f"{_CS}NOTETYPE") == "SOFTWARE VERSION" for n in notes):
            self.fail("CSIP16", 'the software agent\'s note needs csip:NOTETYPE="SOFTWARE VERSION"', where)
        if sip_root:
            self._check_sip_agents(doc, [a for a in agents if a is not sw or not software])

    def _check_sip_agents(self, doc: _Doc, agents: list) -> None:
        d = doc.rel
        creators = [a for a in agents if a.get("ROLE") == "CREATOR" and a.get("TYPE") in ("ORGANIZATION", "INDIVIDUAL")]
        orgs = [a for a in creators if a.get("TYPE") == "ORGANIZATION"]
        submitters = orgs or creators[:1]
        contacts = [a for a in creators if a not in submitters]
        archivists = [a for a in agents if a.get("ROLE") == "ARCHIVIST"]
        preservers = [a for a in agents if a.get("ROLE") == "PRESERVATION"]
        hdr_loc = d
        if not archivists:
            self.fail("SIP9", "no archival creator agent (ROLE=ARCHIVIST; optional)", hdr_loc)
        for a in archivists:
            self._check_org_agent(a, d, type_rid="SIP11", types=("ORGANIZATION", "INDIVIDUAL"), note_rid="SIP14")
            if self.spec == "2.2.0" and _blank(a.findtext(f"{_M}name")):
                self.fail("SIP12", "the archival creator agent has no <name> (mandatory from SIP 2.2.0)", _loc(d, a))
        if not submitters:
            self.fail("SIP15", 'no submitting agent: add an agent ROLE="CREATOR" TYPE="ORGANIZATION" '
                      "(or INDIVIDUAL) with the submitter's name", hdr_loc)
        for a in submitters:
            # SIP14 is about the archival creator's note; the reference validator also demands an
            # IDENTIFICATIONCODE note on the CSIP software agent, which CSIP16 types as
            # SOFTWARE VERSION. We check SIP14/SIP20 on the archival creator/submitter only.
            self._check_org_agent(a, d, type_rid="SIP17", types=("ORGANIZATION", "INDIVIDUAL"), note_rid="SIP20")
            if not a.findall(f"{_M}name"):
                self.fail("SIP18", "the submitting agent has no <name>", _loc(d, a),
                          "ERROR" if self.spec == "2.2.0" else "WARNING")
        for a in contacts:
            if not a.findall(f"{_M}name") or _blank(a.findtext(f"{_M}name")):
                self.fail("SIP24", "a contact person agent (CREATOR, INDIVIDUAL) needs a <name>", _loc(d, a))
        for a in preservers:
            self._check_org_agent(a, d, type_rid="SIP28", types=("ORGANIZATION",), note_rid="SIP31")
            if self.spec == "2.2.0" and _blank(a.findtext(f"{_M}name")):
                self.fail("SIP29", "the preservation agent has no <name> (mandatory from SIP 2.2.0)", _loc(d, a))
        # SIP32-35 are per-file format attributes; summarised per METS document (counted over
        # every mets:file while the document streamed, see _MetsStream.end).
        for rid, names in _FORMAT_ATTRS:
            missing, empty = doc.format_missing[rid], doc.format_empty[rid]
            if missing:
                self.fail(rid, f"{missing} of {doc.file_count} files have no sip:{names[0]} (optional)", d)
            if empty:
                self.fail(rid, f"{empty} files have an empty sip:{names[0]}; remove it or give the value",
                          d, "WARNING")

    def _check_org_agent(self, a, d: str, *, type_rid: str, types: tuple, note_rid: str) -> None:
        where = _loc(d, a)
        if a.get("TYPE") not in types:
            self.fail(type_rid, f"agent ROLE={a.get('ROLE')!r} needs TYPE in {'/'.join(types)} "
                      f"(found {a.get('TYPE')!r})", where)
        for n in a.findall(f"{_M}note"):
            if n.get(f"{_CS}NOTETYPE") != "IDENTIFICATIONCODE":
                self.fail(note_rid, 'the agent\'s note needs csip:NOTETYPE="IDENTIFICATIONCODE"', where)

    # -- metadata sections -------------------------------------------------------------------
    _DMD_IDS = dict(LOCTYPE="CSIP22", TYPE="CSIP23", HREF="CSIP24", MDTYPE="CSIP25", MIMETYPE="CSIP26",
                    SIZE="CSIP27", CREATED="CSIP28", CHECKSUM="CSIP29", CHECKSUMTYPE="CSIP30")
    _DIGIPROV_IDS = dict(LOCTYPE="CSIP36", TYPE="CSIP37", HREF="CSIP38", MDTYPE="CSIP39", MIMETYPE="CSIP40",
                         SIZE="CSIP41", CREATED="CSIP42", CHECKSUM="CSIP43", CHECKSUMTYPE="CSIP44")
    _RIGHTS_IDS = dict(LOCTYPE="CSIP49", TYPE="CSIP50", HREF="CSIP51", MDTYPE="CSIP52", MIMETYPE="CSIP53",
                       SIZE="CSIP54", CREATED="CSIP55", CHECKSUM="CSIP56", CHECKSUMTYPE="CSIP57")
    _FILE_IDS = dict(LOCTYPE="CSIP77", TYPE="CSIP78", HREF="CSIP79", MIMETYPE="CSIP68",
                     SIZE="CSIP69", CREATED="CSIP70", CHECKSUM="CSIP71", CHECKSUMTYPE="CSIP72")

    def _check_status(self, el, rid: str, d: str) -> None:
        status = el.get("STATUS")
        if status is None:
            self.fail(rid, "no @STATUS (CURRENT or SUPERSEDED recommended)", _loc(d, el))
        elif status not in self.vocab("CSIPVocabularyStatus"):
            self.fail(rid, f"STATUS {status!r} is not CURRENT or SUPERSEDED", _loc(d, el), "ERROR")

    def _check_dmd(self, doc: _Doc) -> None:
        d = doc.rel
        for sec in doc.root.findall(f"{_M}dmdSec"):
            self.dmd_count += 1
            loc = _loc(d, sec)
            if _blank(sec.get("ID")):
                self.fail("CSIP18", "dmdSec has no @ID", loc)
            if _blank(sec.get("CREATED")):
                self.fail("CSIP19", "dmdSec has no @CREATED date", loc)
            self._check_status(sec, "CSIP20", d)
            refs = sec.findall(f"{_M}mdRef")
            if not refs and sec.find(f"{_M}mdWrap") is None:
                self.fail("CSIP21", "dmdSec has no mdRef to a file in metadata/descriptive", loc)
            if len(refs) > 1:
                self.fail("CSIP21", f"dmdSec has {len(refs)} mdRef elements; use one dmdSec per file", loc, "ERROR")
            for ref in refs:
                path = self._check_ref(doc, ref, self._DMD_IDS)
                if path:
                    self.dmd_refs.add(path)

    def _check_amd(self, doc: _Doc) -> None:
        d = doc.rel
        secs = doc.root.findall(f"{_M}amdSec")
        self.amd_count += len(secs)
        if len(secs) > 1:
            self.fail("CSIP31", f"{len(secs)} amdSec elements; put all administrative metadata in one", d, "ERROR")
        for sec in secs:
            children = [md for md in sec if isinstance(md.tag, str)]
            self.amd_unwrapped += sum(md.find(f"{_M}mdWrap") is None for md in children) + (not children)
            digi = sec.findall(f"{_M}digiprovMD")
            self.digiprov_count += len(digi)
            for md in digi:
                if md.find(f"{_M}mdWrap") is None:
                    self.digiprov_unwrapped += 1
                if _blank(md.get("ID")):
                    self.fail("CSIP33", "digiprovMD has no @ID", _loc(d, md))
                self._check_status(md, "CSIP34", d)
                refs = md.findall(f"{_M}mdRef")
                if not refs and md.find(f"{_M}mdWrap") is None:
                    self.fail("CSIP35", "digiprovMD has no mdRef to a file in metadata/preservation", _loc(d, md))
                for ref in refs:
                    path = self._check_ref(doc, ref, self._DIGIPROV_IDS)
                    if path:
                        self.amd_refs.add(path)
            for md in sec.findall(f"{_M}rightsMD"):
                if _blank(md.get("ID")):
                    self.fail("CSIP46", "rightsMD has no @ID", _loc(d, md))
                self._check_status(md, "CSIP47", d)
                refs = md.findall(f"{_M}mdRef")
                if not refs and md.find(f"{_M}mdWrap") is None:
                    self.fail("CSIP48", "rightsMD has no mdRef", _loc(d, md))
                for ref in refs:
                    path = self._check_ref(doc, ref, self._RIGHTS_IDS)
                    if path:
                        self.amd_refs.add(path)
            for md in list(sec.findall(f"{_M}techMD")) + list(sec.findall(f"{_M}sourceMD")):
                for ref in md.findall(f"{_M}mdRef"):
                    href = ref.get(f"{_XL}href")
                    path = _resolve_href(href, doc.base)[0] if href else None
                    if path:
                        self.referenced.add(path)
                        self.amd_refs.add(path)

    # -- file and mdRef attributes, integrity ------------------------------------------------
    def _check_ref(self, doc: _Doc, el, ids: dict[str, str], locat=None) -> str | None:
        """Check one mdRef (or file + its FLocat); returns the resolved package path if any."""
        d = doc.rel
        loc = _loc(d, el)
        locat = el if locat is None else locat
        if locat.get("LOCTYPE") != "URL":
            self.fail(ids["LOCTYPE"], f'LOCTYPE must be "URL" (found {locat.get("LOCTYPE")!r})', loc)
        if locat.get(f"{_XL}type") != "simple":
            self.fail(ids["TYPE"], f'xlink:type must be "simple" (found {locat.get(f"{_XL}type")!r})', loc)
        if "MDTYPE" in ids and _blank(el.get("MDTYPE")):
            self.fail(ids["MDTYPE"], "@MDTYPE is missing", loc)
        mime = el.get("MIMETYPE")
        if _blank(mime):
            self.fail(ids["MIMETYPE"], "@MIMETYPE is missing; give the IANA media type, e.g. application/xml", loc)
        elif not _MIME.match(mime.strip()):
            self.fail(ids["MIMETYPE"], f"MIMETYPE {mime!r} is not an IANA media type (type/subtype)", loc)
        elif not _known_mime(mime):
            self.fail(ids["MIMETYPE"], f"MIMETYPE {mime!r} is not a registered media type we know of; "
                      "check the spelling", loc, "WARNING")
        size = el.get("SIZE")
        if _blank(size):
            self.fail(ids["SIZE"], "@SIZE is missing; give the file size in bytes", loc)
        created = el.get("CREATED")
        if _blank(created):
            self.fail(ids["CREATED"], "@CREATED is missing; give the file's creation date and time", loc)
        checksum = el.get("CHECKSUM")
        ctype = el.get("CHECKSUMTYPE")
        if _blank(checksum):
            self.fail(ids["CHECKSUM"], "@CHECKSUM is missing", loc)
        if _blank(ctype):
            self.fail(ids["CHECKSUMTYPE"], "@CHECKSUMTYPE is missing (SHA-256 recommended)", loc)
        elif self.profile == "fgs" and ctype != "SHA-256":
            self.fail("ARK1", f'CHECKSUMTYPE is {ctype!r}; FGS packages use "SHA-256"', loc)
        href = locat.get(f"{_XL}href")
        if _blank(href):
            self.fail(ids["HREF"], "xlink:href is missing; give the file's path relative to this METS", loc)
            return None
        path, why = _resolve_href(href, doc.base)
        if path is None:
            self.fail(ids["HREF"], f"xlink:href {href!r} {why}", loc)
            return None
        self.referenced.add(path)
        if not self.integrity:
            return path
        if not self.pkg.is_file(path):
            ci = self._file_ci(path)
            if ci is None:
                self.fail(ids["HREF"], f"xlink:href {href!r} does not resolve to a file in the package"
                          f"{self._nearest(path, href)}", loc)
                return path
            # The specification does not say whether hrefs are case-sensitive and the official
            # corpus has valid packages that rely on case-insensitive file systems; we warn,
            # because such a package breaks on Linux, and check the file that matches.
            self.fail(ids["HREF"], f"xlink:href {href!r} matches {ci!r} only when case is ignored; "
                      "fix the case so the package works on every file system", loc, "WARNING")
            self.referenced.add(ci)
            path = ci
        actual = self.pkg.size(path)
        if not _blank(size):
            if not size.strip().isdigit():
                self.fail(ids["SIZE"], f"SIZE {size!r} is not a number of bytes", loc)
            elif int(size) != actual:
                self.fail(ids["SIZE"], f"SIZE {size} but {path} has {actual} bytes", loc)
        if not _blank(checksum) and not _blank(ctype):
            try:
                digest = self._digest(path, ctype.strip())
            except UnsafeArchive as exc:
                # A member that cannot be read whole (bad CRC, corrupt or cut-off data) fails its
                # fixity check; the rest of the package is still checked.
                self.fail(ids["CHECKSUM"], f"{safe_name(path)} cannot be read to verify its checksum: "
                          f"{exc.rule}", loc)
                return path
            if digest is None:
                self.fail(ids["CHECKSUMTYPE"], f"CHECKSUMTYPE {ctype!r} cannot be verified here; use SHA-256",
                          loc, "INFO")
            elif digest.lower() != checksum.strip().lower():
                self.fail(ids["CHECKSUM"], f"{ctype} of {path} is {digest}, not {checksum.strip()}", loc)
        return path

    def _digest(self, path: str, ctype: str) -> str | None:
        upper = ctype.upper()
        key = path if upper == "SHA-256" else (path, upper)
        known = self._hashes.get(key)
        if known is not None:
            return known.hex()
        algo = _HASHES.get(upper)
        if algo is None and upper not in ("CRC32", "ADLER-32"):
            return None
        h = hashlib.new(algo) if algo else None
        running = 0 if upper == "CRC32" else 1
        with self.pkg.open(path) as fh:
            while chunk := fh.read(_CHUNK):
                if h is not None:
                    h.update(chunk)
                elif upper == "CRC32":
                    running = zlib.crc32(chunk, running)
                else:
                    running = zlib.adler32(chunk, running)
                self.report.bytes_checked += len(chunk)
        self.report.files_checked += 1
        raw = h.digest() if h is not None else (running & 0xFFFFFFFF).to_bytes(4, "big")
        self._hashes[key] = raw
        return raw.hex()

    # -- fileSec -----------------------------------------------------------------------------
    def _check_filesec(self, doc: _Doc) -> None:
        d = doc.rel
        secs = doc.root.findall(f"{_M}fileSec")
        if not secs:
            self.fail("CSIP58", "no fileSec; list the package's files in a file section", d)
            if doc.rep is None:
                for rid, what in (("CSIP60", "Documentation"), ("CSIP113", "Schemas"),
                                  ("CSIP114", "Representations")):
                    self.fail(rid, f"no fileGrp with USE={what!r} (there is no fileSec)", d)
            return
        sec = secs[0]
        if _blank(sec.get("ID")):
            self.fail("CSIP59", "fileSec has no @ID", _loc(d, sec))
        groups = list(sec.iter(f"{_M}fileGrp"))
        top = sec.findall(f"{_M}fileGrp")
        uses = [(g.get("USE") or "") for g in top]
        if doc.rep is None:
            # CSIP60/113/114 describe the package METS; a representation METS describes its data.
            if "Documentation" not in uses:
                self.fail("CSIP60", 'no fileGrp USE="Documentation"; list the documentation files in one', d)
            if "Schemas" not in uses:
                self.fail("CSIP113", 'no fileGrp USE="Schemas"; list the XML schemas used in one', d)
            if not any(u.startswith("Representations") for u in uses):
                self.fail("CSIP114", 'no fileGrp whose USE starts with "Representations"', d)
        labels = self.vocab("CSIPVocabularyFileGrpAndStructMapDivisionLabel")
        amd_ids = self._amd_ids(doc)
        dmd_ids = {s.get("ID") for s in doc.root.findall(f"{_M}dmdSec") if s.get("ID")}
        for g in top:
            loc = _loc(d, g)
            use = g.get("USE")
            if _blank(use):
                self.fail("CSIP64", "fileGrp has no @USE (Documentation, Schemas, Representations/<name> …)", loc)
            else:
                head = use.split("/", 1)[0]
                # The USE is the folder path of the group's files, from the package root; in a
                # representation METS a path relative to the representation folder is accepted too.
                folders = [use] + ([posixpath.join(doc.base, use)] if doc.base else [])
                exists = any(self._dir_ci(posixpath.normpath(f)) for f in folders)
                if head not in labels and not (doc.rep is not None and exists):
                    self.fail("CSIP64", f"fileGrp USE {use!r} does not start with a vocabulary label "
                              f"({', '.join(sorted(labels))})", loc)
                elif not exists:
                    self.fail("CSIP64", f"fileGrp USE {use!r} names no folder of the package", loc)
            if _blank(g.get("ID")):
                self.fail("CSIP65", "fileGrp has no @ID", loc)
            cit = g.get(f"{_CS}CONTENTINFORMATIONTYPE")
            other = g.get(f"{_CS}OTHERCONTENTINFORMATIONTYPE")
            if (use or "").startswith("Representations") and doc.rep is None and cit is None:
                self.fail("CSIP62", "a Representations file group must state csip:CONTENTINFORMATIONTYPE",
                          loc, "ERROR")
            if cit is not None:
                self._check_cit(cit, other, "CSIP62", "CSIP63", loc)
            elif other is not None:
                # CSIP63: the reference validator fails every fileGrp *without* the attribute
                # (its test "!= 'OTHER'" is false when absent); only a stray OTHER… is wrong.
                self.fail("CSIP63", 'OTHERCONTENTINFORMATIONTYPE is only allowed with CONTENTINFORMATIONTYPE="OTHER"',
                          loc, "ERROR")
        for g in groups:
            loc = _loc(d, g)
            admid = g.get("ADMID")
            if admid is not None:
                bad = [i for i in admid.split() if i not in amd_ids]
                if bad or not admid.split():
                    self.fail("CSIP61", f"fileGrp ADMID refers to {', '.join(bad) or 'nothing'}, "
                              "not to administrative metadata (amdSec children)", loc, "ERROR")
            # The files checked while streaming left their findings in the group's log, in order.
            log = doc.groups.get(g)
            entries = log.seq if log is not None else g.findall(f"{_M}file")
            if not entries and not g.findall(f"{_M}fileGrp"):
                self.fail("CSIP66", "fileGrp has no file elements", loc)
            for entry in entries:
                if isinstance(entry, list):
                    for item in entry:
                        self.fail(*item)
                elif not isinstance(entry, int):
                    self._check_file(doc, entry, amd_ids, dmd_ids)
            if log is not None:
                for rid, n in log.over.items():
                    self._count[rid] += n
                    self.report.suppressed[rid] = self.report.suppressed.get(rid, 0) + n

    def _check_file(self, doc: _Doc, f, amd_ids: set[str], dmd_ids: set[str]) -> None:
        d = doc.rel
        loc = _loc(d, f)
        if _blank(f.get("ID")):
            self.fail("CSIP67", "file has no @ID", loc)
        for attr, rid, valid in (("ADMID", "CSIP74", amd_ids), ("DMDID", "CSIP75", dmd_ids)):
            val = f.get(attr)
            if val is not None:
                bad = [i for i in val.split() if i not in valid]
                if bad:
                    self.fail(rid, f"file {attr} refers to unknown metadata {', '.join(bad)}", loc, "ERROR")
        if f.get("OWNERID") is not None and _blank(f.get("OWNERID")):
            self.fail("CSIP73", "file OWNERID is empty", loc, "WARNING")
        locats = f.findall(f"{_M}FLocat")
        if len(locats) != 1:
            self.fail("CSIP76", f"file needs exactly one FLocat (has {len(locats)})", loc)
        if not locats:
            # Still check the file's own attributes.
            for attr, rid in (("MIMETYPE", "CSIP68"), ("SIZE", "CSIP69"), ("CREATED", "CSIP70"),
                              ("CHECKSUM", "CSIP71"), ("CHECKSUMTYPE", "CSIP72")):
                if _blank(f.get(attr)):
                    self.fail(rid, f"@{attr} is missing", loc)
            return
        self._check_ref(doc, f, self._FILE_IDS, locat=locats[0])

    def _amd_ids(self, doc: _Doc) -> set[str]:
        return _amd_ids_of(doc.root)

    def _file_ci(self, path: str) -> str | None:
        if self._lower_files is None:
            self._lower_files = {}
            for p in self.pkg.files():
                self._lower_files.setdefault(p.lower(), p)
        return self._lower_files.get(path.lower())

    def _nearest(self, path: str, href: str) -> str:
        """'; nearest match …' with why the href misses it, or '' when nothing is close."""
        import difflib
        files = self.pkg.files()
        if "+" in path and self.pkg.is_file(path.replace("+", " ")):
            return (f"; nearest match {path.replace('+', ' ')!r}: '+' is not an encoded space in a URI path "
                    "(write %20 or the space itself)")
        if "+" in path and (ci := self._file_ci(path.replace("+", " "))):
            return f"; nearest match {ci!r}: '+' is not an encoded space in a URI path, and the case differs"
        folder = posixpath.dirname(path)
        candidates = [f for f in files if posixpath.dirname(f).lower() == folder.lower()] or list(files)
        best = difflib.get_close_matches(path, candidates[:5000], n=1, cutoff=0.75)
        if not best:
            return ""
        near = best[0]
        if "%" in href and urllib.parse.unquote(href) != href:
            why = "the percent-decoded href still differs"
        elif near.lower() == path.lower():
            why = "only the case differs"
        else:
            why = "the names differ"
        return f"; nearest match {near!r} ({why})"

    def _dir_ci(self, folder: str) -> bool:
        """A folder of that path exists, comparing case-insensitively (as the corpus and spec allow)."""
        if self.pkg.is_dir(folder):
            return True
        low = folder.lower()
        return any(x.lower() == low for x in self.pkg.dirs)

    # -- structMap ---------------------------------------------------------------------------
    def _check_structmap(self, doc: _Doc) -> None:
        d = doc.rel
        maps = doc.root.findall(f"{_M}structMap")
        csip = [m for m in maps if m.get("LABEL") == "CSIP"]
        if not maps:
            self.fail("CSIP80", "no structMap", d)
        if len(csip) != 1:
            self.fail("CSIP80", f"{len(csip)} structMap elements with LABEL=\"CSIP\"; exactly one is required", d)
            if not csip:
                self.fail("CSIP82", 'no structMap has LABEL="CSIP"', d)
                return
        sm = csip[0]
        loc = _loc(d, sm)
        if sm.get("TYPE") != "PHYSICAL":
            self.fail("CSIP81", f'the CSIP structMap needs TYPE="PHYSICAL" (found {sm.get("TYPE")!r})', loc)
        if _blank(sm.get("ID")):
            self.fail("CSIP83", "the CSIP structMap has no @ID", loc)
        divs = sm.findall(f"{_M}div")
        if len(divs) != 1:
            self.fail("CSIP84", f"the CSIP structMap needs exactly one top div (has {len(divs)})", loc)
            if not divs:
                return
        main = divs[0]
        if self.spec == "2.0.4" and main.get("LABEL") != doc.root.get("OBJID"):
            # CSIP86 is a 2.0.4 requirement only (removed in 2.1.0).
            self.fail("CSIP86", f"the main div LABEL {main.get('LABEL')!r} must equal mets/@OBJID in CSIP 2.0.4",
                      _loc(d, main))
        if _blank(main.get("ID")):
            self.fail("CSIP85", "the main div has no @ID", _loc(d, main))
        subs = main.findall(f"{_M}div")
        for s in subs:
            if _blank(s.get("ID")):
                self.fail("CSIP106", f"div LABEL={s.get('LABEL')!r} has no @ID", _loc(d, s))
            if s.get("LABEL") is None:
                self.fail("CSIP107", "a division of the CSIP structMap has no @LABEL", _loc(d, s))
        by_label: dict[str, list] = defaultdict(list)
        for s in subs:
            by_label[s.get("LABEL") or ""].append(s)
        groups = {g.get("ID"): g for g in doc.root.iter(f"{_M}fileGrp") if g.get("ID")}
        pointed: set[str] = set()
        for fp in sm.iter(f"{_M}fptr"):
            if fp.get("FILEID"):
                pointed.add(fp.get("FILEID"))
        for mp in sm.iter(f"{_M}mptr"):
            if mp.get(f"{_XL}title"):
                pointed.add(mp.get(f"{_XL}title"))
        # Metadata division
        meta = by_label.get("Metadata", [])
        if len(meta) != 1:
            for rid in ("CSIP88", "CSIP90"):
                self.fail(rid, f'{len(meta)} divs LABEL="Metadata" in the CSIP structMap; exactly one required',
                          loc)
        for m in meta:
            if _blank(m.get("ID")):
                self.fail("CSIP89", 'the "Metadata" div has no @ID', _loc(d, m))
        if meta:
            self._check_md_links(doc, meta[0])
        # Documentation, Schemas, Representations divisions and the groups they point to.
        for label, div_rid, label_rid, id_rid, fptr_rid, ptr_rid, grp_test in (
            ("Documentation", "CSIP93", "CSIP95", "CSIP94", "CSIP96", "CSIP116", lambda u: u == "Documentation"),
            ("Schemas", "CSIP97", "CSIP99", "CSIP98", "CSIP100", "CSIP118", lambda u: u == "Schemas"),
            ("Representations", "CSIP101", "CSIP103", "CSIP102", "CSIP104", "CSIP119",
             lambda u: u.startswith("Representations")),
        ):
            found = by_label.get(label, [])
            if len(found) > 1:
                for rid in (div_rid, label_rid):
                    self.fail(rid, f'{len(found)} divs LABEL="{label}"; at most one allowed', loc, "ERROR")
            has_group = any(g.getparent().tag == f"{_M}fileSec" and grp_test(g.get("USE") or "")
                            for g in groups.values())
            if not found and has_group and label != "Representations" and doc.rep is None:
                # CSIP103: a representation may instead have its own "Representations/<name>"
                # division (as the corpus's valid packages do); the reference validator insists
                # on a division labelled exactly "Representations".
                self.fail(div_rid, f'no div LABEL="{label}" although a {label} file group exists', loc)
            for div in found:
                if _blank(div.get("ID")):
                    self.fail(id_rid, f'the "{label}" div has no @ID', _loc(d, div))
                for fp in div.findall(f"{_M}fptr"):
                    fid = fp.get("FILEID")
                    if _blank(fid):
                        self.fail(ptr_rid, f'an fptr in the "{label}" div has no @FILEID', _loc(d, fp))
                    elif fid in groups and not grp_test(groups[fid].get("USE") or ""):
                        self.fail(ptr_rid, f"fptr FILEID {fid!r} points to fileGrp USE="
                                  f"{groups[fid].get('USE')!r}, not a {label} file group", _loc(d, fp))
                    elif fid not in groups and not doc.has_id(fid):
                        self.fail(ptr_rid, f"fptr FILEID {fid!r} refers to no element of this METS", _loc(d, fp))
            for gid, g in groups.items():
                if (g.getparent().tag == f"{_M}fileSec" and grp_test(g.get("USE") or "") and gid not in pointed
                        and (doc.rep is None or label != "Representations")):
                    self.fail(fptr_rid, f'fileGrp {gid!r} (USE="{g.get("USE")}") is not referenced by an '
                              f'fptr in the CSIP structMap (the "{label}" division)', _loc(d, g))
        if doc.rep is None:
            self._check_rep_divs(doc, subs, groups)

    def _check_md_links(self, doc: _Doc, meta) -> None:
        d = doc.rel
        loc = _loc(d, meta)
        current_amd = set()
        for sec in doc.root.findall(f"{_M}amdSec"):
            for md in sec:
                if isinstance(md.tag, str) and md.get("ID") and md.get("STATUS") != "SUPERSEDED":
                    current_amd.add(md.get("ID"))
        all_amd = self._amd_ids(doc)
        current_dmd = {s.get("ID") for s in doc.root.findall(f"{_M}dmdSec")
                       if s.get("ID") and s.get("STATUS") != "SUPERSEDED"}
        all_dmd = {s.get("ID") for s in doc.root.findall(f"{_M}dmdSec") if s.get("ID")}
        for attr, rid, current, known, what in (("ADMID", "CSIP91", current_amd, all_amd, "administrative"),
                                                ("DMDID", "CSIP92", current_dmd, all_dmd, "descriptive")):
            val = meta.get(attr)
            listed = set((val or "").split())
            unknown = sorted(listed - known)
            if unknown:
                self.fail(rid, f"Metadata div {attr} lists {', '.join(unknown)}, which are not {what} "
                          "metadata sections of this METS", loc, "ERROR")
            if current and val is None:
                self.fail(rid, f"Metadata div has no {attr}; list the current {what} metadata IDs", loc)
            elif current - listed:
                self.fail(rid, f"Metadata div {attr} does not list current {what} metadata "
                          f"{', '.join(sorted(current - listed))}", loc)

    def _check_rep_divs(self, doc: _Doc, subs: list, groups: dict) -> None:
        d = doc.rel
        reps_with_mets = {r for r in self._representations() if self.pkg.is_file(f"representations/{r}/METS.xml")}
        covered: set[str] = set()
        for div in subs:
            label = div.get("LABEL") or ""
            if not label.startswith("Representations/"):
                continue
            loc = _loc(d, div)
            name = label.split("/", 1)[1].split("/", 1)[0]
            if not self._dir_ci(f"representations/{name}"):
                self.fail("CSIP107", f"div LABEL {label!r} names no folder under representations/", loc)
            mptrs = div.findall(f"{_M}mptr")
            if len(mptrs) > 1:
                self.fail("CSIP109", f"representation div has {len(mptrs)} mptr elements; exactly one allowed", loc)
            if not mptrs:
                if name in reps_with_mets:
                    self.fail("CSIP109", f"representation div {label!r} has no mptr to "
                              f"representations/{name}/METS.xml", loc)
                continue
            covered.add(name)
            mp = mptrs[0]
            mloc = _loc(d, mp)
            title = mp.get(f"{_XL}title")
            if _blank(title):
                self.fail("CSIP108", "mptr has no xlink:title naming the representation's fileGrp ID", mloc)
            elif title not in groups:
                self.fail("CSIP108", f"mptr xlink:title {title!r} is not the ID of a fileGrp", mloc)
            if mp.get(f"{_XL}type") != "simple":
                self.fail("CSIP111", f'mptr xlink:type must be "simple" (found {mp.get(f"{_XL}type")!r})', mloc)
            if mp.get("LOCTYPE") != "URL":
                self.fail("CSIP112", f'mptr LOCTYPE must be "URL" (found {mp.get("LOCTYPE")!r})', mloc)
            href = mp.get(f"{_XL}href")
            if _blank(href):
                self.fail("CSIP110", "mptr has no xlink:href to the representation METS", mloc)
                continue
            path, why = _resolve_href(href, doc.base)
            if path is None:
                self.fail("CSIP110", f"mptr xlink:href {href!r} {why}", mloc)
            else:
                self.referenced.add(path)
                if not self.pkg.is_file(path) and self._file_ci(path) is None:
                    self.fail("CSIP110", f"mptr xlink:href {href!r} does not resolve to a file in the package", mloc)
        for name in sorted(reps_with_mets - covered):
            self.fail("CSIP105", f'no div LABEL="Representations/{name}" with an mptr to '
                      f"representations/{name}/METS.xml", d)

    # -- package level -----------------------------------------------------------------------
    def _check_structure(self, root_doc: _Doc | None) -> None:
        pkg = self.pkg
        top = pkg.listdir("")
        if "metadata" not in top or not pkg.is_dir("metadata"):
            self.fail("CSIPSTR5", "the package root has no metadata/ folder", pkg.root)
        if "representations" not in top or not pkg.is_dir("representations"):
            self.fail("CSIPSTR9", "the package root has no representations/ folder", pkg.root)
        else:
            reps = self._representations()
            loose = [n for n in pkg.listdir("representations") if pkg.is_file(f"representations/{n}")]
            if not reps or loose:
                self.fail("CSIPSTR10", "representations/ should hold one folder per representation"
                          + (f" (found files {', '.join(loose[:3])})" if loose else ""), "representations")
            for rep in reps:
                inside = pkg.listdir(f"representations/{rep}")
                where = f"representations/{rep}"
                if "data" not in inside or not pkg.is_dir(f"{where}/data"):
                    self.fail("CSIPSTR11", f"{where} has no data/ folder", where)
                if "METS.xml" not in inside:
                    self.fail("CSIPSTR12", f"{where} has no METS.xml", where)
                if "metadata" not in inside:
                    self.fail("CSIPSTR13", f"{where} has no metadata/ folder", where)
        if "schemas" not in top:
            self.fail("CSIPSTR15", "the package root has no schemas/ folder for the XML schemas used", pkg.root)
        if "documentation" not in top:
            self.fail("CSIPSTR16", "the package root has no documentation/ folder", pkg.root)

    def _check_package_refs(self, root_doc: _Doc, reps: list[str]) -> None:
        """CSIPSTR6/7: metadata referenced from dmdSec/amdSec sits in the recommended folders."""
        for path in sorted(self.dmd_refs):
            if "/metadata/" not in f"/{path}" or "/metadata/descriptive/" not in f"/{path}":
                self.fail("CSIPSTR7", f"descriptive metadata {path} is not under a metadata/descriptive/ folder", path)
        for path in sorted(self.amd_refs):
            if "/metadata/" not in f"/{path}":
                self.fail("CSIPSTR6", f"administrative metadata {path} is not under a metadata/ folder", path)

    def _metadata_files(self, kind: str) -> list[str]:
        """Files in metadata/<kind>/ of the package and of each representation."""
        out = []
        for p in self.pkg.files():
            parts = p.split("/")
            if parts[:2] == ["metadata", kind] or (
                len(parts) > 4 and parts[0] == "representations" and parts[2:4] == ["metadata", kind]
            ):
                out.append(p)
        return out

    def _check_metadata_coverage(self) -> None:
        if not self.docs:
            return
        descriptive = self._metadata_files("descriptive")
        unref = [p for p in descriptive if p not in self.dmd_refs]
        if descriptive and self.dmd_count == 0:
            # CSIP17: "Must be used if descriptive metadata for the package content is available."
            self.fail("CSIP17", f"metadata/descriptive holds {len(descriptive)} files but no METS has a dmdSec",
                      descriptive[0], "ERROR")
        elif unref:
            self.fail("CSIP21", f"descriptive metadata {unref[0]} is not referenced from a dmdSec mdRef"
                      + (f" (+{len(unref) - 1} more)" if len(unref) > 1 else ""), unref[0])
        preservation = self._metadata_files("preservation")
        if preservation and self.amd_count == 0:
            self.fail("CSIP31", f"metadata/preservation holds {len(preservation)} files but no METS has an amdSec",
                      preservation[0], "ERROR")
        elif preservation and self.digiprov_count == 0:
            self.fail("CSIP32", "metadata/preservation holds files but no amdSec has a digiprovMD; "
                      "describe each PREMIS file in a digiprovMD", preservation[0], "ERROR")
        else:
            unref = [p for p in preservation if p not in self.amd_refs]
            if unref:
                self.fail("CSIP35", f"preservation metadata {unref[0]} is not referenced from the amdSec"
                          + (f" (+{len(unref) - 1} more)" if len(unref) > 1 else ""), unref[0])
        if self.amd_count == 0:
            self.fail("CSIP31", "no amdSec (administrative/preservation metadata recommended)", "METS.xml")
        elif self.digiprov_count == 0 and not preservation:
            self.fail("CSIP32", "no digiprovMD (PREMIS preservation metadata recommended)", "METS.xml")
        # An amdSec (CSIP31) or digiprovMD (CSIP32) that neither embeds its metadata (mdWrap) nor
        # has a file in metadata/preservation to describe: recommended-level findings (SHOULD).
        if self.amd_unwrapped and not preservation:
            self.fail("CSIP31", "an amdSec exists but metadata/preservation holds no files", "METS.xml")
        if self.digiprov_unwrapped and not preservation:
            # CSIP32: "one digiprovMD element for each piece of PREMIS metadata".
            self.fail("CSIP32", f"{self.digiprov_unwrapped} digiprovMD element(s) but metadata/preservation "
                      "holds no PREMIS file; put the PREMIS files there or embed them with mdWrap", "METS.xml")
        if self.dmd_count == 0 and not descriptive:
            self.fail("CSIP17", "no dmdSec (descriptive metadata recommended when available)", "METS.xml")

    def _check_unlisted(self) -> None:
        unlisted = [p for p in self.pkg.files() if p not in self.referenced and p not in self.mets_paths]
        if not unlisted:
            return
        rid, sev = ("ARK2", "ERROR") if self.profile == "fgs" else ("CSIP58", "WARNING")
        for p in unlisted[:MAX_FINDINGS_PER_REQUIREMENT]:
            self.fail(rid, f"{p} is in the package but not listed in any METS fileSec or mdRef", p, sev)

    # -- FGS rules ---------------------------------------------------------------------------
    def _check_fgs(self, reps: list[str]) -> None:
        pkg = self.pkg
        used_schemas: set[str] = set()
        for doc in self.docs:
            used_schemas.update(doc.schemas)
        for p in pkg.files():
            parts = p.split("/")
            in_meta = parts[0] == "metadata" or (len(parts) > 3 and parts[0] == "representations"
                                                  and parts[2] == "metadata")
            if not (in_meta and p.lower().endswith(".xml")):
                continue
            # Streamed and validated as read: an ERMS or PREMIS of any size never becomes a tree.
            try:
                res = self._xml_file(p)
            except (xmltools.XMLRejected, UnsafeArchive) as exc:
                self.fail("ARK3", f"{exc}", p)
                continue
            used_schemas.update(res.schemas)
            for err in res.errors[:20]:
                if err.startswith("no bundled schema"):
                    # Descriptive metadata in a standard we do not bundle (EAD, DC, MODS …) is safe
                    # and well-formed by now; there is no schema of ours to judge it by.
                    self.fail("ARK3", f"{p} is safe, well-formed XML but was not schema-validated: {err}", p,
                              "WARNING")
                    continue
                self.fail("ARK3", f"{p} is not valid against its bundled schema: {err}", p)
        present = {posixpath.basename(p) for p in pkg.files() if p.startswith("schemas/")}
        for name in sorted(used_schemas - present):
            self.fail("ARK5", f"schemas/{name} is missing; the package's XML uses it", "schemas")
        for rep in reps:
            if not pkg.is_file(f"representations/{rep}/METS.xml"):
                self.fail("ARK6", f"representations/{rep} has no METS.xml", f"representations/{rep}")
        if not reps:
            self.fail("ARK6", "the package has no representation", pkg.root)
        root = next((doc for doc in self.docs if doc.rep is None), None)
        if root is None:
            return
        hdr = root.root.find(f"{_M}metsHdr")
        agents = hdr.findall(f"{_M}agent") if hdr is not None else []
        if not any(a.get("ROLE") == "ARCHIVIST" for a in agents):
            self.fail("ARK4", "no archival creator agent (ROLE=ARCHIVIST) with the organisation's "
                      "organisationsnummer", root.rel)
        for a in agents:
            if a.get("TYPE") != "ORGANIZATION":
                continue
            codes = [n for n in a.findall(f"{_M}note") if n.get(f"{_CS}NOTETYPE") == "IDENTIFICATIONCODE"]
            name = a.findtext(f"{_M}name") or "?"
            if not codes:
                self.fail("ARK4", f"organisation agent {name!r} (ROLE={a.get('ROLE')}) has no IDENTIFICATIONCODE "
                          "note with its organisationsnummer", _loc(root.rel, a))
            for n in codes:
                if not is_valid_organisationsnummer((n.text or "").strip()):
                    self.fail("ARK4", f"IDENTIFICATIONCODE {n.text!r} of {name!r} is not a valid "
                              "organisationsnummer (NNNNNN-NNNN with check digit)", _loc(root.rel, n))


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------
def validate_package(path: str | Path, profile: str | None = None, *, limits: Limits | None = None,
                     check_integrity: bool = True, compressed: bool = True,
                     spec_version: str | None = None) -> ValidationReport:
    """Validate a package (folder, tar or zip) and return its report; never raises on bad content.

    ``profile`` None picks 'sip' when the package METS has the SIP PROFILE URL, else 'csip';
    'csip', 'sip' or 'fgs' forces that profile. ``spec_version`` (one of :data:`SPEC_VERSIONS`)
    forces the E-ARK version; otherwise the package's declaration decides (see :func:`detect_spec`),
    and ``fgs`` means 2.1.0. ``check_integrity`` False skips file sizes and
    checksums (file presence is still checked). ``compressed`` False refuses compressed tars (see
    :func:`~transforms.common.safe_archive.open_package`). An unsafe archive or unreadable package becomes
    an invalid report with a ``PACKAGE`` finding, whatever its bytes; only a missing ``path``
    raises FileNotFoundError, and an OSError with an errno (the disk's, not the package's) passes.
    """
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if spec_version is not None and spec_version not in SPEC_VERSIONS:
        raise ValueError(f"unknown E-ARK version {spec_version!r}; choose one of {', '.join(SPEC_VERSIONS)}")
    report = ValidationReport(path=str(path), profile=profile or "csip")
    try:
        reader = open_package(path, limits or DEFAULT_LIMITS, compressed=compressed)
    except FileNotFoundError:
        raise
    except UnsafeArchive as exc:
        report.findings.append(Finding("PACKAGE", "ERROR", f"{exc}; the package was not opened",
                                       safe_name(exc.member or "")))
        return report
    except ContentError as exc:
        report.findings.append(Finding("PACKAGE", "ERROR", safe_name(str(exc)), ""))
        return report
    except OSError as exc:
        if exc.errno is not None:
            raise
        report.findings.append(Finding("PACKAGE", "ERROR",
                                       f"the package could not be opened ({type(exc).__name__})", ""))
        return report
    except Exception as exc:  # noqa: BLE001 - no byte sequence may turn into a traceback
        _log.warning("opening a package for validation stopped on %s", type(exc).__name__)
        report.findings.append(Finding("PACKAGE", "ERROR",
                                       f"the package could not be opened ({type(exc).__name__})", ""))
        return report
    with reader:
        v = _Validator(reader, report, profile, check_integrity, spec_version)
        try:
            v.run()
        except UnsafeArchive as exc:
            report.findings.append(Finding("PACKAGE", "ERROR", str(exc), safe_name(exc.member or "")))
        except OSError as exc:
            if exc.errno is not None:  # the disk's fault, not the package's: retry, do not judge
                raise
            report.findings.append(Finding("PACKAGE", "ERROR", "could not read the package: "
                                           f"damaged data ({type(exc).__name__})", ""))
        except Exception as exc:  # noqa: BLE001 - no byte sequence may turn into a traceback
            # Whatever a parser or decompressor raised on these bytes (struct.error, RecursionError,
            # MemoryError from a declared size, ...): the package is not valid. Only the type is
            # shown, since an exception's text may quote the package's content.
            _log.warning("validation of a package stopped on %s", type(exc).__name__)
            report.findings.append(Finding("PACKAGE", "ERROR", "could not read the package: "
                                           f"damaged or unreadable content ({type(exc).__name__})", ""))
        report.profile = v.profile
    ids = {r.id for r in _requirements(report.profile, report.spec_version)}
    report.checked = sorted((CHECKED & ids), key=_id_key)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``arkiv validate``."""
    parser.add_argument("paths", nargs="*", metavar="PATH", help="package folder, .tar(.gz/.bz2/.xz) or .zip")
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="force a profile (default: sip if the METS declares a SIP, else csip)")
    parser.add_argument("--spec-version", choices=SPEC_VERSIONS, default=None,
                        help="apply this E-ARK CSIP/SIP version's rules (default: the version the package "
                             "declares; 2.1.0 for --profile fgs)")
    parser.add_argument("--json", action="store_true", help="print reports as JSON")
    parser.add_argument("--requirements", action="store_true",
                        help="list the profile's requirements and whether each is checked, then exit")


def run(args: argparse.Namespace) -> int:
    """Run ``arkiv validate``: 0 when every package is valid, 1 when any is not, 2 on usage errors."""
    profile = getattr(args, "profile", None)
    if getattr(args, "requirements", False):
        reqs = list_requirements(profile or "csip", getattr(args, "spec_version", None) or FGS_SPEC_VERSION)
        if args.json:
            print(json.dumps([r.to_dict() for r in reqs], ensure_ascii=False, indent=2))
        else:
            for r in reqs:
                mark = "checked  " if r.checked else "unchecked"
                note = f" — {r.note}" if r.note else ""
                print(f"{r.id:<10} {r.level:<6} {mark} {r.title}{note}")
        return 0
    paths = list(getattr(args, "paths", []) or [])
    if not paths:
        print("arkiv validate: give at least one package path", file=sys.stderr)
        return 2
    missing = [p for p in paths if not Path(p).exists() and not Path(p).is_symlink()]
    if missing:
        print(f"arkiv validate: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    reports = []
    for p in paths:
        try:
            reports.append(validate_package(p, profile, spec_version=getattr(args, "spec_version", None)))
        except FileNotFoundError:
            print(f"arkiv validate: no such file or folder: {p}", file=sys.stderr)
            return 2
    if args.json:
        out = [r.to_dict() for r in reports]
        print(json.dumps(out[0] if len(out) == 1 else out, ensure_ascii=False, indent=2))
    else:
        for r in reports:
            print(r.to_text())
    return 0 if all(r.valid for r in reports) else 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m transforms.validation.validator``); the CLI uses add_arguments/run."""
    parser = argparse.ArgumentParser(prog="arkiv validate", description=__doc__.split("\n")[0])
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else 2
    return run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
