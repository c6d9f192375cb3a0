"""The ``arkiv`` subcommands for access: index, search, export, access-log, access-token, receipt, api,
and sign-in: login, logout, whoami, decisions.

``arkiv search -`` and ``--personnummer -`` read the search text or the number from standard input,
so that neither stays in the shell history or the process list.

With an identity provider configured (docs/identity.md) the CLI acts as the person signed in
with ``arkiv login`` (device authorization grant) or whose token is in ``ARKIV_TOKEN``, in the
role their groups give them; ``--as``/``--role`` are refused. Without one (the embedded default)
it runs on the archive's own machine as a principal named by ``--as`` (default ``cli:<user>``)
with the role given by ``--role`` (default archivist). Every read is logged like an API call.
"""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path

from transforms.config.settings import Settings


def _principal(args: argparse.Namespace):
    from transforms.access.auth import Principal
    from transforms.access.oidc import OidcConfig

    config = OidcConfig.from_env()
    if config is not None:
        from transforms.access.identity import cli_identity
        from transforms.common.errors import ConfigError

        if getattr(args, "as_name", None) or getattr(args, "role", "archivist") != "archivist":
            raise ConfigError("--as and --role are not taken when an identity provider is configured: the CLI acts "
                              "as whoever is signed in (`arkiv login`)")
        return cli_identity(config).principal(getattr(args, "scope_system", None))
    return Principal(args.as_name or f"cli:{getpass.getuser()}", args.role, getattr(args, "scope_system", None),
                     getattr(args, "cleared", False))


def _archive(settings: Settings):
    from transforms.access.service import Archive

    settings.ensure()
    return Archive(settings)


def _who_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--as", dest="as_name", help="who is reading (logged; default cli:<user>)")
    p.add_argument("--role", default="archivist", choices=["archivist", "system_owner", "client", "researcher"])
    p.add_argument("--scope", dest="scope_system", help="the system a system_owner or client is scoped to")
    p.add_argument("--purpose", default="", help="why (logged)")


def _cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    arc = _archive(settings)
    if args.package:
        r = arc.index_package(args.package)
        print(f"indexed {r['package_id']}: {r['records']} record(s), {r['documents']} document(s), "
              f"{'verified' if r['verified'] else 'NOT verified'} ({r['storage']})")
        return 0
    r = arc.sync()
    print(f"search index: {r['indexed']} package(s) indexed, {r['moved']} moved, {r['tombstoned']} tombstoned, "
          f"{len(r['failed'])} failed")
    for f in r["failed"]:
        print(f"  {f['package_id']}: {f['error']}")
    return 1 if r["failed"] else 0


def _read_stdin_line(what: str) -> str:
    import sys

    line = sys.stdin.readline().strip()
    if not line:
        raise ValueError(f"{what}: expected on standard input")
    return line


def _cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    arc = _archive(settings)
    # a personnummer or a name on the command line stays in the shell history and the process list:
    # "-" reads it from standard input instead
    query = " ".join(args.query)
    if query == "-":
        query = _read_stdin_line("the search text")
    pnr = _read_stdin_line("the personnummer") if args.personnummer == "-" else args.personnummer
    r = arc.search(_principal(args), query, purpose=args.purpose, system=args.system,
                   record_class=args.record_class, personnummer=pnr, limit=args.limit)
    if args.json:
        print(json.dumps({"total": r.total, "hits": r.hits}, ensure_ascii=False, indent=2))
        return 0
    print(f"{r.total} hit(s)")
    for h in r.hits:
        title = "[classified: " + (h["secrecy_reference"] or "OSL") + "]" if h["title"] is None and h["classified"] \
            else ("[disposed of]" if h.get("tombstone") else h["title"] or "")
        print(f"  {h['reference']:<16} {h['closed'] or '':<10} {h['storage']:<11} {h['link']}  {title}")
    return 0


def _cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from transforms.access import dip

    arc = _archive(settings)
    records = [r for r in (args.records or "").split(",") if r.strip()]
    out = Path(args.out) if args.out else settings.home / "exports"
    result = dip.export(arc, _principal(args), records=records, q=args.q, system=args.system, purpose=args.purpose,
                        dest=out)
    print(f"DIP {result['package_id']}: {len(result['records'])} record(s), {len(result['withheld'])} "
          f"withholding(s), {result['size']:,} bytes")
    print(f"  {result['path']}")
    for w in result["withheld"]:
        print(f"  withheld: {w['record']}: {w['what']} — {w['why']}")
    return 0


def _cmd_access_log(args: argparse.Namespace, settings: Settings) -> int:
    arc = _archive(settings)
    rows = arc.access_log(_principal(args), actor=args.actor, target=args.target, action=args.action,
                          limit=args.limit)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for r in rows:
        who = f"{r['actor']} ({r['name']})" if r.get("name") else r["actor"]
        roles = ",".join(r.get("roles") or []) or r["role"]
        print(f"{r['time']}  {who:<30} {roles:<22} {r['action']:<10} {r['outcome']:<9} {r['target']}"
              + (f"  purpose: {r['purpose']}" if r["purpose"] else ""))
    return 0


def _cmd_login(args: argparse.Namespace, settings: Settings) -> int:
    from transforms.access.identity import cli_identity, device_login, save_token, token_file
    from transforms.access.oidc import OidcConfig
    from transforms.common.errors import ConfigError

    config = OidcConfig.from_env()
    if config is None:
        raise ConfigError("no identity provider is configured (ARKIV_OIDC_ISSUER); without one the CLI needs no "
                          "sign-in")

    def show(started: dict) -> None:
        print(f"To sign in, open {started.get('verification_uri')} and enter the code {started.get('user_code')}")
        print(f"Logga in: öppna {started.get('verification_uri')} och skriv in koden {started.get('user_code')}")
        if started.get("verification_uri_complete"):
            print(f"  (or open / eller öppna {started['verification_uri_complete']})")

    answer = device_login(config, show=show)
    path = token_file()
    save_token(path, {"issuer": config.issuer, "access_token": answer["access_token"],
                      "expires_in": answer.get("expires_in")})
    me = cli_identity(config)
    print(f"signed in as {me.name} ({me.subject}); roles: {', '.join(me.roles) or 'none'}; token kept in {path}")
    return 0


def _cmd_logout(args: argparse.Namespace, settings: Settings) -> int:
    from transforms.access.identity import token_file

    path = token_file()
    path.unlink(missing_ok=True)
    print(f"signed out: {path} removed")
    return 0


def _cmd_whoami(args: argparse.Namespace, settings: Settings) -> int:
    p = _principal(args)
    print(json.dumps({"name": p.name, "display_name": p.display_name, "role": p.role, "roles": list(p.roles),
                      "system": p.system, "creators": list(p.creators)}, ensure_ascii=False))
    return 0


def _cmd_decisions(args: argparse.Namespace, settings: Settings) -> int:
    from transforms.access.auth import AccessDenied
    from transforms.access.identity import decisions

    who = _principal(args)
    if who.role != "archivist":
        raise AccessDenied("only archivists read the report of decisions")
    rows = decisions(_archive(settings).cat)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for r in rows:
        def sig(x):
            return f"{x['name']} [{x['id']}] {x['at'] or ''}" if x else "—"

        print(f"{r['what']:<40} {r['status']:<9} first: {sig(r['first'])}  second: {sig(r['second'])}")
    return 0


def _cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    import datetime as dt

    from transforms.access import auth

    arc = _archive(settings)
    ttl = dt.timedelta(hours=args.ttl_hours) if args.ttl_hours else None
    if args.action == "add":
        if not args.name:
            raise ValueError("give the credential's name")
        token = auth.add_credential(arc.cat, args.name, args.token_role, system=args.system, cleared=args.cleared,
                                    by=args.by or f"cli:{getpass.getuser()}", ttl=ttl)
        print(f"credential {args.name} ({args.token_role}{', ' + args.system if args.system else ''}"
              f"{', cleared' if args.cleared else ''}); the token is shown once, only its hash is kept:")
        print(token)
    elif args.action == "revoke":
        auth.revoke_credential(arc.cat, args.name)
        print(f"credential {args.name} revoked")
    elif args.action == "rotate":
        if not args.name:
            raise ValueError("give the credential's name")
        token = auth.rotate_credential(arc.cat, args.name, ttl=ttl)
        print(f"credential {args.name} rotated: the old token no longer works; the new one is shown once:")
        print(token)
    else:
        from transforms.catalogue import utcnow

        now = utcnow()
        for c in auth.credentials(arc.cat):
            until = auth.expires_at(c)
            state = f"expires {until:%Y-%m-%d %H:%M} UTC" if until > now else f"ended {until:%Y-%m-%d %H:%M} UTC"
            print(f"  {c.id:<20} {c.role:<12} {c.system or '(all systems)':<14} "
                  f"{'cleared' if c.cleared else '':<8} {state}")
    return 0


def _cmd_receipt(args: argparse.Namespace, settings: Settings) -> int:
    import sys

    from transforms.access.receipts import receipt_text, receipt_xml

    if args.transfer:
        from transforms.archive.evidence import transfer_receipt, transfer_receipt_text
        from transforms.archive.storage import slutarkiv
        from transforms.catalogue import Catalogue

        cat = Catalogue(settings.catalogue_url)
        cat.migrate()
        data, fields = transfer_receipt(cat, slutarkiv(settings), args.package_id)
        if args.xml:
            sys.stdout.write(data.decode("utf-8"))
        elif args.json:
            print(json.dumps(fields, ensure_ascii=False, indent=2))
        else:
            print(transfer_receipt_text(fields))
        return 0
    arc = _archive(settings)
    receipt = arc.receipt(_principal(args), args.package_id, purpose=args.purpose)
    if args.xml:
        sys.stdout.write(receipt_xml(receipt).decode("utf-8"))
    elif args.text:
        print(receipt_text(receipt))
    else:
        print(json.dumps(receipt, ensure_ascii=False, indent=2))
    return 0


def _cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from transforms.access.api import create_app, serve

    settings.ensure()
    serve(create_app(settings), host=args.host, port=args.port)
    return 0


def add_parsers(sub) -> None:
    """Add the access subcommands to the ``arkiv`` parser."""
    p = sub.add_parser("index", help="bring the search index up to date (or reindex one package)")
    p.add_argument("--package")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("search", help="search the archive (diarienummer, title, parties, dates, …)")
    p.add_argument("query", nargs="*")
    p.add_argument("--system")
    p.add_argument("--record-class")
    p.add_argument("--personnummer", help="exact match; archivists and system owners only ('-': read it from "
                                          "standard input, out of the shell history)")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    _who_arguments(p)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("export", help="an E-ARK DIP of records for a request (utlämnande), secret parts withheld")
    p.add_argument("--records", help="comma-separated SYSTEM/SOURCE_ID")
    p.add_argument("--q", help="add the hits of this search")
    p.add_argument("--system")
    p.add_argument("--out", help="folder for the DIP (default var/exports)")
    _who_arguments(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("access-log", help="who read what, when and why (archivists)")
    p.add_argument("--actor")
    p.add_argument("--target", help="a record (lex/27), package ID or prefix")
    p.add_argument("--action")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    _who_arguments(p)
    p.set_defaults(func=_cmd_access_log)

    p = sub.add_parser("access-token", help="API credentials: add, rotate, revoke, list (tokens expire: people's "
                                            "after 12 h, business systems' after 90 days by default)")
    p.add_argument("action", choices=["add", "rotate", "revoke", "list"])
    p.add_argument("name", nargs="?")
    p.add_argument("--role", dest="token_role", default="client",
                   choices=["archivist", "system_owner", "client", "researcher"])
    p.add_argument("--system", help="the system a system_owner or client credential is scoped to")
    p.add_argument("--cleared", action="store_true", help="may read records covered by secrecy (OSL)")
    p.add_argument("--by", help="who issues the credential")
    p.add_argument("--ttl-hours", type=float, help="the token's lifetime in hours (default: the role's, "
                                                   "ARKIV_TOKEN_TTL_HOURS_<ROLE>)")
    p.set_defaults(func=_cmd_token)

    p = sub.add_parser("receipt", help="the kvittens of a package (mellanarkiv or slutarkiv): JSON, --text "
                                       "(Swedish and English) or --xml; --transfer: the AIP's transfer receipt")
    p.add_argument("package_id")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--text", action="store_true", help="for a person, in Swedish and English")
    shown.add_argument("--xml", action="store_true", help="XML, schema transforms/schemas/arkivflode-kvittens-1.xsd "
                                                          "(--transfer: arkivflode-receipt-1.xsd)")
    shown.add_argument("--json", action="store_true", help="JSON (the default)")
    p.add_argument("--transfer", action="store_true", help="the receipt the slutarkiv wrote into the package's AIP")
    _who_arguments(p)
    p.set_defaults(func=_cmd_receipt)

    p = sub.add_parser("login", help="sign in through the identity provider (device authorization: open the URL "
                                     "shown, enter the code); the token is kept for you only (mode 0600)")
    p.set_defaults(func=_cmd_login)
    p = sub.add_parser("logout", help="forget the token `arkiv login` kept")
    p.set_defaults(func=_cmd_logout)
    p = sub.add_parser("whoami", help="who the CLI acts as: the signed-in person and their archive roles")
    _who_arguments(p)
    p.set_defaults(func=_cmd_whoami)
    p = sub.add_parser("decisions", help="every irreversible decision and who signed it (disposal lists: both "
                                         "archivists; quarantine approvals with deviation)")
    p.add_argument("--json", action="store_true")
    _who_arguments(p)
    p.set_defaults(func=_cmd_decisions)

    p = sub.add_parser("api", help="serve the archive API (uvicorn)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.set_defaults(func=_cmd_api)
