"""The Store protocol: everything that must outlive a process or be shared between processes.

Clients and their secrets and certificates; revoked token ids (RFC 7009); the single-use
cache of client assertion ids (RFC 7523 §3); throttling counters of failed authentication
(decision D7). Every method is safe to call from many workers and hosts at once: uniqueness
and counters are the database's own (primary keys, atomic updates), never read-then-write.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple, Protocol

from mtlsauth.core.dn import CertificateName
from mtlsauth.issuer.model import AUTH_METHODS, Client, Federation, RegisteredCert, SecretEntry
from mtlsauth.issuer.trust.anchors import TrustAnchor

__all__ = [
    "CLIENT_REVOCATION_PREFIX",
    "ClientExistsError",
    "FederationExistsError",
    "SchemaError",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoredBundle",
    "TrustAnchorExistsError",
    "anchor_from_row",
    "anchor_row",
    "client_from_row",
    "client_revocation_id",
    "client_row",
    "federation_from_row",
    "federation_row",
]


#: Revocation entries of whole clients share the revoked-token table under this prefix; token
#: ids (``secrets.token_urlsafe``) never contain ':'.
CLIENT_REVOCATION_PREFIX: Final = "client:"


def client_revocation_id(client_id: str) -> str:
    return CLIENT_REVOCATION_PREFIX + client_id


class StoreError(Exception):
    """The store failed (unreachable, corrupt, wrong schema)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now (it may come back by itself)."""


class SchemaError(StoreError):
    """The database schema is older or newer than this version of mtlsauth understands."""


class ClientExistsError(StoreError):
    """A client with that client_id is already registered."""


class FederationExistsError(StoreError):
    """A federation with that name is already registered."""


class TrustAnchorExistsError(StoreError):
    """A trust anchor with that name is already registered."""


class StoredBundle(NamedTuple):
    """The SPIFFE bundle in force for an anchor (SPIFFE Trust Domain and Bundle §4), shared by
    every worker and host: its ``spiffe_sequence``, the document, and when it was last
    fetched successfully (epoch seconds)."""

    sequence: int | None
    document: str
    refreshed_at: float


class Store(Protocol):
    async def open(self) -> None:
        """Connect and check (SQLite: create or migrate) the schema."""

    async def close(self) -> None: ...

    async def migrate(self) -> tuple[int, int]:
        """Bring the schema up to date; returns (version before, version after)."""

    async def wait_for_change(self, within: float) -> None:
        """Return early when another process announces a change (PostgreSQL NOTIFY), else
        after ``within`` seconds."""

    # -- clients ----------------------------------------------------------------------------

    async def add_client(self, client: Client) -> None:
        """Insert a client with its secrets and certificates; ClientExistsError if taken."""

    async def remove_client(self, client_id: str) -> bool:
        """Delete a client; False when there was none."""

    async def get_client(self, client_id: str) -> Client | None: ...

    async def list_clients(self) -> list[Client]: ...

    async def change_marker(self) -> object:
        """A value that differs whenever clients or federations changed, from this or any
        other process."""

    async def rotate_secret(self, client_id: str, new: SecretEntry, grace: float) -> bool:
        """Add ``new``; every other active secret now expires within ``grace`` seconds."""

    async def touch_secrets(self, used: Iterable[tuple[str, str, float]]) -> None:
        """Record (client_id, secret hash, time) last-use stamps (batched, off the hot path)."""

    # -- federations ----------------------------------------------------------------------------

    async def add_federation(self, federation: Federation) -> None:
        """Insert a federation; FederationExistsError if the name is taken."""

    async def remove_federation(self, name: str) -> bool:
        """Delete a federation (its clients stay, and fail to authenticate); False if none."""

    async def list_federations(self) -> list[Federation]: ...

    # -- external trust anchors -------------------------------------------------------------------

    async def add_trust_anchor(self, anchor: TrustAnchor) -> None:
        """Insert an anchor; TrustAnchorExistsError if the name is taken. Bumps the change
        marker, so running servers rebuild their TLS contexts. Forgets any SPIFFE bundle stored
        under the name (a fetch for a removed anchor of that name may have left one), in the
        same transaction: a new anchor never starts from another's bundle or sequence."""

    async def remove_trust_anchor(self, name: str) -> bool:
        """Delete an anchor; False when there was none."""

    async def list_trust_anchors(self) -> list[TrustAnchor]: ...

    async def save_spiffe_bundle(
        self, anchor: str, sequence: int | None, document: str, refreshed_at: float
    ) -> StoredBundle:
        """Make this the anchor's bundle unless the one stored has a higher sequence, or has
        one and this has none (a sequence never goes back, §4.1.1, across workers and
        restarts); atomic. Returns the
        bundle in force afterwards. Does not bump the change marker."""

    async def spiffe_bundles(self) -> dict[str, StoredBundle]:
        """The stored bundles by anchor name."""

    # -- tokens and assertions -----------------------------------------------------------------

    async def revoke_token(self, jti: str, client_id: str, exp: float) -> None:
        """RFC 7009: remember a revoked access token until it would have expired anyway."""

    async def is_token_revoked(self, jti: str) -> bool: ...

    async def revoked_tokens(self, now: float) -> list[tuple[str, str, float, float]]:
        """(jti, client_id, exp, revoked_at) of every revocation entry not expired by ``now``:
        token ids, and :func:`client_revocation_id` entries (every token of a client issued up
        to ``revoked_at``)."""

    async def revoke_client(self, client_id: str, until: float) -> None:
        """Revoke every token ``client_id`` holds now (a removed client); remembered until
        ``until``, when the last of them has expired."""

    async def use_assertion_id(self, client_id: str, jti: str, exp: float) -> bool:
        """RFC 7523 §3: True the first time (client_id, jti) is seen, False on any replay."""

    # -- throttling (D7) ------------------------------------------------------------------------

    async def record_auth_failure(
        self, client_id: str, source: str, *, window: float, limit: int, block: float
    ) -> float | None:
        """Count a failure; returns the time the pair is blocked until once over ``limit``."""

    async def clear_auth_failures(self, client_id: str, source: str) -> None: ...

    async def blocked(self, now: float) -> dict[tuple[str, str], float]:
        """Every (client_id, source) blocked now, with the time the block ends."""

    async def purge(self, now: float, *, failure_window: float = 3600.0) -> None:
        """Drop what can no longer matter: expired assertion ids, revocations, and failure
        counters whose window (``failure_window`` seconds) and block have ended."""


def client_from_row(
    row: Mapping[str, Any],
    secrets: Sequence[SecretEntry],
    certificates: Sequence[RegisteredCert],
) -> Client:
    """A Client from the ``clients`` columns both stores share (JSON lists as text)."""
    if row["auth_method"] not in AUTH_METHODS:
        raise StoreError(f"client {row['client_id']!r} has an unknown auth method")
    kind = row["name_kind"]
    return Client(
        client_id=row["client_id"],
        auth_method=row["auth_method"],
        bound_tokens=bool(row["bound_tokens"]),
        scopes=tuple(json.loads(row["scopes"])),
        audiences=tuple(json.loads(row["audiences"])),
        grant_types=tuple(json.loads(row["grant_types"])),
        tls_name=CertificateName.parse(kind, row["name_value"]) if kind else None,
        certificates=tuple(certificates),
        secrets=tuple(secrets),
        created_at=row["created_at"],
        jwks=json.loads(row["jwks"]) if row["jwks"] else None,
        jwks_uri=row["jwks_uri"],
        federation=row["federation"],
        federated_subject=row["federated_subject"],
        trust=row["trust"],
        spiffe_id=row["spiffe_id"],
    )


def client_row(client: Client) -> tuple[Any, ...]:
    """The ``clients`` columns of a client, in table order (the inverse of client_from_row)."""
    name = client.tls_name
    return (
        client.client_id,
        client.auth_method,
        client.bound_tokens,
        json.dumps(list(client.scopes)),
        json.dumps(list(client.audiences)),
        json.dumps(list(client.grant_types)),
        name.kind if name else None,
        name.value if name else None,
        client.created_at or time.time(),
        json.dumps(client.jwks) if client.jwks is not None else None,
        client.jwks_uri,
        client.federation,
        client.federated_subject,
        client.trust,
        client.spiffe_id,
    )


def federation_from_row(row: Mapping[str, Any]) -> Federation:
    """A Federation from the ``federations`` columns both stores share."""
    return Federation(
        name=row["name"],
        issuer=row["issuer"],
        jwks_uri=row["jwks_uri"],
        jwks=json.loads(row["jwks"]) if row["jwks"] else None,
        audience=row["audience"],
        created_at=row["created_at"],
    )


def federation_row(federation: Federation) -> tuple[Any, ...]:
    """The ``federations`` columns, in table order (the inverse of federation_from_row)."""
    return (
        federation.name,
        federation.issuer,
        federation.jwks_uri,
        json.dumps(federation.jwks) if federation.jwks is not None else None,
        federation.audience,
        federation.created_at or time.time(),
    )


def anchor_row(anchor: TrustAnchor) -> tuple[Any, ...]:
    """The ``trust_anchors`` columns of an anchor, in table order."""
    return (
        anchor.name,
        anchor.bundle.decode("ascii"),
        json.dumps(anchor.policy()),
        anchor.created_at or time.time(),
    )


def anchor_from_row(row: Mapping[str, Any]) -> TrustAnchor:
    """An anchor from its stored columns; a row that no longer validates is a StoreError."""
    try:
        return TrustAnchor.from_stored(
            row["name"], row["bundle"].encode("ascii"), json.loads(row["policy"]), row["created_at"]
        )
    except ValueError as exc:
        raise StoreError(f"trust anchor {row['name']!r} is unreadable: {exc}") from exc
