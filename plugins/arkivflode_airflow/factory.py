"""One DAG per source-system YAML: extract → quality → package → ship → verify → record.

Nothing here knows a system by name: everything comes from ``dags/systems/<system>.yaml``.
Only the YAML is read at parse time; the work (and every heavy import) happens in tasks.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.sdk import Asset, CronDataIntervalTimetable, dag, get_current_context, task

from arkivflode_airflow.alerts import on_failure
from transforms.systems import System, load_system


def mellanarkiv_asset(system_name: str) -> Asset:
    """The Asset a system's DAG updates when new packages land in the mellanarkiv."""
    return Asset(uri=f"arkiv://mellanarkiv/{system_name}", name=f"mellanarkiv_{system_name}")


def build_system_dag(path: Path):
    """Build the DAG for one system YAML."""
    system: System = load_system(path)
    name = system.name
    asset = mellanarkiv_asset(name)

    @dag(
        dag_id=name,
        description=system.title,
        schedule=CronDataIntervalTimetable(system.schedule, timezone=system.timezone),
        start_date=dt.datetime.combine(system.start_date, dt.time()),
        catchup=system.catchup,
        max_active_runs=1,
        tags=["arkivflöde", "source-system", *system.tags],
        default_args={
            "owner": system.owner,
            "retries": system.retries,
            "retry_delay": dt.timedelta(minutes=2),
            "retry_exponential_backoff": True,
            "on_failure_callback": on_failure,
        },
        doc_md=f"**{system.title}** — {system.description}\n\nConfigured in `dags/systems/{path.name}`; "
               "see the README for what each task does.",
    )
    def source_system():
        @task
        def extract() -> dict:
            """Extract the data interval into Parquet staging."""
            from arkivflode_airflow import hooks, steps
            from transforms import pipeline

            ctx = get_current_context()
            start, end = ctx["data_interval_start"], ctx["data_interval_end"]
            url = hooks.source_url(system.connection) if system.connection else None
            return steps.run(pipeline.extract, name, start.isoformat(), end.isoformat(), url)

        @task
        def quality(batch: dict) -> dict:
            """Check the staged batch with the system's Great Expectations suite."""
            from arkivflode_airflow import steps
            from transforms import pipeline

            return {**batch, "quality": steps.run(pipeline.check_quality, name, batch["manifest"])}

        @task
        def partitions(batch: dict) -> list[dict]:
            """One entry per record class: the unit a package (or several) is built from."""
            return [{"manifest": batch["manifest"], "record_class": rc} for rc in batch["record_classes"]]

        @task
        def package(partition: dict) -> list[dict]:
            """Build the FGS packages of one record class."""
            from arkivflode_airflow import steps
            from transforms import pipeline

            return steps.run(pipeline.package, name, partition["manifest"], partition["record_class"])

        @task
        def collect(built: list[list[dict]]) -> list[dict]:
            """Flatten the packages of all record classes into one list to map over."""
            return [p for group in built for p in group]

        @task
        def ship(pkg: dict) -> dict:
            """Copy a package into the mellanarkiv, verified by read-back."""
            from arkivflode_airflow import steps
            from transforms import pipeline

            return steps.run(pipeline.ship, pkg)

        @task
        def verify(pkg: dict) -> dict:
            """Recompute the stored checksum and validate the stored package."""
            from arkivflode_airflow import steps
            from transforms import pipeline

            return steps.run(pipeline.verify, pkg)

        @task
        def record(pkg: dict) -> dict:
            """Record the package, its records and its events in the catalogue."""
            from arkivflode_airflow import steps
            from transforms import pipeline

            return steps.run(pipeline.record, pkg)

        # Runs even when there was nothing to package (an empty interval maps to no tasks).
        @task(outlets=[asset], trigger_rule="none_failed")
        def finish(batch: dict, results: list[dict]) -> dict:
            """Mark the batch archived and report what is new in the mellanarkiv."""
            from arkivflode_airflow import steps
            from transforms import pipeline

            return steps.run(pipeline.finish_batch, name, batch["manifest"], list(results))

        checked = quality(extract())
        built = package.expand(partition=partitions(checked))
        recorded = record.expand(pkg=verify.expand(pkg=ship.expand(pkg=collect(built))))
        finish(checked, recorded)

    return source_system()
