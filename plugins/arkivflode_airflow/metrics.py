"""Arkivflöde's own counters, sent through Airflow's metrics facility.

Whatever ``[metrics]`` configures — StatsD (docker-compose.yml: a statsd-exporter for
Prometheus), DogStatsD or OpenTelemetry — our counters go the same way as Airflow's own
scheduler and task metrics, under the same prefix, so one dashboard shows both. Inside a
task Airflow's task runner has already set the backend up from the configuration; anywhere
else (the CLI, a plain test) nothing is configured and the calls do nothing.

Names (StatsD, prefix ``airflow``): ``airflow.arkivflode.<system>.<counter>``, e.g.
``airflow.arkivflode.lex.records``. The system is in the name because plain StatsD drops
tags; the ``system`` tag is added as well for backends that keep tags (OTel, DogStatsD,
InfluxDB-style StatsD). Counts only — never record content.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: counter -> what one unit is
COUNTERS = {
    "records": "records (e.g. cases) archived in new packages",
    "packages": "packages newly recorded in the catalogue",
    "bytes": "bytes of new packages stored in the mellanarkiv",
    "quality_failures": "batches stopped at the quality gate",
}
PREFIX = "arkivflode"
_NAME = re.compile(r"^[a-z0-9_-]+$")


def metric_name(system: str, counter: str) -> str:
    """``arkivflode.<system>.<counter>`` (Airflow adds its own ``statsd_prefix`` in front)."""
    if counter not in COUNTERS:
        raise ValueError(f"unknown counter {counter!r}; known: {sorted(COUNTERS)}")
    if not _NAME.match(system):
        raise ValueError(f"system name {system!r} is not usable in a metric name")
    return f"{PREFIX}.{system}.{counter}"


def emit_batch_metrics(system: str, counts: Mapping[str, int]) -> dict[str, int]:
    """Add ``counts`` (counter -> amount) to the system's counters; returns what was sent.

    Zero amounts are skipped; unknown counters and negative amounts are errors (a typo must
    not silently lose a metric). Safe to call where no metrics backend is configured.
    """
    from airflow.sdk.observability.stats import Stats

    sent = {}
    for counter, amount in counts.items():
        name = metric_name(system, counter)
        amount = int(amount)
        if amount < 0:
            raise ValueError(f"{name}: a counter cannot go down ({amount})")
        if amount:
            Stats.incr(name, amount, tags={"system": system})
            sent[counter] = amount
    return sent
