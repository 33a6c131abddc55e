"""knowledge-base versions record what changed against their parent, not the whole shard set; empty
shard rows go

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 12:00:00

A version that listed every shard made N learns store O(N^2) (issue 24). Each kb version's
`metrics.shards` becomes `changed` (shard -> version) and `dropped` (shards) against its parent's
set; app/knowledge/shards.py resolves a set along the lineage. Kept self-contained: a migration
must not change meaning when the application code does.
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

adapters = sa.table('adapters', sa.column('id', sa.Integer), sa.column('kind', sa.String),
                    sa.column('name', sa.String))
versions = sa.table('adapter_versions', sa.column('id', sa.Integer), sa.column('adapter_id', sa.Integer),
                    sa.column('version', sa.Integer), sa.column('parent_version', sa.Integer),
                    sa.column('metrics', sa.JSON))
documents = sa.table('documents', sa.column('shard', sa.String))


def upgrade() -> None:
    conn = op.get_bind()
    for (kb_id,) in conn.execute(sa.select(adapters.c.id).where(adapters.c.kind == 'kb')).all():
        rows = conn.execute(sa.select(versions.c.id, versions.c.version, versions.c.parent_version,
                                      versions.c.metrics).where(versions.c.adapter_id == kb_id)).all()
        whole = {r.version: dict((r.metrics or {}).get('shards') or {}) for r in rows}
        for r in rows:
            metrics = dict(r.metrics or {})
            if 'shards' not in metrics:
                continue
            parent = whole.get(r.parent_version, {}) if r.parent_version is not None else {}
            mine = metrics.pop('shards') or {}
            metrics['changed'] = {s: v for s, v in mine.items() if parent.get(s) != v}
            metrics['dropped'] = sorted(s for s in parent if s not in mine)
            conn.execute(versions.update().where(versions.c.id == r.id).values(metrics=metrics))
    # A re-plan can leave a shard row that never got a version or a document.
    has_version = sa.select(versions.c.adapter_id).where(versions.c.adapter_id == adapters.c.id).exists()
    has_document = sa.select(documents.c.shard).where(documents.c.shard == adapters.c.name).exists()
    conn.execute(adapters.delete().where(adapters.c.kind == 'shard', ~has_version, ~has_document))


def downgrade() -> None:
    # Deltas resolve to the same sets, and older code reads `shards`: write the whole sets back.
    conn = op.get_bind()
    for (kb_id,) in conn.execute(sa.select(adapters.c.id).where(adapters.c.kind == 'kb')).all():
        rows = conn.execute(sa.select(versions.c.id, versions.c.version, versions.c.parent_version,
                                      versions.c.metrics).where(versions.c.adapter_id == kb_id)
                            .order_by(versions.c.version)).all()
        resolved: dict[int, dict] = {}
        for r in rows:
            metrics = dict(r.metrics or {})
            shards = dict(resolved.get(r.parent_version, {}))
            if 'shards' in metrics:
                shards = dict(metrics['shards'])
            shards.update(metrics.get('changed') or {})
            for dropped in metrics.get('dropped') or ():
                shards.pop(dropped, None)
            resolved[r.version] = shards
            conn.execute(versions.update().where(versions.c.id == r.id).values(metrics={**metrics, 'shards': shards}))
