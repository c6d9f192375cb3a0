"""``[core] hostname_callable`` for the integration test's workers.

In production every Celery worker is its own container or machine, so Airflow's default
(the FQDN) tells them apart. The test runs two workers on one machine; each gets its name
from ``ARKIV_TEST_WORKER_HOSTNAME`` so that the task instances say which worker ran them.
"""

import os
import socket


def hostname() -> str:
    return os.environ.get("ARKIV_TEST_WORKER_HOSTNAME") or socket.getfqdn()
