"""Where Arkivflöde keeps its state, read from the environment.

The embedded default keeps everything under one folder, ``var/`` in the checkout, with one
sub-folder per concern, so that a newcomer can see it and delete it. Every location can be
moved with its own environment variable (or all at once with ``ARKIV_HOME``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: the checkout (transforms/ sits at its top) — used only for defaults
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: environment variable -> (attribute, sub-folder of ARKIV_HOME)
LOCATIONS = {
    "ARKIV_STAGING_DIR": ("staging", "staging"),
    "ARKIV_QUARANTINE_DIR": ("quarantine", "quarantine"),
    "ARKIV_REPORTS_DIR": ("reports", "reports"),
    "ARKIV_BUILD_DIR": ("build", "build"),
    "ARKIV_MELLANARKIV": ("mellanarkiv", "mellanarkiv"),
    "ARKIV_SLUTARKIV": ("slutarkiv", "slutarkiv"),
    "ARKIV_DEMO_DIR": ("demo", "demo"),
}


@dataclass(frozen=True)
class Settings:
    """Resolved locations and URLs; build one with :meth:`from_env`."""

    home: Path
    staging: Path
    quarantine: Path
    reports: Path
    build: Path
    mellanarkiv: Path
    slutarkiv: Path
    demo: Path
    catalogue_url: str
    systems_dir: Path
    expectations_dir: Path

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Read ``ARKIV_*`` variables (see README "Configuration"); defaults live under ``var/``."""
        env = os.environ if env is None else env
        home = Path(env.get("ARKIV_HOME") or PROJECT_ROOT / "var").resolve()
        values: dict[str, object] = {"home": home}
        for var, (attr, sub) in LOCATIONS.items():
            values[attr] = Path(env[var]).resolve() if env.get(var) else home / sub
        default_db = home / "catalogue" / "catalogue.sqlite"
        values["catalogue_url"] = env.get("ARKIV_CATALOGUE_URL") or f"sqlite:///{default_db}"
        values["systems_dir"] = Path(env.get("ARKIV_SYSTEMS_DIR") or PROJECT_ROOT / "dags" / "systems")
        values["expectations_dir"] = Path(env.get("ARKIV_EXPECTATIONS_DIR") or PROJECT_ROOT / "expectations")
        return cls(**values)  # type: ignore[arg-type]

    def ensure(self) -> Settings:
        """Create the local folders (and the SQLite catalogue's folder) if missing."""
        for attr, _ in LOCATIONS.values():
            getattr(self, attr).mkdir(parents=True, exist_ok=True)
        if self.catalogue_url.startswith("sqlite:///"):
            Path(self.catalogue_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return self

    def connection_url(self, conn_id: str, env: dict[str, str] | None = None) -> str | None:
        """A source database URL from ``ARKIV_CONN_<ID>`` (Airflow connections are tried by plugins/)."""
        env = os.environ if env is None else env
        return env.get(f"ARKIV_CONN_{conn_id.upper()}")
