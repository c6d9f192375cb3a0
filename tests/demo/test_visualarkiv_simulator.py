"""The Visual Arkiv simulator: a realistic, deterministic arkivförteckning, and its quality gate."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from demo import visualarkiv as va
from transforms.common.identifiers import is_valid_organisationsnummer
from transforms.config.systems import load_system
from transforms.intake.database import extract_database
from transforms.quality.checks import check_batch

PROJECT = Path(__file__).resolve().parents[2]
SUITE = PROJECT / "expectations" / "visualarkiv.json"
YAML = PROJECT / "dags" / "systems" / "visualarkiv.yaml"
START, END = dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1)

# Which check must catch each bad kind: (table, expectation, column label).
CAUGHT_BY = {
    "invalid_organisationsnummer": ("arkivbildare", "expect_column_values_to_be_valid_organisationsnummer",
                                    "organisationsnummer"),
    "orphan_series": ("serier", "expect_column_values_to_not_be_null", "arkivbildare_namn"),
    "malformed_signum": ("serier", "expect_column_values_to_match_regex", "signum"),
    "volume_dates_reversed": ("volymer", "expect_column_pair_values_a_to_be_greater_than_b", "datum_till, datum_fran"),
    "duplicate_signum": ("serier", "expect_compound_columns_to_be_unique", "arkiv_id, signum"),
}


def _rows(url: str) -> dict[str, list[tuple]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {t.name: [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
                    for t in va.metadata.sorted_tables}
    finally:
        engine.dispose()


def _extract_and_check(url: str, tmp: Path):
    system = load_system(YAML)
    staged = extract_database(system, url, START, END, tmp / "staging")
    tables: dict[str, list[Path]] = {}
    for part in staged.partitions.values():
        for name, files in part.files.items():
            tables.setdefault(name, []).extend(files)
    result = check_batch(SUITE, tables, system="visualarkiv", batch="2025", report_dir=tmp / "reports",
                         sensitive_columns={k: list(v) for k, v in system.sensitive.items()})
    return staged, result


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("va-good")
    url = f"sqlite:///{root / 'va.sqlite'}"
    summary = va.generate(url, None, size=40, seed=5, year=2025)
    return {"url": url, "summary": summary, "root": root}


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("va-bad")
    url = f"sqlite:///{root / 'va.sqlite'}"
    summary = va.generate(url, None, size=40, seed=5, year=2025, bad=2)
    return {"url": url, "summary": summary, "root": root}


def test_sizes_and_summary(good):
    s = good["summary"]
    rows = _rows(good["url"])
    assert s.counts["arkiv"] == len(rows["arkiv"]) == 40 == len(rows["arkivbildare"])
    assert s.counts["serier"] == len(rows["serier"]) > 4 * 40
    assert s.counts["volymer"] == len(rows["volymer"]) > s.counts["serier"]
    assert s.bad_rows == {k: 0 for k in va.BAD_KINDS}
    assert s.describe().startswith("Visual Arkiv: 40 archives of 40 creators")


def test_same_seed_same_rows(tmp_path, good):
    url = f"sqlite:///{tmp_path / 'again.sqlite'}"
    va.generate(url, None, size=40, seed=5, year=2025)
    assert _rows(url) == _rows(good["url"])
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    va.generate(other, None, size=40, seed=6, year=2025)
    assert _rows(other) != _rows(good["url"])


def test_bad_is_good_plus_the_planted_rows(good, bad):
    g, b = _rows(good["url"]), _rows(bad["url"])
    for table in g:
        assert b[table][: len(g[table])] == g[table], table
    assert len(b["arkiv"]) == len(g["arkiv"]) + 2  # the two companies with a wrong organisationsnummer


def test_valid_data_is_what_an_archivist_expects(good):
    rows = _rows(good["url"])
    creators = {r[0]: r for r in rows["arkivbildare"]}
    for r in rows["arkivbildare"]:
        assert r[5] is None or is_valid_organisationsnummer(r[5]), r
        assert r[7] is None or r[7] >= r[6]
    per_archive = Counter((r[1], r[3]) for r in rows["serier"])
    assert max(per_archive.values()) == 1
    for r in rows["serier"]:
        assert va.SIGNUM_RE.match(r[3]), r
        assert r[2] in creators
    for r in rows["volymer"]:
        assert r[3] <= r[4] and r[6] in va.FORVARINGSPLATSER and r[7] in va.MEDIA
    assert Counter((r[1], r[2]) for r in rows["volymer"]).most_common(1)[0][1] == 1
    assert any("å" in r[1] or "ä" in r[1] or "ö" in r[1] for r in rows["arkivbildare"])


def test_series_of_the_other_systems_exist(good):
    engine = sa.create_engine(good["url"])
    with engine.connect() as conn:
        found = set(conn.execute(sa.text(
            "SELECT b.kommun, b.kortnamn, s.signum, s.rubrik FROM serier s "
            "JOIN arkiv a ON a.arkiv_id = s.arkiv_id JOIN arkivbildare b ON b.arkivbildare_id = a.arkivbildare_id")))
    engine.dispose()
    assert {
        ("Eskilstuna", "SN", "F 1", "Personakter"),  # viva
        ("Strängnäs", "SN", "F 1", "Personakter"),  # treserva
        ("Enköping", "VON", "F 3", "Biståndsakter"),  # procapita
        ("Eskilstuna", "MBN", "F 2", "Bygglovsakter"),  # castor
        ("Strängnäs", "KS", "G 1", "Lönelistor"),  # hrplus
        ("Strängnäs", "KS", "F 2", "Diarieförda handlingar"),  # lex
        ("Eskilstuna", "KS", "Ö 1", "Arkivredovisning"),  # visualarkiv itself
    } <= found


def test_every_bad_kind_is_in_the_database(bad):
    rows = _rows(bad["url"])
    creators = {r[0] for r in rows["arkivbildare"]}
    assert sum(1 for r in rows["arkivbildare"] if r[5] and not is_valid_organisationsnummer(r[5])) == 2
    assert sum(1 for r in rows["serier"] if r[2] not in creators) == 2
    assert sum(1 for r in rows["serier"] if not va.SIGNUM_RE.match(r[3])) == 2
    assert sum(1 for r in rows["volymer"] if r[3] > r[4]) == 2
    dup = Counter((r[1], r[3]) for r in rows["serier"])
    assert sum(1 for n in dup.values() if n > 1) == 2


def test_suite_passes_on_valid_data(good, tmp_path):
    staged, result = _extract_and_check(good["url"], tmp_path)
    assert result.success, result.summary()
    # Most archives changed in 2025, and each comes whole: all its series and volumes.
    assert 0.7 * 40 <= result.tables["arkiv"] < 40
    assert result.tables["arkivbildare"] == result.tables["arkiv"]
    assert list(staged.partitions) == ["arkivforteckning-bevaras"]


def test_suite_catches_every_bad_kind_with_its_own_check(bad, tmp_path):
    _, result = _extract_and_check(bad["url"], tmp_path)
    assert not result.success
    failed = {(c.table, c.expectation, c.column): c for c in result.failed()}
    assert set(failed) == set(CAUGHT_BY.values()), result.summary()
    for kind, key in CAUGHT_BY.items():
        expected = 4 if kind == "duplicate_signum" else 2  # a duplicate flags both rows of the pair
        assert failed[key].unexpected_count == expected, kind
        assert len(failed[key].offending_ids) == expected


def test_postgresql(pg_url, good):
    va.generate(pg_url, None, size=40, seed=5, year=2025)
    assert _rows(pg_url) == _rows(good["url"])
    system = load_system(YAML)
    staged = extract_database(system, pg_url, START, END, Path(good["root"]) / f"pg-{uuid.uuid4().hex[:6]}")
    sqlite_staged = extract_database(system, good["url"], START, END,
                                     Path(good["root"]) / f"sq-{uuid.uuid4().hex[:6]}")
    assert staged.partitions["arkivforteckning-bevaras"].digest == (
        sqlite_staged.partitions["arkivforteckning-bevaras"].digest)


@pytest.mark.integration
def test_mariadb(mariadb_url, good):
    va.generate(mariadb_url, None, size=40, seed=5, year=2025)
    assert _rows(mariadb_url) == _rows(good["url"])
    system = load_system(YAML)
    staged = extract_database(system, mariadb_url, START, END, Path(good["root"]) / f"my-{uuid.uuid4().hex[:6]}")
    sqlite_staged = extract_database(system, good["url"], START, END,
                                     Path(good["root"]) / f"sq-{uuid.uuid4().hex[:6]}")
    assert staged.partitions["arkivforteckning-bevaras"].digest == (
        sqlite_staged.partitions["arkivforteckning-bevaras"].digest)


def test_main(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    assert va.main(["--url", url, "--size", "12", "--bad", "1"]) == 0
    out = capsys.readouterr().out
    assert "Visual Arkiv: 13 archives" in out and "duplicate_signum=1" in out
