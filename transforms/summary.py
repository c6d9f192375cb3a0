"""``arkiv summary``: each batch's real history, not only its last status.

A batch that failed its quality gate and was approved with a deviation is not a batch that
passed; a batch with a document held back in quarantine archived fewer documents than it
extracted. The summary says so, with the deciding archivist, the date and the case numbers,
and explains every difference between what was extracted and what was archived. It reads only
the catalogue (batches, quarantine cases, packages) and the system configuration: counts,
names of checks and case numbers, never a record's values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from transforms import SOFTWARE_LABEL
from transforms.catalogue import Batch, BatchStatus, Catalogue, Package, QuarantineCase
from transforms.config.settings import Settings

#: the quality gate's story when no case was opened, by the batch's status (English, Swedish)
_GATE_WITHOUT_CASE = {
    BatchStatus.ARCHIVED: ("passed", "godkänd"),
    BatchStatus.QUALITY_PASSED: ("passed", "godkänd"),
    BatchStatus.STAGED: ("not run yet", "inte körd än"),
    BatchStatus.QUALITY_FAILED: ("FAILED (no quarantine case recorded: see `arkiv events`)",
                                 "UNDERKÄND (inget karantänärende registrerat)"),
    BatchStatus.DELIVERY_MISSING: ("not run: the delivery is missing (the system owner delivers)",
                                   "inte körd: leveransen saknas (systemägaren levererar)"),
}


@dataclass
class BatchHistory:
    """What happened to one batch, in the words the summary prints."""

    batch_id: str
    system: str
    period: str
    status: str
    extracted: dict[str, int]
    gate: str
    gate_sv: str
    cases: list[dict] = field(default_factory=list)
    packages: list[Package] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    #: (case, count) of registered documents without a file that an approved deviation let through
    missing_files: list[tuple[str, int]] = field(default_factory=list)
    report: str | None = None

    def to_dict(self) -> dict:
        return {"batch": self.batch_id, "system": self.system, "period": self.period, "status": self.status,
                "extracted": self.extracted, "quality_gate": self.gate, "kvalitetskontroll": self.gate_sv,
                "cases": self.cases, "differences": self.differences, "report": self.report,
                "packages": [{"id": p.id, "record_class": p.record_class, "records": p.record_count,
                              "documents": p.document_count, "size": p.size, "storage": p.storage}
                             for p in self.packages]}


def _day(value) -> str:
    return f"{value:%Y-%m-%d}" if value is not None else "?"


def _case_view(c: QuarantineCase) -> dict:
    return {"case": c.id, "kind": c.kind, "status": c.status, "reasons": len(json.loads(c.reasons or "[]")),
            "decided_by": c.decided_by, "decided_on": _day(c.decided_at) if c.decided_at else None}


def gate_history(batch: Batch, quality_cases: list[QuarantineCase]) -> tuple[str, str]:
    """The quality gate's story in English and Swedish, from the batch's status and its quality cases."""
    if not quality_cases:
        return _GATE_WITHOUT_CASE.get(batch.status, (batch.status, batch.status))
    steps_en, steps_sv = [], []
    for c in quality_cases:
        if c.status == "approved":
            steps_en.append(f"failed → approved with deviation by {c.decided_by} on {_day(c.decided_at)} "
                            f"(case {c.id})")
            steps_sv.append(f"underkänd → godkänd med avvikelse av {c.decided_by} {_day(c.decided_at)} "
                            f"(ärende {c.id})")
        elif c.status == "rejected":
            steps_en.append(f"failed → rejected by {c.decided_by} on {_day(c.decided_at)} (case {c.id}); "
                            "the system owner corrects the source")
            steps_sv.append(f"underkänd → avvisad av {c.decided_by} {_day(c.decided_at)} (ärende {c.id}); "
                            "systemägaren rättar källan")
        else:
            steps_en.append(f"FAILED → waiting for an archivist's decision (open case {c.id})")
            steps_sv.append(f"UNDERKÄND → väntar på arkivariens beslut (öppet ärende {c.id})")
    if batch.status in (BatchStatus.ARCHIVED, BatchStatus.QUALITY_PASSED) and quality_cases[-1].status == "rejected":
        steps_en.append("then passed on corrected data")
        steps_sv.append("sedan godkänd med rättade uppgifter")
    return "; ".join(steps_en), "; ".join(steps_sv)


def _root_and_document_tables(settings: Settings, system: str) -> tuple[str | None, str | None]:
    from transforms.common.errors import ConfigError
    from transforms.config.systems import load_system

    path = settings.systems_dir / f"{system}.yaml"
    if not path.is_file():
        return None, None
    try:
        sys_ = load_system(path)
    except ConfigError:
        return None, None
    root = sys_.root_table.name if sys_.tables else None
    doc = sys_.content.get("document", {}).get("table") if isinstance(sys_.content.get("document"), dict) else None
    return root, doc


def differences(h: BatchHistory, root_table: str | None, document_table: str | None) -> list[str]:
    """Why fewer records or documents were archived than extracted, or that nothing explains it."""
    if h.status != BatchStatus.ARCHIVED:
        return []
    out = []
    records = sum(p.record_count for p in h.packages)
    documents = sum(p.document_count for p in h.packages)
    held = [c for c in h.cases if c["kind"] == "document"]
    held_docs = sum(c["reasons"] for c in held)
    if root_table and root_table in h.extracted and h.extracted[root_table] != records:
        out.append(f"{h.extracted[root_table]} {root_table} extracted, {records} records archived: "
                   "the difference is not explained by any quarantine case; run `arkiv reconcile`")
    if document_table and document_table in h.extracted:
        extracted = h.extracted[document_table]
        explained = []
        if held:
            explained.append((held_docs, f"{held_docs} document(s) held back in quarantine case "
                                         + ", ".join(f"{c['case']} ({c['status']})" for c in held)
                                         + " (the original is kept in the package's rep1-original)"))
        for c, n in h.missing_files:
            explained.append((n, f"{n} registered document(s) had no file, archived as records without a file "
                                 f"under the deviation approved in case {c}"))
        gap = extracted - documents
        if gap == 0 and held:
            out.append(f"{held_docs} document(s) held back from the preservation copy in quarantine case "
                       + ", ".join(f"{c['case']} ({c['status']})" for c in held))
        elif gap:
            why = "; ".join(text for _, text in explained)
            rest = gap - sum(n for n, _ in explained)
            out.append(f"{extracted} documents extracted, {documents} archived: "
                       + (why if why else "")
                       + ("" if rest == 0 else ("; " if why else "")
                          + f"{rest} not explained by any quarantine case; run `arkiv reconcile`"))
    elif held:
        out.append(f"{held_docs} document(s) held back in quarantine case "
                   + ", ".join(f"{c['case']} ({c['status']})" for c in held))
    return out


def histories(settings: Settings, cat: Catalogue) -> list[BatchHistory]:
    """Every batch in the catalogue with its gate's story, its cases, packages and differences."""
    with cat.session() as s:
        batches = list(s.query(Batch).order_by(Batch.system, Batch.period))
        cases = list(s.query(QuarantineCase).order_by(QuarantineCase.created_at))
    packages = cat.packages()
    tables: dict[str, tuple[str | None, str | None]] = {}
    out = []
    for b in batches:
        mine = [c for c in cases if c.batch_id == b.id]
        gate_en, gate_sv = gate_history(b, [c for c in mine if c.kind == "quality"])
        h = BatchHistory(b.id, b.system, b.period, b.status, json.loads(b.rows or "{}").get("tables", {}),
                         gate_en, gate_sv, [_case_view(c) for c in mine],
                         [p for p in packages if p.batch_id == b.id], report=b.quality_report)
        root_table, document_table = tables.setdefault(b.system, _root_and_document_tables(settings, b.system))
        for c in mine:
            if c.kind == "quality" and c.status == "approved" and document_table:
                n = sum(int(m[1]) for r in json.loads(c.reasons or "[]")
                        if (m := re.match(rf"{re.escape(document_table)}: (?:.*\()?"
                                          r"expect_column_values_to_be_existing_files\b.*?: (\d+) "
                                          r"(?:post\(er\) / )?record\(s\)$", r)))
                if n:
                    h.missing_files.append((c.id, n))
        h.differences = differences(h, root_table, document_table)
        out.append(h)
    return out


def summary_text(settings: Settings) -> str:
    """The closing summary: each batch's history, its packages, and where things are."""
    settings.ensure()  # a fresh home has no catalogue folder yet: an empty catalogue, not an error
    cat = Catalogue(settings.catalogue_url)
    cat.migrate()
    try:
        hs = histories(settings, cat)
        other_cases = [c for c in cat_cases(cat) if c.batch_id not in {h.batch_id for h in hs}]
    finally:
        cat.dispose()
    lines = [f"{SOFTWARE_LABEL} — summary / sammanfattning"]
    for h in hs:
        lines.append(f"  {h.system} {h.period}: " + (", ".join(f"{v} {k}" for k, v in h.extracted.items())
                                                     or "nothing") + " extracted")
        lines.append(f"      quality gate: {h.gate}")
        lines.append(f"      kvalitetskontroll: {h.gate_sv}")
        if h.report:
            lines.append(f"      report / rapport: {h.report}")
        for c in h.cases:
            if c["kind"] != "quality":
                lines.append(f"      quarantine case {c['case']} ({c['kind']}, {c['status']}): {c['reasons']} reason(s)"
                             + (f", decided by {c['decided_by']} on {c['decided_on']}" if c["decided_by"] else ""))
        for d in h.differences:
            lines.append(f"      difference: {d}")
        pk = h.packages
        lines.append(f"      packages: {len(pk)} ({sum(p.size for p in pk):,} bytes, "
                     f"{sum(p.record_count for p in pk)} records, {sum(p.document_count for p in pk)} documents)"
                     + ("" if h.status == BatchStatus.ARCHIVED or pk else f" — batch {h.status.replace('_', ' ')}"))
        for p in pk:
            lines.append(f"        {p.id}  {p.record_class:<22} {p.size:>10,} B  {p.storage}:{p.location}")
    for c in other_cases:
        lines.append(f"  quarantine case {c.id} ({c.kind}, {c.status}) for {c.batch_id}: "
                     f"{len(json.loads(c.reasons or '[]'))} reason(s)")
    if not hs:
        lines.append("  (nothing extracted yet)")
    lines += [f"  mellanarkiv: {settings.mellanarkiv}", f"  catalogue:   {settings.catalogue_url}",
              f"  reports:     {settings.reports}", f"  quarantine:  {settings.quarantine}"]
    return "\n".join(lines)


def cat_cases(cat: Catalogue) -> list[QuarantineCase]:
    with cat.session() as s:
        return list(s.query(QuarantineCase).order_by(QuarantineCase.created_at))


def summary_json(settings: Settings) -> list[dict]:
    settings.ensure()  # a fresh home has no catalogue folder yet: an empty catalogue, not an error
    cat = Catalogue(settings.catalogue_url)
    cat.migrate()
    try:
        return [h.to_dict() for h in histories(settings, cat)]
    finally:
        cat.dispose()
