"""One DAG per source-system YAML: extract → quality → decision → package → ship → verify → record.

Nothing here knows a system by name: everything comes from ``dags/systems/<system>.yaml``.
Only the YAML is read at parse time; the work (and every heavy import) happens in tasks.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from airflow.sdk import Asset, CronDataIntervalTimetable, PokeReturnValue, dag, get_current_context, task

from arkivflode_airflow.alerts import on_failure
from transforms.systems import System, load_system


def mellanarkiv_asset(system_name: str) -> Asset:
    """The Asset a system's DAG updates when new packages land in the mellanarkiv.

    The ``x-`` scheme is Airflow's mark of a private scheme: no provider normalises it, so making
    the Asset does not load every provider's URI handlers (the Amazon provider's imports boto3,
    ~0.4 s on every DAG file parse otherwise)."""
    return Asset(uri=f"x-arkiv://mellanarkiv/{system_name}", name=f"mellanarkiv_{system_name}")


def decision_timing() -> tuple[float, float]:
    """How often the wait for an archivist's decision looks, and how long it waits (seconds).

    ``ARKIV_DECISION_POKE_SECONDS`` (default 300) and ``ARKIV_DECISION_TIMEOUT_HOURS``
    (default 336, two weeks). The wait gives its worker slot back between looks.
    """
    poke = float(os.environ.get("ARKIV_DECISION_POKE_SECONDS") or 300)
    hours = float(os.environ.get("ARKIV_DECISION_TIMEOUT_HOURS") or 14 * 24)
    return poke, hours * 3600


def build_system_dag(path: Path):
    """Build the DAG for one system YAML."""
    system: System = load_system(path)
    name = system.name
    asset = mellanarkiv_asset(name)
    poke_seconds, timeout_seconds = decision_timing()

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
               "see docs/architecture.md for what each task does.",
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
            from airflow.sdk.exceptions import AirflowFailException

            from arkivflode_airflow import steps
            from arkivflode_airflow.metrics import emit_batch_metrics
            from transforms import pipeline

            try:
                return {**batch, "quality": steps.run(pipeline.check_quality, name, batch["manifest"])}
            except AirflowFailException:
                emit_batch_metrics(name, {"quality_failures": 1})
                raise

        # Runs whether the gate passed or failed (a failed gate is a red task and an alert, and
        # a quarantine case). Passed: goes on at once. Quarantined: waits for an archivist's
        # decision in the catalogue (`arkiv quarantine approve|reject` or the Arkivflöde page);
        # approved goes on to package the same batch with its deviation, rejected fails.
        @task.sensor(poke_interval=poke_seconds, timeout=timeout_seconds, mode="reschedule",
                     trigger_rule="all_done")
        def await_decision(batch: dict) -> PokeReturnValue:
            """Wait for an archivist's decision on a quarantined batch (no wait when the gate passed)."""
            from arkivflode_airflow import steps
            from transforms import pipeline

            state = steps.run(pipeline.await_decision, name, batch["manifest"], batch["batch"])
            return PokeReturnValue(is_done=state["state"] != "waiting", xcom_value={**batch, "decision": state})

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
            from arkivflode_airflow.metrics import emit_batch_metrics
            from transforms import pipeline

            done = steps.run(pipeline.finish_batch, name, batch["manifest"], list(results))
            new = [r for r in results if r.get("recorded")]
            emit_batch_metrics(name, {"packages": sum(1 for r in new if r.get("new")),
                                      "records": sum(r.get("records", 0) for r in new),
                                      "bytes": sum(r.get("bytes", 0) for r in new)})
            return done

        extracted = extract()
        checked = quality(extracted)
        decided = await_decision(extracted)
        checked >> decided
        built = package.expand(partition=partitions(decided))
        recorded = record.expand(pkg=verify.expand(pkg=ship.expand(pkg=collect(built))))
        finish(decided, recorded)

    return source_system()
