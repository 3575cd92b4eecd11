"""GET /revoked: the issuer publishes revoked, unexpired token ids for resource servers, with
ETag / If-None-Match; and RevocationList reads it."""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import aiohttp
import pytest

from mtlsauth.core.errors import InvalidToken
from mtlsauth.core.thumbprint import x5t_s256
from mtlsauth.resource import JWKSCache, RevocationList, TokenVerifier, VerifierConfig
from mtlsauth.resource.revocation import RevocationListError
from tests.conftest import ClientCert, Home, Service, client_context, run_cli, running
from tests.test_gate import issue


@pytest.fixture
def cert(home: Home) -> ClientCert:
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "svc", "--san-dns", "svc",
                    "--scope", "demo.read")  # fmt: skip
    return home.issue("svc", dns=["svc"])


async def fetch(service: Service, etag: str | None = None) -> tuple[int, str, Any]:
    headers = {"If-None-Match": etag} if etag else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{service.url}/revoked", headers=headers, ssl=client_context(service.home)
        ) as resp,
    ):
        body = await resp.json() if resp.status == 200 else None
        return resp.status, resp.headers["ETag"], body


async def test_revoked_list(home: Home, cert: ClientCert) -> None:
    async with running(home) as service:
        token = await issue(home, cert)
        status, etag, body = await fetch(service)  # no client certificate: public
        assert (status, body) == (
            200,
            {"issuer": home.settings.issuer, "tokens": [], "clients": [], "certificates": []},
        )
        assert (await fetch(service, etag))[0] == 304
        revocations = RevocationList(
            issuer=home.settings.issuer, ssl_context=client_context(home), interval=60
        )
        try:
            await revocations.refresh()
            status, _, _ = await service.post(
                "/revoke", data={"token": token, "client_id": "svc"}, cert=cert
            )
            assert status == 200
            await asyncio.sleep(1.1)  # the list is rebuilt at most once a second
            status, new_etag, body = await fetch(service, etag)
            assert (status, len(body["tokens"])) == (200, 1)
            assert new_etag != etag
            (jti,) = [entry["jti"] for entry in body["tokens"]]
            assert body["clients"] == []
            now = time.time()
            assert not revocations.refuses(jti, "svc", now)
            await revocations.refresh()
            assert revocations.refuses(jti, "svc", now)
            assert not revocations.refuses("another", "svc", now)
            await revocations.refresh()  # 304: the list stays
            assert revocations.refuses(jti, "svc", now)
            assert revocations.fetches == 3
        finally:
            await revocations.close()


async def test_a_list_that_cannot_be_fetched_is_an_error(home: Home, cert: ClientCert) -> None:
    async with running(home):
        revocations = RevocationList(
            issuer=home.settings.issuer + "/other", ssl_context=client_context(home)
        )
        try:
            with pytest.raises(RevocationListError):
                await revocations.refresh()
        finally:
            await revocations.close()


async def test_a_removed_clients_tokens_are_refused(home: Home, cert: ClientCert) -> None:
    settings = home.settings
    ctx = client_context(home)
    keys = JWKSCache(issuer=settings.issuer, ssl_context=ctx)
    revocations = RevocationList(issuer=settings.issuer, ssl_context=ctx, interval=60)
    verifier = TokenVerifier(
        VerifierConfig(settings.issuer, settings.audience), keys, revocations=revocations
    )
    try:
        async with running(home) as service:
            token = await issue(home, cert)
            await revocations.refresh()
            claims = await verifier.verify(token, cert.der)
            code, _, err = await asyncio.to_thread(
                run_cli, ["client", "remove", "svc", "--home", str(home.path)]
            )
            assert code == 0, err
            await asyncio.sleep(1.1)  # the list is rebuilt at most once a second
            _, _, body = await fetch(service)
            (entry,) = body["clients"]
            assert entry["client_id"] == "svc"
            assert entry["until"] >= claims["exp"]
            await revocations.refresh()
            with pytest.raises(InvalidToken):
                await verifier.verify(token, cert.der)
            # Registered again under the same id: its new tokens work.
            await asyncio.sleep(1.1)  # iat has a one-second resolution
            await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                                   "--san-dns", "svc", "--scope", "demo.read")  # fmt: skip
            await asyncio.sleep(0.5)  # the registry's reload
            assert (await verifier.verify(await issue(home, cert), cert.der))["client_id"] == "svc"
    finally:
        await revocations.close()
        await keys.close()


async def test_a_revoked_certificates_tokens_are_refused(home: Home, cert: ClientCert) -> None:
    settings = home.settings
    ctx = client_context(home)
    keys = JWKSCache(issuer=settings.issuer, ssl_context=ctx)
    revocations = RevocationList(issuer=settings.issuer, ssl_context=ctx, interval=60)
    verifier = TokenVerifier(
        VerifierConfig(settings.issuer, settings.audience), keys, revocations=revocations
    )
    try:
        async with running(home) as service:
            token = await issue(home, cert)
            await revocations.refresh()
            await verifier.verify(token, cert.der)
            code, _, err = await asyncio.to_thread(
                run_cli, ["pki", "revoke", "--home", str(home.path), "--cert", str(cert.cert)]
            )
            assert code == 0, err
            await asyncio.sleep(1.1)  # the list is rebuilt at most once a second
            _, _, body = await fetch(service)
            assert body["certificates"] == [x5t_s256(cert.der)]
            await revocations.refresh()
            with pytest.raises(InvalidToken):
                await verifier.verify(token, cert.der)
    finally:
        await revocations.close()
        await keys.close()


async def test_plain_http_is_refused() -> None:

    revocations = RevocationList(
        issuer="http://127.0.0.1:1", ssl_context=ssl.create_default_context()
    )
    try:
        with pytest.raises(RevocationListError, match="not an https URL"):
            await revocations.refresh()
    finally:
        await revocations.close()


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b'{"issuer": "https://other.example", "tokens": []}',
        b'{"issuer": "https://i.example", "tokens": {}}',
        b'{"issuer": "https://i.example", "tokens": [{"jti": 1}]}',
        b'{"issuer": "https://i.example", "tokens": [], "clients": [{"client_id": "c"}]}',
        b'{"issuer": "https://i.example", "tokens": [], "certificates": [1]}',
        b"[" * 5000,
    ],
)
def test_malformed_lists_are_refused(document: bytes) -> None:
    from mtlsauth.resource.revocation import _parse

    with pytest.raises(RevocationListError):
        _parse(document, "https://i.example")
