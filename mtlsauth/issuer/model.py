"""Registered clients: the model, and the in-memory cache the token endpoint reads.

The cache holds every client; the hot path never touches the database. A background refresh
asks the store whether anything changed (cheaply) and reloads when it did, so a client added
or removed with the CLI is seen by a running server within ``reload_interval``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, get_args

from cryptography import x509

from mtlsauth.core.dn import CertificateName
from mtlsauth.core.thumbprint import x5t_s256

__all__ = [
    "AUTH_METHODS",
    "CERTIFICATE_METHODS",
    "SECRET_METHODS",
    "AuthMethod",
    "Client",
    "ClientRegistry",
    "ClientSource",
    "RegisteredCert",
    "SecretEntry",
]

log = logging.getLogger(__name__)

AuthMethod = Literal[
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
    "private_key_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
]
AUTH_METHODS: Final[tuple[AuthMethod, ...]] = get_args(AuthMethod)
SECRET_METHODS: Final = frozenset({"client_secret_basic", "client_secret_post"})
CERTIFICATE_METHODS: Final = frozenset({"tls_client_auth", "self_signed_tls_client_auth"})


@dataclass(frozen=True, slots=True)
class SecretEntry:
    """One active secret of a client (several during a rotation grace period)."""

    hash: str
    expires_at: float | None = None
    #: client_secret_jwt needs the secret itself (HMAC key): kept sealed (AES-GCM) only then.
    sealed: str | None = field(default=None, repr=False)
    created_at: float = 0.0
    last_used_at: float | None = None

    def is_active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class RegisteredCert:
    """A certificate registered for self_signed_tls_client_auth (RFC 8705 §2.2)."""

    der: bytes
    thumbprint: str
    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def from_der(cls, der: bytes) -> RegisteredCert:
        cert = x509.load_der_x509_certificate(der)
        return cls(
            der=der,
            thumbprint=x5t_s256(der),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )


@dataclass(frozen=True, slots=True)
class Client:
    """A registered client (RFC 7591 metadata names where they exist)."""

    client_id: str
    auth_method: AuthMethod
    bound_tokens: bool
    scopes: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ("client_credentials",)
    tls_name: CertificateName | None = None
    certificates: tuple[RegisteredCert, ...] = ()
    secrets: tuple[SecretEntry, ...] = field(default=(), repr=False)
    created_at: float = 0.0
    #: private_key_jwt keys: a registered JWK Set, or a URL to fetch one from.
    jwks: dict[str, Any] | None = field(default=None, repr=False)
    jwks_uri: str | None = None

    def certificate(self, thumbprint: str) -> RegisteredCert | None:
        for cert in self.certificates:
            if cert.thumbprint == thumbprint:
                return cert
        return None


class ClientSource(Protocol):
    """What the registry reads of a store (:class:`mtlsauth.issuer.store.Store` is one).

    Named here rather than imported: the store's modules import this model, and the model
    must not import them back (no import cycles).
    """

    async def list_clients(self) -> list[Client]: ...

    async def change_marker(self) -> object: ...


class ClientRegistry:
    """Every client in memory, refreshed from the store when it reports a change."""

    def __init__(self, store: ClientSource) -> None:
        self._store = store
        self._clients: Mapping[str, Client] = {}
        self._marker: object = object()
        self._listeners: list[Callable[[Mapping[str, Client]], None]] = []

    def get(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)

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
        self._clients = {c.client_id: c for c in clients}
        self._marker = marker
        log.info("client registry loaded: %d client(s)", len(clients))
        for listener in self._listeners:
            listener(self._clients)
        return True
