"""Format identification (PRONOM, via opf-fido in-process) and the format policy.

Every file of a package is identified once, in one batch per package: a single
:class:`Identifier` loads fido's PRONOM signatures once and then reads each file's first and
last bytes (no process per file). Each identification says *how* it was made — a byte
signature, a container signature (OOXML, OLE2) or only the file name's extension — because
the policy trusts an extension only for formats that have no signature (plain text, CSV).

Two things fido does not tell, and which decide whether a PDF can be preserved, are checked
here directly: whether the PDF is encrypted (an ``/Encrypt`` entry in its trailer) and which
PDF/A part and conformance its XMP metadata claims (``pdfaid:part``).

The :class:`FormatPolicy` maps a PUID to *accept*, *convert* (to a target) or *reject*; the
default lives in ``transforms/policies/format-policy.yaml`` and a system's YAML may override
single formats (``format_policy:``).
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import yaml

from .errors import ConfigError

#: PRONOM PUIDs of PDF/A, by (part, conformance): the ones a claim in XMP maps to
PDFA_PUIDS = {("1", "A"): "fmt/95", ("1", "B"): "fmt/354", ("2", "A"): "fmt/476", ("2", "B"): "fmt/477",
              ("2", "U"): "fmt/478", ("3", "A"): "fmt/479", ("3", "B"): "fmt/480", ("3", "U"): "fmt/481"}
#: PRONOM PUIDs of PDF (any version, PDF/A included): the files we look into for encryption and XMP
PDF_PUIDS = frozenset({"fmt/14", "fmt/15", "fmt/16", "fmt/17", "fmt/18", "fmt/19", "fmt/20", "fmt/276",
                       "fmt/1129", "fmt/144", "fmt/145", "fmt/146", "fmt/147", "fmt/148", "fmt/157", "fmt/158",
                       "fmt/488", "fmt/489", "fmt/490", "fmt/491", "fmt/492", "fmt/493", *PDFA_PUIDS.values()})
UNIDENTIFIED = "UNIDENTIFIED"
_CHUNK = 1 << 20
_XMP = re.compile(rb"<x:xmpmeta.*?</x:xmpmeta>", re.S)
_PDFA_PART = re.compile(rb"pdfaid:part\s*(?:=\s*[\"']|>)\s*(\d)")
_PDFA_CONF = re.compile(rb"pdfaid:conformance\s*(?:=\s*[\"']|>)\s*([ABUabu])")


@dataclass(frozen=True)
class Identification:
    """What one file is, and how we know."""

    puid: str  # PRONOM identifier, or UNIDENTIFIED
    name: str  # PRONOM format name ("" when unidentified)
    version: str  # PRONOM format version ("" when PRONOM has none)
    mime: str  # the MIME type PRONOM gives ("" when none)
    method: str  # signature | container | extension | none
    tool: str  # e.g. "fido 1.6.1 (PRONOM v109)"
    encrypted: bool = False
    pdfa: str | None = None  # "2B" when the XMP claims PDF/A-2b
    note: str = ""

    @property
    def identified(self) -> bool:
        return self.puid != UNIDENTIFIED

    @property
    def label(self) -> str:
        """Human-readable: ``fmt/477 PDF/A-2b``."""
        name = f"{self.name} {self.version}".strip() if self.name else "unidentified"
        return f"{self.puid} {name}" if self.identified else name

    def to_dict(self) -> dict:
        return asdict(self)


def _fido_versions(conf_dir: Path) -> tuple[str, str, str]:
    """The signature files fido ships (its versions.xml names them) and the PRONOM version."""
    root = ET.parse(conf_dir / "versions.xml").getroot()  # noqa: S314 - fido's own installed file
    return (root.findtext("pronomSignature") or "", root.findtext("pronomContainerSignature") or "",
            root.findtext("pronomVersion") or "")


class Identifier:
    """One loaded fido: identify many files without reloading the signatures.

    fido reports through a callback; we collect each file's matches and pick one: PRONOM's
    priority order is already applied by fido, so the first match wins; an extension-only
    result says so in ``method``.
    """

    def __init__(self) -> None:
        import fido
        from fido import fido as fido_module

        conf = Path(fido.CONFIG_DIR)
        signatures, containers, pronom = _fido_versions(conf)
        self._matches: list[tuple[Any, Any]] = []
        self._kind = "none"
        self._fido = fido_module.Fido(quiet=True, handle_matches=self._collect,
                                      format_files=[signatures, "format_extensions.xml"])
        self._fido.containersignature_file = containers
        # fido re-reads the container signatures for every OOXML/OLE2 file; they never change
        # while it is loaded, so extract them once per container type (DOCX: 63 -> ~10 ms a file).
        extract, extracted = self._fido.extract_signatures, {}

        def extract_once(doc, signature_type="ZIP"):
            if signature_type not in extracted:
                extracted[signature_type] = extract(doc, signature_type=signature_type)
            return extracted[signature_type]

        self._fido.extract_signatures = extract_once
        self.tool_name = "fido"
        self.tool_version = fido.__version__
        self.signature_version = f"PRONOM v{pronom}"
        self.tool = f"fido {fido.__version__} ({self.signature_version})"

    def _collect(self, _fullname: str, matches: list, _delta: float, matchtype: str = "") -> None:
        # fido may call back more than once for one file (container after signature): keep the
        # most specific result, which is the container's when there is one.
        if matches and (not self._matches or matchtype == "container"):
            self._matches = list(matches)
            self._kind = matchtype or "signature"

    def identify(self, path: Path | str) -> Identification:
        """Identify one file (signature, then container, then extension)."""
        path = Path(path)
        self._matches, self._kind = [], "none"
        if not path.is_file() or path.stat().st_size == 0:
            return Identification(UNIDENTIFIED, "", "", "", "none", self.tool,
                                  note="empty file" if path.is_file() else "no such file")
        self._fido.identify_file(str(path))
        if not self._matches:
            ident = Identification(UNIDENTIFIED, "", "", "", "none", self.tool,
                                   note="no PRONOM signature or extension matched")
        else:
            fmt, _sig = self._matches[0]
            method = {"signature": "signature", "container": "container"}.get(self._kind, "extension")
            ident = Identification(fmt.findtext("puid") or UNIDENTIFIED, fmt.findtext("name") or "",
                                   fmt.findtext("version") or "", fmt.findtext("mime") or "", method, self.tool)
        if ident.puid in PDF_PUIDS or _starts_with(path, b"%PDF-"):
            ident = _pdf_details(path, ident)
        return ident

    def identify_all(self, paths: Iterable[Path | str]) -> dict[str, Identification]:
        """Identify many files with the same loaded signatures: ``{str(path): Identification}``."""
        return {str(p): self.identify(p) for p in paths}


def _starts_with(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(magic)) == magic


def pdf_facts(path: Path | str) -> tuple[bool, str | None]:
    """(encrypted, PDF/A claim such as "2B") of a PDF, reading it once in 1 MiB chunks.

    An encrypted PDF names an ``/Encrypt`` dictionary in its trailer (PDF 32000-1, 7.6.1);
    a PDF/A declares itself in XMP (``pdfaid:part`` and ``pdfaid:conformance``, ISO 19005).
    The XMP packet of PDF/A is uncompressed by definition (ISO 19005-1, 6.7.2 forbids
    filtering it), so a byte scan finds it; the overlap keeps matches across chunk edges.
    """
    encrypted = False
    part = conf = None
    tail = b""
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            window = tail + chunk
            if b"/Encrypt" in window:
                encrypted = True
            for xmp in _XMP.finditer(window):
                p, c = _PDFA_PART.search(xmp.group(0)), _PDFA_CONF.search(xmp.group(0))
                if p:
                    part = p.group(1).decode()
                    conf = c.group(1).decode().upper() if c else conf
            tail = window[-65536:]
    return encrypted, (f"{part}{conf or ''}" if part else None)


def _pdf_details(path: Path, ident: Identification) -> Identification:
    encrypted, pdfa = pdf_facts(path)
    puid, name, version = ident.puid, ident.name, ident.version
    note = ident.note
    if pdfa and (pdfa[0], pdfa[1:]) in PDFA_PUIDS and puid not in PDFA_PUIDS.values():
        # fido's PDF/A signatures need the XMP within its read buffer; the XMP claim is the
        # same evidence, read from the whole file.
        puid = PDFA_PUIDS[(pdfa[0], pdfa[1:])]
        name, version = "Acrobat PDF/A - Portable Document Format", f"{pdfa[0]}{pdfa[1:].lower()}"
        note = f"PDF/A-{pdfa[0]}{pdfa[1:].lower()} claimed in XMP (pdfaid); fido said {ident.puid}"
    return Identification(puid, name, version, ident.mime or "application/pdf", ident.method, ident.tool,
                          encrypted=encrypted, pdfa=pdfa, note=note)


# --- policy ------------------------------------------------------------------------------------

ACTIONS = ("accept", "convert", "reject")


@dataclass(frozen=True)
class Decision:
    """What the policy says about one identified file."""

    action: str  # accept | convert | reject
    reason: str
    target: str | None = None  # convert: e.g. "pdfa-2b"
    warn: bool = False  # accepted, but the archivist should know (listed as a PREMIS warning)


@dataclass(frozen=True)
class Rule:
    action: str
    target: str | None = None
    note: str = ""
    warn: bool = False
    trust_extension: bool = False


@dataclass(frozen=True)
class FormatPolicy:
    """Per PUID: accept, convert to a target, or reject; plus what to do with the unknown."""

    name: str
    rules: Mapping[str, Rule]
    unidentified: Rule
    unlisted: Rule
    encrypted: Rule

    def decide(self, ident: Identification) -> Decision:
        """The policy's verdict on one file."""
        if ident.encrypted:
            return Decision(self.encrypted.action, f"encrypted PDF: {self.encrypted.note}".rstrip(": "))
        if not ident.identified:
            r = self.unidentified
            return Decision(r.action, f"format not identified ({ident.note}): {r.note}".rstrip(": "), r.target,
                            r.warn)
        rule = self.rules.get(ident.puid)
        if ident.method == "extension" and (rule is None or not rule.trust_extension):
            r = self.unidentified
            return Decision(r.action, f"{ident.label} only by its file name's extension, and the policy does not "
                                      f"trust the extension for it: {r.note}".rstrip(": "), r.target, r.warn)
        if rule is None:
            r = self.unlisted
            return Decision(r.action, f"{ident.label} is not in format policy {self.name}: {r.note}".rstrip(": "),
                            r.target, r.warn)
        return Decision(rule.action, f"{ident.label}: {rule.note}".rstrip(": "), rule.target, rule.warn)

    def with_overrides(self, overrides: Mapping[str, Any] | None, where: str = "format_policy") -> FormatPolicy:
        """This policy with a system's overrides applied (same keys as the policy file)."""
        if not overrides:
            return self
        rules = dict(self.rules)
        rules.update(_rules(overrides.get("formats") or {}, f"{where}.formats"))
        special = {k: _rule(overrides[k], f"{where}.{k}") if k in overrides else getattr(self, k)
                   for k in ("unidentified", "unlisted", "encrypted")}
        return FormatPolicy(name=f"{self.name}+{overrides.get('name', 'system')}", rules=rules, **special)


def _rule(data: Any, where: str) -> Rule:
    if isinstance(data, str):
        data = {"action": data}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping with 'action' or one of {ACTIONS}")
    action = data.get("action")
    if action not in ACTIONS:
        raise ConfigError(f"{where}.action: {action!r} is not one of {ACTIONS}")
    target = data.get("target")
    if action == "convert" and target not in CONVERSION_TARGETS:
        raise ConfigError(f"{where}.target: {target!r} is not one of {sorted(CONVERSION_TARGETS)}")
    return Rule(action=action, target=target, note=str(data.get("note", "")).strip(), warn=bool(data.get("warn")),
                trust_extension=bool(data.get("trust_extension")))


def _rules(data: Any, where: str) -> dict[str, Rule]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of PUID to rule")
    return {str(puid): _rule(r, f"{where}.{puid}") for puid, r in data.items()}


#: what ``convert`` may name: the target and the LibreOffice PDF/A version it means
CONVERSION_TARGETS = {"pdfa-1b": 1, "pdfa-2b": 2}


def load_policy(path: Path | str | None = None) -> FormatPolicy:
    """The policy in ``path``, or the default shipped with Arkivflöde."""
    if path is None:
        text = importlib.resources.files("transforms").joinpath("policies/format-policy.yaml").read_text("utf-8")
        where = "transforms/policies/format-policy.yaml"
    else:
        text, where = Path(path).read_text(encoding="utf-8"), str(path)
    data = yaml.safe_load(text)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: not a format policy")
    try:
        return FormatPolicy(name=str(data.get("name", "default")), rules=_rules(data.get("formats") or {}, where),
                            unidentified=_rule(data.get("unidentified", "reject"), f"{where}: unidentified"),
                            unlisted=_rule(data.get("unlisted", "reject"), f"{where}: unlisted"),
                            encrypted=_rule(data.get("encrypted", "reject"), f"{where}: encrypted"))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


_DEFAULT: FormatPolicy | None = None


def default_policy() -> FormatPolicy:
    """The shipped default policy (parsed once per process)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_policy()
    return _DEFAULT


def policy_for(overrides: Mapping[str, Any] | None) -> FormatPolicy:
    """The default policy with a system's ``format_policy`` overrides."""
    return default_policy().with_overrides(overrides)


__all__ = ["CONVERSION_TARGETS", "Decision", "FormatPolicy", "Identification", "Identifier", "PDFA_PUIDS",
           "UNIDENTIFIED", "default_policy", "load_policy", "pdf_facts", "policy_for"]
