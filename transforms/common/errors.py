"""The two families of failure: content problems and system errors.

A *content* problem (bad rows, an invalid package, a file in a forbidden format) is the
source system's to fix or the archivist's to decide; retrying does not help. A *system*
error (disk, database, network) may go away on retry. Airflow glue maps the first to a
non-retried failure and lets the second be retried.
"""


class ArkivError(Exception):
    """Base of every error raised by Arkivflöde's own code."""


class ContentError(ArkivError):
    """The data itself is wrong: quarantine it and tell a person; do not retry."""

    def __init__(self, message: str, details: list[str] | None = None):
        super().__init__(message)
        self.details = list(details or [])

    def __str__(self) -> str:
        base = super().__str__()
        if not self.details:
            return base
        shown = "\n".join(f"  - {d}" for d in self.details[:20])
        more = f"\n  … and {len(self.details) - 20} more" if len(self.details) > 20 else ""
        return f"{base}\n{shown}{more}"


class StorageError(ArkivError):
    """A storage location misbehaved (write not verified, object missing): retry may help."""


class ConfigError(ArkivError):
    """A configuration file or setting is invalid; the message names the file and the key."""


class StateError(ArkivError):
    """A step found the pipeline in a state it must not act on (an earlier step did not finish);
    retrying the same step does not help: rerun the earlier one."""


class PackageError(ArkivError):
    """A package could not be built or converted (e.g. its metadata failed its schema)."""


class AlreadyRunning(ArkivError):
    """The same work (one system's interval) is being done by another process right now: let it
    finish; running it a second time at once could only race it."""
