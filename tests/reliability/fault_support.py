"""Helpers of the fault-injection suite: run the real CLI, two backends, copies of an archived state.

A fault scenario needs a fresh archive each time. Building one is the slow part (the quality
gate and the package builder take ~12 s), so the retention scenarios start from a copy of a
state built once per backend: a folder tree and a SQLite file are copied; a PostgreSQL
catalogue is cloned with ``CREATE DATABASE … TEMPLATE`` and the buckets' objects are copied
server-side (with their recorded SHA-256 metadata).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
from testservices import PG_ADMIN_URL, S3_TEST_CREDENTIALS, ensure_postgres, make_bucket

BIN = Path(sys.executable).parent
INTERVAL = ["--start", "2025-01-01", "--end", "2026-01-01"]
AS_OF = "2040-01-01"  # Lex: kept cases due after P2Y, disposable ones after P10Y
KILLED = 137  # what transforms.common.failpoints.failpoint exits with (os._exit: no cleanup, no finally blocks)
BACKENDS = ["sqlite+folder", "postgres+s3"]

#: failpoint × backend -> outcome, printed at the end of the session (and written for `make reliability`)
RESULTS: list[dict] = []
#: fuzz target -> examples tried (Hypothesis runs each test body once per example)
FUZZ: Counter = Counter()
#: infrastructure fault × backend -> how it was injected and how it ended (test_infra_faults.py)
INFRA: list[dict] = []


def arkiv(env: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real ``arkiv`` console script in its own process."""
    return subprocess.run([str(BIN / "arkiv"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _base_env(home: Path, source: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARKIV_", "AWS_"))}
    return {**env, "ARKIV_HOME": str(home), "ARKIV_LEX_FILES": str(source["files"]),
            "ARKIV_CONN_LEX_DB": source["url"]}


# --- PostgreSQL and S3 helpers (the session-wide servers of tests/conftest.py) -------------------------

def _pg_create(template: str | None = None) -> str:
    ensure_postgres()
    name = f"arkiv_fault_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    admin.dispose()
    return name


def _pg_drop(name: str) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _pg_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _s3_client(endpoint: str):
    import boto3

    c = S3_TEST_CREDENTIALS
    return boto3.client("s3", endpoint_url=endpoint, region_name=c["AWS_DEFAULT_REGION"],
                        aws_access_key_id=c["AWS_ACCESS_KEY_ID"], aws_secret_access_key=c["AWS_SECRET_ACCESS_KEY"])


def _copy_bucket(endpoint: str, source: str, *, object_lock: bool) -> str:
    """A new bucket holding a server-side copy of every object of ``source`` (metadata kept)."""
    target = make_bucket(endpoint, object_lock=object_lock)
    client = _s3_client(endpoint)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=source):
        for item in page.get("Contents", []):
            client.copy_object(Bucket=target, Key=item["Key"], CopySource={"Bucket": source, "Key": item["Key"]},
                               MetadataDirective="COPY", ChecksumAlgorithm="SHA256")
    return target


class Backend:
    """One archive (catalogue, mellanarkiv, slutarkiv, ARKIV_HOME) on one backend, and how to copy it."""

    def __init__(self, kind: str, home: Path, source: dict, endpoint: str | None = None):
        self.kind, self.home, self.source, self.endpoint = kind, home, source, endpoint
        self.env = _base_env(home, source)
        self.db: str | None = None
        self.buckets: dict[str, str] = {}

    @classmethod
    def fresh(cls, kind: str, home: Path, source: dict, endpoint: str | None = None, *,
              catalogue_url: str | None = None) -> Backend:
        """A new, empty archive; ``catalogue_url`` puts the catalogue in a database of the caller's
        (a throwaway cluster) instead of a new one on the session's server."""
        b = cls(kind, home, source, endpoint)
        if kind == "postgres+s3":
            b.db = None if catalogue_url else _pg_create()
            b._catalogue = catalogue_url or _pg_url(b.db)
            b.buckets = {"mellanarkiv": make_bucket(endpoint), "slutarkiv": make_bucket(endpoint, object_lock=True)}
            b._s3_env(S3_TEST_CREDENTIALS)
        return b

    def _s3_env(self, credentials: dict) -> None:
        self.env.update(credentials)
        self.env.update({"ARKIV_S3_ENDPOINT_URL": self.endpoint,
                         "ARKIV_CATALOGUE_URL": getattr(self, "_catalogue", None) or _pg_url(self.db),
                         "ARKIV_MELLANARKIV": f"s3://{self.buckets['mellanarkiv']}/sip",
                         "ARKIV_SLUTARKIV": f"s3://{self.buckets['slutarkiv']}/ocfl"})

    def clone(self, home: Path) -> Backend:
        """An independent copy of this archive's whole state under ``home``."""
        shutil.copytree(self.home, home, symlinks=True)
        b = Backend(self.kind, home, self.source, self.endpoint)
        if self.kind == "postgres+s3":
            b.db = _pg_create(template=self.db)
            b.buckets = {"mellanarkiv": _copy_bucket(self.endpoint, self.buckets["mellanarkiv"], object_lock=False),
                         "slutarkiv": _copy_bucket(self.endpoint, self.buckets["slutarkiv"], object_lock=True)}
            b._s3_env(S3_TEST_CREDENTIALS)
        return b

    def drop(self) -> None:
        if self.db:
            _pg_drop(self.db)

    @property
    def catalogue_url(self) -> str:
        return self.env.get("ARKIV_CATALOGUE_URL") or f"sqlite:///{self.home / 'catalogue' / 'catalogue.sqlite'}"


# --- the invariant every scenario ends with ------------------------------------------------------------

def reconcile_report(env: dict, *extra: str) -> tuple[int, dict]:
    """`arkiv reconcile --json --grace 0`: (exit code, report)."""
    r = arkiv(env, "reconcile", "--json", "--grace", "0", *extra)
    assert r.returncode in (0, 1), f"reconcile failed to run: {r.stderr}"
    return r.returncode, json.loads(r.stdout)


def places(url: str) -> tuple[Counter, set]:
    """How many live packages each record is in, and the records disposed of with a tombstone."""
    eng = sa.create_engine(url)
    with eng.connect() as c:
        rows = c.exec_driver_sql(
            "SELECT r.system, r.source_id, p.status, t.package_id FROM records r "
            "JOIN packages p ON p.id = r.package_id LEFT JOIN tombstones t ON t.package_id = p.id").all()
    eng.dispose()
    live = Counter((s, i) for s, i, status, _ in rows if status in ("stored", "transferred"))
    disposed = {(s, i) for s, i, status, stone in rows if status == "disposed" and stone}
    return live, disposed


def outcome_counts(env: dict, catalogue_url: str, expected: set) -> dict:
    """Reconcile and count against a clean run: lost, duplicated, inconsistent (and the report)."""
    code, report = reconcile_report(env)
    live, disposed = places(catalogue_url)
    placed = set(live) | disposed
    return {"code": code, "report": report, "placed": placed,
            "lost": len(expected - placed),
            "duplicated": sum(n - 1 for n in live.values() if n > 1) + len(set(live) & disposed)
            + report["counts"].get("orphan", 0) + len(placed - expected),
            "inconsistent": len([f for f in report["findings"] if not f["repaired"]])}


# --- a fault-injecting proxy in front of an S3 endpoint --------------------------------------------------

def s3_operation(method: str, url: str) -> str:
    """The S3 operation an HTTP request is (the few a package upload uses), from its method and query."""
    q = parse_qs(urlsplit(url).query, keep_blank_values=True)
    if method == "PUT":
        return "UploadPart" if "partNumber" in q else "PutObjectRetention" if "retention" in q else "PutObject"
    if method == "POST":
        return "CreateMultipartUpload" if "uploads" in q else "CompleteMultipartUpload" if "uploadId" in q else "Post"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
    return {"HEAD": "HeadObject", "GET": "GetObject"}.get(method, method)


_ERRORS = {"500": (500, "InternalError", "We encountered an internal error. Please try again."),
           "503": (503, "SlowDown", "Please reduce your request rate.")}


class FaultProxy:
    """An HTTP proxy in front of an S3 endpoint that breaks chosen requests, and counts every one.

    ``fail(operation, *actions, always=None, key_part="")``: the next requests of that operation
    (whose path contains ``key_part``) get the actions in turn, then ``always`` (or a clean
    forward). Actions: ``"500"``/``"503"`` answer with that S3 error; ``"drop"`` closes the
    connection without an answer; ``"lose"`` forwards the request (the server acts on it) and
    closes the connection instead of passing the answer on — the lost-response case.
    ``log`` holds ``(operation, path, action)`` for every request seen.
    """

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream).netloc
        self.rules: list[dict] = []
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                body = self._body()
                op = s3_operation(self.command, self.path)
                action = proxy._action(op, urlsplit(self.path).path)
                if action in _ERRORS:
                    status, code, message = _ERRORS[action]
                    payload = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                               f"<Message>{message}</Message></Error>").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if action == "drop":
                    self.close_connection = True
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("expect", "transfer-encoding", "connection", "content-length")}
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                if action == "lose":
                    self.close_connection = True
                    return
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                        self.send_header(k, v)
                # a HEAD has no body but announces the object's length
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail(self, operation: str, *actions: str, always: str | None = None, key_part: str = "") -> None:
        with self._lock:
            self.rules.append({"op": operation, "next": list(actions), "always": always, "key_part": key_part})

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.log.clear()

    def _action(self, op: str, path: str) -> str:
        with self._lock:
            action = "forward"
            for rule in self.rules:
                if rule["op"] == op and rule["key_part"] in path:
                    if rule["next"]:
                        action = rule["next"].pop(0)
                    elif rule["always"]:
                        action = rule["always"]
                    break
            self.log.append((op, path, action))
            return action

    def count(self, operation: str, action: str | None = None) -> int:
        """Requests of ``operation`` seen (with ``action`` only, when given)."""
        return sum(1 for op, _, a in self.log if op == operation and (action is None or a == action))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
