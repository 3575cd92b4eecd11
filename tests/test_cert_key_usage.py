"""A client certificate whose keyUsage leaves out digitalSignature is refused (RFC 8446
§4.4.2.2): OpenSSL's sslclient purpose lets keyAgreement alone through the handshake, so the
token service refuses it itself — CA-issued, self-signed and proxy-forwarded alike — and
``pki verify`` says why.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki import IssuedCert
from tests.conftest import ClientCert, Home, client_context, run_cli, running
from tests.proxies import PROXY_ADDRESS

KEY_AGREEMENT_ONLY = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def _cert(
    out: Path, cn: str, *, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None
) -> ClientCert:
    """A clientAuth certificate for ``cn`` (SAN DNS ``cn``) with keyUsage keyAgreement only,
    issued by ``issuer`` or self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(KEY_AGREEMENT_ONLY, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    chain = (issuer[0],) if issuer else ()
    return ClientCert.write(IssuedCert(cert=cert, key=key, chain=chain), out)


def _ca_issued(home: Home, out: Path, cn: str) -> ClientCert:
    ca = home.ca
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    return _cert(out, cn, issuer=(ca.cert, ca.key))


async def test_ca_issued_key_agreement_only_is_refused(home: Home, tmp_path: Path) -> None:
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--san-dns", "svc")  # fmt: skip
    added = await home.aadd_client("--auth-method", "client_secret_post", "--client-id", "sec")
    bad = _ca_issued(home, tmp_path / "bad", "svc")
    good = home.issue("svc", dns=["svc"])
    async with running(home) as service:
        assert (await service.token(good, client_id="svc"))[0] == 200
        status, body = await service.token(bad, client_id="svc")
        assert (status, body["error"]) == (401, "invalid_client")
        assert "digitalSignature" in body["error_description"]
        # Any method: a token is never bound to a certificate that cannot sign.
        secret = added["client_secret"]
        assert (await service.token(good, client_id="sec", client_secret=secret))[0] == 200
        status, body = await service.token(bad, client_id="sec", client_secret=secret)
        assert (status, body["error"]) == (401, "invalid_client")


async def test_self_signed_key_agreement_only_is_refused(home: Home, tmp_path: Path) -> None:
    bad = _cert(tmp_path / "self", "selfie", issuer=None)
    await home.aadd_client("--auth-method", "self_signed_tls_client_auth", "--client-id", "ss",
                           "--cert", str(bad.cert))  # fmt: skip
    async with running(home) as service:
        status, body = await service.token(bad, client_id="ss")
    assert (status, body["error"]) == (401, "invalid_client")


async def test_forwarded_key_agreement_only_is_refused(home: Home, tmp_path: Path) -> None:
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--san-dns", "svc")  # fmt: skip
    good = home.issue("svc", dns=["svc"])
    bad = _ca_issued(home, tmp_path / "bad", "svc")
    settings = dataclasses.replace(
        home.settings,
        trusted_proxies=(f"{PROXY_ADDRESS}/32",),
        client_cert_header="X-Client-Cert",
        client_cert_format="base64-der",
    )
    results = []
    async with running(home, settings) as service:
        for cert in (good, bad):
            connector = aiohttp.TCPConnector(local_addr=(PROXY_ADDRESS, 0))
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.post(
                    f"{service.url}/token",
                    data={"grant_type": "client_credentials", "client_id": "svc"},
                    headers={"X-Client-Cert": base64.b64encode(cert.der).decode()},
                    ssl=client_context(home, None),
                ) as resp,
            ):
                results.append((resp.status, await resp.json()))
    assert results[0][0] == 200, results[0]
    assert (results[1][0], results[1][1]["error"]) == (401, "invalid_client")


def test_pki_verify_says_why(home: Home, tmp_path: Path) -> None:
    bad = _ca_issued(home, tmp_path / "bad", "svc")
    code, out, _ = run_cli(["pki", "verify", "--home", str(home.path), "--cert", str(bad.cert),
                            "--json"])  # fmt: skip
    report = json.loads(out)
    assert code == 1
    failed = {c["check"]: c["detail"] for c in report["checks"] if not c["ok"]}
    assert set(failed) == {"key_usage"}
    assert "digitalSignature" in failed["key_usage"]
    assert "keyAgreement" in failed["key_usage"]
