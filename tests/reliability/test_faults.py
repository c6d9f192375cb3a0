"""Fault injection: kill `arkiv` hard at every failpoint, recover, and prove nothing was lost or doubled.

Each scenario arms one failpoint (``ARKIV_FAILPOINT``; the process dies with ``os._exit`` —
no exception handler, no ``finally``, like a SIGKILL or a power cut), runs the CLI until it
dies, then recovers the way an operator would:

1. rerun the same command normally;
2. if the rerun refuses or `arkiv reconcile` still finds something, run `arkiv reconcile
   --repair` (which only does what is provably safe) and rerun once more;
3. `arkiv reconcile` must then exit 0, and the catalogue must hold exactly the records of a
   clean run — each in exactly one place (zero lost, zero duplicated).

The recovery each scenario needed is printed in a table at the end of the session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa
from fault_support import AS_OF, BACKENDS, INTERVAL, KILLED, RESULTS, Backend, arkiv
from fault_support import places as _places
from fault_support import reconcile_report as _reconcile

pytestmark = [pytest.mark.faults, pytest.mark.slow]

#: (failpoint, phase, backends where the code path is reached with small packages)
FAILPOINTS = [
    ("extract.after_batch", "run", BACKENDS),
    ("package.after_write", "run", BACKENDS),
    ("storage.after_temp_write", "run", ["sqlite+folder"]),  # S3: the multipart path (test below)
    ("storage.after_put_before_read_back", "run", ["postgres+s3"]),
    ("ship.after_copy_before_verify", "run", BACKENDS),
    ("record.after_verify_before_commit", "run", BACKENDS),
    ("record.after_commit_before_cleanup", "run", BACKENDS),
    ("finish.before_batch_archived", "run", BACKENDS),
    ("ocfl.before_publish", "transfer", BACKENDS),
    ("ocfl.before_declaration", "transfer", ["postgres+s3"]),  # a folder root is published by one rename
    ("transfer.after_copy_before_record", "transfer", BACKENDS),
    ("transfer.after_record_before_delete", "transfer", BACKENDS),
    ("disposal.after_tombstone_before_delete", "disposal", BACKENDS),
    ("disposal.after_delete_before_record", "disposal", BACKENDS),
    ("disposal.before_certificate", "disposal", BACKENDS),
]
CASES = [pytest.param(fp, phase, backend, id=f"{fp}-{backend}")
         for fp, phase, backends in FAILPOINTS for backend in backends]


@pytest.mark.parametrize(("failpoint", "phase", "backend"), CASES)
def test_killed_at_failpoint_recovers_with_nothing_lost_or_doubled(failpoint, phase, backend, tmp_path, small_lex,
                                                                     base_states, expected_records, moto_server):
    if phase == "run":
        archive = Backend.fresh(backend, tmp_path / "var", small_lex, moto_server)
        command = ["run", "lex", *INTERVAL]
    else:
        archive = base_states(backend)["archived" if phase == "transfer" else "approved"].clone(tmp_path / "var")
        command = ["retention", "run", "--as-of", AS_OF]
    try:
        killed = arkiv({**archive.env, "ARKIV_FAILPOINT": failpoint}, *command)
        assert killed.returncode == KILLED, f"{failpoint} was not reached (exit {killed.returncode}): {killed.stderr}"
        recovery = ["rerun"]
        rerun = arkiv(archive.env, *command)
        code, report = _reconcile(archive.env)
        if rerun.returncode != 0 or code != 0:
            recovery.append("repair")
            _reconcile(archive.env, "--repair")
            if rerun.returncode != 0:
                rerun = arkiv(archive.env, *command)
                recovery.append("rerun")
            code, report = _reconcile(archive.env)
        assert rerun.returncode == 0, rerun.stderr
        live, disposed = _places(archive.catalogue_url)
        placed = set(live) | disposed
        lost = len(expected_records - placed)
        duplicated = sum(n - 1 for n in live.values() if n > 1) + len(set(live) & disposed) \
            + report["counts"].get("orphan", 0)
        RESULTS.append({"failpoint": failpoint, "phase": phase, "backend": backend, "killed": True,
                        "recovery": " + ".join(recovery), "lost": lost, "duplicated": duplicated,
                        "inconsistent": len([f for f in report["findings"] if not f["repaired"]])})
        assert code == 0 and report["consistent"], json.dumps(report["findings"], indent=2)
        assert lost == 0 and duplicated == 0
        assert placed == expected_records
        if phase == "disposal":
            assert not live.keys() & disposed and disposed, "the approved list was disposed of"
    finally:
        archive.drop()


def test_reconcile_repair_aborts_a_multipart_upload_killed_before_completion(tmp_path, s3_env, pg_url):
    """S3's multipart path (packages over one part): killed with every part sent, the upload is left
    open (invisible, billed); reconcile reports it and --repair aborts it, with a PREMIS event."""
    big = tmp_path / "big.tar"
    with open(big, "wb") as f:
        f.write(os.urandom(6 * 1024 * 1024))
    env = {**os.environ, **s3_env["env"], "ARKIV_HOME": str(tmp_path / "var"), "ARKIV_CATALOGUE_URL": pg_url,
           "ARKIV_MELLANARKIV": f"s3://{s3_env['mellanarkiv']}/sip", "ARKIV_SLUTARKIV": f"s3://{s3_env['slutarkiv']}",
           "ARKIV_S3_PART_SIZE_MB": "5"}
    code = ("import sys; from transforms.config.settings import Settings; "
            "from transforms.archive.storage import storage_for; "
            "s = Settings.from_env(); "
            "storage_for(s.mellanarkiv, 'mellanarkiv', s.s3).put(sys.argv[1], 'lex/x/big.tar')")
    died = subprocess.run([sys.executable, "-c", code, str(big)], capture_output=True, text=True, timeout=120,
                          env={**env, "ARKIV_FAILPOINT": "storage.after_temp_write"})
    assert died.returncode == KILLED, died.stderr
    found, report = _reconcile(env)
    assert found == 1 and [f["kind"] for f in report["findings"]] == ["temporary"]
    fixed, report = _reconcile(env, "--repair")
    assert fixed == 0 and report["repaired"] == 1
    assert _reconcile(env) == (0, _reconcile(env)[1])
    eng = sa.create_engine(pg_url)
    with eng.connect() as c:
        details = [d for (d,) in c.exec_driver_sql("SELECT detail FROM events WHERE type = 'deletion'")]
    eng.dispose()
    assert len(details) == 1 and "aborted the incomplete multipart upload" in details[0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("failpoint", "kind"), [("transfer.after_copy_before_record", "unrecorded_transfer"),
                                                  ("transfer.after_record_before_delete", "pending_removal")])
def test_reconcile_repair_alone_finishes_an_interrupted_transfer(failpoint, kind, backend, tmp_path, base_states):
    """Without a rerun of the retention schedule: --repair verifies the AIP and finishes the transfer
    through retention.transfer (recording it, then removing the SIP), never the other way round."""
    archive = base_states(backend)["archived"].clone(tmp_path / "var")
    try:
        killed = arkiv({**archive.env, "ARKIV_FAILPOINT": failpoint}, "retention", "run", "--as-of", AS_OF)
        assert killed.returncode == KILLED, killed.stderr
        code, report = _reconcile(archive.env)
        assert code == 1 and [f["kind"] for f in report["findings"]] == [kind], report["findings"]
        pid = report["findings"][0]["package_id"]
        code, report = _reconcile(archive.env, "--repair")
        assert code == 0 and report["repaired"] == 1, report["findings"]
        assert _reconcile(archive.env)[0] == 0
        eng = sa.create_engine(archive.catalogue_url)
        with eng.connect() as c:
            status = c.exec_driver_sql(f"SELECT status FROM packages WHERE id = '{pid}'").scalar()
            types = [t for (t,) in c.exec_driver_sql(f"SELECT type FROM events WHERE package_id = '{pid}' "
                                                     "ORDER BY id")]
        eng.dispose()
        assert status == "transferred"
        assert types.count("transfer") == 1 and types[-1] == "deletion"
        RESULTS.append({"failpoint": f"{failpoint} (repair only)", "phase": "transfer", "backend": backend,
                        "killed": True, "recovery": "repair", "lost": 0, "duplicated": 0, "inconsistent": 0})
    finally:
        archive.drop()
