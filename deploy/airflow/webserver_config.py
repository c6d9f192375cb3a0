"""Airflow's own UI signs people in through the municipality's OpenID Connect provider.

Loaded by the FAB auth manager (``apache-airflow-providers-fab``) when
``AIRFLOW__CORE__AUTH_MANAGER=airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager``
and ``AIRFLOW__FAB__CONFIG_FILE`` (default ``$AIRFLOW_HOME/webserver_config.py``) point here.
Without those two settings Airflow keeps its simple auth manager and this file is not read.

Everything site-specific comes from the environment (docs/airflow-signin.md), and the provider
and the role mapping are the ones the Arkivflöde pages, API and CLI use (docs/identity.md), so a
person has one identity everywhere:

* ``ARKIV_OIDC_ISSUER`` — the provider; its discovery document gives every endpoint and key.
* ``ARKIV_OIDC_ROLE_MAPPING`` — the role mapping file: which claims hold the subject, the name
  and the groups, and which groups make an archivist, a system owner, IT operations …
* ``ARKIV_AIRFLOW_OIDC_CLIENT_ID`` / ``ARKIV_AIRFLOW_OIDC_CLIENT_SECRET`` — Airflow's own
  confidential client at the provider (redirect URI ``<airflow>/auth/oauth-authorized/oidc``).
* ``ARKIV_AIRFLOW_OIDC_SCOPE`` — what Airflow asks for (default ``openid profile``).
* ``ARKIV_AIRFLOW_ROLES`` — archive roles (or provider groups) to Airflow roles, comma-separated
  ``key=Role`` pairs (default ``archivist=User,it_operations=Operations,system_owner=Viewer``;
  ``Operations`` is Airflow's ``Op`` less answering *Required actions*).
* ``ARKIV_AIRFLOW_DEFAULT_ROLE`` — the Airflow role of a person none of whose groups is mapped
  (default ``Public``: signed in, allowed nothing).

The Airflow username is the person's subject as the role mapping reads it, the identifier the
archive records for decisions, so a decision taken in Airflow names the same person as one
taken on the pages or in the CLI. Roles are set again at every sign-in from the provider's
groups: a person who leaves a group loses the Airflow role the next time they sign in.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from airflow.providers.fab.auth_manager.security_manager.override import FabAirflowSecurityManagerOverride
from flask_appbuilder.const import AUTH_OAUTH

from transforms.access.oidc import RoleMapping

log = logging.getLogger("arkivflode.airflow_signin")

#: the provider's name in Airflow's URLs: the redirect URI ends in /auth/oauth-authorized/oidc
PROVIDER = "oidc"
#: archivists answer Required actions (User); IT operations run Airflow but decide nothing (Operations)
OPERATIONS_ROLE = "Operations"
DEFAULT_ROLES = f"archivist=User,it_operations={OPERATIONS_ROLE},system_owner=Viewer"


def _setting(name: str, default: str | None = None) -> str:
    value = (os.environ.get(name) or "").strip() or default
    if not value:
        raise RuntimeError(f"{name} is not set: Airflow signs in through the OpenID Connect provider only when the "
                           "provider's issuer, Airflow's client ID and secret are set (docs/airflow-signin.md)")
    return value


def roles_mapping(text: str) -> dict[str, list[str]]:
    """``archivist=User,it-admins=Admin`` as FAB's AUTH_ROLES_MAPPING (a key may be given twice)."""
    mapping: dict[str, list[str]] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, role = (s.strip() for s in pair.partition("="))
        if not (sep and key and role):
            raise RuntimeError(f"ARKIV_AIRFLOW_ROLES: {pair!r} is not key=AirflowRole")
        mapping.setdefault(key, []).append(role)
    return mapping


def _mapping() -> RoleMapping:
    path = (os.environ.get("ARKIV_OIDC_ROLE_MAPPING") or "").strip()
    return RoleMapping.load(Path(path) if path else None)


def _split_name(claims: dict, name: str) -> tuple[str, str]:
    given, family = claims.get("given_name"), claims.get("family_name")
    if isinstance(given, str) and given:
        return given[:64], (family if isinstance(family, str) else "")[:64]
    first, _, last = name.partition(" ")
    return first[:64], last[:64]


def _operations_permissions() -> list[tuple[str, str]]:
    """Airflow's Op role less answering a human-in-the-loop request: quarantine decisions are archivists'."""
    from airflow.providers.fab.www.security import permissions

    base = FabAirflowSecurityManagerOverride
    answering = (permissions.ACTION_CAN_EDIT, permissions.RESOURCE_HITL_DETAIL)
    every = [*base.VIEWER_PERMISSIONS, *base.USER_PERMISSIONS, *base.OP_PERMISSIONS]
    return [p for p in dict.fromkeys(every) if p != answering]


class ArkivSecurityManager(FabAirflowSecurityManagerOverride):
    """FAB's security manager reading the person from the provider's ID token (and its userinfo
    endpoint for claims the ID token leaves out) through the archive's role mapping.

    It adds the Airflow role ``Operations`` (:data:`OPERATIONS_ROLE`): everything Airflow's ``Op``
    may do except answer *Required actions*, since an answer there is recorded as an archivist's
    quarantine decision (plugins/arkivflode_airflow/hitl.py).
    """

    ROLE_CONFIGS = [*FabAirflowSecurityManagerOverride.ROLE_CONFIGS,
                    {"role": OPERATIONS_ROLE, "perms": _operations_permissions()}]

    def get_oauth_user_info(self, provider: str, resp: dict) -> dict:
        mapping = _mapping()
        # authlib has checked the ID token (signature from the provider's keys, issuer, audience, nonce, expiry)
        claims = dict(resp.get("userinfo") or {})
        if not claims.get("sub"):
            raise ValueError("the provider returned no ID token")
        if any(not any(c in claims for c in mapping.claims[what]) for what in ("name", "groups")):
            claims = self._with_userinfo(provider, resp, claims)
        identity = mapping.identity(claims)
        first, last = _split_name(claims, identity.name)
        log.info("%s signed in to Airflow with archive roles %s", identity.subject, ",".join(identity.roles) or "none")
        return {"username": identity.subject, "first_name": first, "last_name": last,
                "email": claims.get("email") if isinstance(claims.get("email"), str) else "",
                "role_keys": [*identity.roles, *identity.groups]}

    def _with_userinfo(self, provider: str, resp: dict, claims: dict) -> dict:
        """The ID token's claims completed from the userinfo endpoint (same subject only, OIDC Core 5.3.2)."""
        try:
            extra = dict(self.oauth_remotes[provider].userinfo(token=resp))
        except Exception as exc:  # a provider without a usable userinfo endpoint (Entra ID's is Graph's)
            log.info("no userinfo from the provider (%s): the ID token's claims alone", type(exc).__name__)
            return claims
        if extra.get("sub") != claims["sub"]:
            log.warning("the userinfo endpoint answered for another subject: its claims are ignored")
            return claims
        return {**extra, **claims}


AUTH_TYPE = AUTH_OAUTH
SECURITY_MANAGER_CLASS = ArkivSecurityManager
WTF_CSRF_ENABLED = True
OAUTH_PROVIDERS = [{
    "name": PROVIDER,
    "icon": "fa-sign-in",
    "token_key": "access_token",
    "remote_app": {
        "client_id": _setting("ARKIV_AIRFLOW_OIDC_CLIENT_ID"),
        "client_secret": _setting("ARKIV_AIRFLOW_OIDC_CLIENT_SECRET"),
        "server_metadata_url": f"{_setting('ARKIV_OIDC_ISSUER').rstrip('/')}/.well-known/openid-configuration",
        "client_kwargs": {"scope": _setting("ARKIV_AIRFLOW_OIDC_SCOPE", "openid profile"),
                          "code_challenge_method": "S256"},
    },
}]
AUTH_USER_REGISTRATION = True
AUTH_USER_REGISTRATION_ROLE = _setting("ARKIV_AIRFLOW_DEFAULT_ROLE", "Public")
AUTH_ROLES_MAPPING = roles_mapping(_setting("ARKIV_AIRFLOW_ROLES", DEFAULT_ROLES))
AUTH_ROLES_SYNC_AT_LOGIN = True
