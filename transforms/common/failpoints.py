"""Failpoints: named places in the chain where a crash-recovery test can stop the process.

A leaf module (it imports nothing of ours), so that storage, OCFL, the pipeline and retention
can all mark their failpoints without importing one another.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_PAUSED: set[str] = set()


def failpoint(name: str) -> None:
    """Die here, hard, when ``ARKIV_FAILPOINT`` names this point: for crash-recovery tests only.

    ``ARKIV_FAILPOINT_PAUSE`` naming this point instead holds the process here, the first time
    it passes, so that a test can break something outside it (stop the object store, the
    catalogue database) at a known moment: the process creates the file
    ``ARKIV_FAILPOINT_PAUSE_FILE`` and goes on once the test has removed it (or after 120 s).
    """
    if os.environ.get("ARKIV_FAILPOINT") == name:
        os._exit(137)
    if os.environ.get("ARKIV_FAILPOINT_PAUSE") == name and name not in _PAUSED:
        _PAUSED.add(name)
        flag = Path(os.environ["ARKIV_FAILPOINT_PAUSE_FILE"])
        flag.write_text(f"{os.getpid()}\n", encoding="ascii")
        deadline = time.monotonic() + 120
        while flag.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
