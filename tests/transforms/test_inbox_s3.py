"""An inbox in object storage: file exports and prepared packages delivered to ``s3://bucket/prefix``.

moto's S3 server over real HTTP. What is checked: the sensor sees a delivery only when it is
complete (a file export's manifest, a package directly under the prefix); intake stages exactly
what it stages from a folder; keys are untrusted (``..``, absolute, NUL, a name longer than a file
name may be) and refuse the delivery before anything is written; originals leave the inbox only
by a verified move, to ``.archived/`` or ``.quarantine/``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import pytest
from testservices import S3_TEST_CREDENTIALS, make_bucket

from demo import castor, treserva
from transforms.catalogue import Package
from transforms.common.errors import ContentError
from transforms.config.settings import S3Config, Settings
from transforms.config.systems import load_systems
from transforms.intake.delivery import delivery_for
from transforms.intake.inbox import InboxObject, S3Inbox

PERIOD = "2025-12"
START, END = dt.datetime(2025, 12, 1), dt.datetime(2026, 1, 1)


@pytest.fixture(scope="module")
def inbox_bucket(moto_server) -> str:
    return make_bucket(moto_server)


@pytest.fixture
def bucket(moto_server, inbox_bucket, monkeypatch) -> dict:
    """The inbox bucket, emptied after the test, and a client to deliver into it as a source system would;
    the environment points Arkivflöde at moto for this test only."""
    for k, v in {**S3_TEST_CREDENTIALS, "ARKIV_S3_ENDPOINT_URL": moto_server}.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "ARKIV_S3_SSE", "ARKIV_S3_PART_SIZE_MB"):
        monkeypatch.delenv(k, raising=False)
    client = S3Config.from_env().client()
    yield {"name": inbox_bucket, "client": client}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=inbox_bucket):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=inbox_bucket, Key=item["Key"])


@pytest.fixture
def settings(bucket, tmp_path) -> Settings:
    """Every location under a temporary home; S3 reached as the environment says (moto)."""
    s3 = {k: v for k, v in os.environ.items() if k.startswith(("ARKIV_S3_", "AWS_"))}
    return Settings.from_env({**s3, "ARKIV_HOME": str(tmp_path / "var")}).ensure()


@pytest.fixture(scope="module")
def treserva_delivery(tmp_path_factory) -> Path:
    inbox = tmp_path_factory.mktemp("treserva")
    treserva.generate(inbox, period=PERIOD, size=2)
    return inbox / PERIOD


@pytest.fixture(scope="module")
def castor_packages(tmp_path_factory) -> Path:
    inbox = tmp_path_factory.mktemp("castor")
    castor.generate(inbox, size=2, bad=1, as_zip=1)
    return inbox


def _keys(bucket: dict, prefix: str) -> dict[str, bytes]:
    client, out = bucket["client"], {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket["name"], Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"][len(prefix):]] = client.get_object(Bucket=bucket["name"], Key=item["Key"])["Body"].read()
    return out


def _deliver(bucket: dict, folder: Path, prefix: str, *, manifest: bool = True) -> None:
    """Upload a delivery folder under ``prefix``, its manifest last (as a source system must)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")
    for p in files + ([folder / "manifest.json"] if manifest else []):
        bucket["client"].put_object(Bucket=bucket["name"], Key=f"{prefix}/{p.relative_to(folder).as_posix()}",
                                    Body=p.read_bytes())


@pytest.fixture
def treserva_system(settings, monkeypatch, bucket):
    monkeypatch.setenv("ARKIV_TRESERVA_INBOX", f"s3://{bucket['name']}/treserva")
    return load_systems(settings.systems_dir)["treserva"]


def test_a_file_export_in_s3_is_seen_when_its_manifest_is_there_and_staged_as_from_a_folder(
        treserva_delivery, treserva_system, bucket, settings, cat, monkeypatch, tmp_path):
    delivery = delivery_for(treserva_system)
    _deliver(bucket, treserva_delivery, f"treserva/{PERIOD}", manifest=False)
    assert not delivery.expected(PERIOD).exists()  # still being delivered: the manifest comes last
    bucket["client"].put_object(Bucket=bucket["name"], Key=f"treserva/{PERIOD}/manifest.json",
                                Body=(treserva_delivery / "manifest.json").read_bytes())
    assert delivery.expected(PERIOD).exists()
    assert str(delivery.expected(PERIOD)) == f"s3://{bucket['name']}/treserva/{PERIOD}/manifest.json"

    staged = delivery.stage(settings, cat, START, END, None)
    # the same delivery from a folder stages the same rows (digests leave out where documents lie)
    folder_inbox = tmp_path / "folder-inbox"
    (folder_inbox / PERIOD).mkdir(parents=True)
    for p in treserva_delivery.rglob("*"):
        if p.is_file():
            dest = folder_inbox / PERIOD / p.relative_to(treserva_delivery)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(p.read_bytes())
    monkeypatch.setenv("ARKIV_TRESERVA_INBOX", str(folder_inbox))
    from_folder = delivery_for(treserva_system).stage(settings, cat, START, END, None)
    assert staged.tables == from_folder.tables and staged.tables
    assert {k: p.digest for k, p in staged.partitions.items()} == \
        {k: p.digest for k, p in from_folder.partitions.items()}
    monkeypatch.setenv("ARKIV_TRESERVA_INBOX", f"s3://{bucket['name']}/treserva")

    # another worker builds: the delivery's documents are fetched to its disk again
    scratch = delivery.scratch(settings, PERIOD)
    assert scratch.is_dir()
    import shutil

    shutil.rmtree(scratch)
    rc = min(staged.partitions, key=lambda k: staged.partitions[k].rows.get("akter", 0))
    handed = delivery.packages(settings, cat, staged, rc)
    assert handed and all(Path(h.path).is_file() for h in handed) and scratch.is_dir()

    # archived: every original moves to .archived/<period>/, byte for byte, and the period is empty
    before = _keys(bucket, f"treserva/{PERIOD}/")
    delivery.after_archived(staged, cat, lambda key: "")
    assert _keys(bucket, f"treserva/{PERIOD}/") == {}
    assert _keys(bucket, f"treserva/.archived/{PERIOD}/") == before
    assert delivery.expected(PERIOD).exists()  # a rerun of the interval reads it from .archived/
    again = delivery.stage(settings, cat, START, END, None)
    assert {k: p.digest for k, p in again.partitions.items()} == {k: p.digest for k, p in staged.partitions.items()}


HOSTILE = {"../x", "/etc/cron.d/x", "a\x00b.pdf", "n" * 300 + ".pdf"}


def test_hostile_keys_refuse_the_delivery_before_anything_is_written(
        treserva_delivery, treserva_system, bucket, settings, cat, tmp_path):
    delivery = delivery_for(treserva_system)
    _deliver(bucket, treserva_delivery, f"treserva/{PERIOD}")
    for key in HOSTILE:  # one of each: a key that climbs out, an absolute one, a NUL, a name too long for a disk
        bucket["client"].put_object(Bucket=bucket["name"], Key=f"treserva/{PERIOD}/{key}", Body=b"planted")
    assert set(_keys(bucket, f"treserva/{PERIOD}/")) >= HOSTILE, "the store keeps the keys as sent"
    with pytest.raises(ContentError) as err:
        delivery.stage(settings, cat, START, END, None)
    assert "keys that cannot be files of a delivery" in str(err.value) and "quarantined" in str(err.value)
    details = " ".join(err.value.details)
    for why in ("climbs out with '..'", "is an absolute key", "NUL", "longer than 255 bytes"):
        assert why in details
    assert len(err.value.details) == len(HOSTILE)
    assert "\x00" not in details and all(d.isprintable() for d in err.value.details)
    assert not (settings.staging / "treserva" / ".inbox" / PERIOD).exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == b"planted"]
    # the whole delivery left the inbox for .quarantine/, its reason beside it; the local case folder too
    assert _keys(bucket, f"treserva/{PERIOD}/") == {}
    moved = _keys(bucket, "treserva/.quarantine/")
    [name] = {k.split("/", 1)[0] for k in moved}
    assert moved[f"{name}/delivery/manifest.json"] == (treserva_delivery / "manifest.json").read_bytes()
    assert sum(v == b"planted" for v in moved.values()) == len(HOSTILE)
    assert all(k.split("/", 2)[2].startswith("refused-key-") for k, v in moved.items() if v == b"planted")
    assert {f"{name}/reason.txt", f"{name}/keys.txt"} <= set(moved)
    assert (settings.quarantine / "treserva" / name / "reason.txt").is_file()


def test_a_delivery_without_its_manifest_is_not_seen_and_is_quarantined_if_run(
        treserva_delivery, treserva_system, bucket, settings, cat):
    delivery = delivery_for(treserva_system)
    _deliver(bucket, treserva_delivery, f"treserva/{PERIOD}", manifest=False)
    assert not delivery.expected(PERIOD).exists()
    with pytest.raises(ContentError, match="has no manifest.json"):
        delivery.stage(settings, cat, START, END, None)
    assert _keys(bucket, f"treserva/{PERIOD}/") == {}
    assert any(k.endswith("/delivery/akter.csv") for k in _keys(bucket, "treserva/.quarantine/"))


def test_prepared_packages_in_s3_are_taken_in_as_from_a_folder_and_moved_out_verified(
        castor_packages, settings, bucket, cat, monkeypatch, tmp_path):
    monkeypatch.setenv("ARKIV_CASTOR_INBOX", f"s3://{bucket['name']}/castor")
    system = load_systems(settings.systems_dir)["castor"]
    delivery = delivery_for(system)
    # a queue is there when its bucket is, empty or not (as a folder inbox); a missing bucket is not
    assert delivery.expected(PERIOD).exists()
    monkeypatch.setenv("ARKIV_CASTOR_INBOX", f"s3://{bucket['name']}-gone/castor")
    assert not delivery_for(system).expected(PERIOD).exists()
    monkeypatch.setenv("ARKIV_CASTOR_INBOX", f"s3://{bucket['name']}/castor")
    names = sorted(p.name for p in castor_packages.iterdir() if p.suffix in (".tar", ".zip"))
    for n in names:
        bucket["client"].put_object(Bucket=bucket["name"], Key=f"castor/{n}", Body=(castor_packages / n).read_bytes())
    for hostile in ("nul\x00.tar", "l" * 300 + ".tar"):
        bucket["client"].put_object(Bucket=bucket["name"], Key=f"castor/{hostile}", Body=b"planted")
    assert delivery.expected(PERIOD).exists()

    staged = delivery.stage(settings, cat, dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2), None)
    intakes = {d["source"]: d for d in staged.prepared}
    assert sorted(intakes) == sorted([*names, "nul\x00.tar", "l" * 300 + ".tar"])
    accepted = {s: d for s, d in intakes.items() if d["outcome"] != "quarantined"}
    assert len(accepted) == 2 and len(intakes) - len(accepted) == 3  # castor's bad package and two keys
    for source, d in accepted.items():
        assert d["delivered_sha256"] == hashlib.sha256((castor_packages / source).read_bytes()).hexdigest()
        assert Path(d["path"]).read_bytes() == (castor_packages / source).read_bytes()
    reasons = {s: " ".join(d["findings"]) for s, d in intakes.items() if s not in accepted}
    assert "NUL" in reasons["nul\x00.tar"] and "longer than 255 bytes" in reasons["l" * 300 + ".tar"]
    left = _keys(bucket, "castor/")
    assert sorted(k for k in left if "/" not in k) == sorted(accepted)  # the bad ones left the inbox
    quarantined = [k for k in left if k.startswith(".quarantine/")]
    assert sum(k.endswith("/validation-report.json") for k in quarantined) == 3
    assert all(json.loads(left[k])["valid"] is False for k in quarantined if k.endswith(".json"))

    # recorded in the mellanarkiv: the accepted originals move to .archived/, verified against what was taken in
    cat.upsert_batch(batch_id=f"castor/{staged.batch}", system="castor", period=staged.batch,
                     interval_start=staged.interval_start, interval_end=staged.interval_end, status="archived",
                     rows={})
    with cat.session() as ses:
        for d in accepted.values():
            ses.add(Package(id=d["package_id"], system="castor", record_class="x", period=staged.batch,
                            batch_id=f"castor/{staged.batch}", status="stored", size=d["size"], sha256=d["sha256"],
                            content_digest=d["sha256"], storage="mellanarkiv", location=f"k/{d['package_id']}"))
    stored = {f"k/{d['package_id']}": d["sha256"] for d in accepted.values()}
    delivery.after_archived(staged, cat, stored.__getitem__)
    after = _keys(bucket, "castor/")
    assert not [k for k in after if "/" not in k]
    for source in accepted:
        assert after[f".archived/{source}"] == (castor_packages / source).read_bytes()
    # the queue is empty again: the next run takes in nothing
    assert delivery.expected(PERIOD).exists() and not delivery.stage(settings, cat, START, END, None).prepared


def test_a_move_keeps_the_original_when_the_copy_cannot_be_verified(bucket):
    inbox = S3Inbox(f"s3://{bucket['name']}/box")
    bucket["client"].put_object(Bucket=bucket["name"], Key="box/p.tar", Body=b"delivered bytes")
    [obj] = inbox.listing(direct=True)
    with pytest.raises(Exception, match="SHA-256 and size taken in"):
        inbox.move("p.tar", ".archived/p.tar", obj, hashlib.sha256(b"other bytes").hexdigest())
    assert _keys(bucket, "box/")["p.tar"] == b"delivered bytes"  # never deleted before a verified copy
    # replaced after it was listed: the copy is refused (the version taken in is gone), the original stays
    bucket["client"].put_object(Bucket=bucket["name"], Key="box/p.tar", Body=b"delivered again")
    with pytest.raises(Exception, match="copy to"):
        inbox.move("p.tar", ".archived/q.tar", InboxObject("p.tar", obj.size, obj.etag),
                   hashlib.sha256(b"delivered bytes").hexdigest())
    assert _keys(bucket, "box/")["p.tar"] == b"delivered again"
    # a retry finds its copy made, but the original was delivered again meanwhile: the new one is not deleted
    [again] = [o for o in inbox.listing(direct=True) if o.key == "p.tar"]
    bucket["client"].put_object(Bucket=bucket["name"], Key="box/.archived/r.tar", Body=b"delivered again")
    bucket["client"].put_object(Bucket=bucket["name"], Key="box/p.tar", Body=b"a third delivery")
    with pytest.raises(Exception, match="replaced since it was taken in"):
        inbox.move("p.tar", ".archived/r.tar", again, hashlib.sha256(b"delivered again").hexdigest())
    assert _keys(bucket, "box/")["p.tar"] == b"a third delivery"
