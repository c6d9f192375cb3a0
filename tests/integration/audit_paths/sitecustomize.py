"""Loaded at start-up by every Python process of an integration-test worker (its PYTHONPATH names
this folder): an audit hook that records each file-system access to a path under another
worker's ``ARKIV_HOME``.

``ARKIV_TEST_FORBIDDEN_PATHS`` (os.pathsep-separated) are the other workers' homes;
``ARKIV_TEST_AUDIT_LOG`` is where a line is appended for each such access (``FORBIDDEN``) and,
once per process, for the first access under this worker's own home (``OWN``), which shows that
the hook was active in the process that ran a task. Without the two variables nothing is
installed. Audit hooks survive ``fork``, so the task processes of Celery's pool and Airflow's
supervisor inherit it.
"""

import os
import sys
import threading

_FORBIDDEN = tuple(os.path.join(os.path.abspath(p), "") for p in
                   os.environ.get("ARKIV_TEST_FORBIDDEN_PATHS", "").split(os.pathsep) if p)
_LOG = os.environ.get("ARKIV_TEST_AUDIT_LOG")
_OWN = os.path.join(os.path.abspath(os.environ.get("ARKIV_HOME", "/nonexistent")), "")
_EVENTS = {"open", "os.listdir", "os.scandir", "os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.link",
           "os.truncate", "shutil.copyfile", "shutil.rmtree", "os.chmod"}
_state = threading.local()
_own_seen: set[int] = set()


def _write(line: str) -> None:
    _state.busy = True
    try:
        fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode("utf-8", "replace"))
        finally:
            os.close(fd)
    finally:
        _state.busy = False


def _hook(event: str, args: tuple) -> None:
    if event not in _EVENTS or getattr(_state, "busy", False) or not args:
        return
    path = args[0]
    try:
        if isinstance(path, int) or path is None:
            return
        path = os.path.abspath(os.fsdecode(os.fspath(path)))
    except (TypeError, ValueError):
        return
    probe = os.path.join(path, "")
    if probe.startswith(_FORBIDDEN):
        _write(f"FORBIDDEN {os.getpid()} {event} {path}")
    elif probe.startswith(_OWN) and os.getpid() not in _own_seen:
        _own_seen.add(os.getpid())
        _write(f"OWN {os.getpid()} {event} {path}")


if _FORBIDDEN and _LOG:
    sys.addaudithook(_hook)
