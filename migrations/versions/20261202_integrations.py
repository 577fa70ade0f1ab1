"""integrations: experiment.integrations (CloudEvents sources, MLflow) and cloudevent_pair

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 13:30:00+00:00

- ``experiment.integrations``: JSONB, ``{}`` for existing experiments.
- ``cloudevent_pair``: one row per inference-logger CloudEvent id, holding whichever half
  (request, response) arrived first until the other one comes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "experiment",
        sa.Column(
            "integrations",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.create_table(
        "cloudevent_pair",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("variant", sa.String(length=64), nullable=False),
        sa.Column("unit_id", sa.Text(), nullable=True),
        sa.Column("request_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("response_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("responded", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("error", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiment.id"],
            name=op.f("fk_cloudevent_pair_experiment_id_experiment"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("experiment_id", "event_id", name=op.f("pk_cloudevent_pair")),
    )


def downgrade() -> None:
    op.drop_table("cloudevent_pair")
    op.drop_column("experiment", "integrations")
