"""Prepare a delivered E-ARK 2.x package (folder, tar, zip) into an FGS 2.0 package (``arkiv prepare``).

FGS 2.0 is CSIP/SIP 2.1.0 plus our FGS rules (:mod:`transforms.validation.validator`, profile ``fgs``). A package
written by another tool (commons-ip, RODA-in, meemoo's SIP creator, the E-ARK SIP creator …) often
declares another 2.x version or leaves out things that follow from the package itself. This module
completes and corrects exactly those, and nothing else:

* the version differences: ``mets/@PROFILE``, ``csip:OAISPACKAGETYPE``, the CSIP structMap label,
  vocabulary terms mapped by the official lists (a 2.2.0-only term becomes ``OTHER`` with the term
  in the companion ``OTHER…`` attribute), attributes in a namespace that differs only in case;
* file groups, divisions, dmdSec/digiprovMD references for files that are present but not listed;
* a representation's ``csip:CONTENTINFORMATIONTYPE`` from the package METS, agents of a
  representation METS from the package METS;
* ``SIZE``, ``CREATED``, ``MIMETYPE`` and SHA-256 checksums computed from the delivered bytes (a
  delivered checksum is verified first and replaced by its SHA-256 only when it matches);
* the official schemas the package's XML uses, Arkivflöde as the software that prepared the package,
  and PREMIS with format identification (PUIDs) for every file.

It never invents content. A listed file that is missing, a checksum or size that does not match,
a METS that is not well-formed, a reference outside the package, an E-ARK 1.x package: each stays a
refusal. The delivered package is kept unchanged inside the result
(``documentation/original-delivery/``), and every change is a PREMIS event that names the
requirement it satisfies and the original value.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import json
import logging
import mimetypes
import os
import posixpath
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from transforms.common.hashing import sha256_file
from transforms.common.identifiers import is_valid_organisationsnummer
from transforms.common.masking import safe_name
from transforms.common.safe_archive import UnsafeArchive, container_kind, extract_package
from transforms.common.xmltools import (
    NS_CSIP,
    NS_METS,
    NS_SIP,
    NS_XLINK,
    SCHEMA_DIR,
    XMLRejected,
    parse_bytes,
    schemas_used,
)
from transforms.packaging.agents import SOFTWARE_ID, SOFTWARE_NAME, SOFTWARE_VERSION, by_software, software
from transforms.packaging.mets import FileRef, MetadataRef, metadata_element
from transforms.packaging.premis import Event, FileObject, build_premis
from transforms.validation.context import resolve_href
from transforms.validation.report import clean
from transforms.validation.validator import (
    FGS_SPEC_VERSION,
    SIP_PROFILE_URL,
    SPEC_VERSIONS,
    Finding,
    ValidationReport,
    validate_package,
    vocabulary,
)

_log = logging.getLogger(__name__)

M = f"{{{NS_METS}}}"
XL = f"{{{NS_XLINK}}}"
CS = f"{{{NS_CSIP}}}"
#: the PREMIS agent of what ``arkiv prepare`` does: the software, as the part of it that prepares
PREPARE_AGENT = f"{SOFTWARE_ID}-prepare"
PREMIS_REL = "metadata/preservation/arkivflode-prepare-premis.xml"
ORIGINAL_DIR = "documentation/original-delivery"

#: Findings of the delivered package that no preparation may cure: the package is refused for them.
REFUSED_RULES = frozenset({"PACKAGE", "METS-XML", "SPEC-VERSION", "CSIPSTR1", "CSIPSTR4"})
_HREF_RULE = {"file": "CSIP79", "dmd": "CSIP24", "digiprov": "CSIP38", "rights": "CSIP51", "other": "CSIP38"}
_SIZE_RULE = {"file": "CSIP69", "dmd": "CSIP27", "digiprov": "CSIP41", "rights": "CSIP54", "other": "CSIP41"}
_CREATED_RULE = {"file": "CSIP70", "dmd": "CSIP28", "digiprov": "CSIP42", "rights": "CSIP55", "other": "CSIP42"}
_MIME_RULE = {"file": "CSIP68", "dmd": "CSIP26", "digiprov": "CSIP40", "rights": "CSIP53", "other": "CSIP40"}
_SUM_RULE = {"file": "CSIP71", "dmd": "CSIP29", "digiprov": "CSIP43", "rights": "CSIP56", "other": "CSIP43"}
_ALGORITHMS = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}
#: namespace of a metadata file → (MDTYPE, OTHERMDTYPE) for an mdRef that lacks MDTYPE
_MDTYPES = {
    "http://www.loc.gov/premis/v3": ("PREMIS", None), "info:lc/xmlns/premis-v2": ("PREMIS", None),
    "urn:isbn:1-931666-22-9": ("EAD", None), "http://ead3.archivists.org/schema/": ("EAD", None),
    "http://purl.org/dc/elements/1.1/": ("DC", None), "http://www.loc.gov/mods/v3": ("MODS", None),
    "https://DILCIS.eu/XML/ERMS": ("OTHER", "ERMS"),
}
#: which requirement an attribute of a csip:/sip:/xlink: namespace in the wrong case belongs to
_NS_RULE = {"OAISPACKAGETYPE": "CSIP9", "CONTENTINFORMATIONTYPE": "CSIP4", "OTHERCONTENTINFORMATIONTYPE": "CSIP5",
            "OTHERTYPE": "CSIP3", "NOTETYPE": "CSIP16", "href": "CSIP79", "type": "CSIP78", "title": "CSIP107"}


class Refused(Exception):
    """The package cannot be prepared; ``findings`` say why (requirement, message, location)."""

    def __init__(self, findings: list[Finding]):
        super().__init__("; ".join(f"{f.requirement}: {f.message}" for f in findings))
        self.findings = findings


@dataclass(frozen=True)
class Change:
    """One correction: the requirement it satisfies, where, what, and the value it replaced."""

    requirement: str
    location: str  # package path of the METS (or file) changed, with the element
    what: str
    original: str  # "" when absent in the delivery
    new: str = ""

    def to_dict(self) -> dict:
        return {"requirement": self.requirement, "location": self.location, "what": self.what,
                "original": self.original, "new": self.new}


@dataclass
class PrepareResult:
    source: str
    outcome: str  # "prepared" | "refused"
    objid: str | None = None
    package: str | None = None  # the prepared package (folder or .tar)
    delivered_version: str = ""
    delivered_reason: str = ""
    changes: list[Change] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # refusals (or the final report's errors)
    report: ValidationReport | None = None  # the prepared package's fgs report, or the delivered one
    original_sha256: str = ""
    formats: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome == "prepared"

    def to_dict(self) -> dict:
        return {"source": safe_name(self.source), "outcome": self.outcome, "objid": self.objid,
                "package": self.package and safe_name(self.package),
                "delivered_version": self.delivered_version, "delivered_reason": self.delivered_reason,
                "original_sha256": self.original_sha256,
                "changes": [c.to_dict() for c in self.changes],
                "findings": [f.to_dict() for f in self.findings],
                "report": self.report.to_dict() if self.report else None}

    def to_text(self) -> str:
        lines = []
        if self.ok:
            lines.append(f"PREPARED {safe_name(self.source)} -> {safe_name(self.package or '')} (delivered as E-ARK "
                         f"{self.delivered_version}; {len(self.changes)} changes, each a PREMIS event)")
            for c in self.changes:
                was = f" (was {c.original!r})" if c.original else " (was absent)"
                lines.append(f"  {c.requirement:<9} {c.what}{was} [{c.location}]")
        else:
            lines.append(f"REFUSED {safe_name(self.source)} (delivered as E-ARK {self.delivered_version or '?'}): "
                         "it cannot be prepared from what the package itself holds")
            for f in self.findings:
                where = f" [{f.location}]" if f.location else ""
                lines.append(f"  {f.severity:<7} {f.requirement:<9} {f.message}{where}")
        return "\n".join(lines)


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _digest(path: Path, algorithm: str) -> str | None:
    """The file's checksum in the METS algorithm's notation; None for an algorithm we cannot compute."""
    algo = algorithm.strip().upper()
    # Spellings outside the METS list (SHA256, SHA_256) name the same algorithm.
    algo = {a.replace("-", ""): a for a in _ALGORITHMS}.get(algo.replace("-", "").replace("_", ""), algo)
    if algo in _ALGORITHMS:
        h = hashlib.new(_ALGORITHMS[algo])
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()
    if algo in ("CRC32", "ADLER32", "ADLER-32"):
        value = 0 if algo == "CRC32" else 1
        fn = zlib.crc32 if algo == "CRC32" else zlib.adler32
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                value = fn(chunk, value)
        return f"{value:08x}"
    return None


def normalise_orgnr(text: str | None) -> str | None:
    """A valid organisationsnummer written as NNNNNN-NNNN from the usual spellings (VAT SE…01,
    no hyphen, a 16 prefix); None when the text holds none. Only the spelling changes."""
    raw = re.sub(r"^(VAT|ORGNR|ORG\.?NR)[:\s]*", "", (text or "").strip(), flags=re.IGNORECASE)
    digits = re.sub(r"[\s\-]", "", raw)
    m = re.fullmatch(r"(?:SE)?(?:16)?(\d{10})(?:01)?", digits, flags=re.IGNORECASE)
    if not m:
        return None
    nr = f"{m.group(1)[:6]}-{m.group(1)[6:]}"
    return nr if is_valid_organisationsnummer(nr) else None


class _Preparer:
    def __init__(self, root: Path, spec_version: str, identifier, identification_cache=None):
        self.root = root
        self.spec = spec_version
        self.changes: list[Change] = []
        self.refusals: list[Finding] = []
        self._ids = 0
        self._quiet = False
        self.identifier = identifier
        self.identification_cache = identification_cache
        self.idents: dict[str, object] = {}

    # -- helpers ----------------------------------------------------------------------------
    def change(self, rid: str, where: str, what: str, original: object, new: object = "") -> None:
        if self._quiet:
            return  # our own additions (the kept original) are told by their own event, not as corrections
        # Values come from the delivery (hrefs are file names): escaped and masked like any name.
        self.changes.append(Change(rid, where, what, "" if original is None else safe_name(str(original)),
                                   "" if new is None else safe_name(str(new))))

    def refuse(self, rid: str, message: str, where: str) -> None:
        self.refusals.append(Finding(rid, "ERROR", clean(message), clean(where)))

    def new_id(self, kind: str) -> str:
        self._ids += 1
        return f"arkivflode-{kind}-{self._ids}"

    def ident(self, rel: str):
        if rel not in self.idents and self.identification_cache is not None and self.identifier is not None:
            # asked first once every file is in its final place: all of them at once, by content, so a
            # content identified before (a redelivery, the same attachment elsewhere) is not identified again
            cache, self.identification_cache = self.identification_cache, None
            files = [str(self.root / r) for r in self._all_files()]
            for name, found in self.identifier.identify_stream(files, cache=cache):
                self.idents[Path(name).relative_to(self.root).as_posix()] = found
        if rel not in self.idents:
            self.idents[rel] = self.identifier.identify(self.root / rel) if self.identifier else None
        return self.idents[rel]

    def mime(self, rel: str) -> str:
        ident = self.ident(rel)
        if ident is not None and getattr(ident, "mime", ""):
            return ident.mime.split(",")[0].strip()
        guess = mimetypes.guess_type(rel)[0]
        if rel.lower().endswith((".xml", ".xsd")):
            return "application/xml" if rel.lower().endswith(".xsd") else "text/xml"
        return guess or "application/octet-stream"

    # -- the package -----------------------------------------------------------------------
    def run(self, original_name: str, original_bytes_path: Path) -> None:
        root = self.root
        self._unwrap_bag()
        self._fix_mets_names()
        if self.refusals:
            return
        self.mets_rels = ["METS.xml"] + sorted(p.relative_to(root).as_posix()
                                               for p in root.glob("representations/*/METS.xml"))
        self.trees: dict[str, etree._ElementTree] = {}
        for rel in self.mets_rels:
            try:
                self.trees[rel] = parse_bytes((root / rel).read_bytes(), name=rel)
            except XMLRejected as exc:
                self.refuse("METS-XML", f"{exc}; a METS that is not well-formed cannot be prepared", rel)
        if self.refusals:
            return
        for rel in self.mets_rels:
            self._fix_namespaces(rel)
        # Integrity first, on the delivered bytes: what does not match is damage and stops here.
        for rel in self.mets_rels:
            self._check_references(rel)
        if self.refusals:
            return
        self._split_20_representations()
        self._create_missing_rep_mets()
        self.rep_cit = self._root_cits()
        for rel in self.mets_rels:
            self._fix_header(rel)
            self._fix_vocabularies(rel)
        self._fix_rep_agents()
        self._preserve_original(original_name, original_bytes_path)
        for rel in self.mets_rels:
            self._move_extra_structmaps(rel)
        self._add_schemas()
        for rel in self.mets_rels:
            self._list_unlisted(rel)
            self._fix_file_attributes(rel)
            self._fix_structmap(rel)
        self._write_premis()
        for rel in self.mets_rels[1:]:
            self._write(rel)
        self._refresh_rep_entries()
        self._mark_prepared()
        self._write("METS.xml")

    def _unwrap_bag(self) -> None:
        """A package delivered inside a BagIt bag (meemoo's habit): every manifest line is verified,
        then the bag's payload becomes the package root (the bag itself stays in the kept original)."""
        root = self.root
        if not ((root / "bagit.txt").is_file() and (root / "data").is_dir()):
            return
        payload = root / "data"
        manifests = sorted(root.glob("manifest-*.txt"))
        listed: set[str] = set()
        for manifest in manifests:
            algo = manifest.stem.split("-", 1)[1].upper().replace("SHA", "SHA-") if "sha" in manifest.stem else "MD5"
            for n, line in enumerate(manifest.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if not line.strip():
                    continue
                digest, _sep, name = line.strip().partition(" ")
                name = urllib.parse.unquote(name.strip().lstrip("*"))
                target = (root / name).resolve()
                if not target.is_relative_to(payload.resolve()) or not target.is_file():
                    self.refuse("BAGIT", f"{manifest.name} line {n} names a file that is not in the bag's payload",
                                f"{manifest.name}:{n}")
                    continue
                listed.add(target.relative_to(payload.resolve()).as_posix())
                if (_digest(target, algo) or "").lower() != digest.lower():
                    self.refuse("BAGIT", f"{manifest.name} line {n}: the {algo} checksum does not match the file: "
                                "that is damage, never corrected", f"{manifest.name}:{n}")
        if not manifests:
            self.refuse("BAGIT", "the BagIt bag has no manifest, so its payload cannot be verified", "bagit.txt")
        if self.refusals:
            return
        holding = root / ".arkivflode-bag-payload"
        payload.rename(holding)
        for child in list(root.iterdir()):
            if child != holding:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        for child in list(holding.iterdir()):
            child.rename(root / child.name)
        holding.rmdir()
        self.change("CSIPSTR1", "bagit.txt", "the BagIt wrapper removed after every manifest line was verified; the "
                    "bag's payload is the package", "BagIt bag", f"{len(listed)} payload files")

    def _fix_mets_names(self) -> None:
        """``mets.xml`` written in another case becomes ``METS.xml`` (CSIPSTR4, CSIPSTR12) when it is the only
        candidate, and the package structMap's pointers follow."""
        renamed: dict[str, str] = {}
        for folder in [self.root, *sorted(p for p in self.root.glob("representations/*") if p.is_dir())]:
            if (folder / "METS.xml").is_file():
                continue
            found = [p for p in folder.iterdir() if p.is_file() and p.name.lower() == "mets.xml"]
            if len(found) != 1:
                continue
            old = found[0].relative_to(self.root).as_posix()
            found[0].rename(folder / "METS.xml")
            new = (folder / "METS.xml").relative_to(self.root).as_posix()
            renamed[old] = new
            self.change("CSIPSTR4" if folder == self.root else "CSIPSTR12", new,
                        "METS document renamed to METS.xml (the name is case-sensitive)", old, new)
        if not (self.root / "METS.xml").is_file():
            self.refuse("CSIPSTR4", "the package root has no METS.xml", "")
        self.renamed_mets = renamed

    def _write(self, rel: str) -> None:
        (self.root / rel).write_bytes(etree.tostring(self.trees[rel], xml_declaration=True, encoding="UTF-8",
                                                     pretty_print=True))

    def _base(self, rel: str) -> str:
        return posixpath.dirname(rel)

    # -- namespaces -------------------------------------------------------------------------
    def _fix_namespaces(self, rel: str) -> None:
        official = {NS_CSIP.lower(): NS_CSIP, NS_SIP.lower(): NS_SIP, NS_XLINK.lower(): NS_XLINK}
        for el in self.trees[rel].getroot().iter():
            if not isinstance(el.tag, str):
                continue
            for key in list(el.attrib):
                q = etree.QName(key)
                if q.namespace and q.namespace.lower() in official and q.namespace != official[q.namespace.lower()]:
                    value = el.attrib.pop(key)
                    el.set(f"{{{official[q.namespace.lower()]}}}{q.localname}", value)
                    self.change(_NS_RULE.get(q.localname, "METS-XSD"), f"{rel}:{el.sourceline}",
                                f"attribute {q.localname} moved to the official namespace "
                                f"{official[q.namespace.lower()]} (namespace URIs are case-sensitive)", q.namespace)

    # -- references and integrity -------------------------------------------------------------
    def _refs(self, rel: str):
        """(element carrying the attributes, element carrying xlink:href, kind) for every file and mdRef."""
        mets = self.trees[rel].getroot()
        for f in mets.iter(f"{M}file"):
            loc = f.find(f"{M}FLocat")
            if loc is not None:
                yield f, loc, "file"
        for ref in mets.iter(f"{M}mdRef"):
            parent = etree.QName(ref.getparent()).localname
            kind = {"dmdSec": "dmd", "digiprovMD": "digiprov", "rightsMD": "rights"}.get(parent, "other")
            yield ref, ref, kind

    def _resolve(self, rel: str, href: str) -> tuple[str | None, str]:
        path, why = resolve_href(href, self._base(rel))
        if path is None and "\\" in href:
            # A Windows path separator: the same relative path once written with '/'.
            path, why = resolve_href(href.replace("\\", "/"), self._base(rel))
            if path is not None and (self.root / path).is_file():
                return path, "renamed"
        if path is None:
            return None, why
        if (self.root / path).is_file():
            return path, ""
        # case differs, or '+' written for a space: derivable when exactly one file matches
        candidates = {path.lower(), path.replace("+", " ").lower()}
        found = [p for p in self._all_files() if p.lower() in candidates]
        if len(found) == 1:
            return found[0], "renamed"
        return None, "missing"

    def _all_files(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())

    def _check_references(self, rel: str) -> None:
        base = self._base(rel)
        for mptr in self.trees[rel].getroot().iter(f"{M}mptr"):
            href = mptr.get(f"{XL}href") or ""
            path, why = self._resolve(rel, href) if href else (None, "")
            if path is not None and why == "renamed":
                new = posixpath.relpath(path, base) if base else path
                mptr.set(f"{XL}href", new)
                self.change("CSIP107", f"{rel}:{mptr.sourceline}", "mptr xlink:href corrected to the METS "
                            "document's exact name", href, new)
        for holder, loc, kind in self._refs(rel):
            href = loc.get(f"{XL}href")
            where = f"{rel}:{holder.sourceline}"
            if href is None or not href.strip():
                continue  # no reference: the validator names the requirement, nothing to derive
            path, why = self._resolve(rel, href)
            if path is None and why == "missing":
                self.refuse(_HREF_RULE[kind], f"xlink:href {href!r} names a file that is not in the package; "
                            "a missing file cannot be prepared", where)
                continue
            if path is None:
                self.refuse(_HREF_RULE[kind], f"xlink:href {href!r} {why}; a reference outside the package "
                            "cannot be prepared", where)
                continue
            if why == "renamed":
                target = posixpath.relpath(path, base) if base else path
                new = urllib.parse.quote(target, safe="/-_.~")
                loc.set(f"{XL}href", new)
                self.change(_HREF_RULE[kind], where, "xlink:href corrected to the file's exact name (case, or '+' "
                            "written for a space)", href, new)
            target = self.root / path
            size = holder.get("SIZE")
            if size is not None and size.strip().isdigit() and int(size) != target.stat().st_size:
                self.refuse(_SIZE_RULE[kind], f"SIZE {size} but {path} has {target.stat().st_size} bytes: the file "
                            "differs from what was delivered", where)
            checksum, algo = holder.get("CHECKSUM"), holder.get("CHECKSUMTYPE")
            if checksum and algo:
                actual = _digest(target, algo)
                if actual is None:
                    self.refuse(_SUM_RULE[kind], f"CHECKSUMTYPE {algo!r} cannot be verified, so the delivered "
                                "checksum cannot be replaced", where)
                elif actual.lower() != checksum.strip().lower():
                    self.refuse(_SUM_RULE[kind], f"the {algo} checksum of {path} does not match the delivered "
                                "CHECKSUM: that is damage, never corrected", where)

    def _create_missing_rep_mets(self) -> None:
        """A representation folder without its own METS gets one (ARK6, CSIPSTR12), made of what the
        package METS lists for it: its file entries move over unchanged, with hrefs made relative."""
        reps = sorted(p.name for p in (self.root / "representations").glob("*") if p.is_dir()) \
            if (self.root / "representations").is_dir() else []
        root = self.trees["METS.xml"].getroot()
        root_hdr = root.find(f"{M}metsHdr")
        for rep in reps:
            rel = f"representations/{rep}/METS.xml"
            if (self.root / rel).exists():
                continue
            prefix = f"representations/{rep}/"
            mets = etree.Element(f"{M}mets", nsmap={None: NS_METS, "csip": NS_CSIP, "sip": NS_SIP,
                                                    "xlink": NS_XLINK}, OBJID=rep, PROFILE=SIP_PROFILE_URL)
            if root.get("TYPE"):
                mets.set("TYPE", root.get("TYPE"))
                if root.get(f"{CS}OTHERTYPE"):
                    mets.set(f"{CS}OTHERTYPE", root.get(f"{CS}OTHERTYPE"))
            hdr = etree.SubElement(mets, f"{M}metsHdr", CREATEDATE=(root_hdr.get("CREATEDATE") if root_hdr is not None
                                                                     and root_hdr.get("CREATEDATE") else _now()))
            hdr.set(f"{CS}OAISPACKAGETYPE", "SIP")
            sec = etree.SubElement(mets, f"{M}fileSec", ID=self.new_id("filesec"))
            grp = etree.SubElement(sec, f"{M}fileGrp", ID=self.new_id("grp"), USE=f"Representations/{rep}/data")
            moved = 0
            for f in list(root.iter(f"{M}file")):
                loc = f.find(f"{M}FLocat")
                href = loc.get(f"{XL}href") if loc is not None else None
                path = resolve_href(href, "")[0] if href else None
                if path and path.startswith(prefix):
                    f.getparent().remove(f)
                    loc.set(f"{XL}href", urllib.parse.quote(path[len(prefix):], safe="/-_.~"))
                    grp.append(f)
                    moved += 1
            sm = etree.SubElement(mets, f"{M}structMap", ID=self.new_id("structmap"), TYPE="PHYSICAL", LABEL="CSIP")
            etree.SubElement(sm, f"{M}div", ID=self.new_id("div"), LABEL=rep)
            self.trees[rel] = etree.ElementTree(mets)
            self.mets_rels.append(rel)
            self._write(rel)
            group = self._group(root, f"Representations/{rep}")
            digest, size = sha256_file(self.root / rel)  # brought up to date once the METS is final
            entry = etree.SubElement(group, f"{M}file", ID=self.new_id("file"), MIMETYPE="text/xml", SIZE=str(size),
                                     CREATED=_now(), CHECKSUM=digest, CHECKSUMTYPE="SHA-256")
            loc = etree.SubElement(entry, f"{M}FLocat", LOCTYPE="URL")
            loc.set(f"{XL}type", "simple")
            loc.set(f"{XL}href", rel)
            for div in root.iter(f"{M}div"):
                for fp in list(div.findall(f"{M}fptr")):
                    if fp.get("FILEID") == group.get("ID") and (div.get("LABEL") or "").startswith("Representations"):
                        div.remove(fp)  # the division now points at the representation METS (mptr)
                if (div.get("LABEL") or "") in (f"Representations/{rep}", rep) and div.find(f"{M}mptr") is None \
                        and (div.getparent() is not None and div.getparent().getparent() is not None
                             and div.getparent().getparent().get("LABEL") == "CSIP"):
                    mptr = etree.SubElement(div, f"{M}mptr", LOCTYPE="URL")
                    mptr.set(f"{XL}type", "simple")
                    mptr.set(f"{XL}href", rel)
                    mptr.set(f"{XL}title", group.get("ID"))
            self.change("ARK6", rel, f"representation METS created from the package METS ({moved} file entries "
                        "moved over unchanged)", "", rel)

    # -- header, vocabularies ----------------------------------------------------------------
    def _root_cits(self) -> dict[str, str]:
        mets = self.trees["METS.xml"].getroot()
        out: dict[str, str] = {}
        default = mets.get(f"{CS}CONTENTINFORMATIONTYPE")
        for g in mets.iter(f"{M}fileGrp"):
            use = g.get("USE") or ""
            if use.startswith("Representations/") and g.get(f"{CS}CONTENTINFORMATIONTYPE"):
                out[use.split("/")[1]] = g.get(f"{CS}CONTENTINFORMATIONTYPE")
        if default and default != "MIXED":
            out.setdefault("*", default)
        return out

    def _fix_header(self, rel: str) -> None:
        mets = self.trees[rel].getroot()
        is_root = rel == "METS.xml"
        prof = (mets.get("PROFILE") or "").strip()
        if is_root and prof != SIP_PROFILE_URL:
            mets.set("PROFILE", SIP_PROFILE_URL)
            self.change("SIP2", f"{rel}:{mets.sourceline}", "mets/@PROFILE set to the SIP 2.1.0 profile (FGS 2.0)",
                        prof, SIP_PROFILE_URL)
        elif not is_root and re.search(r"/E-ARK-C?SIP-v\d+-\d+-\d+\.xml$", prof):
            new = re.sub(r"-v\d+-\d+-\d+\.xml$", ".xml", prof)
            mets.set("PROFILE", new)
            self.change("CSIP6", f"{rel}:{mets.sourceline}", "representation PROFILE set to the unversioned "
                        "2.1.0 URL", prof, new)
        hdr = mets.find(f"{M}metsHdr")
        if hdr is None:
            return
        ptype = hdr.get(f"{CS}OAISPACKAGETYPE")
        # Missing, or another package type of the official list (a RODA AIP export): the delivery is a
        # submission. A value in no list is the delivery's defect and stays (CSIP9/SIP4).
        if ptype != "SIP" and (ptype is None or ptype in _official("CSIPVocabularyOAISPackageType")):
            hdr.set(f"{CS}OAISPACKAGETYPE", "SIP")
            self.change("SIP4" if is_root else "CSIP9", f"{rel}:{hdr.sourceline}",
                        'metsHdr/@csip:OAISPACKAGETYPE set to "SIP" (a delivery is a submission)', ptype, "SIP")
        status = hdr.get("RECORDSTATUS")
        if status is not None and status.strip() not in vocabulary("SIPVocabularyRecordStatus"):
            mapped = _map_term(status.strip(), vocabulary("SIPVocabularyRecordStatus"))
            if mapped:
                hdr.set("RECORDSTATUS", mapped)
                self.change("SIP3", f"{rel}:{hdr.sourceline}", "RECORDSTATUS mapped to the 2.1.0 vocabulary term",
                            status, mapped)
        for agent in hdr.findall(f"{M}agent"):
            self._fix_agent(rel, agent)

    def _fix_agent(self, rel: str, agent) -> None:
        where = f"{rel}:{agent.sourceline}"
        notes = agent.findall(f"{M}note")
        if (agent.get("ROLE") == "CREATOR" and agent.get("TYPE") == "OTHER" and agent.get("OTHERTYPE") == "SOFTWARE"
                and len(notes) == 1 and notes[0].get(f"{CS}NOTETYPE") is None and (notes[0].text or "").strip()):
            notes[0].set(f"{CS}NOTETYPE", "SOFTWARE VERSION")
            self.change("CSIP16", where, 'the software agent\'s note typed csip:NOTETYPE="SOFTWARE VERSION"', "")
        if agent.get("TYPE") != "ORGANIZATION":
            return
        for n in notes:
            text = (n.text or "").strip()
            if n.get(f"{CS}NOTETYPE") not in (None, "IDENTIFICATIONCODE"):
                continue
            nr = normalise_orgnr(text)
            if nr is None:
                continue
            if n.get(f"{CS}NOTETYPE") is None:
                n.set(f"{CS}NOTETYPE", "IDENTIFICATIONCODE")
                self.change("SIP14" if agent.get("ROLE") == "ARCHIVIST" else "SIP20", where,
                            "the organisation's note typed csip:NOTETYPE=\"IDENTIFICATIONCODE\"", "")
            if nr != text:
                n.text = nr
                self.change("ARK4", where, "organisationsnummer written as NNNNNN-NNNN", text, nr)

    def _fix_vocabularies(self, rel: str) -> None:
        mets = self.trees[rel].getroot()
        where = f"{rel}:{mets.sourceline}"
        categories = vocabulary("CSIPVocabularyContentCategory", FGS_SPEC_VERSION)
        mtype = mets.get("TYPE")
        if mtype and mtype != "OTHER" and mtype not in categories:
            mapped = _map_term(mtype, categories)
            if mapped:
                mets.set("TYPE", mapped)
                self.change("CSIP2", where, "content category mapped to the 2.1.0 vocabulary term", mtype, mapped)
            elif mtype in _official("CSIPVocabularyContentCategory"):
                mets.set("TYPE", "OTHER")
                mets.set(f"{CS}OTHERTYPE", mtype)
                self.change("CSIP2", where, 'content category not in the 2.1.0 vocabulary: TYPE="OTHER" with the '
                            "delivered term in csip:OTHERTYPE (CSIP3)", mtype, "OTHER")
        # The 2.1.0 vocabulary and extension schema disagree on the archival CITS values: the schema's
        # spelling (not in the vocabulary) is an official term too, kept in OTHERCONTENTINFORMATIONTYPE.
        cits = vocabulary("CSIPVocabularyContentInformationType", FGS_SPEC_VERSION)
        for el, rid, other_rid in [(mets, "CSIP4", "CSIP5")] + [
                (g, "CSIP62", "CSIP63") for g in mets.iter(f"{M}fileGrp")]:
            cit = el.get(f"{CS}CONTENTINFORMATIONTYPE")
            if cit and cit not in cits and cit in _official("CSIPVocabularyContentInformationType") | _xsd_cits(True):
                el.set(f"{CS}CONTENTINFORMATIONTYPE", "OTHER")
                el.set(f"{CS}OTHERCONTENTINFORMATIONTYPE", cit)
                self.change(rid, f"{rel}:{el.sourceline}", 'content information type not in the 2.1.0 vocabulary: '
                            f'"OTHER" with the delivered value in csip:OTHERCONTENTINFORMATIONTYPE ({other_rid})',
                            cit, "OTHER")
        if rel != "METS.xml" and mets.get(f"{CS}CONTENTINFORMATIONTYPE") is None:
            rep = rel.split("/")[1]
            cit = self.rep_cit.get(rep) or self.rep_cit.get("*")
            if cit:
                other = None
                if cit not in cits:
                    cit, other = "OTHER", cit
                mets.set(f"{CS}CONTENTINFORMATIONTYPE", cit)
                if other:
                    mets.set(f"{CS}OTHERCONTENTINFORMATIONTYPE", other)
                self.change("CSIP4", where, "the representation's content information type taken from the package "
                            "METS", "", other or cit)

    def _fix_rep_agents(self) -> None:
        root_hdr = self.trees["METS.xml"].getroot().find(f"{M}metsHdr")
        if root_hdr is None:
            return
        software = [a for a in root_hdr.findall(f"{M}agent") if a.get("ROLE") == "CREATOR"
                    and a.get("TYPE") == "OTHER" and a.get("OTHERTYPE") == "SOFTWARE"]
        for rel in self.mets_rels[1:]:
            mets = self.trees[rel].getroot()
            hdr = mets.find(f"{M}metsHdr")
            if hdr is None:
                hdr = etree.Element(f"{M}metsHdr", CREATEDATE=root_hdr.get("CREATEDATE") or _now())
                hdr.set(f"{CS}OAISPACKAGETYPE", "SIP")
                _insert_header(mets, hdr)
                self.change("CSIP117", f"{rel}", "metsHdr added (from the package METS)", "")
            if not any(a.get("ROLE") == "CREATOR" and a.get("OTHERTYPE") == "SOFTWARE"
                       for a in hdr.findall(f"{M}agent")) and software:
                copy = etree.fromstring(etree.tostring(software[0]))
                copy.tail = None
                existing = hdr.findall(f"{M}agent")
                (existing[0].addprevious(copy) if existing else _append_agent(hdr, copy))
                self.change("CSIP10", f"{rel}:{hdr.sourceline}", "software agent copied from the package METS", "")

    # -- original, schemas ----------------------------------------------------------------------
    def _preserve_original(self, name: str, source: Path) -> None:
        dest = self.root / ORIGINAL_DIR / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        self.original_rel = f"{ORIGINAL_DIR}/{name}"
        self.original_sha256 = sha256_file(dest)[0]

    def _add_schemas(self) -> None:
        needed: set[str] = set()
        for xml in self.root.rglob("*.xml"):
            rel = xml.relative_to(self.root).as_posix()
            if "/data/" in f"/{rel}" or rel.startswith(ORIGINAL_DIR):
                continue
            try:
                needed |= set(schemas_used(self.trees[rel] if rel in self.trees else
                                           parse_bytes(xml.read_bytes(), name=rel)))
            except XMLRejected:
                continue  # the validator reports it (ARK3)
        needed |= {"mets.xsd", "xlink.xsd", "DILCISExtensionMETS.xsd", "DILCISExtensionSIPMETS.xsd",
                   "premis-v3-0.xsd"}
        (self.root / "schemas").mkdir(exist_ok=True)
        for name in sorted(needed):
            target = self.root / "schemas" / name
            if not target.is_file():
                shutil.copyfile(SCHEMA_DIR / name, target)
                self.change("ARK5", f"schemas/{name}", "the official schema added (the package's XML uses it)", "")

    # -- listing files that are present ------------------------------------------------------------
    def _listed(self) -> set[str]:
        out: set[str] = set()
        for rel in self.mets_rels:
            for _holder, loc, _kind in self._refs(rel):
                href = loc.get(f"{XL}href")
                if href:
                    path, _why = resolve_href(href, self._base(rel))
                    if path:
                        out.add(path)
        return out

    def _list_unlisted(self, rel: str) -> None:
        mets = self.trees[rel].getroot()
        is_root = rel == "METS.xml"
        base = self._base(rel)
        listed = self._listed() | set(self.mets_rels) | {PREMIS_REL}
        prefix = f"{base}/" if base else ""
        for path in self._all_files():
            if path in listed or not path.startswith(prefix):
                continue
            local = path[len(prefix):]
            top = local.split("/")[0]
            if is_root and top == "representations":
                continue  # a representation's files go into its own METS
            if top in ("documentation", "schemas") and "/" in local:
                grp = self._group(mets, top.capitalize())
                self._add_file(rel, grp, local)
            elif top == "metadata" and local.split("/")[1:2] in (["descriptive"], ["preservation"]):
                self._add_mdref(rel, mets, local, local.split("/")[1])
            elif not is_root and top == "data":
                rep = rel.split("/")[1]
                grps = [g for g in mets.iter(f"{M}fileGrp") if (g.get("USE") or "").startswith("Representations")]
                grp = grps[0] if grps else self._group(mets, f"Representations/{rep}/data")
                self._add_file(rel, grp, local)

    def _group(self, mets, use: str):
        sec = mets.find(f"{M}fileSec")
        if sec is None:
            sec = etree.Element(f"{M}fileSec", ID=self.new_id("filesec"))
            anchor = mets.find(f"{M}structMap")
            (anchor.addprevious(sec) if anchor is not None else mets.append(sec))
        for g in sec.findall(f"{M}fileGrp"):
            if g.get("USE") == use:
                return g
        grp = etree.SubElement(sec, f"{M}fileGrp", ID=self.new_id("grp"), USE=use)
        self.change({"Documentation": "CSIP60", "Schemas": "CSIP113"}.get(use, "CSIP114"),
                    f"{self._rel_of(mets)}", f'fileGrp USE="{use}" added for files present in the package', "")
        return grp

    def _rel_of(self, mets) -> str:
        return next(r for r, t in self.trees.items() if t.getroot() is mets)

    def _add_file(self, rel: str, grp, local: str) -> None:
        self._quiet = local.startswith(ORIGINAL_DIR)
        self._add_file_entry(rel, grp, local)
        self._quiet = False

    def _add_file_entry(self, rel: str, grp, local: str) -> None:
        f = etree.SubElement(grp, f"{M}file", ID=self.new_id("file"))
        loc = etree.SubElement(f, f"{M}FLocat", LOCTYPE="URL")
        loc.set(f"{XL}type", "simple")
        loc.set(f"{XL}href", urllib.parse.quote(local, safe="/-_.~"))
        rid = "ARK2" if not local.startswith("schemas/") else "CSIP113"
        self.change(rid, rel, f"file present but not listed: listed in fileGrp {grp.get('USE')!r}", "",
                    safe_name(local))

    def _add_mdref(self, rel: str, mets, local: str, kind: str) -> None:
        try:
            ns = etree.QName(parse_bytes((self.root / self._base(rel) / local).read_bytes(), name=local)
                             .getroot()).namespace
        except XMLRejected:
            ns = None
        mdtype, other = _MDTYPES.get(ns or "", ("OTHER", None))
        ref = etree.Element(f"{M}mdRef", LOCTYPE="URL", MDTYPE=mdtype)
        if mdtype == "OTHER":
            ref.set("OTHERMDTYPE", other or (ns.rstrip("/").rsplit("/", 1)[-1] if ns else "") or "XML")
        ref.set(f"{XL}type", "simple")
        ref.set(f"{XL}href", urllib.parse.quote(local, safe="/-_.~"))
        if kind == "descriptive":
            sec = etree.Element(f"{M}dmdSec", ID=self.new_id("dmd"), CREATED=_now(), STATUS="CURRENT")
            sec.append(ref)
            after = mets.findall(f"{M}dmdSec") or [mets.find(f"{M}metsHdr")]
            after[-1].addnext(sec) if after[-1] is not None else mets.insert(0, sec)
            self.change("CSIP17", rel, "descriptive metadata file present but not referenced: dmdSec added", "",
                        safe_name(local))
        else:
            amd = mets.find(f"{M}amdSec")
            if amd is None:
                amd = etree.Element(f"{M}amdSec")
                anchor = mets.find(f"{M}fileSec")
                if anchor is None:
                    anchor = mets.find(f"{M}structMap")
                anchor.addprevious(amd) if anchor is not None else mets.append(amd)
            md = etree.SubElement(amd, f"{M}digiprovMD", ID=self.new_id("digiprov"), STATUS="CURRENT")
            md.append(ref)
            self.change("CSIP31", rel, "preservation metadata file present but not referenced: digiprovMD added",
                        "", safe_name(local))

    # -- file attributes ---------------------------------------------------------------------
    def _fix_file_attributes(self, rel: str) -> None:
        for holder, loc, kind in self._refs(rel):
            href = loc.get(f"{XL}href")
            if not href:
                continue
            path, _why = self._resolve(rel, href)
            if path is None:
                continue
            where = f"{rel}:{holder.sourceline}" if holder.sourceline else rel
            target = self.root / path
            self._quiet = path.startswith(ORIGINAL_DIR)
            self._fix_one(rel, holder, loc, kind, path, where, target)
            self._quiet = False

    def _fix_one(self, rel: str, holder, loc, kind: str, path: str, where: str, target: Path) -> None:
        if loc.get("LOCTYPE") is None:
            loc.set("LOCTYPE", "URL")
            self.change("CSIP77" if kind == "file" else "CSIP36", where, 'LOCTYPE="URL" added', "")
        if loc.get(f"{XL}type") is None:
            loc.set(f"{XL}type", "simple")
            self.change("CSIP78" if kind == "file" else "CSIP37", where, 'xlink:type="simple" added', "")
        if holder.tag == f"{M}file" and not holder.get("ID"):
            holder.set("ID", self.new_id("file"))
            self.change("CSIP66", where, "file ID added", "")
        if not holder.get("MIMETYPE"):
            mime = self.mime(path)
            holder.set("MIMETYPE", mime)
            self.change(_MIME_RULE[kind], where, "MIMETYPE added from format identification", "", mime)
        st = target.stat()
        if not holder.get("SIZE"):
            holder.set("SIZE", str(st.st_size))
            self.change(_SIZE_RULE[kind], where, "SIZE added from the delivered bytes", "", st.st_size)
        if not holder.get("CREATED"):
            created = dt.datetime.fromtimestamp(st.st_mtime, dt.UTC).replace(microsecond=0).isoformat()
            created = created.replace("+00:00", "Z")
            holder.set("CREATED", created)
            self.change(_CREATED_RULE[kind], where, "CREATED added from the delivered file's time", "", created)
        checksum, algo = holder.get("CHECKSUM"), holder.get("CHECKSUMTYPE")
        sha = _digest(target, "SHA-256")
        if not checksum:
            holder.set("CHECKSUM", sha)
            holder.set("CHECKSUMTYPE", "SHA-256")
            self.change(_SUM_RULE[kind], where, "SHA-256 CHECKSUM computed from the delivered bytes", "", sha)
        elif (algo or "").upper() != "SHA-256":
            # verified against the delivered bytes in _check_references before anything changed
            holder.set("CHECKSUM", sha)
            holder.set("CHECKSUMTYPE", "SHA-256")
            self.change("ARK1", where, f"verified {algo} checksum replaced by the SHA-256 of the same bytes",
                        f"{algo}:{checksum}", sha)
        if kind != "file" and not holder.get("MDTYPE"):
            try:
                ns = etree.QName(parse_bytes(target.read_bytes(), name=path).getroot()).namespace
            except XMLRejected:
                ns = None
            if ns in _MDTYPES:
                mdtype, other = _MDTYPES[ns]
                holder.set("MDTYPE", mdtype)
                if other:
                    holder.set("OTHERMDTYPE", other)
                self.change("CSIP25" if kind == "dmd" else "CSIP39", where,
                            "MDTYPE added from the metadata file's namespace", "", mdtype)

    def _split_20_representations(self) -> None:
        """The 2.0.x form, one fileGrp and one division labelled exactly "Representations" for all
        representations, becomes the 2.1.0 form: one "Representations/<name>" group and division each
        (CSIP114, CSIP105), the entries and pointers moved over unchanged."""
        mets = self.trees["METS.xml"].getroot()
        sec = mets.find(f"{M}fileSec")
        new_groups: dict[str, etree._Element] = {}
        old_ids: set[str] = set()
        if sec is not None:
            for grp in sec.findall(f"{M}fileGrp"):
                if grp.get("USE") != "Representations":
                    continue
                for f in list(grp.iter(f"{M}file")):
                    loc = f.find(f"{M}FLocat")
                    path = resolve_href(loc.get(f"{XL}href") or "", "")[0] if loc is not None else None
                    parts = (path or "").split("/")
                    if len(parts) < 3 or parts[0] != "representations":
                        continue
                    rep = parts[1]
                    if rep not in new_groups:
                        new_groups[rep] = etree.Element(f"{M}fileGrp", ID=self.new_id("grp"),
                                                        USE=f"Representations/{rep}")
                        for attr in (f"{CS}CONTENTINFORMATIONTYPE", f"{CS}OTHERCONTENTINFORMATIONTYPE"):
                            if grp.get(attr):
                                new_groups[rep].set(attr, grp.get(attr))
                        grp.addprevious(new_groups[rep])
                    f.getparent().remove(f)
                    new_groups[rep].append(f)
                if not len(grp):
                    old_ids.add(grp.get("ID") or "")
                    sec.remove(grp)
                if new_groups:
                    self.change("CSIP114", "METS.xml", 'fileGrp USE="Representations" (2.0.x) split into one '
                                '"Representations/<name>" group per representation', "Representations",
                                ", ".join(f"Representations/{r}" for r in sorted(new_groups)))
        main = mets.find(f"{M}structMap[@LABEL='CSIP']/{M}div")
        if main is None:
            return
        for div in main.findall(f"{M}div"):
            if div.get("LABEL") != "Representations":
                continue
            for mptr in div.findall(f"{M}mptr"):
                path = resolve_href(mptr.get(f"{XL}href") or "", "")[0] or ""
                parts = path.split("/")
                if len(parts) != 3 or parts[0] != "representations":
                    continue
                rep = parts[1]
                new = etree.Element(f"{M}div", ID=self.new_id("div"), LABEL=f"Representations/{rep}")
                div.addprevious(new)
                new.append(mptr)
                if rep in new_groups and (mptr.get(f"{XL}title") in old_ids or not mptr.get(f"{XL}title")):
                    mptr.set(f"{XL}title", new_groups[rep].get("ID"))
                self.change("CSIP105", "METS.xml", f'division "Representations/{rep}" (2.1.0 form) for the '
                            "representation's mptr", "Representations", f"Representations/{rep}")
            for fp in div.findall(f"{M}fptr"):
                if fp.get("FILEID") in old_ids:
                    div.remove(fp)  # pointed at the split group; each new division points at its METS
            if not len([c for c in div if isinstance(c.tag, str)]):
                main.remove(div)

    def _move_extra_structmaps(self, rel: str) -> None:
        """Keep a producer's own structMaps next to the METS instead of in it.

        CSIP80 allows them, but the E-ARK reference validator applies CSIP81/CSIP82 to every
        structMap, so a package carrying them fails it; they move, whole and unchanged, into a METS
        document of their own under documentation/ (listed there), and the original delivery keeps them
        in place too."""
        mets = self.trees[rel].getroot()
        maps = mets.findall(f"{M}structMap")
        if len(maps) < 2 or sum(m.get("LABEL") == "CSIP" for m in maps) != 1:
            return
        extra = [m for m in maps if m.get("LABEL") != "CSIP"]
        holder = etree.Element(f"{M}mets", nsmap={None: NS_METS, "xlink": NS_XLINK}, OBJID=mets.get("OBJID") or "")
        for m in extra:
            mets.remove(m)
            holder.append(m)
        stem = "" if rel == "METS.xml" else f"{rel.split('/')[1]}-"
        target = self.root / "documentation" / f"arkivflode-{stem}additional-structmaps.xml"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(etree.tostring(holder, xml_declaration=True, encoding="UTF-8", pretty_print=True))
        labels = ", ".join(repr(m.get("LABEL") or m.get("ID") or "?") for m in extra)
        moved = target.relative_to(self.root).as_posix()
        self.change("CSIP80", rel, f"additional structMaps moved unchanged to {moved}", labels, moved)

    # -- structMap ---------------------------------------------------------------------------------
    def _fix_structmap(self, rel: str) -> None:
        mets = self.trees[rel].getroot()
        is_root = rel == "METS.xml"
        maps = mets.findall(f"{M}structMap")
        csip = [m for m in maps if m.get("LABEL") == "CSIP"]
        if not csip:
            physical = [m for m in maps if (m.get("TYPE") or "").upper() == "PHYSICAL"]
            named = [m for m in physical if "csip" in (m.get("LABEL") or "").lower()
                     or "common specification" in (m.get("LABEL") or "").lower()]
            pick = named[0] if len(named) == 1 else physical[0] if len(physical) == 1 else None
            if pick is None:
                return  # which map is the CSIP one cannot be told: the validator names CSIP82
            old = pick.get("LABEL")
            pick.set("LABEL", "CSIP")
            self.change("CSIP82", f"{rel}:{pick.sourceline}", 'the physical structMap labelled "CSIP"', old, "CSIP")
            csip = [pick]
        sm = csip[0]
        if sm.get("TYPE") != "PHYSICAL":
            old = sm.get("TYPE")
            sm.set("TYPE", "PHYSICAL")
            self.change("CSIP81", f"{rel}:{sm.sourceline}", 'CSIP structMap TYPE="PHYSICAL"', old, "PHYSICAL")
        if not sm.get("ID"):
            sm.set("ID", self.new_id("structmap"))
            self.change("CSIP83", f"{rel}:{sm.sourceline}", "structMap ID added", "")
        divs = sm.findall(f"{M}div")
        if len(divs) != 1:
            return
        main = divs[0]
        if not main.get("ID"):
            main.set("ID", self.new_id("div"))
            self.change("CSIP85", f"{rel}:{main.sourceline}", "main div ID added", "")
        subs = {d.get("LABEL"): d for d in main.findall(f"{M}div")}
        meta = subs.get("Metadata")
        if meta is None:
            meta = etree.Element(f"{M}div", ID=self.new_id("div"), LABEL="Metadata")
            main.insert(0, meta)
            self.change("CSIP88", rel, 'div LABEL="Metadata" added', "")
        amd = [c.get("ID") for sec in mets.findall(f"{M}amdSec") for c in sec
               if isinstance(c.tag, str) and c.get("ID") and c.get("STATUS", "CURRENT") == "CURRENT"]
        dmd = [s.get("ID") for s in mets.findall(f"{M}dmdSec")
               if s.get("ID") and s.get("STATUS", "CURRENT") == "CURRENT"]
        for attr, ids, rid in (("ADMID", amd, "CSIP91"), ("DMDID", dmd, "CSIP92")):
            have = (meta.get(attr) or "").split()
            missing = [i for i in ids if i not in have]
            if missing:
                meta.set(attr, " ".join(have + missing))
                self.change(rid, f"{rel}", f"Metadata div {attr} lists every current section", " ".join(have),
                            meta.get(attr))
        groups = {g.get("ID"): g for g in mets.iter(f"{M}fileGrp") if g.getparent().tag == f"{M}fileSec"}
        pointed = {fp.get("FILEID") for fp in sm.iter(f"{M}fptr")} | {
            mp.get(f"{XL}title") for mp in sm.iter(f"{M}mptr")}
        for gid, g in groups.items():
            use = g.get("USE") or ""
            if gid in pointed or not gid:
                continue
            if use in ("Documentation", "Schemas"):
                div = subs.get(use)
                if div is None:
                    div = etree.Element(f"{M}div", ID=self.new_id("div"), LABEL=use)
                    reps = [d for d in main.findall(f"{M}div") if (d.get("LABEL") or "").startswith("Representations")]
                    (reps[0].addprevious(div) if reps else main.append(div))
                    subs[use] = div
                    self.change("CSIP93" if use == "Documentation" else "CSIP97", rel, f'div LABEL="{use}" added', "")
                etree.SubElement(div, f"{M}fptr", FILEID=gid)
                self.change("CSIP96" if use == "Documentation" else "CSIP100", rel,
                            f'fptr to fileGrp {gid!r} added to the "{use}" division', "")
            elif is_root and use.startswith("Representations/"):
                rep = use.split("/")[1]
                div = subs.get(use) or subs.get(f"Representations/{rep}")
                href = f"representations/{rep}/METS.xml"
                if div is None and (self.root / href).is_file():
                    div = etree.SubElement(main, f"{M}div", ID=self.new_id("div"), LABEL=f"Representations/{rep}")
                    mptr = etree.SubElement(div, f"{M}mptr", LOCTYPE="URL")
                    mptr.set(f"{XL}type", "simple")
                    mptr.set(f"{XL}href", href)
                    mptr.set(f"{XL}title", gid)
                    self.change("CSIP105", rel, f'div LABEL="Representations/{rep}" with its mptr added', "")
            elif not is_root and use.startswith("Representations"):
                div = subs.get("Data") or etree.SubElement(main, f"{M}div", ID=self.new_id("div"), LABEL="Data")
                subs["Data"] = div
                etree.SubElement(div, f"{M}fptr", FILEID=gid)
                self.change("CSIP104", rel, f"fptr to fileGrp {gid!r} added", "")

    # -- PREMIS, the root METS's own entries --------------------------------------------------------
    def _write_premis(self) -> None:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        objects, self.formats = [], []
        for path in self._all_files():
            if path in self.mets_rels or path == PREMIS_REL:
                continue
            ident = self.ident(path)
            digest, size = sha256_file(self.root / path)
            puid = ident.puid if ident is not None and ident.identified else None
            objects.append(FileObject(identifier=path, sha256=digest, size=size,
                                      format_name=(ident.name if ident is not None and ident.name else "unknown"),
                                      puid=puid, format_version=(ident.version if ident is not None else "") or "",
                                      format_note=(f"{ident.tool}, {ident.method}" if ident is not None else "")))
            self.formats.append({"path": path, "puid": puid, "format_name": ident.name if ident else "",
                                 "mime": ident.mime if ident else "", "sha256": digest, "size": size})
        agent = software(PREPARE_AGENT)
        events = [Event(f"prepare-{i + 1}", "modification", now, "success",
                        detail=f"{c.requirement}: {c.what} [{c.location}]",
                        outcome_note=f"original value: {c.original!r}; new value: {c.new!r}",
                        agents=by_software(PREPARE_AGENT),
                        objects=((c.location.split(":")[0]),))
                  for i, c in enumerate(self.changes)]
        events.append(Event("prepare-original", "ingestion", now, "success",
                            detail="the delivered package is kept unchanged in the prepared package",
                            outcome_note=f"sha256 {self.original_sha256}",
                            agents=by_software(PREPARE_AGENT), objects=(self.original_rel,)))
        events.append(Event("prepare-format-identification", "format identification", now, "success",
                            detail="every delivered file identified",
                            agents=by_software(PREPARE_AGENT),
                            objects=tuple(o.identifier for o in objects)))
        tree = build_premis(objects, events, [agent], schema_prefix="../../")
        (self.root / PREMIS_REL).parent.mkdir(parents=True, exist_ok=True)
        (self.root / PREMIS_REL).write_bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8",
                                                            pretty_print=True))
        mets = self.trees["METS.xml"].getroot()
        amd = mets.find(f"{M}amdSec")
        if amd is None:
            amd = etree.Element(f"{M}amdSec")
            anchor = mets.find(f"{M}fileSec")
            if anchor is None:
                anchor = mets.find(f"{M}structMap")
            anchor.addprevious(amd)
        data = (self.root / PREMIS_REL).read_bytes()
        amd.append(metadata_element(MetadataRef("digiprovMD", FileRef(
            "arkivflode-prepare-premis", PREMIS_REL, "text/xml", len(data), hashlib.sha256(data).hexdigest(), now),
            "PREMIS")))
        meta = mets.find(f"{M}structMap[@LABEL='CSIP']/{M}div/{M}div[@LABEL='Metadata']")
        if meta is not None:
            meta.set("ADMID", " ".join([*(meta.get("ADMID") or "").split(), "arkivflode-prepare-premis"]))

    def _refresh_rep_entries(self) -> None:
        for _holder, loc, _kind in list(self._refs("METS.xml")):
            holder = _holder
            href = loc.get(f"{XL}href") or ""
            path, _why = resolve_href(href, "")
            if path in self.mets_rels[1:]:
                digest, size = sha256_file(self.root / path)
                holder.set("SIZE", str(size))
                holder.set("CHECKSUM", digest)
                holder.set("CHECKSUMTYPE", "SHA-256")

    def _mark_prepared(self) -> None:
        hdr = self.trees["METS.xml"].getroot().find(f"{M}metsHdr")
        if hdr is None:
            return
        hdr.set("LASTMODDATE", _now())
        agent = etree.Element(f"{M}agent", ROLE="EDITOR", TYPE="OTHER", OTHERTYPE="SOFTWARE")
        etree.SubElement(agent, f"{M}name").text = SOFTWARE_NAME
        note = etree.SubElement(agent, f"{M}note")
        note.set(f"{CS}NOTETYPE", "SOFTWARE VERSION")
        note.text = SOFTWARE_VERSION
        _append_agent(hdr, agent)


def _insert_header(mets, hdr) -> None:
    first = [c for c in mets if isinstance(c.tag, str)]
    (first[0].addprevious(hdr) if first else mets.append(hdr))


def _append_agent(hdr, agent) -> None:
    agents = hdr.findall(f"{M}agent")
    if agents:
        agents[-1].addnext(agent)
    else:
        # METS order in metsHdr: agent before altRecordID and metsDocumentID
        later = [c for c in hdr if isinstance(c.tag, str) and etree.QName(c).localname != "agent"]
        (later[0].addprevious(agent) if later else hdr.append(agent))


@functools.lru_cache(maxsize=2)
def _xsd_cits(every_version: bool = False) -> frozenset[str]:
    """The CONTENTINFORMATIONTYPE values the CSIP extension schema (2.1.0, or any bundled) enumerates."""
    names = ["DILCISExtensionMETS.xsd"] + (["DILCISExtensionMETS-v2-2-0.xsd"] if every_version else [])
    out: set[str] = set()
    for name in names:
        tree = parse_bytes((SCHEMA_DIR / name).read_bytes(), name=name)
        for attr in tree.iter("{http://www.w3.org/2001/XMLSchema}attribute"):
            if attr.get("name") == "CONTENTINFORMATIONTYPE":
                out |= {e.get("value") for e in attr.iter("{http://www.w3.org/2001/XMLSchema}enumeration")}
    return frozenset(out)


def _official(name: str) -> frozenset[str]:
    """Every term of a vocabulary in any bundled E-ARK version: a term in none of them is a defect of
    the delivery, never rewritten."""
    return frozenset().union(*(vocabulary(name, version) for version in SPEC_VERSIONS))


def _dashes(text: str) -> str:
    return re.sub(r"\s*[\u2010-\u2015\-]\s*", " - ", text).casefold()


def _map_term(term: str, vocab: frozenset[str]) -> str | None:
    """The 2.1.0 term a delivered term stands for: same words, a different dash or case, or the
    record status spelling of 2.2.0 (REPLACEMENT) against 2.1.0's (REPLEACEMENT)."""
    want = _dashes(term)
    for t in vocab:
        if _dashes(t) == want:
            return t
    if term.strip().upper() == "REPLACEMENT" and "REPLEACEMENT" in vocab:
        return "REPLEACEMENT"
    return None


def _restore_times(source: Path, root: Path) -> None:
    """Give extracted files the modification times their archive records (CREATED is derived from
    them); a folder delivery keeps its own. Only names that were extracted are touched."""
    if not source.is_file():
        return
    times: dict[str, float] = {}
    try:
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as z:
                for info in z.infolist():
                    times[info.filename] = dt.datetime(*info.date_time, tzinfo=dt.UTC).timestamp()
        elif tarfile.is_tarfile(source):
            with tarfile.open(source) as tar:
                for m in tar:
                    times[m.name] = float(m.mtime)
    except (OSError, ValueError, tarfile.TarError, zipfile.BadZipFile):
        return  # the extraction already judged the archive; without times, CREATED is the extraction's
    base = root.resolve()
    for name, when in times.items():
        parts = name.strip("/").split("/", 1)
        if len(parts) != 2 or parts[0] != root.name:
            continue
        target = (root / parts[1])
        if target.is_file() and not target.is_symlink() and target.resolve().is_relative_to(base) and when > 0:
            os.utime(target, (when, when), follow_symlinks=False)


def _original_bytes(source: Path, tmp: Path) -> tuple[Path, str]:
    """The delivered package as one file: an archive as it is, a folder as a plain tar of it."""
    if source.is_file():
        return source, source.name
    out = tmp / f"{source.name}.tar"
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for p in sorted(source.rglob("*")):
            info = tar.gettarinfo(str(p), arcname=f"{source.name}/{p.relative_to(source).as_posix()}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if p.is_file():
                with p.open("rb") as fh:
                    tar.addfile(info, fh)
            elif p.is_dir():
                tar.addfile(info)
    return out, out.name


def prepare_package(source: str | Path, out_dir: str | Path, *, as_tar: bool = False,
                    identifier=None, identification_cache=None) -> PrepareResult:
    """Prepare ``source`` into ``out_dir``; the result says ``prepared`` (a valid FGS 2.0 package) or
    ``refused`` (with findings). Never raises for a delivery's content; FileNotFoundError for a
    missing ``source``, OSError with an errno for the disk's faults. With an ``identification_cache``
    (:class:`~transforms.formats.identification.IdentificationCache`) a file whose content was
    identified before is not identified again, and what is identified is kept there."""
    source, out_dir = Path(source), Path(out_dir)
    if not source.exists():
        raise FileNotFoundError(str(source))
    out_dir.mkdir(parents=True, exist_ok=True)
    delivered = validate_package(source, None)
    result = PrepareResult(source=source.name, outcome="refused",
                           delivered_version=delivered.declared_version or delivered.spec_version,
                           delivered_reason=delivered.spec_reason, report=delivered)
    # A missing METS.xml may be a METS in another case or a BagIt wrapper: decided on the extracted files.
    hard = [f for f in delivered.findings if f.severity == "ERROR" and f.requirement in REFUSED_RULES - {"CSIPSTR4"}]
    if hard:
        result.findings = hard
        return result
    if source.is_file() and container_kind(source) not in ("tar", "zip", "gzip", "bzip2", "xz", "zstd"):
        result.findings = [Finding("PACKAGE", "ERROR", "not a package folder, tar or zip", safe_name(source.name))]
        return result
    if identifier is None:
        from transforms.formats.identification import Identifier
        identifier = Identifier.shared()  # loading fido's signatures takes a second: once a process
    with tempfile.TemporaryDirectory(prefix="arkiv-prepare-", dir=out_dir) as tmp:
        tmp_path = Path(tmp)
        try:
            with extract_package(source, parent=tmp_path) as root:
                _restore_times(source, root)
                original, name = _original_bytes(source, tmp_path)
                prep = _Preparer(root, delivered.spec_version, identifier, identification_cache)
                prep.run(safe_name(name).replace("/", "_"), original)
                if prep.refusals:
                    result.findings = prep.refusals
                    return result
                objid = prep.trees["METS.xml"].getroot().get("OBJID") or root.name
                final_root = root
                if root.name != objid and re.fullmatch(r"[^/\\\x00-\x1f]+", objid) and objid not in (".", ".."):
                    final_root = root.with_name(objid)
                    root.rename(final_root)
                report = validate_package(final_root, "fgs")
                result.objid, result.changes, result.formats = objid, prep.changes, prep.formats
                result.original_sha256 = prep.original_sha256
                result.report = report
                if not report.valid:
                    result.findings = report.errors()
                    return result
                dest = out_dir / (f"{final_root.name}.tar" if as_tar else final_root.name)
                if dest.exists():
                    result.findings = [Finding("PACKAGE", "ERROR", f"{safe_name(dest.name)} already exists in the "
                                               "output folder; nothing was overwritten", "")]
                    return result
                if as_tar:
                    part = dest.with_name(f".{dest.name}.part-{uuid.uuid4().hex[:8]}")
                    with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
                        tar.add(final_root, arcname=final_root.name)
                    os.replace(part, dest)
                else:
                    shutil.move(str(final_root), dest)
                    final_root.mkdir()  # extract_package removes its folder on exit
                result.package = str(dest)
                result.outcome = "prepared"
                return result
        except UnsafeArchive as exc:
            result.findings = [Finding("PACKAGE", "ERROR", str(exc), safe_name(exc.member or ""))]
            return result
        except OSError as exc:
            if exc.errno is not None:
                raise  # the disk's fault, not the delivery's: the caller retries
            result.findings = [Finding("PACKAGE", "ERROR", f"the package could not be prepared: damaged or "
                                       f"unreadable content ({type(exc).__name__})", "")]
            return result
        except Exception as exc:  # noqa: BLE001 - no delivery may turn into a traceback
            # Only the type: an exception's text may quote the package's content.
            _log.warning("preparing a package stopped on %s", type(exc).__name__)
            result.findings = [Finding("PACKAGE", "ERROR", f"the package could not be prepared: damaged or "
                                       f"unreadable content ({type(exc).__name__})", "")]
            return result


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("package", nargs="?", metavar="PACKAGE", help="package folder, .tar or .zip")
    parser.add_argument("--out", metavar="DIR", help="folder to write the prepared package to")
    parser.add_argument("--tar", action="store_true", help="write the prepared package as a plain .tar")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    """``arkiv prepare``: 0 prepared and valid, 1 cannot be prepared, 2 usage error."""
    if not getattr(args, "package", None) or not getattr(args, "out", None):
        print("arkiv prepare: give a PACKAGE and --out DIR", file=sys.stderr)
        return 2
    src = Path(args.package)
    if not src.exists():
        print(f"arkiv prepare: no such file or folder: {safe_name(args.package)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"arkiv prepare: --out {safe_name(args.out)} is not a folder", file=sys.stderr)
        return 2
    result = prepare_package(src, out, as_tar=args.tar)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(result.to_text())
    return 0 if result.ok else 1


__all__ = ["Change", "PrepareResult", "Refused", "add_arguments", "normalise_orgnr", "prepare_package", "run"]
