"""Persistence behind one protocol: SQLite (embedded, WAL) by default, PostgreSQL for many
workers and hosts."""

from mtlsauth.issuer.store.base import (
    ClientExistsError,
    FederationExistsError,
    SchemaError,
    Store,
    StoreError,
    StoreUnavailable,
    TrustAnchorExistsError,
)
from mtlsauth.issuer.store.sqlite import SQLiteStore

__all__ = [
    "ClientExistsError",
    "FederationExistsError",
    "SQLiteStore",
    "SchemaError",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TrustAnchorExistsError",
    "open_store",
]


def open_store(database_url: str) -> Store:
    """The store for ``database_url`` (not yet opened)."""
    if database_url.startswith("sqlite:///"):
        return SQLiteStore(database_url.removeprefix("sqlite:///"))
    if database_url.startswith(("postgresql://", "postgres://")):
        try:
            from mtlsauth.issuer.store.postgres import PostgresStore  # noqa: PLC0415 - optional asyncpg
        except ImportError as exc:
            raise StoreError(
                "database_url is PostgreSQL but asyncpg is not installed: "
                "pip install 'mtlsauth[postgres]'"
            ) from exc
        return PostgresStore(database_url)
    raise StoreError(f"unsupported database_url scheme: {database_url.split(':', 1)[0]!r}")
