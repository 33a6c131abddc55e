"""Alembic environment: runs on the connection handed in by app.registry.db.migrate."""

from alembic import context

from app.registry.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
context.run_migrations()
