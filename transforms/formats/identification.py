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

import contextlib
import functools
import gc
import importlib.resources
import os
import re
import re._constants as _sre
import re._parser as _sre_parser
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import yaml

from transforms.common.errors import ConfigError

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


_BOF, _EOF, _SEARCH_BOF, _ERROR = 0, 1, 2, 3
#: bytes too common at a fixed offset to be worth indexing a signature under, if it has another
_COMMON = frozenset({0x00, 0x20, 0xFF})
#: the shortest literal that rules out a signature already indexed by a byte (shorter ones: too common to be worth it)
_FILTER_LITERAL = 4
#: a literal's "last possible offset" when it may be anywhere in the buffer
_ANYWHERE = 1 << 40


def _required_literals(regex: bytes, anchored: bool) -> tuple[list[tuple[int, int]], list[tuple[int, int, bytes]]]:
    """What every match of ``regex`` must contain: ``(offset, byte)`` for the literal bytes at a
    fixed offset, and ``(first, last, literal)`` for each run of literal bytes in the pattern's
    top-level sequence, which starts somewhere from offset ``first`` to ``last`` (after
    ``.{0,1024}``, say; ``last`` is :data:`_ANYWHERE` after an item of unbounded width).

    ``anchored``: the pattern is matched at position 0 (fido's BOF); otherwise it is searched for
    anywhere and only the literals themselves are known (no offsets). Items inside groups,
    branches and repeats are not looked into: what they need is not required of every match.
    """
    parsed = _sre_parser.parse(regex)
    if parsed.state.flags & re.IGNORECASE:
        return [], []
    fixed, windows = [], []
    lo, hi = 0, (0 if anchored else _ANYWHERE)  # where the next item can start
    run, run_at = bytearray(), (0, 0)
    for item in parsed.data:
        op, av = item
        if op is _sre.LITERAL:
            if lo == hi:
                fixed.append((lo, av))
            if not run:
                run_at = (lo, hi)
            run.append(av)
            lo, hi = lo + 1, min(hi + 1, _ANYWHERE)
            continue
        if run:
            windows.append((*run_at, bytes(run)))
            run = bytearray()
        width_lo, width_hi = _sre_parser.SubPattern(parsed.state, [item]).getwidth()
        lo = lo + width_lo
        hi = _ANYWHERE if width_hi >= _sre.MAXREPEAT else min(hi + width_hi, _ANYWHERE)
    if run:
        windows.append((*run_at, bytes(run)))
    return fixed, windows


def _fast(regex: bytes, compiled: re.Pattern) -> Any:
    r"""``compiled.search``, or for a pattern anchored at the end, the same answer from one ``rfind``.

    fido's end-of-file signatures are mostly a literal within the last N bytes of a buffer of
    up to 128 KiB (``\xff\xd9.{0,65536}\Z``, JPEG's end-of-image marker); the regex engine
    tries every occurrence of the literal's first byte, ``rfind`` scans once at C speed.
    """
    try:
        parsed = _sre_parser.parse(regex)
    except re.error:
        return compiled.search
    tail = None if parsed.state.flags & re.IGNORECASE else _literal_then_end(list(parsed.data), parsed.state.flags)
    if tail is None:
        return compiled.search
    literal, least, most = tail

    def at_end(buf: bytes) -> bool:
        # the literal starts at p with least <= len(buf) - (p + len(literal)) <= most
        end = len(buf) - least
        if end < len(literal):  # (a negative end would count from the end of the buffer)
            return False
        start = 0 if most is None else max(0, len(buf) - most - len(literal))
        return buf.rfind(literal, start, end) >= 0
    return at_end


def _literal_then_end(items: list, flags: int) -> tuple[bytes, int, int | None] | None:
    r"""(literal, least, most) for a pattern ``literal.{least,most}\Z`` (``most`` None: unbounded), else None."""
    literal = bytearray()
    while items and items[0][0] is _sre.LITERAL:
        literal.append(items.pop(0)[1])
    if not literal or not items or items[-1] != (_sre.AT, _sre.AT_END_STRING):
        return None
    middle = items[:-1]
    if not middle:
        return bytes(literal), 0, 0
    if len(middle) != 1 or middle[0][0] not in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) or not flags & re.DOTALL:
        return None
    least, most, sub = middle[0][1]
    if list(sub.data) != [(_sre.ANY, None)]:
        return None
    return bytes(literal), least, None if most >= _sre.MAXREPEAT else most


class _LiteralFinder:
    """Which of many literal checks hold for a file: check ``n`` is ``(n, buffer, start, end,
    literal)``, "``literal`` occurs in the first (buffer 0) or last (1) bytes between offsets
    ``start`` and ``end``", the same answer as ``buf.find(literal, start, end) >= 0``.

    A check of a long literal over a wide range is answered by one Aho-Corasick pass (ahocorasick-rs,
    in Rust) over all such literals: one ``bytes.find`` per check cost 110-180 µs a file on the
    benchmark corpus and 430 µs a JPEG, most of it in the 21 checks that search a whole buffer
    of up to 128 KiB, scanned once per literal; the pass, with 4 times as many checks, costs
    35-45 µs (bench/README.md). A one-byte literal (which the automaton would report at every
    occurrence) or a narrow range keeps its ``bytes.find``, which looks at a few bytes only.
    """

    #: checks of literals at least this long over ranges wider than :data:`WIDE` bytes go to the automaton
    LONG, WIDE = 2, 64

    def __init__(self, checks: Sequence[tuple[int, int, int, int, bytes]]) -> None:
        import ahocorasick_rs

        def is_narrow(check: tuple[int, int, int, int, bytes]) -> bool:
            return len(check[4]) < self.LONG or check[3] - check[2] <= self.WIDE

        def scan(wide: list) -> tuple[Any, list[list[tuple[int, int, int]]], int] | None:
            """(automaton, per literal [(check, start, end)], how many bytes to scan) for ``wide``."""
            if not wide:
                return None
            literals = sorted({c[4] for c in wide})
            at = {lit: i for i, lit in enumerate(literals)}
            checks_of: list[list[tuple[int, int, int]]] = [[] for _ in literals]
            for n, _, start, end, literal in wide:
                checks_of[at[literal]].append((n, start, end))
            # A DFA, always: left to choose, ahocorasick-rs takes an NFA above ~100 literals, 3x slower here
            automaton = ahocorasick_rs.BytesAhoCorasick(literals, implementation=ahocorasick_rs.Implementation.DFA)
            return automaton, checks_of, max(c[3] for c in wide)

        self.narrow = [c for c in checks if is_narrow(c)]
        wide = [c for c in checks if not is_narrow(c)]
        #: one pass each over the first and the last bytes; a file that fits in one buffer (both
        #: are the same bytes) gets one pass of ``both`` instead: the scan costs per byte, not per literal
        self.passes = [scan([c for c in wide if c[1] == buf]) for buf in (0, 1)]
        self.both = scan(wide)

    def present(self, bof: bytes, eof: bytes) -> set[int]:
        """The checks that hold for a file whose first and last bytes are ``bof`` and ``eof``."""
        found = {n for n, buf, start, end, literal in self.narrow
                 if (eof if buf else bof).find(literal, start, end) >= 0}
        scans = [(self.both, bof)] if eof is bof else [(self.passes[0], bof), (self.passes[1], eof)]
        for scan, hay in scans:
            if scan is None:
                continue
            automaton, checks_of, limit = scan
            for i, s, e in automaton.find_matches_as_indexes(hay if limit >= len(hay) else memoryview(hay)[:limit],
                                                             overlapping=True):
                for n, start, end in checks_of[i]:
                    if start <= s and e <= end:
                        found.add(n)
        return found


class _Matcher:
    """fido's signature matching (``Fido.match_formats``) with its regexes compiled once and the
    formats indexed by a byte that each of their BOF signatures requires at a fixed offset.

    fido walks all ~2,300 formats for every file, looking each pattern up in ElementTree and
    matching it through ``re``'s cache (which its 2,299 patterns overflow); almost every format
    starts with fixed bytes, so most cannot match a given file's first bytes. Only formats that
    can are tried, in fido's order and with fido's priority rule, so the result is fido's: a
    skipped format is one fido would have tried and found no match for. A signature without such
    a byte (``.{0,1024}<!DOCTYPE``, or one searched for anywhere, ``0\nSECTION`` of DXF) is
    checked for the longest literal one of its patterns needs, in that pattern's buffer and range
    of offsets: all such checks are answered together (:class:`_LiteralFinder`), and only the formats whose
    literal is there are tried (before, every one of 180 such formats was walked for every file:
    270 of 340 µs a file). fido gives up on a format at a pattern that raises; such a format is
    always tried in full, pattern by pattern, as fido would.
    """

    def __init__(self, fido: Any) -> None:
        self.formats = fido.formats
        self.priority = fido.puid_has_priority_over_map
        self.puids = [f.find("puid").text for f in self.formats]
        # fido's as_good_as_any(f, matches) is "no other format among the matches has priority over f":
        # per format, the formats that have priority over it
        index_of = defaultdict(list)
        for i, puid in enumerate(self.puids):
            index_of[puid].append(i)
        self.beaten_by: list[frozenset[int]] = [frozenset() for _ in self.formats]
        beaten: dict[int, set[int]] = defaultdict(set)
        for j, puid in enumerate(self.puids):
            for inferior in self.priority[puid]:
                for i in index_of.get(inferior, ()):
                    if i != j:
                        beaten[i].add(j)
        for i, over in beaten.items():
            self.beaten_by[i] = frozenset(over)
        # per format: [(signature name, (offset, byte) or None, literal check or None, [(kind, compiled)])]
        self.signatures: list[list[tuple[str | None, tuple[int, int] | None, int | None, list]]] = []
        always: list[int] = []
        index: dict[tuple[int, int], list[int]] = defaultdict(list)
        # literal checks: (buffer, start, end, literal): "literal occurs in bof (0) or eof (1) between start and end"
        needs: dict[tuple[int, int, int, bytes], int] = {}
        by_need: dict[int, list[int]] = defaultdict(list)
        for i, fmt in enumerate(self.formats):
            sigs, failing = [], False
            for sig in fmt.findall("signature"):
                ops, keys, windows = [], [], []
                for pat in sig.findall("pattern"):
                    try:
                        pos = pat.find("position").text
                        regex = pat.find("regex").text.encode("utf8")
                        compiled = re.compile(regex)
                    except Exception:  # noqa: BLE001 - fido gives up on the format at this pattern, so do we
                        ops.append((_ERROR, None))
                        failing = True
                        break
                    if pos == "BOF":
                        ops.append((_BOF, compiled.match))
                        fixed, found = _required_literals(regex, anchored=True)
                        keys += fixed
                        windows += [(0, *w) for w in found]
                    elif pos in ("EOF", "VAR", "IFB"):
                        ops.append((_EOF if pos == "EOF" else _SEARCH_BOF, _fast(regex, compiled)))
                        _, found = _required_literals(regex, anchored=False)
                        windows += [(1 if pos == "EOF" else 0, *w) for w in found]
                    # any other position: fido ignores the pattern
                rare = [k for k in keys if k[1] not in _COMMON]
                key = (rare or keys or [None])[0]
                # without a byte to index it by: the longest literal it needs (in a range of offsets
                # of the first or last bytes), looked for (_LiteralFinder) before any regex runs
                longest = max(windows, key=lambda w: (len(w[3]), -w[2]), default=None)
                if key is not None:
                    # Indexed by a byte, it is tried for every file with that byte (every PDF is tried
                    # for 56 formats); a long literal it needs somewhere in a wide range (PDF/X's
                    # "/GTS_PDFXVersion", Illustrator's "%AI5_FileFormat 5" after .{0,32000}) rules it
                    # out by the same Aho-Corasick pass, before its regexes scan that range.
                    longest = max((w for w in windows if w[1] != w[2] and len(w[3]) >= _FILTER_LITERAL
                                   and w[2] + len(w[3]) - w[1] > _LiteralFinder.WIDE),
                                  key=lambda w: (len(w[3]), -w[2]), default=None)
                need = None
                if longest:
                    buf, first, last, literal = longest
                    need = needs.setdefault((buf, first, min(last + len(literal), _ANYWHERE), literal), len(needs))
                sigs.append((sig.findtext("name"), key, need, ops))
            if failing:  # evaluated exactly as fido does, no signature skipped
                sigs = [(name, None, None, ops) for name, _, _, ops in sigs]
            self.signatures.append(sigs)
            if not sigs:
                continue  # a format without signatures matches by extension only
            if failing or any(key is None and need is None for _, key, need, _ in sigs):
                always.append(i)
                continue
            for key in {key for _, key, _, _ in sigs if key is not None}:
                index[key].append(i)
            for need in {need for _, key, need, _ in sigs if key is None}:
                by_need[need].append(i)
        self.always = always
        self.index = dict(index)
        self.offsets = sorted({off for off, _ in index})
        #: [(need, buffer, start, end, literal, formats)], in need order
        self.needs = [(n, *check, tuple(by_need.get(n, ()))) for check, n in needs.items()]
        self._finder = _LiteralFinder([(n, buf, start, end, literal) for n, buf, start, end, literal, _ in self.needs])
        self.need_formats = {n: formats for n, *_, formats in self.needs}
        self.extensions: dict[str, list[int]] = defaultdict(list)
        for i, fmt in enumerate(self.formats):
            for ext in fmt.findall("extension"):
                if ext.text is not None and i not in self.extensions[ext.text]:
                    self.extensions[ext.text].append(i)

    def _best(self, result: list[tuple[int, str | None]]) -> list[tuple[Any, str | None]]:
        """fido's final filter: drop every match that another match has priority over."""
        matched = {i for i, _ in result}
        return [(self.formats[i], name) for i, name in result if self.beaten_by[i].isdisjoint(matched)]

    def match(self, bof: bytes, eof: bytes) -> list[tuple[Any, str | None]]:
        """``Fido.match_formats(bof, eof)``: the (format element, signature name) matches."""
        size = len(bof)
        candidates = set(self.always)
        for off in self.offsets:
            if off >= size:
                break
            found = self.index.get((off, bof[off]))
            if found:
                candidates.update(found)
        present = self._finder.present(bof, eof)
        for need in present:
            candidates.update(self.need_formats[need])
        result: list[tuple[int, str | None]] = []
        matched: set[int] = set()
        for i in sorted(candidates):
            if matched and not self.beaten_by[i].isdisjoint(matched):
                continue
            for name, key, need, ops in self.signatures[i]:
                if key is not None and (key[0] >= size or bof[key[0]] != key[1]):
                    continue  # fido's regex for that byte fails here
                if need is not None and need not in present:
                    continue  # nor where a literal it needs is missing
                for kind, fn in ops:
                    if kind == _ERROR:
                        break
                    if not fn(eof if kind == _EOF else bof):
                        break
                else:
                    result.append((i, name))
                    matched.add(i)
                    continue
                if kind == _ERROR:
                    break
        return self._best(result)

    def match_extension(self, filename: str) -> list[tuple[Any, str | None]]:
        """``Fido.match_extensions``: the formats whose extension the file name has."""
        ext = os.path.splitext(filename)[1].lower().lstrip(".")
        if not ext:
            return []
        return self._best([(i, "External") for i in self.extensions.get(ext, [])])


class Identifier:
    """One loaded fido: identify many files without reloading the signatures.

    fido's own per-file entry point (``Fido.identify_file``) walks every PRONOM format in
    ElementTree for every file and re-parses the container signature file for every OOXML/OLE2
    file; this class runs the same steps with the signatures compiled once (:class:`_Matcher`)
    and the container signatures parsed once, and takes fido's answer: PRONOM's priority order
    is already applied, so the first match wins; an extension-only result says so in ``method``.
    """

    def __init__(self) -> None:
        import fido
        from fido import fido as fido_module
        from fido.package import OlePackage, ZipPackage

        conf = Path(fido.CONFIG_DIR)
        signatures, containers, pronom = _fido_versions(conf)
        self._fido = fido_module.Fido(quiet=True, handle_matches=lambda *_a, **_k: None,
                                      format_files=[signatures, "format_extensions.xml"])
        self._fido.containersignature_file = containers
        self._containers = {"zip": ("ZIP", ZipPackage), "ole": ("OLE2", OlePackage)}
        self._container_doc: Any = None  # the container signature file, parsed on first need
        # fido re-reads the container signatures for every OOXML/OLE2 file; they never change
        # while it is loaded, so extract them once per container type (DOCX: 63 -> ~10 ms a file).
        extract, extracted = self._fido.extract_signatures, {}

        def extract_once(doc, signature_type="ZIP"):
            if signature_type not in extracted:
                extracted[signature_type] = extract(doc, signature_type=signature_type)
            return extracted[signature_type]

        self._fido.extract_signatures = extract_once
        self._matcher = _Matcher(self._fido)
        self.tool_name = "fido"
        self.tool_version = fido.__version__
        self.signature_version = f"PRONOM v{pronom}"
        self.tool = f"fido {fido.__version__} ({self.signature_version})"

    def _buffers(self, path: Path, size: int) -> tuple[bytes, bytes]:
        """The first and the last ``bufsize`` bytes (overlapping in a small file), as fido reads them."""
        bufsize = self._fido.bufsize
        with open(path, "rb") as fh:
            bof = fh.read(min(size, bufsize))
            unread = size - len(bof)
            if unread <= 0:
                return bof, bof
            if unread < bufsize:
                return bof, bof[unread:] + fh.read(unread)
            fh.seek(size - bufsize)
            return bof, fh.read(bufsize)

    def _match(self, path: Path, size: int) -> tuple[list, str, bytes]:
        """fido's ``identify_file`` for one file: (matches, how, first bytes); matches are (format, name)."""
        try:
            bof, eof = self._buffers(path, size)
            matches = self._matcher.match(bof, eof)
            container = self._fido.container_type(matches)
            if not self._fido.nocontainer and container in self._containers:
                if self._container_doc is None:
                    self._container_doc = ET.parse(  # noqa: S314 - fido's own installed file
                        Path(self._fido.conf_dir) / self._fido.containersignature_file)
                kind, package = self._containers[container]
                found = self._fido.match_container(kind, package, str(path), self._container_doc)
                if found:
                    return found, "container", bof
            if matches:
                return matches, "signature", bof
            return self._matcher.match_extension(str(path)), "extension", bof
        except OSError:  # fido reports the error and calls back with nothing
            return [], "none", b""

    def identify(self, path: Path | str) -> Identification:
        """Identify one file (signature, then container, then extension)."""
        path = Path(path)
        try:
            size = path.stat().st_size if path.is_file() else -1
        except OSError:
            size = -1
        if size <= 0:
            return Identification(UNIDENTIFIED, "", "", "", "none", self.tool,
                                  note="empty file" if size == 0 else "no such file")
        matches, kind, bof = self._match(path, size)
        if not matches:
            ident = Identification(UNIDENTIFIED, "", "", "", "none", self.tool,
                                   note="no PRONOM signature or extension matched")
        else:
            fmt, _sig = matches[0]
            ident = Identification(fmt.findtext("puid") or UNIDENTIFIED, fmt.findtext("name") or "",
                                   fmt.findtext("version") or "", fmt.findtext("mime") or "", kind, self.tool)
        if ident.puid in PDF_PUIDS or (bof.startswith(b"%PDF-") if bof else _starts_with(path, b"%PDF-")):
            ident = _pdf_details(path, ident, bof if len(bof) == size else None)
        return ident

    def identify_all(self, paths: Iterable[Path | str]) -> dict[str, Identification]:
        """Identify many files with the same loaded signatures: ``{str(path): Identification}``."""
        return {str(p): self.identify(p) for p in paths}

    @property
    def cache_version(self) -> str:
        """What a cached identification is valid for: fido's version and its PRONOM signatures,
        and the version of this module's own steps (the PDF checks, the matcher)."""
        return f"{self.tool}; rules {IDENTIFICATION_RULES}"

    def identify_stream(self, paths: Sequence[str], pool: IdentifyPool | None = None,
                        cache: IdentificationCache | None = None) -> Iterator[tuple[str, Identification]]:
        """``(path, identification)`` for every path, in the order given, as soon as each is known.

        With a ``pool`` the files are identified by its worker processes, a chunk at a time,
        while the caller goes on with the ones already answered (the package build copies them
        into the TAR); without one, or if the pool breaks, in this process. Same answers either way.

        With a ``cache`` the files are hashed (SHA-256, by the pool's workers when there is a
        pool) a window of :data:`CACHE_WINDOW` files at a time, each window's digests are looked
        up at once, and only files whose content was never identified with these signatures are
        identified; a content seen twice among ``paths`` is identified once. The next window is
        hashed by the workers while this one is answered, so the first answers do not wait for
        every file to be hashed. What was identified is stored in one go when the stream ends.
        """
        if cache is None:
            yield from self._stream(paths, pool)
            return
        base = self.cache_version
        pool = pool if len(paths) >= POOL_MIN_FILES else None
        windows = [paths[i:i + CACHE_WINDOW] for i in range(0, len(paths), CACHE_WINDOW)]
        fresh: dict[tuple[str, str], Identification] = {}
        hashing = [_start_digests(windows[0], pool, share=True)] if windows else []

        def hash_after(n: int) -> None:
            # once window n's identifications are all with the workers: they hash the next
            # window behind them, not ahead of the answers the build is waiting for
            if len(hashing) == n + 1 < len(windows):
                hashing.append(_start_digests(windows[n + 1], pool))

        try:
            for n, window in enumerate(windows):
                digests = hashing[n]()
                yield from self._cached_window(window, digests, pool, cache, base, fresh,
                                               functools.partial(hash_after, n))
                hash_after(n)
        except GeneratorExit:
            _store(cache, fresh)
            raise
        _store(cache, fresh)

    def _cached_window(self, paths: Sequence[str], digests: Sequence[str | None], pool: IdentifyPool | None,
                       cache: IdentificationCache, base: str, fresh: dict[tuple[str, str], Identification],
                       submitted: Callable[[], None] | None = None) -> Iterator[tuple[str, Identification]]:
        """:meth:`identify_stream` for one window whose digests are known; ``fresh`` collects what
        was identified (and answers repeats of it in later windows); ``submitted`` is called once
        every identification the window needs is with the workers."""
        by_name = [_name_version(base, p) for p in paths]
        known = cache.lookup({d for d in digests if d}, {base, *by_name})

        def cached(d: str | None, named: str) -> Identification | None:
            if d is None:
                return None
            return known.get((d, base)) or known.get((d, named)) or fresh.get((d, base)) or fresh.get((d, named))

        # A file whose content is known to be decided by its bytes, or known under its
        # extension, is not identified; a repeat of content seen earlier in ``paths`` is
        # identified only if the first one turned out to depend on its name
        seen: set[str] = set()
        todo: list[str] = []
        for p, d, named in zip(paths, digests, by_name, strict=True):
            if d is None or (cached(d, named) is None and d not in seen):
                todo.append(p)
                if d is not None:
                    seen.add(d)
        # ``todo`` is in the order of ``paths``: a file that needs identifying is always the next
        # one the stream answers
        if not todo and submitted is not None:
            submitted()
        stream = self._stream(todo, pool, submitted)
        try:
            for p, d, named in zip(paths, digests, by_name, strict=True):
                ident = cached(d, named)
                if ident is None and d in seen:
                    seen.discard(d)
                    _, ident = next(stream)
                    fresh[(d, base if ident.method in CONTENT_METHODS else named)] = ident
                elif ident is None:
                    # unreadable (no digest: never kept), or the same bytes under a name the first
                    # copy's extension-decided answer does not cover
                    ident = next(stream)[1] if d is None else self.identify(p)
                    if d is not None:
                        fresh[(d, base if ident.method in CONTENT_METHODS else named)] = ident
                yield p, ident
        finally:
            stream.close()

    def _stream(self, paths: Sequence[str], pool: IdentifyPool | None, submitted: Callable[[], None] | None = None
                ) -> Iterator[tuple[str, Identification]]:
        """``paths`` identified in order; ``submitted()`` is called once the last chunk is with the workers."""
        if pool is None or len(paths) < POOL_MIN_FILES:
            if submitted is not None:
                submitted()
            for p in paths:
                yield p, self.identify(p)
            return
        # Chunks are submitted a few ahead of the one being read, not all at once: each submit
        # wakes the executor's manager thread, and hundreds at the start held up the first copy.
        chunks = (list(paths[i:i + POOL_CHUNK]) for i in range(0, len(paths), POOL_CHUNK))
        ahead: deque[list] = deque()  # [chunk, its future, its answers once identified here]
        queued = max(POOL_AHEAD, 2 * pool.workers)
        more = True

        def top_up() -> None:
            # the workers keep ``queued`` chunks of their own however many this process took back
            nonlocal more
            while more and sum(1 for e in ahead if e[2] is None) < queued and len(ahead) < 2 * queued:
                chunk = next(chunks, None)
                if chunk is None:
                    more = False
                    if submitted is not None:
                        submitted()
                    return
                ahead.append([chunk, pool.submit(chunk), None])

        try:
            while True:
                top_up()
                if not ahead:
                    return
                chunk, future, answered = ahead.popleft()
                if answered is None:
                    answered = self._answers(chunk, future, pool, ahead, top_up)
                yield from zip(chunk, answered, strict=True)
        finally:
            for _, future, _ in ahead:
                future.cancel()  # a build that stopped early leaves no work queued

    def _answers(self, chunk: list[str], future: Any, pool: IdentifyPool, ahead: deque[list],
                 top_up: Callable[[], None]) -> list[Identification]:
        """A chunk's identifications, without waiting idle for a worker that is behind.

        A chunk no worker has taken yet is taken back and identified here. While a worker is on
        it (or it sits in the worker's queue), this process identifies the chunks queued after
        it that no worker has taken, the last first (no work done twice; the workers get new
        chunks in their place, so they are never left idle); only when there are
        none left does it identify this chunk itself, from its last file backwards, until the
        worker's answers are in (then they are used, or this process's if it got through
        first). The answers are the same whoever identifies a file.
        """
        if future.done():
            results = pool.result(future)
        elif future.cancel():
            results = None
        else:
            while not future.done():
                later = next((e for e in reversed(ahead) if e[2] is None and e[1].cancel()), None)
                if later is None:
                    break
                later[2] = []  # taken: no longer the workers'
                top_up()  # first, so that the workers are not left without work meanwhile
                later[2] = [self.identify(p) for p in later[0]]
            mine: list[Identification] = []
            for p in reversed(chunk):
                if future.done():
                    break
                mine.append(self.identify(p))
            if len(mine) == len(chunk):
                return mine[::-1]
            results = pool.result(future)
        if results is None:  # taken back, or the pool broke (a worker died): this chunk here
            results = [self.identify(p) for p in chunk]
        return results

    @classmethod
    def shared(cls) -> Identifier:
        """The process's one Identifier: loading and compiling the signatures takes about a second,
        and an Identifier keeps no state between files, so every build in a process can use it."""
        global _SHARED
        with _SHARED_LOCK:
            if _SHARED is None:
                _SHARED = cls()
            return _SHARED


_SHARED: Identifier | None = None
_SHARED_LOCK = threading.Lock()

#: how identifications are made that the file's bytes alone decide (cached by content)
CONTENT_METHODS = frozenset({"signature", "container"})
#: the version of this module's own identification steps (matcher, PDF checks): part of the
#: cache key beside fido's and PRONOM's, raised whenever they would answer differently
IDENTIFICATION_RULES = 1


class IdentificationCache:
    """Identifications kept by the SHA-256 of the content and a version string (what identified
    it: :attr:`Identifier.cache_version`, with the extension when the name decided); this base
    keeps them in memory, for one process."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], Identification] = {}

    def lookup(self, digests: Collection[str], versions: Collection[str]
               ) -> dict[tuple[str, str], Identification]:
        """``{(sha256, version): Identification}`` for what was identified before."""
        return {(d, v): self._known[(d, v)] for d in digests for v in versions if (d, v) in self._known}

    def store(self, found: Mapping[str, Mapping[str, Identification]]) -> None:
        """Keep ``{version: {sha256: Identification}}``, all or nothing."""
        for v, idents in found.items():
            for d, ident in idents.items():
                self._known.setdefault((d, v), ident)


class CatalogueIdentificationCache(IdentificationCache):
    """Identifications kept in the catalogue's ``format_identifications`` table, so that a rerun,
    a re-delivery or the same attachment in another batch is never identified again."""

    #: digests per lookup query (well below SQLite's limit of bound parameters)
    QUERY_DIGESTS = 10_000

    def __init__(self, catalogue: Any) -> None:
        super().__init__()
        self.catalogue = catalogue

    def lookup(self, digests: Collection[str], versions: Collection[str]
               ) -> dict[tuple[str, str], Identification]:
        import sqlalchemy as sa

        from transforms.catalogue import FormatIdentification as Row

        wanted, found = sorted(digests), {}
        with self.catalogue.engine.connect() as conn:
            for i in range(0, len(wanted), self.QUERY_DIGESTS):
                query = sa.select(Row.__table__).where(Row.signature_version.in_(sorted(versions)),
                                             Row.sha256.in_(wanted[i:i + self.QUERY_DIGESTS]))
                for r in conn.execute(query).mappings():
                    found[(r["sha256"], r["signature_version"])] = Identification(
                        r["puid"], r["name"], r["version"], r["mime"], r["method"], r["tool"],
                        encrypted=bool(r["encrypted"]), pdfa=r["pdfa"], note=r["note"])
        return found

    def store(self, found: Mapping[str, Mapping[str, Identification]]) -> None:
        from transforms.catalogue import FormatIdentification as Row

        rows = [{"sha256": d, "signature_version": v, "puid": i.puid, "name": i.name, "version": i.version,
                 "mime": i.mime, "method": i.method, "tool": i.tool, "encrypted": i.encrypted, "pdfa": i.pdfa,
                 "note": i.note} for v, idents in found.items() for d, i in idents.items()]
        if not rows:
            return
        dialect = self.catalogue.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - the catalogue runs on SQLite or PostgreSQL
            raise ConfigError(f"identification cache: catalogue dialect {dialect} is not supported")
        # Another build may have identified the same content meanwhile: its row is as good as ours
        statement = insert(Row).on_conflict_do_nothing(index_elements=["sha256", "signature_version"])
        with self.catalogue.engine.begin() as conn:
            conn.execute(statement, rows)


def _name_version(base: str, path: str) -> str:
    """The cache version of an identification the file's extension decided (or that found nothing,
    which a different extension could change)."""
    return f"{base}; extension {os.path.splitext(path)[1].lower()!r}"


def _store(cache: IdentificationCache, fresh: Mapping[tuple[str, str], Identification]) -> None:
    by_version: dict[str, dict[str, Identification]] = defaultdict(dict)
    for (d, version), ident in fresh.items():
        by_version[version][d] = ident
    if by_version:
        cache.store(by_version)


def _hash_file(path: str) -> str | None:
    """The file's SHA-256, or None when it cannot be read (identifying it says why)."""
    import hashlib

    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def _hash_chunk(paths: list[str]) -> list[str | None]:
    _read_ahead(paths)
    return [_hash_file(p) for p in paths]


def _start_digests(paths: Sequence[str], pool: IdentifyPool | None, *, share: bool = False
                   ) -> Callable[[], list[str | None]]:
    """Start hashing ``paths`` (SHA-256; None: unreadable) in the pool's workers; returns a
    function that gives the digests in order. Without a pool they are all hashed here, on call;
    ``share``: this process, which has nothing else to do until the digests are in, hashes its
    share (the last chunks) on call."""
    if pool is None:
        return lambda: [_hash_file(p) for p in paths]
    chunks = [list(paths[i:i + POOL_CHUNK]) for i in range(0, len(paths), POOL_CHUNK)]
    theirs = len(chunks) - len(chunks) // (pool.workers + 1) if share else len(chunks)
    calls = [pool.call(_hash_chunk, chunk) for chunk in chunks[:theirs]]
    return lambda: ([d for answer in calls for d in answer()]
                    + [_hash_file(p) for chunk in chunks[theirs:] for p in chunk])


#: worker processes that identify a package's files (``0``: identify in the building process)
WORKERS_ENV = "ARKIV_IDENTIFY_WORKERS"
#: fewer files than this are identified in the building process (0.4 ms a file: not worth a worker)
POOL_MIN_FILES = 200
#: files hashed and looked up in the identification cache at a time
CACHE_WINDOW = 2048
#: files per task sent to a worker (tens of ms of work, so the results come back in a steady stream;
#: each task costs the building process a hand-over to the executor's thread, so not fewer files)
POOL_CHUNK = 96
#: chunks submitted ahead of the one the build is reading (at least two per worker, so none waits)
POOL_AHEAD = 8


def _identify_chunk(paths: list[str]) -> list[Identification]:
    _read_ahead(paths)
    return [Identifier.shared().identify(p) for p in paths]


#: how much of each file of a chunk the worker asks the kernel to read ahead
READ_AHEAD = 8 << 20


def _read_ahead(paths: Sequence[str]) -> None:
    """Ask the kernel to start reading a chunk's files (their first :data:`READ_AHEAD` bytes) at
    once: the worker then identifies them, and the build copies them, from the page cache instead
    of waiting for the disk file by file. Only a hint; a file that cannot be opened is skipped
    (identifying it says why)."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)  # (a FIFO would block a plain open)
        except OSError:
            continue
        try:
            advise(fd, 0, READ_AHEAD, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def _die_with_parent() -> None:
    """Worker initializer: end when the building process ends, however it ends (Linux).

    A forked worker holds copies of its parent's open files, among them the catalogue's
    interval lock; a worker outliving a killed build would keep that lock.
    """
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pool's own shutdown ends the workers
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


_FROZEN = 0
_FROZEN_LOCK = threading.Lock()


def _freeze_heap() -> None:
    """While a pool runs, the objects that exist when it starts (fido's signatures, the loaded
    modules, hundreds of thousands of them) are left out of the cyclic garbage collector's full
    passes, which otherwise walk them all a few times a build; forked workers then also leave
    those pages shared. Objects created later are collected as usual, and everything is handed
    back to the collector when the last pool closes."""
    global _FROZEN
    with _FROZEN_LOCK:
        if _FROZEN == 0:
            gc.freeze()
        _FROZEN += 1


def _unfreeze_heap() -> None:
    global _FROZEN
    with _FROZEN_LOCK:
        _FROZEN -= 1
        if _FROZEN == 0:
            gc.unfreeze()


class IdentifyPool:
    """Worker processes for format identification, for the length of one build.

    Workers are forked from the building process after it has loaded fido's signatures
    (:meth:`Identifier.shared`), so they start in milliseconds and share those pages. Where a
    process cannot have children (a daemonic worker) or fork is missing, :meth:`start` returns
    None and identification stays in the building process.
    """

    def __init__(self, executor: Any, workers: int = 1) -> None:
        self._executor = executor
        self.workers = workers
        self.broken = False
        self._closed = False

    @classmethod
    def start(cls, workers: int | None = None) -> IdentifyPool | None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        n = configured_workers() if workers is None else workers
        if n <= 0 or "fork" not in multiprocessing.get_all_start_methods():
            return None
        Identifier.shared()  # loaded before the fork, so every worker inherits it
        _freeze_heap()
        executor = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("fork"),
                                       initializer=_die_with_parent)
        try:
            executor.submit(os.getpid).result(timeout=30)  # the workers really started
        except Exception:  # noqa: BLE001 - e.g. "daemonic processes are not allowed to have children"
            executor.shutdown(wait=False, cancel_futures=True)
            _unfreeze_heap()
            return None
        return cls(executor, n)

    def submit(self, chunk: list[str]):
        """A future for a chunk's identifications; one answering None (identify it in the caller)
        once the pool is broken."""
        from concurrent.futures import Future

        if not self.broken:
            try:
                return self._executor.submit(_identify_chunk, chunk)
            except Exception:  # noqa: BLE001 - BrokenProcessPool or shut down: identify here instead
                self.broken = True
        none: Future = Future()
        none.set_result(None)
        return none

    def result(self, future) -> list[Identification] | None:
        """A chunk's identifications, or None when the pool broke and the caller must do them."""
        from concurrent.futures.process import BrokenProcessPool

        try:
            return future.result()
        except BrokenProcessPool:
            self.broken = True
            return None

    def call(self, fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
        """Start ``fn(*args)`` in a worker (after the work already queued); returns a function that
        waits for its answer, or computes it in the caller if the pool is or becomes broken.

        For work the build would otherwise do while the workers sit idle, such as checking the
        documents it has written against their schemas. ``fn`` must be a module-level function.
        """
        from concurrent.futures.process import BrokenProcessPool

        if not self.broken:
            try:
                future = self._executor.submit(fn, *args)
            except Exception:  # noqa: BLE001 - BrokenProcessPool or shut down: do it in the caller
                self.broken = True
            else:
                def answer() -> Any:
                    while True:
                        try:
                            return future.result(timeout=1.0)
                        except BrokenProcessPool:
                            break
                        except TimeoutError:
                            # Python 3.11's executor, breaking, stops at a cancelled future and
                            # never answers the ones after it: a broken pool is not waited for
                            if getattr(self._executor, "_broken", False):
                                break
                    self.broken = True
                    return fn(*args)
                return answer
        return lambda: fn(*args)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if not self._closed:
            self._closed = True
            _unfreeze_heap()


def configured_workers() -> int:
    """``ARKIV_IDENTIFY_WORKERS`` (default: one less than the CPUs this process may run on; none on one)."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    if not value:
        return usable_cpus() - 1  # one CPU stays with the build that copies the files
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"{WORKERS_ENV} must be a whole number of worker processes, not {value!r}") from None
    if n < 0:
        raise ConfigError(f"{WORKERS_ENV} must be 0 or more, not {n}")
    return n


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask or cgroup CPU set, not the machine's count)."""
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13
    if counter is not None:
        return counter() or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _starts_with(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(magic)) == magic


@functools.cache
def _pdf_markers() -> Any:
    """An automaton for ``/Encrypt`` (0) and ``<x:xmpmeta`` (1)."""
    import ahocorasick_rs

    return ahocorasick_rs.BytesAhoCorasick([b"/Encrypt", b"<x:xmpmeta"])


def pdf_facts(path: Path | str, data: bytes | None = None) -> tuple[bool, str | None]:
    """(encrypted, PDF/A claim such as "2B") of a PDF, reading it once in 1 MiB chunks.

    An encrypted PDF names an ``/Encrypt`` dictionary in its trailer (PDF 32000-1, 7.6.1);
    a PDF/A declares itself in XMP (``pdfaid:part`` and ``pdfaid:conformance``, ISO 19005).
    The XMP packet of PDF/A is uncompressed by definition (ISO 19005-1, 6.7.2 forbids
    filtering it), so a byte scan finds it; the overlap keeps matches across chunk edges.
    """
    encrypted = False
    part = conf = None
    tail = b""
    with contextlib.nullcontext() if data is not None else open(path, "rb") as fh:
        for chunk in (data,) if data is not None else iter(lambda: fh.read(_CHUNK), b""):
            window = tail + chunk
            # Both literals in one pass (2.6 GB/s; two ``in`` scans ran at 1.3 and 1.6): a large
            # scanned PDF is read as fast as it is hashed. The regex scan is slower still.
            found = {i for i, _, _ in _pdf_markers().find_matches_as_indexes(window)}
            encrypted = encrypted or 0 in found
            for xmp in _XMP.finditer(window) if 1 in found else ():
                p, c = _PDFA_PART.search(xmp.group(0)), _PDFA_CONF.search(xmp.group(0))
                if p:
                    part = p.group(1).decode()
                    conf = c.group(1).decode().upper() if c else conf
            tail = window[-65536:]
    return encrypted, (f"{part}{conf or ''}" if part else None)


def _pdf_details(path: Path, ident: Identification, data: bytes | None = None) -> Identification:
    """``ident`` with what the whole PDF says (``data``: the whole file when already read)."""
    encrypted, pdfa = pdf_facts(path, data)
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

    def without_conversion(self) -> FormatPolicy:
        """This policy with every *convert* rule turned into *accept*: documents go into the package
        as delivered (benchmarks compare like for like; tests need byte-reproducible packages,
        which LibreOffice's timestamped PDFs are not)."""
        from dataclasses import replace

        rules = {puid: replace(r, action="accept", target=None) if r.action == "convert" else r
                 for puid, r in self.rules.items()}
        return replace(self, name=f"{self.name}+no-conversion", rules=rules)

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


__all__ = ["CONVERSION_TARGETS", "CatalogueIdentificationCache", "Decision", "FormatPolicy", "Identification",
           "IdentificationCache", "Identifier", "PDFA_PUIDS",
           "UNIDENTIFIED", "default_policy", "load_policy", "pdf_facts", "policy_for"]
