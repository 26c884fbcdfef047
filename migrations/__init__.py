"""Alembic migrations for carebot's schema (run by ``carebot migrate`` and at start-up)."""
