"""Who is asking: a bearer token turned into a principal, and the CLI's signed-in person.

With an identity provider configured (:class:`~transforms.access.oidc.OidcConfig`) the API and
the pages take the provider's access tokens, people's and business systems' (client
credentials) alike; the catalogue's own API credentials are then refused unless
``ARKIV_OIDC_LOCAL_TOKENS=1`` keeps them working through a changeover. Without a provider the
catalogue's credentials are the only ones (the embedded default).

The CLI signs in with the device authorization grant (``arkiv login``): the token is kept in
``$ARKIV_TOKEN_FILE`` or ``<config dir>/arkivflode/token.json`` (``$XDG_CONFIG_HOME`` or
``~/.config``), readable by its owner only; ``ARKIV_TOKEN`` in the environment takes precedence,
for scripts. Decisions taken in the CLI (gallring, legal holds) name that person; without a
provider they name whoever ``--by NAME`` says, recorded as an unauthenticated name.

:func:`decisions` is the report of irreversible decisions (``arkiv decisions``): a disposal list
is signed twice (the archivist who reviewed it, another who approved it), a quarantine case
once, a retention plan's transfers once; each signature with the identity provider's identifier
(or ``unauthenticated name:…``), the name and when.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from transforms import SOFTWARE_ID
from transforms.access.auth import AccessDenied, Principal, Unauthenticated, authenticate
from transforms.access.oidc import (
    HTTP_TIMEOUT,
    Identity,
    InvalidToken,
    OidcConfig,
    ProviderUnavailable,
    looks_like_jwt,
    validator,
)
from transforms.catalogue import Catalogue, DisposalList, Person, QuarantineCase
from transforms.common.errors import ConfigError


def local_tokens_allowed(env: dict[str, str] | os._Environ | None = None) -> bool:
    env = os.environ if env is None else env
    return (env.get("ARKIV_OIDC_LOCAL_TOKENS") or "").strip().lower() in ("1", "true", "yes")


def principal_for(cat: Catalogue, token: str, *, oidc: OidcConfig | None, system: str | None = None) -> Principal:
    """The principal a bearer token belongs to (provider token or catalogue credential)."""
    if oidc is not None and looks_like_jwt(token):
        return validator(oidc).principal(token, system)
    if oidc is not None and not local_tokens_allowed():
        raise InvalidToken("this archive signs people and systems in through the identity provider; "
                           "the archive's own API tokens are not accepted (ARKIV_OIDC_LOCAL_TOKENS)")
    return authenticate(cat, token)


# --- the CLI: sign in with the device authorization grant, a token kept for the user ------------------

def token_file(env: dict[str, str] | os._Environ | None = None) -> Path:
    """Where ``arkiv login`` keeps the user's token."""
    env = os.environ if env is None else env
    if env.get("ARKIV_TOKEN_FILE"):
        return Path(env["ARKIV_TOKEN_FILE"])
    base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / SOFTWARE_ID / "token.json"


def save_token(path: Path, data: dict) -> None:
    """Write the token file atomically, mode 0600 from the start (never readable by others, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _post_form(url: str, fields: dict[str, str]) -> tuple[int, dict]:
    body = urllib.parse.urlencode(fields).encode("ascii")
    req = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - the provider's endpoint
                                 headers={"Content-Type": "application/x-www-form-urlencoded",
                                          "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as r:  # noqa: S310 - the provider's endpoint
            return r.status, json.loads(r.read(1024 * 1024) or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read(1024 * 1024) or b"{}")
        except ValueError:
            return exc.code, {}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ProviderUnavailable(f"the identity provider does not answer at {url} ({type(exc).__name__})") from None


def device_login(config: OidcConfig, *, show: Callable[[dict], None], sleep: Callable[[float], None] = time.sleep,
                 now: Callable[[], float] = time.monotonic) -> dict:
    """Sign in with the device authorization grant (RFC 8628); returns the token response.

    ``show`` is given the provider's answer (``verification_uri``, ``user_code``, …) to tell the user
    where to go; then the token endpoint is polled at the interval the provider asks for.
    """
    doc = validator(config).discovery()
    endpoint = doc.get("device_authorization_endpoint")
    if not endpoint:
        raise ConfigError("the identity provider offers no device authorization endpoint; sign in elsewhere and "
                          "give the CLI a token in ARKIV_TOKEN")
    fields = {"client_id": config.client_id, "scope": config.scope}
    if config.audience != config.client_id:
        fields["resource"] = config.audience
    status, started = _post_form(endpoint, fields)
    if status != 200 or "device_code" not in started:
        raise Unauthenticated(f"the identity provider refused the sign-in ({started.get('error', status)})")
    show(started)
    interval = float(started.get("interval") or 5)
    deadline = now() + float(started.get("expires_in") or 600)
    while now() < deadline:
        sleep(interval)
        status, answer = _post_form(doc["token_endpoint"], {
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": started["device_code"],
            "client_id": config.client_id})
        if status == 200 and answer.get("access_token"):
            return answer
        error = answer.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5
            continue
        raise Unauthenticated(f"sign-in ended without a token ({error or status})")
    raise Unauthenticated("the sign-in code expired before it was used; run `arkiv login` again")


def cli_token(env: dict[str, str] | os._Environ | None = None) -> str | None:
    """The CLI user's token: ``ARKIV_TOKEN``, else the one ``arkiv login`` kept (None when neither)."""
    env = os.environ if env is None else env
    if env.get("ARKIV_TOKEN"):
        return env["ARKIV_TOKEN"].strip()
    path = token_file(env)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise ConfigError(f"the token file {path} cannot be read; run `arkiv login` again") from None
    return data.get("access_token")


def cli_identity(config: OidcConfig) -> Identity:
    """The signed-in CLI user, checked like any API call; an error saying to run ``arkiv login`` otherwise."""
    token = cli_token()
    if not token:
        raise Unauthenticated("not signed in: run `arkiv login` (or give a token in ARKIV_TOKEN)")
    try:
        return validator(config).identity(token)
    except InvalidToken as exc:
        raise Unauthenticated(f"{exc}; run `arkiv login` again") from None


def decider(by: str | None, *, role: str = "archivist", env: dict[str, str] | os._Environ | None = None) -> Person:
    """Who decides in the CLI: the signed-in person (who must hold ``role``), or ``--by NAME`` without a provider."""
    config = OidcConfig.from_env(env)
    if config is None:
        if not (by or "").strip():
            raise ConfigError("a decision needs who decides: --by NAME (no identity provider is configured, so "
                              "the name is recorded as an unauthenticated name)")
        return Person.unauthenticated(by)
    if by:
        raise ConfigError("--by is not taken when an identity provider is configured: the decision is recorded "
                          "in the name of whoever is signed in (`arkiv login`)")
    identity = cli_identity(config)
    if role not in identity.roles:
        raise AccessDenied(f"{identity.name} does not hold the {role} role; this decision is an {role}'s")
    return identity.person()


# --- the report of decisions ------------------------------------------------------------------------------

def _sig(name, ident, at, note=None) -> dict | None:
    if not name:
        return None
    return {"id": ident or f"(not recorded):{name}", "name": name, "at": at.isoformat() if at else None,
            "note": note}


def decisions(cat: Catalogue) -> list[dict]:
    """Disposal lists approved, rejected or executed, quarantine cases decided and retention plans approved,
    oldest first."""
    from transforms.archive.retention import plan_approvals

    rows: list[dict] = []
    with cat.session() as s:
        for d in s.scalars(sa.select(DisposalList).where(DisposalList.decided_at.is_not(None))
                           .order_by(DisposalList.decided_at)):
            rows.append({"what": f"disposal list {d.id}", "kind": "disposal", "status": d.status,
                         "packages": len(json.loads(d.items)), "time": d.decided_at.isoformat(),
                         "first": _sig(d.reviewed_by, d.reviewed_by_id, d.reviewed_at, d.review_note),
                         "second": _sig(d.decided_by, d.decided_by_id, d.decided_at, d.justification),
                         "certificate": d.certificate})
        for c in s.scalars(sa.select(QuarantineCase).where(QuarantineCase.decided_at.is_not(None))
                           .order_by(QuarantineCase.decided_at)):
            rows.append({"what": f"quarantine case {c.id}", "kind": "quarantine", "status": c.status,
                         "time": c.decided_at.isoformat(),
                         "first": _sig(c.decided_by, c.decided_by_id, c.decided_at, c.justification),
                         "second": None, "certificate": None})
    for a in plan_approvals(cat):
        rows.append({"what": f"retention plan as of {a['as_of']}", "kind": "retention plan", "status": "approved",
                     "packages": len(a["packages"]), "time": a["at"].isoformat(),
                     "first": _sig(a["by"], a["by_id"], a["at"], a["justification"]), "second": None,
                     "certificate": None})
    return sorted(rows, key=lambda r: r["time"])
