"""analysis: per-(variant, epoch) cell sums maintained by delta; per-unit latency histograms as arrays

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 22:00:00+00:00

- ``analysis_cell``: the across-unit sums of every metric family per (variant, weight epoch[, bin]),
  kept up to date by subtracting the old and adding the new per-unit rows of the units a run
  touched, so that a re-analysis never scans every unit (``abstats.analysis.rollup``).
- ``analysis_watermark.cell_epochs``: the epoch start times the cells are stratified by.
- ``analysis_unit_latency`` becomes one row per unit (sorted bins and cumulative counts) instead of
  one row per unit and bin.
- Indexes: ``analysis_unit (experiment_id, first_ts)`` (first unit seen; units that a new weight
  epoch moves) and ``analysis_unit_outcome (experiment_id, name, value_sum)`` (winsorisation caps
  from the top of the index).

Rollups are derived data: upgrade and downgrade forget them (and reset the fold watermark, not the
drift one), so the next analysis run rebuilds them from the events.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROLLUPS = (
    "analysis_unit",
    "analysis_unit_outcome",
    "analysis_unit_classification",
    "analysis_score_bin",
    "analysis_unit_latency",
)


def _forget_rollups() -> None:
    for table in _ROLLUPS:
        op.execute(f"DELETE FROM {table}")
    op.execute(
        "UPDATE analysis_watermark SET exposure_id = 0, prediction_id = 0, outcome_id = 0, "
        "max_event_ts = NULL"
    )


def upgrade() -> None:
    _forget_rollups()
    op.drop_table("analysis_unit_latency")
    op.create_table(
        "analysis_unit_latency",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Text(), nullable=False),
        sa.Column("bins", postgresql.ARRAY(sa.SmallInteger()), nullable=False),
        sa.Column("at_or_below", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.PrimaryKeyConstraint("experiment_id", "unit_id", name=op.f("pk_analysis_unit_latency")),
    )
    # no planner statistics for the arrays: no query filters on their elements, and element
    # statistics would make every ANALYZE after a rebuild several times slower
    op.execute("ALTER TABLE analysis_unit_latency ALTER COLUMN bins SET STATISTICS 0")
    op.execute("ALTER TABLE analysis_unit_latency ALTER COLUMN at_or_below SET STATISTICS 0")
    op.create_table(
        "analysis_cell",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("family", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("variant_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("bin", sa.Integer(), nullable=False),
        sa.Column("sums", postgresql.ARRAY(sa.Numeric()), nullable=False),
        sa.PrimaryKeyConstraint(
            "experiment_id",
            "family",
            "key",
            "variant_id",
            "epoch",
            "bin",
            name=op.f("pk_analysis_cell"),
        ),
    )
    op.add_column(
        "analysis_watermark",
        sa.Column("cell_epochs", postgresql.ARRAY(sa.DateTime(timezone=True)), nullable=True),
    )
    op.create_index(
        "ix_analysis_unit_experiment_id_first_ts", "analysis_unit", ["experiment_id", "first_ts"]
    )
    op.create_index(
        "ix_analysis_unit_outcome_experiment_id_name_value_sum",
        "analysis_unit_outcome",
        ["experiment_id", "name", "value_sum"],
    )


def downgrade() -> None:
    _forget_rollups()
    op.drop_index(
        "ix_analysis_unit_outcome_experiment_id_name_value_sum", table_name="analysis_unit_outcome"
    )
    op.drop_index("ix_analysis_unit_experiment_id_first_ts", table_name="analysis_unit")
    op.drop_column("analysis_watermark", "cell_epochs")
    op.drop_table("analysis_cell")
    op.drop_table("analysis_unit_latency")
    op.create_table(
        "analysis_unit_latency",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Text(), nullable=False),
        sa.Column("bin", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "experiment_id", "unit_id", "bin", name=op.f("pk_analysis_unit_latency")
        ),
    )
