"""staff escalation

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staff_cards",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "ticket_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_staff_cards_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_cards")),
        sa.UniqueConstraint("ticket_id", "chat_id", name=op.f("uq_staff_cards_ticket_id_chat_id")),
    )
    with op.batch_alter_table("staff_cards", schema=None) as batch_op:
        batch_op.create_index(
            "ix_staff_cards_chat_id_message_id", ["chat_id", "message_id"], unique=False
        )

    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("notices_sent", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("ladder_started_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("last_notice_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("last_staff_reply_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_column("last_staff_reply_at")
        batch_op.drop_column("last_notice_at")
        batch_op.drop_column("ladder_started_at")
        batch_op.drop_column("snoozed_until")
        batch_op.drop_column("claimed_at")
        batch_op.drop_column("notices_sent")

    with op.batch_alter_table("staff_cards", schema=None) as batch_op:
        batch_op.drop_index("ix_staff_cards_chat_id_message_id")

    op.drop_table("staff_cards")
