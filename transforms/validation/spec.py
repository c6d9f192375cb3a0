"""Which E-ARK version a package declares, and so whose rules it gets.

The version is read from ``mets/@PROFILE`` of the package METS (never from a profile's own title:
the 2.2.0 SIP profile still calls itself 2.1) together with ``metsHdr/@csip:OAISPACKAGETYPE``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from lxml import etree

from transforms.common.safe_archive import PackageReader
from transforms.common.xmltools import NS_CSIP, NS_METS, NS_SIP, NS_XLINK, SAFE_PARSE
from transforms.validation.requirements import FGS_SPEC_VERSION, SPEC_VERSIONS

_log = logging.getLogger(__name__)


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


def declared(pkg: PackageReader) -> tuple[dict[str, str], str | None, bool, list[tuple[str, str]]]:
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
        with pkg.open("METS.xml") as fh:
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
