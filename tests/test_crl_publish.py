"""CRLs published for everyone, not only for mtlsauth: certificates name a CRL distribution
point under the issuer URL, the token service serves the DER CRLs there, and ``pki crl`` writes
a bundle (issuing + root CRL) with which nginx's ``ssl_crl`` checks revocation itself."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509

from tests.conftest import ClientCert, Home, client_context, running
from tests.proxies import nginx
from tests.test_pki import pki


def cdp_urls(cert: x509.Certificate) -> list[str]:
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return [name.value for point in points for name in point.full_name or ()]


async def fetch(url: str, ctx: ssl.SSLContext) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, ssl=ctx) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


def cert_of(client: ClientCert) -> x509.Certificate:
    return x509.load_pem_x509_certificate(client.cert.read_bytes())


async def test_certificates_name_the_crl_the_token_service_serves(home: Home) -> None:
    issuer = home.settings.issuer
    ca_dir = home.path / "ca"
    root = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    issuing = x509.load_pem_x509_certificate((ca_dir / "issuing.pem").read_bytes())
    client = home.issue("svc", dns=["svc"])
    revoked = home.issue("gone", dns=["gone"])
    home.authority.revoke(format(cert_of(revoked).serial_number, "x"))

    (leaf_url,) = cdp_urls(cert_of(client))
    (issuing_url,) = cdp_urls(issuing)
    assert leaf_url.startswith(issuer + "/crl/")
    assert issuing_url.startswith(issuer + "/crl/")
    assert leaf_url != issuing_url
    # The server certificate made by init names its CRL too.
    server = x509.load_pem_x509_certificate((home.path / "tls" / "cert.pem").read_bytes())
    assert cdp_urls(server) == [leaf_url]

    async with running(home) as service:
        ctx = client_context(home, None)
        # The issuer URL's path, on the address the test service listens on.
        status, kind, body = await fetch(service.url + urlsplit(leaf_url).path, ctx)
        assert (status, kind) == (200, "application/pkix-crl")
        crl = x509.load_der_x509_crl(body)
        assert crl.issuer == issuing.subject
        assert crl.is_signature_valid(issuing.public_key())  # type: ignore[arg-type]
        assert crl.get_revoked_certificate_by_serial_number(cert_of(revoked).serial_number)
        assert crl.get_revoked_certificate_by_serial_number(cert_of(client).serial_number) is None

        status, kind, body = await fetch(service.url + urlsplit(issuing_url).path, ctx)
        assert (status, kind) == (200, "application/pkix-crl")
        root_crl = x509.load_der_x509_crl(body)
        assert root_crl.issuer == root.subject
        assert root_crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]

        # A revocation is served at once: the file is re-signed and read per request.
        home.authority.revoke(format(cert_of(client).serial_number, "x"))
        status, _, body = await fetch(service.url + urlsplit(leaf_url).path, ctx)
        assert status == 200
        assert x509.load_der_x509_crl(body).get_revoked_certificate_by_serial_number(
            cert_of(client).serial_number
        )
        for path in ("/crl/0000.crl", "/crl/..%2Fca.pem", "/crl/ca.pem", "/crl/%2E%2E"):
            status, _, _ = await fetch(service.url + path, ctx)
            assert status == 404, path


def test_pki_init_without_a_base_url_names_no_distribution_point(tmp_path: Path) -> None:
    home = tmp_path / "bare"
    assert pki(home, "init")[0] == 0
    code, out, err = pki(home, "issue", "--cn", "svc")
    assert code == 0, err
    cert = x509.load_pem_x509_certificate(Path(out["cert"]).read_bytes())
    assert x509.CRLDistributionPoints not in [type(e.value) for e in cert.extensions]
    code, out, err = pki(home, "crl")
    assert code == 0, err
    assert out["urls"] == []
    assert Path(out["bundle"]).is_file()
    # A bad base URL is refused at init.
    code, _, err = pki(tmp_path / "bad", "init", "--crl-base-url", "ftp://x/y")
    assert code == 1
    assert "Traceback" not in err


def test_openssl_checks_the_whole_chain_with_the_bundle(home: Home) -> None:
    ca_dir = home.path / "ca"
    good = home.issue("good", dns=["good"])
    bad = home.issue("bad", dns=["bad"])
    code, _, err = pki(home.path, "revoke", "--serial", format(cert_of(bad).serial_number, "x"))
    assert code == 0, err

    def verify(cert: Path, crls: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["openssl", "verify", "-crl_check_all", "-CAfile", str(ca_dir / "ca.pem"),
             "-untrusted", str(ca_dir / "issuing.pem"), "-CRLfile", str(crls), str(cert)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    assert verify(good.cert, ca_dir / "crl-bundle.pem").returncode == 0
    result = verify(bad.cert, ca_dir / "crl-bundle.pem")
    assert result.returncode != 0
    assert "revoked" in result.stdout + result.stderr
    # The issuing CA's CRL alone is not enough for a whole-chain check: no CRL for the root.
    result = verify(good.cert, ca_dir / "crl.pem")
    assert result.returncode != 0
    assert "unable to get certificate CRL" in result.stdout + result.stderr


async def test_nginx_refuses_a_revoked_certificate_with_the_bundle(
    home: Home, tmp_path: Path
) -> None:
    ca_dir = home.path / "ca"
    good = home.issue("good", dns=["good"])
    bad = home.issue("bad", dns=["bad"])
    assert pki(home.path, "revoke", "--serial", format(cert_of(bad).serial_number, "x"))[0] == 0

    async def get(proxy: str, cert: ClientCert) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{proxy}/jwks", ssl=client_context(home, cert)) as resp,
        ):
            return resp.status

    async with running(home) as service:
        with nginx(
            tmp_path / "nginx",
            upstream=service.url,
            server_cert=home.path / "tls" / "chain.pem",
            server_key=home.path / "tls" / "key.pem",
            client_ca=ca_dir / "client-ca.pem",
            upstream_ca=home.ca_cert,
            verify_client="on",
            crl=ca_dir / "crl-bundle.pem",
        ) as proxy:
            assert await get(proxy, good) == 200
            # nginx itself refuses the revoked certificate (400 "SSL certificate error").
            assert await get(proxy, bad) == 400
        # With only the issuing CA's CRL, nginx refuses every client: the reason for the bundle.
        with nginx(
            tmp_path / "nginx-crl-only",
            upstream=service.url,
            server_cert=home.path / "tls" / "chain.pem",
            server_key=home.path / "tls" / "key.pem",
            client_ca=ca_dir / "client-ca.pem",
            upstream_ca=home.ca_cert,
            verify_client="on",
            crl=ca_dir / "crl.pem",
        ) as proxy:
            assert await get(proxy, good) == 400
