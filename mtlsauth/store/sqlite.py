"""The embedded SQLite store (WAL mode), run on one dedicated thread.

A change counter bumped by triggers lets every process notice client changes with one cheap
query, whoever made them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

from mtlsauth.clients import AUTH_METHODS, Client, RegisteredCert, SecretEntry
from mtlsauth.dn import CertificateName
from mtlsauth.store.base import ClientExistsError, StoreError

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

SCHEMA_VERSION: Final = 1
T = TypeVar("T")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS clients (
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
CREATE TABLE IF NOT EXISTS client_secrets (
    client_id    TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    hash         TEXT NOT NULL,
    created_at   REAL NOT NULL,
    expires_at   REAL,
    PRIMARY KEY (client_id, hash)
);
CREATE TABLE IF NOT EXISTS client_certificates (
    client_id    TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    thumbprint   TEXT NOT NULL,
    der          BLOB NOT NULL,
    PRIMARY KEY (client_id, thumbprint)
);
CREATE TABLE IF NOT EXISTS change_counter (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER);
INSERT OR IGNORE INTO change_counter (id, n) VALUES (1, 0);
"""
_TRIGGERS: Final = [
    f"CREATE TRIGGER IF NOT EXISTS bump_{table}_{op} AFTER {op} ON {table} "  # noqa: S608
    f"BEGIN UPDATE change_counter SET n = n + 1 WHERE id = 1; END;"
    for table in ("clients", "client_secrets", "client_certificates")
    for op in ("INSERT", "UPDATE", "DELETE")
]


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
                conn.executescript("BEGIN;" + _SCHEMA + "".join(_TRIGGERS) + "COMMIT;")
                row = conn.execute("SELECT version FROM schema_version").fetchone()
                if row is None:
                    conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                elif row[0] != SCHEMA_VERSION:
                    raise StoreError(
                        f"database schema version {row[0]} is not the supported "
                        f"{SCHEMA_VERSION}: {self.path}"
                    )
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the database {self.path}: {exc}") from exc
            return conn

        self._conn = await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    async def add_client(self, client: Client) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            name = client.tls_name
            try:
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(
                        "INSERT INTO clients VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            client.client_id,
                            client.auth_method,
                            int(client.bound_tokens),
                            json.dumps(list(client.scopes)),
                            json.dumps(list(client.audiences)),
                            json.dumps(list(client.grant_types)),
                            name.kind if name else None,
                            name.value if name else None,
                            client.created_at or time.time(),
                        ),
                    )
                    conn.executemany(
                        "INSERT INTO client_secrets VALUES (?, ?, ?, ?)",
                        [
                            (client.client_id, s.hash, time.time(), s.expires_at)
                            for s in client.secrets
                        ],
                    )
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

    async def change_marker(self) -> object:
        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT n FROM change_counter WHERE id = 1").fetchone()
            return int(row[0])

        return await self._run(read)


def _load_clients(conn: sqlite3.Connection) -> list[Client]:
    # One read transaction so a concurrent writer cannot tear a client from its secrets.
    with conn:
        conn.execute("BEGIN")
        rows = conn.execute("SELECT * FROM clients ORDER BY client_id").fetchall()
        secrets: dict[str, list[SecretEntry]] = {}
        for cid, hash_, expires_at in conn.execute(
            "SELECT client_id, hash, expires_at FROM client_secrets"
        ):
            secrets.setdefault(cid, []).append(SecretEntry(hash=hash_, expires_at=expires_at))
        certs: dict[str, list[RegisteredCert]] = {}
        for cid, der in conn.execute("SELECT client_id, der FROM client_certificates"):
            certs.setdefault(cid, []).append(RegisteredCert.from_der(der))
    clients = []
    for cid, method, bound, scopes, audiences, grants, kind, value, created in rows:
        if method not in AUTH_METHODS:
            raise StoreError(f"client {cid!r} has an unknown auth method {method!r}")
        clients.append(
            Client(
                client_id=cid,
                auth_method=method,
                bound_tokens=bool(bound),
                scopes=tuple(json.loads(scopes)),
                audiences=tuple(json.loads(audiences)),
                grant_types=tuple(json.loads(grants)),
                tls_name=CertificateName.parse(kind, value) if kind else None,
                certificates=tuple(certs.get(cid, ())),
                secrets=tuple(secrets.get(cid, ())),
                created_at=created,
            )
        )
    return clients
