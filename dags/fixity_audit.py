"""Fixity audit: re-read every package in the mellanarkiv and the slutarkiv, weekly.

Each package gets a PREMIS fixity event in the catalogue; any package whose bytes no longer
match its checksum fails the run with its name, so that IT operations are alerted.
"""

import datetime as dt

from airflow.sdk import CronTriggerTimetable, dag, task
from arkivflode_airflow.alerts import on_failure


@dag(
    dag_id="fixity_audit",
    description="Fixity audit of every stored package",
    schedule=CronTriggerTimetable("0 4 * * 0", timezone="Europe/Stockholm"),
    start_date=dt.datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["arkivflöde", "fixity", "audit"],
    default_args={"owner": "it-drift", "retries": 1, "retry_delay": dt.timedelta(minutes=10),
                  "on_failure_callback": on_failure},
    doc_md=__doc__,
)
def fixity_audit():
    @task
    def audit() -> dict:
        """Recompute every checksum; fail, naming the packages, when any differs."""
        from airflow.sdk.exceptions import AirflowFailException
        from arkivflode_airflow import steps

        from transforms.archive import retention as r

        result = steps.run(r.step_audit)
        if result["failed"]:
            names = ", ".join(f"{f['package_id']} ({f['storage']}: {f['problem']})" for f in result["failed"])
            raise AirflowFailException(f"FIXITY FAILURE: {len(result['failed'])} of {result['checked']} "
                                       f"package(s) no longer match their checksums: {names}")
        return {"checked": result["checked"], "failed": 0}

    audit()


fixity_audit()
