"""Sign-in through the municipality's OpenID Connect provider: access tokens checked, groups mapped to roles.

Configuration (environment; nothing provider-specific in code, see docs/identity.md):

* ``ARKIV_OIDC_ISSUER`` — the provider's issuer URL; its discovery document is
  ``<issuer>/.well-known/openid-configuration``. Unset: no provider, the embedded default
  (API credentials from ``arkiv access-token``, ``--by NAME`` on decisions).
* ``ARKIV_OIDC_CLIENT_ID`` — the archive's client ID at the provider: the audience its access
  tokens must carry, and the public client the pages and the CLI sign in with.
* ``ARKIV_OIDC_AUDIENCE`` — only when the tokens' audience differs from the client ID
  (Entra ID's ``api://…`` application ID URI, for instance).
* ``ARKIV_OIDC_ROLE_MAPPING`` — the role mapping file (YAML, :class:`RoleMapping`).
* ``ARKIV_OIDC_SCOPE`` — what the pages and the CLI ask for (default ``openid profile``).
* ``ARKIV_OIDC_LEEWAY_SECONDS`` — clock skew allowed on ``exp``, ``nbf`` and ``iat`` (default 60).
* ``ARKIV_OIDC_ALGORITHMS`` — accepted signature algorithms (default ``RS256,ES256``); ``none``
  and the HMAC family are refused whatever is configured, since a provider's keys are public.

What a token must be to be accepted (:meth:`TokenValidator.validate`): a JWT signed with a key
of the provider's JWKS (fetched from the discovery document's ``jwks_uri``, cached, fetched
again when a token names a key it does not know, at most every ``JWKS_MIN_REFRESH`` seconds),
with an accepted algorithm matching the key's type, ``iss`` the configured issuer, ``aud``
holding the audience, ``exp`` in the future and ``nbf``/``iat`` not in the future (both within
the leeway), and a subject. A token that fails any check raises :class:`InvalidToken` naming
the check, never the token.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import yaml

from transforms.access.auth import AccessDenied, Principal, Unauthenticated
from transforms.catalogue import Person
from transforms.common.errors import ArkivError, ConfigError

#: the roles a person can hold, strongest first: a person in several groups acts in the first of them
PERSON_ROLES = ("archivist", "system_owner", "researcher", "it_operations")
#: never accepted, whatever the configuration says: no signature, or a shared secret (the keys are public)
FORBIDDEN_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512"})
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
JWKS_MIN_REFRESH = 10.0  # seconds between two fetches of the JWKS for unknown key IDs
JWKS_MAX_AGE = 3600.0  # the JWKS is fetched again after this, so that rotated keys are found
DISCOVERY_MAX_AGE = 3600.0
HTTP_TIMEOUT = 10.0


class InvalidToken(Unauthenticated):
    """A bearer token the provider did not issue to us, or no longer valid (HTTP 401, ``invalid_token``)."""

    def __init__(self, message: str, *, principal: Principal | None = None):
        super().__init__(message, error="invalid_token")
        self.principal = principal


class ProviderUnavailable(ArkivError):
    """The identity provider's discovery document or keys cannot be fetched (HTTP 503)."""


@dataclass(frozen=True)
class OidcConfig:
    """Where the provider is and what its tokens for us look like."""

    issuer: str
    client_id: str
    audience: str
    mapping_path: Path | None = None
    scope: str = "openid profile"
    leeway: int = 60
    algorithms: tuple[str, ...] = ("RS256", "ES256")

    def __post_init__(self):
        bad = FORBIDDEN_ALGORITHMS.intersection(self.algorithms)
        if bad:
            raise ConfigError(f"ARKIV_OIDC_ALGORITHMS: {', '.join(sorted(bad))} is never accepted (a provider's "
                              "keys are public, so a shared-secret or unsigned token proves nothing)")
        if not self.issuer.startswith(("https://", "http://127.0.0.1", "http://localhost", "http://[::1]")):
            raise ConfigError("ARKIV_OIDC_ISSUER: an https URL (plain http only on loopback, for tests)")

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ | None = None) -> OidcConfig | None:
        """The configuration in the environment, or None when no provider is configured."""
        env = os.environ if env is None else env
        issuer = (env.get("ARKIV_OIDC_ISSUER") or "").strip().rstrip("/")
        if not issuer:
            return None
        client_id = (env.get("ARKIV_OIDC_CLIENT_ID") or "").strip()
        if not client_id:
            raise ConfigError("ARKIV_OIDC_ISSUER is set but ARKIV_OIDC_CLIENT_ID is not: give the archive's "
                              "client ID at the provider")
        mapping = (env.get("ARKIV_OIDC_ROLE_MAPPING") or "").strip()
        try:
            leeway = int(env.get("ARKIV_OIDC_LEEWAY_SECONDS") or 60)
        except ValueError:
            raise ConfigError("ARKIV_OIDC_LEEWAY_SECONDS: a whole number of seconds") from None
        if not 0 <= leeway <= 600:
            raise ConfigError("ARKIV_OIDC_LEEWAY_SECONDS: between 0 and 600")
        algorithms = tuple(a.strip() for a in (env.get("ARKIV_OIDC_ALGORITHMS") or "RS256,ES256").split(",")
                           if a.strip())
        return cls(issuer=issuer, client_id=client_id,
                   audience=(env.get("ARKIV_OIDC_AUDIENCE") or "").strip() or client_id,
                   mapping_path=Path(mapping) if mapping else None,
                   scope=(env.get("ARKIV_OIDC_SCOPE") or "openid profile").strip(), leeway=leeway,
                   algorithms=algorithms)


# --- the role mapping ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Grant:
    """What membership of one group (or being one client) gives: a role and, for scoped roles, systems."""

    role: str
    systems: tuple[str, ...] = ()
    creators: tuple[str, ...] = ()
    cleared: bool = False


@dataclass(frozen=True)
class Identity:
    """Who a valid token belongs to, as the provider says and the role mapping reads it."""

    subject: str
    name: str
    kind: str  # person | system
    grants: tuple[Grant, ...] = ()
    groups: tuple[str, ...] = ()
    client: str | None = None
    issuer: str = ""

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(r for r in (*PERSON_ROLES, "client") if any(g.role == r for g in self.grants))

    def systems(self, role: str) -> tuple[str, ...]:
        return tuple(sorted({s for g in self.grants if g.role == role for s in g.systems}))

    def creators(self, role: str | None = None, system: str | None = None) -> tuple[str, ...]:
        """The archive creators the grants of ``role`` (for ``system``) limit this identity to; empty when
        one of those grants names none, since that group is not limited by creator."""
        grants = [g for g in self.grants if (role is None or g.role == role)
                  and (system is None or not g.systems or system in g.systems)]
        if not grants or any(not g.creators for g in grants):
            return ()
        return tuple(sorted({c for g in grants for c in g.creators}))

    def person(self) -> Person:
        """The person as decisions record them: identifier, name and roles now."""
        return Person(id=self.subject, name=self.name, roles=self.roles)

    def principal(self, system: str | None = None) -> Principal:
        """The principal this identity reads the archive as (its strongest role).

        A system owner of several systems chooses one per request (``system``); a business
        system's credential is scoped to its own system.
        """
        roles = self.roles
        if not roles:
            raise AccessDenied(f"{self.name} has no archive role: none of their groups is in the role mapping")
        role = roles[0]
        scoped: str | None = None
        if role in ("system_owner", "client"):
            mine = self.systems(role)
            if system:
                if system not in mine:
                    raise AccessDenied(f"{self.name} is not {role} of {system}")
                scoped = system
            elif len(mine) == 1:
                scoped = mine[0]
            elif not mine:
                raise AccessDenied(f"the role mapping gives {self.name} the role {role} without a system")
            else:
                raise AccessDenied(f"{self.name} is {role} of several systems ({', '.join(mine)}): choose one "
                                   "with the X-Arkiv-System header")
        cleared = any(g.cleared for g in self.grants if g.role == role)
        return Principal(self.subject, role, scoped, cleared, display_name=self.name, roles=roles,
                         creators=self.creators(role, scoped), issuer=self.issuer)


class RoleMapping:
    """The provider's groups and clients mapped to archive roles, from a YAML file.

    ::

        claims:                 # where the provider puts what (these are the defaults)
          subject: sub
          name: [name, preferred_username]
          groups: [groups, roles]
          client: [client_id, azp, appid]
        groups:                 # group (or app role) -> archive role, and the systems it covers
          arkiv-arkivarier: {role: archivist}
          arkiv-forskare: {role: researcher}
          lex-systemagare: {role: system_owner, systems: [lex]}
          it-drift: {role: it_operations}
        clients:                # business systems signing in with client credentials
          lex-system: {system: lex}
          viva-system: {system: viva, cleared: false}

    A token whose client is listed under ``clients`` is that business system's (role ``client``,
    its own system only); any other token is a person's, who has the roles of their mapped groups.
    """

    DEFAULT_CLAIMS = {"subject": ["sub"], "name": ["name", "preferred_username"], "groups": ["groups", "roles"],
                      "client": ["client_id", "azp", "appid"]}

    def __init__(self, data: dict | None = None, *, source: str = "role mapping"):
        data = data or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a mapping with 'groups' and 'clients'")
        unknown = set(data) - {"claims", "groups", "clients"}
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))} (claims, groups, clients)")
        self.claims = {k: list(v) for k, v in self.DEFAULT_CLAIMS.items()}
        for k, v in (data.get("claims") or {}).items():
            if k not in self.claims:
                raise ConfigError(f"{source}: claims.{k} is not one of {', '.join(self.claims)}")
            self.claims[k] = [v] if isinstance(v, str) else list(v)
        self.groups = {str(g): self._grant(v, f"{source}: groups.{g}", person=True)
                       for g, v in (data.get("groups") or {}).items()}
        self.clients = {str(c): self._grant({"role": "client", **(v or {})}, f"{source}: clients.{c}", person=False)
                        for c, v in (data.get("clients") or {}).items()}

    @staticmethod
    def _grant(v, where: str, *, person: bool) -> Grant:
        if not isinstance(v, dict):
            raise ConfigError(f"{where}: a mapping with 'role' (and 'systems' for a system owner)")
        unknown = set(v) - {"role", "systems", "system", "creators", "cleared"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        role = v.get("role")
        allowed = PERSON_ROLES if person else ("client",)
        if role not in allowed:
            raise ConfigError(f"{where}: role must be one of {', '.join(allowed)}")
        systems = v.get("systems") or ([v["system"]] if v.get("system") else [])
        if isinstance(systems, str):
            systems = [systems]
        if role in ("system_owner", "client") and not systems:
            raise ConfigError(f"{where}: a {role} is scoped: give its system(s)")
        if role in ("archivist", "researcher", "it_operations") and systems:
            raise ConfigError(f"{where}: a {role} is not scoped to systems")
        creators = v.get("creators") or []
        return Grant(role=role, systems=tuple(str(s) for s in systems),
                     creators=tuple(str(c) for c in ([creators] if isinstance(creators, str) else creators)),
                     cleared=bool(v.get("cleared", False)))

    @classmethod
    def load(cls, path: Path | None) -> RoleMapping:
        """The mapping in ``path`` (an empty mapping, in which nobody has a role, when None)."""
        if path is None:
            return cls({})
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"ARKIV_OIDC_ROLE_MAPPING: cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"ARKIV_OIDC_ROLE_MAPPING: {path} is not valid YAML ({type(exc).__name__})") from None
        return cls(data, source=str(path))

    def _first(self, claims: dict, what: str):
        for name in self.claims[what]:
            value = claims.get(name)
            if value not in (None, "", []):
                return value
        return None

    def identity(self, claims: dict) -> Identity:
        """Who the (already validated) claims describe."""
        subject = self._first(claims, "subject")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("the token names no subject")
        client = self._first(claims, "client")
        if isinstance(client, str) and client in self.clients:
            return Identity(subject=client, name=client, kind="system", grants=(self.clients[client],),
                            client=client, issuer=str(claims.get("iss", "")))
        groups: list[str] = []
        for name in self.claims["groups"]:
            value = claims.get(name)
            if isinstance(value, str):
                groups.append(value)
            elif isinstance(value, list):
                groups += [str(v) for v in value if isinstance(v, (str, int))]
        name = self._first(claims, "name")
        grants = tuple(self.groups[g] for g in dict.fromkeys(groups) if g in self.groups)
        return Identity(subject=subject, name=str(name) if name else subject, kind="person", grants=grants,
                        groups=tuple(dict.fromkeys(groups)), client=client if isinstance(client, str) else None,
                        issuer=str(claims.get("iss", "")))


# --- discovery, keys and token validation ----------------------------------------------------------------

def _fetch_json(url: str, what: str) -> dict:
    if not url.startswith(("https://", "http://")):
        raise ProviderUnavailable(f"the identity provider's {what} is not at an http(s) URL")
    req = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - http(s) only
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as r:  # noqa: S310 - http(s) only
            body = r.read(1024 * 1024 + 1)
    except (urllib.error.URLError, OSError) as exc:
        raise ProviderUnavailable(f"the identity provider's {what} cannot be fetched from {url} "
                                  f"({type(exc).__name__}); sign-in is unavailable until it answers") from None
    if len(body) > 1024 * 1024:
        raise ProviderUnavailable(f"the identity provider's {what} at {url} is larger than 1 MiB")
    try:
        data = json.loads(body)
    except ValueError:
        raise ProviderUnavailable(f"the identity provider's {what} at {url} is not JSON") from None
    if not isinstance(data, dict):
        raise ProviderUnavailable(f"the identity provider's {what} at {url} is not a JSON object")
    return data


@dataclass
class _Keys:
    by_kid: dict[str, jwt.PyJWK] = field(default_factory=dict)
    fetched: float = 0.0


class TokenValidator:
    """Checks access tokens against the configured provider; thread-safe, one per process is enough."""

    def __init__(self, config: OidcConfig, *, mapping: RoleMapping | None = None,
                 clock: Callable[[], float] = time.time, fetch: Callable[[str, str], dict] = _fetch_json):
        self.config = config
        self.mapping = mapping if mapping is not None else RoleMapping.load(config.mapping_path)
        self._clock, self._fetch = clock, fetch
        self._lock = threading.RLock()
        self._discovery: dict | None = None
        self._discovered_at = 0.0
        self._keys = _Keys()

    # discovery document and keys, cached
    def discovery(self) -> dict:
        """The provider's discovery document (its issuer must be the configured one)."""
        with self._lock:
            now = time.monotonic()
            if self._discovery is None or now - self._discovered_at > DISCOVERY_MAX_AGE:
                doc = self._fetch(f"{self.config.issuer}/.well-known/openid-configuration", "discovery document")
                if doc.get("issuer", "").rstrip("/") != self.config.issuer:
                    raise ProviderUnavailable("the discovery document names another issuer than ARKIV_OIDC_ISSUER; "
                                              "refusing to trust its keys")
                if not isinstance(doc.get("jwks_uri"), str):
                    raise ProviderUnavailable("the discovery document has no jwks_uri")
                self._discovery, self._discovered_at = doc, now
            return self._discovery

    def _refresh_keys(self) -> None:
        data = self._fetch(self.discovery()["jwks_uri"], "signing keys (JWKS)")
        keys: dict[str, jwt.PyJWK] = {}
        for raw in data.get("keys") or []:
            if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(raw)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue  # a key type or algorithm this process cannot use: never chosen
            keys[raw.get("kid") or f"#{len(keys)}"] = key
        self._keys = _Keys(keys, time.monotonic())

    def key_for(self, kid: str | None, alg: str) -> jwt.PyJWK:
        """The provider's key ``kid`` (fetching the JWKS again for an unknown kid, at most every few seconds)."""
        def find() -> jwt.PyJWK | None:
            if kid is not None:
                return self._keys.by_kid.get(kid)
            candidates = [k for k in self._keys.by_kid.values() if k.key_type == _KEY_TYPES.get(alg[:2])]
            return candidates[0] if len(candidates) == 1 else None

        seen = self._keys.fetched
        key = find()
        age = time.monotonic() - seen
        if (key is None and age >= JWKS_MIN_REFRESH) or age > JWKS_MAX_AGE:
            with self._lock:
                if self._keys.fetched == seen:  # not refreshed by another request meanwhile
                    self._refresh_keys()
            key = find()
        if key is None:
            raise InvalidToken("the token is signed with a key the provider does not publish"
                               + ("" if kid else " (and names no key ID)"))
        return key

    def validate(self, token: str) -> dict:
        """The token's claims, once every check has passed; :class:`InvalidToken` names the one that failed."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise InvalidToken("not a signed JWT from the identity provider") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg in FORBIDDEN_ALGORITHMS or alg not in self.config.algorithms:
            raise InvalidToken(f"signature algorithm {str(alg)[:20]!r} is not accepted "
                               f"(accepted: {', '.join(self.config.algorithms)})")
        kid = header.get("kid")
        key = self.key_for(kid if isinstance(kid, str) else None, alg)
        if key.key_type != _KEY_TYPES.get(alg[:2]):
            raise InvalidToken(f"the key {kid!s:.40} is not a key for {alg}")
        try:
            claims = jwt.decode(token, key.key, algorithms=[alg], audience=self.config.audience,
                                issuer=self.config.issuer, leeway=self.config.leeway,
                                options={"require": ["exp", "iat", "iss", "aud", "sub"], "verify_iat": True})
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired; sign in again", principal=self._who(token, key, alg)) \
                from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the token is not valid yet (nbf or iat in the future, beyond the allowed clock skew)") \
                from None
        except jwt.InvalidAudienceError:
            raise InvalidToken(f"the token is not meant for this archive (its audience is not "
                               f"{self.config.audience!r})") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("the token was issued by another issuer than the configured provider") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("the token's signature does not verify (altered or forged)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"the token is not valid ({type(exc).__name__})") from None
        return claims

    def _who(self, token: str, key: jwt.PyJWK, alg: str) -> Principal | None:
        """The principal of a correctly signed but expired token, so that its refusal can be logged by name."""
        try:
            claims = jwt.decode(token, key.key, algorithms=[alg], audience=self.config.audience,
                                issuer=self.config.issuer, options={"verify_exp": False})
            return self.mapping.identity(claims).principal()
        except Exception:  # noqa: BLE001 - only a nicer log entry is lost
            return None

    def identity(self, token: str) -> Identity:
        """Who a valid token belongs to."""
        return self.mapping.identity(self.validate(token))

    def principal(self, token: str, system: str | None = None) -> Principal:
        return self.identity(token).principal(system)


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts: a provider's token, not one of the catalogue's ``arkiv_…`` credentials."""
    return token.count(".") == 2 and not token.startswith("arkiv_")


_validators: dict[OidcConfig, TokenValidator] = {}
_validators_lock = threading.Lock()


def validator(config: OidcConfig) -> TokenValidator:
    """The process's validator for ``config`` (keys and discovery cached across requests)."""
    with _validators_lock:
        v = _validators.get(config)
        if v is None:
            v = _validators[config] = TokenValidator(config)
        return v

