"""Client certificates from a TLS-terminating proxy: a real nginx in front of the token service,
the aiohttp checker and a Starlette app; the forwarded-certificate formats; spoofing refused.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import trustme
import uvicorn
from aiohttp import web
from aiohttp.test_utils import unused_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mtlsauth.bench.demo_api import create_demo_api
from mtlsauth.client import TokenClient
from mtlsauth.core.peer import ProxyConfig, ProxyHeaderError, cert_from_header, parse_networks
from mtlsauth.core.thumbprint import x5t_s256
from mtlsauth.issuer.settings import Settings
from mtlsauth.resource import JWKSCache, TokenVerifier, VerifierConfig
from mtlsauth.resource.asgi import CLAIMS_STATE_KEY, BearerMiddleware
from tests.conftest import ClientCert, Home, client_context, running, self_signed, trustme_cert
from tests.proxies import CERT_HEADER, PROXY_ADDRESS, nginx

FORM = {"grant_type": "client_credentials"}


def proxied_settings(home: Home, fmt: str = "nginx", header: str = CERT_HEADER) -> Settings:
    return dataclasses.replace(
        home.settings,
        trusted_proxies=(f"{PROXY_ADDRESS}/32",),
        client_cert_header=header,
        client_cert_format=fmt,  # type: ignore[arg-type]
    )


async def post_token(
    url: str,
    home: Home,
    cert: ClientCert | None,
    headers: dict[str, str] | None = None,
    **form: str,
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/token", data={**FORM, **form}, headers=headers, ssl=client_context(home, cert)
        ) as resp,
    ):
        if resp.content_type != "application/json":
            return resp.status, await resp.text()  # nginx's own error pages
        return resp.status, await resp.json()


def _proxy_for(home: Home, upstream: str, workdir: Path, verify: str) -> Any:
    return nginx(
        workdir,
        upstream=upstream,
        server_cert=home.path / "tls" / "chain.pem",
        server_key=home.path / "tls" / "key.pem",
        client_ca=home.settings.client_ca,
        upstream_ca=home.ca_cert,
        verify_client=verify,
    )


async def test_token_service_behind_nginx(home: Home, tmp_path: Path, other_ca: trustme.CA) -> None:
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--san-dns", "svc")  # fmt: skip
    mine = self_signed(tmp_path / "mine", "mine")
    await home.aadd_client("--auth-method", "self_signed_tls_client_auth", "--client-id", "ss",
                           "--cert", str(mine.cert))  # fmt: skip
    right = home.issue("svc", dns=["svc"])
    other = home.issue("other", dns=["other"])
    foreign = trustme_cert(other_ca, tmp_path / "foreign", "svc")
    settings = proxied_settings(home)
    async with running(home, settings) as service:
        # optional_no_ca: nginx passes any certificate on, so mtlsauth's own checks decide.
        with _proxy_for(home, service.url, tmp_path / "nginx", "optional_no_ca") as proxy:
            status, body = await post_token(proxy, home, None, client_id="svc")
            assert (status, body["error"]) == (401, "invalid_client")
            for cert in (foreign, other):
                status, body = await post_token(proxy, home, cert, client_id="svc")
                assert (status, body["error"]) == (401, "invalid_client")
            status, body = await post_token(proxy, home, right, client_id="svc")
            assert status == 200, body
            import jwt

            claims = jwt.decode(body["access_token"], options={"verify_signature": False})
            assert claims["cnf"]["x5t#S256"] == x5t_s256(right.der)

            status, body = await post_token(proxy, home, mine, client_id="ss")
            assert status == 200, body

        # A client that connects directly and forges the header is refused.
        forged = quote(right.cert.read_text(), safe="")
        status, body = await post_token(
            service.url, home, None, headers={CERT_HEADER: forged}, client_id="svc"
        )
        assert (status, body["error"]) == (400, "invalid_request")
        # Without the header a direct client is an ordinary TLS client.
        status, body = await post_token(service.url, home, right, client_id="svc")
        assert status == 200, body


async def test_nginx_verifying_clients_itself(
    home: Home, tmp_path: Path, other_ca: trustme.CA
) -> None:
    """ssl_verify_client optional: nginx refuses a foreign certificate before mtlsauth sees it."""
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--san-dns", "svc")  # fmt: skip
    right = home.issue("svc", dns=["svc"])
    foreign = trustme_cert(other_ca, tmp_path / "foreign", "svc")
    async with running(home, proxied_settings(home)) as service:
        with _proxy_for(home, service.url, tmp_path / "nginx", "optional") as proxy:
            status, _ = await post_token(proxy, home, foreign, client_id="svc")
            assert status == 400  # nginx's own "SSL certificate error" page
            status, body = await post_token(proxy, home, right, client_id="svc")
            assert status == 200, body


def _pem(cert: ClientCert) -> str:
    return cert.cert.read_text()


@pytest.mark.parametrize("fmt", ["rfc9440", "xfcc", "base64-der", "nginx"])
async def test_forwarded_certificate_formats(home: Home, fmt: str) -> None:
    """Each header format, sent over TLS from the trusted proxy address."""
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--san-dns", "svc")  # fmt: skip
    right = home.issue("svc", dns=["svc"])
    b64 = base64.b64encode(right.der).decode()
    header, value = {
        "rfc9440": ("Client-Cert", f":{b64}:"),
        "xfcc": (
            "X-Forwarded-Client-Cert",
            f"By=spiffe://edge;Hash={hashlib.sha256(right.der).hexdigest()};"
            f'Cert="{quote(_pem(right), safe="")}";Subject="CN=svc";URI=',
        ),
        "base64-der": ("X-Client-Cert", b64),
        "nginx": (CERT_HEADER, quote(_pem(right), safe="")),
    }[fmt]
    settings = proxied_settings(home, fmt=fmt, header=header)
    async with running(home, settings) as service:
        connector = aiohttp.TCPConnector(local_addr=(PROXY_ADDRESS, 0))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(
                f"{service.url}/token",
                data={**FORM, "client_id": "svc"},
                headers={header: value},
                ssl=client_context(home, None),
            ) as resp,
        ):
            body = await resp.json()
    assert resp.status == 200, body
    import jwt

    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["cnf"]["x5t#S256"] == x5t_s256(right.der)


def test_header_parsing_edge_cases(tmp_path: Path) -> None:
    from pki import CA

    issued = CA.create().issue_client(common_name="x")
    der = issued.cert_der()
    pem = issued.cert_pem().decode()
    two_hops = (
        f'Hash=1;Cert="{quote(pem, safe="")}",'
        f'By=spiffe://inner;Cert="{quote(pem, safe="")}";Subject="CN=a,\\"b\\""'
    )
    assert cert_from_header(two_hops, "xfcc", xfcc_mode="append_forward") == der
    assert cert_from_header("Hash=1;Subject=x", "xfcc") is None
    assert cert_from_header("", "nginx") is None
    for value, fmt in [
        ("abc", "rfc9440"),
        (":!!:", "rfc9440"),
        ("%2D%2D%2D", "nginx"),
        ('Cert="unterminated', "xfcc"),
        ("bm90IGEgY2VydA==", "base64-der"),
    ]:
        with pytest.raises(ProxyHeaderError):
            cert_from_header(value, fmt)  # type: ignore[arg-type]
    proxy = ProxyConfig(trusted=parse_networks(["10.0.0.0/8", "::1"]), header="H", fmt="nginx")
    assert proxy.is_trusted("10.1.2.3")
    assert proxy.is_trusted("::1")
    assert not proxy.is_trusted("127.0.0.1")
    assert not proxy.is_trusted(None)
    assert proxy.peer_der("127.0.0.1", b"tls", {}) == b"tls"
    assert proxy.peer_der("10.0.0.1", b"proxy-own-cert", {}) is None
    with pytest.raises(ProxyHeaderError):
        proxy.peer_der("127.0.0.1", None, {"H": "x"})


# --- resource servers behind nginx -------------------------------------------------------------


@contextlib.asynccontextmanager
async def uvicorn_app(app: Any, *, proxy_headers: bool = False) -> AsyncIterator[str]:
    """uvicorn as users run it (stopped on exit); with ``proxy_headers`` it trusts the proxy's
    address, as it trusts 127.0.0.1 by default (nginx here connects from PROXY_ADDRESS)."""
    port = unused_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
        proxy_headers=proxy_headers, forwarded_allow_ips=PROXY_ADDRESS,
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def whoami(request: Request) -> JSONResponse:
    claims = getattr(request.state, CLAIMS_STATE_KEY)
    return JSONResponse({"client_id": claims["client_id"], "cnf": claims.get("cnf")})


async def _get(url: str, home: Home, cert: ClientCert | None, token: str | None,
               headers: dict[str, str] | None = None) -> tuple[int, str, Any]:  # fmt: skip
    all_headers = dict(headers or {})
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    ctx = client_context(home, cert) if url.startswith("https") else None
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=all_headers, ssl=ctx if ctx else True) as resp,
    ):
        return resp.status, resp.headers.get("WWW-Authenticate", ""), await resp.json()


@pytest.fixture
def tls_client(home: Home) -> tuple[ClientCert, ClientCert]:
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "svc", "--san-dns", "svc",
                    "--scope", "demo.read")  # fmt: skip
    return home.issue("svc", dns=["svc"]), home.issue("other", dns=["other"])


async def _token(home: Home, cert: ClientCert) -> str:
    async with TokenClient(
        issuer=home.settings.issuer, ssl_context=client_context(home, cert), client_id="svc"
    ) as client:
        return await client.token()


async def test_starlette_behind_nginx(
    home: Home, tmp_path: Path, tls_client: tuple[ClientCert, ClientCert]
) -> None:
    right, other = tls_client
    settings = home.settings
    keys = JWKSCache(issuer=settings.issuer, ssl_context=client_context(home, None))
    verifier = TokenVerifier(VerifierConfig(settings.issuer, settings.audience), keys)
    proxy = ProxyConfig(trusted=parse_networks([PROXY_ADDRESS]), header=CERT_HEADER, fmt="nginx")

    def app(scopes: tuple[str, ...]) -> Any:
        starlette = Starlette(routes=[Route("/whoami", whoami)])
        return BearerMiddleware(starlette, verifier=verifier, scopes=scopes, proxy=proxy)

    try:
        async with running(home):
            token = await _token(home, right)
            for scopes, ok_status in ((("demo.read",), 200), (("demo.admin",), 403)):
                async with uvicorn_app(app(scopes)) as upstream:
                    with _proxy_for(home, upstream, tmp_path / f"ng{ok_status}", "optional") as px:
                        status, _, body = await _get(f"{px}/whoami", home, right, token)
                        assert status == ok_status, body
                        if status == 200:
                            assert body["cnf"]["x5t#S256"] == x5t_s256(right.der)
                            for cert in (None, other):
                                status, challenge, body = await _get(
                                    f"{px}/whoami", home, cert, token
                                )
                                assert (status, body["error"]) == (401, "invalid_token")
                                assert 'error="invalid_token"' in challenge
                            status, challenge, _ = await _get(f"{px}/whoami", home, right, None)
                            assert (status, challenge) == (401, 'Bearer realm="mtlsauth"')
                    # Straight to the app, forging the proxy's header: refused.
                    forged = {CERT_HEADER: quote(_pem(right), safe="")}
                    status, _, body = await _get(f"{upstream}/whoami", home, None, token, forged)
                    assert (status, body["error"]) == (400, "invalid_request")
    finally:
        await keys.close()


async def test_asgi_tls_extension() -> None:
    """Servers that implement the ASGI TLS extension hand the certificate over in the scope."""
    from pki import CA

    ca = CA.create()
    cert = ca.issue_client(common_name="svc")
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope["state"][CLAIMS_STATE_KEY])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    class FixedVerifier:
        async def verify(self, token: str, peer: bytes | None, **_: Any) -> dict[str, Any]:
            assert peer == cert.cert_der()
            return {"client_id": "svc", "token": token}

    middleware = BearerMiddleware(app, verifier=FixedVerifier())  # type: ignore[arg-type]
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "path": "/",
        "headers": [(b"authorization", b"Bearer abc")],
        "client": ("127.0.0.1", 5000),
        "extensions": {"tls": {"client_cert_chain": [cert.cert_pem().decode()]}},
    }
    await middleware(scope, None, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 204
    assert seen == {"client_id": "svc", "token": "abc"}


async def test_aiohttp_checker_behind_nginx(
    home: Home, tmp_path: Path, tls_client: tuple[ClientCert, ClientCert]
) -> None:
    right, other = tls_client
    settings = home.settings
    proxy = ProxyConfig(trusted=parse_networks([PROXY_ADDRESS]), header=CERT_HEADER, fmt="nginx")
    api = create_demo_api(
        issuer=settings.issuer, audience=settings.audience, issuer_ca=home.ca_cert, proxy=proxy
    )
    runner = web.AppRunner(api, handle_signals=False)
    await runner.setup()
    port = unused_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with running(home):
            token = await _token(home, right)
            with _proxy_for(home, f"http://127.0.0.1:{port}", tmp_path / "ng", "optional") as px:
                status, _, body = await _get(f"{px}/hello", home, right, token)
                assert status == 200, body
                status, _, body = await _get(f"{px}/hello", home, other, token)
                assert (status, body["error"]) == (401, "invalid_token")
    finally:
        await runner.cleanup()
