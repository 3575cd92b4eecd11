"""Revocation under external trust anchors: CRLs fetched from --crl-url and from certificates'
distribution points, OCSP from their responders (RFC 5280 §5, RFC 6960), served over local
HTTP by a responder built with cryptography alone; staleness budgets and dead servers."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import ClientCert, Home, Service, eventually, running
from tests.foreign_pki import ForeignPKI, Issuer
from tests.test_trust import trust_add


class Responder:
    """CRL and OCSP over plain HTTP on 127.0.0.1, signed on every request; ``up`` = False
    answers 503 as a dead server would (a refused connection behaves the same for the
    service: a failed fetch)."""

    def __init__(self, pki: ForeignPKI) -> None:
        self.pki = pki
        self.up = True
        self.crl_lifetime = dt.timedelta(hours=1)
        self.ocsp_lifetime = dt.timedelta(hours=1)
        self.crl_signer: Issuer | None = None
        self.ocsp_key: ec.EllipticCurvePrivateKey | None = None
        #: A delegated responder (RFC 6960 §4.2.2.2): its certificate signs the answers.
        self.delegate: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
        self.port = unused_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self.leaves: dict[int, x509.Certificate] = {}

    async def crl(self, _: web.Request) -> web.Response:
        self.requests += 1
        if not self.up:
            return web.Response(status=503)
        issuer = self.crl_signer or self.pki.intermediate
        body = dataclasses.replace(issuer, cert=self.pki.intermediate.cert).crl(
            next_update=self.crl_lifetime
        )
        return web.Response(body=body, content_type="application/pkix-crl")

    async def ocsp(self, request: web.Request) -> web.Response:
        self.requests += 1
        if not self.up:
            return web.Response(status=503)
        req = ocsp.load_der_ocsp_request(await request.read())
        issuer = self.pki.intermediate
        revoked_at = issuer.revoked.get(req.serial_number)
        leaf = self.leaves[req.serial_number]
        now = dt.datetime.now(dt.UTC)
        status = ocsp.OCSPCertStatus.REVOKED if revoked_at else ocsp.OCSPCertStatus.GOOD
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=leaf,
            issuer=issuer.cert,
            algorithm=hashes.SHA1(),  # noqa: S303 - the RFC 6960 CertID hash clients send
            cert_status=status,
            this_update=now - dt.timedelta(seconds=5),
            next_update=now + self.ocsp_lifetime,
            revocation_time=revoked_at,
            revocation_reason=None,
        )
        if self.delegate is not None:
            cert, key = self.delegate
            builder = builder.certificates([cert])
            resp = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, cert).sign(
                key, hashes.SHA256()
            )
        else:
            resp = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.cert).sign(
                self.ocsp_key or issuer.key, hashes.SHA256()
            )
        return web.Response(
            body=resp.public_bytes(serialization.Encoding.DER),
            content_type="application/ocsp-response",
        )

    def issue(self, out: Path, cn: str, **kw: object) -> ClientCert:
        cert = self.pki.issue(out, cn, **kw)  # type: ignore[arg-type]
        parsed = x509.load_der_x509_certificate(cert.der)
        self.leaves[parsed.serial_number] = parsed
        return cert

    async def __aenter__(self) -> Responder:
        app = web.Application()
        app.router.add_get("/crl", self.crl)
        app.router.add_post("/ocsp", self.ocsp)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._runner.cleanup()


@pytest.fixture
async def responder() -> AsyncIterator[Responder]:
    async with Responder(ForeignPKI.create("Acme")) as r:
        yield r


def _setup(home: Home, responder: Responder, tmp_path: Path, *trust_flags: str) -> None:
    trust_add(home, "acme", responder.pki.bundle(tmp_path / "acme.pem"), *trust_flags)
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                    "--subject-dn", "CN=svc", "--trust", "acme")  # fmt: skip


@pytest.fixture
def fast(home: Home) -> object:
    return dataclasses.replace(home.settings, trust_refresh_interval=0.5, trust_fetch_timeout=1)


async def status_of(service: Service, cert: ClientCert) -> tuple[int, str | None]:
    status, body = await service.token(cert=cert, client_id="svc")
    return status, body.get("error")


async def test_a_revocation_in_a_fetched_crl_reaches_a_running_server(
    home: Home, responder: Responder, tmp_path: Path, fast: object
) -> None:
    await asyncio.to_thread(_setup, home, responder, tmp_path, "--crl-url", f"{responder.base}/crl")
    leaf = responder.issue(tmp_path / "svc", "svc")
    async with running(home, fast) as service:  # type: ignore[arg-type]
        assert await status_of(service, leaf) == (200, None)
        responder.pki.revoke(leaf)

        async def refused() -> bool:
            return await status_of(service, leaf) == (401, "invalid_client")

        await eventually(refused, within=3.0)


async def test_crls_from_the_certificates_distribution_points(
    home: Home, responder: Responder, tmp_path: Path, fast: object
) -> None:
    await asyncio.to_thread(_setup, home, responder, tmp_path, "--crl-from-cdp")
    leaf = responder.issue(tmp_path / "svc", "svc", crl_urls=(f"{responder.base}/crl",))
    no_cdp = responder.issue(tmp_path / "other", "svc")
    async with running(home, fast) as service:  # type: ignore[arg-type]
        assert await status_of(service, leaf) == (200, None)
        # A certificate that names no CRL cannot be checked: refused (fail closed).
        assert await status_of(service, no_cdp) == (401, "invalid_client")
        responder.pki.revoke(leaf)

        async def refused() -> bool:
            return await status_of(service, leaf) == (401, "invalid_client")

        await eventually(refused, within=3.0)


async def test_a_dead_crl_server_is_tolerated_until_max_stale_then_fails_closed(
    home: Home, responder: Responder, tmp_path: Path, fast: object
) -> None:
    responder.crl_lifetime = dt.timedelta(seconds=2)
    await asyncio.to_thread(
        _setup, home, responder, tmp_path, "--crl-url", f"{responder.base}/crl", "--max-stale", "2"
    )
    leaf = responder.issue(tmp_path / "svc", "svc")
    async with running(home, fast) as service:  # type: ignore[arg-type]
        assert await status_of(service, leaf) == (200, None)
        responder.up = False
        killed = time.monotonic()
        # Within nextUpdate + max-stale (4 s) issuance goes on, without waiting on the dead
        # server: the fetches happen in the background.
        started = time.monotonic()
        assert await status_of(service, leaf) == (200, None)
        assert time.monotonic() - started < 0.5
        while time.monotonic() - killed < 1.5:
            assert await status_of(service, leaf) == (200, None)
            await asyncio.sleep(0.2)

        async def refused() -> bool:
            return await status_of(service, leaf) == (401, "invalid_client")

        await eventually(refused, within=6.0)
        assert time.monotonic() - killed > 2.0
        # Back up: the next refresh lets the certificate in again.
        responder.up = True

        async def accepted() -> bool:
            return await status_of(service, leaf) == (200, None)

        await eventually(accepted, within=3.0)


async def test_a_crl_not_signed_by_the_anchor_is_refused(
    home: Home, responder: Responder, tmp_path: Path, fast: object
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    responder.crl_signer = Issuer(cert=responder.pki.intermediate.cert, key=key)
    await asyncio.to_thread(_setup, home, responder, tmp_path, "--crl-url", f"{responder.base}/crl")
    leaf = responder.issue(tmp_path / "svc", "svc")
    async with running(home, fast) as service:  # type: ignore[arg-type]
        assert await status_of(service, leaf) == (401, "invalid_client")


async def test_ocsp_require_follows_the_responder_and_fails_closed_when_it_dies(
    home: Home, responder: Responder, tmp_path: Path, fast: object
) -> None:
    responder.ocsp_lifetime = dt.timedelta(seconds=2)
    await asyncio.to_thread(_setup, home, responder, tmp_path, "--ocsp", "require")
    leaf = responder.issue(tmp_path / "svc", "svc", ocsp_url=f"{responder.base}/ocsp")
    other = responder.issue(tmp_path / "other", "svc", ocsp_url=f"{responder.base}/ocsp")
    async with running(home, fast) as service:  # type: ignore[arg-type]
        assert await status_of(service, leaf) == (200, None)
        assert await status_of(service, other) == (200, None)
        responder.pki.revoke(leaf)

        async def refused() -> bool:
            return await status_of(service, leaf) == (401, "invalid_client")

        await eventually(refused, within=3.0)
        assert await status_of(service, other) == (200, None)
        responder.up = False
        # The cached good answer holds until its nextUpdate (2 s), then require fails closed.

        async def other_refused() -> bool:
            return await status_of(service, other) == (401, "invalid_client")

        await eventually(other_refused, within=6.0)


async def test_ocsp_prefer_falls_back_to_the_crl_or_fails_open_without_one(
    home: Home, responder: Responder, tmp_path: Path, fast: object
) -> None:
    responder.up = False
    await asyncio.to_thread(_setup, home, responder, tmp_path, "--ocsp", "prefer")
    leaf = responder.issue(tmp_path / "svc", "svc", ocsp_url=f"{responder.base}/ocsp")
    async with running(home, fast) as service:  # type: ignore[arg-type]
        # No OCSP answer and no CRL configured: prefer lets the certificate in, and a dead
        # responder costs at most trust_fetch_timeout, once.
        started = time.monotonic()
        assert await status_of(service, leaf) == (200, None)
        assert time.monotonic() - started < 2.0
        started = time.monotonic()
        assert await status_of(service, leaf) == (200, None)
        assert time.monotonic() - started < 0.5


async def test_ocsp_prefer_falls_back_to_a_crl(
    home: Home, responder: Responder, tmp_path: Path, fast: object
) -> None:
    await asyncio.to_thread(
        _setup, home, responder, tmp_path, "--ocsp", "prefer", "--crl-url", f"{responder.base}/crl"
    )
    leaf = responder.issue(tmp_path / "svc", "svc")  # names no OCSP responder
    responder.pki.revoke(leaf)
    async with running(home, fast) as service:  # type: ignore[arg-type]
        assert await status_of(service, leaf) == (401, "invalid_client")


async def test_a_forged_ocsp_answer_is_not_believed(
    home: Home, responder: Responder, tmp_path: Path, fast: object
) -> None:
    responder.ocsp_key = ec.generate_private_key(ec.SECP256R1())
    await asyncio.to_thread(_setup, home, responder, tmp_path, "--ocsp", "require")
    leaf = responder.issue(tmp_path / "svc", "svc", ocsp_url=f"{responder.base}/ocsp")
    async with running(home, fast) as service:  # type: ignore[arg-type]
        assert await status_of(service, leaf) == (401, "invalid_client")


def delegate(
    issuer: Issuer, *, ocsp_signing: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.OCSP_SIGNING if ocsp_signing else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OCSP responder")]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    return cert, key


@pytest.mark.parametrize("ocsp_signing", [True, False])
async def test_a_delegated_ocsp_responder_needs_id_kp_ocsp_signing(
    home: Home, responder: Responder, tmp_path: Path, fast: object, ocsp_signing: bool
) -> None:
    responder.delegate = delegate(responder.pki.intermediate, ocsp_signing=ocsp_signing)
    await asyncio.to_thread(_setup, home, responder, tmp_path, "--ocsp", "require")
    leaf = responder.issue(tmp_path / "svc", "svc", ocsp_url=f"{responder.base}/ocsp")
    async with running(home, fast) as service:  # type: ignore[arg-type]
        expected = (200, None) if ocsp_signing else (401, "invalid_client")
        assert await status_of(service, leaf) == expected
