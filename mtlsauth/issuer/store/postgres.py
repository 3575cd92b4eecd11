"""The PostgreSQL store (asyncpg), for many workers and hosts sharing one database.

* Schema: numbered :data:`MIGRATIONS`, applied by ``mtlsauth migrate`` under an advisory lock;
  a server refuses to start on a schema older or newer than it understands.
* Changes: triggers bump a counter and ``NOTIFY mtlsauth_changes``; every process LISTENs and
  wakes its refresh at once (the counter is the fallback when a notification is missed).
* Uniqueness (assertion ids, revocations) and counters (throttling) are the database's own:
  ``INSERT ... ON CONFLICT``, never read-then-write.
* Outages: every failure to reach the database becomes :class:`StoreUnavailable`; the pool
  reconnects by itself when the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, TypeVar

import asyncpg

from mtlsauth.issuer.model import Client, Federation, RegisteredCert, SecretEntry
from mtlsauth.issuer.store.base import (
    ClientExistsError,
    FederationExistsError,
    SchemaError,
    StoredBundle,
    StoreError,
    StoreUnavailable,
    TrustAnchorExistsError,
    anchor_from_row,
    anchor_row,
    client_from_row,
    client_revocation_id,
    client_row,
    federation_from_row,
    federation_row,
)
from mtlsauth.issuer.trust.anchors import TrustAnchor

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresStore"]

log = logging.getLogger(__name__)
T = TypeVar("T")
CHANNEL: Final = "mtlsauth_changes"
_LOCK_ID: Final = 0x6D746C73  # "mtls": serialises concurrent migrators

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: clients, secrets, certificates, the change counter and its notification.
    f"""
    CREATE TABLE clients (
        client_id    TEXT PRIMARY KEY,
        auth_method  TEXT NOT NULL,
        bound_tokens BOOLEAN NOT NULL,
        scopes       TEXT NOT NULL,
        audiences    TEXT NOT NULL,
        grant_types  TEXT NOT NULL,
        name_kind    TEXT,
        name_value   TEXT,
        created_at   DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE client_secrets (
        client_id    TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
        hash         TEXT NOT NULL,
        created_at   DOUBLE PRECISION NOT NULL,
        expires_at   DOUBLE PRECISION,
        PRIMARY KEY (client_id, hash)
    );
    CREATE TABLE client_certificates (
        client_id    TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
        thumbprint   TEXT NOT NULL,
        der          BYTEA NOT NULL,
        PRIMARY KEY (client_id, thumbprint)
    );
    CREATE TABLE change_counter (id INTEGER PRIMARY KEY CHECK (id = 1), n BIGINT NOT NULL);
    INSERT INTO change_counter VALUES (1, 0);
    CREATE FUNCTION mtlsauth_bump() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE change_counter SET n = n + 1 WHERE id = 1;
        PERFORM pg_notify('{CHANNEL}', '');
        RETURN NULL;
    END $$;
    CREATE TRIGGER bump_clients AFTER INSERT OR UPDATE OR DELETE ON clients
        FOR EACH STATEMENT EXECUTE FUNCTION mtlsauth_bump();
    CREATE TRIGGER bump_certificates AFTER INSERT OR UPDATE OR DELETE ON client_certificates
        FOR EACH STATEMENT EXECUTE FUNCTION mtlsauth_bump();
    CREATE TRIGGER bump_secrets AFTER INSERT OR DELETE ON client_secrets
        FOR EACH STATEMENT EXECUTE FUNCTION mtlsauth_bump();
    CREATE TRIGGER bump_secrets_update AFTER UPDATE OF hash, expires_at ON client_secrets
        FOR EACH STATEMENT EXECUTE FUNCTION mtlsauth_bump();
    """,
    # 2: assertion keys, sealed and last-used secrets, revocations, replay cache, throttling.
    """
    ALTER TABLE clients ADD COLUMN jwks TEXT;
    ALTER TABLE clients ADD COLUMN jwks_uri TEXT;
    ALTER TABLE client_secrets ADD COLUMN sealed TEXT;
    ALTER TABLE client_secrets ADD COLUMN last_used_at DOUBLE PRECISION;
    DROP TRIGGER bump_secrets_update ON client_secrets;
    CREATE TRIGGER bump_secrets_update AFTER UPDATE OF hash, expires_at, sealed ON client_secrets
        FOR EACH STATEMENT EXECUTE FUNCTION mtlsauth_bump();
    CREATE TABLE revoked_tokens (
        jti        TEXT PRIMARY KEY,
        client_id  TEXT NOT NULL,
        exp        DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE assertion_ids (
        client_id  TEXT NOT NULL,
        jti        TEXT NOT NULL,
        exp        DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (client_id, jti)
    );
    CREATE TABLE auth_failures (
        client_id     TEXT NOT NULL,
        source        TEXT NOT NULL,
        window_start  DOUBLE PRECISION NOT NULL,
        failures      INTEGER NOT NULL,
        blocked_until DOUBLE PRECISION,
        PRIMARY KEY (client_id, source)
    );
    CREATE INDEX auth_failures_blocked ON auth_failures (blocked_until);
    """,
    # 3: federations (external token issuers) and the clients they authenticate.
    """
    CREATE TABLE federations (
        name       TEXT PRIMARY KEY,
        issuer     TEXT NOT NULL,
        jwks_uri   TEXT,
        jwks       TEXT,
        audience   TEXT,
        created_at DOUBLE PRECISION NOT NULL
    );
    ALTER TABLE clients ADD COLUMN federation TEXT;
    ALTER TABLE clients ADD COLUMN federated_subject TEXT;
    CREATE TRIGGER bump_federations AFTER INSERT OR UPDATE OR DELETE ON federations
        FOR EACH STATEMENT EXECUTE FUNCTION mtlsauth_bump();
    """,
    # 4: external trust anchors (``trust add``) and the anchor a client's certificate must
    # chain to; anchors bump and NOTIFY so running servers rebuild their TLS contexts.
    """
    ALTER TABLE clients ADD COLUMN trust TEXT;
    ALTER TABLE clients ADD COLUMN spiffe_id TEXT;
    CREATE TABLE trust_anchors (
        name         TEXT PRIMARY KEY,
        bundle       TEXT NOT NULL,
        policy       TEXT NOT NULL,
        created_at   DOUBLE PRECISION NOT NULL
    );
    CREATE TRIGGER bump_trust_anchors AFTER INSERT OR UPDATE OR DELETE ON trust_anchors
        FOR EACH STATEMENT EXECUTE FUNCTION mtlsauth_bump();
    """,
    # 5: the SPIFFE bundle in force per anchor, so its sequence never goes back (across
    # workers, hosts and restarts). Refreshes do not bump or NOTIFY.
    """
    CREATE TABLE spiffe_bundles (
        anchor       TEXT PRIMARY KEY,
        sequence     BIGINT,
        document     TEXT NOT NULL,
        refreshed_at DOUBLE PRECISION NOT NULL
    );
    """,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

# What "the database cannot be reached" looks like through asyncpg.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.PostgresConnectionError,
    # A connection the server ended while idle in the pool can fail its next query with
    # "cannot switch to state ...; another operation is in progress" (seen with pg_ctl stop).
    asyncpg.exceptions.InternalClientError,
)


# How often a lost LISTEN connection is retried (seconds).
_RELISTEN_INTERVAL: Final = 2.0


class PostgresStore:
    """Store protocol over PostgreSQL."""

    def __init__(self, dsn: str, *, timeout: float = 5.0) -> None:
        self.dsn = dsn
        self._timeout = timeout
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self.changed = asyncio.Event()
        self._relisten_at = 0.0

    # -- connection --------------------------------------------------------------------------

    async def _connect_pool(self) -> asyncpg.Pool:
        try:
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=8,
                timeout=self._timeout,
                command_timeout=self._timeout,
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"PostgreSQL refused the connection: {exc}") from exc
        assert pool is not None
        return pool

    async def version(self) -> int:
        """The schema version of the database (0 when empty)."""

        async def read(conn: asyncpg.Connection) -> int:
            exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
            if not exists:
                return 0
            return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))

        return await self._run(read)

    async def open(self) -> None:
        """Connect and check the schema; ``mtlsauth migrate`` creates or upgrades it."""
        self._pool = await self._connect_pool()
        version = await self.version()
        if version != SCHEMA_VERSION:
            await self.close()
            if version > SCHEMA_VERSION:
                raise SchemaError(
                    f"the database has schema version {version}, newer than this mtlsauth "
                    f"understands ({SCHEMA_VERSION}): upgrade mtlsauth"
                )
            raise SchemaError(
                f"the database has schema version {version}, this mtlsauth needs "
                f"{SCHEMA_VERSION}: run 'mtlsauth migrate'"
            )
        await self._listen()

    async def _listen(self) -> None:
        try:
            self._listener = await asyncpg.connect(self.dsn, timeout=self._timeout)
            await self._listener.add_listener(CHANNEL, self._notified)
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            # Polling the change counter still works; LISTEN only makes it faster.
            log.warning("cannot LISTEN for changes (polling until it can): %s", exc)
            self._listener = None

    def _notified(self, *_: Any) -> None:
        self.changed.set()

    async def migrate(self) -> tuple[int, int]:
        """Apply every missing migration; returns (version before, version after)."""
        if self._pool is None:
            self._pool = await self._connect_pool()

        async def apply(conn: asyncpg.Connection) -> tuple[int, int]:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
                )
                before = int(
                    await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                )
                if before > SCHEMA_VERSION:
                    raise SchemaError(
                        f"the database has schema version {before}, newer than this mtlsauth "
                        f"({SCHEMA_VERSION})"
                    )
                for number in range(before, SCHEMA_VERSION):
                    await conn.execute(MIGRATIONS[number])
                    await conn.execute("INSERT INTO schema_version VALUES ($1)", number + 1)
            return before, SCHEMA_VERSION

        return await self._run(apply)

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                await asyncio.wait_for(listener.close(), self._timeout)
            except (*_UNAVAILABLE, asyncpg.PostgresError):
                listener.terminate()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self._timeout)
            except (*_UNAVAILABLE, asyncpg.PostgresError):
                pool.terminate()

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        pool = self._pool
        if pool is None:
            raise StoreError("the store is not open")
        try:
            async with pool.acquire(timeout=self._timeout) as conn:
                return await fn(conn)
        except asyncpg.UniqueViolationError:
            raise
        except (SchemaError, ClientExistsError, FederationExistsError, TrustAnchorExistsError):
            raise
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL is unavailable: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc

    async def wait_for_change(self, within: float) -> None:
        """Return when another process changed clients (NOTIFY), or after ``within`` seconds.

        A LISTEN connection lost to a database restart is re-established (at most every
        ``_RELISTEN_INTERVAL``); until then the caller's change-counter poll covers for it.
        """
        listener = self._listener
        if listener is None or listener.is_closed():
            self._listener = None
            now = asyncio.get_running_loop().time()
            if now >= self._relisten_at:
                self._relisten_at = now + _RELISTEN_INTERVAL
                await self._listen()
            await asyncio.sleep(within)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), within)
        self.changed.clear()

    # -- clients ------------------------------------------------------------------------------

    async def add_client(self, client: Client) -> None:
        async def insert(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                try:
                    await conn.execute(
                        "INSERT INTO clients (client_id, auth_method, bound_tokens, scopes,"
                        " audiences, grant_types, name_kind, name_value, created_at, jwks,"
                        " jwks_uri, federation, federated_subject, trust, spiffe_id)"
                        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,"
                        " $15)",
                        *client_row(client),
                    )
                except asyncpg.UniqueViolationError as exc:
                    raise ClientExistsError(f"client_id {client.client_id!r} is taken") from exc
                await _insert_secrets(conn, client.client_id, client.secrets)
                await conn.executemany(
                    "INSERT INTO client_certificates VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    [(client.client_id, c.thumbprint, c.der) for c in client.certificates],
                )

        await self._run(insert)

    async def remove_client(self, client_id: str) -> bool:
        async def delete(conn: asyncpg.Connection) -> bool:
            status = await conn.execute("DELETE FROM clients WHERE client_id = $1", client_id)
            return bool(status.endswith(" 1"))

        return await self._run(delete)

    async def get_client(self, client_id: str) -> Client | None:
        clients = await self._run(lambda conn: _load_clients(conn, client_id))
        return clients[0] if clients else None

    async def list_clients(self) -> list[Client]:
        return await self._run(lambda conn: _load_clients(conn, None))

    async def add_federation(self, federation: Federation) -> None:
        async def insert(conn: asyncpg.Connection) -> None:
            try:
                await conn.execute(
                    "INSERT INTO federations (name, issuer, jwks_uri, jwks, audience, created_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    *federation_row(federation),
                )
            except asyncpg.UniqueViolationError as exc:
                raise FederationExistsError(
                    f"federation {federation.name!r} already exists"
                ) from exc

        await self._run(insert)

    async def remove_federation(self, name: str) -> bool:
        async def delete(conn: asyncpg.Connection) -> bool:
            status = await conn.execute("DELETE FROM federations WHERE name = $1", name)
            return bool(status.endswith(" 1"))

        return await self._run(delete)

    async def list_federations(self) -> list[Federation]:
        async def read(conn: asyncpg.Connection) -> list[Federation]:
            rows = await conn.fetch(
                "SELECT name, issuer, jwks_uri, jwks, audience, created_at FROM federations"
                " ORDER BY name"
            )
            return [federation_from_row(r) for r in rows]

        return await self._run(read)

    async def change_marker(self) -> object:
        async def read(conn: asyncpg.Connection) -> int:
            return int(await conn.fetchval("SELECT n FROM change_counter WHERE id = 1"))

        return await self._run(read)

    async def rotate_secret(self, client_id: str, new: SecretEntry, grace: float) -> bool:
        async def rotate(conn: asyncpg.Connection) -> bool:
            now = time.time()
            async with conn.transaction():
                found = await conn.fetchval(
                    "SELECT 1 FROM clients WHERE client_id = $1 FOR UPDATE", client_id
                )
                if not found:
                    return False
                await conn.execute(
                    "UPDATE client_secrets SET expires_at = $1 WHERE client_id = $2"
                    " AND (expires_at IS NULL OR expires_at > $1)",
                    now + grace,
                    client_id,
                )
                await _insert_secrets(conn, client_id, (new,))
            return True

        return await self._run(rotate)

    async def touch_secrets(self, used: Iterable[tuple[str, str, float]]) -> None:
        rows = [(at, cid, h) for cid, h, at in used]
        if not rows:
            return

        async def touch(conn: asyncpg.Connection) -> None:
            await conn.executemany(
                "UPDATE client_secrets SET last_used_at = GREATEST(COALESCE(last_used_at, 0), $1)"
                " WHERE client_id = $2 AND hash = $3",
                rows,
            )

        await self._run(touch)

    # -- external trust anchors ---------------------------------------------------------------

    async def add_trust_anchor(self, anchor: TrustAnchor) -> None:
        async def insert(conn: asyncpg.Connection) -> None:
            try:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO trust_anchors VALUES ($1, $2, $3, $4)", *anchor_row(anchor)
                    )
                    # A bundle a fetch stored after the name's previous anchor was removed.
                    await conn.execute("DELETE FROM spiffe_bundles WHERE anchor = $1", anchor.name)
            except asyncpg.UniqueViolationError as exc:
                raise TrustAnchorExistsError(f"trust anchor {anchor.name!r} exists") from exc

        await self._run(insert)

    async def remove_trust_anchor(self, name: str) -> bool:
        async def delete(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                await conn.execute("DELETE FROM spiffe_bundles WHERE anchor = $1", name)
                status = await conn.execute("DELETE FROM trust_anchors WHERE name = $1", name)
            return bool(status.endswith(" 1"))

        return await self._run(delete)

    async def save_spiffe_bundle(
        self, anchor: str, sequence: int | None, document: str, refreshed_at: float
    ) -> StoredBundle:
        async def upsert(conn: asyncpg.Connection) -> StoredBundle:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO spiffe_bundles VALUES ($1, $2, $3, $4) ON CONFLICT (anchor)"
                    " DO UPDATE SET sequence = EXCLUDED.sequence, document = EXCLUDED.document,"
                    " refreshed_at = EXCLUDED.refreshed_at"
                    " WHERE spiffe_bundles.sequence IS NULL"
                    " OR EXCLUDED.sequence >= spiffe_bundles.sequence",
                    anchor, sequence, document, refreshed_at,
                )  # fmt: skip
                row = await conn.fetchrow(
                    "SELECT sequence, document, refreshed_at FROM spiffe_bundles WHERE anchor = $1",
                    anchor,
                )
            assert row is not None
            return StoredBundle(row["sequence"], row["document"], float(row["refreshed_at"]))

        return await self._run(upsert)

    async def spiffe_bundles(self) -> dict[str, StoredBundle]:
        async def read(conn: asyncpg.Connection) -> dict[str, StoredBundle]:
            rows = await conn.fetch(
                "SELECT anchor, sequence, document, refreshed_at FROM spiffe_bundles"
            )
            return {
                r["anchor"]: StoredBundle(r["sequence"], r["document"], float(r["refreshed_at"]))
                for r in rows
            }

        return await self._run(read)

    async def list_trust_anchors(self) -> list[TrustAnchor]:
        async def read(conn: asyncpg.Connection) -> list[TrustAnchor]:
            rows = await conn.fetch(
                "SELECT name, bundle, policy, created_at FROM trust_anchors ORDER BY name"
            )
            return [anchor_from_row(r) for r in rows]

        return await self._run(read)

    # -- tokens and assertions -----------------------------------------------------------------

    async def revoke_token(self, jti: str, client_id: str, exp: float) -> None:
        async def revoke(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO revoked_tokens VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                jti,
                client_id,
                exp,
                time.time(),
            )

        await self._run(revoke)

    async def is_token_revoked(self, jti: str) -> bool:
        async def read(conn: asyncpg.Connection) -> bool:
            return bool(await conn.fetchval("SELECT 1 FROM revoked_tokens WHERE jti = $1", jti))

        return await self._run(read)

    async def revoked_tokens(self, now: float) -> list[tuple[str, str, float, float]]:
        async def read(conn: asyncpg.Connection) -> list[tuple[str, str, float, float]]:
            rows = await conn.fetch(
                "SELECT jti, client_id, exp, revoked_at FROM revoked_tokens WHERE exp >= $1"
                " ORDER BY jti",
                now,
            )
            return [
                (str(r["jti"]), str(r["client_id"]), float(r["exp"]), float(r["revoked_at"]))
                for r in rows
            ]

        return await self._run(read)

    async def revoke_client(self, client_id: str, until: float) -> None:
        async def revoke(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO revoked_tokens VALUES ($1, $2, $3, $4) ON CONFLICT (jti) "
                "DO UPDATE SET exp = EXCLUDED.exp, revoked_at = EXCLUDED.revoked_at",
                client_revocation_id(client_id),
                client_id,
                until,
                time.time(),
            )

        await self._run(revoke)

    async def use_assertion_id(self, client_id: str, jti: str, exp: float) -> bool:
        async def use(conn: asyncpg.Connection) -> bool:
            # The primary key decides: of racing requests on any host exactly one inserts.
            status = await conn.execute(
                "INSERT INTO assertion_ids VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                client_id,
                jti,
                exp,
            )
            return bool(status == "INSERT 0 1")

        return await self._run(use)

    # -- throttling ---------------------------------------------------------------------------

    async def record_auth_failure(
        self, client_id: str, source: str, *, window: float, limit: int, block: float
    ) -> float | None:
        async def record(conn: asyncpg.Connection) -> float | None:
            now = time.time()
            until = await conn.fetchval(
                """
                INSERT INTO auth_failures AS f VALUES ($1, $2, $3::float8, 1,
                    CASE WHEN 1 >= $5::int THEN $3::float8 + $6::float8 END)
                ON CONFLICT (client_id, source) DO UPDATE SET
                    failures = CASE WHEN f.window_start < $3::float8 - $4::float8 THEN 1
                                    ELSE f.failures + 1 END,
                    window_start = CASE WHEN f.window_start < $3::float8 - $4::float8 THEN $3
                                        ELSE f.window_start END,
                    blocked_until = CASE
                        WHEN f.blocked_until > $3::float8 THEN f.blocked_until
                        WHEN (CASE WHEN f.window_start < $3::float8 - $4::float8 THEN 1
                                   ELSE f.failures + 1 END) >= $5::int THEN $3::float8 + $6::float8
                        ELSE f.blocked_until END
                RETURNING blocked_until
                """,
                client_id,
                source,
                now,
                window,
                limit,
                block,
            )
            return float(until) if until is not None and until > now else None

        return await self._run(record)

    async def clear_auth_failures(self, client_id: str, source: str) -> None:
        async def clear(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "DELETE FROM auth_failures WHERE client_id = $1 AND source = $2"
                " AND (blocked_until IS NULL OR blocked_until < $3)",
                client_id,
                source,
                time.time(),
            )

        await self._run(clear)

    async def blocked(self, now: float) -> dict[tuple[str, str], float]:
        async def read(conn: asyncpg.Connection) -> dict[tuple[str, str], float]:
            rows = await conn.fetch(
                "SELECT client_id, source, blocked_until FROM auth_failures"
                " WHERE blocked_until > $1",
                now,
            )
            return {(r["client_id"], r["source"]): float(r["blocked_until"]) for r in rows}

        return await self._run(read)

    async def purge(self, now: float, *, failure_window: float = 3600.0) -> None:
        async def purge(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute("DELETE FROM assertion_ids WHERE exp < $1", now - 60)
                await conn.execute("DELETE FROM revoked_tokens WHERE exp < $1", now - 60)
                await conn.execute(
                    "DELETE FROM auth_failures WHERE window_start < $1"
                    " AND (blocked_until IS NULL OR blocked_until < $2)",
                    now - failure_window,
                    now,
                )

        await self._run(purge)


async def _insert_secrets(
    conn: asyncpg.Connection, client_id: str, secrets: Iterable[SecretEntry]
) -> None:
    await conn.executemany(
        "INSERT INTO client_secrets (client_id, hash, created_at, expires_at, sealed)"
        " VALUES ($1, $2, $3, $4, $5)",
        [(client_id, s.hash, s.created_at or time.time(), s.expires_at, s.sealed) for s in secrets],
    )


async def _load_clients(conn: asyncpg.Connection, client_id: str | None) -> list[Client]:
    where = "WHERE client_id = $1" if client_id is not None else ""
    args = (client_id,) if client_id is not None else ()
    # One snapshot so a concurrent writer cannot tear a client from its secrets.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(
            "SELECT client_id, auth_method, bound_tokens, scopes, audiences, grant_types,"
            " name_kind, name_value, created_at, jwks, jwks_uri, federation, federated_subject,"
            " trust, spiffe_id"
            f" FROM clients {where}"
            " ORDER BY client_id",
            *args,
        )
        secret_rows = await conn.fetch(
            "SELECT client_id, hash, created_at, expires_at, sealed, last_used_at"
            f" FROM client_secrets {where} ORDER BY created_at",
            *args,
        )
        cert_rows = await conn.fetch(
            f"SELECT client_id, der FROM client_certificates {where}", *args
        )
    secrets: dict[str, list[SecretEntry]] = {}
    for r in secret_rows:
        secrets.setdefault(r["client_id"], []).append(
            SecretEntry(
                hash=r["hash"],
                expires_at=r["expires_at"],
                sealed=r["sealed"],
                created_at=r["created_at"],
                last_used_at=r["last_used_at"],
            )
        )
    certs: dict[str, list[RegisteredCert]] = {}
    for r in cert_rows:
        certs.setdefault(r["client_id"], []).append(RegisteredCert.from_der(bytes(r["der"])))
    return [
        client_from_row(r, secrets.get(r["client_id"], []), certs.get(r["client_id"], []))
        for r in rows
    ]
