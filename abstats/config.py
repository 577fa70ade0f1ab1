"""Settings, read from the environment with the ``ABSTATS_`` prefix (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    # Ingestion limits (DESIGN.md section 3).
    max_batch_events: int = Field(default=5000, ge=1)
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    max_features: int = Field(default=200, ge=0, description="Keys per prediction feature map.")
    max_string_length: int = Field(default=256, ge=8, description="Ids, names, feature strings.")
    future_tolerance_seconds: int = Field(default=24 * 3600, ge=0)

    # Scheduler (DESIGN.md section 6).
    analysis_interval_seconds: float = Field(default=60.0, gt=0)
    drift_interval_seconds: float = Field(default=300.0, gt=0)
    outbox_interval_seconds: float = Field(default=5.0, gt=0)

    # Database pool.
    pool_size: int = Field(default=10, ge=1)
    max_overflow: int = Field(default=10, ge=0)
    statement_timeout_ms: int = Field(default=0, ge=0, description="0: no timeout.")

    # Prometheus: per-experiment series of at most this many active experiments (label cardinality).
    metrics_max_experiments: int = Field(default=100, ge=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return Settings()
