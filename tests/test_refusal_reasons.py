"""A client whose certificate is refused learns why (decision D10), with real clients.

Chain errors (unknown CA, expired) end the handshake with the TLS alert OpenSSL chose, and the
server must actually send it before closing (asyncio drops it otherwise: curl said "Empty
reply" or "Connection reset"). A revoked certificate is judged after the handshake (Python's
ssl has no verify callback): every request on the connection is answered 401 invalid_client
naming the reason. curl, openssl s_client, ``mtlsauth token`` and the TokenClient all show it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtlsauth.client import TokenClient, TokenError, client_ssl_context
from pki import IssuedCert
from tests.conftest import ClientCert, Home, Service, run_cli, running, trustme_cert

FORM = "grant_type=client_credentials&client_id=svc"


def _expired(home: Home, out: Path) -> ClientCert:
    """A certificate from the home's CA for ``svc`` that expired yesterday."""
    ca = home.ca
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("svc")]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return ClientCert.write(IssuedCert(cert=cert, key=key, chain=(ca.cert,)), out)


def _revoked(home: Home) -> ClientCert:
    cert = home.issue("revoked", dns=["svc"])
    serial = format(x509.load_der_x509_certificate(cert.der).serial_number, "x")
    code, _, err = run_cli(["pki", "revoke", "--home", str(home.path), "--serial", serial,
                            "--reason", "key_compromise"])  # fmt: skip
    assert code == 0, err
    return cert


@pytest.fixture
def certs(home: Home, tmp_path: Path, other_ca: trustme.CA) -> dict[str, ClientCert]:
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "svc", "--san-dns", "svc")
    return {
        "good": home.issue("svc", dns=["svc"]),
        "unknown_ca": trustme_cert(other_ca, tmp_path / "other", "svc"),
        "expired": _expired(home, tmp_path / "expired"),
        "revoked": _revoked(home),
    }


#: What openssl prints for the alert of each refusal.
ALERT_TEXT = {"unknown_ca": "alert unknown ca", "expired": "alert certificate expired"}
#: What curl -v prints when the alert arrives (its one-line error over TLS 1.2 is generic:
#: "(60) SSL certificate verification failed").
CURL_ALERT = {"unknown_ca": "TLS alert, unknown CA", "expired": "TLS alert, certificate expired"}


async def _run(*argv: str, stdin: bytes = b"") -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode(errors="replace")


async def _curl(service: Service, cert: ClientCert, tls: str) -> tuple[int, str]:
    version = ["--tls-max", "1.2"] if tls == "--tls-max" else [tls]
    return await _run(
        "curl", "-sSv", *version, "--cacert", str(service.home.ca_cert), "--cert",
        str(cert.chain), "--key", str(cert.key), "-d", FORM, f"{service.url}/token",
    )  # fmt: skip


@pytest.mark.parametrize("tls", ["--tlsv1.3", "--tls-max"])
async def test_curl_learns_why(home: Home, certs: dict[str, ClientCert], tls: str) -> None:
    async with running(home) as service:
        code, out = await _curl(service, certs["good"], tls)
        assert code == 0, out
        assert '"access_token"' in out
        for name, text in CURL_ALERT.items():
            code, out = await _curl(service, certs[name], tls)
            assert code != 0, (name, out)
            assert text in out, (name, out)
        code, out = await _curl(service, certs["revoked"], tls)
    assert code == 0, out
    assert "< HTTP/1.1 401" in out
    assert '"error":"invalid_client"' in out
    assert "certificate_revoked" in out


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
async def test_openssl_s_client_learns_why(
    home: Home, certs: dict[str, ClientCert], version: str
) -> None:
    request = (
        "POST /token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(FORM)}\r\n\r\n{FORM}"
    ).encode()
    async with running(home) as service:
        port = service.url.rsplit(":", 1)[1]

        async def s_client(cert: ClientCert) -> tuple[int, str]:
            return await _run(
                "openssl", "s_client", "-connect", f"127.0.0.1:{port}", version, "-CAfile",
                str(home.ca_cert), "-cert", str(cert.chain), "-key", str(cert.key),
                "-servername", "localhost", "-ign_eof", "-quiet", stdin=request,
            )  # fmt: skip

        for name, text in ALERT_TEXT.items():
            code, out = await s_client(certs[name])
            assert code != 0, (name, out)
            assert text in out, (name, out)
        code, out = await s_client(certs["revoked"])
    assert "401" in out.splitlines()[0], out
    assert '"error":"invalid_client"' in out
    assert "certificate_revoked" in out


async def test_mtlsauth_token_prints_why(home: Home, certs: dict[str, ClientCert]) -> None:
    expected = {
        "unknown_ca": ("tls_alert", "unknown_ca"),
        "expired": ("tls_alert", "certificate_expired"),
        "revoked": ("invalid_client", "revoked"),
    }
    async with running(home) as service:
        for name, (error, reason) in expected.items():
            cert = certs[name]
            code, out = await _run(
                sys.executable, "-m", "mtlsauth", "token", "--issuer", service.url,
                "--cacert", str(home.ca_cert), "--cert", str(cert.chain), "--key",
                str(cert.key), "--client-id", "svc",
            )  # fmt: skip
            assert code == 1, (name, out)
            assert "Traceback" not in out
            assert error in out, (name, out)
            assert reason in out, (name, out)


@pytest.mark.parametrize("name", ["unknown_ca", "expired"])
async def test_token_client_names_the_alert(
    home: Home, certs: dict[str, ClientCert], name: str
) -> None:
    cert = certs[name]
    async with running(home) as service:
        client = TokenClient(
            issuer=service.url,
            ssl_context=client_ssl_context(home.ca_cert, cert.chain, cert.key),
            client_id="svc",
        )
        async with client:
            with pytest.raises(TokenError) as caught:
                await client.fetch()
    assert caught.value.error == "tls_alert"
    assert {"unknown_ca": "unknown_ca", "expired": "certificate_expired"}[name] in str(
        caught.value.description
    )
