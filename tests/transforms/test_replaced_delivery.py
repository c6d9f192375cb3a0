"""A file export delivered again after it was staged: the staged batch remembers the SHA-256 of the manifest
its rows were read from, so no package pairs the earlier delivery's rows with the later one's documents, and
the later delivery is not moved to ``.archived/`` as if it had been archived. Folder and S3 inboxes (moto)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from testservices import make_bucket

from demo import treserva
from transforms.common.errors import StateError
from transforms.config.settings import S3Config, Settings
from transforms.config.systems import load_systems
from transforms.intake.delivery import delivery_for
from transforms.staging.batch import StagedBatch

PERIOD = "2025-12"
START, END = dt.datetime(2025, 12, 1), dt.datetime(2026, 1, 1)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """Two exports of the same month: the first, and one delivered again with other content."""
    out = {}
    for name, seed in (("first", 1), ("again", 2)):
        inbox = tmp_path_factory.mktemp(name)
        treserva.generate(inbox, period=PERIOD, size=2, seed=seed)
        out[name] = inbox / PERIOD
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _smallest_class(staged: StagedBatch) -> str:
    return min(staged.partitions, key=lambda k: staged.partitions[k].rows.get("akter", 0))


@pytest.fixture
def from_folder(exports, settings, cat, monkeypatch):
    """The first export in a folder inbox, staged: ``(delivery, staged, inbox)``."""
    inbox = settings.home / "inbox"
    shutil.copytree(exports["first"], inbox / PERIOD)
    monkeypatch.setenv("ARKIV_TRESERVA_INBOX", str(inbox))
    delivery = delivery_for(load_systems(settings.systems_dir)["treserva"])
    return delivery, delivery.stage(settings, cat, START, END, None), inbox


def test_a_delivery_replaced_in_a_folder_inbox_after_staging_builds_nothing(exports, from_folder, settings, cat):
    delivery, staged, inbox = from_folder
    assert staged.delivered_manifest_sha256 == _sha256(exports["first"] / "manifest.json")
    assert StagedBatch.load(staged.manifest_path).delivered_manifest_sha256 == staged.delivered_manifest_sha256

    shutil.rmtree(inbox / PERIOD)
    shutil.copytree(exports["again"], inbox / PERIOD)  # the system exported the month again
    rc = _smallest_class(staged)
    with pytest.raises(StateError, match="replaced after it was staged") as err:
        delivery.packages(settings, cat, staged, rc)
    assert "rerun the interval" in str(err.value)
    assert not list((settings.build / "treserva").glob("*.tar"))

    shutil.rmtree(inbox / PERIOD)
    shutil.copytree(exports["first"], inbox / PERIOD)  # the delivery the rows came from
    handed = delivery.packages(settings, cat, staged, rc)
    assert handed and all(Path(h.path).is_file() for h in handed)


def test_a_batch_staged_before_the_manifest_was_remembered_is_built_as_before(from_folder, settings, cat):
    delivery, staged, _ = from_folder
    text = staged.manifest_path.read_text(encoding="utf-8")
    older = StagedBatch.parse(text.replace(f'"{staged.delivered_manifest_sha256}"', "null"), staged.directory)
    assert older.delivered_manifest_sha256 is None
    # and a batch a newer version staged, with a field this one does not know, is read all the same
    newer = json.loads(text)
    newer["a_field_of_a_later_version"] = {"x": 1}
    assert StagedBatch.parse(json.dumps(newer), staged.directory).tables == staged.tables
    assert delivery.packages(settings, cat, older, _smallest_class(older))


def test_a_delivery_replaced_in_an_s3_inbox_is_neither_built_nor_moved_to_archived(
        exports, s3_env, cat, tmp_path, monkeypatch):
    bucket = make_bucket(s3_env["endpoint"])
    client = S3Config.from_env().client()
    settings = Settings.from_env({**s3_env["env"], "ARKIV_HOME": str(tmp_path / "var")}).ensure()
    monkeypatch.setenv("ARKIV_TRESERVA_INBOX", f"s3://{bucket}/treserva")

    def deliver(folder: Path) -> None:
        for key in [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=f"treserva/{PERIOD}/")
                    .get("Contents", [])]:
            client.delete_object(Bucket=bucket, Key=key)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")
        for p in [*files, folder / "manifest.json"]:  # the manifest last, as a source system must
            client.put_object(Bucket=bucket, Key=f"treserva/{PERIOD}/{p.relative_to(folder).as_posix()}",
                              Body=p.read_bytes())

    def keys(prefix: str) -> set[str]:
        return {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])}

    deliver(exports["first"])
    delivery = delivery_for(load_systems(settings.systems_dir)["treserva"], settings.s3)
    staged = delivery.stage(settings, cat, START, END, None)
    assert staged.delivered_manifest_sha256 == _sha256(exports["first"] / "manifest.json")

    deliver(exports["again"])
    with pytest.raises(StateError, match="replaced after it was staged"):
        delivery.packages(settings, cat, staged, _smallest_class(staged))
    before = keys(f"treserva/{PERIOD}/")
    delivery.after_archived(staged, cat, lambda key: "")
    assert keys(f"treserva/{PERIOD}/") == before  # the later delivery stays where the system put it
    assert keys("treserva/.archived/") == set()
    (left,) = [e for e in cat.events(batch_id=f"treserva/{PERIOD}") if e.outcome == "warning"]
    assert left.type == "capture" and "left in the inbox" in left.detail and "rerun the interval" in left.detail

    deliver(exports["first"])  # the delivery that was staged: built, and moved out once archived
    assert delivery.packages(settings, cat, staged, _smallest_class(staged))
    delivery.after_archived(staged, cat, lambda key: "")
    assert keys(f"treserva/{PERIOD}/") == set() and keys(f"treserva/.archived/{PERIOD}/")
