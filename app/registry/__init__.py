"""The registry: SQL tables for adapters, versions, learn jobs, documents and events."""
