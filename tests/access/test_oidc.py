"""Access tokens from a real OpenID Connect provider (oidc-provider on loopback), checked by transforms.access.oidc."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from oidc.oidctest import CLIENT_ID, ROLE_MAPPING, oidc_provider_fixture  # noqa: F401 - the fixture

from transforms.access.auth import AccessDenied
from transforms.access.oidc import InvalidToken, OidcConfig, RoleMapping, TokenValidator
from transforms.common.errors import ConfigError


@pytest.fixture
def validator(oidc_provider):
    return TokenValidator(OidcConfig.from_env(oidc_provider.env()))


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_business_system_is_its_own_system_only(oidc_provider, validator):
    lex = validator.principal(oidc_provider.client_credentials("lex-system"))
    assert (lex.name, lex.role, lex.system, lex.sees_secret) == ("lex-system", "client", "lex", False)
    viva = validator.principal(oidc_provider.client_credentials("viva-system"))  # signed ES256
    assert jwt.get_unverified_header(oidc_provider.client_credentials("viva-system"))["alg"] == "ES256"
    assert (viva.role, viva.system) == ("client", "viva")


def test_people_get_the_roles_of_their_groups(oidc_provider, validator):
    anna = validator.identity(oidc_provider.device_token("anna"))
    assert (anna.subject, anna.name, anna.kind, anna.roles) == ("anna", "Anna Arkivarie", "person", ("archivist",))
    assert anna.person().id == "anna" and anna.person().authenticated
    p = anna.principal()
    assert (p.role, p.system, p.display_name, p.sees_secret) == ("archivist", None, "Anna Arkivarie", True)
    sara = validator.principal(oidc_provider.forge(oidc_provider.claims("sara")))
    assert (sara.role, sara.system) == ("system_owner", "lex")
    rut = validator.principal(oidc_provider.forge(oidc_provider.claims("rut")))
    assert (rut.role, rut.sees_secret, rut.in_scope("lex")) == ("researcher", False, True)
    ivar = validator.principal(oidc_provider.forge(oidc_provider.claims("ivar")))
    assert ivar.role == "it_operations" and not ivar.in_scope("lex") and ivar.may_read_history("lex")
    # in two groups: acts in the strongest role, and both are recorded
    both = validator.identity(oidc_provider.forge(oidc_provider.claims(
        "bertil", groups=["arkiv-forskare", "arkiv-arkivarier"])))
    assert both.roles == ("archivist", "researcher") and both.principal().role == "archivist"


def test_a_person_in_no_mapped_group_has_no_role(oidc_provider, validator):
    token = oidc_provider.forge(oidc_provider.claims("okand", groups=["kommunens-personal"]))
    identity = validator.identity(token)  # a valid token …
    with pytest.raises(AccessDenied, match="no archive role"):
        identity.principal()  # … but nothing to do in the archive


def test_wrong_audience_is_refused(oidc_provider, validator):
    token = oidc_provider.client_credentials("lex-system", resource="urn:arkiv:annat-api")
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == "urn:arkiv:annat-api"
    with pytest.raises(InvalidToken, match="not meant for this archive"):
        validator.validate(token)


def test_expired_token_is_refused_beyond_the_clock_skew(oidc_provider, validator):
    now = int(time.time())
    with pytest.raises(InvalidToken, match="expired") as refused:
        validator.validate(oidc_provider.forge(oidc_provider.claims(iat=now - 900, exp=now - 120)))
    assert refused.value.principal is not None and refused.value.principal.name == "anna"  # logged by name
    # within the allowed skew (60 s by default) it is still accepted; with no skew it is not
    slightly = oidc_provider.forge(oidc_provider.claims(iat=now - 900, exp=now - 20))
    assert validator.validate(slightly)["sub"] == "anna"
    strict = TokenValidator(OidcConfig.from_env({**oidc_provider.env(), "ARKIV_OIDC_LEEWAY_SECONDS": "0"}))
    with pytest.raises(InvalidToken, match="expired"):
        strict.validate(slightly)


def test_not_yet_valid_token_is_refused(oidc_provider, validator):
    now = int(time.time())
    with pytest.raises(InvalidToken, match="not valid yet"):
        validator.validate(oidc_provider.forge(oidc_provider.claims(nbf=now + 600)))


def test_wrong_issuer_is_refused(oidc_provider, validator):
    token = oidc_provider.forge(oidc_provider.claims(iss="https://idp.example.org"))
    with pytest.raises(InvalidToken, match="another issuer"):
        validator.validate(token)


def test_tampered_token_is_refused(oidc_provider, validator):
    token = oidc_provider.device_token("rut")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    assert claims["groups"] == ["arkiv-forskare"]
    claims["groups"] = ["arkiv-arkivarier"]  # a researcher makes herself an archivist
    with pytest.raises(InvalidToken, match="signature does not verify"):
        validator.validate(f"{header}.{_b64(claims)}.{signature}")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    with pytest.raises(InvalidToken):
        validator.validate(f"{header}.{payload}.{flipped}")


def test_unsigned_and_shared_secret_tokens_are_refused(oidc_provider, validator):
    claims = oidc_provider.claims()
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    with pytest.raises(InvalidToken, match="'none' is not accepted"):
        validator.validate(unsigned)
    # HS256 "signed" with the provider's public key, the classic confusion attack
    jwks = json.loads(oidc_provider.keys_file.read_text())["keys"]
    rsa = next(k for k in jwks if k["kty"] == "RSA")
    public_pem = jwt.PyJWK({k: rsa[k] for k in ("kty", "n", "e", "kid")}).key.public_bytes(
        encoding=Encoding.PEM, format=PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{_b64({'alg': 'HS256', 'kid': rsa['kid']})}.{_b64(claims)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    with pytest.raises(InvalidToken, match="'HS256' is not accepted"):
        validator.validate(forged)
    with pytest.raises(ConfigError, match="never accepted"):
        OidcConfig.from_env({**oidc_provider.env(), "ARKIV_OIDC_ALGORITHMS": "RS256,HS256"})
    # an RS256 header on a key of another type is refused too
    with pytest.raises(InvalidToken, match="not a key for RS256"):
        validator.validate(_with_alg(oidc_provider.forge(claims, alg="ES256"), "RS256"))


def _with_alg(token: str, alg: str) -> str:
    header, payload, signature = token.split(".")
    h = json.loads(base64.urlsafe_b64decode(header + "=="))
    h["alg"] = alg
    return f"{_b64(h)}.{payload}.{signature}"


def test_unknown_key_fetches_the_jwks_again_at_most_now_and_then(oidc_provider):
    fetched = []

    def fetch(url, what):
        from transforms.access.oidc import _fetch_json

        fetched.append(what)
        return _fetch_json(url, what)

    v = TokenValidator(OidcConfig.from_env(oidc_provider.env()), fetch=fetch)
    v.validate(oidc_provider.client_credentials("lex-system"))
    assert fetched == ["discovery document", "signing keys (JWKS)"]
    unknown = oidc_provider.forge(oidc_provider.claims(), kid="rotated-away")
    for _ in range(5):
        with pytest.raises(InvalidToken, match="key the provider does not publish"):
            v.validate(unknown)
    assert fetched.count("signing keys (JWKS)") == 1  # fetched a moment ago: not again for every bad token
    v._keys.fetched -= 60  # a while later, an unknown key ID makes it look again
    with pytest.raises(InvalidToken):
        v.validate(unknown)
    assert fetched.count("signing keys (JWKS)") == 2


def test_configuration_and_role_mapping_errors_explain_themselves(tmp_path):
    assert OidcConfig.from_env({}) is None
    with pytest.raises(ConfigError, match="ARKIV_OIDC_CLIENT_ID"):
        OidcConfig.from_env({"ARKIV_OIDC_ISSUER": "https://idp.example.org"})
    with pytest.raises(ConfigError, match="https"):
        OidcConfig.from_env({"ARKIV_OIDC_ISSUER": "http://idp.example.org", "ARKIV_OIDC_CLIENT_ID": CLIENT_ID})
    c = OidcConfig.from_env({"ARKIV_OIDC_ISSUER": "https://idp.example.org/", "ARKIV_OIDC_CLIENT_ID": "x",
                             "ARKIV_OIDC_AUDIENCE": "api://x"})
    assert (c.issuer, c.client_id, c.audience) == ("https://idp.example.org", "x", "api://x")
    with pytest.raises(ConfigError, match="system_owner is scoped"):
        RoleMapping({"groups": {"g": {"role": "system_owner"}}})
    with pytest.raises(ConfigError, match="role must be one of"):
        RoleMapping({"groups": {"g": {"role": "admin"}}})
    with pytest.raises(ConfigError, match="unknown key"):
        RoleMapping({"grupper": {}})
    m = RoleMapping.load(_write(tmp_path, ROLE_MAPPING))
    assert m.groups["lex-systemagare"].systems == ("lex",) and m.clients["viva-system"].systems == ("viva",)
    # an Entra-style token: app roles in "roles", the client in "azp"
    entra = RoleMapping({"claims": {"groups": "roles"}, "groups": {"Arkivarie": {"role": "archivist"}}})
    ident = entra.identity({"sub": "0f1e", "name": "Anna", "roles": ["Arkivarie"], "azp": "spa-app"})
    assert ident.roles == ("archivist",) and ident.kind == "person"


def _write(tmp_path, text):
    p = tmp_path / "mapping.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_a_system_owner_of_several_systems_chooses_one_per_request():
    mapping = RoleMapping({"groups": {"lex-agare": {"role": "system_owner", "systems": ["lex"]},
                                      "viva-agare": {"role": "system_owner", "systems": ["viva"]}}})
    ident = mapping.identity({"sub": "sara", "name": "Sara", "groups": ["lex-agare", "viva-agare"]})
    with pytest.raises(AccessDenied, match="X-Arkiv-System"):
        ident.principal()
    assert ident.principal("viva").system == "viva"
    with pytest.raises(AccessDenied, match="not system_owner of procapita"):
        ident.principal("procapita")
