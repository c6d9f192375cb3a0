"""Shared-nothing hand-over: every step of the chain on a worker of its own, with an empty disk, the
working area, the mellanarkiv and the catalogue the only things shared (moto's S3 server over real HTTP)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from testservices import S3_TEST_CREDENTIALS, make_bucket

from transforms.chain import CHAIN, Each

PROJECT = Path(__file__).resolve().parents[2]
INTERVAL = {"start": "2025-01-01", "end": "2026-01-01"}


@pytest.fixture
def shared(s3_env, tmp_path, lex_source, monkeypatch):
    """What the workers share: a working bucket, a mellanarkiv bucket, one catalogue; each worker's home is its own."""
    work = make_bucket(s3_env["endpoint"])
    env = {"ARKIV_WORK": f"s3://{work}/work", "ARKIV_MELLANARKIV": f"s3://{s3_env['mellanarkiv']}/mellanarkiv",
           "ARKIV_CATALOGUE_URL": f"sqlite:///{tmp_path / 'shared-catalogue.sqlite'}",
           "ARKIV_LEX_FILES": str(lex_source["files"])}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("ARKIV_STAGING_DIR", "ARKIV_BUILD_DIR", "ARKIV_QUARANTINE_DIR", "ARKIV_REPORTS_DIR", "ARKIV_FAILPOINT"):
        monkeypatch.delenv(k, raising=False)
    raw = boto3.client("s3", endpoint_url=s3_env["endpoint"], region_name="eu-north-1",
                       aws_access_key_id=S3_TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=S3_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    return {"env": env, "work": work, "raw": raw, "tmp": tmp_path, "url": lex_source["url"]}


class Worker:
    """A fresh worker: its own, empty ARKIV_HOME; thrown away (disk and all) once its step is done."""

    n = 0

    def __init__(self, shared, monkeypatch):
        Worker.n += 1
        self.home = shared["tmp"] / f"worker-{Worker.n}"
        assert not self.home.exists()
        monkeypatch.setenv("ARKIV_HOME", str(self.home))
        from transforms.config.settings import Settings

        self.settings = Settings.from_env().ensure()

    def done(self, value) -> None:
        """The step's references name no path of this worker's disk; the disk goes away."""
        text = json.dumps(value)
        assert str(self.home) not in text, f"a reference into a worker's disk was handed on: {text[:300]}"
        shutil.rmtree(self.home)


def _work_keys(shared) -> list[str]:
    return [o["Key"] for o in shared["raw"].list_objects_v2(Bucket=shared["work"]).get("Contents", [])]


def test_every_step_on_a_fresh_worker_reads_nothing_another_worker_wrote(shared, monkeypatch):
    from transforms import pipeline

    def step(fn, *args):
        worker = Worker(shared, monkeypatch)
        value = fn(worker.settings, *args)
        worker.done(value)
        return value

    ref = {**INTERVAL, "holder": "dag-run:lex/test", "source_url": shared["url"]}
    packages: list[dict] = []
    for s in CHAIN:
        fn = getattr(pipeline, s.function)
        if s.each == Each.INTERVAL:
            ref = step(fn, "lex", ref)
            if s.name == "extract":
                assert ref["manifest"].startswith(f"s3://{shared['work']}/work/staging/lex/2025/")
                assert "source_url" not in ref
                keys = _work_keys(shared)
                assert "work/staging/lex/2025/manifest.json" in keys and any(k.endswith(".parquet") for k in keys)
        elif s.each == Each.RECORD_CLASS:
            packages = [p for part in pipeline.partitions(ref) for p in step(fn, "lex", part)]
            assert packages and all(p["path"].startswith(f"s3://{shared['work']}/work/build/lex/") for p in packages)
        elif s.each == Each.PACKAGE:
            packages = [step(fn, p) for p in packages]
        else:
            value = step(fn, "lex", ref, packages)
            if s.name == "finish":
                assert value["packages_new"] == len(packages) >= 1
            else:
                assert value == {"indexed": len(packages), "failed": 0}
    # the batch is archived once, every package is in the mellanarkiv, the working area is empty again
    from transforms.catalogue import Batch, Catalogue

    cat = Catalogue(shared["env"]["ARKIV_CATALOGUE_URL"])
    with cat.session() as ses:
        assert ses.get(Batch, "lex/2025").status == "archived"
    stored = [p for p in cat.packages("lex")]
    assert sorted(p.id for p in stored) == sorted(p["package_id"] for p in packages)
    mellan = shared["env"]["ARKIV_MELLANARKIV"].removeprefix("s3://").split("/", 1)[0]
    in_bucket = [o["Key"] for o in shared["raw"].list_objects_v2(Bucket=mellan).get("Contents", [])]
    assert sorted(in_bucket) == sorted(f"mellanarkiv/{p.location}" for p in stored)
    # staging and build are emptied; the quality report stays with its Data Docs, named by the catalogue
    keys = _work_keys(shared)
    assert "work/reports/lex/lex-2025-quality.json" in keys and "work/reports/lex/lex-2025-datadocs/index.html" in keys
    # the PDF/A conversions stay too: the cache every worker shares (a rebuild elsewhere converts nothing)
    assert any(k.startswith("work/conversions/") and k.endswith(".pdf") for k in keys), keys
    assert all(k.startswith(("work/reports/lex/", "work/conversions/")) for k in keys), keys
    with cat.session() as ses:
        assert ses.get(Batch, "lex/2025").quality_report == f"s3://{shared['work']}/work/reports/lex/lex-2025-quality.json"


_PACKAGE_STEP = """
import json, sys
from transforms import pipeline
from transforms.config.settings import Settings
print(json.dumps(pipeline.package_step(Settings.from_env().ensure(), "lex", json.loads(sys.argv[1]))))
"""


def test_a_worker_killed_in_the_package_step_is_retried_elsewhere_and_the_batch_archives_once(shared, monkeypatch):
    from transforms import pipeline
    from transforms.catalogue import Batch, Catalogue

    extractor = Worker(shared, monkeypatch)
    batch = pipeline.extract_step(extractor.settings, "lex", {**INTERVAL, "holder": "dag-run:lex/kill",
                                                              "source_url": shared["url"]})
    batch = pipeline.quality_step(extractor.settings, "lex", batch)
    extractor.done(batch)
    part = pipeline.partitions(batch)[0]

    # worker A: pauses once its packages are built and handed over, and is killed there (SIGKILL)
    doomed = Worker(shared, monkeypatch)
    flag = shared["tmp"] / "paused"
    env = {**os.environ, "ARKIV_FAILPOINT_PAUSE": "package.after_write", "ARKIV_FAILPOINT_PAUSE_FILE": str(flag),
           "PYTHONPATH": str(PROJECT)}
    proc = subprocess.Popen([sys.executable, "-c", _PACKAGE_STEP, json.dumps(part)], env=env, cwd=PROJECT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not flag.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the package step never reached its failpoint"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert any(k.startswith("work/build/lex/") for k in _work_keys(shared)), "the killed attempt had handed over"
    shutil.rmtree(doomed.home, ignore_errors=True)  # its disk is lost with it

    # worker B: the retry, on an empty disk; then the rest of the chain, each step elsewhere
    retry = Worker(shared, monkeypatch)
    packages = [p for each in pipeline.partitions(batch) for p in pipeline.package_step(retry.settings, "lex", each)]
    retry.done(packages)
    for name in ("ship", "verify", "record"):
        worker = Worker(shared, monkeypatch)
        packages = [getattr(pipeline, name)(worker.settings, p) for p in packages]
        worker.done(packages)
    finisher = Worker(shared, monkeypatch)
    done = pipeline.finish_step(finisher.settings, "lex", batch, packages)
    finisher.done(done)

    cat = Catalogue(shared["env"]["ARKIV_CATALOGUE_URL"])
    recorded = cat.packages("lex")
    assert len(recorded) == len({p.id for p in recorded}) == len(packages) >= 1
    assert done["packages_new"] == len(recorded)
    with cat.session() as ses:
        assert ses.get(Batch, "lex/2025").status == "archived"
    for p in recorded:
        assert [e.type for e in cat.events(package_id=p.id)].count("ingestion") == 1
    # what the killed attempt left was overwritten by the retry, then removed; the quality report stays
    assert [k for k in _work_keys(shared) if not k.startswith(("work/reports/", "work/conversions/"))] == []


def test_without_a_working_bucket_the_hand_over_is_the_local_folders(settings, monkeypatch):
    from transforms.archive.workarea import WorkArea, work_area

    monkeypatch.delenv("ARKIV_WORK", raising=False)
    area = work_area(settings)
    assert type(area) is WorkArea and area.shared_disk
    f = settings.build / "x.tar"
    f.write_bytes(b"x")
    assert area.publish_file(f, "build/x.tar") == str(f) and area.fetch_file(str(f), settings.staging) == f


def test_the_working_bucket_streams_a_large_file_in_parts(shared, monkeypatch):
    """A file several parts long goes up as a multipart upload and comes back byte for byte."""
    import hashlib

    from transforms.archive.workarea import work_area
    from transforms.config.settings import MIB

    worker = Worker(shared, monkeypatch)
    area = work_area(worker.settings)
    big = worker.settings.build / "big.tar"
    h = hashlib.sha256()
    with open(big, "wb") as f:
        for i in range(24):
            block = hashlib.sha256(str(i).encode()).digest() * (MIB // 32)
            h.update(block)
            f.write(block)
    ref = area.publish_file(big, "build/lex/big.tar")
    head = shared["raw"].head_object(Bucket=shared["work"], Key="work/build/lex/big.tar")
    assert "-" in head["ETag"], "not a multipart upload"
    back = area.fetch_file(ref, worker.settings.staging / "fetched")
    assert hashlib.sha256(back.read_bytes()).hexdigest() == h.hexdigest()
    area.remove(ref)
    assert not area.exists(ref)


def test_an_approved_batch_resumes_on_another_worker_from_the_working_bucket(shared, monkeypatch, lex_bad_source):
    """The gate fails on one worker (whose disk is then lost); the archivist approves; the decision,
    packaging and the rest run elsewhere, from the batch the working bucket still holds."""
    from transforms import pipeline
    from transforms.catalogue import Batch, Catalogue
    from transforms.common.errors import ContentError
    from transforms.quality import quarantine as review

    monkeypatch.setenv("ARKIV_LEX_FILES", str(lex_bad_source["files"]))
    first = Worker(shared, monkeypatch)
    batch = pipeline.extract_step(first.settings, "lex", {**INTERVAL, "holder": "dag-run:lex/review",
                                                          "source_url": lex_bad_source["url"]})
    with pytest.raises(ContentError, match="failed its quality gate"):
        pipeline.quality_step(first.settings, "lex", batch)
    first.done(batch)
    cat = Catalogue(shared["env"]["ARKIV_CATALOGUE_URL"])
    (case,) = [c for c in review.cases(cat, "open") if c.kind == "quality"]
    # the held batch is in the working bucket (not on the lost disk), named by the case; staging is empty
    held = case.path.removeprefix(f"s3://{shared['work']}/")
    assert held.startswith("work/quarantine/lex/2025/"), case.path
    assert not [k for k in _work_keys(shared) if k.startswith("work/staging/")]
    assert {f"{held}/manifest.json", f"{held}/rapport.html"} <= set(_work_keys(shared))
    reviewer = Worker(shared, monkeypatch)  # the archivist's page, served on another machine
    from transforms.archive.workarea import work_area
    from transforms.quality.quarantine_page import case_page, data_docs_html

    area = work_area(reviewer.settings)
    assert "/arkiv/datadocs?" in case_page(cat, case, "/arkiv", may_decide=True, area=area)
    assert "Technical appendix" in data_docs_html(case, "index.html", "/arkiv", area)
    reviewer.done({})
    review.decide(cat, case.id, approve=True, by="Anna Arkivarie", justification="known defects, approved")

    decider = Worker(shared, monkeypatch)
    decided = pipeline.decision_step(decider.settings, "lex", batch)
    assert decided["decision"]["state"] == "approved"
    decider.done(decided)
    packages = []
    for each in pipeline.partitions(decided):
        builder = Worker(shared, monkeypatch)
        packages += pipeline.package_step(builder.settings, "lex", each)
        builder.done(packages)
    for name in ("ship", "verify", "record"):
        worker = Worker(shared, monkeypatch)
        packages = [getattr(pipeline, name)(worker.settings, p) for p in packages]
        worker.done(packages)
    finisher = Worker(shared, monkeypatch)
    done = pipeline.finish_step(finisher.settings, "lex", decided, packages)
    assert done["packages_new"] == len(packages) >= 1
    with cat.session() as ses:
        assert ses.get(Batch, "lex/2025").status == "archived"
    assert any("copied back from quarantine case" in e.detail for e in cat.events(batch_id="lex/2025"))
    # staging and build are emptied; the report and the quarantined copy are kept
    assert [k for k in _work_keys(shared) if not k.startswith(("work/reports/", "work/conversions/", f"{held}/"))] == []
    assert f"{held}/manifest.json" in _work_keys(shared)
