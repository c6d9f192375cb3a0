"""Run a pipeline step inside an Airflow task, with the right failure semantics.

A content problem (bad rows, an invalid package, a bad configuration) is the source's or
the archivist's to fix: the task fails at once without retries, with a message that says
so. Anything else is treated as a system error and left to Airflow's retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("arkivflode")


def run(step: Callable[..., Any], *args: Any) -> Any:
    """Call ``step(settings, *args)``; ContentError/ConfigError become non-retried failures."""
    from airflow.sdk.exceptions import AirflowFailException

    from arkivflode_airflow.hooks import with_airflow_s3
    from transforms.config import Settings
    from transforms.errors import ConfigError, ContentError, StateError

    try:
        # S3 through an Airflow connection when ARKIV_S3_CONN_ID names one; a bad ARKIV_* value is a ConfigError
        settings = with_airflow_s3(Settings.from_env().ensure())
        return step(settings, *args)
    except ContentError as exc:
        log.error("content problem (not retried; an archivist or the system owner must act): %s", exc)
        raise AirflowFailException(f"CONTENT PROBLEM — not a system error, not retried: {exc}") from None
    except StateError as exc:
        log.error("state problem (not retried; an earlier step must be rerun): %s", exc)
        raise AirflowFailException(f"STATE PROBLEM — not retried: {exc}") from None
    except ConfigError as exc:
        log.error("configuration problem (not retried): %s", exc)
        raise AirflowFailException(f"CONFIGURATION PROBLEM — not retried: {exc}") from None
