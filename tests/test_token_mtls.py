"""RFC 8705 client authentication and certificate-bound tokens, over real TLS.

For every binding the full matrix: no certificate, a certificate from another CA, a valid but
different certificate, the right certificate.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import trustme

from mtlsauth.core.thumbprint import x5t_s256
from tests.conftest import ClientCert, Home, Service, running, self_signed, trustme_cert


async def verified_claims(service: Service, token: str) -> dict[str, Any]:
    """Verify a token against the issuer's /jwks with pyjwt, as a resource server would."""
    status, jwks = await service.get("/jwks")
    assert status == 200
    keys = jwt.PyJWKSet.from_dict(jwks)
    header_kid = jwt.get_unverified_header(token)["kid"]
    decoded = jwt.decode_complete(
        token,
        key=keys[header_kid].key,
        algorithms=["ES256"],
        audience=service.home.settings.issuer,
        issuer=service.home.settings.issuer,
        options={"require": ["iss", "sub", "aud", "iat", "exp", "jti", "client_id"]},
    )
    assert decoded["header"]["typ"] == "at+jwt"
    assert decoded["header"]["alg"] == "ES256"
    claims: dict[str, Any] = decoded["payload"]
    return claims


async def assert_handshake_refused(
    service: Service, cert: ClientCert, caplog: pytest.LogCaptureFixture, **form: str
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="mtlsauth.issuer.tls.contexts"),
        pytest.raises(aiohttp.ClientError),
    ):
        await service.token(cert, **form)
    assert "TLS handshake refused" in caplog.text


# --- tls_client_auth -------------------------------------------------------------------------


async def test_tls_client_auth_matrix(
    home: Home, other_ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await home.aadd_client(
        "--auth-method", "tls_client_auth", "--client-id", "svc",
        "--san-dns", "svc.internal", "--scope", "read write",
    )  # fmt: skip
    right = home.issue("svc", dns=["svc.internal"])
    different = home.issue("other", dns=["other.internal"])
    foreign = trustme_cert(other_ca, tmp_path / "foreign", "svc.internal")

    async with running(home) as service:
        status, body = await service.token(None, client_id="svc")
        assert (status, body["error"]) == (401, "invalid_client")

        await assert_handshake_refused(service, foreign, caplog, client_id="svc")

        status, body = await service.token(different, client_id="svc")
        assert (status, body["error"]) == (401, "invalid_client")

        status, body = await service.token(right, client_id="svc")
        assert status == 200, body
        assert body["token_type"] == "Bearer"
        assert body["scope"] == "read write"
        claims = await verified_claims(service, body["access_token"])
        assert claims["cnf"] == {"x5t#S256": x5t_s256(right.der)}
        assert claims["sub"] == claims["client_id"] == "svc"
        assert claims["scope"] == "read write"
        assert claims["exp"] - claims["iat"] == home.settings.token_ttl


async def test_www_authenticate_on_invalid_client(home: Home) -> None:
    """Decision D4: invalid_client is 401 with a Basic challenge, even for mTLS clients."""
    await home.aadd_client(
        "--auth-method", "tls_client_auth", "--client-id", "svc", "--san-dns", "svc.internal"
    )
    async with running(home) as service:
        status, headers, body = await service.post(
            data={"grant_type": "client_credentials", "client_id": "svc"}
        )
    assert (status, body["error"]) == (401, "invalid_client")
    assert headers["WWW-Authenticate"] == 'Basic realm="mtlsauth"'
    assert headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("kind", "registered", "sans", "cn", "ok"),
    [
        ("--san-dns", "API.Example.COM", {"dns": ["api.example.com"]}, "x", True),
        ("--san-dns", "api.example.com", {"dns": ["api.example.org"]}, "x", False),
        ("--san-uri", "spiffe://example.org/ns/prod/sa/billing",
         {"uri": ["spiffe://example.org/ns/prod/sa/billing"]}, "x", True),
        ("--san-uri", "spiffe://example.org/ns/prod/sa/billing",
         {"uri": ["spiffe://example.org/ns/prod/sa/billing2"]}, "x", False),
        ("--san-ip", "2001:db8::0:1", {"ip": ["2001:db8::1"]}, "x", True),
        ("--san-ip", "10.0.0.1", {"ip": ["10.0.0.2"]}, "x", False),
        ("--san-email", "svc@EXAMPLE.com", {"email": ["svc@example.COM"]}, "x", True),
        ("--san-email", "svc@example.com", {"email": ["SVC@example.com"]}, "x", False),
        ("--subject-dn", "cn=Billing,  o=Example   Org", {}, "Billing", False),
        ("--subject-dn", "CN=billing", {}, "Billing", True),
        ("--subject-dn", "CN=billing", {"dns": ["billing"]}, "billing2", False),
    ],
)  # fmt: skip
async def test_tls_client_auth_name_kinds(
    home: Home, kind: str, registered: str, sans: dict[str, list[str]], cn: str, ok: bool
) -> None:
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "c", kind, registered)
    cert = home.issue(cn, **sans)
    async with running(home) as service:
        status, body = await service.token(cert, client_id="c")
    if ok:
        assert status == 200, body
    else:
        assert (status, body["error"]) == (401, "invalid_client")


async def test_subject_dn_matching_and_injection(home: Home) -> None:
    """D1: RDN-by-RDN match; a CN that contains ',O=...' must not pass for an O attribute."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    await home.aadd_client(
        "--auth-method", "tls_client_auth", "--client-id", "dn",
        "--subject-dn", "CN=alice,O=Good Org,C=US",
    )  # fmt: skip
    ca = home.ca

    def issue(name: x509.Name, label: str) -> ClientCert:
        return ClientCert.write(ca.issue_client(common_name="", subject=name), home.path / label)

    attr = x509.NameAttribute
    genuine = issue(
        x509.Name([attr(NameOID.COUNTRY_NAME, "us"), attr(NameOID.ORGANIZATION_NAME, "good  ORG"),
                   attr(NameOID.COMMON_NAME, "Alice")]),
        "genuine",
    )  # fmt: skip
    injected = issue(
        x509.Name(
            [attr(NameOID.COUNTRY_NAME, "US"), attr(NameOID.COMMON_NAME, "alice,O=Good Org")]
        ),
        "injected",
    )
    reordered = issue(
        x509.Name([attr(NameOID.COMMON_NAME, "alice"), attr(NameOID.ORGANIZATION_NAME, "Good Org"),
                   attr(NameOID.COUNTRY_NAME, "US")]),
        "reordered",
    )  # fmt: skip
    async with running(home) as service:
        status, body = await service.token(genuine, client_id="dn")
        assert status == 200, body
        for cert in (injected, reordered):
            status, body = await service.token(cert, client_id="dn")
            assert (status, body["error"]) == (401, "invalid_client")


# --- self_signed_tls_client_auth -------------------------------------------------------------


async def test_self_signed_matrix(
    home: Home, other_ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mine = self_signed(tmp_path / "mine", "mine")
    theirs = self_signed(tmp_path / "theirs", "theirs")
    unregistered = self_signed(tmp_path / "unregistered", "unregistered")
    await home.aadd_client(
        "--auth-method",
        "self_signed_tls_client_auth",
        "--client-id",
        "ss",
        "--cert",
        str(mine.cert),
    )
    await home.aadd_client(
        "--auth-method", "self_signed_tls_client_auth", "--client-id", "other",
        "--cert", str(theirs.cert),
    )  # fmt: skip
    ca_issued = home.issue("ss", dns=["ss"])
    foreign = trustme_cert(other_ca, tmp_path / "foreign", "ss")

    async with running(home) as service:
        status, body = await service.token(None, client_id="ss")
        assert (status, body["error"]) == (401, "invalid_client")

        await assert_handshake_refused(service, foreign, caplog, client_id="ss")
        await assert_handshake_refused(service, unregistered, caplog, client_id="ss")

        # Valid certificates the handshake accepts, but not this client's.
        for cert in (theirs, ca_issued):
            status, body = await service.token(cert, client_id="ss")
            assert (status, body["error"]) == (401, "invalid_client")

        status, body = await service.token(mine, client_id="ss")
        assert status == 200, body
        claims = await verified_claims(service, body["access_token"])
        assert claims["cnf"]["x5t#S256"] == x5t_s256(mine.der)


async def test_self_signed_cert_cannot_pose_as_client_ca(home: Home, tmp_path: Path) -> None:
    """A registered self-signed certificate is a trust anchor; it must not stand in for the CA.

    The holder of a registered key signs a leaf naming another tls_client_auth client.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from pki import IssuedCert

    key = ec.generate_private_key(ec.SECP256R1())
    rogue_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue")])
    now = dt.datetime.now(dt.UTC)
    usage = x509.KeyUsage(True, False, False, False, False, True, False, False, False)
    rogue = (
        x509.CertificateBuilder().subject_name(rogue_name).issuer_name(rogue_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    rogue_cert = ClientCert.write(IssuedCert(cert=rogue, key=key), tmp_path / "rogue")
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "victim")]))
        .issuer_name(rogue_name).public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("victim.internal")]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    forged = ClientCert.write(IssuedCert(cert=leaf, key=leaf_key, chain=(rogue,)), tmp_path / "f")

    await home.aadd_client(
        "--auth-method", "self_signed_tls_client_auth", "--client-id", "rogue",
        "--cert", str(rogue_cert.cert),
    )  # fmt: skip
    await home.aadd_client(
        "--auth-method", "tls_client_auth", "--client-id", "victim", "--san-dns", "victim.internal"
    )
    async with running(home) as service:
        # OpenSSL accepts this chain (the rogue anchor is a CA); the issuer check refuses it.
        status, body = await service.token(forged, client_id="victim")
        assert (status, body["error"]) == (401, "invalid_client")


async def test_self_signed_expired_is_rejected(home: Home, tmp_path: Path) -> None:
    """Decision D6: a registered certificate that has since expired no longer authenticates."""
    from mtlsauth.core.errors import InvalidClient
    from mtlsauth.core.peer import PeerCertificate
    from mtlsauth.issuer.clientauth import AuthContext, AuthRequest
    from mtlsauth.issuer.clientauth.mtls import authenticate_self_signed
    from mtlsauth.issuer.model import Client, RegisteredCert
    from mtlsauth.issuer.tls.contexts import ClientCA

    now = dt.datetime.now(dt.UTC)
    old = self_signed(
        tmp_path / "old", "old",
        not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1),
    )  # fmt: skip
    client = Client(
        client_id="old",
        auth_method="self_signed_tls_client_auth",
        bound_tokens=True,
        certificates=(RegisteredCert.from_der(old.der),),
    )
    request = AuthRequest("old", None, None, None, None, PeerCertificate(old.der))
    with pytest.raises(InvalidClient, match="expired"):
        await authenticate_self_signed(client, request, AuthContext(b"k" * 32, ClientCA([])))
    # And registration refuses it up front.
    from tests.conftest import run_cli

    code, _, err = await __import__("asyncio").to_thread(
        run_cli,
        ["client", "add", "--home", str(home.path), "--auth-method",
         "self_signed_tls_client_auth", "--cert", str(old.cert)],
    )  # fmt: skip
    assert code == 2
    assert "not valid now" in err


async def test_self_signed_via_jwks_x5c(home: Home, tmp_path: Path) -> None:
    import base64
    import json

    mine = self_signed(tmp_path / "mine", "mine")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(
        json.dumps({"keys": [{"kty": "EC", "x5c": [base64.b64encode(mine.der).decode()]}]})
    )
    await home.aadd_client(
        "--auth-method", "self_signed_tls_client_auth", "--client-id", "j", "--jwks", str(jwks)
    )
    async with running(home) as service:
        status, body = await service.token(mine, client_id="j")
    assert status == 200, body


async def test_mtls_client_without_bound_tokens(home: Home) -> None:
    await home.aadd_client(
        "--auth-method",
        "tls_client_auth",
        "--client-id",
        "u",
        "--san-dns",
        "u",
        "--no-bound-tokens",
    )
    cert = home.issue("u", dns=["u"])
    async with running(home) as service:
        status, body = await service.token(cert, client_id="u")
        assert status == 200
        claims = await verified_claims(service, body["access_token"])
    assert "cnf" not in claims


async def test_required_listener_and_metadata_alias(mtls_home: Home) -> None:
    home = mtls_home
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "m", "--san-dns", "m")
    cert = home.issue("m", dns=["m"])
    async with running(home) as service:
        assert service.mtls_url is not None
        status, doc = await service.get("/.well-known/oauth-authorization-server")
        assert status == 200
        base = f"https://localhost:{home.mtls_port}"
        assert doc["mtls_endpoint_aliases"] == {
            "token_endpoint": f"{base}/token",
            "introspection_endpoint": f"{base}/introspect",
            "revocation_endpoint": f"{base}/revoke",
        }
        form = {"grant_type": "client_credentials", "client_id": "m"}
        with pytest.raises(aiohttp.ClientError):
            await service.post(data=form, base=service.mtls_url)
        status, _, body = await service.post(data=form, cert=cert, base=service.mtls_url)
        assert status == 200, body


async def test_remembered_verdict_is_per_client(home: Home) -> None:
    """The tls_client_auth verdict is remembered per certificate *and* client: a certificate
    proved for one client does not pass for another, on the same keep-alive connection."""
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "a", "--san-dns", "a")
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "b", "--san-dns", "b")
    cert = home.issue("a", dns=["a"])
    async with running(home) as service, aiohttp.ClientSession() as session:
        ctx = service.ssl_context(cert)
        results = []
        for client_id in ("a", "b", "a", "b"):
            form = {"grant_type": "client_credentials", "client_id": client_id}
            async with session.post(f"{service.url}/token", data=form, ssl=ctx) as resp:
                results.append(resp.status)
    assert results == [200, 401, 200, 401]
