"""Settings, read from the environment with the ``ABSTATS_`` prefix (pydantic-settings)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A list setting from the environment: a JSON array (``["a", "b"]``) or comma-separated (``a,b``).
StrList = Annotated[list[str], NoDecode]


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _split_argv(value: Any) -> Any:
    """A command: a JSON array of arguments, or words separated by spaces (no shell quoting)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return text.split()
    return value


class Settings(BaseSettings):
    """Every knob of abstats. See README.md, section Configuration."""

    model_config = SettingsConfigDict(env_prefix="ABSTATS_", env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL. Unset: an embedded PostgreSQL is started under data_dir.",
    )
    data_dir: Path = Field(
        default=Path(".abstats"), description="Embedded PostgreSQL, first admin key."
    )
    reports_dir: Path = Field(default=Path("reports"), description="Where reports are written.")
    log_level: str = Field(default="INFO")
    log_json: bool = Field(default=True, description="JSON log lines (false: human-readable).")

    # Ingestion limits (docs/events.md).
    max_batch_events: int = Field(default=5000, ge=1)
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    max_features: int = Field(default=200, ge=0, description="Keys per prediction feature map.")
    max_string_length: int = Field(default=256, ge=8, description="Ids, names, feature strings.")
    future_tolerance_seconds: int = Field(default=24 * 3600, ge=0)

    # Scheduler (docs/architecture.md).
    analysis_interval_seconds: float = Field(default=60.0, gt=0)
    drift_interval_seconds: float = Field(default=300.0, gt=0)
    outbox_interval_seconds: float = Field(default=5.0, gt=0)
    epoch_settle_seconds: float = Field(
        default=5.0,
        ge=0,
        description="After a router confirms new weights, units first exposed within this many "
        "seconds are left out of the SRM check (routers and /assign caches switch over).",
    )

    # Database pool.
    pool_size: int = Field(default=10, ge=1)
    max_overflow: int = Field(default=10, ge=0)
    statement_timeout_ms: int = Field(default=0, ge=0, description="0: no timeout.")
    pool_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Wait for a pooled connection; then 503 + Retry-After."
    )

    # Request bounds, enforced before a body is read (README, section Security).
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, description="All headers together.")
    max_request_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Bodies of every route but POST /v1/events."
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="A body not received completely within this: 408."
    )

    # Operator configuration of routers and notifications: the API can only choose among these.
    nginx_include_dir: Path | None = Field(
        default=None, description="nginx router: include files may only be written here."
    )
    nginx_test_command: StrList = Field(default_factory=lambda: ["nginx", "-t"])
    nginx_reload_command: StrList = Field(default_factory=lambda: ["nginx", "-s", "reload"])
    flagd_dir: Path | None = Field(
        default=None, description="flagd_file router: flag files may only be written here."
    )
    webhook_allowed_hosts: StrList = Field(
        default_factory=list, description="webhook router url/read_url hosts (host or host:port)."
    )
    notification_allowed_hosts: StrList = Field(
        default_factory=list, description="notifications.webhook_url hosts (host or host:port)."
    )
    sagemaker_allowed_hosts: StrList = Field(
        default_factory=list,
        description="sagemaker router endpoint_url hosts; without endpoint_url AWS's own is used.",
    )

    # Sizes an admin may define (README, section Security).
    max_metadata_bytes: int = Field(default=16 * 1024, ge=256)
    max_variants: int = Field(default=20, ge=2)
    max_metrics: int = Field(default=50, ge=1)
    max_ramp_steps: int = Field(default=20, ge=1)
    max_list_page_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)

    @field_validator(
        "webhook_allowed_hosts",
        "notification_allowed_hosts",
        "sagemaker_allowed_hosts",
        mode="before",
    )
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        value = _split_list(value)
        if isinstance(value, list):
            return [str(v).strip().lower() for v in value if str(v).strip()]
        return value

    @field_validator("nginx_test_command", "nginx_reload_command", mode="before")
    @classmethod
    def _argv(cls, value: Any) -> Any:
        return _split_argv(value)

    # Web console (abstats.console).
    console_secret: str | None = Field(
        default=None,
        description="Signs console session cookies. Unset: generated once into "
        "<data_dir>/console-secret (mode 0600). Set the same value on every API replica.",
    )
    console_session_seconds: int = Field(
        default=8 * 3600, ge=60, description="How long a console sign-in lasts."
    )

    # Prometheus: per-experiment series of at most this many active experiments (label cardinality).
    metrics_max_experiments: int = Field(default=100, ge=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return Settings()
