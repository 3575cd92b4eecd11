"""The pyOpenSSL TLS transport the benchmark compares with Python's ssl (issue 14, item 1):
real TLS to the service's own application, as ``scripts/bench --tls-layer-ab`` runs it, and the
alerts that tell a refused client why (RFC 8446 §6.2)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from tests.conftest import ClientCert, Home, client_context, run_cli, trustme_cert

FORM = b"grant_type=client_credentials&client_id=svc"


@contextlib.contextmanager
def pyopenssl_service(home: Home, kind: str = "pyopenssl-service") -> Iterator[int]:
    """The bench's server over the pyOpenSSL transport, on a free port, until the block ends."""
    port = home.port
    env = {**os.environ, "MTLSAUTH_HOST": "127.0.0.1", "MTLSAUTH_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtlsauth.bench.benchmark", "--reference-server", str(port),
         "--reference-kind", kind, "--home", str(home.path)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the pyOpenSSL server did not start"
            time.sleep(0.1)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def post_token(
    port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[int, ssl.SSLSession | None, bool]:
    """POST /token on a new connection: (status, session, resumed); TLS errors propagate."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls:
        tls.sendall(
            b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {len(FORM)}\r\n\r\n".encode()
            + FORM
        )
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        return int(data.split(b" ", 2)[1]), tls.session, bool(tls.session_reused)


@pytest.fixture
def svc(home: Home) -> ClientCert:
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "svc", "--san-dns", "svc")
    return home.issue("svc", dns=["svc"])


def test_token_and_resumption_over_the_pyopenssl_transport(home: Home, svc: ClientCert) -> None:
    ctx = client_context(home, svc)
    with pyopenssl_service(home) as port:
        status, session, resumed = post_token(port, ctx)
        assert (status, resumed) == (200, False)
        # The resumed session still carries the client certificate to the token endpoint.
        status, _, resumed = post_token(port, ctx, session)
        assert (status, resumed) == (200, True)
        # Without a certificate the optional listener lets the request through to 401.
        status, _, _ = post_token(port, client_context(home))
        assert status == 401


def test_revoked_certificate_gets_the_certificate_revoked_alert(
    home: Home, svc: ClientCert
) -> None:
    serial = format(x509.load_der_x509_certificate(svc.der).serial_number, "x")
    code, _, err = run_cli(["pki", "revoke", "--home", str(home.path), "--serial", serial,
                            "--reason", "key_compromise"])  # fmt: skip
    assert code == 0, err
    with pyopenssl_service(home) as port, pytest.raises(ssl.SSLError) as refused:
        post_token(port, client_context(home, svc))
    assert "CERTIFICATE_REVOKED" in str(refused.value)


def test_unknown_ca_gets_the_unknown_ca_alert(
    home: Home, other_ca: trustme.CA, tmp_path: Path
) -> None:
    stranger = trustme_cert(other_ca, tmp_path / "stranger", "svc")
    with pyopenssl_service(home) as port, pytest.raises(ssl.SSLError) as refused:
        post_token(port, client_context(home, stranger))
    assert "UNKNOWN_CA" in str(refused.value)
