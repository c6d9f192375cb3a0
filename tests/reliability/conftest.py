"""Fixtures of the reliability suite: a small Lex and, per backend, archived states to copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from fault_support import AS_OF, FUZZ, INFRA, INTERVAL, RESULTS, Backend, _base_env, arkiv
from security_support import HOSTILE, SENSITIVE_SCAN, e2e_totals, hostile_lines, table_lines


@pytest.fixture(scope="session")
def small_lex(tmp_path_factory) -> dict:
    """A Lex of 20 cases (17 close in 2025: two packages, one kept, one disposable)."""
    from demo import lex

    root = tmp_path_factory.mktemp("lex-small")
    url = f"sqlite:///{root / 'lex.sqlite'}"
    lex.generate(url, root / "files", cases=20, seed=2, year=2025)
    return {"url": url, "files": root / "files"}


@pytest.fixture(scope="session")
def base_states(tmp_path_factory, small_lex, moto_server):
    """Per backend, built once: ``archived`` (after `arkiv run`) and ``approved`` (after the first
    `arkiv retention run` transferred what is kept and an archivist approved the disposal list)."""
    states: dict[str, dict[str, Backend]] = {}
    made: list[Backend] = []

    def get(kind: str) -> dict[str, Backend]:
        if kind in states:
            return states[kind]
        root = tmp_path_factory.mktemp(f"base-{kind.replace('+', '-')}")
        archived = Backend.fresh(kind, root / "archived", small_lex, moto_server)
        made.append(archived)
        run = arkiv(archived.env, "run", "lex", *INTERVAL)
        assert run.returncode == 0, run.stderr
        approved = archived.clone(root / "approved")
        made.append(approved)
        first = arkiv(approved.env, "retention", "run", "--as-of", AS_OF)
        assert first.returncode == 0, first.stderr
        list_id = first.stdout.split("disposal list ")[1].split(" ")[0]
        reviewed = arkiv(approved.env, "gallring", "review", list_id, "--by", "Rut Granskare", "--reason", "Granskad")
        assert reviewed.returncode == 0, reviewed.stderr
        decided = arkiv(approved.env, "gallring", "approve", list_id, "--by", "Anna Arkivarie", "--reason", "IHP 4.2")
        assert decided.returncode == 0, decided.stderr
        states[kind] = {"archived": archived, "approved": approved}
        return states[kind]

    yield get
    for b in made:
        b.drop()


@pytest.fixture(scope="session")
def expected_records(small_lex, tmp_path_factory) -> set[tuple[str, str]]:
    """The records a clean run archives: what every fault scenario must end with, no more, no less."""
    home = tmp_path_factory.mktemp("clean") / "var"
    env = _base_env(home, small_lex)
    run = arkiv(env, "run", "lex", *INTERVAL)
    assert run.returncode == 0, run.stderr
    eng = sa.create_engine(f"sqlite:///{home / 'catalogue' / 'catalogue.sqlite'}")
    with eng.connect() as c:
        rows = {(s, i) for s, i in c.exec_driver_sql("SELECT system, source_id FROM records")}
    eng.dispose()
    assert len(rows) == 17
    return rows


def pytest_terminal_summary(terminalreporter):
    if FUZZ:
        terminalreporter.section("fuzzing: cases tried per target")
        for target, n in sorted(FUZZ.items()):
            terminalreporter.write_line(f"{target:<50} {n:>6}")
        terminalreporter.write_line(f"{'total':<50} {sum(FUZZ.values()):>6}")
    out = os.environ.get("ARKIV_RELIABILITY_REPORT")
    if HOSTILE:
        terminalreporter.section("hostile deliveries, configurations and requests: outcome per class")
        for line in hostile_lines():
            terminalreporter.write_line(line)
    if out and (RESULTS or FUZZ or INFRA or HOSTILE):
        import json

        Path(out).parent.mkdir(parents=True, exist_ok=True)  # var/ does not exist yet in a fresh clone
        Path(out).write_text(json.dumps({"faults": RESULTS, "infrastructure": INFRA, "fuzz": dict(FUZZ),
                                         "sensitive_scan": SENSITIVE_SCAN,
                                         "hostile": HOSTILE}, indent=2), encoding="utf-8")
    if INFRA:
        _infra_table(terminalreporter)
    _sensitive_table(terminalreporter)
    if not RESULTS:
        return
    terminalreporter.section("fault injection: failpoint × backend")
    header = f"{'failpoint':<50} {'backend':<14} {'killed':<7} {'recovery':<22} {'lost':>4} {'dup':>4} {'incons':>6}"
    terminalreporter.write_line(header)
    for r in sorted(RESULTS, key=lambda r: (r["phase"], r["failpoint"], r["backend"])):
        terminalreporter.write_line(
            f"{r['failpoint']:<50} {r['backend']:<14} {'yes' if r['killed'] else 'NO':<7} {r['recovery']:<22} "
            f"{r['lost']:>4} {r['duplicated']:>4} {r['inconsistent']:>6}")
    killed = sum(r["killed"] for r in RESULTS)
    terminalreporter.write_line(
        f"{len(RESULTS)} scenarios, {killed} runs killed, lost {sum(r['lost'] for r in RESULTS)}, duplicated "
        f"{sum(r['duplicated'] for r in RESULTS)}, inconsistent {sum(r['inconsistent'] for r in RESULTS)}")


def _infra_table(terminalreporter) -> None:
    terminalreporter.section("infrastructure faults injected and their outcomes")
    terminalreporter.write_line(f"{'fault':<44} {'backend':<14} {'injected how':<52} {'outcome':<40} "
                                f"{'lost':>4} {'dup':>4} {'incons':>6}")
    for r in INFRA:
        terminalreporter.write_line(f"{r['fault']:<44} {r['backend']:<14} {r['injected']:<52} {r['outcome']:<40} "
                                    f"{r['lost']:>4} {r['duplicated']:>4} {r['inconsistent']:>6}")
        detail = "; ".join(x for x in (r["recovery"], r["message"]) if x)
        if detail:
            terminalreporter.write_line(f"    {detail}")
    terminalreporter.write_line(
        f"{len(INFRA)} infrastructure faults, lost {sum(r['lost'] for r in INFRA)}, duplicated "
        f"{sum(r['duplicated'] for r in INFRA)}, inconsistent {sum(r['inconsistent'] for r in INFRA)}")


def _sensitive_table(terminalreporter) -> None:
    """Sensitive values found outside the packages: this run's scan (test_sensitive_outputs.py) and,
    when the end-to-end tests wrote theirs (test-output/sensitive-scan/e2e, from the last `make test`),
    their totals."""
    if SENSITIVE_SCAN:
        terminalreporter.section("sensitive values outside the packages (Viva through arkiv)")
        for line in table_lines():
            terminalreporter.write_line(line)
    e2e = Path(__file__).resolve().parents[2] / "test-output" / "sensitive-scan" / "e2e"
    totals = e2e_totals(e2e) if e2e.is_dir() else {}
    if totals:
        terminalreporter.section(f"sensitive values outside the packages (end-to-end tests, {e2e})")
        for loc, v in sorted(totals.items()):
            terminalreporter.write_line(f"{loc:<50} {v['scanned']:>7} {v['unit']:<6} found {v['hits']}")
