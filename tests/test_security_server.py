"""Attacks on the listener itself, against a real ``mtlsauth serve`` process over real TLS.

Slow and oversized requests, the HTTP parser's own error answers, bodies that cannot be read,
a taken port, and who may read /metrics. Extra loopback addresses (127.0.0.2, ...) stand in
for different sources: Linux routes all of 127.0.0.0/8 to lo.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import unused_port

from tests.conftest import Home, client_context, serve_process

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

#: Short limits so the tests take seconds; the defaults are 10 s.
FAST = {"MTLSAUTH_REQUEST_HEADER_TIMEOUT": "2", "MTLSAUTH_REQUEST_BODY_TIMEOUT": "2"}


async def open_tls(
    home: Home, *, source: str = "127.0.0.1", port: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1",
        port or home.port,
        ssl=client_context(home),
        server_hostname="localhost",
        local_addr=(source, 0),
    )


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """True when the server ends the connection (EOF or reset) within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        pass
    return True


async def raw_exchange(home: Home, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes over TLS, read the answer until the server closes; parse it."""
    reader, writer = await open_tls(home)
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(10):
            data = await reader.read(-1)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return status, headers, body


def basic(client: dict[str, Any]) -> dict[str, str]:
    """RFC 6749 §2.3.1 (the generated ids and secrets need no form-encoding)."""
    pair = f"{client['client_id']}:{client['client_secret']}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


async def token_request(home: Home, client: dict[str, Any]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"https://127.0.0.1:{home.port}/token",
            data={"grant_type": "client_credentials"},
            headers=basic(client),
            ssl=client_context(home),
        ) as resp,
    ):
        await resp.read()
        return resp.status


@contextlib.asynccontextmanager
async def slow_flood(
    home: Home, count: int, sources: list[str]
) -> AsyncIterator[list[asyncio.StreamReader]]:
    """``count`` connections that trickle: half their headers, half their body."""
    readers: list[asyncio.StreamReader] = []
    writers: list[asyncio.StreamWriter] = []
    for i in range(count):
        reader, writer = await open_tls(home, source=sources[i % len(sources)])
        if i % 2:
            writer.write(b"POST /token HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        else:
            writer.write(
                b"POST /token HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 10000\r\n\r\ngrant_type="
            )
        readers.append(reader)
        writers.append(writer)

    async def trickle() -> None:
        for _ in range(40):  # bounded: at most 20 s of trickling
            for writer in writers:
                if not writer.is_closing():
                    writer.write(b"a")
            await asyncio.sleep(0.5)

    task = asyncio.create_task(trickle())
    try:
        yield readers
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for writer in writers:
            writer.transport.abort()


# --- 1. slow and fat requests ---------------------------------------------------------------


async def test_slow_connections_do_not_starve_a_legitimate_client(home: Home) -> None:
    client = await home.aadd_client("--auth-method", "client_secret_basic")
    sources = [f"127.0.0.{i}" for i in range(2, 7)]  # 5 sources, 50 connections each
    with serve_process(home, **FAST) as server:
        async with slow_flood(home, 250, sources) as readers:
            started = time.monotonic()
            assert await token_request(home, client) == 200
            assert time.monotonic() - started < 2.0
            closed = await asyncio.gather(*(closed_by_server(r, 6.0) for r in readers))
            assert all(closed), f"{closed.count(False)} slow connections still open"
        assert await token_request(home, client) == 200
    assert "Traceback" not in server.stderr, server.stderr
    assert "closing a slow connection" in server.stderr


async def test_a_legitimate_keepalive_request_is_not_cut(home: Home) -> None:
    """The deadline restarts per request: a keep-alive client sending requests for longer than
    the header timeout is served throughout."""
    client = await home.aadd_client("--auth-method", "client_secret_basic")
    with serve_process(home, **FAST):
        async with aiohttp.ClientSession() as session:
            for _ in range(4):
                async with session.post(
                    f"https://127.0.0.1:{home.port}/token",
                    data={"grant_type": "client_credentials"},
                    headers=basic(client),
                    ssl=client_context(home),
                ) as resp:
                    assert resp.status == 200
                await asyncio.sleep(0.8)


async def test_connections_per_source_and_in_total_are_capped(home: Home) -> None:
    env = {"MTLSAUTH_MAX_CONNECTIONS_PER_SOURCE": "4", "MTLSAUTH_MAX_CONNECTIONS": "16"}
    with serve_process(home, **env) as server:
        held = [await open_tls(home, source="127.0.0.2") for _ in range(4)]
        reader, writer = await open_tls(home, source="127.0.0.2")
        assert await closed_by_server(reader, 2.0)
        writer.close()
        # Other sources are still served; then the total cap applies to everyone.
        for i in range(3, 6):
            held += [await open_tls(home, source=f"127.0.0.{i}") for _ in range(4)]
        reader, writer = await open_tls(home, source="127.0.0.6")
        assert await closed_by_server(reader, 2.0)
        writer.close()
        for _, w in held:
            w.close()
        await asyncio.sleep(0.5)
        status, _, _ = await raw_exchange(
            home, b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        assert status == 200
    assert "per-source connection limit reached for 127.0.0.2" in server.stderr
    assert "connection limit reached (16 open)" in server.stderr


async def test_a_connection_that_never_finishes_its_handshake_is_dropped(home: Home) -> None:
    with serve_process(home, MTLSAUTH_TLS_HANDSHAKE_TIMEOUT="1", **FAST):
        silent = [await asyncio.open_connection("127.0.0.1", home.port) for _ in range(20)]
        half = [await asyncio.open_connection("127.0.0.1", home.port) for _ in range(20)]
        for _, writer in half:
            writer.write(b"\x16\x03\x01\x00\xff")  # a TLS record header, then nothing
        # And TLS done, then not a byte of HTTP: the header deadline runs from the start.
        mute = [await open_tls(home) for _ in range(20)]
        readers = [r for r, _ in silent + half + mute]
        closed = await asyncio.gather(*(closed_by_server(r, 4.0) for r in readers))
        assert all(closed), f"{closed.count(False)} connections still open"
        for _, writer in silent + half + mute:
            writer.transport.abort()


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> None:
    assert status == expected, body[:200]
    assert headers["content-type"].startswith("application/json")
    assert headers["cache-control"] == "no-store"
    assert json.loads(body)["error"] == "invalid_request"


async def test_a_megabyte_of_headers_is_refused_with_json(home: Home) -> None:
    fat = b"".join(b"X-Fat-%d: %s\r\n" % (i, b"a" * 8000) for i in range(120))
    with serve_process(home) as server:
        status, headers, body = await raw_exchange(
            home, b"POST /token HTTP/1.1\r\nHost: localhost\r\n" + fat + b"\r\n"
        )
        assert_json_error(status, headers, body, 431)
        # One field past the per-field size.
        status, headers, body = await raw_exchange(
            home, b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
        )
        assert_json_error(status, headers, body, 431)
        assert b"bbbb" not in body
    assert "Traceback" not in server.stderr, server.stderr


# --- 2. the parser's own errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (b"G\x01T /health HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),  # bad method
        (b"GET /health HTTX/1.1\r\nHost: localhost\r\n\r\n", 400),  # bad request line
        (b"GET /<evil>" + b"s" * 9000 + b" HTTP/1.1\r\n\r\n", 431),  # request line too long
        (b"GET /health HTTP/1.1\r\nBad <evil> Header: x\r\n\r\n", 400),  # bad header name
        # An Expect aiohttp does not know is refused before any middleware runs (the review).
        (
            b"POST /token HTTP/1.1\r\nHost: x\r\nExpect: 999-<evil>\r\nConnection: close\r\n\r\n",
            417,
        ),
        (
            b"GET /nowhere HTTP/1.1\r\nHost: x\r\nExpect: 999-<evil>\r\nConnection: close\r\n\r\n",
            417,
        ),
    ],
    ids=[
        "bad-method",
        "bad-request-line",
        "long-request-line",
        "bad-header",
        "expect",
        "expect-unrouted",
    ],
)
async def test_parser_errors_are_json_and_echo_nothing(
    home: Home, request_bytes: bytes, expected: int
) -> None:
    with serve_process(home) as server:
        status, headers, body = await raw_exchange(home, request_bytes)
    assert_json_error(status, headers, body, expected)
    assert b"evil" not in body
    assert b"HTTX" not in body
    assert "Traceback" not in server.stderr, server.stderr


# --- 3. bodies that cannot be read ----------------------------------------------------------


async def test_a_lying_gzip_body_is_invalid_request(home: Home) -> None:
    client = await home.aadd_client("--auth-method", "client_secret_basic")
    with serve_process(home) as server:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"https://127.0.0.1:{home.port}/token",
                data=b"grant_type=client_credentials",
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Content-Encoding": "gzip",
                    **basic(client),
                },
                ssl=client_context(home),
            ) as resp,
        ):
            assert resp.status == 400, server.proc.pid
            assert (await resp.json())["error"] == "invalid_request"
            assert resp.headers["Cache-Control"] == "no-store"
    assert "Traceback" not in server.stderr, server.stderr


async def test_clients_that_vanish_mid_body_leave_no_trace(home: Home) -> None:
    with serve_process(home) as server:
        for path in (b"/token", b"/introspect", b"/revoke"):
            _reader, writer = await open_tls(home)
            writer.write(
                b"POST " + path + b" HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 1000\r\n\r\ngrant_type=cl"
            )
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.transport.abort()
        await asyncio.sleep(0.5)
        status, _, _ = await raw_exchange(
            home, b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        assert status == 200
    assert "Traceback" not in server.stderr, server.stderr
    assert "500" not in server.stderr
    assert "unhandled" not in server.stderr


# --- 4. a taken port ------------------------------------------------------------------------


def run_serve(home: Home, hosts: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mtlsauth", "serve", "--home", str(home.path), *args],
        capture_output=True,
        text=True,
        env={"MTLSAUTH_HOST": hosts, "PATH": "/usr/bin:/bin"},
        timeout=20,
        check=False,
    )


@pytest.mark.parametrize("hosts", ["127.0.0.1", "127.0.0.1,::1"])
def test_a_taken_port_stops_the_server(home: Home, hosts: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", home.port))
        taken.listen()
        try:
            proc = run_serve(home, hosts)
        except subprocess.TimeoutExpired:
            pytest.fail("the server kept running although its port is taken")
    assert proc.returncode == 1, proc.stderr
    assert f"cannot listen on 127.0.0.1 port {home.port}" in proc.stderr
    assert "in use" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_taken_port_stops_the_workers_too(home: Home) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", home.port))
        taken.listen()
        try:
            proc = run_serve(home, "127.0.0.1", "--workers", "2")
        except subprocess.TimeoutExpired:
            pytest.fail("the supervisor kept restarting workers that cannot listen")
    assert proc.returncode == 1, proc.stderr
    assert f"cannot listen on 127.0.0.1 port {home.port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_absent_address_is_skipped_with_a_warning(home: Home) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: bind() fails with EADDRNOTAVAIL, as ::1
    # does on a machine without IPv6. No packet is sent.
    with serve_process(home, MTLSAUTH_HOST="127.0.0.1,192.0.2.1") as server:
        pass
    assert server.proc.returncode == 0, server.stderr
    assert "cannot listen on 192.0.2.1" in server.stderr
    assert "listening on https://127.0.0.1" in server.stderr


# --- 5. /metrics ----------------------------------------------------------------------------


def https_get(home: Home, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{home.port}{path}", context=client_context(home), timeout=5
        ) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_metrics_on_the_public_listener_only_for_allowed_peers(home: Home) -> None:
    with serve_process(home):
        status, body = https_get(home, "/metrics")
        assert status == 200
        assert b"mtlsauth_" in body
    # An allow-list without loopback: 127.0.0.1 is now an outsider.
    with serve_process(home, MTLSAUTH_METRICS_ALLOW="10.0.0.0/8,192.168.0.0/16"):
        status, body = https_get(home, "/metrics")
        assert status == 404
        assert json.loads(body)["error"] == "invalid_request"
        assert https_get(home, "/health")[0] == 200
    # A trusted proxy on this host speaks for clients elsewhere: its loopback address does not
    # make them allowed (found by the review).
    with serve_process(home, MTLSAUTH_TRUSTED_PROXIES="127.0.0.1"):
        assert https_get(home, "/metrics")[0] == 404


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_on_their_own_listener(home: Home, workers: int) -> None:
    metrics_port = unused_port()
    with serve_process(
        home, "--workers", str(workers), MTLSAUTH_METRICS_PORT=str(metrics_port)
    ) as server:
        assert https_get(home, "/health")[0] == 200
        status, _body = https_get(home, "/metrics")
        assert status == 404, "/metrics must not be on the public listener"
        for _ in range(4):  # with 2 workers, the kernel may hand scrapes to either
            with urllib.request.urlopen(
                f"http://127.0.0.1:{metrics_port}/metrics", timeout=5
            ) as resp:
                assert resp.status == 200
                assert b"mtlsauth_http_requests_total" in resp.read()
    assert server.proc.returncode == 0, server.stderr
    assert "exited" not in server.stderr
    assert f"listening on http://127.0.0.1:{metrics_port}" in server.stderr
