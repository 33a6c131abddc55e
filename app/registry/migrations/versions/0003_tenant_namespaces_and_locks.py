"""tenant namespaces: longer adapter keys, a `shared` flag, and a per-tenant row to lock quotas on

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 05:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Keys are `<tenant>~<name>`: a 63-character name plus a namespace no longer fits 64.
    with op.batch_alter_table('adapters', schema=None) as batch_op:
        batch_op.alter_column('name', type_=sa.String(length=128), existing_type=sa.String(length=64))
        batch_op.add_column(sa.Column('shared', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('learn_jobs', schema=None) as batch_op:
        batch_op.alter_column('adapter', type_=sa.String(length=128), existing_type=sa.String(length=64))
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.alter_column('adapter', type_=sa.String(length=128), existing_type=sa.String(length=64))
    op.create_table(
        'tenants',
        sa.Column('tenant_key', sa.String(length=128), nullable=False),
        sa.Column('touched_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('tenant_key'),
    )


def downgrade() -> None:
    op.drop_table('tenants')
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.alter_column('adapter', type_=sa.String(length=64), existing_type=sa.String(length=128))
    with op.batch_alter_table('learn_jobs', schema=None) as batch_op:
        batch_op.alter_column('adapter', type_=sa.String(length=64), existing_type=sa.String(length=128))
    with op.batch_alter_table('adapters', schema=None) as batch_op:
        batch_op.drop_column('shared')
        batch_op.alter_column('name', type_=sa.String(length=64), existing_type=sa.String(length=128))
