"""Who may see what: roles, API credentials (tokens kept only as SHA-256) and the errors that refuse.

Roles (see docs/access-api.md):

* ``archivist`` — every system, cleared for secrecy (OSL), may search personnummer, reads the access log.
* ``system_owner`` — one system, cleared for it, may search personnummer, fetches its receipts, exports.
* ``client`` — a business system's own credential: its system only, not cleared unless the credential
  says so, fetches receipts (kvittenser) so that it can remove archived records from its database.
* ``researcher`` — every system, read-only, never cleared; secret records are withheld.
* ``it_operations`` — runs the archive: package lists and histories (fixity, transfers), no record
  and no document, no search hits, no access log.

People signed in through the municipality's identity provider get these roles from their groups
(:mod:`transforms.access.oidc`); the credentials kept here are the embedded default without one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from transforms.catalogue import AccessCredential, Catalogue, utcnow
from transforms.common.errors import ArkivError

ROLES = ("archivist", "system_owner", "client", "researcher", "it_operations")
SCOPED_ROLES = ("system_owner", "client")


class AccessDenied(ArkivError):
    """The principal may not do this (HTTP 403)."""


class Unauthenticated(AccessDenied):
    """No usable credential (HTTP 401, or 400 for a malformed ``Authorization`` header, as RFC 6750 says).

    ``error`` is RFC 6750's error code for ``WWW-Authenticate`` (None when no credential was sent);
    ``credential`` names the credential when the token was known but has expired or was revoked.
    """

    def __init__(self, message: str, *, error: str | None = None, credential: AccessCredential | None = None):
        super().__init__(message)
        self.error = error
        self.status = 400 if error == "invalid_request" else 401
        self.credential = credential


class NotFound(ArkivError):
    """No such record, document or package — or one outside the principal's scope (HTTP 404)."""


class Withheld(ArkivError):
    """The record exists but is covered by secrecy and the principal is not cleared (HTTP 403)."""

    def __init__(self, what: str, regulation: str | None):
        super().__init__(f"{what} exists but is classified ({regulation or 'OSL'}); its content is withheld")
        self.regulation = regulation or "OSL"


@dataclass(frozen=True)
class Principal:
    """Someone reading the archive: a credential's name, its role, scope and clearance.

    Signed in through the identity provider, ``name`` is the provider's subject (a stable
    identifier), ``display_name`` the person's name and ``roles`` every archive role their groups
    give them at the time (``role`` is the one they act in). ``creators`` limits what they read to
    those archive creators (organisationsnummer or name); empty, they are not limited by creator.
    """

    name: str
    role: str
    system: str | None = None
    cleared: bool = False
    display_name: str | None = None
    roles: tuple[str, ...] = ()
    creators: tuple[str, ...] = ()
    issuer: str | None = None

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; choose one of {', '.join(ROLES)}")
        if self.role in SCOPED_ROLES and not self.system:
            raise ValueError(f"a {self.role} credential is scoped to one system; give its system")

    @property
    def sees_secret(self) -> bool:
        return self.role == "archivist" or self.role == "system_owner" or self.cleared

    @property
    def may_search_personnummer(self) -> bool:
        return self.role in ("archivist", "system_owner")

    @property
    def reads_access_log(self) -> bool:
        return self.role == "archivist"

    @property
    def may_export(self) -> bool:
        return self.role in ("archivist", "system_owner", "researcher")

    def in_scope(self, system: str) -> bool:
        if self.role == "it_operations":
            return False  # operations see packages, never records
        return self.system is None or self.system == system

    def may_fetch_receipt(self, system: str) -> bool:
        return self.role == "archivist" or (self.role in SCOPED_ROLES and self.system == system)

    def may_read_history(self, system: str) -> bool:
        return self.role == "it_operations" or (self.role != "researcher" and self.in_scope(system))

    def covers_creator(self, *names: str | None) -> bool:
        """Whether what an archive creator made (named by any of ``names``: organisationsnummer or name) is
        readable: always without ``creators`` (the archive's own tokens, and groups the role mapping gives no
        creators), else only for one of them."""
        return not self.creators or any(n in self.creators for n in names if n)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- lifetimes ---------------------------------------------------------------------------------------------

#: default lifetime of a token by role: people sign in for a working day, a business system's credential
#: lasts a quarter (it is rotated by its operators, `arkiv access-token rotate`)
DEFAULT_TTL = {"archivist": dt.timedelta(hours=12), "researcher": dt.timedelta(hours=12),
               "system_owner": dt.timedelta(hours=12), "client": dt.timedelta(days=90),
               "it_operations": dt.timedelta(hours=12)}
#: no credential lives longer than this, whatever the configuration says
MAX_TTL = dt.timedelta(days=400)


def token_ttl(role: str) -> dt.timedelta:
    """The lifetime of a new (or rotated) token of ``role``: ``ARKIV_TOKEN_TTL_HOURS_<ROLE>`` or the default."""
    raw = os.environ.get(f"ARKIV_TOKEN_TTL_HOURS_{role.upper()}")
    if raw is None:
        return DEFAULT_TTL[role]
    try:
        hours = float(raw)
    except ValueError:
        from transforms.common.errors import ConfigError

        raise ConfigError(f"ARKIV_TOKEN_TTL_HOURS_{role.upper()}: a number of hours") from None
    if not 0 < hours <= MAX_TTL.total_seconds() / 3600:
        from transforms.common.errors import ConfigError

        raise ConfigError(f"ARKIV_TOKEN_TTL_HOURS_{role.upper()}: between 0 and {MAX_TTL.days * 24} hours")
    return dt.timedelta(hours=hours)


def expires_at(cred: AccessCredential) -> dt.datetime:
    """When the credential stops working.

    The catalogue has no column of its own for it: ``revoked_at`` holds the moment the token stops
    being valid, in the future for a live token (set when it is issued or rotated) and in the past
    once it has expired or been revoked. Rows made before tokens expired have no ``revoked_at``;
    they live for their role's lifetime from ``created_at``.
    """
    if cred.revoked_at is not None:
        return cred.revoked_at
    return cred.created_at + token_ttl(cred.role)


def _lifetime(role: str, ttl: dt.timedelta | None) -> dt.timedelta:
    ttl = token_ttl(role) if ttl is None else ttl
    if not dt.timedelta(0) < ttl <= MAX_TTL:
        raise ValueError(f"a token lives between a second and {MAX_TTL.days} days")
    return ttl


def add_credential(cat: Catalogue, name: str, role: str, *, system: str | None = None, cleared: bool = False,
                   by: str, ttl: dt.timedelta | None = None) -> str:
    """Create a credential and return its token — shown once; the catalogue keeps only its hash.

    The token expires after ``ttl`` (default: the role's, :func:`token_ttl`).
    """
    Principal(name, role, system, cleared)  # checks role and scope
    if role in ("archivist", "researcher") and system:
        raise ValueError(f"a {role} credential is not scoped to a system")
    if not _NAME.fullmatch(name or ""):
        raise ValueError("a credential's name: 1-100 letters, digits, '.', '_', '-', '@' or ':'")
    lifetime = _lifetime(role, ttl)
    token = "arkiv_" + secrets.token_urlsafe(32)
    now = utcnow()
    with cat.session() as s:
        if s.get(AccessCredential, name) is not None:
            raise ValueError(f"a credential named {name!r} exists already; revoke it or choose another name")
        s.add(AccessCredential(id=name, role=role, system=system, cleared=cleared, token_sha256=token_digest(token),
                               created_by=by, created_at=now, revoked_at=now + lifetime))
    return token


def rotate_credential(cat: Catalogue, name: str, *, ttl: dt.timedelta | None = None) -> str:
    """Issue a new token for credential ``name`` and return it; the old token stops working at once.

    There is no overlap: the catalogue keeps one hash per credential, and a token that still worked
    after its rotation would defeat the point of rotating a leaked one. Hand the new token to the
    system first, then rotate again if it was the old one that leaked.
    """
    token = "arkiv_" + secrets.token_urlsafe(32)
    now = utcnow()
    with cat.session() as s:
        cred = s.get(AccessCredential, name)
        if cred is None:
            raise NotFound(f"no credential {name!r}")
        cred.token_sha256 = token_digest(token)
        cred.created_at = now
        cred.revoked_at = now + _lifetime(cred.role, ttl)
    return token


def revoke_credential(cat: Catalogue, name: str) -> None:
    with cat.session() as s:
        cred = s.get(AccessCredential, name)
        if cred is None:
            raise NotFound(f"no credential {name!r}")
        now = utcnow()
        if cred.revoked_at is None or cred.revoked_at > now:
            cred.revoked_at = now


def credentials(cat: Catalogue) -> list[AccessCredential]:
    with cat.session() as s:
        return list(s.scalars(sa.select(AccessCredential).order_by(AccessCredential.id)))


_NAME = re.compile(r"[A-Za-z0-9._@:-]{1,100}")
#: RFC 6750 section 2.1: credentials = "Bearer" 1*SP b64token (the scheme is case-insensitive, RFC 7235)
_BEARER = re.compile(r"([Bb][Ee][Aa][Rr][Ee][Rr]) +([A-Za-z0-9\-._~+/]+=*)")
#: a provider's JWT with a person's groups runs to a few kilobytes; the catalogue's own tokens are 49 characters
MAX_TOKEN = 8192


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization`` header; :class:`Unauthenticated` for anything but one Bearer token."""
    value = (header or "").strip(" \t")
    if not value:
        raise Unauthenticated("no credential given: send 'Authorization: Bearer <token>'")
    m = _BEARER.fullmatch(value)
    if m is None:
        if value.split(" ", 1)[0].lower() != "bearer":
            raise Unauthenticated("only 'Authorization: Bearer <token>' is accepted")
        raise Unauthenticated("malformed credential: 'Authorization: Bearer <token>' with exactly one token",
                              error="invalid_request")
    if len(m.group(2)) > MAX_TOKEN:
        raise Unauthenticated("malformed credential: the token is too long", error="invalid_request")
    return m.group(2)


def authenticate(cat: Catalogue, token: str | None, *, now: dt.datetime | None = None) -> Principal:
    """The principal a bearer token belongs to; :class:`Unauthenticated` for unknown, revoked or expired tokens."""
    if not token:
        raise Unauthenticated("no credential given: send 'Authorization: Bearer <token>'")
    digest = token_digest(token)
    now = now or utcnow()
    with cat.session() as s:
        cred = s.scalars(sa.select(AccessCredential).where(AccessCredential.token_sha256 == digest)).first()
        if cred is None:
            raise Unauthenticated("unknown or revoked credential", error="invalid_token")
        if now >= expires_at(cred):
            s.expunge(cred)
            raise Unauthenticated("the credential has expired or was revoked; ask for a new token",
                                  error="invalid_token", credential=cred)
        return Principal(cred.id, cred.role, cred.system, bool(cred.cleared))


# --- personnummer: a keyed hash, never the number ----------------------------------------------------------

_DIGITS = re.compile(r"\D")


def secret_key(home: Path, filename: str, env: str) -> bytes:
    """A secret key: the environment variable ``env`` or a key file made once under ``ARKIV_HOME/access``."""
    value = os.environ.get(env)
    if value:
        return value.encode("utf-8")
    path = home / "access" / filename
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # never replace a key another process made meanwhile
        tmp.unlink(missing_ok=True)
    return path.read_text().strip().encode("utf-8")


def personnummer_key(home: Path) -> bytes:
    """The HMAC key for personnummer digests: ``ARKIV_ACCESS_KEY`` or a key file made once under ARKIV_HOME.

    Without the key a digest cannot be turned back into a number by trying every birth date.
    """
    return secret_key(home, "personnummer.key", "ARKIV_ACCESS_KEY")


def personnummer_digest(key: bytes, value: str) -> str | None:
    """HMAC-SHA256 of the last ten digits (so ``YYYYMMDD-NNNC`` and ``YYMMDD-NNNC`` match); None if not one."""
    digits = _DIGITS.sub("", value or "")
    if len(digits) not in (10, 12):
        return None
    return hmac.new(key, digits[-10:].encode("ascii"), hashlib.sha256).hexdigest()
