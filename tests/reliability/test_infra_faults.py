"""Infrastructure faults: the object store, the disk and the catalogue database failing under a real run.

Where test_faults.py kills `arkiv` itself, these scenarios break what it stands on while
`arkiv run lex` is working, and require the same ending: a clear error (an exit code, one
line naming what failed, no traceback) or a correct result — never a lost or doubled package.
Each is followed by the recovery an operator would make once the fault is gone (a plain
rerun) and the invariant check: `arkiv reconcile` clean, every record of a clean run in exactly
one package. The faults:

1. the object store (a moto server of the test's own) killed in the middle of a multipart upload;
2. the object store answering with errors, through a fault-injecting proxy: transient ones
   (503, a dropped connection, a lost answer) are retried with backoff and the run succeeds;
   a persistent one ends in a clear error, the upload aborted, and a clean rerun;
3. the disk filling up while the packages are built (a small tmpfs as the build folder);
4. the catalogue database (a throwaway cluster: initdb, pg_ctl) stopped between storing a
   package and committing its record;
5. two runs of the same interval started at the same moment, on both backends.

Every outcome goes into a table printed at the end of the session (conftest.py).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from fault_support import (
    BACKENDS,
    BIN,
    INFRA,
    INTERVAL,
    Backend,
    FaultProxy,
    _s3_client,
    arkiv,
    outcome_counts,
)
from testservices import ThrowawayCluster, make_bucket, start_moto, stop_process

pytestmark = [pytest.mark.faults, pytest.mark.slow]

RUN = ["run", "lex", *INTERVAL]
#: the two packages (0.5 and 0.9 MB) both go up as multipart uploads; botocore gives up after three attempts
S3_FAULT_ENV = {"ARKIV_S3_MULTIPART_THRESHOLD_MB": "0.1", "ARKIV_S3_MAX_ATTEMPTS": "3"}
#: one package in a single PUT, the other in a multipart upload
S3_MIXED_ENV = {"ARKIV_S3_MULTIPART_THRESHOLD_MB": "0.7", "ARKIV_S3_MAX_ATTEMPTS": "3"}


def _start(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "arkiv"), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _start_paused(env: dict, point: str, flag: Path) -> subprocess.Popen:
    """`arkiv run` held at failpoint ``point`` (see transforms.common.failpoints); returns once it is there."""
    proc = _start({**env, "ARKIV_FAILPOINT_PAUSE": point, "ARKIV_FAILPOINT_PAUSE_FILE": str(flag)}, *RUN)
    deadline = time.monotonic() + 120
    while not flag.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"arkiv run ended (exit {proc.returncode}) before reaching {point}: {err}")
        assert time.monotonic() < deadline, f"{point} not reached in 120 s"
        time.sleep(0.05)
    return proc


def _assert_clear_error(proc: subprocess.CompletedProcess | subprocess.Popen, stderr: str, *must: str) -> str:
    """Exit 1, no traceback, no SQL parameters, and the words that say what failed; the message line."""
    assert proc.returncode == 1, f"exit {proc.returncode}: {stderr}"
    assert "Traceback" not in stderr and "[parameters" not in stderr, stderr
    line = next(ln for ln in stderr.splitlines() if ln.startswith("arkiv: "))
    for word in must:
        assert word in line, f"{word!r} not in {line!r}"
    return line


def _catalogued(url: str) -> int:
    eng = sa.create_engine(url)
    with eng.connect() as c:
        n = c.exec_driver_sql("SELECT count(*) FROM packages").scalar()
    eng.dispose()
    return n


def _bucket_state(endpoint: str, bucket: str) -> tuple[list[str], int]:
    """The object keys in ``bucket`` and the number of multipart uploads still open in it."""
    s3 = _s3_client(endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return keys, len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def _finish(fault: str, backend: str, injected: str, outcome: str, recovery: str, archive: Backend,
            expected: set, env: dict | None = None, message: str = "") -> None:
    """Record the scenario's outcome in the table, then require the invariant."""
    counts = outcome_counts(env or archive.env, archive.catalogue_url, expected)
    INFRA.append({"fault": fault, "backend": backend, "injected": injected, "outcome": outcome,
                  "recovery": recovery, "message": message, "lost": counts["lost"],
                  "duplicated": counts["duplicated"], "inconsistent": counts["inconsistent"]})
    assert counts["code"] == 0 and counts["report"]["consistent"], counts["report"]["findings"]
    assert counts["lost"] == 0 and counts["duplicated"] == 0
    assert counts["placed"] == expected


# --- 1. the object store stops in the middle of a multipart upload ------------------------------------------

def test_object_store_killed_mid_multipart_upload(tmp_path, small_lex, expected_records):
    moto, endpoint = start_moto()
    archive = Backend.fresh("postgres+s3", tmp_path / "var", small_lex, endpoint)
    env = {**archive.env, **S3_FAULT_ENV}
    sip = archive.buckets["mellanarkiv"]
    try:
        proc = _start_paused(env, "storage.after_part", tmp_path / "paused")
        # a part is up, the upload open: nothing of it is visible as an object
        keys, open_uploads = _bucket_state(endpoint, sip)
        assert keys == [] and open_uploads == 1
        stop_process(moto, kill=True)
        (tmp_path / "paused").unlink()
        _, err = proc.communicate(timeout=180)
        line = _assert_clear_error(proc, err, "mellanarkiv", "lex/2025/", f"s3://{sip}/sip", "upload")
        assert _catalogued(archive.catalogue_url) == 0

        # The store comes back (moto keeps nothing: the buckets are made again, empty).
        moto, _ = start_moto(urlsplit(endpoint).port)
        for role, locked in (("mellanarkiv", False), ("slutarkiv", True)):
            make_bucket(endpoint, object_lock=locked, name=archive.buckets[role])
        rerun = arkiv(env, *RUN)
        assert rerun.returncode == 0, rerun.stderr
        assert "2 new package(s)" in rerun.stdout
        _finish("object store killed mid multipart upload", "postgres+s3",
                "SIGKILL moto while paused after part 1", "clear error", "restart store + rerun", archive,
                expected_records, env, line)
    finally:
        stop_process(moto)
        archive.drop()


# --- 2. the object store answers with errors ------------------------------------------------------------

def test_object_store_errors_are_retried_or_end_clearly(tmp_path, small_lex, expected_records, moto_server):
    proxy = FaultProxy(moto_server)
    archive = Backend.fresh("postgres+s3", tmp_path / "var", small_lex, proxy.url)
    env = {**archive.env, **S3_MIXED_ENV}
    sip = archive.buckets["mellanarkiv"]
    try:
        # Persistent: every write of a package fails. botocore tries three times with backoff, then
        # the run stops with a clear error (a multipart upload is aborted first).
        proxy.fail("PutObject", always="500", key_part="/sip/")
        proxy.fail("CompleteMultipartUpload", always="500", key_part="/sip/")
        failed = arkiv(env, *RUN)
        line = _assert_clear_error(failed, failed.stderr, "mellanarkiv", "lex/2025/", "InternalError")
        attempts = proxy.count("PutObject", "500") + proxy.count("CompleteMultipartUpload", "500")
        assert attempts == 3, proxy.log
        assert proxy.count("AbortMultipartUpload") == proxy.count("CompleteMultipartUpload", "500") // 3
        assert _bucket_state(moto_server, sip) == ([], 0)  # no object, no open upload left behind
        assert _catalogued(archive.catalogue_url) == 0
        INFRA.append({"fault": "object store: persistent 500s", "backend": "postgres+s3",
                      "injected": "proxy: every package PUT/completion → 500", "outcome": "clear error",
                      "recovery": f"{attempts} attempts, then stop; nothing left in the bucket",
                      "message": line, "lost": 0, "duplicated": 0, "inconsistent": 0})

        # Transient: a 503, a dropped connection and lost answers (the server stored the object or
        # completed the upload, the client never heard): botocore retries each, the conditional
        # write and the read-back make the repeated request safe, and each package is archived once.
        proxy.clear()
        proxy.fail("PutObject", "lose", key_part="/sip/")
        proxy.fail("UploadPart", "503", "drop", key_part="/sip/")
        proxy.fail("CompleteMultipartUpload", "lose", key_part="/sip/")
        rerun = arkiv(env, *RUN)
        assert rerun.returncode == 0, rerun.stderr
        assert "2 new package(s)" in rerun.stdout
        injected = [(op, a) for op, _, a in proxy.log if a != "forward"]
        assert sorted(injected) == [("CompleteMultipartUpload", "lose"), ("PutObject", "lose"),
                                    ("UploadPart", "503"), ("UploadPart", "drop")], proxy.log
        # each broken request was sent again, once
        assert (proxy.count("PutObject"), proxy.count("UploadPart"), proxy.count("CompleteMultipartUpload")) \
            == (2, 3, 2), proxy.log
        keys, open_uploads = _bucket_state(moto_server, sip)
        assert len(keys) == 2 and open_uploads == 0
        _finish("object store: transient errors", "postgres+s3",
                "proxy: 503, dropped connection, 2 lost answers", "retried ok",
                "4 requests retried by botocore; the run succeeded", archive, expected_records, env)
    finally:
        proxy.close()
        archive.drop()


# --- 3. the disk fills up while the packages are built ----------------------------------------------------

def _tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")


def _grow(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=64m", str(where)], check=True)


def test_disk_full_while_building_and_while_storing(tmp_path, small_lex, expected_records):
    """The build folder fills up (1 MiB), then — with room to build — the mellanarkiv folder
    (700 KiB: the smaller package fits, the larger does not). Each write fails clearly, leaves
    no temporary and no half package, and once there is space the rerun archives what is missing."""
    archive = Backend.fresh("sqlite+folder", tmp_path / "var", small_lex)
    build, mellanarkiv = tmp_path / "build", archive.home / "mellanarkiv"
    env = {**archive.env, "ARKIV_BUILD_DIR": str(build)}
    mounts = []
    try:
        for where, size in ((build, "1m"), (mellanarkiv, "700k")):
            _tmpfs(where, size)
            mounts.append(where)

        def stored() -> int:
            # every package in the mellanarkiv is catalogued, nothing temporary is left anywhere
            temporary = [p.name for d in (build, mellanarkiv) for p in d.rglob("*")
                         if p.is_file() and (p.name.startswith(".") or ".part-" in p.name or ".work-" in p.name)]
            assert not temporary, temporary
            n = len(list(mellanarkiv.rglob("*.tar")))
            assert _catalogued(archive.catalogue_url) == n
            return n

        full_build = arkiv(env, *RUN)
        build_line = _assert_clear_error(full_build, full_build.stderr, "no space left on device", str(build),
                                         "rerun")
        after_build = stored()
        assert after_build < 2
        INFRA.append({"fault": "disk full while building", "backend": "sqlite+folder",
                      "injected": "1 MiB tmpfs as ARKIV_BUILD_DIR", "outcome": "clear error",
                      "recovery": f"{after_build} of 2 packages archived before it; nothing half-built",
                      "message": build_line, "lost": 0, "duplicated": 0, "inconsistent": 0})

        _grow(build)
        full_store = arkiv(env, *RUN)
        store_line = _assert_clear_error(full_store, full_store.stderr, "mellanarkiv", "lex/2025/",
                                         "No space left on device", "nothing was stored")
        assert stored() < 2

        _grow(mellanarkiv)
        rerun = arkiv(env, *RUN)
        assert rerun.returncode == 0, rerun.stderr
        assert stored() == 2
        _finish("disk full in the mellanarkiv", "sqlite+folder", "700 KiB tmpfs as the mellanarkiv folder",
                "clear error", "free space + rerun (both faults)", archive, expected_records, env, store_line)
    finally:
        for where in mounts:
            subprocess.run(["umount", "-l", str(where)], check=False)


# --- 4. the catalogue database goes away between storing and committing -----------------------------------

def test_catalogue_database_stopped_mid_transaction(tmp_path, small_lex, expected_records, moto_server):
    cluster = ThrowawayCluster()
    archive = None
    try:
        cluster.start()
        archive = Backend.fresh("postgres+s3", tmp_path / "var", small_lex, moto_server,
                                catalogue_url=cluster.create_database("arkiv_catalogue"))
        proc = _start_paused(archive.env, "record.after_verify_before_commit", tmp_path / "paused")
        cluster.stop("immediate")  # a crash: every connection cut, the open transaction gone
        (tmp_path / "paused").unlink()
        _, err = proc.communicate(timeout=180)
        line = _assert_clear_error(proc, err, "catalogue database", "rolled back", "rerun")

        cluster.start()
        assert _catalogued(archive.catalogue_url) == 0  # the transaction did not half-commit
        # the chain ships and verifies every package before it records the first (as the DAG's mapped
        # tasks do), so both packages stored before the crash are now uncatalogued: reconcile sees
        # them, the rerun sets them aside and records them
        before = outcome_counts(archive.env, archive.catalogue_url, expected_records)
        assert before["code"] == 1 and before["report"]["counts"].get("orphan") == 2, before["report"]
        rerun = arkiv(archive.env, *RUN)
        assert rerun.returncode == 0, rerun.stderr
        assert "2 new package(s)" in rerun.stdout
        _finish("catalogue database stopped mid-transaction", "postgres+s3",
                "pg_ctl stop -m immediate before commit", "clear error", "restart database + rerun", archive,
                expected_records, message=line)
    finally:
        cluster.destroy()


# --- 5. two runs of the same interval at the same moment --------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_two_runs_of_one_interval_at_once(backend, tmp_path, small_lex, expected_records, moto_server):
    archive = Backend.fresh(backend, tmp_path / "var", small_lex, moto_server)
    try:
        procs = [_start(archive.env, *RUN) for _ in range(2)]
        ended = [(p, *p.communicate(timeout=300)) for p in procs]
        codes = sorted(p.returncode for p, _, _ in ended)
        assert codes in ([0, 0], [0, 1]), [(p.returncode, err) for p, _, err in ended]
        lines = []
        for p, _, err in ended:
            if p.returncode:
                lines.append(_assert_clear_error(p, err, "already running"))
        assert sum("2 new package(s)" in out for _, out, _ in ended) == 1
        again = arkiv(archive.env, *RUN)
        assert again.returncode == 0 and "0 new package(s)" in again.stdout, again.stderr
        _finish("two runs of one interval at once", backend, "2 × arkiv run started together",
                "correct result" if codes == [0, 0] else "one ran, one refused (already running)",
                "none needed", archive, expected_records, message=" ".join(lines))
    finally:
        archive.drop()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_run_lock_dies_with_its_holder(kind, tmp_path):
    """A run killed while it holds the lock (SIGKILL: no cleanup) does not block the next one."""
    import sys

    from testservices import throwaway_postgres_database

    from transforms.catalogue import Catalogue
    from transforms.common.errors import AlreadyRunning

    hold = ("import sys, time\nfrom transforms.catalogue import Catalogue\n"
            "held = Catalogue(sys.argv[1]).exclusive('run:x', 'x')\nheld.__enter__()\nprint('held', flush=True)\n"
            "time.sleep(120)")
    with throwaway_postgres_database() as pg_url:
        url = f"sqlite:///{tmp_path / 'catalogue.sqlite'}" if kind == "sqlite" else pg_url
        holder = subprocess.Popen([sys.executable, "-c", hold, url], stdout=subprocess.PIPE, text=True)
        cat = Catalogue(url)
        try:
            assert holder.stdout.readline().strip() == "held"
            with pytest.raises(AlreadyRunning, match="already running in another process"), cat.exclusive("run:x", "x"):
                pass
            stop_process(holder, kill=True)
            deadline = time.monotonic() + 10
            while True:  # the server notices the dead connection within moments
                try:
                    with cat.exclusive("run:x", "x"):
                        break
                except AlreadyRunning:
                    assert time.monotonic() < deadline, "the lock outlived its holder"
                    time.sleep(0.1)
        finally:
            stop_process(holder, kill=True)
            cat.dispose()
