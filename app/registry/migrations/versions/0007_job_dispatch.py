"""learn_jobs.dispatched_at: when a job went to the queue (app/dispatch.py holds a tenant's backlog)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 11:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('learn_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True))
    # Every job accepted before this release was enqueued at its submit.
    op.execute("UPDATE learn_jobs SET dispatched_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table('learn_jobs', schema=None) as batch_op:
        batch_op.drop_column('dispatched_at')
