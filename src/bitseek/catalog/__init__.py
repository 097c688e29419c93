"""The SQLite catalog of a collection: one row per ingested video or image, its frame features and thumbnail.

The catalog is the collection's source of truth. Everything else in the collection folder (the
search index, the SSVH feature file) is derived from it and rebuilt or repaired from it on open,
which is what makes ``kill -9`` at any moment safe (see ``bitseek.collection`` for the write order).

Why SQLite in WAL mode: one writer (the ingest process) and many readers (searches, the HTTP
service) at once, transactions that survive a crash, and nothing to install. A connection is
never shared between threads: :class:`Catalog` keeps one per thread.
"""

from __future__ import annotations

from bitseek.catalog.db import SCHEMA_VERSION, Catalog, CatalogError, Item

__all__ = ["Catalog", "CatalogError", "Item", "SCHEMA_VERSION"]
