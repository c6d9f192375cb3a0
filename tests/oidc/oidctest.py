"""The tests' OpenID Connect provider (provider.mjs, `oidc-provider` from npm) and ways to get tokens from it.

``from oidc.oidctest import oidc_provider_fixture`` in a test module gives the session-scoped fixture
``oidc_provider``;
the provider process is shared by every module that uses it and stopped at the end of the session.
"""

from __future__ import annotations

import atexit
import html
import json
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import jwt
import pytest
import requests
from testservices import free_port

HERE = Path(__file__).resolve().parent
PEOPLE = {"anna": "Anna Arkivarie", "bertil": "Bertil Bevarare", "rut": "Rut Forskare", "sara": "Sara Systemägare",
          "ivar": "Ivar IT-drift"}
PASSWORD = "test"
CLIENT_ID = "arkivflode"
#: Airflow's own UI (FAB auth manager, deploy/airflow/webserver_config.py): a confidential client of its own
AIRFLOW_CLIENT_ID, AIRFLOW_CLIENT_SECRET = "airflow", "airflow-secret"

ROLE_MAPPING = """\
groups:
  arkiv-arkivarier: {role: archivist}
  arkiv-forskare: {role: researcher}
  lex-systemagare: {role: system_owner, systems: [lex]}
  it-drift: {role: it_operations}
clients:
  lex-system: {system: lex}
  viva-system: {system: viva}
"""


@dataclass
class Provider:
    issuer: str
    process: subprocess.Popen
    keys_file: Path
    mapping: Path

    def env(self) -> dict[str, str]:
        """The archive's configuration for this provider."""
        return {"ARKIV_OIDC_ISSUER": self.issuer, "ARKIV_OIDC_CLIENT_ID": CLIENT_ID,
                "ARKIV_OIDC_ROLE_MAPPING": str(self.mapping)}

    def sign_cli_in(self, monkeypatch, home: Path, config: Path, logins: tuple[str, ...]) -> dict[str, str]:
        """The ``arkiv`` CLI of this test against the archive in ``home``, signing in through this provider
        (its token kept under ``config``, none carried in from outside): the device-flow tokens of ``logins``."""
        monkeypatch.setenv("ARKIV_HOME", str(home))
        monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
        for k in ("ARKIV_CATALOGUE_URL", "ARKIV_TOKEN", "ARKIV_TOKEN_FILE"):
            monkeypatch.delenv(k, raising=False)
        for k, v in self.env().items():
            monkeypatch.setenv(k, v)
        return {who: self.device_token(who) for who in logins}

    def airflow_env(self) -> dict[str, str]:
        """Airflow's sign-in through this provider (deploy/airflow/webserver_config.py), with the same role mapping."""
        return {"ARKIV_OIDC_ISSUER": self.issuer, "ARKIV_OIDC_ROLE_MAPPING": str(self.mapping),
                "ARKIV_AIRFLOW_OIDC_CLIENT_ID": AIRFLOW_CLIENT_ID,
                "ARKIV_AIRFLOW_OIDC_CLIENT_SECRET": AIRFLOW_CLIENT_SECRET,
                "ARKIV_AIRFLOW_OIDC_SCOPE": "openid profile groups"}

    def discovery(self) -> dict:
        return requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10).json()

    def client_credentials(self, client: str, *, resource: str | None = None) -> str:
        """A business system's access token (client credentials grant)."""
        data = {"grant_type": "client_credentials", "scope": "archive"}
        if resource:
            data["resource"] = resource
        r = requests.post(f"{self.issuer}/token", data=data, auth=(client, f"{client}-secret"), timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def play_device_user(self, verification_uri_complete: str, login: str, password: str = PASSWORD) -> str:
        """Be the person at the browser: open the device page, sign in; returns the last page's text."""
        s = requests.Session()
        r = s.get(verification_uri_complete, timeout=10)
        for _ in range(8):
            if 'name="password"' in r.text:
                r = _submit(s, r, {"login": login, "password": password})
            elif "<form" in r.text:
                r = _submit(s, r, {"confirm": "yes"})
            else:
                return r.text
        raise AssertionError("the device sign-in did not finish")

    def device_token(self, login: str) -> str:
        """A person's access token through the device flow, the test playing both the CLI and the person."""
        d = requests.post(f"{self.issuer}/device/auth", data={"client_id": CLIENT_ID, "scope": "openid profile"},
                          timeout=10).json()
        page = self.play_device_user(d["verification_uri_complete"], login)
        assert "Sign-in Success" in page or "success" in page.lower(), page[:300]
        r = requests.post(f"{self.issuer}/token", timeout=10, data={
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": d["device_code"],
            "client_id": CLIENT_ID})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def forge(self, claims: dict, *, alg: str = "RS256", kid: str | None = None, headers: dict | None = None) -> str:
        """A token signed with the provider's own key but with claims of the test's choosing."""
        keys = json.loads(self.keys_file.read_text())["keys"]
        key = next(k for k in keys if k["alg"] == alg)
        return jwt.encode(claims, jwt.PyJWK(key).key, algorithm=alg,
                          headers={"kid": kid or key["kid"], "typ": "at+jwt", **(headers or {})})

    def claims(self, sub: str = "anna", **changes) -> dict:
        now = int(time.time())
        base = {"iss": self.issuer, "aud": CLIENT_ID, "sub": sub, "iat": now, "exp": now + 300,
                "client_id": CLIENT_ID, "name": PEOPLE.get(sub, sub),
                "groups": {"anna": ["arkiv-arkivarier"], "bertil": ["arkiv-arkivarier"], "rut": ["arkiv-forskare"],
                           "sara": ["lex-systemagare"], "ivar": ["it-drift"]}.get(sub, [])}
        base.update(changes)
        return {k: v for k, v in base.items() if v is not None}


def _submit(s: requests.Session, r: requests.Response, extra: dict) -> requests.Response:
    m = re.search(r'<form[^>]*method="post"[^>]*action="([^"]*)"', r.text, re.I)
    assert m, r.text[:300]
    fields = {html.unescape(a): html.unescape(b)
              for a, b in re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', r.text)}
    fields.update(extra)
    return s.post(urljoin(r.url, html.unescape(m.group(1))), data=fields, timeout=10)


_lock = threading.Lock()
_running: dict[str, object] = {}


def start(tmp: Path) -> Provider:
    """Start provider.mjs on a free loopback port and wait until it listens."""
    if not (shutil.which("node") and (HERE / "node_modules" / "oidc-provider").is_dir()):
        pytest.skip("the test OpenID Connect provider needs node and `make install` (npm ci in tests/oidc)")
    port = free_port()
    keys = tmp / "provider-keys.json"
    mapping = tmp / "role-mapping.yaml"
    mapping.write_text(ROLE_MAPPING, encoding="utf-8")
    proc = subprocess.Popen(["node", str(HERE / "provider.mjs"), str(port), "--private-jwks", str(keys)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=HERE)
    line = proc.stdout.readline()
    if not line.startswith("ready "):
        proc.kill()
        raise RuntimeError(f"the OpenID Connect provider did not start: {line!r}")
    return Provider(line.split(" ", 1)[1].strip(), proc, keys, mapping)


def stop(p: Provider) -> None:
    p.process.terminate()
    try:
        p.process.wait(10)
    except subprocess.TimeoutExpired:
        p.process.kill()


@pytest.fixture(scope="session", name="oidc_provider")
def oidc_provider_fixture(tmp_path_factory):
    """The provider, started once per test process (shared by every module that imports this fixture)
    and stopped when the session ends."""
    with _lock:
        p = _running.get("provider")
        if p is None:
            p = _running["provider"] = start(tmp_path_factory.mktemp("oidc"))
            atexit.register(stop, p)
    yield p
    with _lock:
        if _running.pop("provider", None) is not None:
            stop(p)
