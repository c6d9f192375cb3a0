"""Run a pipeline step inside an Airflow task, with the right failure semantics.

A content problem (bad rows, an invalid package, a bad configuration) is the source's or
the archivist's to fix: the task fails at once without retries, with a message that says
so. Anything else is treated as a system error and left to Airflow's retries.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

log = logging.getLogger("arkivflode")


def run(step: Callable[..., Any], *args: Any) -> Any:
    """Call ``step(settings, *args)``; ContentError/ConfigError become non-retried failures.

    What reaches the task log and the failure is made safe first: one printable line (a newline
    in it is written as an escape, so nothing can forge a log line) with anything shaped like a
    personnummer masked (a message names files, rows and rules, and a file name comes from the
    delivery). An exception that is not Arkivflöde's own (a parser's,
    a converter's) may quote the value it choked on: its message is withheld and only its type
    and where it was raised are logged; Airflow still retries it as a system error.
    """
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from arkivflode_airflow.hooks import with_airflow_s3
    from transforms.config import Settings
    from transforms.errors import ArkivError, ConfigError, ContentError, StateError
    from transforms.masking import safe_line

    try:
        # S3 through an Airflow connection when ARKIV_S3_CONN_ID names one; a bad ARKIV_* value is a ConfigError
        settings = with_airflow_s3(Settings.from_env().ensure())
        return step(settings, *args)
    except ContentError as exc:
        text = safe_line(exc)
        log.error("content problem (not retried; an archivist or the system owner must act): %s", text)
        raise AirflowFailException(f"CONTENT PROBLEM — not a system error, not retried: {text}") from None
    except StateError as exc:
        text = safe_line(exc)
        log.error("state problem (not retried; an earlier step must be rerun): %s", text)
        raise AirflowFailException(f"STATE PROBLEM — not retried: {text}") from None
    except ConfigError as exc:
        text = safe_line(exc)
        log.error("configuration problem (not retried): %s", text)
        raise AirflowFailException(f"CONFIGURATION PROBLEM — not retried: {text}") from None
    except (ArkivError, OSError) as exc:
        # ours (storage, state) or the system's (disk, network): they name keys and paths, no values
        raise SystemStepError(f"{type(exc).__name__}: {safe_line(exc)}") from None
    except AirflowException:
        raise
    except Exception as exc:
        where = "".join(traceback.format_tb(exc.__traceback__)[-3:])
        log.error("system error %s in %s; message withheld (it may quote a record's value); raised at:\n%s",
                  type(exc).__name__, getattr(step, "__name__", "step"), where)
        raise SystemStepError(f"{type(exc).__name__} in {getattr(step, '__name__', 'step')} (message withheld: it "
                              "may quote a record's value; see the task log for where it was raised)") from None


class SystemStepError(RuntimeError):
    """A system error in a step, its message made safe for the task log; Airflow retries it."""
