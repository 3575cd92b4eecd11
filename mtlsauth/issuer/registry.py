"""The client registry: every registered client (and federation) in memory, the cache the
endpoints read.

The hot path never touches the database. A background refresh asks the store whether
anything changed (cheaply) and reloads when it did, so a client added or removed with the
CLI is seen by a running server within ``reload_interval``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from mtlsauth.issuer.model import Client, Federation
from mtlsauth.issuer.store import Store

__all__ = ["ClientRegistry"]

log = logging.getLogger(__name__)


class ClientRegistry:
    """Every client in memory, refreshed from the store when it reports a change."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._clients: Mapping[str, Client] = {}
        self._federations: Mapping[str, Federation] = {}
        self._marker: object = object()
        self._listeners: list[Callable[[Mapping[str, Client]], None]] = []

    def get(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)

    def federation(self, name: str) -> Federation | None:
        return self._federations.get(name)

    def all(self) -> Mapping[str, Client]:
        return self._clients

    def on_change(self, listener: Callable[[Mapping[str, Client]], None]) -> None:
        """Call ``listener`` with the new client map after every reload."""
        self._listeners.append(listener)

    async def refresh(self) -> bool:
        """Reload if the store changed since the last look; True when it reloaded."""
        marker = await self._store.change_marker()
        if marker == self._marker:
            return False
        clients = await self._store.list_clients()
        federations = await self._store.list_federations()
        self._clients = {c.client_id: c for c in clients}
        self._federations = {f.name: f for f in federations}
        self._marker = marker
        log.info(
            "client registry loaded: %d client(s), %d federation(s)",
            len(clients),
            len(federations),
        )
        for listener in self._listeners:
            listener(self._clients)
        return True
