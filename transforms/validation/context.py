"""What the rules work on: a package opened for validation, its METS documents, and shared checks.

:class:`Context` holds one package being validated (the reader, the profile and E-ARK version
chosen, the report being filled, what the METS documents reference) and what several sections'
rules share: reporting a finding (:meth:`Context.fail`), the attributes of a ``file`` or ``mdRef``
and the integrity of the file it points to (:meth:`Context.check_ref`), STATUS and
CONTENTINFORMATIONTYPE values. :class:`Doc` is one METS document as the rules see it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import mimetypes
import posixpath
import re
import urllib.parse
import zlib
from collections import Counter

from lxml import etree

from transforms.common.masking import safe_name
from transforms.common.safe_archive import PackageReader, UnsafeArchive
from transforms.common.xmltools import NS_CSIP, NS_METS, NS_SIP, NS_XLINK
from transforms.validation.registry import Hook, Rule, Scope, hooks, levels
from transforms.validation.report import MAX_FINDINGS_PER_REQUIREMENT, Finding, Severity, ValidationReport, clean
from transforms.validation.requirements import FGS_SPEC_VERSION, SIP_PROFILES, vocabulary
from transforms.validation.xmlstream import CHUNK, XmlReader

_log = logging.getLogger(__name__)

M = f"{{{NS_METS}}}"
XL = f"{{{NS_XLINK}}}"
CS = f"{{{NS_CSIP}}}"
SP = f"{{{NS_SIP}}}"


MIME_RE = re.compile(
    r"^(application|audio|font|example|image|message|model|multipart|text|video|chemical|x-[\w.+-]+)"
    r"/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}(\s*;\s*[A-Za-z0-9!#$&^_.+-]+=(\"[^\"]*\"|[^;\s]+))*$",
    re.IGNORECASE,
)
_KNOWN_MIME = frozenset(mimetypes.MimeTypes(filenames=()).types_map_inv[True]) | frozenset(
    mimetypes.MimeTypes(filenames=()).types_map_inv[False])
_DATETIME = re.compile(r"^-?\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")
HASHES = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}


def blank(value: str | None) -> bool:
    return value is None or not value.strip()


def known_mime(mime: str) -> bool:
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


def parse_datetime(value: str) -> dt.datetime | None:
    v = value.strip()
    if not _DATETIME.match(v):
        return None
    try:
        parsed = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def locate(doc: str, el) -> str:
    if el is None:
        return doc
    name = etree.QName(el).localname if isinstance(el.tag, str) else "?"
    ident = el.get("ID")
    return f"{doc}:{el.sourceline} <{name}{' ID=' + ident if ident else ''}>"


#: An href that is a plain relative path: no scheme, query, fragment, escape or backslash to decode.
_PLAIN_HREF = re.compile(r"[A-Za-z0-9_.~-][A-Za-z0-9_.~/-]*")


def resolve_href(href: str, base: str) -> tuple[str | None, str]:
    """Resolve an xlink:href against a METS document's folder; (path, "") or (None, reason)."""
    if _PLAIN_HREF.fullmatch(href):  # most hrefs: what the URL parsing below would leave unchanged
        joined = posixpath.normpath(posixpath.join(base, href)) if base else posixpath.normpath(href)
        if joined == ".." or joined.startswith("../") or joined == ".":
            return None, "points outside the package"
        return joined, ""
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


def amd_ids_of(root) -> set[str]:
    out = set()
    for sec in root.findall(f"{M}amdSec"):
        for md in sec:
            if isinstance(md.tag, str) and md.get("ID"):
                out.add(md.get("ID"))
    return out


class Doc:
    """A METS document and where it sits in the package.

    The document is streamed: each ``file`` of its file section is checked as soon as the parser
    has read it and then dropped, so ``root`` holds the rest of the tree only. What the later
    checks need from the dropped elements is kept here in compact form: their IDs, the findings
    per file group (to report in document order) and counts of the files and their attributes.
    """

    def __init__(self, rel: str, *, rep: str | None):
        self.rel = rel
        self.root = None
        self.rep = rep  # representation folder name, None for the package METS
        self.base = posixpath.dirname(rel)
        self.ids: dict[str, etree._Element] = {}
        self.removed_ids: set[str] = set()  # IDs of the file elements checked while streaming
        self.groups: dict = {}  # fileGrp element -> GroupLog
        self.schemas: list[str] = []  # bundled schema files the document uses
        self.file_count = 0  # every mets:file element
        self.attr_missing: Counter[str] = Counter()  # mets:file elements without a counted attribute
        self.attr_empty: Counter[str] = Counter()  # ... with it empty

    def attach(self, root) -> None:
        self.root = root
        for el in root.iter():
            if isinstance(el.tag, str) and el.get("ID"):
                self.ids.setdefault(el.get("ID"), el)

    def has_id(self, ident: str) -> bool:
        return ident in self.ids or ident in self.removed_ids

    def release(self, *, keep_root: bool) -> None:
        """Drop what only the per-document checks needed (the package METS keeps its tree)."""
        self.ids, self.removed_ids, self.groups = {}, set(), {}
        if not keep_root:
            self.root = None


class GroupLog:
    """What streaming found for the ``file`` children of one fileGrp, in document order.

    ``seq`` holds per file either the element (kept in the tree, checked later), a list of its
    buffered findings, or an int counting consecutive files that had none. ``counts``/``over``
    cap the buffered findings per requirement as :meth:`Context.fail` caps the report.
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


class Context:
    """One package being validated; see the module docstring."""

    def __init__(self, reader: PackageReader, report: ValidationReport, profile: str | None,
                 check_integrity: bool, spec_version: str | None = None):
        self.pkg = reader
        self.report = report
        self.forced = profile
        self.profile = profile or "csip"
        self.forced_spec = spec_version
        self.spec = spec_version or FGS_SPEC_VERSION
        self.levels = levels(self.spec)
        self.integrity = check_integrity
        self.xml = XmlReader(reader)
        self.rule: Rule | None = None  # the rule whose check is running
        self._count: Counter[str] = Counter()
        # Digests already computed, to hash a file referenced twice once: SHA-256 keyed by the
        # path alone and kept as bytes (a few dozen bytes per file of a large package).
        self.hashes: dict[str | tuple[str, str], bytes] = {}
        self.referenced: set[str] = set()  # package paths referenced from any METS
        self.mets_paths: set[str] = set()
        self.dmd_refs: set[str] = set()
        self.amd_refs: set[str] = set()
        self.digiprov_count = 0
        self.digiprov_unwrapped = 0  # digiprovMD without an embedded mdWrap (so describing a file)
        self.amd_unwrapped = 0  # empty amdSecs and amdSec children without an mdWrap
        self.dmd_count = 0
        self.amd_count = 0
        self.docs: list[Doc] = []
        self.root_doc: Doc | None = None
        self._lower_files: dict[str, str] | None = None
        self.sink: tuple[GroupLog, list] | None = None  # findings of a file checked while streaming
        self._reference_hooks: tuple[Hook, ...] = ()
        self._view = memoryview(bytearray(CHUNK))  # the read buffer of digest()
        self._listed: dict[str, list[str]] = {}

    # -- running checks ----------------------------------------------------------------------
    def run(self, hook: Hook, *args) -> None:
        """Run one registered check, so that what it reports is checked against what its rule owns."""
        outer, self.rule = self.rule, hook.rule
        try:
            hook.fn(self, *args)
        finally:
            self.rule = outer

    def run_all(self, scope: Scope, *args, without_mets: bool = False) -> None:
        for hook in hooks(scope, self.profile, without_mets=without_mets):
            self.run(hook, *args)

    def set_profile(self, profile: str, spec: str) -> None:
        self.profile, self.spec = profile, spec
        self.levels = levels(spec)
        self._reference_hooks = hooks(Scope.REFERENCE, profile)

    # -- findings ----------------------------------------------------------------------------
    def fail(self, rid: str, message: str, location: str = "", severity: Severity | None = None) -> None:
        """Report that requirement ``rid`` is broken; the severity follows its level unless given."""
        if self.rule is None or rid not in self.rule.ids:
            _log.error("requirement %s reported by %s, which does not own it", rid,
                       self.rule.name if self.rule else "no rule")
        message, location = clean(message), clean(location)
        if self.sink is not None:
            log, items = self.sink
            log.counts[rid] += 1
            if log.counts[rid] > MAX_FINDINGS_PER_REQUIREMENT:
                log.over[rid] += 1  # beyond the cap within one group, so beyond it in the report too
            else:
                items.append((self.rule, rid, message, location, severity))
            return
        sev = severity or Severity.for_level(self.levels.get(rid, "MUST"))
        self._count[rid] += 1
        if self._count[rid] > MAX_FINDINGS_PER_REQUIREMENT:
            self.report.suppressed[rid] = self.report.suppressed.get(rid, 0) + 1
            return
        self.report.findings.append(Finding(rid, sev, message, location))

    def replay(self, items: list) -> None:
        """Report findings buffered while a document streamed (see GroupLog), each as its rule."""
        outer = self.rule
        try:
            for rule, *finding in items:
                self.rule = rule
                self.fail(*finding)
        finally:
            self.rule = outer

    def suppress(self, over: Counter[str]) -> None:
        for rid, n in over.items():
            self._count[rid] += n
            self.report.suppressed[rid] = self.report.suppressed.get(rid, 0) + n

    # -- what rules ask ----------------------------------------------------------------------
    @property
    def sip(self) -> bool:
        """Whether the SIP profile's requirements apply (profiles sip and fgs)."""
        return self.profile in SIP_PROFILES

    def vocab(self, name: str) -> frozenset[str]:
        return vocabulary(name, self.spec)

    @staticmethod
    def wrong_ns(el, local: str) -> str | None:
        """The namespace of an attribute ``local`` whose namespace is an official one in the wrong case."""
        for k in el.attrib:
            q = etree.QName(k)
            if (q.localname == local and q.namespace and q.namespace != NS_CSIP
                    and q.namespace.lower() in (NS_CSIP.lower(), NS_SIP.lower())):
                return q.namespace
        return None

    def listdir(self, rel: str) -> list[str]:
        """The names in one folder of the package (kept: the reader walks every member to answer)."""
        names = self._listed.get(rel)
        if names is None:
            names = self._listed[rel] = self.pkg.listdir(rel)
        return names

    def representations(self) -> list[str]:
        return [n for n in self.listdir("representations") if self.pkg.is_dir(f"representations/{n}")]

    # -- file and mdRef attributes, integrity ------------------------------------------------
    def check_ref(self, doc: Doc, el, ids: dict[str, str], locat=None) -> str | None:
        """Check one mdRef (or file + its FLocat); returns the resolved package path if any."""

        def at() -> str:  # where a finding is, worked out only for a finding
            return locate(doc.rel, el)

        locat = el if locat is None else locat
        if locat.get("LOCTYPE") != "URL":
            self.fail(ids["LOCTYPE"], f'LOCTYPE must be "URL" (found {locat.get("LOCTYPE")!r})', at())
        if locat.get(f"{XL}type") != "simple":
            self.fail(ids["TYPE"], f'xlink:type must be "simple" (found {locat.get(f"{XL}type")!r})', at())
        if "MDTYPE" in ids and blank(el.get("MDTYPE")):
            self.fail(ids["MDTYPE"], "@MDTYPE is missing", at())
        mime = el.get("MIMETYPE")
        if blank(mime):
            self.fail(ids["MIMETYPE"], "@MIMETYPE is missing; give the IANA media type, e.g. application/xml", at())
        elif not MIME_RE.match(mime.strip()):
            self.fail(ids["MIMETYPE"], f"MIMETYPE {mime!r} is not an IANA media type (type/subtype)", at())
        elif not known_mime(mime):
            self.fail(ids["MIMETYPE"], f"MIMETYPE {mime!r} is not a registered media type we know of; "
                      "check the spelling", at(), Severity.WARNING)
        size = el.get("SIZE")
        if blank(size):
            self.fail(ids["SIZE"], "@SIZE is missing; give the file size in bytes", at())
        created = el.get("CREATED")
        if blank(created):
            self.fail(ids["CREATED"], "@CREATED is missing; give the file's creation date and time", at())
        checksum = el.get("CHECKSUM")
        ctype = el.get("CHECKSUMTYPE")
        if blank(checksum):
            self.fail(ids["CHECKSUM"], "@CHECKSUM is missing", at())
        if blank(ctype):
            self.fail(ids["CHECKSUMTYPE"], "@CHECKSUMTYPE is missing (SHA-256 recommended)", at())
        for hook in self._reference_hooks:
            self.run(hook, doc, el, locat)
        href = locat.get(f"{XL}href")
        if blank(href):
            self.fail(ids["HREF"], "xlink:href is missing; give the file's path relative to this METS", at())
            return None
        path, why = resolve_href(href, doc.base)
        if path is None:
            self.fail(ids["HREF"], f"xlink:href {href!r} {why}", at())
            return None
        self.referenced.add(path)
        if not self.integrity:
            return path
        if not self.pkg.is_file(path):
            ci = self.file_ci(path)
            if ci is None:
                self.fail(ids["HREF"], f"xlink:href {href!r} does not resolve to a file in the package"
                          f"{self.nearest(path, href)}", at())
                return path
            # The specification does not say whether hrefs are case-sensitive and the official
            # corpus has valid packages that rely on case-insensitive file systems; we warn,
            # because such a package breaks on Linux, and check the file that matches.
            self.fail(ids["HREF"], f"xlink:href {href!r} matches {ci!r} only when case is ignored; "
                      "fix the case so the package works on every file system", at(), Severity.WARNING)
            self.referenced.add(ci)
            path = ci
        actual = self.pkg.size(path)
        if not blank(size):
            if not size.strip().isdigit():
                self.fail(ids["SIZE"], f"SIZE {size!r} is not a number of bytes", at())
            elif int(size) != actual:
                self.fail(ids["SIZE"], f"SIZE {size} but {path} has {actual} bytes", at())
        if not blank(checksum) and not blank(ctype):
            try:
                digest = self.digest(path, ctype.strip())
            except UnsafeArchive as exc:
                # A member that cannot be read whole (bad CRC, corrupt or cut-off data) fails its
                # fixity check; the rest of the package is still checked.
                self.fail(ids["CHECKSUM"], f"{safe_name(path)} cannot be read to verify its checksum: "
                          f"{exc.rule}", at())
                return path
            if digest is None:
                self.fail(ids["CHECKSUMTYPE"], f"CHECKSUMTYPE {ctype!r} cannot be verified here; use SHA-256",
                          at(), Severity.INFO)
            elif digest.lower() != checksum.strip().lower():
                self.fail(ids["CHECKSUM"], f"{ctype} of {path} is {digest}, not {checksum.strip()}", at())
        return path

    def digest(self, path: str, ctype: str) -> str | None:
        upper = ctype.upper()
        key = path if upper == "SHA-256" else (path, upper)
        known = self.hashes.get(key)
        if known is not None:
            return known.hex()
        algo = HASHES.get(upper)
        if algo is None and upper not in ("CRC32", "ADLER-32"):
            return None
        h = hashlib.new(algo) if algo else None
        running = 0 if upper == "CRC32" else 1
        view = self._view
        with self.pkg.open(path) as fh:
            while n := fh.readinto(view):  # one reused buffer: no allocation per chunk
                chunk = view[:n]
                if h is not None:
                    h.update(chunk)
                elif upper == "CRC32":
                    running = zlib.crc32(chunk, running)
                else:
                    running = zlib.adler32(chunk, running)
                self.report.bytes_checked += n
        self.report.files_checked += 1
        raw = h.digest() if h is not None else (running & 0xFFFFFFFF).to_bytes(4, "big")
        self.hashes[key] = raw
        return raw.hex()

    def file_ci(self, path: str) -> str | None:
        if self._lower_files is None:
            self._lower_files = {}
            for p in self.pkg.files():
                self._lower_files.setdefault(p.lower(), p)
        return self._lower_files.get(path.lower())

    def nearest(self, path: str, href: str) -> str:
        """'; nearest match …' with why the href misses it, or '' when nothing is close."""
        import difflib
        files = self.pkg.files()
        if "+" in path and self.pkg.is_file(path.replace("+", " ")):
            return (f"; nearest match {path.replace('+', ' ')!r}: '+' is not an encoded space in a URI path "
                    "(write %20 or the space itself)")
        if "+" in path and (ci := self.file_ci(path.replace("+", " "))):
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

    def dir_ci(self, folder: str) -> bool:
        """A folder of that path exists, comparing case-insensitively (as the corpus and spec allow)."""
        if self.pkg.is_dir(folder):
            return True
        low = folder.lower()
        return any(x.lower() == low for x in self.pkg.dirs)

    def check_status(self, el, rid: str, d: str) -> None:
        status = el.get("STATUS")
        if status is None:
            self.fail(rid, "no @STATUS (CURRENT or SUPERSEDED recommended)", locate(d, el))
        elif status not in self.vocab("CSIPVocabularyStatus"):
            self.fail(rid, f"STATUS {status!r} is not CURRENT or SUPERSEDED", locate(d, el), Severity.ERROR)

    def check_cit(self, cit: str, other: str | None, rid: str, other_rid: str, d: str) -> None:
        vocab = self.vocab("CSIPVocabularyContentInformationType")
        if cit not in vocab:
            self.fail(rid, f"CONTENTINFORMATIONTYPE {cit!r} is not in the vocabulary", d, Severity.ERROR)
        elif cit == "OTHER":
            if blank(other):
                # CSIP5/CSIP63 are the requirements that demand the companion attribute.
                self.fail(other_rid, f'CONTENTINFORMATIONTYPE="OTHER" ({rid}) needs a non-empty '
                          "csip:OTHERCONTENTINFORMATIONTYPE", d, Severity.ERROR)
            elif other.strip() in vocab:
                self.fail(other_rid, f"OTHERCONTENTINFORMATIONTYPE {other!r} is a vocabulary value; "
                          "use it as CONTENTINFORMATIONTYPE instead", d, Severity.ERROR)
        if other is not None and cit != "OTHER":
            self.fail(other_rid, 'OTHERCONTENTINFORMATIONTYPE is only allowed with CONTENTINFORMATIONTYPE="OTHER"',
                      d, Severity.ERROR)

    def metadata_files(self, kind: str) -> list[str]:
        """Files in metadata/<kind>/ of the package and of each representation."""
        out = []
        for p in self.pkg.files():
            parts = p.split("/")
            if parts[:2] == ["metadata", kind] or (
                len(parts) > 4 and parts[0] == "representations" and parts[2:4] == ["metadata", kind]
            ):
                out.append(p)
        return out
