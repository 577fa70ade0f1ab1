"""analysis: per-unit outcome sums within a window of the first exposure; per-unit segments

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 14:00:00+00:00

- ``analysis_unit_window``: per (outcome name, window length, unit), the sum and count of the
  outcome's values stamped in ``[first exposure, first exposure + window)``, and whether any was
  > 0. Recomputed from the unit's outcome events whenever a run touches the unit (a late, earlier
  exposure moves its window), so incremental runs and a rebuild agree (issue 17).
- The same table with a negative ``window_seconds`` holds a covariate: the outcome's sum over the
  lookback before the first exposure (CUPED).
- ``analysis_unit_segment``: per (feature, unit), the feature's value in the unit's first
  prediction (segments; recomputed whenever a run touches the unit).
- Cells of the ``window`` family are binned by the hour of the unit's first exposure, so an
  analysis reads only the units whose window has closed by its cut-off.

Rollups are derived data: the new table starts empty and the cells are re-summed at the next run
(the watermark's ``cell_epochs`` is reset), which fills it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _forget_rollups() -> None:
    for table in (
        "analysis_unit",
        "analysis_unit_outcome",
        "analysis_unit_classification",
        "analysis_score_bin",
        "analysis_unit_latency",
        "analysis_cell",
    ):
        op.execute(f"DELETE FROM {table}")
    op.execute(
        "UPDATE analysis_watermark SET exposure_id = 0, prediction_id = 0, outcome_id = 0, "
        "max_event_ts = NULL, cell_epochs = NULL"
    )


def upgrade() -> None:
    _forget_rollups()
    op.create_table(
        "analysis_unit_window",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Text(), nullable=False),
        sa.Column("value_sum", sa.Numeric(), nullable=False),
        sa.Column("value_count", sa.BigInteger(), nullable=False),
        sa.Column("positive", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint(
            "experiment_id",
            "name",
            "window_seconds",
            "unit_id",
            name=op.f("pk_analysis_unit_window"),
        ),
    )


    op.create_table(
        "analysis_unit_segment",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("feature", sa.String(length=64), nullable=False),
        sa.Column("unit_id", sa.Text(), nullable=False),
        sa.Column("segment", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "experiment_id", "feature", "unit_id", name=op.f("pk_analysis_unit_segment")
        ),
    )


def downgrade() -> None:
    op.drop_table("analysis_unit_segment")
    op.drop_table("analysis_unit_window")
    _forget_rollups()
