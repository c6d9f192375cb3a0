"""Who may see what: roles, API credentials (tokens kept only as SHA-256) and the errors that refuse.

Roles (see README "Access"):

* ``archivist`` — every system, cleared for secrecy (OSL), may search personnummer, reads the access log.
* ``system_owner`` — one system, cleared for it, may search personnummer, fetches its receipts, exports.
* ``client`` — a business system's own credential: its system only, not cleared unless the credential
  says so, fetches receipts (kvittenser) so that it can remove archived records from its database.
* ``researcher`` — every system, read-only, never cleared; secret records are withheld.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from ..catalogue import AccessCredential, Catalogue, utcnow
from ..errors import ArkivError

ROLES = ("archivist", "system_owner", "client", "researcher")
SCOPED_ROLES = ("system_owner", "client")


class AccessDenied(ArkivError):
    """The principal may not do this (HTTP 403)."""


class NotFound(ArkivError):
    """No such record, document or package — or one outside the principal's scope (HTTP 404)."""


class Withheld(ArkivError):
    """The record exists but is covered by secrecy and the principal is not cleared (HTTP 403)."""

    def __init__(self, what: str, regulation: str | None):
        super().__init__(f"{what} exists but is classified ({regulation or 'OSL'}); its content is withheld")
        self.regulation = regulation or "OSL"


@dataclass(frozen=True)
class Principal:
    """Someone reading the archive: a credential's name, its role, scope and clearance."""

    name: str
    role: str
    system: str | None = None
    cleared: bool = False

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
        return self.system is None or self.system == system

    def may_fetch_receipt(self, system: str) -> bool:
        return self.role == "archivist" or (self.role in SCOPED_ROLES and self.system == system)

    def may_read_history(self, system: str) -> bool:
        return self.role != "researcher" and self.in_scope(system)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_credential(cat: Catalogue, name: str, role: str, *, system: str | None = None, cleared: bool = False,
                   by: str) -> str:
    """Create a credential and return its token — shown once; the catalogue keeps only its hash."""
    Principal(name, role, system, cleared)  # checks role and scope
    if role in ("archivist", "researcher") and system:
        raise ValueError(f"a {role} credential is not scoped to a system")
    token = "arkiv_" + secrets.token_urlsafe(32)
    with cat.session() as s:
        if s.get(AccessCredential, name) is not None:
            raise ValueError(f"a credential named {name!r} exists already; revoke it or choose another name")
        s.add(AccessCredential(id=name, role=role, system=system, cleared=cleared, token_sha256=token_digest(token),
                               created_by=by, created_at=utcnow()))
    return token


def revoke_credential(cat: Catalogue, name: str) -> None:
    with cat.session() as s:
        cred = s.get(AccessCredential, name)
        if cred is None:
            raise NotFound(f"no credential {name!r}")
        cred.revoked_at = utcnow()


def credentials(cat: Catalogue) -> list[AccessCredential]:
    with cat.session() as s:
        return list(s.scalars(sa.select(AccessCredential).order_by(AccessCredential.id)))


def authenticate(cat: Catalogue, token: str | None) -> Principal:
    """The principal a bearer token belongs to; :class:`AccessDenied` for unknown or revoked tokens."""
    if not token:
        raise AccessDenied("no credential given: send 'Authorization: Bearer <token>'")
    digest = token_digest(token)
    with cat.session() as s:
        cred = s.scalars(sa.select(AccessCredential).where(AccessCredential.token_sha256 == digest)).first()
        if cred is None or cred.revoked_at is not None:
            raise AccessDenied("unknown or revoked credential")
        return Principal(cred.id, cred.role, cred.system, bool(cred.cleared))


# --- personnummer: a keyed hash, never the number ----------------------------------------------------------

_DIGITS = re.compile(r"\D")


def personnummer_key(home: Path) -> bytes:
    """The HMAC key for personnummer digests: ``ARKIV_ACCESS_KEY`` or a key file made once under ARKIV_HOME.

    Without the key a digest cannot be turned back into a number by trying every birth date.
    """
    env = os.environ.get("ARKIV_ACCESS_KEY")
    if env:
        return env.encode("utf-8")
    path = home / "access" / "personnummer.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # never replace a key another process made meanwhile
        tmp.unlink(missing_ok=True)
    return path.read_text().strip().encode("utf-8")


def personnummer_digest(key: bytes, value: str) -> str | None:
    """HMAC-SHA256 of the last ten digits (so ``YYYYMMDD-NNNC`` and ``YYMMDD-NNNC`` match); None if not one."""
    digits = _DIGITS.sub("", value or "")
    if len(digits) not in (10, 12):
        return None
    return hmac.new(key, digits[-10:].encode("ascii"), hashlib.sha256).hexdigest()
