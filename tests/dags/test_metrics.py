"""Our counters leave through Airflow's own metrics facility: a real StatsD emission,
received on a UDP socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
from arkivflode_airflow.metrics import emit_batch_metrics, metric_name

# What Airflow's task runner does before a task starts (stats set up from [metrics]), then our call.
EMIT = textwrap.dedent("""
    from airflow.sdk._shared.observability.metrics import stats
    from airflow.sdk.observability.metrics import stats_utils
    from arkivflode_airflow.metrics import emit_batch_metrics

    stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
    print(emit_batch_metrics("lex", {"records": 156, "packages": 2, "bytes": 4782080, "quality_failures": 0}))
""")


def test_counters_arrive_as_statsd_lines_with_airflows_prefix():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        env = {**os.environ, "AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
               "AIRFLOW__METRICS__STATSD_PORT": str(sock.getsockname()[1]),
               "AIRFLOW__METRICS__STATSD_PREFIX": "airflow"}
        run = subprocess.run([sys.executable, "-c", EMIT], env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-3000:]
        received = set()
        sock.settimeout(1)  # the sender has exited: whatever it sent is already queued here
        try:
            while True:
                received.update(sock.recv(65535).decode().splitlines())
        except TimeoutError:
            pass
    ours = {line for line in received if line.startswith("airflow.arkivflode.")}
    assert ours == {"airflow.arkivflode.lex.records:156|c", "airflow.arkivflode.lex.packages:2|c",
                        "airflow.arkivflode.lex.bytes:4782080|c"}  # a zero is not sent
    assert "'records': 156" in run.stdout


def test_without_a_configured_backend_nothing_is_sent_and_nothing_fails():
    assert emit_batch_metrics("lex", {"packages": 1}) == {"packages": 1}


@pytest.mark.parametrize(("system", "counter"), [("lex", "rows"), ("Lex System", "records")])
def test_unknown_counters_and_unusable_names_are_refused(system, counter):
    with pytest.raises(ValueError):
        metric_name(system, counter)


def test_a_counter_cannot_go_down():
    with pytest.raises(ValueError):
        emit_batch_metrics("lex", {"records": -1})
