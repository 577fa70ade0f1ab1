"""analysis: AUC scores per unit (clustered DeLong variance, AUC stratified by weight epoch)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 18:00:00+00:00

- ``analysis_unit_score`` replaces ``analysis_score_bin``: the labelled predictions per (label
  outcome, unit) as a sparse histogram on the score bins, with the unit's score moments, instead
  of per serving variant. A unit's scores then count in its
  variant and weight epoch like every other metric, and the cells carry the Gram sums of the
  units' score moments that cluster DeLong's variance by unit (issue 13; see
  ``abstats.stats.ScoreClusters``).

Rollups are derived data: every experiment's rollups are forgotten and rebuilt from its events at
the next run.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROLLUPS = (
    "analysis_unit",
    "analysis_unit_outcome",
    "analysis_unit_window",
    "analysis_unit_segment",
    "analysis_unit_classification",
    "analysis_unit_latency",
    "analysis_cell",
)


def _forget_rollups() -> None:
    for table in _ROLLUPS:
        op.execute(f"DELETE FROM {table}")
    op.execute(
        "UPDATE analysis_watermark SET exposure_id = 0, prediction_id = 0, outcome_id = 0, "
        "max_event_ts = NULL, cell_epochs = NULL"
    )


def upgrade() -> None:
    _forget_rollups()
    op.drop_table("analysis_score_bin")
    op.create_table(
        "analysis_unit_score",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("unit_id", sa.Text(), nullable=False),
        sa.Column("bins", postgresql.ARRAY(sa.SmallInteger()), nullable=False),
        sa.Column("positives", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("negatives", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        *(
            sa.Column(f"{side}{k}", sa.BigInteger(), nullable=False)
            for side in ("p", "n")
            for k in range(6)  # abstats.stats.AUC_CLUSTER_DEGREE + 1
        ),
        sa.PrimaryKeyConstraint(
            "experiment_id", "label", "unit_id", name=op.f("pk_analysis_unit_score")
        ),
    )


def downgrade() -> None:
    op.drop_table("analysis_unit_score")
    op.create_table(
        "analysis_score_bin",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("variant_id", sa.Integer(), nullable=False),
        sa.Column("bin", sa.Integer(), nullable=False),
        sa.Column("positives", sa.BigInteger(), nullable=False),
        sa.Column("negatives", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "experiment_id", "label", "variant_id", "bin", name=op.f("pk_analysis_score_bin")
        ),
    )
    _forget_rollups()
