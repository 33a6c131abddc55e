"""documents: their probes' accuracy from the shard's weights and read in context through the base model

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 05:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Documents learned before these were measured have neither: they answer from weights, as before.
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('accuracy_weights', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('accuracy_context', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.drop_column('accuracy_context')
        batch_op.drop_column('accuracy_weights')
