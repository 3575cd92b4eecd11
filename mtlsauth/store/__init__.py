"""Persistence behind one protocol; SQLite (embedded, WAL) is the default backend."""

from mtlsauth.store.base import ClientExistsError, SchemaError, Store, StoreError
from mtlsauth.store.sqlite import SQLiteStore

__all__ = ["ClientExistsError", "SQLiteStore", "SchemaError", "Store", "StoreError", "open_store"]


def open_store(database_url: str) -> Store:
    """The store for ``database_url`` (not yet opened)."""
    if database_url.startswith("sqlite:///"):
        return SQLiteStore(database_url.removeprefix("sqlite:///"))
    raise StoreError(f"unsupported database_url scheme: {database_url.split(':', 1)[0]!r}")
