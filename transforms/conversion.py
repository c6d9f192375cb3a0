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
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .formats import CONVERSION_TARGETS, pdf_facts

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
    """``LibreOffice 7.4.7.2`` as the installed binary reports it."""
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
        ok, detail, pdfa = check_pdf(produced, part)
        if not ok:
            return Result(job.source, False, None, detail, seconds, pdfa)
        target = out_dir / f"{produced.stem}-{job.source.stem}.pdf"
        os.replace(produced, target)
        return Result(job.source, True, target, detail, seconds, pdfa)


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


__all__ = ["Converter", "FAMILY_BY_PUID", "Job", "Result", "check_pdf", "libreoffice_version"]
