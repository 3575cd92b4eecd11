"""Revocation that bites: a revoked certificate is refused by a running server within 5 s —
fresh handshakes, resumed TLS sessions and keep-alive connections alike."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import socket
import ssl
import time
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from mtlsauth.issuer.tls.contexts import ServerTLSConfig, build_server_context
from mtlsauth.issuer.tls.revocation import RevocationState, renew_crl_if_due
from pki import Authority
from tests.conftest import (
    ClientCert,
    Home,
    client_context,
    run_cli,
    running,
    self_signed,
    serve_process,
)

FORM = b"grant_type=client_credentials&client_id=svc"


def token_request(
    port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[int | None, ssl.SSLSession | None, bool]:
    """One POST /token on a fresh connection: (status or None if refused, session, resumed)."""
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls:
            request = (
                b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                + f"Content-Length: {len(FORM)}\r\n\r\n".encode()
                + FORM
            )
            tls.sendall(request)
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            if not data:
                return None, None, bool(tls.session_reused)
            return int(data.split(b" ", 2)[1]), tls.session, bool(tls.session_reused)
    except (ssl.SSLError, ConnectionError, OSError):
        return None, None, False


def revoke(home: Home, serial: str) -> None:
    code, _, err = run_cli(["pki", "revoke", "--home", str(home.path), "--serial", serial,
                            "--reason", "key_compromise"])  # fmt: skip
    assert code == 0, err


@pytest.fixture
def svc(home: Home) -> ClientCert:
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "svc", "--san-dns", "svc")
    return home.issue("svc", dns=["svc"])


def serial_of(cert: ClientCert) -> str:
    return format(x509.load_der_x509_certificate(cert.der).serial_number, "x")


async def test_revoked_refused_fresh_and_resumed(home: Home, svc: ClientCert) -> None:
    ctx = client_context(home, svc)
    async with running(home) as service:
        port = int(service.url.rsplit(":", 1)[1])
        status, session, _ = await asyncio.to_thread(token_request, port, ctx)
        assert status == 200
        # Control: the client really resumes its TLS session while the cert is good.
        status, session2, resumed = await asyncio.to_thread(token_request, port, ctx, session)
        assert status == 200
        assert resumed is True

        await asyncio.to_thread(revoke, home, serial_of(svc))
        started = time.monotonic()
        while True:
            fresh = await asyncio.to_thread(token_request, port, ctx)
            again = await asyncio.to_thread(token_request, port, ctx, session2)
            # Answered 401 invalid_client on the connection (decision D10), never served.
            if fresh[0] == 401 and again[0] == 401:
                break
            assert time.monotonic() - started < 5, (fresh, again)
            await asyncio.sleep(0.1)
        # And it stays refused.
        assert (await asyncio.to_thread(token_request, port, ctx, session))[0] == 401


async def test_resumed_session_is_checked_too(
    home: Home, svc: ClientCert, caplog: pytest.LogCaptureFixture
) -> None:
    """Same context (same ticket keys), revocation learned afterwards: the resumption is
    refused by the handshake check itself, not merely by a context rebuild."""
    settings = home.settings
    config = ServerTLSConfig(cert=settings.tls_cert, key=settings.tls_key,
                             client_ca=settings.client_ca)  # fmt: skip
    server_ctx = build_server_context(config, require_cert=False)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The handshake marks the connection refused; the app (here: this handler) answers.
        refused = writer.get_extra_info("ssl_object").refused is not None
        status = b"401 Unauthorized" if refused else b"200 OK"
        try:
            await reader.read(65536)
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
        except (ssl.SSLError, ConnectionError):
            pass
        finally:
            writer.close()

    # asyncio (like aiohttp) wraps connections with wrap_bio, so our SSLObject class runs.
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    ctx = client_context(home, svc)
    try:
        status, session, _ = await asyncio.to_thread(token_request, port, ctx)
        assert status == 200
        status, session, resumed = await asyncio.to_thread(token_request, port, ctx, session)
        assert (status, resumed) == (200, True)
        authority = home.authority
        authority.revoke(serial_of(svc), "key_compromise")
        state = RevocationState.load(authority.crl_path, [authority.issuing_cert()])
        server_ctx.sslobject_class.revocation = state  # type: ignore[attr-defined]
        with caplog.at_level(logging.WARNING, logger="mtlsauth.issuer.tls.contexts"):
            status, _, resumed = await asyncio.to_thread(token_request, port, ctx, session)
    finally:
        server.close()
        await server.wait_closed()
    assert (status, resumed) == (401, True)
    assert "revoked (key_compromise)" in caplog.text
    assert "resumed session: True" in caplog.text


@pytest.mark.parametrize("tickets", [0, 1, 3])
async def test_session_tickets_follow_the_setting(
    home: Home, svc: ClientCert, tickets: int
) -> None:
    """``tls_session_tickets``: exactly that many TLS 1.3 tickets after a full handshake, and
    no resumption at all with 0 (every connection then verifies the whole chain)."""
    received: list[int] = []

    def watch(_conn: object, direction: str, _version: object, content_type: object,
              msg_type: object, _data: bytes) -> None:  # fmt: skip
        # Python's debugging hook for TLS messages; handshake type 4 is NewSessionTicket.
        if direction == "read" and content_type == 22 and msg_type == 4:
            received.append(4)

    ctx = client_context(home, svc)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx._msg_callback = watch  # type: ignore[attr-defined]
    settings = dataclasses.replace(home.settings, tls_session_tickets=tickets)
    async with running(home, settings) as service:
        port = int(service.url.rsplit(":", 1)[1])
        status, session, _ = await asyncio.to_thread(token_request, port, ctx)
        assert status == 200
        assert len(received) == tickets
        status, _, resumed = await asyncio.to_thread(token_request, port, ctx, session)
    assert status == 200
    assert resumed is (tickets > 0)


async def test_keep_alive_connection_sees_the_revocation(home: Home, svc: ClientCert) -> None:
    created: list[object] = []
    reused: list[object] = []
    trace = aiohttp.TraceConfig()

    async def on_create(*args: object) -> None:
        created.append(args)

    async def on_reuse(*args: object) -> None:
        reused.append(args)

    trace.on_connection_create_end.append(on_create)
    trace.on_connection_reuseconn.append(on_reuse)
    connector = aiohttp.TCPConnector(limit=1)
    async with (
        running(home) as service,
        aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session,
    ):
        ctx = client_context(home, svc)
        form = {"grant_type": "client_credentials", "client_id": "svc"}
        async with session.post(f"{service.url}/token", data=form, ssl=ctx) as resp:
            assert resp.status == 200
        await asyncio.to_thread(revoke, home, serial_of(svc))
        await asyncio.sleep(0.5)
        async with session.post(f"{service.url}/token", data=form, ssl=ctx) as resp:
            body = await resp.json()
            assert (resp.status, body["error"]) == (401, "invalid_client")
    # One connection, reused: it was established before the revocation.
    assert (len(created), len(reused)) == (1, 1)


async def test_connection_lifetime_is_bounded(home: Home, svc: ClientCert) -> None:
    settings = dataclasses.replace(home.settings, max_connection_age=0.3)
    async with running(home, settings) as service, aiohttp.ClientSession() as session:
        form = {"grant_type": "client_credentials", "client_id": "svc"}
        ctx = client_context(home, svc)
        async with session.post(f"{service.url}/token", data=form, ssl=ctx) as resp:
            assert resp.status == 200
            assert resp.headers.get("Connection", "").lower() != "close"
        await asyncio.sleep(0.5)
        async with session.post(f"{service.url}/token", data=form, ssl=ctx) as resp:
            assert resp.status == 200
            assert resp.headers.get("Connection", "").lower() == "close"


def _write_crl(
    authority: Authority, *, this_update: dt.timedelta, next_update: dt.timedelta
) -> None:
    ca = authority.issuing()
    now = dt.datetime.now(dt.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now + this_update)
        .next_update(now + next_update)
        .add_extension(x509.CRLNumber(1000), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    authority.crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


async def test_expired_crl_fails_closed_and_is_loud(
    home: Home, svc: ClientCert, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mine = self_signed(tmp_path / "mine", "mine")
    await home.aadd_client("--auth-method", "self_signed_tls_client_auth", "--client-id", "ss",
                           "--cert", str(mine.cert))  # fmt: skip
    authority = home.authority
    (authority.directory / "passphrase").rename(tmp_path / "passphrase")  # no auto-renewal
    _write_crl(authority, this_update=dt.timedelta(days=-8), next_update=dt.timedelta(hours=-1))
    with caplog.at_level(logging.WARNING):
        async with running(home) as service:
            port = int(service.url.rsplit(":", 1)[1])
            status, _, _ = await asyncio.to_thread(token_request, port, client_context(home, svc))
            assert status == 401  # every certificate of the CA is refused (answered 401)
            status, body = await service.token(mine, client_id="ss")
            assert status == 200, body  # self-signed clients do not depend on the CRL
            await asyncio.sleep(0.3)
    assert "EXPIRED" in caplog.text
    assert "expired at" in caplog.text


async def test_crl_close_to_expiry_warns(
    home: Home, svc: ClientCert, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    authority = home.authority
    (authority.directory / "passphrase").rename(tmp_path / "passphrase")
    _write_crl(authority, this_update=dt.timedelta(days=-6), next_update=dt.timedelta(hours=5))
    with caplog.at_level(logging.WARNING):
        async with running(home) as service:
            status, _ = await service.token(svc, client_id="svc")
            assert status == 200
            await asyncio.sleep(0.3)
    assert "expires in" in caplog.text
    assert "no CA passphrase" in caplog.text


def test_crl_renewed_before_it_expires(home: Home) -> None:
    authority = home.authority
    _write_crl(authority, this_update=dt.timedelta(days=-5), next_update=dt.timedelta(days=2))
    state = RevocationState.load(authority.crl_path, [authority.issuing_cert()])
    assert renew_crl_if_due(authority.crl_path, state) is True
    crl = x509.load_pem_x509_crl(authority.crl_path.read_bytes())
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=6)
    fresh = RevocationState.load(authority.crl_path, [authority.issuing_cert()])
    assert renew_crl_if_due(authority.crl_path, fresh) is False  # not due again


def test_crl_from_another_ca_is_refused(home: Home, tmp_path: Path) -> None:
    from mtlsauth.issuer.tls.revocation import CRLError

    trusted = [home.authority.issuing_cert()]
    other = Authority.init(tmp_path / "other", name="other")
    with pytest.raises(CRLError, match="not a trusted CA"):
        RevocationState.load(other.crl_path, trusted)
    # Same name, different key: the signature gives it away.
    impostor = Authority.init(tmp_path / "impostor")
    with pytest.raises(CRLError, match="signature does not verify"):
        RevocationState.load(impostor.crl_path, trusted)


def test_serve_process_refuses_revoked(home: Home, svc: ClientCert) -> None:
    """The real `mtlsauth serve` (uvloop when installed), revocation through the CLI."""
    ctx = client_context(home, svc)
    with serve_process(home) as server:
        assert token_request(home.port, ctx)[0] == 200
        revoke(home, serial_of(svc))
        started = time.monotonic()
        while token_request(home.port, ctx)[0] != 401:
            assert time.monotonic() - started < 5, "still accepted 5 s after revocation"
            time.sleep(0.1)
    assert "revoked (key_compromise)" in server.stderr


async def test_server_certificate_hot_reload(home: Home) -> None:
    """A renewed server certificate is served to new connections without a restart."""

    def served_serial(port: int) -> int:
        ctx = ssl.create_default_context(cafile=str(home.ca_cert))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der).serial_number

    async with running(home) as service:
        port = int(service.url.rsplit(":", 1)[1])
        before = await asyncio.to_thread(served_serial, port)
        tls_dir = home.path / "tls"
        renewed = await asyncio.to_thread(
            lambda: home.authority.issue_server(
                hostnames=["localhost", "127.0.0.1", "::1"], out=tls_dir
            )
        )
        for _ in range(50):
            if await asyncio.to_thread(served_serial, port) != before:
                break
            await asyncio.sleep(0.1)
        assert await asyncio.to_thread(served_serial, port) == renewed.cert.cert.serial_number


async def test_renegotiation_is_refused(home: Home, svc: ClientCert) -> None:
    """A TLS 1.2 renegotiation could swap the client certificate mid-connection, behind the
    handshake hook and the per-connection caches: the server refuses it (openssl s_client's
    ``R`` command asks for one). OpenSSL 3 refuses by default and the server context also sets
    OP_NO_RENEGOTIATION, so this guards the property against either changing."""
    async with running(home) as service:
        port = service.url.rsplit(":", 1)[1]
        proc = await asyncio.create_subprocess_exec(
            "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2",
            "-cert", str(svc.cert), "-key", str(svc.key), "-CAfile", str(home.ca_cert),
            "-servername", "localhost",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert proc.stdin is not None
        await asyncio.sleep(1.0)  # the handshake
        proc.stdin.write(b"R\n")
        await proc.stdin.drain()
        await asyncio.sleep(1.0)
        proc.stdin.close()
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in text  # the first handshake succeeded
    assert "RENEGOTIATING" in text
    assert "no renegotiation" in text
