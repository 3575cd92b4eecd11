"""The embedded SQLite store (WAL mode), run on one dedicated thread.

The schema is versioned: :data:`MIGRATIONS` are applied in order when the store opens (the
embedded default migrates itself), and a database newer than this code is refused. A change
counter bumped by triggers lets every process notice client changes with one cheap query,
whoever made them.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

from mtlsauth.issuer.model import Client, Federation, RegisteredCert, SecretEntry
from mtlsauth.issuer.store.base import (
    ClientExistsError,
    FederationExistsError,
    SchemaError,
    StoredBundle,
    StoreError,
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

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteStore"]

T = TypeVar("T")


def _bump(table: str, op: str, columns: str = "") -> str:
    of = f" OF {columns}" if columns else ""
    return (
        f"CREATE TRIGGER bump_{table}_{op} AFTER {op}{of} ON {table} "
        "BEGIN UPDATE change_counter SET n = n + 1 WHERE id = 1; END;"
    )


#: MIGRATIONS[i] takes the schema from version i to i + 1.
MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: clients, their secrets and certificates, the change counter.
    """
    CREATE TABLE clients (
        client_id    TEXT PRIMARY KEY,
        auth_method  TEXT NOT NULL,
        bound_tokens INTEGER NOT NULL,
        scopes       TEXT NOT NULL,
        audiences    TEXT NOT NULL,
        grant_types  TEXT NOT NULL,
        name_kind    TEXT,
        name_value   TEXT,
        created_at   REAL NOT NULL
    );
    CREATE TABLE client_secrets (
        client_id    TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
        hash         TEXT NOT NULL,
        created_at   REAL NOT NULL,
        expires_at   REAL,
        PRIMARY KEY (client_id, hash)
    );
    CREATE TABLE client_certificates (
        client_id    TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
        thumbprint   TEXT NOT NULL,
        der          BLOB NOT NULL,
        PRIMARY KEY (client_id, thumbprint)
    );
    CREATE TABLE change_counter (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER);
    INSERT INTO change_counter (id, n) VALUES (1, 0);
    """
    + "".join(
        _bump(t, op)
        for t in ("clients", "client_secrets", "client_certificates")
        for op in ("INSERT", "UPDATE", "DELETE")
    ),
    # 2: assertion keys, sealed and last-used secrets, revocations, replay cache, throttling.
    """
    ALTER TABLE clients ADD COLUMN jwks TEXT;
    ALTER TABLE clients ADD COLUMN jwks_uri TEXT;
    ALTER TABLE client_secrets ADD COLUMN sealed TEXT;
    ALTER TABLE client_secrets ADD COLUMN last_used_at REAL;
    DROP TRIGGER bump_client_secrets_UPDATE;
    CREATE TABLE revoked_tokens (
        jti        TEXT PRIMARY KEY,
        client_id  TEXT NOT NULL,
        exp        REAL NOT NULL,
        revoked_at REAL NOT NULL
    );
    CREATE TABLE assertion_ids (
        client_id  TEXT NOT NULL,
        jti        TEXT NOT NULL,
        exp        REAL NOT NULL,
        PRIMARY KEY (client_id, jti)
    );
    CREATE TABLE auth_failures (
        client_id     TEXT NOT NULL,
        source        TEXT NOT NULL,
        window_start  REAL NOT NULL,
        failures      INTEGER NOT NULL,
        blocked_until REAL,
        PRIMARY KEY (client_id, source)
    );
    CREATE INDEX auth_failures_blocked ON auth_failures (blocked_until);
    """
    # Last-use stamps must not make every process reload every client.
    + _bump("client_secrets", "UPDATE", "hash, expires_at, sealed"),
    # 3: federations (external token issuers) and the clients they authenticate.
    """
    CREATE TABLE federations (
        name       TEXT PRIMARY KEY,
        issuer     TEXT NOT NULL,
        jwks_uri   TEXT,
        jwks       TEXT,
        audience   TEXT,
        created_at REAL NOT NULL
    );
    ALTER TABLE clients ADD COLUMN federation TEXT;
    ALTER TABLE clients ADD COLUMN federated_subject TEXT;
    """
    + "".join(_bump("federations", op) for op in ("INSERT", "UPDATE", "DELETE")),
    # 4: external trust anchors (``trust add``) and the anchor a client's certificate must
    # chain to; anchors bump the change counter so running servers rebuild their TLS contexts.
    """
    ALTER TABLE clients ADD COLUMN trust TEXT;
    ALTER TABLE clients ADD COLUMN spiffe_id TEXT;
    CREATE TABLE trust_anchors (
        name         TEXT PRIMARY KEY,
        bundle       TEXT NOT NULL,
        policy       TEXT NOT NULL,
        created_at   REAL NOT NULL
    );
    """
    + "".join(_bump("trust_anchors", op) for op in ("INSERT", "UPDATE", "DELETE")),
    # 5: the SPIFFE bundle in force per anchor, so its sequence never goes back (across
    # workers and restarts). Refreshes do not bump the change counter.
    """
    CREATE TABLE spiffe_bundles (
        anchor       TEXT PRIMARY KEY,
        sequence     INTEGER,
        document     TEXT NOT NULL,
        refreshed_at REAL NOT NULL
    );
    """,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    version = int(row[0]) if row else 0
    if row is None:
        conn.execute("INSERT INTO schema_version VALUES (0)")
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the database {path} has schema version {version}, newer than this mtlsauth "
            f"understands ({SCHEMA_VERSION}): upgrade mtlsauth"
        )
    for number in range(version, SCHEMA_VERSION):
        conn.executescript(
            f"BEGIN IMMEDIATE; {MIGRATIONS[number]}; "
            f"UPDATE schema_version SET version = {number + 1}; COMMIT;"
        )


class SQLiteStore:
    """Store protocol over one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError("the store is not open")

        def call() -> T:
            try:
                return fn(conn)
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Secret hashes live here: readable by the owner only.
                os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
                conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=10
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA synchronous=NORMAL")
                _migrate(conn, self.path)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the database {self.path}: {exc}") from exc
            return conn

        self._conn = await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def migrate(self) -> tuple[int, int]:
        """SQLite migrates itself in :meth:`open`; this reports the version."""

        def read(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT version FROM schema_version").fetchone()[0])

        if self._conn is None:
            await self.open()
        version = await self._run(read)
        return version, version

    async def wait_for_change(self, within: float) -> None:
        await asyncio.sleep(within)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    # -- clients --------------------------------------------------------------------------------

    async def add_client(self, client: Client) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            try:
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(
                        "INSERT INTO clients (client_id, auth_method, bound_tokens, scopes,"
                        " audiences, grant_types, name_kind, name_value, created_at, jwks,"
                        " jwks_uri, federation, federated_subject, trust, spiffe_id)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        client_row(client),
                    )
                    _insert_secrets(conn, client.client_id, client.secrets)
                    conn.executemany(
                        "INSERT OR IGNORE INTO client_certificates VALUES (?, ?, ?)",
                        [(client.client_id, c.thumbprint, c.der) for c in client.certificates],
                    )
            except sqlite3.IntegrityError as exc:
                raise ClientExistsError(f"client_id {client.client_id!r} is taken") from exc

        await self._run(insert)

    async def remove_client(self, client_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                cur = conn.execute("DELETE FROM clients WHERE client_id = ?", (client_id,))
            return cur.rowcount > 0

        return await self._run(delete)

    async def get_client(self, client_id: str) -> Client | None:
        clients = await self._run(_load_clients)
        return next((c for c in clients if c.client_id == client_id), None)

    async def list_clients(self) -> list[Client]:
        return await self._run(_load_clients)

    async def add_federation(self, federation: Federation) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO federations (name, issuer, jwks_uri, jwks, audience, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    federation_row(federation),
                )
            except sqlite3.IntegrityError as exc:
                raise FederationExistsError(
                    f"federation {federation.name!r} already exists"
                ) from exc

        await self._run(insert)

    async def remove_federation(self, name: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM federations WHERE name = ?", (name,)).rowcount > 0

        return await self._run(delete)

    async def list_federations(self) -> list[Federation]:
        def read(conn: sqlite3.Connection) -> list[Federation]:
            cur = conn.execute(
                "SELECT name, issuer, jwks_uri, jwks, audience, created_at FROM federations"
                " ORDER BY name"
            )
            columns = [d[0] for d in cur.description]
            return [federation_from_row(dict(zip(columns, r, strict=True))) for r in cur]

        return await self._run(read)

    async def change_marker(self) -> object:
        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT n FROM change_counter WHERE id = 1").fetchone()
            return int(row[0])

        return await self._run(read)

    async def rotate_secret(self, client_id: str, new: SecretEntry, grace: float) -> bool:
        def rotate(conn: sqlite3.Connection) -> bool:
            now = time.time()
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                if not conn.execute(
                    "SELECT 1 FROM clients WHERE client_id = ?", (client_id,)
                ).fetchone():
                    return False
                conn.execute(
                    "UPDATE client_secrets SET expires_at = ? WHERE client_id = ?"
                    " AND (expires_at IS NULL OR expires_at > ?)",
                    (now + grace, client_id, now + grace),
                )
                _insert_secrets(conn, client_id, (new,))
            return True

        return await self._run(rotate)

    async def touch_secrets(self, used: Iterable[tuple[str, str, float]]) -> None:
        rows = [(at, cid, h) for cid, h, at in used]
        if not rows:
            return

        def touch(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "UPDATE client_secrets SET last_used_at = MAX(COALESCE(last_used_at, 0), ?)"
                    " WHERE client_id = ? AND hash = ?",
                    rows,
                )

        await self._run(touch)

    # -- external trust anchors ---------------------------------------------------------------

    async def add_trust_anchor(self, anchor: TrustAnchor) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            try:
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(
                        "INSERT INTO trust_anchors VALUES (?, ?, ?, ?)", anchor_row(anchor)
                    )
                    # A bundle a fetch stored after the name's previous anchor was removed.
                    conn.execute("DELETE FROM spiffe_bundles WHERE anchor = ?", (anchor.name,))
            except sqlite3.IntegrityError as exc:
                raise TrustAnchorExistsError(f"trust anchor {anchor.name!r} exists") from exc

        await self._run(insert)

    async def remove_trust_anchor(self, name: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            with conn:
                conn.execute("DELETE FROM spiffe_bundles WHERE anchor = ?", (name,))
                return (
                    conn.execute("DELETE FROM trust_anchors WHERE name = ?", (name,)).rowcount > 0
                )

        return await self._run(delete)

    async def save_spiffe_bundle(
        self, anchor: str, sequence: int | None, document: str, refreshed_at: float
    ) -> StoredBundle:
        def upsert(conn: sqlite3.Connection) -> StoredBundle:
            with conn:
                conn.execute(
                    "INSERT INTO spiffe_bundles VALUES (?, ?, ?, ?) ON CONFLICT (anchor) DO UPDATE"
                    " SET sequence = excluded.sequence, document = excluded.document,"
                    " refreshed_at = excluded.refreshed_at"
                    " WHERE spiffe_bundles.sequence IS NULL"
                    " OR excluded.sequence >= spiffe_bundles.sequence",
                    (anchor, sequence, document, refreshed_at),
                )
                row = conn.execute(
                    "SELECT sequence, document, refreshed_at FROM spiffe_bundles WHERE anchor = ?",
                    (anchor,),
                ).fetchone()
            return StoredBundle(row[0], row[1], float(row[2]))

        return await self._run(upsert)

    async def spiffe_bundles(self) -> dict[str, StoredBundle]:
        def read(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                "SELECT anchor, sequence, document, refreshed_at FROM spiffe_bundles"
            ).fetchall()

        return {r[0]: StoredBundle(r[1], r[2], float(r[3])) for r in await self._run(read)}

    async def list_trust_anchors(self) -> list[TrustAnchor]:
        def read(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                "SELECT name, bundle, policy, created_at FROM trust_anchors ORDER BY name"
            ).fetchall()

        rows = await self._run(read)
        columns = ("name", "bundle", "policy", "created_at")
        return [anchor_from_row(dict(zip(columns, row, strict=True))) for row in rows]

    # -- tokens and assertions ----------------------------------------------------------------

    async def revoke_token(self, jti: str, client_id: str, exp: float) -> None:
        def revoke(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO revoked_tokens VALUES (?, ?, ?, ?)",
                (jti, client_id, exp, time.time()),
            )

        await self._run(revoke)

    async def is_token_revoked(self, jti: str) -> bool:
        def read(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute("SELECT 1 FROM revoked_tokens WHERE jti = ?", (jti,)).fetchone()
                is not None
            )

        return await self._run(read)

    async def revoked_tokens(self, now: float) -> list[tuple[str, str, float, float]]:
        def read(conn: sqlite3.Connection) -> list[tuple[str, str, float, float]]:
            rows = conn.execute(
                "SELECT jti, client_id, exp, revoked_at FROM revoked_tokens WHERE exp >= ?"
                " ORDER BY jti",
                (now,),
            )
            return [(str(jti), str(cid), float(exp), float(at)) for jti, cid, exp, at in rows]

        return await self._run(read)

    async def revoke_client(self, client_id: str, until: float) -> None:
        def revoke(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute(
                    "INSERT OR REPLACE INTO revoked_tokens VALUES (?, ?, ?, ?)",
                    (client_revocation_id(client_id), client_id, until, time.time()),
                )

        await self._run(revoke)

    async def use_assertion_id(self, client_id: str, jti: str, exp: float) -> bool:
        def use(conn: sqlite3.Connection) -> bool:
            # The primary key decides: of two racing requests exactly one inserts.
            cur = conn.execute(
                "INSERT OR IGNORE INTO assertion_ids VALUES (?, ?, ?)", (client_id, jti, exp)
            )
            return cur.rowcount == 1

        return await self._run(use)

    # -- throttling ---------------------------------------------------------------------------

    async def record_auth_failure(
        self, client_id: str, source: str, *, window: float, limit: int, block: float
    ) -> float | None:
        def record(conn: sqlite3.Connection) -> float | None:
            now = time.time()
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT INTO auth_failures VALUES (?, ?, ?, 1, NULL)"
                    " ON CONFLICT (client_id, source) DO UPDATE SET"
                    "  failures = CASE WHEN window_start < ? THEN 1 ELSE failures + 1 END,"
                    "  window_start = CASE WHEN window_start < ? THEN ? ELSE window_start END",
                    (client_id, source, now, now - window, now - window, now),
                )
                conn.execute(
                    "UPDATE auth_failures SET blocked_until = ? WHERE client_id = ?"
                    " AND source = ? AND failures >= ?"
                    " AND (blocked_until IS NULL OR blocked_until < ?)",
                    (now + block, client_id, source, limit, now),
                )
                row = conn.execute(
                    "SELECT blocked_until FROM auth_failures WHERE client_id = ? AND source = ?",
                    (client_id, source),
                ).fetchone()
            until = row[0] if row else None
            return float(until) if until is not None and until > now else None

        return await self._run(record)

    async def clear_auth_failures(self, client_id: str, source: str) -> None:
        def clear(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM auth_failures WHERE client_id = ? AND source = ?"
                " AND (blocked_until IS NULL OR blocked_until < ?)",
                (client_id, source, time.time()),
            )

        await self._run(clear)

    async def blocked(self, now: float) -> dict[tuple[str, str], float]:
        def read(conn: sqlite3.Connection) -> dict[tuple[str, str], float]:
            rows = conn.execute(
                "SELECT client_id, source, blocked_until FROM auth_failures"
                " WHERE blocked_until > ?",
                (now,),
            ).fetchall()
            return {(cid, src): float(until) for cid, src, until in rows}

        return await self._run(read)

    async def purge(self, now: float, *, failure_window: float = 3600.0) -> None:
        def purge(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("DELETE FROM assertion_ids WHERE exp < ?", (now - 60,))
                conn.execute("DELETE FROM revoked_tokens WHERE exp < ?", (now - 60,))
                conn.execute(
                    "DELETE FROM auth_failures WHERE window_start < ?"
                    " AND (blocked_until IS NULL OR blocked_until < ?)",
                    (now - failure_window, now),
                )

        await self._run(purge)


def _insert_secrets(
    conn: sqlite3.Connection, client_id: str, secrets: Iterable[SecretEntry]
) -> None:
    conn.executemany(
        "INSERT INTO client_secrets (client_id, hash, created_at, expires_at, sealed)"
        " VALUES (?, ?, ?, ?, ?)",
        [(client_id, s.hash, s.created_at or time.time(), s.expires_at, s.sealed) for s in secrets],
    )


def _load_clients(conn: sqlite3.Connection) -> list[Client]:
    # One read transaction so a concurrent writer cannot tear a client from its secrets.
    with conn:
        conn.execute("BEGIN")
        rows = conn.execute(
            "SELECT client_id, auth_method, bound_tokens, scopes, audiences, grant_types,"
            " name_kind, name_value, created_at, jwks, jwks_uri, federation, federated_subject,"
            " trust, spiffe_id"
            " FROM clients ORDER BY client_id"
        ).fetchall()
        secrets: dict[str, list[SecretEntry]] = {}
        for cid, hash_, created, expires_at, sealed, last_used in conn.execute(
            "SELECT client_id, hash, created_at, expires_at, sealed, last_used_at"
            " FROM client_secrets ORDER BY created_at"
        ):
            secrets.setdefault(cid, []).append(
                SecretEntry(
                    hash=hash_,
                    expires_at=expires_at,
                    sealed=sealed,
                    created_at=created,
                    last_used_at=last_used,
                )
            )
        certs: dict[str, list[RegisteredCert]] = {}
        for cid, der in conn.execute("SELECT client_id, der FROM client_certificates"):
            certs.setdefault(cid, []).append(RegisteredCert.from_der(der))
    columns = ("client_id", "auth_method", "bound_tokens", "scopes", "audiences", "grant_types",
               "name_kind", "name_value", "created_at", "jwks", "jwks_uri", "federation",
               "federated_subject", "trust", "spiffe_id")  # fmt: skip
    return [
        client_from_row(
            dict(zip(columns, row, strict=True)), secrets.get(row[0], []), certs.get(row[0], [])
        )
        for row in rows
    ]
