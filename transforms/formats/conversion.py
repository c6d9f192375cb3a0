"""Office documents to PDF/A with LibreOffice headless: one office process per batch.

A :class:`Converter` owns a private LibreOffice profile (``-env:UserInstallation``) for its
lifetime and converts a whole batch with one ``soffice --convert-to`` invocation per document
family (text, spreadsheet, presentation: each family has its own PDF export filter). While
LibreOffice works through the batch the converter watches the output folder: every finished
PDF resets the per-file clock. When the clock runs out the process is killed, the files
already done are kept, and the rest are retried with the first one on its own, so one
pathological document costs at most two timeouts and is reported; it never stalls the batch.

Every PDF is checked before it is called a conversion: it must parse as a PDF (header,
``startxref`` pointing at a cross-reference, at least one page, ``%%EOF``), and its XMP must
claim the PDF/A part that was asked for.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from transforms.common.errors import ConfigError
from transforms.formats.identification import CONVERSION_TARGETS, pdf_facts

SOFFICE = os.environ.get("ARKIV_SOFFICE", "/usr/bin/soffice")
DEFAULT_TIMEOUT = float(os.environ.get("ARKIV_CONVERSION_TIMEOUT", "120"))
#: LibreOffice processes a package's conversions may use at once
CONVERSION_PROCESSES_ENV = "ARKIV_CONVERSION_PROCESSES"


def conversion_processes() -> int:
    """``ARKIV_CONVERSION_PROCESSES`` (default 2, or 1 on a single CPU)."""
    value = os.environ.get(CONVERSION_PROCESSES_ENV, "").strip()
    if not value:
        return min(2, os.cpu_count() or 1)
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{CONVERSION_PROCESSES_ENV} must be a whole number of processes, 1 or more, not {value!r}")
    return n

#: the LibreOffice application (and so the PDF export filter) each convertible PUID opens in
FAMILY_BY_PUID = {
    **dict.fromkeys(["fmt/412", "fmt/40", "fmt/39", "fmt/290", "fmt/291", "fmt/1756", "fmt/45", "fmt/46",
                     "fmt/47", "fmt/48", "fmt/49", "fmt/50", "fmt/52", "fmt/53", "fmt/355"], "writer"),
    **dict.fromkeys(["fmt/214", "fmt/61", "fmt/62", "fmt/294", "fmt/295", "fmt/1755"], "calc"),
    **dict.fromkeys(["fmt/215", "fmt/126"], "impress"),
}
_FILTER = {"writer": "writer_pdf_Export", "calc": "calc_pdf_Export", "impress": "impress_pdf_Export"}
_VERSION = re.compile(r"LibreOffice\s+(\S+)")


@dataclass(frozen=True)
class Job:
    """One document to convert: its path, PUID and target (e.g. ``pdfa-2b``)."""

    source: Path
    puid: str
    target: str = "pdfa-2b"
    sha256: str | None = None  # the source's, when the caller has it (else it is read again)


@dataclass(frozen=True)
class Result:
    """The outcome for one :class:`Job`: ``output`` is set only when the PDF passed its checks."""

    source: Path
    ok: bool
    output: Path | None
    detail: str  # what was checked, or why it failed
    seconds: float = 0.0
    pdfa: str | None = None


def libreoffice_version(soffice: str = SOFFICE) -> str:
    """``LibreOffice 7.4.7.2`` as the installed binary reports it.

    Asked once per installed binary in a process (``soffice --version`` takes about 0.3 s, more
    than a cached rebuild of a package): the answer is kept under the resolved binary's path,
    inode, size and modification time, so an upgrade while a worker runs is asked again."""
    found = shutil.which(soffice)
    try:
        st = os.stat(os.path.realpath(found)) if found else None
    except OSError:
        st = None
    if st is None:
        return _libreoffice_version(soffice)
    return _version_of(soffice, os.path.realpath(found), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _version_of(soffice: str, _real: str, _ino: int, _size: int, _mtime_ns: int) -> str:
    return _libreoffice_version(soffice)


def _libreoffice_version(soffice: str) -> str:
    try:
        out = subprocess.run([soffice, "--version"], capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"LibreOffice ({soffice}) cannot be started: {exc}") from None
    m = _VERSION.search(out)
    return f"LibreOffice {m.group(1)}" if m else out.strip() or "LibreOffice (unknown version)"


def check_pdf(path: Path, part: int | None = None) -> tuple[bool, str, str | None]:
    """(ok, detail, PDF/A claim): the structural checks a converted file must pass."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(1024)
            fh.seek(max(0, size - 2048))
            tail = fh.read()
    except OSError as exc:
        return False, f"output unreadable: {exc.strerror}", None
    if not head.startswith(b"%PDF-"):
        return False, "output is not a PDF (no %PDF- header)", None
    if b"%%EOF" not in tail:
        return False, "output PDF is truncated (no %%EOF)", None
    m = re.search(rb"startxref\s+(\d+)", tail)
    if not m or int(m.group(1)) >= size:
        return False, "output PDF has no valid startxref", None
    with open(path, "rb") as fh:
        fh.seek(int(m.group(1)))
        at_xref = fh.read(64)
    if not (at_xref.startswith(b"xref") or re.match(rb"\d+\s+\d+\s+obj", at_xref)):
        return False, "output PDF's startxref does not point at a cross-reference", None
    pages = _count_pages(path)
    if pages == 0:
        return False, "output PDF has no pages", None
    encrypted, pdfa = pdf_facts(path)
    if encrypted:
        return False, "output PDF is encrypted", pdfa
    if part is not None and (not pdfa or pdfa[0] != str(part)):
        return False, f"output PDF does not claim PDF/A-{part} in its XMP (claims {pdfa or 'nothing'})", pdfa
    return True, f"PDF opens: {pages} page(s), xref at byte {int(m.group(1))}; XMP claims PDF/A-{pdfa}", pdfa


#: the bytes LibreOffice's PDF export makes differ between two runs over the same input
_INFO_DATE = re.compile(rb"/(CreationDate|ModDate)\s*\(D:[^)]*\)")
_XMP_DATE = re.compile(rb"<xmp:(CreateDate|ModifyDate|MetadataDate)>[^<]*</xmp:\1>")
_XMP_ID = re.compile(rb"<xmpMM:(DocumentID|InstanceID)>[^<]*</xmpMM:\1>")
_TRAILER_ID = re.compile(rb"/ID\s*\[\s*<[0-9A-Fa-f]*>\s*<[0-9A-Fa-f]*>\s*\]")
_DOC_CHECKSUM = re.compile(rb"\s*/DocChecksum\s*/[0-9A-Fa-f]+")
_OBJ = re.compile(rb"(\d+)\s+0\s+obj\b")
_STREAM = re.compile(rb"stream\r?\n")


def make_reproducible(path: Path, when: float, seed: bytes) -> bool:
    """Rewrite a PDF LibreOffice wrote so the same input always gives the same bytes.

    LibreOffice stamps the clock into the Info dictionary, the XMP packet and the sRGB output
    profile's header, derives the trailer's ``/ID`` from it, and writes a document's embedded
    fonts in an order that changes from run to run (:func:`_fonts_in_canonical_order`). The
    dates are set here from ``when`` (the input's time), the Info dictionary and the XMP to the
    same moment as PDF/A asks; the ID from ``seed`` (the input's SHA-256); the fonts put in
    the order of their names.
    The file is rewritten with a fresh cross-reference table. A PDF not laid out as LibreOffice
    lays it out (one classic cross-reference table, no object streams) is left as it is and
    False returned; the caller's checks still apply to it.
    """
    data = path.read_bytes()
    rebuilt = _reproducible_bytes(data, when, seed)
    if rebuilt is None:
        return False
    if rebuilt != data:
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_bytes(rebuilt)
        os.replace(tmp, path)
    return True


def _reproducible_bytes(data: bytes, when: float, seed: bytes) -> bytes | None:
    stamp = time.gmtime(int(when))
    info_date = b"/\\1(D:" + time.strftime("%Y%m%d%H%M%S", stamp).encode() + b"Z')"
    xmp_date = b"<xmp:\\1>" + time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp).encode() + b"</xmp:\\1>"
    uid = seed[:16].hex().upper().encode()
    doc_uuid = f"uuid:{uid[:8].decode()}-{uid[8:12].decode()}-{uid[12:16].decode()}-" \
               f"{uid[16:20].decode()}-{uid[20:32].decode()}".lower().encode()
    xmp_id = b"<xmpMM:\\1>" + doc_uuid + b"</xmpMM:\\1>"
    sx = data.rfind(b"startxref")
    if sx < 0 or data.count(b"startxref") != 1 or b"/ObjStm" in data or b"/XRef" in data:
        return None
    m = re.match(rb"startxref\s+(\d+)", data[sx:])
    if not m:
        return None
    xref_at = int(m.group(1))
    t = data.find(b"trailer", xref_at)
    if not data.startswith(b"xref", xref_at) or t < 0:
        return None
    trailer = data[t:sx]
    # Objects in file order, each running up to the next one (or to the cross-reference table).
    starts = [(int(o.group(1)), o.start()) for o in _OBJ.finditer(data, 0, xref_at)
              if o.start() == 0 or data[o.start() - 1:o.start()] in (b"\n", b"\r")]
    if not starts:
        return None
    objs = {num: bytearray(data[at:(starts[k + 1][1] if k + 1 < len(starts) else xref_at)])
            for k, (num, at) in enumerate(starts)}
    if len(objs) != len(starts):
        return None
    lengths: dict[int, int] = {}  # object holding a stream's /Length -> the new length
    for num, body in objs.items():
        new = _INFO_DATE.sub(info_date, bytes(body))
        if b"/Type/Metadata" in new:
            new = _XMP_DATE.sub(xmp_date, new)
            new = _XMP_ID.sub(xmp_id, new)
        else:
            new = _restamped_stream(new, when, lengths)
            if new is None:
                return None
        objs[num] = bytearray(new)
    for num, length in lengths.items():
        if num not in objs or not re.fullmatch(rb"\d+\s+0\s+obj\s*\d+\s*endobj\s*", bytes(objs[num])):
            return None
        objs[num] = bytearray(b"%d 0 obj\n%d\nendobj\n\n" % (num, length))
    order, renumber = _fonts_in_canonical_order(objs, [num for num, _ in starts])
    out = bytearray(data[:starts[0][1]])
    offsets = {}
    for num in order:
        offsets[num] = len(out)
        out += objs[num]
    size = max(offsets) + 1
    xref = bytearray(b"xref\n0 %d\n0000000000 65535 f \n" % size)
    for n in range(1, size):
        xref += b"%010d 00000 n \n" % offsets[n] if n in offsets else b"0000000000 65535 f \n"
    if renumber:
        trailer = _REF.sub(lambda r: b"%d 0 R" % renumber.get(int(r.group(1)), int(r.group(1))), trailer)
    trailer = _TRAILER_ID.sub(b"/ID [ <" + uid + b">\n<" + uid + b"> ]", trailer)
    trailer = _DOC_CHECKSUM.sub(b"", trailer)
    start = len(out)
    out += xref + trailer + b"startxref\n%d\n%%%%EOF\n" % start
    return bytes(out)


_REF = re.compile(rb"\b(\d+) 0 R\b")
_HEAD = re.compile(rb"(\d+)(\s+0\s+obj\b)")


def _refs(body: bytes | bytearray) -> dict[bytes, int]:
    """The ``/Key N 0 R`` references of an object's dictionary (not of its stream data)."""
    s = _STREAM.search(body)
    head = bytes(body[:s.start()] if s else body)
    return {m.group(1): int(m.group(2)) for m in re.finditer(rb"/(\w+)\s*(\d+) 0 R\b", head)}


def _fonts_in_canonical_order(objs: dict[int, bytearray], order: list[int]) -> tuple[list[int], dict[int, int]]:
    """Object order and renumbering that put LibreOffice's embedded fonts in one order.

    LibreOffice writes each embedded font as a run of objects (font program, its length,
    descriptor, ToUnicode map, font), but the runs come out in an order that changes from
    run to run. Runs that sit side by side (in the numbering and in the file) are put in
    the order of their font names and renumbered, and every reference is renumbered with
    them (``objs`` is changed in place). Anything laid out otherwise is left as it is.
    """
    runs = []
    for num in order:
        body = objs[num]
        if not re.search(rb"/Type\s*/Font\b", body) or b"/FontDescriptor" not in body:
            continue
        name = re.search(rb"/BaseFont\s*/([^\s/\[<>()]+)", body)
        refs = _refs(body)
        desc = refs.get(b"FontDescriptor")
        if name is None or desc not in objs:
            return order, {}
        members = {num, desc}
        if b"ToUnicode" in refs:
            members.add(refs[b"ToUnicode"])
        file = next((v for k, v in _refs(objs[desc]).items() if k.startswith(b"FontFile")), None)
        if file is not None:
            members.add(file)
            length = _refs(objs.get(file, b"")).get(b"Length")
            if length is not None:
                members.add(length)
        if not members <= objs.keys() or max(members) - min(members) + 1 != len(members):
            return order, {}
        runs.append((name.group(1), sorted(members)))
    if len(runs) < 2:
        return order, {}
    by_number = sorted(runs, key=lambda r: r[1][0])
    canonical = sorted(runs, key=lambda r: r[0])
    if [r[1] for r in by_number] == [r[1] for r in canonical]:
        return order, {}
    block = [n for _, members in by_number for n in members]
    if block != list(range(block[0], block[0] + len(block))) or len({r[0] for r in runs}) != len(runs):
        return order, {}
    positions = [order.index(n) for n in block]
    if sorted(positions) != list(range(min(positions), min(positions) + len(block))):
        return order, {}
    renumber, new = {}, block[0]
    for _, members in canonical:
        for n in members:
            renumber[n] = new
            new += 1
    def swap(body: bytearray, num: int) -> bytearray:
        s = _STREAM.search(body)
        cut = s.start() if s else len(body)
        head = _HEAD.sub(lambda m: b"%d%s" % (renumber.get(num, num), m.group(2)), bytes(body[:cut]), count=1)
        head = _REF.sub(lambda r: b"%d 0 R" % renumber.get(int(r.group(1)), int(r.group(1))), head)
        return bytearray(head + bytes(body[cut:]))
    renamed = {renumber.get(n, n): swap(body, n) for n, body in objs.items()}
    objs.clear()
    objs.update(renamed)
    # In the file the block's place is kept; inside it the runs follow the canonical order.
    first = min(positions)
    in_file = [renumber.get(n, n) for n in order]
    in_file[first:first + len(block)] = sorted(in_file[first:first + len(block)],
                                               key=lambda n: next(i for i, (_, m) in enumerate(canonical)
                                                                  if n in {renumber[x] for x in m}) * 1_000_000 + n)
    return in_file, renumber


def _restamped_stream(body: bytes, when: float, lengths: dict[int, int]) -> bytes | None:
    """An object whose Flate stream is an ICC profile, with the profile's date set to ``when``."""
    s = _STREAM.search(body)
    if s is None or b"/FlateDecode" not in body[:s.start()]:
        return body
    if not re.search(rb"/N\s+\d", body[:s.start()]):
        return body  # not an ICC profile: page content, images, font programs (whose dates are fixed)
    end = body.rfind(b"endstream")
    if end < s.end():
        return None
    raw = body[s.end():end]
    try:
        plain = zlib.decompressobj().decompress(raw)
    except zlib.error:
        return body
    fixed = _icc_dated(plain, when) if plain[36:40] == b"acsp" else None
    if fixed is None or fixed == plain:
        return body
    packed = zlib.compress(fixed, 6)
    head = body[:s.start()]
    m = re.search(rb"/Length\s+(\d+)(\s+0\s+R)?", head)
    if m is None:
        return None
    if m.group(2):
        lengths[int(m.group(1))] = len(packed)
    else:
        head = head[:m.start(1)] + b"%d" % len(packed) + head[m.end(1):]
    tail = body[end:]
    sep = b"\n" if raw.endswith(b"\n") else b""
    return head + body[s.start():s.end()] + packed + sep + tail


def _icc_dated(profile: bytes, when: float) -> bytes | None:
    """An ICC profile with its header's creation time set (only when it carries no profile ID,
    which would be an MD5 over that time)."""
    if len(profile) < 128 or any(profile[84:100]):
        return None
    t = time.gmtime(int(when))
    return profile[:24] + struct.pack(">6H", t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec) + \
        profile[36:]


def _count_pages(path: Path) -> int:
    count = 0
    pattern = re.compile(rb"/Type\s*/Page(?![s\w])")
    tail = b""
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            window = tail + chunk
            count += len(pattern.findall(window)) - len(pattern.findall(tail))
            tail = window[-64:]
    return count


class Converter:
    """A LibreOffice converter for one batch: use as a context manager, call :meth:`convert`."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, soffice: str = SOFFICE,
                 work_dir: Path | str | None = None):
        self.timeout = timeout
        self.soffice = soffice
        self._work_parent = work_dir
        self._dir: Path | None = None
        self.version = ""
        self.invocations = 0  # how many office processes this converter started (tests read it)

    def __enter__(self) -> Converter:
        self._dir = Path(tempfile.mkdtemp(prefix=".arkiv-lo-", dir=self._work_parent))
        self.version = libreoffice_version(self.soffice)
        return self

    def __exit__(self, *exc) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def profile_url(self) -> str:
        assert self._dir is not None, "use Converter as a context manager"
        return (self._dir / "profile").as_uri()

    def convert(self, jobs: Sequence[Job], out_dir: Path) -> list[Result]:
        """Convert every job into ``out_dir``; one :class:`Result` per job, in order."""
        assert self._dir is not None, "use Converter as a context manager"
        out_dir.mkdir(parents=True, exist_ok=True)
        results: dict[int, Result] = {}
        groups: dict[tuple[str, int], list[int]] = {}
        for i, job in enumerate(jobs):
            family = FAMILY_BY_PUID.get(job.puid)
            part = CONVERSION_TARGETS.get(job.target)
            if family is None or part is None:
                results[i] = Result(job.source, False, None,
                                    f"no LibreOffice conversion for {job.puid} to {job.target}")
                continue
            groups.setdefault((family, part), []).append(i)
        for (family, part), indices in groups.items():
            self._run_group(jobs, indices, family, part, out_dir, results)
        return [results[i] for i in range(len(jobs))]

    def _run_group(self, jobs: Sequence[Job], indices: list[int], family: str, part: int, out_dir: Path,
                   results: dict[int, Result]) -> None:
        # Inputs are linked under neutral names (n.ext) so equal stems never collide and
        # LibreOffice's output name is predictable.
        assert self._dir is not None
        stage = Path(tempfile.mkdtemp(prefix=f"{family}-", dir=self._dir))
        inputs, expected = {}, {}
        for i in indices:
            src = jobs[i].source
            link = stage / "in" / f"{i:06d}{src.suffix.lower() or '.bin'}"
            link.parent.mkdir(exist_ok=True)
            os.symlink(src.resolve(), link)
            inputs[i] = link
            expected[i] = stage / "out" / f"{i:06d}.pdf"
        pending = list(indices)
        alone = False
        while pending:
            batch = pending[:1] if alone else pending
            started = time.monotonic()
            done, timed_out, stderr = self._invoke([inputs[i] for i in batch], [expected[i] for i in batch],
                                                   family, part, stage / "out")
            for i in batch:
                if i in done:
                    results[i] = self._checked(jobs[i], expected[i], part, out_dir, done[i])
            rest = [i for i in batch if i not in done]
            if alone:
                i = batch[0]
                why = (f"LibreOffice did not finish within {self.timeout:.0f} s" if timed_out else
                       f"LibreOffice could not convert it{': ' + stderr if stderr else ''}")
                if i not in done:
                    results[i] = Result(jobs[i].source, False, None, why, time.monotonic() - started)
                pending = pending[1:]
                alone = False
            elif rest:
                # Something in the batch failed or hung: isolate the first unfinished file.
                pending, alone = rest, True
            else:
                pending = []
        shutil.rmtree(stage, ignore_errors=True)

    def _invoke(self, inputs: list[Path], expected: list[Path], family: str, part: int,
                out: Path) -> tuple[dict[int, float], bool, str]:
        """Run one soffice over ``inputs``; returns {index: seconds} of outputs, timed out?, stderr."""
        options = json.dumps({"SelectPdfVersion": {"type": "long", "value": str(part)}})
        cmd = [self.soffice, f"-env:UserInstallation={self.profile_url}", "--headless", "--invisible",
               "--nologo", "--norestore", "--nolockcheck", "--convert-to", f"pdf:{_FILTER[family]}:{options}",
               "--outdir", str(out), *map(str, inputs)]
        self.invocations += 1
        index = {p: int(p.stem) for p in expected}
        seen: dict[int, float] = {}
        with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=err, start_new_session=True,  # noqa: S603
                                    env={**os.environ, "SAL_USE_VCLPLUGIN": "svp"})
            last = time.monotonic()
            timed_out = False
            while True:
                finished = proc.poll() is not None
                for p in expected:
                    if index[p] not in seen and p.exists():
                        now = time.monotonic()
                        seen[index[p]] = now - last
                        last = now
                if finished:
                    break
                if time.monotonic() - last > self.timeout:
                    timed_out = True
                    _kill(proc)
                    # A profile written by a killed office may be half done: start the next one afresh.
                    shutil.rmtree(self._dir / "profile", ignore_errors=True)
                    break
                time.sleep(0.1)
            err.seek(0)
            # LibreOffice's own noise (no Java here) is not a reason worth reporting.
            lines = [ln for ln in err.read().decode("utf-8", "replace").splitlines() if "javaldx" not in ln]
            stderr = " ".join(" ".join(lines).split())[:300]
        if timed_out:
            # The file being written when the process died may be partial: only complete ones count.
            seen = {i: s for i, s in seen.items() if check_pdf(out / f"{i:06d}.pdf")[0]}
        return seen, timed_out, stderr

    def _checked(self, job: Job, produced: Path, part: int, out_dir: Path, seconds: float) -> Result:
        try:
            st = os.stat(job.source)
            seed = bytes.fromhex(job.sha256) if job.sha256 else _sha256(job.source)
            make_reproducible(produced, st.st_mtime, seed)
        except OSError as exc:
            return Result(job.source, False, None, f"output could not be made reproducible: {exc.strerror}", seconds)
        ok, detail, pdfa = check_pdf(produced, part)
        if not ok:
            return Result(job.source, False, None, detail, seconds, pdfa)
        target = out_dir / f"{produced.stem}-{job.source.stem}.pdf"
        os.replace(produced, target)
        return Result(job.source, True, target, detail, seconds, pdfa)


#: changes whenever :func:`make_reproducible` would write other bytes for the same input
REPRODUCIBLE_FORMAT = "2"
#: where converted documents are kept between builds (default: ``conversion-cache`` beside the build folders)
CONVERSION_CACHE_ENV = "ARKIV_CONVERSION_CACHE"


#: the name of a cache entry (its key): what :meth:`ConversionCache.entries` and ``prune`` touch
_ENTRY_NAME = re.compile(r"[0-9a-f]{64}")


class ConversionCache:
    """Converted PDF/A kept by what determines their bytes: the input's SHA-256 and time, the
    target, the converter's version and :data:`REPRODUCIBLE_FORMAT`.

    A rebuild of an unchanged interval, or a document delivered again, takes its PDF/A from
    here instead of starting LibreOffice; as the conversion is reproducible, the package is the
    same either way. Entries are written under a temporary name and renamed (a crash leaves no
    half-written PDF), and every entry is checked again (:func:`check_pdf`) when it is used.
    """

    def __init__(self, root: Path | str, shared: SharedCache | None = None):
        self.root = Path(root)
        #: where workers with no disk in common share their entries (the working bucket); the folder
        #: ``root`` is then this worker's copy of what it used
        self.shared = shared
        self.hits = 0
        self.stored = 0

    @staticmethod
    def key(job: Job, sha256: str, version: str) -> str:
        mtime = int(os.stat(job.source).st_mtime)
        text = f"{sha256}|{mtime}|{job.target}|{version}|{REPRODUCIBLE_FORMAT}"
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pdf"

    def name(self, key: str) -> str:
        """An entry's name below the cache's root, also in the shared cache."""
        return f"{key[:2]}/{key}.pdf"

    def get(self, key: str, part: int) -> tuple[Path, str, str | None] | None:
        """(path, check detail, PDF/A claim) of a stored conversion, or None."""
        path = self.path(key)
        if not path.is_file() and not (self.shared is not None and self.shared.fetch(self.name(key), path)):
            return None
        ok, detail, pdfa = check_pdf(path, part)
        if not ok:
            path.unlink(missing_ok=True)  # a damaged entry is converted again, never used
            return None
        try:
            os.utime(path)  # an entry's time is its last use: what prune() goes by
        except FileNotFoundError:
            return None  # pruned meanwhile: converted again, as any miss
        except OSError:
            pass  # a read-only cache still serves
        self.hits += 1
        return path, detail, pdfa

    def put(self, key: str, produced: Path) -> Path:
        """Store a checked conversion; returns the stored copy's path."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            # Not fsynced: an entry a crash left short fails check_pdf when next used and is made again.
            shutil.copyfile(produced, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self.stored += 1
        if self.shared is not None:
            self.shared.publish(path, self.name(key))
        return path

    def entries(self) -> Iterator[tuple[Path, int, float]]:
        """``(path, size, last use as a POSIX time)`` of every entry in this worker's folder: only files named
        as the cache names them (``<xx>/<key>.pdf``, a key of 64 hex digits starting with ``xx``), so that
        a folder given by mistake loses nothing of its own to :meth:`prune`."""
        for path in self.root.glob("??/*.pdf"):
            if not (_ENTRY_NAME.fullmatch(path.stem) and path.parent.name == path.stem[:2]):
                continue
            with contextlib.suppress(FileNotFoundError):
                st = path.lstat()
                if stat.S_ISREG(st.st_mode):
                    yield path, st.st_size, st.st_mtime

    def prune(self, unused_for: float, *, dry_run: bool = False) -> CachePrune:
        """Remove the entries of this worker's folder not used for ``unused_for`` seconds (and what an
        interrupted store left there for a day), and, when the cache is shared, the shared entries
        stored longer ago than that. Only derived copies go: an archived package holds its own PDF/A,
        and a pruned entry costs one conversion when next needed (reproducible: the same bytes)."""
        cutoff = time.time() - unused_for
        result = CachePrune()
        for path, size, used in list(self.entries()):
            if used >= cutoff:
                result.kept_entries += 1
                continue
            if not dry_run:
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime >= cutoff:  # taken by a build since it was listed
                        result.kept_entries += 1
                        continue
                    path.unlink()
            result.removed_entries += 1
            result.removed_bytes += size
        for part in self.root.glob("??/.*.part*"):  # a store's (.<name>.<pid>.part) or a download's (….part-<id>)
            with contextlib.suppress(FileNotFoundError):
                if part.stat().st_mtime < time.time() - 86400 and not dry_run:
                    part.unlink()
        if self.shared is not None:
            result.shared_removed, result.shared_bytes = self.shared.prune(cutoff, dry_run=dry_run)
        return result


@dataclass
class CachePrune:
    """What :meth:`ConversionCache.prune` removed (or, in a dry run, would remove) and kept."""

    removed_entries: int = 0
    removed_bytes: int = 0
    kept_entries: int = 0
    shared_removed: int = 0
    shared_bytes: int = 0


class SharedCache(Protocol):
    """Entries every worker can reach (files by name, e.g. in the working bucket), behind a worker's folder.

    Both are best effort: a cache that cannot be reached costs a conversion, never a build."""

    def fetch(self, name: str, dest: Path) -> bool:
        """Copy the entry ``name`` to ``dest`` (atomically); False when there is none."""
        ...

    def publish(self, local: Path, name: str) -> None:
        """Make ``local`` the entry ``name`` for every worker."""
        ...

    def entries(self) -> Iterator[tuple[str, int, float]]:
        """``(name, size, when stored as a POSIX time)`` of every entry."""
        ...

    def prune(self, cutoff: float, *, dry_run: bool = False) -> tuple[int, int]:
        """Remove the entries stored before the POSIX time ``cutoff``: ``(entries, bytes)`` removed."""
        ...


def _sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.digest()


def _kill(proc: subprocess.Popen) -> None:
    """End the office process group we started (soffice forks oosplash and soffice.bin)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
    proc.wait()
    # soffice.bin is a grandchild: wait until the whole group is gone, so that the next office
    # does not hand its work to a dying instance over the profile's pipe.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


__all__ = ["ConversionCache", "Converter", "FAMILY_BY_PUID", "Job", "Result", "check_pdf", "libreoffice_version",
           "make_reproducible"]
