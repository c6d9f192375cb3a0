"""Retention: when a record class's rule falls due, and applying the schedule to the catalogue.

Decisions are people's (:class:`~transforms.catalogue.Person`): an archivist places and lifts
legal holds, and a disposal list is disposed of only when two different archivists have
signed it — the first reviews it (:func:`review_disposal`), another approves it
(:func:`decide_disposal`); nobody approves a list they reviewed. Each decision is an event whose
agent is the person (identifier, name, roles then) and whose executing agent is the software.
Without an identity provider (the embedded default) a decision names whoever ``--by NAME``
says, recorded as an unauthenticated name; two different names are needed there too (the same
name typed twice, in any case or spacing, is one person). ``ARKIV_DISPOSAL_APPROVERS=1`` lets one
name approve alone, only without a provider (a trial installation with one user).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from transforms import SOFTWARE_LABEL
from transforms.archive.storage import slutarkiv
from transforms.catalogue import (
    UNAUTHENTICATED,
    Catalogue,
    DisposalList,
    Event,
    Hold,
    Package,
    PackageStatus,
    Person,
    Record,
    Tombstone,
    utcnow,
)
from transforms.common.errors import ConfigError, ContentError, StorageError
from transforms.common.failpoints import failpoint
from transforms.packaging.agents import by_software
from transforms.quality.quarantine import DecisionRefused

log = logging.getLogger("arkivflode")

if TYPE_CHECKING:
    from transforms.archive.storage import FileSystemStorage, S3Storage

    Storage = FileSystemStorage | S3Storage

# --- the retention schedule applied to the catalogue ---------------------------------------------

AGENT = SOFTWARE_LABEL


def _person(by: str | Person) -> Person:
    return by if isinstance(by, Person) else Person.unauthenticated(by)


def _require_archivist(who: Person, what: str) -> None:
    if who.authenticated and "archivist" not in who.roles:
        raise DecisionRefused(f"{who.name} does not hold the archivist role; {what} is an archivist's decision")


def _signed(who: Person) -> str:
    return f"{who.name} ({who.id})" if who.authenticated else f"{who.name} (unauthenticated name)"


def _same_person(ident: str | None, name: str | None, who: Person) -> bool:
    """Whether a signature (identifier, name) is ``who``'s: the same identifier, or, for names nobody
    vouched for, the same name whatever its case and spacing ("Anna" and " anna " are one person)."""
    if ident is None:
        return False
    if ident == who.id:
        return True
    if who.authenticated or not ident.startswith(UNAUTHENTICATED):
        return False
    return " ".join((name or "").split()).casefold() == " ".join(who.name.split()).casefold()


def approvers_required(env: dict[str, str] | None = None) -> int:
    """How many different archivists sign a disposal list: 2, always with an identity provider; without
    one ``ARKIV_DISPOSAL_APPROVERS`` may say 1 (default 2)."""
    import os

    env = os.environ if env is None else env
    if (env.get("ARKIV_OIDC_ISSUER") or "").strip():
        return 2
    raw = (env.get("ARKIV_DISPOSAL_APPROVERS") or "2").strip()
    if raw not in ("1", "2"):
        raise ConfigError("ARKIV_DISPOSAL_APPROVERS: 1 or 2")
    return int(raw)


@dataclass
class Plan:
    """What the retention schedule says is due on a day, and what holds keep back."""

    as_of: str
    transfer: list[str] = field(default_factory=list)
    dispose: list[str] = field(default_factory=list)
    held: list[tuple[str, str]] = field(default_factory=list)  # (package id, why)
    unfinished: list[str] = field(default_factory=list)  # transferred, but still in the mellanarkiv
    not_due: int = 0

    def report(self, cat: Catalogue) -> str:
        """The dry-run report: what would be done and why, package by package."""
        lines = [f"Retention plan as of {self.as_of}"]
        for title, ids, verb in (("Transfer to the slutarkiv", self.transfer, "keep"),
                                 ("Propose for disposal (gallring, needs an archivist's approval)", self.dispose,
                                  "dispose")):
            lines.append(f"{title}: {len(ids)}")
            for pid in ids:
                p = cat.package(pid)
                lines.append(f"  {pid}  {p.system} {p.period} {p.record_class}: {p.record_count} records, "
                             f"due {p.due_date} ({verb})")
        lines.append(f"Held back by legal holds: {len(self.held)}")
        lines += [f"  {pid}: {why}" for pid, why in self.held]
        if self.unfinished:
            lines.append(f"Transfers to finish (copy verified, mellanarkiv copy not yet removed): "
                         f"{len(self.unfinished)}")
        lines.append(f"Not yet due: {self.not_due}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"as_of": self.as_of, "transfer": self.transfer, "dispose": self.dispose,
                "held": [list(h) for h in self.held], "unfinished": self.unfinished, "not_due": self.not_due}


def active_holds(cat: Catalogue) -> list[Hold]:
    with cat.session() as s:
        return list(s.scalars(sa.select(Hold).where(Hold.lifted_at.is_(None)).order_by(Hold.id)))


def hold_reason(cat: Catalogue, pkg: Package, holds: list[Hold]) -> str | None:
    """Why a package is held (None when it is not)."""
    with cat.session() as s:
        sources = {f"{pkg.system}:{sid}" for (sid,) in s.execute(
            sa.select(Record.source_id).where(Record.package_id == pkg.id))}
    for h in holds:
        if (h.scope == "package" and h.target == pkg.id) \
                or (h.scope == "record_class" and h.target == f"{pkg.system}:{pkg.record_class}") \
                or (h.scope == "record" and h.target in sources):
            return f"legal hold #{h.id} on {h.scope} {h.target}: {h.reason} (placed by {h.placed_by})"
    return None


def plan(cat: Catalogue, as_of: dt.date) -> Plan:
    """Compute what is due on ``as_of`` from the catalogue."""
    result = Plan(as_of.isoformat())
    holds = active_holds(cat)
    in_lists = _packages_in_open_lists(cat)
    pending = _pending_removals(cat)
    for p in cat.packages():
        if p.status == PackageStatus.TRANSFERRED and p.id in pending:
            result.unfinished.append(p.id)
        if p.status != PackageStatus.STORED or p.storage != "mellanarkiv":
            continue
        if not p.due_date or p.due_date > as_of.isoformat():
            result.not_due += 1
            continue
        why = hold_reason(cat, p, holds)
        if why:
            result.held.append((p.id, why))
        elif p.retention_action == "keep":
            result.transfer.append(p.id)
        elif p.retention_action == "dispose" and p.id not in in_lists:
            result.dispose.append(p.id)
    return result


def _packages_in_open_lists(cat: Catalogue) -> set[str]:
    with cat.session() as s:
        lists = s.scalars(sa.select(DisposalList).where(DisposalList.status.in_(("proposed", "reviewed",
                                                                                   "approved"))))
        return {pid for dl in lists for pid in json.loads(dl.items)}


def _pending_removals(cat: Catalogue) -> set[str]:
    """Packages whose transfer was verified but whose mellanarkiv copy has no deletion event yet."""
    with cat.session() as s:
        verified = {pid for (pid,) in s.execute(sa.select(Event.package_id).where(Event.type == "transfer"))}
        removed = {pid for (pid,) in s.execute(sa.select(Event.package_id).where(
            Event.type == "deletion", Event.detail.like("removed from the mellanarkiv%")))}
    return verified - removed


# --- transfer ----------------------------------------------------------------------------------------

def transfer(cat: Catalogue, mellanarkiv: Storage, slutarkiv_root: Path | S3Storage, package_id: str, *, basis: str,
             now: dt.datetime | None = None) -> dict:
    """Move one package from the mellanarkiv to the slutarkiv as an OCFL object holding its AIP.

    Order, so that a crash anywhere leaves the package in one place or the other, never neither:
    build the AIP in a work folder; write the OCFL object (appears whole or not at all); verify
    every file against the inventory and the SIP's checksums; record the transfer and the receipt
    in the catalogue; only then remove the SIP from the mellanarkiv. A rerun picks up where a
    crash stopped and never writes an object twice. Either archive may be a folder or a bucket:
    the SIP is read through ``local_copy`` (checked against its catalogued SHA-256), and the
    slutarkiv's object is sealed under Object Lock once it verifies (see transforms/archive/ocfl.py).
    """
    from transforms.archive import ocfl
    from transforms.common.safe_archive import extract_package
    from transforms.packaging.aip import RECEIPT, make_aip, receipt_xml
    from transforms.packaging.premis import Event as PremisEvent

    now = now or utcnow()
    pkg = cat.package(package_id)
    if pkg is None:
        raise ContentError(f"no package {package_id} in the catalogue")
    object_id = package_id
    ocfl.init_root(slutarkiv_root)
    if pkg.status == PackageStatus.STORED:
        # the SIP as a local file, hashed against the catalogue (downloaded once when the mellanarkiv is a bucket)
        with tempfile.TemporaryDirectory(prefix="arkiv-aip-") as tmp, \
                _local_sip(mellanarkiv, pkg) as sip:
            if not ocfl.object_exists(slutarkiv_root, object_id):
                with extract_package(sip, parent=tmp) as root:
                    files = [p for p in root.rglob("*") if p.is_file()]
                    receipt = receipt_xml(package_id=package_id, system=pkg.system, record_class=pkg.record_class,
                                          received_from=f"mellanarkiv:{pkg.location}", source_sha256=pkg.sha256,
                                          received_at=now, files=len(files),
                                          size=sum(p.stat().st_size for p in files),
                                          records=pkg.record_count, basis=basis)
                    # everything that happened: to the batch it came from (extraction, quality, decisions)
                    # and to the package itself (creation, ingest, fixity, holds)
                    batch_events = [e for e in cat.events(batch_id=pkg.batch_id) if e.package_id is None]
                    history = [_premis_event(e) for e in sorted(batch_events + cat.events(package_id=package_id),
                                                                key=lambda e: e.id)]
                    history.append(PremisEvent(identifier=f"{package_id}-transfer", type="transfer", time=now,
                                               outcome="success", detail=f"transferred to the slutarkiv; {basis}",
                                               agents=by_software()))
                    make_aip(root, events=history, receipt=receipt, now=now,
                             objects=_identified_files(cat, package_id, root))
                    ocfl.write_object(slutarkiv_root, object_id, root, message=f"AIP of {package_id}: {basis}",
                                      user=AGENT, created=now)
            problems = ocfl.verify_object(slutarkiv_root, object_id)
            if problems:
                raise StorageError("slutarkiv: the new object does not verify; the mellanarkiv copy is kept: "
                                   + "; ".join(problems[:5]))
            _check_data_unchanged(ocfl.read_inventory(slutarkiv_root, object_id), sip)
        ocfl.seal(slutarkiv_root, object_id)  # Object Lock on a bucket (a rerun seals what a crash left unsealed)
        inventory = ocfl.read_inventory(slutarkiv_root, object_id)
        receipt_digest = next(d for d, paths in inventory["fixity"]["sha256"].items()
                              if any(p.endswith(f"/{RECEIPT}") for p in paths))
        failpoint("transfer.after_copy_before_record")
        with cat.session() as s:
            p = s.get(Package, package_id)
            p.status, p.storage, p.package_type = PackageStatus.TRANSFERRED, "slutarkiv", "AIP"
            p.location = f"ocfl:{object_id}"
            cat.add_event(s, type="transfer", outcome="success", agent=AGENT, package_id=package_id, time=now,
                          detail=f"AIP written to the slutarkiv as OCFL object {object_id} (v1, "
                                 f"{sum(len(v) for v in inventory['manifest'].values())} files) and verified")
            cat.add_event(s, type="fixity check", outcome="success", agent=AGENT, package_id=package_id, time=now,
                          detail="every file of the OCFL object matches its SHA-512 and SHA-256")
            cat.add_event(s, type="receipt", outcome="success", agent=AGENT, package_id=package_id, time=now,
                          detail=f"kvittens {RECEIPT} (SHA-256 {receipt_digest}) for {pkg.record_count} records")
    # The copy is verified and recorded: now, and only now, the mellanarkiv copy may go.
    failpoint("transfer.after_record_before_delete")
    pkg = cat.package(package_id)
    key = _mellanarkiv_key(cat, package_id)
    if key and mellanarkiv.exists(key):
        mellanarkiv.delete(key, verified_copy_sha256=pkg.sha256)
        with cat.session() as s:
            cat.add_event(s, type="deletion", outcome="success", agent=AGENT, package_id=package_id,
                          detail=f"removed from the mellanarkiv ({key}) after the transfer was verified")
    return {"package_id": package_id, "object": object_id, "status": pkg.status}


def _premis_event(e: Event):
    """A catalogue event for the AIP's PREMIS: a person's decision names them as the authorizer and the
    software as the executing program; the software's own events name the software."""
    from transforms.packaging.agents import by_person, by_software, is_software
    from transforms.packaging.premis import Event as PremisEvent

    if e.agent_id or (e.type in ("decision", "hold placed", "hold lifted") and not is_software(e.agent)):
        links = (by_person(e.agent), *by_software())
    else:
        links = by_software()
    return PremisEvent(identifier=f"catalogue-event-{e.id}", type=e.type, time=e.time, outcome=e.outcome,
                       detail=e.detail, agents=links)


def _mellanarkiv_key(cat: Catalogue, package_id: str) -> str | None:
    """Where the SIP was stored in the mellanarkiv (from its replication event)."""
    for e in cat.events(package_id=package_id):
        if e.type == "replication" and " mellanarkiv " in f" {e.detail} ":
            return e.detail.split("mellanarkiv ", 1)[1].split(",", 1)[0].strip()
    return None


@contextmanager
def _local_sip(mellanarkiv: Storage, pkg: Package) -> Iterator[Path]:
    """The package's SIP as a local file whose SHA-256 is the catalogued one (any backend)."""
    try:
        with mellanarkiv.local_copy(pkg.location, expected_sha256=pkg.sha256) as (path, _):
            yield path
    except StorageError as exc:
        if "differs from the expected" not in str(exc):
            raise
        raise StorageError(f"mellanarkiv: {pkg.location} no longer matches its catalogued SHA-256; "
                           "not transferred (run the fixity audit)") from exc


def _check_data_unchanged(inventory: dict, sip_path: Path) -> None:
    """Every data file in the AIP has the very bytes it had in the SIP (compared by SHA-256)."""
    import hashlib

    from transforms.common.safe_archive import open_package

    # logical paths are "<OBJID>/…" in the object; the SIP's reader gives paths below its root folder
    aip = {p.removeprefix("v1/content/").split("/", 1)[1]: d
           for d, paths in inventory["fixity"]["sha256"].items() for p in paths}
    sip: dict[str, str] = {}
    # The same opener as at intake: the container is what its first bytes say (tar or zip).
    with open_package(sip_path, compressed=False) as reader:
        for rel in reader.files():
            if "/representations/" in f"/{rel}" and "/data/" in rel:
                h = hashlib.sha256()
                with reader.open(rel) as f:
                    while chunk := f.read(1024 * 1024):
                        h.update(chunk)
                sip[rel] = h.hexdigest()
    changed = [p for p, d in sip.items() if aip.get(p) != d]
    if changed:
        raise StorageError(f"slutarkiv: {len(changed)} data file(s) differ from the SIP ({changed[0]}); "
                           "the mellanarkiv copy is kept")


# --- approval of a retention plan's transfers ------------------------------------------------------------

_PLAN_APPROVED = "retention plan as of "


def approve_plan(cat: Catalogue, plan_: Plan, *, by: str | Person, justification: str) -> int:
    """An archivist's approval of the transfers a retention plan lists; returns how many packages it covers.

    Recorded as a decision event on each package (the person as agent, the software executing).
    With ``ARKIV_RETENTION_PLAN_APPROVAL=1`` a transfer waits for it (:func:`require_plan_approval`).
    """
    who = _person(by)
    _require_archivist(who, "approving a retention plan")
    if not justification.strip():
        raise ValueError("approving a retention plan needs a justification")
    now = utcnow()  # one time for every package: the events of one approval are told apart by it
    with cat.session() as s:
        for pid in plan_.transfer:
            cat.add_event(s, type="decision", outcome="success", agent=who, executing_agent=AGENT, package_id=pid,
                          time=now, detail=f"{_PLAN_APPROVED}{plan_.as_of} approved by {_signed(who)}: "
                                           f"{_PLAN_TRANSFER}{justification}")
    return len(plan_.transfer)


_PLAN_TRANSFER = "transfer to the slutarkiv; "


def plan_approvals(cat: Catalogue) -> list[dict]:
    """Every approval of a retention plan, oldest first: the plan's date, who approved (name and identifier),
    when, the justification and the packages whose transfer it covers."""
    with cat.session() as s:
        events = list(s.scalars(sa.select(Event).where(Event.type == "decision", Event.outcome == "success",
                                                       Event.detail.startswith(_PLAN_APPROVED))
                                .order_by(Event.time, Event.id)))
    out: dict[tuple, dict] = {}
    for e in events:
        as_of = e.detail.removeprefix(_PLAN_APPROVED).split(" ", 1)[0]
        row = out.setdefault((as_of, e.agent, e.agent_id, e.time), {
            "as_of": as_of, "by": e.agent, "by_id": e.agent_id, "roles": e.agent_roles, "at": e.time,
            "justification": e.detail.split(_PLAN_TRANSFER, 1)[-1], "packages": []})
        row["packages"].append(e.package_id)
    return list(out.values())


def plan_approved(cat: Catalogue, package_id: str) -> bool:
    """Whether an archivist approved a retention plan that transfers ``package_id``."""
    return any(e.type == "decision" and e.outcome == "success" and e.detail.startswith(_PLAN_APPROVED)
               for e in cat.events(package_id=package_id))


def require_plan_approval(cat: Catalogue, package_id: str, env: dict[str, str] | None = None) -> None:
    """With ``ARKIV_RETENTION_PLAN_APPROVAL=1``: refuse a transfer no archivist has approved."""
    import os

    env = os.environ if env is None else env
    if (env.get("ARKIV_RETENTION_PLAN_APPROVAL") or "").strip().lower() not in ("1", "true", "yes"):
        return
    if not plan_approved(cat, package_id):
        approvals = plan_approvals(cat)
        last = (f"; the last approved plan (as of {approvals[-1]['as_of']}, by {approvals[-1]['by']}) did not list it"
                if approvals else "; no retention plan has been approved yet")
        raise DecisionRefused(f"{package_id}: its transfer waits for an archivist's approval of the retention plan "
                              f"(ARKIV_RETENTION_PLAN_APPROVAL){last}. An archivist approves it with `arkiv "
                              "retention approve-plan --as-of DATE --reason TEXT`")


# --- legal holds ---------------------------------------------------------------------------------------

def add_hold(cat: Catalogue, scope: str, target: str, reason: str, by: str | Person) -> int:
    """Place a legal hold (an archivist's decision)."""
    who = _person(by)
    _require_archivist(who, "a legal hold")
    if scope not in ("package", "record", "record_class"):
        raise ValueError("scope must be package, record or record_class")
    if not reason.strip():
        raise ValueError("a legal hold needs a reason")
    with cat.session() as s:
        h = Hold(scope=scope, target=target, reason=reason, placed_by=who.name, placed_by_id=who.id)
        s.add(h)
        s.flush()
        cat.add_event(s, type="hold placed", outcome="success", agent=who, executing_agent=AGENT,
                      package_id=target if scope == "package" else None,
                      detail=f"legal hold #{h.id} on {scope} {target} placed by {_signed(who)}: {reason}")
        return h.id


def lift_hold(cat: Catalogue, hold_id: int, by: str | Person, reason: str) -> None:
    """Lift a legal hold (an archivist's decision)."""
    who = _person(by)
    _require_archivist(who, "lifting a legal hold")
    with cat.session() as s:
        h = s.get(Hold, hold_id)
        if h is None or h.lifted_at is not None:
            raise ValueError(f"no active legal hold #{hold_id}")
        h.lifted_by, h.lifted_by_id, h.lifted_at = who.name, who.id, utcnow()
        cat.add_event(s, type="hold lifted", outcome="success", agent=who, executing_agent=AGENT,
                      package_id=h.target if h.scope == "package" else None,
                      detail=f"legal hold #{hold_id} on {h.scope} {h.target} lifted by {_signed(who)}: {reason}")


# --- disposal (gallring) ---------------------------------------------------------------------------------

def propose_disposal(cat: Catalogue, plan_: Plan) -> str | None:
    """Put the packages due for disposal on a list for an archivist to approve (None if there are none)."""
    if not plan_.dispose:
        return None
    list_id = f"gallring-{plan_.as_of}-{uuid.uuid4().hex[:6]}"
    with cat.session() as s:
        s.add(DisposalList(id=list_id, as_of=plan_.as_of, status="proposed", items=json.dumps(plan_.dispose)))
        for pid in plan_.dispose:
            cat.add_event(s, type="appraisal", outcome="success", agent=AGENT, package_id=pid,
                          detail=f"due for disposal as of {plan_.as_of}; on disposal list {list_id}")
    return list_id


def review_disposal(cat: Catalogue, list_id: str, *, by: str | Person, note: str) -> None:
    """The first archivist's signature on a disposal list: reviewed, now awaiting another archivist's approval."""
    who = _person(by)
    _require_archivist(who, "reviewing a disposal list")
    if not note.strip():
        raise ValueError("a review needs a justification")
    with cat.session() as s:
        dl = s.get(DisposalList, list_id)
        if dl is None or dl.status != "proposed":
            raise ValueError(f"disposal list {list_id} is not awaiting a review"
                             + (f" (it is {dl.status})" if dl is not None else ""))
        dl.status = "reviewed"
        dl.reviewed_by, dl.reviewed_by_id, dl.reviewed_at, dl.review_note = who.name, who.id, utcnow(), note
        for pid in json.loads(dl.items):
            cat.add_event(s, type="decision", outcome="success", agent=who, executing_agent=AGENT, package_id=pid,
                          detail=f"disposal list {list_id} reviewed by {_signed(who)}, first of two archivists: "
                                 f"{note}")


def decide_disposal(cat: Catalogue, list_id: str, *, approve: bool, by: str | Person, justification: str,
                    approvers: int | None = None) -> None:
    """An archivist's decision on a disposal list; every decision is an event.

    Approval is the second signature when ``approvers`` is 2 (:func:`approvers_required`): the list
    must have been reviewed, by somebody else. Rejection needs one archivist at any stage before it.
    """
    who = _person(by)
    _require_archivist(who, "approving or rejecting a disposal list")
    if not justification.strip():
        raise ValueError("a decision needs a justification")
    approvers = approvers_required() if approvers is None else approvers
    with cat.session() as s:
        dl = s.get(DisposalList, list_id)
        if dl is None or dl.status not in ("proposed", "reviewed"):
            raise ValueError(f"disposal list {list_id} is not awaiting a decision")
        if approve and _same_person(dl.reviewed_by_id, dl.reviewed_by, who):
            raise DecisionRefused(f"{who.name} reviewed disposal list {list_id}: another archivist must approve it "
                                  "(nobody approves their own proposal)")
        if approve and approvers >= 2 and dl.status != "reviewed":
            raise DecisionRefused(f"disposal list {list_id} needs two archivists: one reviews it first "
                                  f"(`arkiv gallring review {list_id}`), another approves it")
        dl.status = "approved" if approve else "rejected"
        dl.decided_by, dl.decided_by_id, dl.decided_at, dl.justification = who.name, who.id, utcnow(), justification
        second = f"; reviewed by {dl.reviewed_by}" if dl.reviewed_by else ""
        for pid in json.loads(dl.items):
            cat.add_event(s, type="decision", outcome="success" if approve else "failure", agent=who,
                          executing_agent=AGENT, package_id=pid,
                          detail=f"disposal list {list_id} {dl.status} by {_signed(who)}{second}: {justification}")


def execute_disposal(cat: Catalogue, mellanarkiv: Storage, slutarkiv_root: Path | S3Storage, list_id: str,
                     systems: dict) -> dict:
    """Dispose of an approved list: delete, keep tombstones, archive a disposal certificate."""
    from transforms.archive.certificate import archive_certificate

    with cat.session() as s:
        dl = s.get(DisposalList, list_id)
        if dl is None or dl.status != "approved":
            raise ValueError(f"disposal list {list_id} is not approved; nothing is disposed of without approval")
        items, approved_by, approved_at = json.loads(dl.items), dl.decided_by, dl.decided_at
        approved_by_id, reviewed_by, reviewed_by_id = dl.decided_by_id, dl.reviewed_by, dl.reviewed_by_id
    holds = active_holds(cat)
    disposed, skipped = [], []
    for pid in items:
        pkg = cat.package(pid)
        why = hold_reason(cat, pkg, holds) if pkg else "not in the catalogue"
        if pkg is None or why or pkg.status != PackageStatus.STORED:
            skipped.append((pid, why or f"status {pkg.status}"))
            continue
        rule = systems[pkg.system].record_class(pkg.record_class).retention
        with cat.session() as s:
            refs = [r for (r,) in s.execute(sa.select(Record.reference).where(Record.package_id == pid))]
            if s.get(Tombstone, pid) is None:
                s.add(Tombstone(package_id=pid, system=pkg.system, record_class=pkg.record_class, period=pkg.period,
                                sha256=pkg.sha256, size=pkg.size, record_count=pkg.record_count,
                                references=json.dumps(refs, ensure_ascii=False), rule=f"{rule.period} from "
                                f"{rule.counted_from}: {rule.basis}", disposal_list=list_id,
                                approved_by=approved_by, approved_at=approved_at, approved_by_id=approved_by_id,
                                reviewed_by=reviewed_by, reviewed_by_id=reviewed_by_id))
        failpoint("disposal.after_tombstone_before_delete")
        if mellanarkiv.exists(pkg.location):
            mellanarkiv.delete(pkg.location, verified_copy_sha256=pkg.sha256)
        failpoint("disposal.after_delete_before_record")
        with cat.session() as s:
            p = s.get(Package, pid)
            p.status = PackageStatus.DISPOSED
            cat.add_event(s, type="deletion", outcome="success", agent=AGENT, package_id=pid,
                          detail=f"disposed of (gallrad) under list {list_id}, approved by {approved_by}"
                                 + (f" after review by {reviewed_by}" if reviewed_by else "") + "; "
                                 f"tombstone kept; rule: {rule.basis}")
        disposed.append(pid)
    failpoint("disposal.before_certificate")
    certificate = archive_certificate(cat, slutarkiv_root, list_id, disposed, skipped)
    with cat.session() as s:
        dl = s.get(DisposalList, list_id)
        dl.status, dl.certificate = "executed", certificate
    return {"list": list_id, "disposed": disposed, "skipped": skipped, "certificate": certificate}


# --- fixity audit -------------------------------------------------------------------------------------------

def audit(cat: Catalogue, mellanarkiv: Storage, slutarkiv_root: Path | S3Storage) -> dict:
    """Re-read every stored package, record a fixity event for each; returns the ones that no longer match."""
    from transforms.archive import ocfl

    bad, checked = [], 0
    for p in cat.packages():
        if p.status == PackageStatus.STORED and p.storage == "mellanarkiv":
            try:
                ok = mellanarkiv.stat(p.location).sha256 == p.sha256
                detail = "SHA-256 matches" if ok else "SHA-256 DOES NOT MATCH the catalogue"
            except StorageError as exc:
                ok, detail = False, str(exc)
        elif p.status == PackageStatus.TRANSFERRED and p.location.startswith("ocfl:"):
            problems = ocfl.verify_object(slutarkiv_root, p.location.removeprefix("ocfl:")) \
                if ocfl.object_exists(slutarkiv_root, p.location.removeprefix("ocfl:")) else ["object missing"]
            ok = not problems
            detail = "every file matches its SHA-512 and SHA-256" if ok else "; ".join(problems[:5])
        else:
            continue
        checked += 1
        with cat.session() as s:
            cat.add_event(s, type="fixity check", outcome="success" if ok else "failure", agent=AGENT,
                          package_id=p.id, detail=f"fixity audit ({p.storage}): {detail}")
        if not ok:
            bad.append({"package_id": p.id, "storage": p.storage, "location": p.location, "problem": detail})
    return {"checked": checked, "failed": bad}



# --- steps for the retention DAG and the CLI (settings in, small dicts out) ------------------------------

def _ctx(settings):
    from transforms.archive.storage import storage_for
    from transforms.config.systems import load_systems

    cat = Catalogue(settings.catalogue_url)
    cat.migrate()
    store = storage_for(settings.mellanarkiv, "mellanarkiv", settings.s3, work_dir=settings.build / ".downloads")
    return cat, store, load_systems(settings.systems_dir)


def _identified_files(cat: Catalogue, package_id: str, root: Path) -> list:
    """The package's files as the catalogue identified them, for the AIP's PREMIS: every file
    still in the package, with its PUID (or none, said as unidentified), format, SHA-256 and size."""
    from transforms.catalogue import FileFormat
    from transforms.packaging.premis import FileObject

    with cat.session() as s:
        rows = s.execute(sa.select(FileFormat).where(FileFormat.package_id == package_id)
                         .order_by(FileFormat.path)).scalars().all()
    out = []
    for r in rows:
        if not (root / r.path).is_file():
            continue  # a file held back in quarantine, or a path of another layout
        out.append(FileObject(r.path, r.sha256, r.size, r.format_name or r.mime or "unknown", puid=r.puid,
                              format_version=r.format_version or "",
                              format_note=f"{r.tool} ({r.method})" if r.tool else ""))
    return out


def step_plan(settings, as_of: str) -> dict:
    """What is due on ``as_of`` (ISO date); writes the dry-run report to the reports folder."""
    cat, store, _ = _ctx(settings)
    p = plan(cat, dt.date.fromisoformat(as_of[:10]))
    report = settings.reports / "retention" / f"plan-{p.as_of}.txt"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(p.report(cat) + "\n", encoding="utf-8")
    return {**p.to_dict(), "report": str(report)}


def step_transfer(settings, package_id: str) -> dict:
    cat, store, systems = _ctx(settings)
    require_plan_approval(cat, package_id)
    pkg = cat.package(package_id)
    rule = systems[pkg.system].record_class(pkg.record_class).retention
    basis = f"{rule.action} after {rule.period} from {rule.counted_from}: {rule.basis}"
    return transfer(cat, store, slutarkiv(settings), package_id, basis=basis)


def step_dispose(settings, plan_: dict) -> dict:
    """Execute every approved disposal list, then propose a new list for what is newly due."""
    cat, store, systems = _ctx(settings)
    with cat.session() as s:
        approved = [d.id for d in s.scalars(sa.select(DisposalList).where(DisposalList.status == "approved"))]
    executed = [execute_disposal(cat, store, slutarkiv(settings), lid, systems) for lid in approved]
    p = Plan(plan_["as_of"], dispose=[pid for pid in plan_["dispose"]
                                      if pid not in _packages_in_open_lists(cat)])
    proposed = propose_disposal(cat, p)
    return {"executed": executed, "proposed": proposed}


def step_audit(settings) -> dict:
    cat, store, _ = _ctx(settings)
    return audit(cat, store, slutarkiv(settings))
