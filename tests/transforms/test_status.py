"""``arkiv status``: every interval the schedule says is due, with its real state, for the system owner."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from transforms import cli, status
from transforms.catalogue import Catalogue, IntervalClaim
from transforms.config.settings import Settings
from transforms.config.systems import load_system
from transforms.quality import quarantine as review

SYSTEMS = Path(__file__).resolve().parents[2] / "dags" / "systems"
NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("name", ["lex", "hrplus", "castor"])
def test_the_intervals_are_the_dag_timetables_own(name):
    """The same intervals as Airflow's CronDataIntervalTimetable for the system's YAML, across DST changes."""
    from airflow.timetables.base import DataInterval, TimeRestriction
    from airflow.timetables.interval import CronDataIntervalTimetable

    system = load_system(SYSTEMS / f"{name}.yaml")
    tz = ZoneInfo(system.timezone)
    timetable = CronDataIntervalTimetable(system.schedule, timezone=system.timezone)
    start = dt.datetime.combine(system.start_date, dt.time(), tzinfo=tz)
    restriction = TimeRestriction(earliest=start, latest=None, catchup=True)
    expected, last = [], None
    while True:
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        if info is None or info.data_interval.end > NOW:
            break
        last = DataInterval(info.data_interval.start, info.data_interval.end)
        expected.append((last.start.astimezone(tz).replace(tzinfo=None), last.end.astimezone(tz).replace(tzinfo=None)))
    got = status.due_intervals(system, NOW)
    assert got == expected and got
    assert got[-1][1] <= NOW.astimezone(tz).replace(tzinfo=None)


def test_each_state_is_told_as_it_is(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "var"))
    inbox = tmp_path / "inbox"
    (inbox / "2026-01").mkdir(parents=True)
    (inbox / "2026-01" / "manifest.json").write_text("{}", encoding="utf-8")  # January delivered, not yet run
    monkeypatch.setenv("ARKIV_HRPLUS_INBOX", str(inbox))
    monkeypatch.setenv("ARKIV_DELIVERY_TIMEOUT_HOURS", "480")  # twenty days
    settings = Settings.from_env().ensure()
    cat = Catalogue(settings.catalogue_url)
    cat.migrate()

    def batch(key, state):
        system, period = key.split("/")
        cat.upsert_batch(batch_id=key, system=system, period=period, interval_start="", interval_end="",
                         status=state, rows={"tables": {}})

    batch("lex/2024", "archived")
    batch("lex/2025", "quality_failed")
    held = tmp_path / "held"
    held.mkdir()
    case = review.open_case(cat, system="lex", batch_id="lex/2025", kind="quality", reasons=["cases: x: 1 record(s)"],
                            path=held)
    batch("hrplus/2025-01", "delivery_missing")
    batch("hrplus/2025-02", "staged")  # a run extracted it and stopped
    batch("hrplus/2025-03", "staged")
    with cat.session() as s:
        s.add(IntervalClaim(key="hrplus/2025-03", holder="dag-run:hrplus/manual__1"))
    cat.dispose()

    rows = {(r.system, r.period): r for r in status.status(settings, now=NOW)}
    assert rows["lex", "2024"].state == "archived"
    assert rows["lex", "2025"].state == "quarantined" and rows["lex", "2025"].case == case
    assert ("lex", "2026") not in rows  # not due until 1 January 2027
    assert rows["hrplus", "2025-01"].state == "delivery missing"
    assert rows["hrplus", "2025-02"].state == "failed"
    assert rows["hrplus", "2025-03"].state == "running"
    assert rows["hrplus", "2025-04"].state == "delivery missing"  # never delivered, deadline long past
    assert rows["hrplus", "2026-01"].state == "not yet run" and "delivered" in rows["hrplus", "2026-01"].detail
    assert rows["hrplus", "2026-02"].state == "waiting for delivery"  # ended 1 March, deadline 21 March
    assert ("hrplus", "2026-03") not in rows
    assert rows["viva", "2025"].state == "not yet run" and rows["viva", "2025"].tillstand == "inte körd än"

    # ... and the command line shows the same, as a table or JSON
    monkeypatch.setattr(status.dt, "datetime", _Frozen)
    assert cli.main(["status", "hrplus"]) == 0
    table = capsys.readouterr().out
    assert "delivery missing / leverans saknas" in table and "running / pågår" in table
    assert "lex" not in table
    assert cli.main(["status", "lex", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["period"], r["state"]) for r in listed] == [("2024", "archived"), ("2025", "quarantined")]
    assert cli.main(["status", "nosuch"]) == 2


class _Frozen(dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return NOW if tz is None else NOW.astimezone(tz)


def test_a_deadline_not_yet_passed_is_waiting(monkeypatch, tmp_path):
    """Just after an interval ends, a missing delivery is still awaited; after the deadline it is missing."""
    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("ARKIV_HRPLUS_INBOX", str(tmp_path / "inbox"))
    monkeypatch.setenv("ARKIV_HRPLUS_DELIVERY_TIMEOUT_HOURS", "24")
    settings = Settings.from_env().ensure()
    march = dt.datetime(2026, 3, 1, 4, 0, tzinfo=ZoneInfo("Europe/Stockholm"))
    before = status.status(settings, "hrplus", now=march + dt.timedelta(hours=23))[-1]
    after = status.status(settings, "hrplus", now=march + dt.timedelta(hours=25))[-1]
    assert before.period == after.period == "2026-02"
    assert before.state == "waiting for delivery" and after.state == "delivery missing"


def test_the_status_page_shows_each_due_interval_with_its_state_and_case(monkeypatch, tmp_path):
    """The system owner's page (Arkivflöde's /status, in Airflow): what is due, delivered, missing, held."""
    import html

    monkeypatch.setenv("ARKIV_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("ARKIV_HRPLUS_INBOX", str(tmp_path / "inbox"))
    settings = Settings.from_env().ensure()
    cat = Catalogue(settings.catalogue_url)
    cat.migrate()
    cat.upsert_batch(batch_id="lex/2025", system="lex", period="2025", interval_start="", interval_end="",
                     status="quality_failed", rows={"tables": {}})
    held = tmp_path / "held"
    held.mkdir()
    case = review.open_case(cat, system="lex", batch_id="lex/2025", kind="quality", reasons=["cases: x: 1 record(s)"],
                            path=held)
    cat.dispose()
    rows = status.status(settings, now=NOW)
    page = status.html_page(rows, "/arkiv", ["hrplus", "lex"], None, now=NOW)

    assert page.count("<tr data-system=") == len(rows)
    lex_2025 = page.split('data-system="lex" data-period="2025"', 1)[1].split("</tr>", 1)[0]
    assert "i karantän / quarantined" in lex_2025
    assert f'href="/arkiv/case?id={case.replace("/", "%2F")}"' in html.unescape(lex_2025)
    hrplus_feb = page.split('data-system="hrplus" data-period="2026-02"', 1)[1].split("</tr>", 1)[0]
    assert "leverans saknas / delivery missing" in hrplus_feb and 'class="bad state"' in hrplus_feb
    # newest first within a system; the time shown is Stockholm's
    assert page.index('data-period="2026-02"') < page.index('data-period="2025-02"')
    assert "2026-03-15 13:00 Europe/Stockholm" in page
    assert '<option value="lex">lex</option>' in page and "Leveranser / Deliveries due" in page
