"""``arkiv``: the command line for archivists, system owners and IT operations.

The same code the DAGs run, without Airflow::

    arkiv validate PATH…              check a package (folder, .tar or .zip) against CSIP/SIP/FGS
    arkiv prepare PACKAGE --out DIR   make a delivered E-ARK 2.x package an FGS 2.0 package (docs/prepare.md)
    arkiv demo [--size N] [--bad N]   generate every demo source system under var/demo, var/inbox
    arkiv run SYSTEM --start D --end D  run the whole chain for one interval (no Airflow)
    arkiv summary [--json]            each batch's history (gate, decisions, cases) and packages
    arkiv packages [--system S]       list the catalogued packages
    arkiv events PACKAGE_ID           a package's event history
    arkiv retention plan|run [--as-of D]  the retention schedule: dry run, or transfer/dispose
    arkiv retention approve-plan [--as-of D] --reason TEXT  an archivist approves the plan's transfers
    arkiv gallring list|show|review|approve|reject [LIST] --by NAME --reason TEXT [--yes]
    arkiv certificate LIST [--xml]    a disposal certificate (gallringsbevis), Swedish and English
    arkiv transfers [--system S]      packages transferred to the slutarkiv; `arkiv receipt P --transfer`
    arkiv status [SYSTEM] [--json]    every interval the schedule says is due, and its state
    arkiv drill [--home DIR]          a failed quality gate end to end, in a home of its own
    arkiv hold add|remove|list        legal holds on a package, record or record class
    arkiv audit                       fixity audit of the mellanarkiv and the slutarkiv
    arkiv conversions [prune --unused-days N [--dry-run]]  the PDF/A conversion cache: size, or prune it
    arkiv reconcile [--deep] [--repair] [--json]  catalogue vs storage: orphans, missing, half-finished
    arkiv quarantine list|show|approve|reject [CASE] --by NAME --reason TEXT [--yes]
    arkiv index | search | export | access-log | access-token | receipt | api   access (docs/access-api.md)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from transforms import SOFTWARE_NAME, __version__
from transforms.common.errors import ArkivError, ConfigError, ContentError
from transforms.common.masking import safe_message
from transforms.config.settings import Settings


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    import shlex

    import demo
    from transforms.config.systems import load_systems

    settings.ensure()
    systems = load_systems(settings.systems_dir)
    if args.systems:
        wanted = set(args.systems.split(","))
        unknown = wanted - set(systems)
        if unknown:
            raise ConfigError(f"no such system(s): {', '.join(sorted(unknown))}")
        systems = {k: v for k, v in systems.items() if k in wanted}
    for line in demo.generate_all(settings.home, systems, size=args.size, seed=args.seed, bad=args.bad):
        print(line)
    env = demo.environment(settings.home, systems)
    env_file = settings.demo / "env.sh"
    env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items())), encoding="utf-8")
    print(f"connections and folders for the DAGs: {env_file}")
    return 0


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from transforms import pipeline

    sys_ = pipeline.system(settings, args.system)
    url = args.source_url or (settings.connection_url(sys_.connection) if sys_.connection else None)
    settings.ensure()

    def said(step, value) -> None:
        if step.name == "extract":
            print(f"extracted {value['batch']}: " + ", ".join(f"{v} {k}" for k, v in value["rows"].items()))

    # The chain's steps in their order (transforms.chain), under the interval's lock: another
    # arkiv run or a DAG run of the same period stops this one before it does anything.
    done = pipeline.run_interval(settings, args.system, args.start, args.end, url, on_step=said)
    print(f"{done['packages_new']} new package(s), {done['packages_total']} in all for {args.system} {done['batch']}")
    return 0


def summary_text(settings: Settings) -> str:
    """The demo's closing summary: each batch's real history, packages, and where things are."""
    from transforms.summary import summary_text as text

    return text(settings)


def _cmd_summary(args: argparse.Namespace, settings: Settings) -> int:
    if args.json:
        from transforms.summary import summary_json

        print(json.dumps(summary_json(settings), indent=2, ensure_ascii=False))
        return 0
    print(summary_text(settings))
    return 0


#: what each decision verb did, in the past tense, in English and Swedish
DECIDED = {"approve": ("approved with deviation", "godkänd med avvikelse"), "reject": ("rejected", "avvisad")}


def _confirm(args: argparse.Namespace, question: str) -> None:
    """Ask before a decision that is kept for ever; ``--yes`` answers for scripts.

    Without a terminal (a script, a pipe) there is nobody to ask: the decision still needs
    --by and --reason, which is what a script's author has confirmed by writing them.
    """
    if getattr(args, "yes", False) or not sys.stdin or not sys.stdin.isatty():
        return
    answer = input(f"{question} [y/N / j/N] ").strip().lower()
    if answer not in ("y", "yes", "j", "ja"):
        raise ConfigError("not confirmed; nothing was decided")


def _require_reason(args: argparse.Namespace) -> None:
    if not (args.reason or "").strip():
        raise ConfigError("a decision needs a justification: --reason TEXT (kept for ever"
                          + (", and written into PREMIS as the deviation" if args.action == "approve" else "") + ")")


def _cmd_packages(args: argparse.Namespace, settings: Settings) -> int:
    from transforms.catalogue import Catalogue

    cat = Catalogue(settings.catalogue_url)
    cat.migrate()
    rows = [{"id": p.id, "system": p.system, "record_class": p.record_class, "period": p.period, "status": p.status,
             "size": p.size, "sha256": p.sha256, "storage": p.storage, "location": p.location,
             "records": p.record_count} for p in cat.packages(args.system)]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        for r in rows:
            print(f"{r['id']}  {r['system']:<8} {r['period']:<8} {r['record_class']:<22} {r['status']:<8} "
                  f"{r['size']:>10,} B  {r['storage']}:{r['location']}")
    return 0


def _cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    from transforms.catalogue import Catalogue

    cat = Catalogue(settings.catalogue_url)
    cat.migrate()
    for e in cat.events(package_id=args.package_id):
        print(f"{e.time.isoformat()}  {e.type:<14} {e.outcome:<8} {e.detail}")
    return 0


def _today(args) -> str:
    return args.as_of or dt.date.today().isoformat()


def _cmd_retention(args: argparse.Namespace, settings: Settings) -> int:
    from transforms.archive import retention

    settings.ensure()
    if args.action == "approve-plan":
        return _approve_plan(args, settings)
    p = retention.step_plan(settings, _today(args))
    cat = _catalogue(settings)
    if args.action == "plan":
        print(json.dumps(p, indent=2) if args.json else retention.Plan(
            p["as_of"], p["transfer"], p["dispose"], [tuple(h) for h in p["held"]], p["unfinished"],
            p["not_due"]).report(cat))
        return 0
    for pid in p["transfer"] + p["unfinished"]:
        r = retention.step_transfer(settings, pid)
        print(f"transferred {pid} to the slutarkiv as OCFL object {r['object']}")
    d = retention.step_dispose(settings, p)
    for e in d["executed"]:
        print(f"disposal list {e['list']}: {len(e['disposed'])} disposed of, {len(e['skipped'])} kept; "
              f"certificate {e['certificate']}")
    if d["proposed"]:
        print(f"disposal list {d['proposed']} proposed: one archivist reviews it with `arkiv gallring review "
              f"{d['proposed']} --reason TEXT`, then another approves it with `arkiv gallring approve "
              f"{d['proposed']} --reason TEXT` (--by NAME each without an identity provider)")
    from transforms.access.service import step_sync_index

    step_sync_index(settings)
    return 0


def _catalogue(settings: Settings):
    from transforms.catalogue import Catalogue

    cat = Catalogue(settings.catalogue_url)
    cat.migrate()
    return cat


def _cmd_gallring(args: argparse.Namespace, settings: Settings) -> int:
    from transforms.archive.retention import decide_disposal
    from transforms.catalogue import DisposalList

    cat = _catalogue(settings)
    if args.action == "list":
        from transforms.archive.evidence import disposals

        rows = disposals(cat)
        if args.json:
            print(json.dumps(rows, indent=2, ensure_ascii=False))
            return 0
        for d in rows:
            print(f"{d['list']}  {d['status']:<9} as of {d['as_of']}  {d['packages']} package(s)"
                  + (f"  decided by {d['decided_by']}" if d["decided_by"] else "")
                  + (f"  certificate: `arkiv certificate {d['list']}`" if d["certificate"] else ""))
            for t in d["disposed"]:
                print(f"    disposed of / gallrat {t['disposed_at'][:10]}: {t['system']} {t['period']} "
                      f"{t['record_class']}: {t['records']} record(s), rule / regel: {t['rule']}")
        return 0
    if not args.list_id:
        raise ConfigError("give the disposal list's id")
    if args.action == "show":
        with cat.session() as s:
            d = s.get(DisposalList, args.list_id)
            if d is None:
                raise ConfigError(f"no disposal list {args.list_id}")
            print(f"{d.id}: {d.status}, as of {d.as_of}")
            for pid in json.loads(d.items):
                p = cat.package(pid)
                print(f"  {pid}  {p.system} {p.period} {p.record_class}: {p.record_count} records, due {p.due_date}"
                      f"; rule / regel: {_retention_rule(settings, p.system, p.record_class)}")
        return 0
    from transforms.access.identity import decider

    who = decider(args.by)  # the signed-in archivist; --by NAME only without an identity provider
    if not (args.reason or "").strip():
        raise ConfigError("a decision needs a justification: --reason TEXT (kept for ever)")
    verb = args.action
    _confirm(args, f"{verb} disposal list {args.list_id} as {who.name}?")
    if verb == "review":
        from transforms.archive.retention import review_disposal

        review_disposal(cat, args.list_id, by=who, note=args.reason)
        print(f"disposal list {args.list_id} reviewed by {who.name}; another archivist approves it / "
              f"gallringslista granskad av {who.name}; en annan arkivarie godkänner den")
        return 0
    decide_disposal(cat, args.list_id, approve=verb == "approve", by=who, justification=args.reason)
    done = {"approve": ("approved", "godkänd"), "reject": ("rejected", "avvisad")}[verb]
    print(f"disposal list {args.list_id} {done[0]} by {who.name} / gallringslista {done[1]} av {who.name}")
    return 0


def _retention_rule(settings: Settings, system: str, record_class: str) -> str:
    """The retention rule of a record class, as a tombstone records it (or why it cannot be told)."""
    from transforms.config.systems import load_system

    try:
        rule = load_system(settings.systems_dir / f"{system}.yaml").record_class(record_class).retention
    except (ConfigError, KeyError, ValueError, OSError):
        return "(not in the current configuration)"
    return f"{rule.period} from {rule.counted_from}: {rule.basis}"


def _cmd_certificate(args: argparse.Namespace, settings: Settings) -> int:
    from transforms.archive.evidence import certificate, certificate_text
    from transforms.archive.storage import slutarkiv

    data, fields = certificate(_catalogue(settings), slutarkiv(settings), args.list_id)
    if args.xml:
        sys.stdout.write(data.decode("utf-8"))
    elif args.json:
        print(json.dumps(fields, indent=2, ensure_ascii=False))
    else:
        print(certificate_text(fields))
    return 0


def _cmd_transfers(args: argparse.Namespace, settings: Settings) -> int:
    from transforms.archive.evidence import transfers

    rows = transfers(_catalogue(settings), args.system)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for t in rows:
        print(f"{t['package_id']}  {t['system']:<8} {t['period']:<8} {t['record_class']:<22} {t['records']:>6} "
              f"record(s)  transferred {(t['transferred_at'] or '?')[:10]}  OCFL {t['object']}")
    if rows:
        print("receipt / kvittens: `arkiv receipt PACKAGE --transfer` (--xml for the XML)")
    else:
        print("(nothing transferred to the slutarkiv yet / inget överfört till slutarkivet än)")
    return 0


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from transforms import status

    rows = status.status(settings, args.system, limit=None if args.all else status.DEFAULT_LIMIT)
    print(status.to_json(rows) if args.json else status.table(rows))
    return 0


def _cmd_drill(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from transforms import drill

    drill.run(Path(args.home) if args.home else drill.new_home(), archivist=args.archivist, size=args.size)
    return 0


def _approve_plan(args: argparse.Namespace, settings: Settings) -> int:
    """Show what the retention plan would transfer, then record the signed-in archivist's approval of it."""
    from transforms.access.identity import decider
    from transforms.archive import retention

    who = decider(args.by)  # the signed-in archivist; --by NAME only without an identity provider
    if not (args.reason or "").strip():
        raise ConfigError("approving a retention plan needs a justification: --reason TEXT (kept for ever)")
    cat = _catalogue(settings)
    plan_ = retention.plan(cat, dt.date.fromisoformat(_today(args)))
    print(plan_.report(cat))
    if not plan_.transfer:
        print(f"nothing to approve: the plan as of {plan_.as_of} transfers no package")
        return 0
    _confirm(args, f"approve the transfer of {len(plan_.transfer)} package(s) to the slutarkiv as {who.name}?")
    n = retention.approve_plan(cat, plan_, by=who, justification=args.reason)
    print(f"retention plan as of {plan_.as_of} approved by {who.name}: {n} transfer(s) to the slutarkiv / "
          f"överföring till slutarkivet godkänd av {who.name}")
    return 0


def _cmd_hold(args: argparse.Namespace, settings: Settings) -> int:
    from transforms.archive.retention import active_holds, add_hold, lift_hold

    cat = _catalogue(settings)
    if args.action == "list":
        for h in active_holds(cat):
            print(f"#{h.id}  {h.scope:<12} {h.target}  — {h.reason} (placed by {h.placed_by}, {h.placed_at:%Y-%m-%d})")
        return 0
    from transforms.access.identity import decider

    who = decider(args.by)  # the signed-in archivist; --by NAME only without an identity provider
    if not (args.reason or "").strip():
        raise ConfigError("a legal hold needs --reason")
    if args.action == "add":
        if not (args.scope and args.target):
            raise ConfigError("give --package ID, --record SYSTEM:SOURCE_ID or --record-class SYSTEM:CLASS")
        hid = add_hold(cat, args.scope, args.target, args.reason, who)
        print(f"legal hold #{hid} placed on {args.scope} {args.target}")
    else:
        lift_hold(cat, int(args.hold_id), who, args.reason)
        print(f"legal hold #{args.hold_id} lifted")
    return 0


def _cmd_conversions(args: argparse.Namespace, settings: Settings) -> int:
    from transforms.pipeline import conversion_cache

    cache = conversion_cache(settings)
    if args.action == "prune":
        if args.unused_days is None or args.unused_days < 1:
            raise ConfigError("arkiv conversions prune: give --unused-days N (1 or more)")
        r = cache.prune(args.unused_days * 86400, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        print(f"conversion cache {cache.root}: {verb} {r.removed_entries} entries ({r.removed_bytes / 1e6:.1f} MB) "
              f"not used for {args.unused_days} days; {r.kept_entries} kept")
        if cache.shared is not None:
            print(f"shared in the working bucket: {verb} {r.shared_removed} stored before then "
                  f"({r.shared_bytes / 1e6:.1f} MB)")
        return 0
    entries = list(cache.entries())
    last = min((used for _, _, used in entries), default=None)
    oldest = dt.datetime.fromtimestamp(last, dt.UTC).strftime("%Y-%m-%d") if last is not None else "-"
    print(f"conversion cache {cache.root}: {len(entries)} entries, {sum(n for _, n, _ in entries) / 1e6:.1f} MB, "
          f"least recently used {oldest}")
    if cache.shared is not None:
        shared = list(cache.shared.entries())
        print(f"shared in the working bucket: {len(shared)} entries, {sum(n for _, n, _ in shared) / 1e6:.1f} MB")
    return 0


def _cmd_quarantine(args: argparse.Namespace, settings: Settings) -> int:
    from transforms.quality import quarantine as review

    cat = _catalogue(settings)
    if args.action == "list":
        for c in review.cases(cat, None if args.status == "all" else args.status):
            print(f"{c.id}  {c.kind:<8} {c.status:<8} {c.created_at:%Y-%m-%d %H:%M}  "
                  f"{len(json.loads(c.reasons))} reason(s)" + (f"  decided by {c.decided_by}" if c.decided_by else ""))
        return 0
    if not args.case_id:
        raise ConfigError("give the quarantine case's id (see `arkiv quarantine list`)")
    if args.action == "show":
        match = [c for c in review.cases(cat) if c.id == args.case_id]
        if not match:
            raise ConfigError(f"no quarantine case {args.case_id}")
        c = match[0]
        print(f"{c.id}: {c.kind}, {c.status}\n  held in: {c.path}\n  report:  {c.report or '-'}")
        for r in json.loads(c.reasons):
            print(f"  - {r}")
        if c.decided_by:
            print(f"  decided by {c.decided_by} on {c.decided_at:%Y-%m-%d}: {c.justification}")
        return 0
    from transforms.access.identity import decider

    _require_reason(args)
    who = decider(args.by)  # the signed-in archivist; --by NAME only without an identity provider
    what = "approve with deviation" if args.action == "approve" else "reject"
    _confirm(args, f"{what}: quarantine case {args.case_id}, as {who.name}?")
    review.decide(cat, args.case_id, approve=args.action == "approve", by=who, justification=args.reason)
    en, sv = DECIDED[args.action]
    print(f"quarantine case {args.case_id} {en} by {who.name} / karantänärendet {sv} av {who.name}" + (
        "; a DAG run waiting for the decision resumes and archives it with the deviation recorded (after "
        "`arkiv run`, run the interval again) / en körning som väntar på beslutet fortsätter och arkiverar det med "
        "avvikelsen dokumenterad (efter `arkiv run`: kör intervallet igen)" if args.action == "approve" else
        "; the system owner must correct the source, then rerun the interval / systemägaren rättar källan och "
        "kör sedan intervallet igen"))
    return 0


def _cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from transforms.archive.retention import step_audit

    result = step_audit(settings)
    print(f"fixity audit: {result['checked']} package(s) checked, {len(result['failed'])} do not match")
    for f in result["failed"]:
        print(f"  {f['package_id']} ({f['storage']} {f['location']}): {f['problem']}")
    return 1 if result["failed"] else 0


def build_parser() -> argparse.ArgumentParser:
    from transforms.validation import validator as validate

    parser = argparse.ArgumentParser(prog="arkiv",
                                     description=f"{SOFTWARE_NAME}: archive municipal records as FGS packages")
    parser.add_argument("--version", action="version", version=f"arkiv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate packages against CSIP/SIP 2.0.4-2.2.0 and FGS rules")
    validate.add_arguments(p)
    p.set_defaults(func=lambda a, s: validate.run(a))

    from transforms.packaging import prepare

    p = sub.add_parser("prepare", help="prepare a delivered E-ARK 2.x package into an FGS 2.0 package")
    prepare.add_arguments(p)
    p.set_defaults(func=lambda a, s: prepare.run(a))

    p = sub.add_parser("demo", help="generate the demo source systems under var/demo and var/inbox")
    p.add_argument("--size", type=int, default=200, help="root records per system (cases, individuals, …)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bad", type=int, default=0, help="plant this many bad rows of each kind")
    p.add_argument("--systems", help="comma-separated subset (default: every system in dags/systems)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("run", help="run the whole chain for one system and interval, without Airflow")
    p.add_argument("system")
    p.add_argument("--start", required=True, help="interval start (ISO date), inclusive")
    p.add_argument("--end", required=True, help="interval end (ISO date), exclusive")
    p.add_argument("--source-url", help="SQLAlchemy URL of the source database (default: ARKIV_CONN_<ID>)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("summary", help="each batch's history (quality gate, decisions, cases), packages, places")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("packages", help="list catalogued packages")
    p.add_argument("--system")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_packages)

    p = sub.add_parser("retention", help="apply the retention schedule: plan (dry run), approve-plan (an "
                                         "archivist approves its transfers) or run")
    p.add_argument("action", choices=["plan", "approve-plan", "run"])
    p.add_argument("--as-of", help="the date to compute what is due for (default: today)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--by", help="approve-plan: who decides, without an identity provider only (an unauthenticated "
                                "name); with one, the archivist signed in with `arkiv login`")
    p.add_argument("--reason", help="approve-plan: the justification, kept for ever")
    p.add_argument("--yes", action="store_true", help="approve-plan: without asking for confirmation (scripts)")
    p.set_defaults(func=_cmd_retention)

    p = sub.add_parser("gallring", help="disposal lists: list, show, review, approve, reject (two archivists: one "
                                        "reviews, another approves)")
    p.add_argument("action", choices=["list", "show", "review", "approve", "reject"])
    p.add_argument("list_id", nargs="?")
    p.add_argument("--by", help="who decides, without an identity provider only (recorded as an unauthenticated "
                                "name); with one, the archivist signed in with `arkiv login`")
    p.add_argument("--reason", help="the justification, kept for ever")
    p.add_argument("--yes", action="store_true", help="decide without asking for confirmation (scripts)")
    p.add_argument("--json", action="store_true", help="list: as JSON")
    p.set_defaults(func=_cmd_gallring)

    p = sub.add_parser("certificate", help="a disposal certificate (gallringsbevis) from the slutarkiv, sv/en")
    p.add_argument("list_id", help="the disposal list (see `arkiv gallring list`)")
    p.add_argument("--xml", action="store_true", help="the certificate's XML as archived")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_certificate)

    p = sub.add_parser("transfers", help="packages transferred to the slutarkiv, with their receipts")
    p.add_argument("--system")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_transfers)

    p = sub.add_parser("status", help="every interval a system's schedule says is due, and its state")
    p.add_argument("system", nargs="?", help="one system (default: every system)")
    p.add_argument("--all", action="store_true", help="every due interval, not only the newest "
                                                      "60 per system")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("drill", help="a failed quality gate end to end in a separate ARKIV_HOME: bad batch → "
                                     "case → decision → archived with the deviation in PREMIS")
    p.add_argument("--home", help="the drill's ARKIV_HOME (default: a new folder under var/drill)")
    p.add_argument("--archivist", default="Anna Arkivarie (övning / drill)", help="who decides in the drill")
    p.add_argument("--size", type=int, default=30, help="cases in the drill's Lex")
    p.set_defaults(func=_cmd_drill)

    p = sub.add_parser("hold", help="legal holds: add, remove, list")
    p.add_argument("action", choices=["add", "remove", "list"])
    p.add_argument("hold_id", nargs="?", help="remove: the hold's number")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--package", dest="target_package")
    target.add_argument("--record", dest="target_record", help="SYSTEM:SOURCE_ID")
    target.add_argument("--record-class", dest="target_class", help="SYSTEM:RECORD_CLASS")
    p.add_argument("--by", help="who decides, without an identity provider only (an unauthenticated name)")
    p.add_argument("--reason")
    p.set_defaults(func=_cmd_hold)

    p = sub.add_parser("quarantine", help="quarantined batches, deliveries and packages: list, show, decide")
    p.add_argument("action", choices=["list", "show", "approve", "reject"])
    p.add_argument("case_id", nargs="?")
    p.add_argument("--status", default="all", choices=["all", "open", "approved", "rejected"])
    p.add_argument("--by", help="who decides, without an identity provider only (recorded as an unauthenticated "
                               "name); with one, the signed-in archivist (`arkiv login`)")
    p.add_argument("--reason", help="the justification, kept with the case and in PREMIS (required)")
    p.add_argument("--yes", action="store_true", help="decide without asking for confirmation (scripts)")
    p.set_defaults(func=_cmd_quarantine)

    p = sub.add_parser("conversions", help="the PDF/A conversion cache: its size, or prune what has not been "
                                           "used for a while (a pruned entry costs one conversion when next needed)")
    p.add_argument("action", nargs="?", choices=["show", "prune"], default="show")
    p.add_argument("--unused-days", type=int, help="prune: remove entries not used for this many days")
    p.add_argument("--dry-run", action="store_true", help="prune: say what would go, remove nothing")
    p.set_defaults(func=_cmd_conversions)

    p = sub.add_parser("audit", help="fixity audit: re-read every package and compare checksums")
    p.set_defaults(func=_cmd_audit)

    from transforms.archive import reconcile

    p = sub.add_parser("reconcile", help="compare the catalogue with both archives; --repair what is provably safe")
    reconcile.add_arguments(p)
    p.set_defaults(func=reconcile.run)

    from transforms.config import checkconfig

    p = sub.add_parser("check-config", help="check system YAMLs against the JSON Schema and the loader")
    checkconfig.add_arguments(p)
    p.set_defaults(func=checkconfig.run)

    p = sub.add_parser("events", help="a package's event history from the catalogue")
    p.add_argument("package_id")
    p.set_defaults(func=_cmd_events)

    from transforms.access.cli import add_parsers as add_access_parsers

    add_access_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``arkiv`` console script; exit 2 on usage and configuration errors."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code in (0, None) else 2
    settings = Settings.from_env()
    if getattr(args, "func", None) is _cmd_hold:
        args.scope, args.target = next(((scope, value) for scope, value in (
            ("package", args.target_package), ("record", args.target_record),
            ("record_class", args.target_class)) if value), (None, None))
    try:
        return int(args.func(args, settings))
    except ConfigError as exc:
        print(f"arkiv: configuration error: {safe_message(exc)}", file=sys.stderr)
        return 2
    except ContentError as exc:
        print(f"arkiv: content problem: {safe_message(exc)}", file=sys.stderr)
        return 1
    except ArkivError as exc:
        print(f"arkiv: {safe_message(exc)}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"arkiv: {safe_message(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"arkiv: {safe_message(_os_error(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:
        what = _infrastructure_error(exc)
        if what is None:
            raise
        print(f"arkiv: {safe_message(what)}", file=sys.stderr)
        return 1


def _os_error(exc: OSError) -> str:
    """One line for a failed file or network operation: what, where, and what to do."""
    import errno

    where = f": {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on device{where} (errno {exc.errno}). Nothing unfinished was recorded: free space "
                "(or point ARKIV_BUILD_DIR / ARKIV_STAGING_DIR elsewhere) and rerun the same command.")
    return f"system error: {exc.strerror or exc}{where} (errno {exc.errno}); rerun once it is fixed"


def _infrastructure_error(exc: Exception) -> str | None:
    """A one-line message for the catalogue database or the object store failing underneath us (not
    our own errors, which say more), or None. Only the driver's first line: never the statement's
    values, which may be record content."""
    module = type(exc).__module__
    if module.startswith("sqlalchemy"):
        from sqlalchemy.exc import DBAPIError

        orig = exc.orig if isinstance(exc, DBAPIError) else exc
        first = (str(orig).strip().splitlines() or [""])[0]
        return (f"the catalogue database failed: {type(orig).__name__}: {first}. The unfinished transaction "
                "was rolled back (nothing half-recorded); rerun once the database answers.")
    if module.startswith(("botocore", "boto3", "urllib3")):
        return f"the object store failed: {type(exc).__name__}: {exc}; rerun once it answers"
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["main", "summary_text"]
