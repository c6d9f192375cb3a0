"""Where Arkivflöde keeps its state, read from the environment.

The embedded default keeps everything under one folder, ``var/`` in the checkout, with one
sub-folder per concern, so that a newcomer can see it and delete it. Every location can be
moved with its own environment variable (or all at once with ``ARKIV_HOME``).

The two archives, the mellanarkiv and the slutarkiv, may instead be S3 buckets: give
``ARKIV_MELLANARKIV`` / ``ARKIV_SLUTARKIV`` as ``s3://bucket/prefix`` and the S3 settings
(endpoint, region, encryption, Object Lock) with the ``ARKIV_S3_*`` variables read by
:meth:`S3Config.from_env`. Credentials come from boto3's standard chain (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, an instance role), never
from our own variables.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transforms.common.errors import ConfigError

#: the checkout (transforms/ sits at its top) — used only for defaults
PROJECT_ROOT = Path(__file__).resolve().parents[2]

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


#: the archives that may be a bucket instead of a folder
ARCHIVES = ("mellanarkiv", "slutarkiv")
MIB = 1024 * 1024
#: S3 refuses multipart parts smaller than this (except the last one)
S3_MIN_PART_SIZE = 5 * MIB


def is_s3(location: Path | str) -> bool:
    """True when a location is an S3 URL (``s3://bucket[/prefix]``) rather than a folder."""
    return str(location).startswith("s3://")


@dataclass(frozen=True)
class ObjectLock:
    """S3 Object Lock retention applied to every object written: mode and days from the write."""

    mode: str  # GOVERNANCE | COMPLIANCE
    days: int


@dataclass(frozen=True)
class S3Config:
    """How to reach S3 and how to write there; shared by both archives (Object Lock is per archive)."""

    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str = "auto"
    sse: str | None = None  # AES256 | aws:kms
    sse_kms_key_id: str | None = None
    part_size: int = 16 * MIB
    #: files larger than this go up in a multipart upload (None: larger than one part)
    multipart_threshold: int | None = None
    read_back_max: int = 64 * MIB
    max_attempts: int = 5
    conditional_writes: bool = True
    object_lock: tuple[tuple[str, ObjectLock], ...] = ()  # (archive name, retention); a tuple keeps it hashable
    conn_id: str | None = None  # an Airflow AWS connection (used by plugins/ only)
    #: builds the boto3 S3 client; None = boto3's standard credential chain (set by plugins/ for an
    #: Airflow connection). Excluded from equality so that settings still compare by value.
    client_factory: Callable[[], Any] | None = field(default=None, compare=False, repr=False)

    def client(self) -> Any:
        """A boto3 S3 client: retries with backoff through botocore's standard retry mode.

        ``client_factory`` wins when set (the Airflow side builds the client from an Airflow
        connection); otherwise boto3's standard credential chain applies (``AWS_*`` variables,
        profile, instance role). Every S3 user (archives, working bucket, inboxes) builds its
        client here.
        """
        if self.client_factory is not None:
            return self.client_factory()
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
            # total_max_attempts counts the first request too ("max_attempts" here would add one more)
            config=Config(retries={"mode": "standard", "total_max_attempts": self.max_attempts},
                          s3={"addressing_style": self.addressing_style},
                          connect_timeout=10, read_timeout=120))

    @property
    def multipart_above(self) -> int:
        """Files larger than this many bytes are uploaded in parts."""
        return self.part_size if self.multipart_threshold is None else self.multipart_threshold

    def lock_for(self, archive: str) -> ObjectLock | None:
        """The Object Lock retention configured for ``archive`` (None: objects are written unlocked)."""
        return dict(self.object_lock).get(archive)

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ | None = None) -> S3Config:
        """Read the ``ARKIV_S3_*`` and ``ARKIV_<ARCHIVE>_OBJECT_LOCK_*`` variables (see docs/configuration.md)."""
        env = os.environ if env is None else env
        endpoint = env.get("ARKIV_S3_ENDPOINT_URL") or None
        sse = env.get("ARKIV_S3_SSE") or None
        if sse not in (None, "AES256", "aws:kms"):
            raise ConfigError(f"ARKIV_S3_SSE={sse!r}: use AES256 or aws:kms (or leave it unset)")
        kms_key = env.get("ARKIV_S3_SSE_KMS_KEY_ID") or None
        if kms_key and sse != "aws:kms":
            raise ConfigError("ARKIV_S3_SSE_KMS_KEY_ID is set but ARKIV_S3_SSE is not aws:kms")
        part_size = int(float(env.get("ARKIV_S3_PART_SIZE_MB") or 16) * MIB)
        if part_size < S3_MIN_PART_SIZE:
            raise ConfigError(f"ARKIV_S3_PART_SIZE_MB: S3's smallest multipart part is 5 MiB, not "
                              f"{part_size / MIB:g} MiB")
        threshold = env.get("ARKIV_S3_MULTIPART_THRESHOLD_MB")
        if threshold and not 0 <= float(threshold) * MIB <= part_size:
            # a single PUT holds the whole file in memory: never more than one part
            raise ConfigError(f"ARKIV_S3_MULTIPART_THRESHOLD_MB={threshold}: give 0 to {part_size / MIB:g} "
                              "(at most ARKIV_S3_PART_SIZE_MB)")
        style = env.get("ARKIV_S3_ADDRESSING_STYLE") or ("path" if endpoint else "auto")
        if style not in ("auto", "path", "virtual"):
            raise ConfigError(f"ARKIV_S3_ADDRESSING_STYLE={style!r}: use auto, path or virtual")
        locks = []
        for archive in ARCHIVES:
            mode = (env.get(f"ARKIV_{archive.upper()}_OBJECT_LOCK_MODE") or "").upper()
            days = env.get(f"ARKIV_{archive.upper()}_OBJECT_LOCK_DAYS")
            if not mode and not days:
                continue
            if mode not in ("GOVERNANCE", "COMPLIANCE") or not days or not days.isdigit() or int(days) < 1:
                raise ConfigError(f"ARKIV_{archive.upper()}_OBJECT_LOCK_MODE/_DAYS: give both, the mode as "
                                  f"GOVERNANCE or COMPLIANCE and the days as a positive whole number "
                                  f"(got {mode or '-'} / {days or '-'})")
            locks.append((archive, ObjectLock(mode, int(days))))
        return cls(endpoint_url=endpoint,
                   region=env.get("ARKIV_S3_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
                   addressing_style=style, sse=sse, sse_kms_key_id=kms_key, part_size=part_size,
                   multipart_threshold=int(float(threshold) * MIB) if threshold else None,
                   read_back_max=int(float(env.get("ARKIV_S3_READ_BACK_MAX_MB") or 64) * MIB),
                   max_attempts=int(env.get("ARKIV_S3_MAX_ATTEMPTS") or 5),
                   conditional_writes=(env.get("ARKIV_S3_CONDITIONAL_WRITES") or "true").lower()
                   not in ("0", "false", "no"),
                   object_lock=tuple(locks), conn_id=env.get("ARKIV_S3_CONN_ID") or None)


@dataclass(frozen=True)
class Settings:
    """Resolved locations and URLs; build one with :meth:`from_env`."""

    home: Path
    staging: Path
    quarantine: Path
    reports: Path
    build: Path
    mellanarkiv: Path | str  # a folder, or "s3://bucket/prefix"
    slutarkiv: Path | str
    demo: Path
    catalogue_url: str
    systems_dir: Path
    expectations_dir: Path
    s3: S3Config = field(default_factory=S3Config)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Read ``ARKIV_*`` variables (see docs/configuration.md); defaults live under ``var/``."""
        env = os.environ if env is None else env
        home = Path(env.get("ARKIV_HOME") or PROJECT_ROOT / "var").resolve()
        values: dict[str, object] = {"home": home}
        for var, (attr, sub) in LOCATIONS.items():
            value = env.get(var)
            if value and attr in ARCHIVES and is_s3(value):
                values[attr] = value.rstrip("/")  # a bucket: kept as its URL
            else:
                values[attr] = Path(value).resolve() if value else home / sub
        default_db = home / "catalogue" / "catalogue.sqlite"
        values["catalogue_url"] = env.get("ARKIV_CATALOGUE_URL") or f"sqlite:///{default_db}"
        values["systems_dir"] = Path(env.get("ARKIV_SYSTEMS_DIR") or PROJECT_ROOT / "dags" / "systems")
        values["expectations_dir"] = Path(env.get("ARKIV_EXPECTATIONS_DIR") or PROJECT_ROOT / "expectations")
        values["s3"] = S3Config.from_env(env)
        return cls(**values)  # type: ignore[arg-type]

    def ensure(self) -> Settings:
        """Create the local folders (and the SQLite catalogue's folder) if missing; buckets are not created."""
        for attr, _ in LOCATIONS.values():
            if not is_s3(getattr(self, attr)):
                getattr(self, attr).mkdir(parents=True, exist_ok=True)
        if self.catalogue_url.startswith("sqlite:///"):
            Path(self.catalogue_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return self

    def connection_url(self, conn_id: str, env: dict[str, str] | None = None) -> str | None:
        """A source database URL from ``ARKIV_CONN_<ID>`` (Airflow connections are tried by plugins/).

        The id comes from a system's YAML: only a plain name (letters, digits, _) is looked up, so
        that it cannot reach a variable that is not a connection's.
        """
        from transforms.config.systems import CONNECTION_ID

        if not isinstance(conn_id, str) or not CONNECTION_ID.fullmatch(conn_id):
            raise ConfigError("a connection id must be letters, digits and _ (it names ARKIV_CONN_<ID>)")
        env = os.environ if env is None else env
        return env.get(f"ARKIV_CONN_{conn_id.upper()}")
