"""knowledge bases: adapter kinds (lora | kb | shard), a shard's kb, and documents' shard, state and memory

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 13:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('adapters', schema=None) as batch_op:
        # Adapters that exist already were learned as single streams: they stay `lora`.
        batch_op.add_column(sa.Column('kind', sa.String(length=8), nullable=False, server_default='lora'))
        batch_op.add_column(sa.Column('kb_id', sa.Integer(), nullable=True))
        batch_op.create_index('ix_adapters_kb_id', ['kb_id'])
        batch_op.create_foreign_key('fk_adapters_kb_id', 'adapters', ['kb_id'], ['id'])
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('shard', sa.String(length=160), nullable=True))
        batch_op.add_column(sa.Column('state', sa.String(length=8), nullable=False, server_default='pending'))
        batch_op.add_column(sa.Column('memory', sa.JSON(), nullable=True))
        batch_op.create_index('ix_documents_shard', ['shard'])


def downgrade() -> None:
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.drop_index('ix_documents_shard')
        batch_op.drop_column('memory')
        batch_op.drop_column('state')
        batch_op.drop_column('shard')
    with op.batch_alter_table('adapters', schema=None) as batch_op:
        batch_op.drop_constraint('fk_adapters_kb_id', type_='foreignkey')
        batch_op.drop_index('ix_adapters_kb_id')
        batch_op.drop_column('kb_id')
        batch_op.drop_column('kind')
