"""The archiving chain of one interval of one system, declared once.

:data:`CHAIN` lists the steps in the order they run. ``arkiv run`` goes through it in
:func:`transforms.pipeline.run_interval`; the DAG factory (``plugins/arkivflode_airflow/factory.py``)
makes one task per step from it, mapped where a step runs per record class or per package. A
step's function is :mod:`transforms.pipeline`'s attribute named by :attr:`Step.function`, so this
module imports nothing and a DAG file that reads it parses in milliseconds.

How a step is called, by :attr:`Step.each` (every step gets the settings first):

* ``interval`` — ``fn(settings, system, ref) -> ref``: once per run, on the interval (before
  extraction) or the batch (after it);
* ``record_class`` — ``fn(settings, system, partition) -> [package]``: once per record class of the
  batch (:func:`transforms.pipeline.partitions`), each giving the packages it built;
* ``package`` — ``fn(settings, package) -> package``: once per package;
* ``batch`` — ``fn(settings, system, batch, results) -> dict``: once, with every package's result.

A step that *waits* is a sensor in the DAG (it gives its worker slot back between looks);
``arkiv run`` looks once and stops when it would have to wait. A step that runs *always* runs
after the steps before it whatever their outcome, once any of them did something (derived data,
such as the search index); its own failure is logged and fails nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Each(StrEnum):
    """What a step runs once for."""

    INTERVAL = "interval"
    RECORD_CLASS = "record_class"
    PACKAGE = "package"
    BATCH = "batch"


@dataclass(frozen=True)
class Step:
    """One step of the chain: a task in the DAG, a call in ``arkiv run``."""

    name: str
    each: Each
    #: the function in :mod:`transforms.pipeline` that does the step
    function: str
    doc: str
    waits: bool = False
    always: bool = False


CHAIN: tuple[Step, ...] = (
    Step("await_delivery", Each.INTERVAL, "await_delivery_step", waits=True,
         doc="Wait for the interval's delivery in the inbox, up to the deadline after the interval ends."),
    Step("extract", Each.INTERVAL, "extract_step",
         doc="Claim the interval for this run and extract it into Parquet staging."),
    Step("quality", Each.INTERVAL, "quality_step",
         doc="Check the staged batch with the system's Great Expectations suite."),
    Step("await_decision", Each.INTERVAL, "decision_step", waits=True,
         doc="Wait for an archivist's decision on a quarantined batch (no wait when the gate passed)."),
    Step("package", Each.RECORD_CLASS, "package_step",
         doc="Build the packages of one record class (or hand on the delivered ones)."),
    Step("ship", Each.PACKAGE, "ship", doc="Copy a package into the mellanarkiv, verified by read-back."),
    Step("verify", Each.PACKAGE, "verify", doc="Recompute the stored checksum and validate the stored package."),
    Step("record", Each.PACKAGE, "record", doc="Record the package, its records and its events in the catalogue."),
    Step("finish", Each.BATCH, "finish_step",
         doc="Mark the batch archived once every package is recorded, and release the interval."),
    Step("update_index", Each.BATCH, "update_index", always=True,
         doc="Make the newly recorded packages findable (derived data: a failure is logged, "
             "`arkiv index` catches up)."),
)


def step(name: str) -> Step:
    """The chain's step called ``name``."""
    for s in CHAIN:
        if s.name == name:
            return s
    raise KeyError(name)


def steps(each: Each) -> tuple[Step, ...]:
    """The chain's steps that run once per ``each``, in order."""
    return tuple(s for s in CHAIN if s.each == each)


__all__ = ["CHAIN", "Each", "Step", "step", "steps"]
