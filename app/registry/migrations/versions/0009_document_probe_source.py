"""documents: what their probes were (the caller's, self-written questions, or cloze)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 04:00:00

A document graded on cloze is answered by reading it (app/knowledge/shards.reads_better).
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Documents learned before have none: they are routed on their two accuracies, as before.
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('probe_source', sa.String(length=24), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.drop_column('probe_source')
