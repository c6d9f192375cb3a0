"""Run a pipeline step inside an Airflow task, with the right failure semantics and the right kind.

Every failure a step raises carries its ``kind`` (who must act), decided here where the
exceptions are mapped, so an alert never has to guess from a message:

* ``content`` — bad rows, an invalid delivery, a failed quality gate, a rejected batch: the
  archivists' to act on; not retried;
* ``delivery_missing`` — the period's export never arrived by its deadline: the system owner's;
  not retried;
* ``system`` — a configuration problem (a missing variable, connection or setting), a state
  problem (an earlier step must be rerun), or anything else (disk, network, a library's error):
  IT operations'; configuration and state problems are not retried, the rest are.

A task whose input is missing because an earlier task failed is skipped, never failed: only the
task that really failed alerts. Another run already archiving the same interval is a skip too.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

log = logging.getLogger("arkivflode")


class StepFailure(AirflowFailException):
    """A failure that is not retried; ``kind`` says who acts (``content`` or ``system``)."""

    kind = "system"


class ContentFailure(StepFailure):
    kind = "content"


class DeliveryMissing(StepFailure):
    kind = "delivery_missing"


class ConfigFailure(StepFailure):
    kind = "system"


class StateFailure(StepFailure):
    kind = "system"


class SystemStepError(RuntimeError):
    """A system error in a step, its message made safe for the task log; Airflow retries it."""

    kind = "system"


@contextmanager
def _mapped(what: str):
    from airflow.sdk.exceptions import AirflowException

    from transforms.common.errors import AlreadyRunning, ArkivError, ConfigError, ContentError, StateError
    from transforms.common.masking import safe_line
    from transforms.pipeline import DeliveryNotArrived

    try:
        yield
    except DeliveryNotArrived as exc:
        text = safe_line(exc)
        log.error("delivery missing (not retried; the system owner must deliver): %s", text)
        raise DeliveryMissing(f"DELIVERY MISSING — for the system owner, not retried: {text}") from None
    except ContentError as exc:
        text = safe_line(exc)
        log.error("content problem (not retried; an archivist or the system owner must act): %s", text)
        raise ContentFailure(f"CONTENT PROBLEM — not a system error, not retried: {text}") from None
    except AlreadyRunning as exc:
        text = safe_line(exc)
        log.warning("skipped: %s", text)
        raise AirflowSkipException(f"skipped: {text}") from None
    except StateError as exc:
        text = safe_line(exc)
        log.error("state problem (not retried; an earlier step must be rerun): %s", text)
        raise StateFailure(f"STATE PROBLEM — not retried: {text}") from None
    except ConfigError as exc:
        text = safe_line(exc)
        log.error("configuration problem (not retried; IT operations must act): %s", text)
        raise ConfigFailure(f"SYSTEM CONFIGURATION PROBLEM — IT operations, not retried: {text}") from None
    except (ArkivError, OSError) as exc:
        # ours (storage, state) or the system's (disk, network): they name keys and paths, no values
        raise SystemStepError(f"{type(exc).__name__}: {safe_line(exc)}") from None
    except AirflowException:
        raise
    except Exception as exc:
        where = "".join(traceback.format_tb(exc.__traceback__)[-3:])
        log.error("system error %s in %s; message withheld (it may quote a record's value); raised at:\n%s",
                  type(exc).__name__, what, where)
        raise SystemStepError(f"{type(exc).__name__} in {what} (message withheld: it may quote a record's "
                              "value; see the task log for where it was raised)") from None


def run(step: Callable[..., Any], *args: Any) -> Any:
    """Call ``step(settings, *args)`` with its exceptions mapped to failures of the right kind.

    What reaches the task log and the failure is made safe first: one printable line (a newline
    in it is written as an escape, so nothing can forge a log line) with anything shaped like a
    personnummer masked (a message names files, rows and rules, and a file name comes from the
    delivery). An exception that is not Arkivflöde's own (a parser's, a converter's) may quote
    the value it choked on: its message is withheld and only its type and where it was raised
    are logged; Airflow still retries it as a system error.
    """
    from arkivflode_airflow.hooks import with_airflow_s3
    from transforms.config.settings import Settings

    with _mapped(getattr(step, "__name__", "step")):
        # S3 through an Airflow connection when ARKIV_S3_CONN_ID names one; a bad ARKIV_* value is a ConfigError
        settings = with_airflow_s3(Settings.from_env().ensure())
        return step(settings, *args)


def guard(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)`` (no settings) with the same mapping as :func:`run` (e.g. resolving a connection)."""
    with _mapped(getattr(fn, "__name__", "call")):
        return fn(*args)


def interval(ctx: dict) -> dict:
    """The run's interval as the chain's first steps take it: its bounds and who holds it (this DAG run)."""
    return {"start": ctx["data_interval_start"].isoformat(), "end": ctx["data_interval_end"].isoformat(),
            "holder": run_holder(ctx)}


def run_holder(ctx: dict) -> str:
    """Who holds an interval while this DAG run archives it: ``dag-run:<dag_id>/<run_id>``."""
    run = ctx["dag_run"]
    return f"dag-run:{run.dag_id}/{run.run_id}"


def dag_run_alive(holder: str) -> bool:
    """Whether the DAG run named by ``holder`` (see :func:`run_holder`) is still queued or running."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    if not holder.startswith("dag-run:"):
        return False
    dag_id, _, run_id = holder.removeprefix("dag-run:").partition("/")
    try:
        state = RuntimeTaskInstance.get_dagrun_state(dag_id=dag_id, run_id=run_id)
    except Exception:  # a run that was deleted no longer holds anything
        log.warning("state of %s could not be read; treating it as ended", holder)
        return False
    return str(getattr(state, "value", state)) in ("queued", "running")


def skip_unless_extracted(batch: dict | None) -> None:
    """Skip a task whose batch never arrived because an earlier task failed (that task alerts, not this one)."""
    if not batch or "manifest" not in batch:
        raise AirflowSkipException("skipped: no batch to work on, an earlier task did not finish (its own failure "
                                   "says why)")


def skip_when_gate_failed(ctx: dict) -> None:
    """Skip when the quality task failed without a verdict (a system error, alerted by that task itself)."""
    ti, run = ctx["ti"], ctx["dag_run"]
    states = ti.get_task_states(dag_id=run.dag_id, task_ids=["quality"], run_ids=[run.run_id])
    quality = (states.get(run.run_id) or {}).get("quality")
    if str(getattr(quality, "value", quality)) in ("failed", "upstream_failed"):
        raise AirflowSkipException("skipped: the quality gate failed without a verdict (no quarantine case); its own "
                                   "failure says why; clear it to check again")


def release_when_run_fails(context: dict) -> None:
    """DAG failure callback: a failed run gives its interval back, so ``arkiv run`` (which cannot ask
    Airflow whether the run still lives) may archive the interval without waiting for a new DAG run."""
    from transforms import pipeline
    from transforms.config.settings import Settings

    run = context.get("dag_run")
    start, end = getattr(run, "data_interval_start", None), getattr(run, "data_interval_end", None)
    if run is None or start is None or end is None:
        return
    try:
        pipeline.release_claim(Settings.from_env(), run.dag_id, start.isoformat(), end.isoformat(),
                               run_holder({"dag_run": run}))
    except Exception as exc:  # the next run of the interval takes an ended run's claim over anyway
        log.warning("interval of %s not released (%s); the next run of it takes it over", run.run_id,
                    type(exc).__name__)

