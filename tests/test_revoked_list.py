"""GET /revoked: the issuer publishes revoked, unexpired token ids for resource servers, with
ETag / If-None-Match; and RevocationList reads it."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from mtlsauth.resource import RevocationList
from mtlsauth.resource.revocation import RevocationListError
from tests.conftest import ClientCert, Home, Service, client_context, running
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
        assert (status, body) == (200, {"issuer": home.settings.issuer, "tokens": []})
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
            assert not revocations.is_revoked(jti)
            await revocations.refresh()
            assert revocations.is_revoked(jti)
            await revocations.refresh()  # 304: the list stays
            assert revocations.is_revoked(jti)
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
