"""The Store protocol: everything that must outlive a process or be shared between processes."""

from __future__ import annotations

from typing import Protocol

from mtlsauth.clients import Client

__all__ = ["ClientExistsError", "Store", "StoreError"]


class StoreError(Exception):
    """The store failed (unreachable, corrupt, wrong schema)."""


class ClientExistsError(StoreError):
    """A client with that client_id is already registered."""


class Store(Protocol):
    """Persistence for clients (and, later, revocations and replay caches)."""

    async def open(self) -> None:
        """Connect and create or check the schema."""

    async def close(self) -> None: ...

    async def add_client(self, client: Client) -> None:
        """Insert a client with its secrets and certificates; ClientExistsError if taken."""

    async def remove_client(self, client_id: str) -> bool:
        """Delete a client; False when there was none."""

    async def get_client(self, client_id: str) -> Client | None: ...

    async def list_clients(self) -> list[Client]: ...

    async def change_marker(self) -> object:
        """A value that differs whenever clients changed, from this or any other process."""
