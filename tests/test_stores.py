"""The Store protocol: one behaviour suite for SQLite and PostgreSQL (the real server), schema
versioning, several service instances on one PostgreSQL, and a database outage."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import unused_port

from mtlsauth.issuer.model import Client, SecretEntry
from mtlsauth.issuer.registration import register
from mtlsauth.issuer.settings import Secret
from mtlsauth.issuer.store import ClientExistsError, SchemaError, Store, open_store
from mtlsauth.issuer.store.postgres import SCHEMA_VERSION, PostgresStore
from mtlsauth.issuer.store.sqlite import SQLiteStore
from tests.conftest import Home, cli_json, eventually, running
from tests.pgcluster import PrivateCluster, private_cluster


def a_client(client_id: str = "c1") -> tuple[Client, str]:
    new = register(auth_method="client_secret_basic", secret_key=b"k" * 32, client_id=client_id,
                   scope="read write", audiences=["https://api.example"])  # fmt: skip
    assert new.client_secret is not None
    return new.client, new.client_secret


async def test_clients(store: Store) -> None:
    client, _ = a_client()
    marker = await store.change_marker()
    await store.add_client(client)
    assert await store.change_marker() != marker
    with pytest.raises(ClientExistsError):
        await store.add_client(client)
    loaded = await store.get_client("c1")
    assert loaded is not None
    assert (loaded.client_id, loaded.scopes, loaded.audiences) == (
        "c1", ("read", "write"), ("https://api.example",)
    )  # fmt: skip
    assert [s.hash for s in loaded.secrets] == [s.hash for s in client.secrets]
    assert [c.client_id for c in await store.list_clients()] == ["c1"]
    # Last-use stamps do not count as changes (no reload storm on every token).
    marker = await store.change_marker()
    await store.touch_secrets([("c1", client.secrets[0].hash, time.time())])
    assert await store.change_marker() == marker
    again = await store.get_client("c1")
    assert again is not None
    assert again.secrets[0].last_used_at is not None
    assert await store.remove_client("c1") is True
    assert await store.remove_client("c1") is False
    assert await store.get_client("c1") is None


async def test_secret_rotation(store: Store) -> None:
    client, _ = a_client()
    await store.add_client(client)
    new = SecretEntry(hash="new-hash", created_at=time.time())
    assert await store.rotate_secret("c1", new, grace=30) is True
    assert await store.rotate_secret("nobody", new, grace=30) is False
    loaded = await store.get_client("c1")
    assert loaded is not None
    old, fresh = loaded.secrets
    assert fresh.hash == "new-hash"
    assert fresh.expires_at is None
    assert old.expires_at is not None
    assert 25 < old.expires_at - time.time() <= 30


async def test_revocations_and_assertions(store: Store) -> None:
    await store.revoke_token("jti-1", "c1", time.time() + 60)
    await store.revoke_token("jti-1", "c1", time.time() + 60)  # idempotent
    assert await store.is_token_revoked("jti-1") is True
    assert await store.is_token_revoked("jti-2") is False
    assert await store.use_assertion_id("c1", "a", time.time() + 60) is True
    assert await store.use_assertion_id("c1", "a", time.time() + 60) is False
    assert await store.use_assertion_id("c2", "a", time.time() + 60) is True  # per client
    results = await asyncio.gather(
        *(store.use_assertion_id("c1", "race", time.time() + 60) for _ in range(20))
    )
    assert sorted(results) == [False] * 19 + [True]
    await store.use_assertion_id("c1", "old", time.time() - 120)
    await store.purge(time.time())
    assert await store.use_assertion_id("c1", "old", time.time() + 60) is True  # purged
    assert await store.use_assertion_id("c1", "a", time.time() + 60) is False  # kept


async def test_throttling_counters(store: Store) -> None:
    async def fail(source: str) -> float | None:
        return await store.record_auth_failure("c1", source, window=60.0, limit=3, block=30.0)

    assert await fail("10.0.0.1") is None
    assert await fail("10.0.0.1") is None
    until = await fail("10.0.0.1")
    assert until is not None
    assert 25 < until - time.time() <= 30
    assert await fail("10.0.0.2") is None  # another source
    blocked = await store.blocked(time.time())
    assert set(blocked) == {("c1", "10.0.0.1")}
    await store.clear_auth_failures("c1", "10.0.0.1")  # a block is not lifted by a success
    assert set(await store.blocked(time.time())) == {("c1", "10.0.0.1")}
    assert await store.blocked(time.time() + 31) == {}


async def test_migrate_is_idempotent(store_url: str) -> None:
    s = open_store(store_url)
    try:
        first = await s.migrate()
        second = await s.migrate()
    finally:
        await s.close()
    assert first[1] == second[1] == SCHEMA_VERSION
    assert second[0] == SCHEMA_VERSION


async def test_postgres_schema_checked_at_start(pg_url: str) -> None:
    s = PostgresStore(pg_url)
    with pytest.raises(SchemaError, match="run 'mtlsauth migrate'"):
        await s.open()
    await s.migrate()
    await s.close()
    conn = await asyncpg.connect(pg_url)
    await conn.execute("INSERT INTO schema_version VALUES (99)")
    await conn.close()
    with pytest.raises(SchemaError, match="newer than this mtlsauth"):
        await PostgresStore(pg_url).open()


async def test_sqlite_newer_schema_refused(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "db")
    await s.open()
    await s.close()
    import sqlite3

    conn = sqlite3.connect(tmp_path / "db")
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="newer"):
        await SQLiteStore(tmp_path / "db").open()


# --- several instances on one PostgreSQL -------------------------------------------------------


def use_postgres(home: Home, url: str) -> None:
    """Point a home at PostgreSQL and create the schema, as an operator would."""
    config = home.path / "mtlsauth.toml"
    config.write_text(config.read_text() + f'database_url = "{url}"\n')
    out = cli_json(["migrate", "--home", str(home.path)])
    assert out["version"] == SCHEMA_VERSION


async def test_two_instances_share_everything(home: Home, pg_url: str) -> None:
    await asyncio.to_thread(use_postgres, home, pg_url)
    cert = home.issue("svc", dns=["svc"])
    other = dataclasses.replace(home.settings, port=unused_port())
    async with running(home) as first, running(home, other) as second:
        # A client added with the CLI is accepted by both, quickly (LISTEN/NOTIFY).
        started = time.monotonic()
        await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                               "--san-dns", "svc")  # fmt: skip

        async def accepted(service: object) -> bool:
            status, _ = await service.token(cert, client_id="svc")  # type: ignore[attr-defined]
            return bool(status == 200)

        await eventually(lambda: accepted(first), within=2.0)
        await eventually(lambda: accepted(second), within=2.0)
        assert time.monotonic() - started < 2.0

        # A revocation on one is seen by the other.
        sec = await home.aadd_client("--auth-method", "client_secret_post", "--client-id", "s")
        form = {"client_id": "s", "client_secret": sec["client_secret"]}
        await eventually(lambda: _ok(first, form), within=2.0)
        status, body = await first.token(**form)
        token = body["access_token"]
        status, _, _ = await first.post("/revoke", data={"token": token, **form})
        assert status == 200
        status, _, info = await second.post("/introspect", data={"token": token, **form})
        assert (status, info) == (200, {"active": False})


async def _ok(service: object, form: dict[str, str]) -> bool:
    status, _ = await service.token(**form)  # type: ignore[attr-defined]
    return bool(status == 200)


async def test_assertion_replay_across_instances_on_postgres(home: Home, pg_url: str) -> None:
    import json

    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    from mtlsauth.issuer.clientauth import ASSERTION_TYPE

    await asyncio.to_thread(use_postgres, home, pg_url)
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())) | {"kid": "k"}
    (home.path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    await home.aadd_client("--auth-method", "private_key_jwt", "--client-id", "pk",
                           "--jwks", str(home.path / "jwks.json"))  # fmt: skip
    now = int(time.time())
    claims = {"iss": "pk", "sub": "pk", "aud": home.settings.issuer, "exp": now + 60,
              "jti": secrets.token_hex(8)}  # fmt: skip
    assertion = jwt.encode(claims, key, "ES256", {"kid": "k"})
    form = {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    other = dataclasses.replace(home.settings, port=unused_port())
    async with running(home) as first, running(home, other) as second:
        results = await asyncio.gather(first.token(None, **form), second.token(None, **form))
    assert sorted(status for status, _ in results) == [200, 401]


# --- an outage --------------------------------------------------------------------------------


class CuttableProxy:
    """A TCP proxy to PostgreSQL that a test can cut and restore: a database outage."""

    def __init__(self, target_port: int = 5432) -> None:
        self.port = unused_port()
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        if self._server is not None and self._server.is_serving():
            await self.cut()


async def test_database_outage_gives_503_and_recovers(home: Home, pg_url: str) -> None:
    await asyncio.to_thread(use_postgres, home, pg_url)
    cert = home.issue("svc", dns=["svc"])
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--san-dns", "svc")  # fmt: skip
    proxy = CuttableProxy()
    await proxy.start()
    proxied = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    settings = dataclasses.replace(home.settings, database_url=Secret(proxied))
    async with running(home, settings) as service:
        status, body = await service.token(cert, client_id="svc")
        assert status == 200
        token = body["access_token"]
        assert (await service.get("/health"))[0] == 200

        await proxy.cut()

        async def load(n: int) -> list[int]:
            statuses = []
            for _ in range(n):
                status, _, _ = await service.post(
                    "/introspect", data={"token": token, "client_id": "svc"}, cert=cert
                )
                statuses.append(status)
            return statuses

        started = time.monotonic()
        during = [s for batch in await asyncio.gather(*(load(5) for _ in range(4))) for s in batch]
        assert time.monotonic() - started < 30, "requests hung during the outage"
        assert set(during) <= {503, 401}, during
        assert 503 in during
        status, body = await service.get("/health")
        assert (status, body["status"]) == (503, "unavailable")
        # Tokens for mTLS clients still come from the in-memory client cache.
        status, _ = await service.token(cert, client_id="svc")
        assert status == 200

        await proxy.start()  # the database is back

        async def healthy() -> bool:
            return (await service.get("/health"))[0] == 200

        await eventually(healthy, within=15.0)
        status, body = await service.token(cert, client_id="svc")
        assert status == 200
    await proxy.close()


# --- a real database stopped and restarted -----------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as c:
        yield c


async def test_listen_survives_a_database_restart(cluster: PrivateCluster) -> None:
    """After PostgreSQL restarts, NOTIFY wakes the process again (not only the counter poll)."""
    store = open_store(cluster.url)
    await store.migrate()
    await store.close()
    watcher, writer = open_store(cluster.url), open_store(cluster.url)
    await watcher.open()
    try:
        await asyncio.to_thread(cluster.stop, "fast")
        await watcher.wait_for_change(0.2)  # notices the lost LISTEN; cannot reconnect yet
        await asyncio.to_thread(cluster.start)
        # Re-LISTEN happens within the retry interval; wait_for_change(5) then returns early
        # only if a NOTIFY arrives — polling alone would take the whole five seconds.
        started = time.monotonic()
        while time.monotonic() - started < 10:
            await watcher.wait_for_change(0.2)
        await writer.open()
        client, _ = a_client("after-restart")
        notified_at = time.monotonic()
        waiting = asyncio.create_task(watcher.wait_for_change(5.0))
        await asyncio.sleep(0.1)
        await writer.add_client(client)
        await waiting
        assert time.monotonic() - notified_at < 2.0
    finally:
        await watcher.close()
        await writer.close()


async def test_database_stopped_and_restarted_under_load(
    home: Home, cluster: PrivateCluster
) -> None:
    """``pg_ctl stop -m fast`` under load: only 200/503 answers, none hangs, health turns red,
    and service resumes by itself once the database is back."""
    await asyncio.to_thread(use_postgres, home, cluster.url)
    cert = home.issue("svc", dns=["svc"])
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--san-dns", "svc")  # fmt: skip
    secret = (await home.aadd_client("--auth-method", "client_secret_post", "--client-id", "sp"))[
        "client_secret"
    ]
    async with running(home) as service:
        status, body = await service.token(cert, client_id="svc")
        assert status == 200
        token = body["access_token"]
        statuses: list[tuple[str, int]] = []
        slowest = 0.0
        phase = "before"
        stop = asyncio.Event()

        async def worker(kind: str) -> None:
            nonlocal slowest
            while not stop.is_set():
                started = time.monotonic()
                if kind == "mtls":
                    status, _ = await service.token(cert, client_id="svc")
                elif kind == "secret":
                    status, _ = await service.token(client_id="sp", client_secret=secret)
                else:
                    status, _, _ = await service.post(
                        "/introspect", data={"token": token, "client_id": "svc"}, cert=cert
                    )
                slowest = max(slowest, time.monotonic() - started)
                statuses.append((phase, status))

        workers = [asyncio.create_task(worker(k)) for k in ("mtls", "secret", "introspect") * 2]
        await asyncio.sleep(1.0)
        phase = "outage"
        await asyncio.to_thread(cluster.stop, "fast")
        await asyncio.sleep(3.0)
        status, body = await service.get("/health")
        assert (status, body["status"]) == (503, "unavailable")
        await asyncio.to_thread(cluster.start)
        phase = "recovering"

        async def healthy() -> bool:
            return (await service.get("/health"))[0] == 200

        await eventually(healthy, within=15.0)
        phase = "after"
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.gather(*workers)  # a worker that raised (no answer at all) fails here

    by_phase: dict[str, set[int]] = {}
    for name, status in statuses:
        by_phase.setdefault(name, set()).add(status)
    assert by_phase["before"] == {200}, by_phase
    assert by_phase["outage"] <= {200, 503}, by_phase
    assert 503 in by_phase["outage"], by_phase  # introspection needs the revocation list
    assert 200 in by_phase["outage"], by_phase  # cached clients keep getting tokens
    assert by_phase["after"] == {200}, by_phase
    assert by_phase.get("recovering", set()) <= {200, 503}, by_phase
    assert slowest < 12.0, f"a request took {slowest:.1f} s"
