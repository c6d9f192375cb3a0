"""The E-ARK versions we validate against, their official requirements and vocabularies.

Requirements of the CSIP and SIP METS profiles (IDs, levels, titles, texts) are read from the
official profile files bundled in ``transforms/profiles``; vocabularies from ``transforms/vocabularies``.
Requirements that are not in those files (the CSIP folder structure, our own rules) are defined by
the rule that checks them (:mod:`transforms.validation.registry`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lxml import etree

from transforms.common import xmltools

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
#: The profiles that include the SIP profile's requirements (FGS is a SIP with rules of its own).
SIP_PROFILES = ("sip", "fgs")


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


def check_version(version: str) -> None:
    if version not in SPEC_VERSIONS:
        raise ValueError(f"unknown E-ARK version {version!r}; choose one of {', '.join(SPEC_VERSIONS)}")


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


def official_requirements(kind: str, version: str) -> tuple[Requirement, ...]:
    """The requirements of the official ``kind`` ('CSIP' or 'SIP') profile of ``version``."""
    check_version(version)
    return _profile_requirements(f"E-ARK-{kind}-v{version.replace('.', '-')}.xml", f"{kind} {version} profile")


@functools.lru_cache(maxsize=64)
def vocabulary(name: str, version: str = FGS_SPEC_VERSION) -> frozenset[str]:
    """The terms of one bundled vocabulary file, e.g. ``vocabulary('CSIPVocabularyStatus', '2.2.0')``.

    Terms are compared byte for byte after trimming: the 2.2.0 content categories mix en dashes
    and hyphen-minus, and the 2.2.0 record status file wraps its terms in whitespace."""
    tree = xmltools.parse_file(VOCABULARY_DIR / f"{name}{_version_suffix(version)}.xml")
    return frozenset((t.text or "").strip() for t in tree.iter("{*}Term"))
