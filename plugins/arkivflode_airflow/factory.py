"""One DAG per source-system YAML, one task per step of the chain (``transforms.chain.CHAIN``).

await delivery → extract → quality → decision → package → ship → verify → record → finish →
update index: the steps, their order and which of them are mapped (per record class, per
package) are declared once in :mod:`transforms.chain`, and ``arkiv run`` runs the same steps
(:func:`transforms.pipeline.run_interval`). Each task is a call of its step's function through
:func:`arkivflode_airflow.steps.run`.

Nothing here knows a system by name: everything comes from ``dags/systems/<system>.yaml``, each
loaded by the thin DAG file beside it (``dags/systems/<system>.py``), so that a broken YAML is
one import error for its own file and the other systems' DAGs still load. Only the YAML is read
at parse time; the work (and every heavy import) happens in tasks.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from airflow.sdk import Asset, PokeReturnValue, dag, get_current_context, task

from arkivflode_airflow.alerts import on_failure
from arkivflode_airflow.timetable import PeriodTimetable
from transforms.chain import Each
from transforms.chain import step as chain_step
from transforms.chain import steps as chain_steps
from transforms.common.errors import ConfigError
from transforms.config.systems import System, load_system
from transforms.intake.delivery import delivery_for

#: how a cron schedule's period reads in a DAG's name (yearly, monthly, daily; else the interval)
_PERIOD_RULES = {3: "period = föregående år / previous year", 2: "period = föregående månad / previous month",
                 1: "period = föregående dag / previous day"}


def mellanarkiv_asset(system_name: str) -> Asset:
    """The Asset a system's DAG updates when new packages land in the mellanarkiv.

    The ``x-`` scheme is Airflow's mark of a private scheme: no provider normalises it, so making
    the Asset does not load every provider's URI handlers (the Amazon provider's imports boto3,
    ~0.4 s on every DAG file parse otherwise)."""
    return Asset(uri=f"x-arkiv://mellanarkiv/{system_name}", name=f"mellanarkiv_{system_name}")


def _hours(name: str, default: float) -> float:
    raw = os.environ.get(name) or ""
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of hours") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be more than zero hours")
    return value


def decision_timing() -> tuple[float, float]:
    """How often the wait for an archivist's decision looks, and how long it waits (seconds).

    ``ARKIV_DECISION_POKE_SECONDS`` (default 300) and ``ARKIV_DECISION_TIMEOUT_HOURS``
    (default 336, two weeks). The wait gives its worker slot back between looks.
    """
    poke = float(os.environ.get("ARKIV_DECISION_POKE_SECONDS") or 300)
    hours = float(os.environ.get("ARKIV_DECISION_TIMEOUT_HOURS") or 14 * 24)
    return poke, hours * 3600


def delivery_timing(system_name: str) -> tuple[float, float]:
    """How often the wait for a delivery looks (seconds) and how long after the interval ends it waits (hours).

    ``ARKIV_<SYSTEM>_DELIVERY_TIMEOUT_HOURS`` for one system, else ``ARKIV_DELIVERY_TIMEOUT_HOURS``,
    else 72 (three days); ``ARKIV_DELIVERY_POKE_SECONDS`` (default 600). The deadline counts from
    the end of the interval, so a backfill of a long-past period finds a missing delivery at once.
    """
    poke = float(os.environ.get("ARKIV_DELIVERY_POKE_SECONDS") or 600)
    default = _hours("ARKIV_DELIVERY_TIMEOUT_HOURS", 72)
    return poke, _hours(f"ARKIV_{system_name.upper()}_DELIVERY_TIMEOUT_HOURS", default)


def max_active_runs(system: System) -> int:
    """How many intervals of one system may be in flight at once (``ARKIV_MAX_ACTIVE_RUNS``, default 4).

    Intervals are independent (own staging folder, batch and package IDs), so a batch waiting
    for an archivist's decision does not hold back the next ones. A prepared system's inbox is
    one queue, not one folder per interval: its runs stay one at a time.
    """
    if delivery_for(system).queue:
        return 1
    raw = os.environ.get("ARKIV_MAX_ACTIVE_RUNS") or "4"
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"ARKIV_MAX_ACTIVE_RUNS={raw!r} must be a whole number of at least 1")
    return int(raw)


def period_rule(system: System) -> str:
    """What a run of this system archives, in words: the schedule's interval ends when the run starts."""
    fields = system.schedule.split()
    if len(fields) == 5:
        stars = sum(1 for f in fields[2:] if f == "*")
        if fields[2] != "*" and fields[3] != "*":
            return _PERIOD_RULES[3]
        if fields[2] != "*" and stars == 2:
            return _PERIOD_RULES[2]
        if stars == 3:
            return _PERIOD_RULES[1]
    return "period = the data interval before the run"


def display_name(system: System) -> str:
    """The DAG's name in Airflow's lists: the system and which period each run archives."""
    return f"{system.name} · {system.title} ({period_rule(system)})"


def system_dag(loader_file: str | Path):
    """The DAG of the YAML beside a loader file (``dags/systems/lex.py`` → ``dags/systems/lex.yaml``).

    A missing or broken YAML raises ConfigError naming the file and key: Airflow records it as the
    import error of this loader alone."""
    path = Path(loader_file).with_suffix(".yaml")
    if not path.is_file():
        raise ConfigError(f"{Path(loader_file).name}: no system YAML {path.name} beside it; remove the loader "
                          "or add the YAML (see docs/configuration.md)")
    return build_system_dag(path)


def check_system_loaders(folder: Path) -> None:
    """ConfigError naming every system YAML without a DAG loader beside it (it would have no DAG)."""
    missing = sorted(p.name for p in folder.glob("*.yaml") if not p.with_suffix(".py").is_file())
    if missing:
        raise ConfigError(f"system YAML(s) without a DAG loader, so without a DAG: {', '.join(missing)}; copy "
                          "any dags/systems/<system>.py beside each under the YAML's name")


def _release_when_run_fails(context: dict) -> None:
    from arkivflode_airflow.steps import release_when_run_fails

    release_when_run_fails(context)


def build_system_dag(path: Path):
    """Build the DAG for one system YAML."""
    system: System = load_system(path)
    name = system.name
    asset = mellanarkiv_asset(name)
    poke_seconds, timeout_seconds = decision_timing()
    waits_for_delivery = delivery_for(system).waits
    delivery_poke, delivery_hours = delivery_timing(name)

    @dag(
        dag_id=name,
        dag_display_name=display_name(system),
        description=system.title,
        schedule=PeriodTimetable(system.schedule, timezone=system.timezone),
        start_date=dt.datetime.combine(system.start_date, dt.time()),
        catchup=system.catchup,
        max_active_runs=max_active_runs(system),
        on_failure_callback=_release_when_run_fails,
        tags=["arkivflöde", "source-system", *system.tags],
        default_args={
            "owner": system.owner,
            "retries": system.retries,
            "retry_delay": dt.timedelta(minutes=2),
            "retry_exponential_backoff": True,
            "on_failure_callback": on_failure,
        },
        doc_md=f"**{system.title}** — {system.description}\n\nEach run archives one period ({period_rule(system)}); "
               f"configured in `dags/systems/{path.name}`; see docs/architecture.md for what each task does and "
               "docs/operations.md for backfilling past periods.",
    )
    def source_system():
        # Waits (giving its worker slot back) until the interval's delivery is in the inbox. Past the
        # deadline the interval is recorded as delivery missing, for the system owner: a failure that
        # is not retried, after which nothing downstream runs.
        @task.sensor(task_id="await_delivery", doc_md=chain_step("await_delivery").doc, poke_interval=delivery_poke,
                     timeout=delivery_hours * 3600 + 7 * 24 * 3600, mode="reschedule")
        def await_delivery() -> PokeReturnValue:
            from arkivflode_airflow import steps
            from transforms import pipeline

            answer = steps.run(pipeline.await_delivery_step, name, steps.interval(get_current_context()),
                               delivery_hours)["delivery"]
            return PokeReturnValue(is_done=answer["state"] == "delivered", xcom_value=answer)

        @task(task_id="extract", doc_md=chain_step("extract").doc)
        def extract() -> dict:
            from arkivflode_airflow import hooks, steps
            from transforms import pipeline

            def url() -> str | None:  # resolved once the interval is claimed
                return steps.guard(hooks.source_url, system.connection) if system.connection else None

            return steps.run(pipeline.extract_step, name, {**steps.interval(get_current_context()), "source_url": url},
                             steps.dag_run_alive)

        @task(task_id="quality", doc_md=chain_step("quality").doc)
        def quality(batch: dict) -> dict:
            from airflow.sdk.exceptions import AirflowFailException

            from arkivflode_airflow import steps
            from arkivflode_airflow.metrics import emit_batch_metrics
            from transforms import pipeline

            try:
                return steps.run(pipeline.quality_step, name, batch)
            except AirflowFailException:
                emit_batch_metrics(name, {"quality_failures": 1})
                raise

        # Runs once extract succeeded, whether the gate passed or failed (a failed gate is a red task,
        # an alert and a quarantine case). When extract failed it is upstream-failed, never run with
        # nothing to read. Passed: goes on at once. Quarantined: deferred, listed in Airflow's Required
        # actions, until an archivist decides there, on the Arkivflöde page or with `arkiv quarantine
        # approve|reject` (one decision, in the catalogue; arkivflode_airflow/hitl.py); approved goes on
        # to package the same batch with its deviation, rejected fails.
        def await_decision(batch):
            from arkivflode_airflow.hitl import AwaitDecision

            return AwaitDecision(task_id="await_decision", system=name, batch=batch, poke_interval=poke_seconds,
                                 timeout=timeout_seconds, trigger_rule="all_done_min_one_success",
                                 doc_md="Wait for an archivist's decision on a quarantined batch (no wait when "
                                        "the gate passed).").output

        @task
        def partitions(batch: dict) -> list[dict]:
            """One entry per record class: the unit a package (or several) is built from."""
            from transforms import pipeline

            return pipeline.partitions(batch)

        @task(task_id="package", doc_md=chain_step("package").doc)
        def package(partition: dict) -> list[dict]:
            from arkivflode_airflow import steps
            from transforms import pipeline

            return steps.run(pipeline.package_step, name, partition)

        @task
        def collect(built: list[list[dict]]) -> list[dict]:
            """Flatten the packages of all record classes into one list to map over."""
            return [p for group in built for p in group]

        def per_package(function: str, task_id: str, doc: str):
            @task(task_id=task_id, doc_md=doc)
            def run_step(pkg: dict) -> dict:
                from arkivflode_airflow import steps
                from transforms import pipeline

                return steps.run(getattr(pipeline, function), pkg)

            return run_step

        # Runs even when there was nothing to package (an empty interval maps to no tasks), but
        # not when the decision was skipped or failed: then there is no batch to finish.
        @task(task_id="finish", doc_md=chain_step("finish").doc, outlets=[asset],
              trigger_rule="none_failed_min_one_success")
        def finish(batch: dict, results: list[dict]) -> dict:
            from arkivflode_airflow import steps
            from arkivflode_airflow.metrics import emit_batch_metrics
            from transforms import pipeline

            done = steps.run(pipeline.finish_step, name, batch, list(results or []))
            new = [r for r in results or [] if r and r.get("recorded")]
            emit_batch_metrics(name, {"packages": sum(1 for r in new if r.get("new")),
                                      "records": sum(r.get("records", 0) for r in new),
                                      "bytes": sum(r.get("bytes", 0) for r in new)})
            return done

        # After finish whatever its outcome (a batch with a quarantined delivered package is archived
        # and then fails): what was recorded is made findable; its own failure fails nothing. When
        # nothing upstream succeeded it is upstream-failed or skipped like the rest, never run on nothing.
        @task(task_id="update_index", doc_md=chain_step("update_index").doc,
              trigger_rule="all_done_min_one_success")
        def update_index(results: list[dict]) -> dict:
            from arkivflode_airflow import steps
            from transforms import pipeline

            return steps.run(pipeline.update_index, name, None, list(results or []))

        extracted = extract()
        if waits_for_delivery:
            await_delivery() >> extracted
        checked = quality(extracted)
        decided = await_decision(extracted)
        checked >> decided
        built = package.expand(partition=partitions(decided))
        packages = collect(built)
        for s in chain_steps(Each.PACKAGE):  # ship → verify → record, each mapped over the packages
            packages = per_package(s.function, s.name, s.doc).expand(pkg=packages)
        finish(decided, packages) >> update_index(packages)

    return source_system()
