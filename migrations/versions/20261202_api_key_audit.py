"""api_key_event: the audit trail of API key creation and revocation

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 13:20:00+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_key_event",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("action IN ('create','revoke')", name=op.f("ck_api_key_event_action")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key_event")),
    )
    op.create_index(op.f("ix_api_key_event_key_id"), "api_key_event", ["key_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_api_key_event_key_id"), table_name="api_key_event")
    op.drop_table("api_key_event")
