"""The resource-server checker end to end: a live token service and a live protected API.

Both use real TLS; the API verifies tokens with keys it fetched from the issuer's JWKS.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port
from cryptography.hazmat.primitives import serialization

from mtlsauth.bench.demo_api import create_demo_api, demo_api_ssl_context
from mtlsauth.client import TokenClient
from mtlsauth.core.errors import InvalidToken
from mtlsauth.core.thumbprint import b64url, x5t_s256
from mtlsauth.issuer.keys import SigningKey, generate_signing_key
from mtlsauth.issuer.tokens import TokenSigner
from mtlsauth.resource import JWKSCache, TokenVerifier, VerifierConfig
from tests.conftest import ClientCert, Home, client_context, make_home, run_cli, running


@contextlib.asynccontextmanager
async def demo_api(home: Home, audience: str | None = None) -> AsyncIterator[str]:
    settings = home.settings
    app = create_demo_api(
        issuer=settings.issuer,
        audience=audience or settings.audience,
        issuer_ca=home.ca_cert,
        min_refetch_interval=0.1,
    )
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = unused_port()
    try:
        await web.TCPSite(
            runner, "127.0.0.1", port, ssl_context=demo_api_ssl_context(settings)
        ).start()
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def call(
    api: str, home: Home, token: str | None, cert: ClientCert | None, auth: str | None = None
) -> tuple[int, str, Any]:
    headers = {}
    if auth is not None:
        headers["Authorization"] = auth
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{api}/hello", headers=headers, ssl=client_context(home, cert)) as resp,
    ):
        return resp.status, resp.headers.get("WWW-Authenticate", ""), await resp.json()


@pytest.fixture
def svc(home: Home) -> tuple[ClientCert, ClientCert]:
    """A demo client with its certificate, and another certificate from the same CA."""
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "demo",
                    "--san-dns", "demo", "--scope", "demo.read demo.write")  # fmt: skip
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "narrow",
                    "--san-dns", "narrow", "--scope", "other")  # fmt: skip
    return home.issue("demo", dns=["demo"]), home.issue("intruder", dns=["intruder"])


async def get_token(home: Home, cert: ClientCert, client_id: str = "demo") -> str:
    async with TokenClient(
        issuer=home.settings.issuer, ssl_context=client_context(home, cert), client_id=client_id
    ) as client:
        return await client.token()


def forge(home: Home, cert: ClientCert, **overrides: Any) -> str:
    """A token signed with the issuer's real key but with chosen issuer/audience/lifetime."""
    settings = home.settings
    signer = TokenSigner(
        issuer=overrides.get("issuer", settings.issuer),
        key=SigningKey.load(settings.signing_key),
        ttl=overrides.get("ttl", 300),
    )
    return signer.sign(
        client_id="demo",
        audience=overrides.get("audience", (settings.audience,)),
        scope=("demo.read",),
        x5t_s256=x5t_s256(cert.der),
    ).token


def hand_made(header: dict[str, Any], payload: dict[str, Any], sign: Any = None) -> str:
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    signature = b64url(sign(signing_input.encode())) if sign else ""
    return f"{signing_input}.{signature}"


async def test_binding_matrix(home: Home, svc: tuple[ClientCert, ClientCert]) -> None:
    right, other = svc
    async with running(home), demo_api(home) as api:
        token = await get_token(home, right)
        status, _, body = await call(api, home, token, right)
        assert status == 200, body
        assert body["client_id"] == "demo"
        assert body["cnf"] == {"x5t#S256": x5t_s256(right.der)}
        # Same token, no certificate / another certificate of the same CA: refused.
        for cert in (None, other):
            status, challenge, body = await call(api, home, token, cert)
            assert (status, body["error"]) == (401, "invalid_token")
            assert challenge.startswith("Bearer ")
            assert 'error="invalid_token"' in challenge
        # And the right certificate again (the cached verification still checks the binding).
        status, _, _ = await call(api, home, token, right)
        assert status == 200


async def test_bad_tokens(home: Home, svc: tuple[ClientCert, ClientCert]) -> None:
    right, _ = svc
    settings = home.settings
    key = SigningKey.load(settings.signing_key)
    now = int(time.time())
    claims = {
        "iss": settings.issuer, "sub": "demo", "client_id": "demo", "aud": settings.issuer,
        "iat": now, "exp": now + 300, "jti": "x", "scope": "demo.read",
        "cnf": {"x5t#S256": x5t_s256(right.der)},
    }  # fmt: skip
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = forge(home, right)
    head, payload, sig = good.split(".")
    tampered_sig = f"{head}.{payload}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
    tampered_payload = (
        f"{head}.{b64url(json.dumps({**claims, 'scope': 'demo.read demo.admin'}).encode())}.{sig}"
    )
    bad = {
        "expired": forge(home, right, ttl=-120),
        "wrong audience": forge(home, right, audience=("https://elsewhere.example",)),
        "wrong issuer": forge(home, right, issuer="https://evil.example"),
        "tampered signature": tampered_sig,
        "tampered payload": tampered_payload,
        "alg none": hand_made({"alg": "none", "typ": "at+jwt", "kid": key.kid}, claims),
        "HS256 with the public key": hand_made(
            {"alg": "HS256", "typ": "at+jwt", "kid": key.kid},
            claims,
            lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
        ),
        "wrong typ": hand_made({"alg": "ES256", "typ": "JWT", "kid": key.kid}, claims, key.sign),
        "missing jti": hand_made(
            {"alg": "ES256", "typ": "at+jwt", "kid": key.kid},
            {k: v for k, v in claims.items() if k != "jti"},
            key.sign,
        ),
        "not a jwt": "abc.def",
        "header not base64url": f"ab+/{head}.{payload}.{sig}",
        "header not JSON": f"{b64url(b'alg ES256')}.{payload}.{sig}",
        "header a JSON array": f"{b64url(b'[1]')}.{payload}.{sig}",
        "header nested too deeply": f"{b64url(b'[' * 5000)}.{payload}.{sig}",
        "header without kid": hand_made({"alg": "ES256", "typ": "at+jwt"}, claims, key.sign),
        "header with a numeric kid": hand_made(
            {"alg": "ES256", "typ": "at+jwt", "kid": 7}, claims, key.sign
        ),
        "another header, same signature": (
            f"{b64url(json.dumps({'alg': 'ES256', 'typ': 'at+jwt', 'kid': key.kid, 'x': 1}).encode())}"
            f".{payload}.{sig}"
        ),
    }
    async with running(home), demo_api(home) as api:
        # Control: the hand-made path produces a valid token when nothing is wrong.
        control = hand_made({"alg": "ES256", "typ": "at+jwt", "kid": key.kid}, claims, key.sign)
        assert (await call(api, home, control, right))[0] == 200
        assert (await call(api, home, good, right))[0] == 200
        for label, token in bad.items():
            status, _, body = await call(api, home, token, right)
            assert (status, body["error"]) == (401, "invalid_token"), label


async def test_other_issuer(home: Home, svc: tuple[ClientCert, ClientCert], tmp_path: Path) -> None:
    right, _ = svc
    second = await asyncio.to_thread(make_home, tmp_path / "second")
    foreign = TokenSigner(
        issuer=second.settings.issuer, key=SigningKey.load(second.settings.signing_key), ttl=300
    ).sign(
        client_id="demo", audience=(home.settings.audience,), scope=("demo.read",),
        x5t_s256=x5t_s256(right.der),
    ).token  # fmt: skip
    async with running(home), demo_api(home) as api:
        status, _, body = await call(api, home, foreign, right)
    assert (status, body["error"]) == (401, "invalid_token")


async def test_scope_and_malformed_headers(home: Home, svc: tuple[ClientCert, ClientCert]) -> None:
    right, _ = svc
    narrow = home.issue("narrow", dns=["narrow"])
    async with running(home), demo_api(home) as api:
        token = await get_token(home, narrow, client_id="narrow")
        status, challenge, body = await call(api, home, token, narrow)
        assert (status, body["error"]) == (403, "insufficient_scope")
        assert 'scope="demo.read"' in challenge

        status, challenge, body = await call(api, home, None, right)
        assert status == 401
        assert challenge == 'Bearer realm="mtlsauth"'  # RFC 6750 §3.1: no error code
        for auth in ("Bearer", "Bearer a b", "Bearer  "):
            status, _, body = await call(api, home, None, right, auth=auth)
            assert (status, body["error"]) == (400, "invalid_request"), auth
        status, _, body = await call(api, home, None, right, auth="Basic Zm9vOmJhcg==")
        assert status == 401


async def test_key_rotation_unknown_kid_refetches(
    home: Home, svc: tuple[ClientCert, ClientCert]
) -> None:
    right, _ = svc
    async with demo_api(home) as api:
        async with running(home):
            old = await get_token(home, right)
            assert (await call(api, home, old, right))[0] == 200
        # The issuer restarts with another signing key: tokens now carry an unknown kid.
        home.settings.signing_key.parent.joinpath("keys.json").unlink()
        new_key = generate_signing_key(home.settings.signing_key)
        async with running(home):
            new = await get_token(home, right)
            assert (
                json.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))["kid"] == new_key.kid
            )
            await asyncio.sleep(0.15)  # past the refetch rate limit
            status, _, body = await call(api, home, new, right)
            assert status == 200, body


async def test_issuer_down_serves_from_cache(
    home: Home, svc: tuple[ClientCert, ClientCert]
) -> None:
    right, _ = svc
    async with demo_api(home) as api:
        async with running(home):
            first = await get_token(home, right)
            unused = forge(home, right)
            assert (await call(api, home, first, right))[0] == 200
        # The issuer is gone: cached verification and cached keys still work.
        assert (await call(api, home, first, right))[0] == 200
        assert (await call(api, home, unused, right))[0] == 200


async def test_cache_gives_the_same_decision(
    home: Home, svc: tuple[ClientCert, ClientCert]
) -> None:
    right, other = svc
    settings = home.settings
    async with running(home):
        token = await get_token(home, right)
        results = []
        for _ in range(2):
            keys = JWKSCache(issuer=settings.issuer, ssl_context=client_context(home, None))
            verifier = TokenVerifier(VerifierConfig(settings.issuer, settings.audience), keys)
            try:
                fresh = await verifier.verify(token, right.der)
                cached = await verifier.verify(token, right.der)
                assert cached == fresh
                for _ in range(2):  # the binding is checked on cached tokens too
                    with pytest.raises(InvalidToken):
                        await verifier.verify(token, other.der)
                    with pytest.raises(InvalidToken):
                        await verifier.verify(token, None)
                assert keys.fetches == 1
                results.append(fresh)
            finally:
                await keys.close()
    assert results[0] == results[1]


async def test_unbound_tokens_are_a_setting(home: Home) -> None:
    sec = await home.aadd_client("--auth-method", "client_secret_basic", "--client-id", "s",
                                 "--scope", "demo.read")  # fmt: skip
    settings = home.settings
    async with running(home):
        async with TokenClient(
            issuer=settings.issuer, ssl_context=client_context(home, None), client_id="s",
            client_secret=sec["client_secret"],
        ) as client:  # fmt: skip
            token = await client.token()
        keys = JWKSCache(issuer=settings.issuer, ssl_context=client_context(home, None))
        try:
            strict = TokenVerifier(VerifierConfig(settings.issuer, settings.audience), keys)
            with pytest.raises(InvalidToken, match="not certificate-bound"):
                await strict.verify(token, None)
            lenient = TokenVerifier(
                VerifierConfig(settings.issuer, settings.audience, allow_unbound=True), keys
            )
            assert (await lenient.verify(token, None))["client_id"] == "s"
        finally:
            await keys.close()


async def test_token_client_cache_single_flight_refresh(
    home: Home, svc: tuple[ClientCert, ClientCert], monkeypatch: pytest.MonkeyPatch
) -> None:
    right, _ = svc
    async with (
        running(home),
        demo_api(home) as api,
        TokenClient(
            issuer=home.settings.issuer, ssl_context=client_context(home, right), client_id="demo"
        ) as client,
    ):
        tokens = await asyncio.gather(*(client.token() for _ in range(20)))
        assert len(set(tokens)) == 1
        assert client.requests == 1
        assert await client.token() == tokens[0]
        assert client.requests == 1
        # Shortly before expiry the client refreshes.
        real = time.monotonic
        monkeypatch.setattr(
            "mtlsauth.client.time.monotonic", lambda: real() + home.settings.token_ttl - 5
        )
        await client.token()
        assert client.requests == 2
        monkeypatch.undo()
        async with client.session() as session, session.get(f"{api}/hello") as resp:
            assert resp.status == 200
            assert (await resp.json())["client_id"] == "demo"


async def test_check_command(home: Home, svc: tuple[ClientCert, ClientCert]) -> None:
    right, other = svc
    settings = home.settings
    async with running(home):
        token = await get_token(home, right)
        base = ["check", "--issuer", settings.issuer, "--cacert", str(home.ca_cert),
                "--token", token]  # fmt: skip
        code, out, err = await asyncio.to_thread(run_cli, [*base, "--cert", str(right.cert)])
        assert code == 0, err
        assert json.loads(out)["cnf"]["x5t#S256"] == x5t_s256(right.der)
        code, out, err = await asyncio.to_thread(run_cli, [*base, "--cert", str(other.cert)])
        assert code == 1
        assert json.loads(out)["error"] == "invalid_token"
        assert "bound to another certificate" in err
        code, out, _ = await asyncio.to_thread(
            run_cli, [*base, "--cert", str(right.cert), "--scope", "demo.admin"]
        )
        assert code == 1
        assert json.loads(out)["error"] == "insufficient_scope"
