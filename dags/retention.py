"""Retention: apply the retention schedule (informationshanteringsplan) to the mellanarkiv.

Daily, and whenever a source system's DAG updates its mellanarkiv Asset. The run's date is
the day the schedule is applied for, so a backfill or a test can move the clock. Plan (a
dry-run report) → transfer what is due to the slutarkiv (one mapped task per package) →
execute the disposal lists archivists have approved and propose a new list for what is due →
bring the search index up to date.
Nothing is disposed of without an archivist's approval (`arkiv gallring approve`).
"""

import datetime as dt
from pathlib import Path

from airflow.sdk import AssetAny, AssetOrTimeSchedule, CronTriggerTimetable, dag, get_current_context, task
from arkivflode_airflow.alerts import on_failure
from arkivflode_airflow.factory import mellanarkiv_asset

SYSTEMS = sorted(p.stem for p in (Path(__file__).parent / "systems").glob("*.yaml"))


@dag(
    dag_id="retention",
    description="Retention schedule: transfer to the slutarkiv, disposal lists for approval",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 1 * * *", timezone="Europe/Stockholm"),
                                 assets=AssetAny(*(mellanarkiv_asset(s) for s in SYSTEMS))),
    start_date=dt.datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["arkivflöde", "retention", "gallring", "slutarkiv"],
    default_args={"owner": "arkivarie", "retries": 2, "retry_delay": dt.timedelta(minutes=5),
                  "retry_exponential_backoff": True, "on_failure_callback": on_failure},
    doc_md=__doc__,
)
def retention():
    @task
    def plan() -> dict:
        """What is due today, what is held and why (the report lands in reports/retention/)."""
        from arkivflode_airflow import steps

        from transforms.archive import retention as r

        as_of = get_current_context()["logical_date"].date().isoformat()
        return steps.run(r.step_plan, as_of)

    @task
    def due_transfers(p: dict) -> list[str]:
        return p["transfer"] + p["unfinished"]

    @task
    def transfer(package_id: str) -> dict:
        """Write the AIP to the slutarkiv, verify it, record the receipt, then remove the SIP."""
        from arkivflode_airflow import steps

        from transforms.archive import retention as r

        return steps.run(r.step_transfer, package_id)

    @task(trigger_rule="none_failed")
    def disposal(p: dict, transferred: list[dict]) -> dict:
        """Execute approved disposal lists (with certificates); propose a list for what is newly due."""
        from arkivflode_airflow import steps

        from transforms.archive import retention as r

        return steps.run(r.step_dispose, p)

    @task(trigger_rule="all_done")
    def update_index() -> dict:
        """Bring the search index up to date: transferred records answer from the slutarkiv,
        disposed ones as tombstones (derived data: a failure is logged, `arkiv index` catches up)."""
        from arkivflode_airflow import steps

        from transforms.access.service import step_sync_index

        return steps.run(step_sync_index)

    planned = plan()
    done = transfer.expand(package_id=due_transfers(planned))
    disposal(planned, done) >> update_index()


retention()
