"""A real, multi-process Airflow deployment for the integration tests: the same components as
docker-compose.yml (api-server, scheduler, dag-processor, Celery workers), each a subprocess
with its own AIRFLOW_HOME, talking only through PostgreSQL, Redis and HTTP as they would on
separate machines. The benchmark of mapped tasks on the LocalExecutor (bench/airflow_stack.py)
starts the same stack without Celery workers.

The shared settings come from deploy/airflow.env (the file docker-compose.yml gives every
Airflow service); only the endpoints and secrets are set here, under the names listed in
:data:`ENDPOINT_VARIABLES` — tests/test_deployment.py checks that docker-compose.yml sets the
same ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AIRFLOW_ENV_FILE = PROJECT / "deploy" / "airflow.env"

#: Site-specific settings (endpoints, secrets) the deployment must give every Airflow service.
ENDPOINT_VARIABLES = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",   # metadata database (PostgreSQL)
    "AIRFLOW__CELERY__BROKER_URL",           # Redis
    "AIRFLOW__CELERY__RESULT_BACKEND",       # PostgreSQL (db+postgresql://…)
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",  # where workers report task state (the api-server)
    "AIRFLOW__API_AUTH__JWT_SECRET",         # shared by api-server and workers
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__METRICS__STATSD_HOST",
    "ARKIV_CATALOGUE_URL",                   # the archive catalogue (PostgreSQL)
    "ARKIV_WORK",                            # s3://bucket: the working bucket tasks hand each other keys in
    "ARKIV_MELLANARKIV",                     # s3://bucket
    "ARKIV_SLUTARKIV",                       # s3://bucket with Object Lock
    "ARKIV_S3_ENDPOINT_URL",                 # MinIO (or moto in the test); unset for AWS itself
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
)


#: Parsing for a test's own DAGs folder, which does not change while the test runs: the folder is
#: listed every 5 s and each file parsed once when it is found, not again every 30 s (Airflow's
#: default): with all ten DAG files that was some ten seconds of parsing every 30 s beside the tasks.
#: DAG-level callbacks still run: the dag-processor takes those from the database as they come.
PARSE_ONCE = {"AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
              "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600"}


def dags_folder(dest: Path, systems: tuple[str, ...], dags: tuple[str, ...] = ()) -> Path:
    """A DAGs folder at ``dest`` with only what a test runs: the loader and YAML of each of ``systems``
    and the top-level DAG files ``dags`` (e.g. ``"retention.py"``), copied from the checkout.

    Fewer files, less for the dag-processor to parse. ``ARKIV_SYSTEMS_DIR`` may still name the
    checkout's systems folder: the copied YAMLs are the same files.
    """
    import shutil

    (dest / "systems").mkdir(parents=True)
    for name in dags:
        shutil.copy(PROJECT / "dags" / name, dest / name)
    for system in systems:
        for ext in ("py", "yaml"):
            shutil.copy(PROJECT / "dags" / "systems" / f"{system}.{ext}", dest / "systems" / f"{system}.{ext}")
    return dest


def read_env_file(path: Path = AIRFLOW_ENV_FILE) -> dict[str, str]:
    """``KEY=value`` lines of an env file (comments and blank lines skipped)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Component:
    name: str
    proc: subprocess.Popen
    log: Path


@dataclass
class AirflowCluster:
    """Starts and stops the components; ``env`` is what every one of them gets."""

    root: Path
    env: dict[str, str]
    api_port: int
    components: list[Component] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _env_for(self, name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        home = self.root / name
        home.mkdir(parents=True, exist_ok=True)
        # every component that serves logs gets its own port (two workers share this machine)
        return {**self.env, "AIRFLOW_HOME": str(home), "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                **(extra or {})}

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """A one-shot ``airflow`` command (e.g. ``db migrate``) with the cluster's settings."""
        return subprocess.run([str(BIN / "airflow"), *args], env=self._env_for("cli"), capture_output=True,
                              text=True, timeout=timeout)

    def start(self, name: str, *args: str, extra_env: dict[str, str] | None = None) -> Component:
        """Start ``airflow <args>`` in its own process group, output to <root>/<name>.log."""
        log = self.root / f"{name}.log"
        out = open(log, "ab")  # noqa: SIM115 - the child owns it; a restart appends
        proc = subprocess.Popen([str(BIN / "airflow"), *args], env=self._env_for(name, extra_env), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root / name)
        out.close()
        comp = Component(name, proc, log)
        self.components.append(comp)
        return comp

    def write_password(self) -> None:
        """The simple auth manager's password file for the api-server's ``admin`` user."""
        home = self.root / "api-server"
        home.mkdir(parents=True, exist_ok=True)
        (home / "passwords.json").write_text(json.dumps({"admin": self.password}), encoding="utf-8")

    def start_core(self) -> None:
        """Migrate the metadata database, then start the api-server, scheduler and dag-processor.

        With the CeleryExecutor the workers are started after this; with the LocalExecutor the
        scheduler runs the tasks itself. ``timings["db migrate"]`` is how long the migration took.
        """
        started = time.monotonic()
        migrated = self.run("db", "migrate")
        if migrated.returncode != 0:
            raise RuntimeError("airflow db migrate failed:\n" + migrated.stdout[-3000:] + migrated.stderr[-3000:])
        self.timings["db migrate"] = time.monotonic() - started
        self.write_password()
        passwords = str(self.root / "api-server" / "passwords.json")
        self.start("api-server", "api-server", "--port", str(self.api_port), "--host", "127.0.0.1", "--workers", "1",
                   extra_env={"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": passwords})
        self.start("scheduler", "scheduler")
        self.start("dag-processor", "dag-processor")

    def restart(self, name: str, *, extra_env: dict[str, str] | None = None) -> Component:
        """Stop one component (its whole process group) and start it again with ``extra_env`` on top."""
        old = next(c for c in self.components if c.name == name)
        _stop_group(old.proc, grace=20)
        self.components.remove(old)
        args = old.proc.args[1:] if isinstance(old.proc.args, list) else []
        return self.start(name, *args, extra_env=extra_env)

    def wait(self, what: str, check, timeout: float, interval: float = 2):
        """Poll ``check()`` until it returns something true (returned); fail if a component exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            result = check()
            if result:
                return result
            time.sleep(interval)
        raise TimeoutError(f"{what}: not after {timeout} s")

    def check_alive(self) -> None:
        dead = [c for c in self.components if c.proc.poll() is not None]
        if dead:
            raise RuntimeError("component(s) exited: " + ", ".join(f"{c.name} (rc {c.proc.returncode})" for c in dead))

    def stop(self, grace: float = 20, api_server_grace: float = 3) -> None:
        """SIGTERM every process group, then SIGKILL what is left after ``grace`` seconds.

        The api-server gets ``api_server_grace``: it keeps nothing of its own to write, and on SIGTERM
        it used to outwait any grace (20 s of every test's teardown) while the others exited at once.
        ``timings["stop <name>"]`` is how long each component took to exit.
        """
        for c in self.components:
            if c.proc.poll() is None:
                _signal_group(c.proc, signal.SIGTERM)
        started = time.monotonic()
        for c in self.components:
            deadline = started + (api_server_grace if c.name == "api-server" else grace)
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            self.timings[f"stop {c.name}"] = round(time.monotonic() - started, 1)
            _signal_group(c.proc, signal.SIGKILL)  # children (task processes, gunicorn/uvicorn workers) too
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(timeout=10)

    def logs(self, tail: int = 60) -> str:
        """The last lines of every component's log (printed when a test fails)."""
        parts = []
        for c in self.components:
            lines = c.log.read_text(encoding="utf-8", errors="replace").splitlines() if c.log.exists() else []
            parts.append(f"===== {c.name} (rc {c.proc.poll()}) — last {tail} of {len(lines)} lines =====")
            parts.extend(lines[-tail:])
        return "\n".join(parts)

    # --- the REST API ----------------------------------------------------------------------

    def token(self) -> str:
        """A JWT from the simple auth manager (POST /auth/token)."""
        return self.request("POST", "/auth/token", {"username": "admin", "password": self.password},
                            token=None)["access_token"]

    def request(self, method: str, path: str, body: dict | None = None, *, token: str | None = None,
                timeout: float = 30) -> dict:
        req = urllib.request.Request(self.api + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read() or b"{}")

    def wait_for_api(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                health = self.request("GET", "/api/v2/monitor/health", timeout=5)
                if health.get("metadatabase", {}).get("status") == "healthy":
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(1)
        raise TimeoutError(f"api-server not healthy after {timeout} s")


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group ``proc`` leads, SIGKILL it after ``grace`` seconds."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    _signal_group(proc, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the group the component leads (start_new_session)
