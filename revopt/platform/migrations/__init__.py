"""Alembic migrations of revopt's own PostgreSQL schema (``scores``); applied by ``revopt init-db``
through :func:`revopt.platform.schema.migrate`. One file per change in ``versions/``, never edited once
released: a new column, table or view is a new revision."""
