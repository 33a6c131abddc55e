"""Database engine, sessions and migrations."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Arbitrary constant: every process that migrates takes this Postgres advisory lock first.
_MIGRATION_LOCK_ID = 0x5EA1


@functools.lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One pooled engine per URL per process."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record):  # noqa: ANN001
            # WAL lets the API read while a worker writes; FKs are off by default in SQLite.
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            # FULL, not NORMAL: in WAL mode NORMAL skips the fsync at commit, so a power loss can
            # drop a job the API already answered 202 for. FULL costs one fsync per commit.
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


@functools.lru_cache(maxsize=8)
def get_sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextlib.contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema up to `revision` (head; tests stop earlier). Safe to call from many processes at once."""
    from alembic import command
    from alembic.config import Config

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = get_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Two API processes starting together must not both create tables.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_ID})
        elif engine.dialect.name == "sqlite":
            # An immediate transaction takes SQLite's write lock for the duration.
            conn.exec_driver_sql("BEGIN IMMEDIATE") if not conn.in_transaction() else None
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    logger.info("database schema at head (%s)", engine.url.render_as_string(hide_password=True))
