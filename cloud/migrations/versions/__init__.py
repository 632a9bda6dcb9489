"""Alembic revisions of the collector database, oldest first (``NNNN_what.py``)."""
