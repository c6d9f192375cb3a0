"""Local services for the tests — PostgreSQL, MariaDB, moto's S3 server — started when absent.

Plain functions and constants, importable by any test (``from testservices import …``); the
fixtures built on them are in conftest.py. (A test module cannot import ``conftest`` reliably:
every test folder may have its own.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get("ARKIV_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _answers(url: str) -> bool:
    """True when the database server at ``url`` answers a query."""
    try:
        eng = sa.create_engine(url)
        with eng.connect() as c:
            c.execute(sa.text("SELECT 1"))
        eng.dispose()
        return True
    except sa.exc.OperationalError:
        return False


def _postgres_up() -> bool:
    return _answers(PG_ADMIN_URL)


def ensure_postgres() -> None:
    """Start the machine's PostgreSQL cluster if it is not answering (CI machines start it anyway)."""
    if _postgres_up():
        return
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if versions and shutil.which("pg_ctlcluster"):
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=False)
        for _ in range(30):
            if _postgres_up():
                return
            time.sleep(1)
    raise RuntimeError(f"PostgreSQL is not reachable at {PG_ADMIN_URL} and could not be started")


@contextmanager
def throwaway_postgres_database(prefix: str = "arkiv_test") -> Iterator[str]:
    """A new PostgreSQL database (the server is started if it is down), dropped afterwards; yields its URL."""
    ensure_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


MARIADB_ADMIN_URL = os.environ.get("ARKIV_TEST_MARIADB_ADMIN_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def _mariadb_up() -> bool:
    return _answers(MARIADB_ADMIN_URL)


def ensure_mariadb() -> None:
    """Start the machine's MariaDB server if it is not answering."""
    if _mariadb_up():
        return
    daemon = shutil.which("start-stop-daemon") or "/sbin/start-stop-daemon"
    subprocess.run([daemon, "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd"], check=False)
    for _ in range(30):
        if _mariadb_up():
            return
        time.sleep(1)
    raise RuntimeError(f"MariaDB is not reachable at {MARIADB_ADMIN_URL} and could not be started")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


S3_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "arkiv-test", "AWS_SECRET_ACCESS_KEY": "arkiv-test-secret",
                       "AWS_DEFAULT_REGION": "eu-north-1"}


def make_bucket(endpoint: str, *, object_lock: bool = False, name: str | None = None) -> str:
    """A new, uniquely named bucket on ``endpoint`` (Object Lock enabled when asked); ``name`` to
    recreate a known one (on a restarted moto server, which keeps nothing)."""
    import boto3

    name = name or f"arkiv-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="eu-north-1",
                          aws_access_key_id=S3_TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=S3_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-north-1"},
                         ObjectLockEnabledForBucket=object_lock)
    return name


def start_moto(port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A moto S3 server of the caller's own on ``port`` (a free one by default): ``(process, endpoint)``.

    moto keeps everything in memory: a server started again on the same port is empty.
    """
    import sys
    import urllib.request
    from pathlib import Path

    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)  # noqa: S310 — loopback only
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server on port {port} exited with {proc.returncode}") from None
            time.sleep(0.1)
    stop_process(proc)
    raise RuntimeError(f"moto_server did not answer on {url}")


@contextmanager
def airflow_api_server(env: dict[str, str], log_path, *, port: int | None = None, start_timeout: float = 240,
                       stop_grace: float = 3) -> Iterator[str]:
    """``airflow api-server`` on loopback (``port``, a free one by default) with ``env`` (its metadata
    database migrated): yields its base URL once ``/api/v2/monitor/health`` answers, and ends its
    process group after.
    Its output goes to ``log_path``, whose tail is in the error when it does not start. The API server
    has nothing of its own to write on SIGTERM, so ``stop_grace`` seconds are enough before a SIGKILL."""
    import signal
    import sys
    import urllib.error
    import urllib.request
    from pathlib import Path

    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = Path(log_path)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "api-server", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=5):  # noqa: S310
                        break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError("the API server did not start:\n"
                                             + log_path.read_text(errors="replace")[-5000:]) from None
                    time.sleep(1)
            yield base
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=stop_grace)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)


def stop_process(proc: subprocess.Popen, *, kill: bool = False) -> None:
    """End a process this test started: SIGKILL when ``kill`` (a crash), else SIGTERM and a wait."""
    if proc.poll() is not None:
        return
    if kill:
        proc.kill()
    else:
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class ThrowawayCluster:
    """A PostgreSQL cluster of the test's own (``initdb`` in a temporary folder, ``pg_ctl``), on a free
    port, so that a test can stop the server under a running program without touching anyone else's.

    ``initdb`` refuses to run as root: as root the cluster belongs to the ``postgres`` user.
    """

    def __init__(self) -> None:
        import tempfile
        from pathlib import Path

        self.root = Path(tempfile.mkdtemp(prefix="arkiv-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    def _run(self, *cmd: str) -> None:
        r = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stderr.strip()}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop``; ``mode="immediate"`` is a crash: every connection cut, no checkpoint."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        status = subprocess.run([*self._as, "pg_ctl", "-D", str(self.data), "status"], capture_output=True)
        return status.returncode == 0

    def create_database(self, name: str) -> str:
        eng = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        eng.dispose()
        return self.url(name)

    def destroy(self) -> None:
        if self.data.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
