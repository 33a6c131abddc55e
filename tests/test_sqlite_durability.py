"""SQLite registry durability: an accepted (202) learn job must survive a power loss."""

from __future__ import annotations

from sqlalchemy import text

from app.registry.db import get_engine


def test_sqlite_commits_are_fsynced(tmp_path):
    engine = get_engine(f"sqlite:///{tmp_path / 'seal.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        # 2 = FULL: WAL with NORMAL does not fsync at commit.
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2
