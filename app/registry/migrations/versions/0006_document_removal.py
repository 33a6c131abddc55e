"""documents: when a document was forgotten (DELETE /v1/adapters/{kb}/documents/{id}) and when purged

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 11:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Retention purges a forgotten document's text, probes and shard files once removed_at is
    # SEAL_ADAPTER_RETENTION_DAYS old; until then a rollback can bring it back.
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('purged_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.drop_column('purged_at')
        batch_op.drop_column('removed_at')
