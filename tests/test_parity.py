"""Introspection (RFC 7662), revocation (RFC 7009), throttling (D7), key and secret rotation,
audit events and metrics — over real TLS."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import unused_port

from mtlsauth.client import form_encode
from mtlsauth.core.thumbprint import x5t_s256
from mtlsauth.issuer.keys import SigningKey
from mtlsauth.issuer.tokens import TokenSigner
from mtlsauth.resource import JWKSCache, TokenVerifier, VerifierConfig
from tests.conftest import ClientCert, Home, Service, cli_json, run_cli, running
from tests.proxies import PROXY_ADDRESS

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{form_encode(client_id)}:{form_encode(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode(), **FORM}


@pytest.fixture
def parties(home: Home) -> dict[str, Any]:
    """A bound mTLS client, an unbound secret client, and a resource server's secret client."""
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "svc", "--san-dns", "svc",
                    "--scope", "read")  # fmt: skip
    sec = home.add_client("--auth-method", "client_secret_basic", "--client-id", "sec",
                          "--scope", "read")  # fmt: skip
    rs = home.add_client("--auth-method", "client_secret_post", "--client-id", "rs")
    return {
        "cert": home.issue("svc", dns=["svc"]),
        "sec": sec["client_secret"],
        "rs": rs["client_secret"],
    }


async def introspect(service: Service, token: str, rs_secret: str) -> tuple[int, Any]:
    status, headers, body = await service.post(
        "/introspect", data={"token": token, "client_id": "rs", "client_secret": rs_secret}
    )
    assert headers.get("Cache-Control") == "no-store"
    return status, body


async def secret_token(service: Service, secret: str) -> str:
    status, _, body = await service.post(
        data="grant_type=client_credentials", headers=basic("sec", secret)
    )
    assert status == 200, body
    return str(body["access_token"])


async def test_introspection(home: Home, parties: dict[str, Any], tmp_path: Path) -> None:
    cert: ClientCert = parties["cert"]
    async with running(home) as service:
        status, body = await service.token(cert, client_id="svc")
        bound = body["access_token"]
        unbound = await secret_token(service, parties["sec"])

        status, info = await introspect(service, bound, parties["rs"])
        assert status == 200
        assert info["active"] is True
        assert info["client_id"] == info["sub"] == "svc"
        assert info["scope"] == "read"
        assert info["iss"] == home.settings.issuer
        assert info["token_type"] == "Bearer"
        assert info["cnf"] == {"x5t#S256": x5t_s256(cert.der)}
        assert {"exp", "iat", "aud", "jti"} <= set(info)

        status, info = await introspect(service, unbound, parties["rs"])
        assert info["active"] is True
        assert "cnf" not in info

        settings = home.settings
        key = SigningKey.load(settings.signing_key)
        expired = (
            TokenSigner(issuer=settings.issuer, key=key, ttl=-60)
            .sign(client_id="svc", audience=(settings.issuer,), scope=("read",), x5t_s256=None)
            .token
        )
        from mtlsauth.issuer.keys import generate_signing_key

        foreign_key = generate_signing_key(tmp_path / "foreign.pem")
        foreign = (
            TokenSigner(issuer=settings.issuer, key=foreign_key, ttl=60)
            .sign(client_id="svc", audience=(settings.issuer,), scope=("read",), x5t_s256=None)
            .token
        )
        other_issuer = (
            TokenSigner(issuer="https://evil.example", key=key, ttl=60)
            .sign(client_id="svc", audience=(settings.issuer,), scope=("read",), x5t_s256=None)
            .token
        )
        deep = base64.urlsafe_b64encode(b"[" * 5000).decode().rstrip("=") + ".e30.c2ln"
        for token in (expired, foreign, other_issuer, "garbage", bound[:-5] + "AAAAA", deep):
            status, info = await introspect(service, token, parties["rs"])
            assert (status, info) == (200, {"active": False}), token[:20]

        # Unauthenticated callers learn nothing.
        status, _, body = await service.post("/introspect", data={"token": bound})
        assert (status, body["error"]) == (401, "invalid_client")
        status, _, body = await service.post(
            "/introspect", data={"client_id": "rs", "client_secret": parties["rs"]}
        )
        assert (status, body["error"]) == (400, "invalid_request")


async def test_revocation(home: Home, parties: dict[str, Any]) -> None:
    async with running(home) as service:
        own = await secret_token(service, parties["sec"])
        status, body = await service.token(parties["cert"], client_id="svc")
        theirs = body["access_token"]

        # Decision D5: another client's token is refused and stays active.
        status, _, body = await service.post(
            "/revoke", data={"token": theirs}, headers=basic("sec", parties["sec"])
        )
        assert (status, body["error"]) == (400, "invalid_request")
        assert (await introspect(service, theirs, parties["rs"]))[1]["active"] is True

        status, _, _ = await service.post(
            "/revoke",
            data={"token": own, "token_type_hint": "access_token"},
            headers=basic("sec", parties["sec"]),
        )
        assert status == 200
        assert (await introspect(service, own, parties["rs"]))[1] == {"active": False}

        # Unknown tokens are not an error (RFC 7009 §2.2); unknown hints are.
        status, _, _ = await service.post(
            "/revoke", data={"token": "nonsense"}, headers=basic("sec", parties["sec"])
        )
        assert status == 200
        status, _, body = await service.post(
            "/revoke",
            data={"token": own, "token_type_hint": "id_token"},
            headers=basic("sec", parties["sec"]),
        )
        assert (status, body["error"]) == (400, "unsupported_token_type")
        status, _, body = await service.post("/revoke", data={"token": own})
        assert (status, body["error"]) == (401, "invalid_client")


async def test_revocation_seen_by_another_instance(home: Home, parties: dict[str, Any]) -> None:
    second = dataclasses.replace(home.settings, port=unused_port())
    async with running(home) as first, running(home, second) as other:
        token = await secret_token(first, parties["sec"])
        assert (await introspect(other, token, parties["rs"]))[1]["active"] is True
        status, _, _ = await first.post(
            "/revoke", data={"token": token}, headers=basic("sec", parties["sec"])
        )
        assert status == 200
        assert (await introspect(other, token, parties["rs"]))[1] == {"active": False}


async def _attempt(service: Service, secret: str, local: str = "127.0.0.1") -> tuple[int, Any, Any]:
    connector = aiohttp.TCPConnector(local_addr=(local, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            f"{service.url}/token",
            data="grant_type=client_credentials",
            headers=basic("sec", secret),
            ssl=service.ssl_context(),
        ) as resp,
    ):
        return resp.status, resp.headers.get("Retry-After"), await resp.json()


async def test_throttling(home: Home, parties: dict[str, Any]) -> None:
    """D7: per (client_id, source); 429 with Retry-After; others unaffected; it releases."""
    settings = dataclasses.replace(
        home.settings, throttle_limit=3, throttle_window=30.0, throttle_block=1.0
    )
    second = dataclasses.replace(settings, port=unused_port())
    async with running(home, settings) as service, running(home, second) as other:
        for _ in range(3):
            status, _, body = await _attempt(service, "wrong")
            assert (status, body["error"]) == (401, "invalid_client")
        status, retry_after, body = await _attempt(service, parties["sec"])
        assert (status, body["error"]) == (429, "slow_down")
        assert retry_after is not None
        assert int(retry_after) >= 1
        # The same client from another address is not locked out.
        status, _, body = await _attempt(service, parties["sec"], local=PROXY_ADDRESS)
        assert status == 200, body
        # Another worker on the same database learns the block.
        await asyncio.sleep(0.3)
        status, _, body = await _attempt(other, parties["sec"])
        assert (status, body["error"]) == (429, "slow_down")
        # It releases.
        await asyncio.sleep(1.2)
        status, _, body = await _attempt(service, parties["sec"])
        assert status == 200, body


async def test_signing_key_rotation(home: Home, parties: dict[str, Any]) -> None:
    """keys rotate: the next key (published ahead) signs; the old one stays published until
    its tokens expire; a resource server keeps verifying old and new tokens; no restart."""
    cert: ClientCert = parties["cert"]
    settings = home.settings
    before = cli_json(["keys", "list", "--home", str(home.path)])
    assert sorted(k["state"] for k in before) == ["active", "next"]
    upcoming = next(k["kid"] for k in before if k["state"] == "next")
    async with running(home) as service:
        keys = JWKSCache(issuer=settings.issuer, ssl_context=service.ssl_context(),
                         min_refetch_interval=0.0)  # fmt: skip
        verifier = TokenVerifier(VerifierConfig(settings.issuer, settings.audience), keys)
        try:
            status, body = await service.token(cert, client_id="svc")
            old = body["access_token"]
            await verifier.verify(old, cert.der)
            assert keys.fetches == 1

            rotated = await asyncio.to_thread(
                cli_json, ["keys", "rotate", "--home", str(home.path)]
            )
            assert rotated["active"] == upcoming
            await asyncio.sleep(0.3)
            status, body = await service.token(cert, client_id="svc")
            assert status == 200
            new = body["access_token"]
            header = json.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))
            assert header["kid"] == upcoming
            # The resource server already had the new key: no refetch needed.
            await verifier.verify(new, cert.der)
            assert keys.fetches == 1
            fresh = TokenVerifier(VerifierConfig(settings.issuer, settings.audience), keys)
            await fresh.verify(old, cert.der)  # old tokens still verify
            _status, jwks = await service.get("/jwks")
            states = {
                k["kid"]: k["state"] for k in cli_json(["keys", "list", "--home", str(home.path)])
            }
            assert {k["kid"] for k in jwks["keys"]} == set(states)
            assert sorted(states.values()) == ["active", "next", "retired"]
        finally:
            await keys.close()


async def test_secret_rotation_with_grace(home: Home, parties: dict[str, Any]) -> None:
    old = parties["sec"]
    async with running(home) as service:
        assert (await _attempt(service, old))[0] == 200
        code, out, err = await asyncio.to_thread(
            run_cli, ["client", "rotate-secret", "sec", "--grace", "1.5", "--home", str(home.path),
                      "--json"],
        )  # fmt: skip
        assert code == 0, err
        new = json.loads(out)["client_secret"]
        assert new != old
        await asyncio.sleep(0.3)
        # Both work during the grace period...
        assert (await _attempt(service, new))[0] == 200
        assert (await _attempt(service, old))[0] == 200
        await asyncio.sleep(1.5)
        # ...then only the new one.
        assert (await _attempt(service, new))[0] == 200
        status, _, body = await _attempt(service, old)
        assert (status, body["error"]) == (401, "invalid_client")
    shown = await asyncio.to_thread(cli_json, ["client", "show", "sec", "--home", str(home.path)])
    assert [s["active"] for s in shown["secrets"]] == [False, True]
    assert all(s["last_used_at"] for s in shown["secrets"])  # flushed at shutdown
    assert old not in json.dumps(shown)


async def test_audit_events_and_metrics(home: Home, parties: dict[str, Any]) -> None:
    cert: ClientCert = parties["cert"]
    async with running(home) as service:
        status, _body = await service.token(cert, client_id="svc", scope="read")
        assert status == 200
        await _attempt(service, "wrong")
        status, _, _ = await service.post("/token", data={"grant_type": "client_credentials"})
        assert status == 401
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{service.url}/metrics", ssl=service.ssl_context()) as resp,
        ):
            assert resp.status == 200
            text = await resp.text()
    lines = [json.loads(line) for line in (home.path / "audit.jsonl").read_text().splitlines()]
    issued = [e for e in lines if e["event"] == "token.issued"]
    failed = [e for e in lines if e["event"] == "auth.failed"]
    assert issued[0]["client_id"] == "svc"
    assert issued[0]["method"] == "tls_client_auth"
    assert issued[0]["thumbprint"] == x5t_s256(cert.der)
    assert issued[0]["scope"] == "read"
    assert issued[0]["aud"] == [home.settings.issuer]
    assert issued[0]["jti"]
    assert {e["reason"] for e in failed} == {"bad_secret", "no_credentials"}
    assert all(e["source"] == "127.0.0.1" for e in failed)
    assert failed[0]["client_id"] == "sec"
    assert parties["sec"] not in json.dumps(lines)
    assert 'mtlsauth_tokens_issued_total{auth_method="tls_client_auth",bound="true"} 1' in text
    assert 'mtlsauth_auth_failures_total{reason="bad_secret"} 1' in text
    assert 'mtlsauth_http_requests_total{endpoint="token",status="200"} 1' in text
    assert 'mtlsauth_http_requests_total{endpoint="token",status="401"} 2' in text
    assert 'mtlsauth_token_request_seconds_count{auth_method="tls_client_auth"} 1' in text
    assert 'le="+Inf"' in text


def test_structured_settings_are_validated(home: Home) -> None:
    from mtlsauth.issuer.settings import ConfigError, load_settings

    for env, message in [
        ({"MTLSAUTH_THROTTLE_LIMIT": "0"}, "'throttle_limit'"),
        ({"MTLSAUTH_STRICT_ASSERTION_AUDIENCE": "maybe"}, "true or false"),
        ({"MTLSAUTH_LOG_FORMAT": "xml"}, "text, json"),
        ({"MTLSAUTH_ASSERTION_MAX_LIFETIME": "7200"}, "'assertion_max_lifetime'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_settings(home.path, environ=env)
    settings = load_settings(home.path, environ={"MTLSAUTH_STRICT_ASSERTION_AUDIENCE": "yes"})
    assert settings.assertion_audiences == frozenset({settings.issuer})
