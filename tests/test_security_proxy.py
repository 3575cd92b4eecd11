"""Proxy mode under attack: forged XFCC elements, repeated certificate headers, expired or
wrong-purpose forwarded certificates, and encoded paths around the resource middleware's
exemptions. Real TLS, real servers, real certificates from the home's CA.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from yarl import URL

from mtlsauth.bench.demo_api import demo_api_ssl_context
from mtlsauth.client import TokenClient
from mtlsauth.core.peer import ProxyConfig, ProxyHeaderError, cert_from_header, parse_networks
from mtlsauth.core.thumbprint import x5t_s256
from mtlsauth.issuer.settings import Settings
from mtlsauth.resource import JWKSCache, TokenVerifier, VerifierConfig
from mtlsauth.resource.aiohttp import CLAIMS, PROXY, VERIFIER, token_middleware
from mtlsauth.resource.asgi import CLAIMS_STATE_KEY, BearerMiddleware
from pki import SubjectAltNames
from tests.conftest import ClientCert, Home, client_context, running
from tests.proxies import PROXY_ADDRESS
from tests.test_proxy import uvicorn_app

XFCC = "X-Forwarded-Client-Cert"
FORM = {"grant_type": "client_credentials"}


def envoy_element(cert: ClientCert, *, by: str = "spiffe://cluster.local/ns/edge/sa/envoy") -> str:
    """The element Envoy writes for a client (By, Hash, Cert, Subject, URI, DNS): Cert is the
    URL-encoded PEM in quotes, Subject the RFC 2253 name (OpenSSL escapes ``"``, ``,``, ``;``
    and ``\\`` with a backslash) in quotes."""
    parsed = x509.load_der_x509_certificate(cert.der)
    pem = parsed.public_bytes(Encoding.PEM).decode()
    subject = parsed.subject.rfc4514_string()
    parts = [
        f"By={by}",
        f"Hash={parsed.fingerprint(hashes.SHA256()).hex()}",
        f'Cert="{quote(pem, safe="")}"',
        f'Subject="{subject}"',
    ]
    try:
        sans = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = x509.SubjectAlternativeName([])
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    parts += [f"URI={uri}" for uri in uris] or ["URI="]
    parts += [f"DNS={dns}" for dns in sans.get_values_for_type(x509.DNSName)]
    return ";".join(parts)


def xfcc_settings(home: Home, mode: str = "sanitize_set") -> Settings:
    return dataclasses.replace(
        home.settings,
        trusted_proxies=(f"{PROXY_ADDRESS}/32",),
        client_cert_header=XFCC,
        client_cert_format="xfcc",
        client_cert_xfcc_mode=mode,  # type: ignore[arg-type]
    )


async def post_from_proxy(
    url: str, home: Home, headers: list[tuple[str, str]], **form: str
) -> tuple[int, Any]:
    """POST /token over TLS from the trusted proxy's address with exactly these headers."""
    connector = aiohttp.TCPConnector(local_addr=(PROXY_ADDRESS, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            f"{url}/token",
            data={**FORM, **form},
            headers=headers,  # a list keeps repeated headers apart
            ssl=client_context(home, None),
        ) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


def bound_to(body: Any) -> str:
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    return str(claims["cnf"]["x5t#S256"])


# --- item 1: XFCC parsed exactly as Envoy writes it ---------------------------------------------


@pytest.mark.parametrize("mode", ["append_forward", "sanitize_set"])
async def test_xfcc_open_quote_prefix_cannot_pick_the_victims_certificate(
    home: Home, mode: str
) -> None:
    """The attack: the client sends its own XFCC ending in an open quote and holds a certificate
    from the same CA with a ``"`` in its subject. Envoy (APPEND_FORWARD) appends its element;
    the old splitter shifted and took the victim's certificate from the client's prefix."""
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "victim",
                           "--san-dns", "victim")  # fmt: skip
    victim = home.issue("victim", dns=["victim"])
    attacker = home.issue('mallory"x', dns=["mallory"])
    client_prefix = f'Cert="{_pem_q(victim.der)}";Subject="'
    header = f"{client_prefix},{envoy_element(attacker)}"
    async with running(home, xfcc_settings(home, mode)) as service:
        status, body = await post_from_proxy(
            service.url, home, [(XFCC, header)], client_id="victim"
        )
    assert (status, body.get("error")) == (400, "invalid_request"), body


async def test_xfcc_san_cannot_forge_an_element(home: Home) -> None:
    """Envoy writes URI SANs unquoted: a same-CA certificate whose URI SAN carries
    ``,Hash=..;Cert=<victim>`` would make Envoy's own element end in a forged one."""
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "victim",
                           "--san-dns", "victim")  # fmt: skip
    victim = home.issue("victim", dns=["victim"])
    forged = f"Hash={hashlib.sha256(victim.der).hexdigest()};Cert={_pem_q(victim.der)}"
    attacker = home.issue("mallory", uri=[f"spiffe://evil/a,{forged}"])
    in_element = home.issue("mallory2", uri=[f"spiffe://evil/a;{forged}"])
    for mode, cert in [
        ("append_forward", attacker),
        ("sanitize_set", attacker),
        ("sanitize_set", in_element),
        ("append_forward", in_element),
    ]:
        async with running(home, xfcc_settings(home, mode)) as service:
            status, body = await post_from_proxy(
                service.url, home, [(XFCC, envoy_element(cert))], client_id="victim"
            )
        assert (status, body.get("error")) == (400, "invalid_request"), (mode, body)


async def test_xfcc_envoy_header_round_trip(home: Home) -> None:
    """An Envoy-written element with an escaped quote and commas in Subject, URI, Hash and Cert
    yields the certificate in Cert: a token bound to it."""
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--san-uri", "spiffe://example.org/svc")  # fmt: skip
    issued = home.authority.issue_client(
        common_name='svc "blue", eu;1',
        sans=SubjectAltNames(uri=["spiffe://example.org/svc"]),
        out=home.path.parent / "certs" / "svc",
    )
    cert = ClientCert(
        cert=issued.paths["cert"], key=issued.paths["key"], chain=issued.paths["chain"],
        der=issued.cert.cert_der(),
    )  # fmt: skip
    element = envoy_element(cert)
    assert '\\"blue\\"' in element
    assert "URI=spiffe://example.org/svc" in element
    assert cert_from_header(element, "xfcc") == cert.der
    for mode in ("sanitize_set", "append_forward"):
        async with running(home, xfcc_settings(home, mode)) as service:
            status, body = await post_from_proxy(
                service.url, home, [(XFCC, element)], client_id="svc"
            )
        assert status == 200, body
        assert bound_to(body) == x5t_s256(cert.der)


async def test_xfcc_append_forward_takes_the_last_element(home: Home) -> None:
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--san-dns", "svc")  # fmt: skip
    right = home.issue("svc", dns=["svc"])
    other = home.issue("other", dns=["other"])
    header = f"{envoy_element(other, by='spiffe://client-made')},{envoy_element(right)}"
    async with running(home, xfcc_settings(home, "append_forward")) as service:
        status, body = await post_from_proxy(service.url, home, [(XFCC, header)], client_id="svc")
        assert status == 200, body
        assert bound_to(body) == x5t_s256(right.der)
    async with running(home, xfcc_settings(home, "sanitize_set")) as service:
        # Envoy's SANITIZE_SET writes exactly one element: two mean something else wrote one.
        status, body = await post_from_proxy(service.url, home, [(XFCC, header)], client_id="svc")
        assert (status, body.get("error")) == (400, "invalid_request"), body


def _pem_q(der: bytes) -> str:
    pem = x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode()
    return quote(pem, safe="")


def test_xfcc_malformed_headers_refused() -> None:
    from pki import CA

    ca = CA.create()
    der = ca.issue_client(common_name="x").cert_der()
    cert = _pem_q(der)
    digest = hashlib.sha256(der).hexdigest()
    good = f'Hash={digest};Cert="{cert}";Subject="CN=x";URI=;DNS=a;DNS=b'
    assert cert_from_header(good, "xfcc") == der
    assert cert_from_header(f"cert={cert}", "xfcc") == der  # keys are case-insensitive
    assert cert_from_header("Hash=ab;Subject=x", "xfcc") is None
    bad = [
        'Cert="unterminated',
        f'Cert="{cert}"x',  # text after the closing quote
        f'Cert=a"b;Cert="{cert}"',  # a quote inside an unquoted value
        f'Cert="{cert}";Cert="{cert}"',  # Cert twice in one element
        f'Hash=1;Hash=2;Cert="{cert}"',
        f'Foo=1;Cert="{cert}"',  # not a key Envoy writes
        f'Cert"="{cert}"',
        f"Cert{cert}",  # no '='
        f'Cert="{cert}";',  # an empty pair
        f'Cert="{cert}",',  # an empty element
        f',Cert="{cert}"',
        f'Cert="{cert}";Subject="a\\',  # a dangling escape
        f'Hash={"0" * 64};Cert="{cert}"',  # Envoy's Hash is of the Cert beside it
    ]
    for value in bad:
        with pytest.raises(ProxyHeaderError):
            cert_from_header(value, "xfcc")


def test_xfcc_mode_is_a_validated_setting(home: Home) -> None:
    from mtlsauth.issuer.settings import ConfigError, load_settings

    settings = load_settings(home.path, environ={})
    assert settings.client_cert_xfcc_mode == "sanitize_set"
    env = {"MTLSAUTH_CLIENT_CERT_XFCC_MODE": "APPEND_FORWARD"}
    assert load_settings(home.path, environ=env).client_cert_xfcc_mode == "append_forward"
    for unsafe in ("forward_only", "ALWAYS_FORWARD_ONLY", "sanitize", "whatever"):
        with pytest.raises(ConfigError) as info:
            load_settings(home.path, environ={"MTLSAUTH_CLIENT_CERT_XFCC_MODE": unsafe})
        assert "client_cert_xfcc_mode" in str(info.value)
        assert "sanitize_set" in str(info.value)


# --- shared: a real token service, a bound token, and resource servers over real TLS ----------


@dataclasses.dataclass
class Issued:
    home: Home
    right: ClientCert
    other: ClientCert
    token: str
    verifier: TokenVerifier


@pytest.fixture
async def issued(home: Home) -> AsyncIterator[Issued]:
    """The token service running, client ``svc`` with a token bound to ``right``."""
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--san-dns", "svc", "--scope", "demo.read")  # fmt: skip
    right, other = home.issue("svc", dns=["svc"]), home.issue("other", dns=["other"])
    settings = home.settings
    keys = JWKSCache(issuer=settings.issuer, ssl_context=client_context(home, None))
    try:
        async with running(home):
            async with TokenClient(
                issuer=settings.issuer, ssl_context=client_context(home, right), client_id="svc"
            ) as client:
                token = await client.token()
            verifier = TokenVerifier(VerifierConfig(settings.issuer, settings.audience), keys)
            yield Issued(home, right, other, token, verifier)
    finally:
        await keys.close()


@contextlib.asynccontextmanager
async def aiohttp_tls(app: web.Application, home: Home) -> AsyncIterator[str]:
    """``app`` on 127.0.0.1 over TLS with the home's server certificate (client cert optional)."""
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = unused_port()
    try:
        ctx = demo_api_ssl_context(home.settings)
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def get(
    url: str,
    home: Home,
    *,
    cert: ClientCert | None = None,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    from_proxy: bool = False,
) -> tuple[int, Any]:
    connector = aiohttp.TCPConnector(local_addr=(PROXY_ADDRESS, 0) if from_proxy else None)
    ctx = client_context(home, cert) if url.startswith("https") else None
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(URL(url, encoded=True), headers=list(headers), ssl=ctx or True) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


def rfc9440(cert: ClientCert) -> str:
    return f":{base64.b64encode(cert.der).decode()}:"


RFC9440_PROXY = ProxyConfig(trusted=parse_networks([PROXY_ADDRESS]), header="Client-Cert")


# --- item 2: a repeated certificate header is refused everywhere -------------------------------


async def test_repeated_cert_header_refused_by_token_service(home: Home) -> None:
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--san-dns", "svc")  # fmt: skip
    right, other = home.issue("svc", dns=["svc"]), home.issue("other", dns=["other"])
    settings = dataclasses.replace(
        home.settings, trusted_proxies=(f"{PROXY_ADDRESS}/32",), client_cert_header="Client-Cert"
    )
    async with running(home, settings) as service:
        one = [("Client-Cert", rfc9440(right))]
        status, body = await post_from_proxy(service.url, home, one, client_id="svc")
        assert status == 200, body
        for twice in (one * 2, [*one, ("Client-Cert", rfc9440(other))]):
            status, body = await post_from_proxy(service.url, home, twice, client_id="svc")
            assert (status, body.get("error")) == (400, "invalid_request"), body
    for mode in ("sanitize_set", "append_forward"):
        async with running(home, xfcc_settings(home, mode)) as service:
            element = envoy_element(right)
            twice = [(XFCC, element), (XFCC, element)]
            status, body = await post_from_proxy(service.url, home, twice, client_id="svc")
            assert (status, body.get("error")) == (400, "invalid_request"), body


async def _whoami(request: web.Request) -> web.Response:
    return web.json_response({"client_id": request[CLAIMS]["client_id"]})


async def test_repeated_cert_header_refused_by_aiohttp_checker(issued: Issued) -> None:
    app = web.Application(middlewares=[token_middleware("demo.read")])
    app[VERIFIER], app[PROXY] = issued.verifier, RFC9440_PROXY
    app.router.add_get("/whoami", _whoami)
    auth = ("Authorization", f"Bearer {issued.token}")
    one = [auth, ("Client-Cert", rfc9440(issued.right))]
    async with aiohttp_tls(app, issued.home) as url:
        status, body = await get(f"{url}/whoami", issued.home, headers=one, from_proxy=True)
        assert status == 200, body
        twice = [*one, ("Client-Cert", rfc9440(issued.other))]
        status, body = await get(f"{url}/whoami", issued.home, headers=twice, from_proxy=True)
        assert (status, body.get("error")) == (400, "invalid_request"), body


async def _starlette_whoami(request: Request) -> JSONResponse:
    return JSONResponse({"client_id": getattr(request.state, CLAIMS_STATE_KEY)["client_id"]})


async def test_repeated_cert_header_refused_by_asgi_middleware(issued: Issued) -> None:
    starlette = Starlette(routes=[Route("/whoami", _starlette_whoami)])
    app = BearerMiddleware(starlette, verifier=issued.verifier, proxy=RFC9440_PROXY)
    auth = ("Authorization", f"Bearer {issued.token}")
    one = [auth, ("Client-Cert", rfc9440(issued.right))]
    async with uvicorn_app(app) as url:
        status, body = await get(f"{url}/whoami", issued.home, headers=one, from_proxy=True)
        assert status == 200, body
        twice = [*one, ("Client-Cert", rfc9440(issued.other))]
        status, body = await get(f"{url}/whoami", issued.home, headers=twice, from_proxy=True)
        assert (status, body.get("error")) == (400, "invalid_request"), body
        # From a client that is not the proxy the header is refused whatever its count.
        status, body = await get(f"{url}/whoami", issued.home, headers=one)
        assert (status, body.get("error")) == (400, "invalid_request"), body


# --- item 4: exemptions are decided on what the router dispatches -------------------------------


def _resource_app(issued: Issued, *scopes: str) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"handler": "health"})

    async def named(request: web.Request) -> web.Response:
        claims = request.get(CLAIMS)
        return web.json_response({"handler": "named", "name": request.match_info["name"],
                                  "client_id": claims and claims["client_id"]})  # fmt: skip

    app = web.Application(middlewares=[token_middleware(*scopes, exempt=["/api/health"])])
    app[VERIFIER] = issued.verifier
    app.router.add_get("/api/health", health)
    app.router.add_get("/{name}", named)
    return app


async def test_token_middleware_encoded_path_is_not_exempt(issued: Issued) -> None:
    """``/api%2Fhealth`` decodes to the exempt ``/api/health`` but the router dispatches it to
    the protected ``/{name}``: it needs a token like every other request to that handler."""
    home = issued.home
    async with aiohttp_tls(_resource_app(issued, "demo.read"), home) as url:
        status, body = await get(f"{url}/api%2Fhealth", home)
        assert (status, body.get("error")) == (401, "invalid_token"), body
        status, body = await get(f"{url}/api/health", home)
        assert (status, body) == (200, {"handler": "health"})


async def test_token_middleware_protects_every_other_route(issued: Issued) -> None:
    home, bearer = issued.home, [("Authorization", f"Bearer {issued.token}")]
    async with aiohttp_tls(_resource_app(issued, "demo.read"), home) as url:
        status, body = await get(f"{url}/invoices", home, cert=issued.right, headers=bearer)
        assert (status, body["client_id"]) == (200, "svc"), body
        status, body = await get(f"{url}/invoices", home, cert=issued.right)
        assert status == 401, body  # no token: a bare challenge (RFC 6750 §3.1)
        status, body = await get(f"{url}/invoices", home, cert=issued.other, headers=bearer)
        assert (status, body.get("error")) == (401, "invalid_token"), body  # not its cert
        status, body = await get(f"{url}/api/health", home, cert=issued.right, headers=bearer)
        assert (status, body) == (200, {"handler": "health"})
        # No route matched: protected too (the 404 is for those who may see the app).
        status, body = await get(f"{url}/no/such/route", home)
        assert status == 401, body
    async with aiohttp_tls(_resource_app(issued, "demo.admin"), home) as url:
        status, body = await get(f"{url}/invoices", home, cert=issued.right, headers=bearer)
        assert (status, body.get("error")) == (403, "insufficient_scope"), body


async def test_asgi_exemption_matches_what_starlette_dispatches(issued: Issued) -> None:
    """Starlette routes on the decoded ``path`` the middleware compares, so ``/api%2Fhealth``
    reaches the exempt handler itself, and a protected route still needs a token."""

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"handler": "health"})

    async def named(request: Request) -> JSONResponse:
        return JSONResponse({"handler": "named"})

    starlette = Starlette(routes=[Route("/api/health", health), Route("/{name:path}", named)])
    app = BearerMiddleware(starlette, verifier=issued.verifier, exempt=["/api/health"])
    async with uvicorn_app(app) as url:
        for path in ("/api/health", "/api%2Fhealth"):
            status, body = await get(f"{url}{path}", issued.home)
            assert (status, body) == (200, {"handler": "health"}), path
        for path in ("/api/health/", "/api//health", "/x/../api/health", "/Api/health"):
            status, body = await get(f"{url}{path}", issued.home)
            assert status == 401, (path, body)


# --- item 3: forwarded certificates are checked for validity period and purpose ----------------


def ca_signed(
    home: Home,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    eku: list[x509.ObjectIdentifier] | None,
) -> bytes:
    """A leaf for ``svc`` signed by the home's CA with the given period and EKU (DER)."""
    ca = home.ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("svc")]), critical=False)
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(Encoding.DER)


def _b64(der: bytes) -> str:
    return f":{base64.b64encode(der).decode()}:"


async def test_forwarded_certificate_period_and_purpose(home: Home) -> None:
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--san-dns", "svc")  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    day = dt.timedelta(days=1)
    client_auth, server_auth = ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH
    cases = {
        "valid": (ca_signed(home, not_before=now - day, not_after=now + day, eku=[client_auth]), 200),
        "no EKU": (ca_signed(home, not_before=now - day, not_after=now + day, eku=None), 200),
        "expired": (ca_signed(home, not_before=now - 2 * day, not_after=now - day, eku=[client_auth]), 401),
        "not yet valid": (ca_signed(home, not_before=now + day, not_after=now + 2 * day, eku=[client_auth]), 401),
        "serverAuth only": (ca_signed(home, not_before=now - day, not_after=now + day, eku=[server_auth]), 401),
        "anyEKU only": (ca_signed(home, not_before=now - day, not_after=now + day, eku=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]), 401),
    }  # fmt: skip
    settings = dataclasses.replace(home.settings, trusted_proxies=(f"{PROXY_ADDRESS}/32",))
    async with running(home, settings) as service:
        for name, (der, expected) in cases.items():
            headers = [("Client-Cert", _b64(der))]
            status, body = await post_from_proxy(service.url, home, headers, client_id="svc")
            if expected == 200:
                assert status == 200, (name, body)
                assert bound_to(body) == x5t_s256(der)
            else:
                assert (status, body.get("error")) == (401, "invalid_client"), (name, body)


async def test_cached_verdict_does_not_outlive_the_certificate(home: Home) -> None:
    """The first success is remembered per thumbprint; once the certificate expires the next
    request is refused all the same."""
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--san-dns", "svc")  # fmt: skip
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    expires = now + dt.timedelta(seconds=2)
    der = ca_signed(
        home, not_before=now - dt.timedelta(days=1), not_after=expires,
        eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )  # fmt: skip
    settings = dataclasses.replace(home.settings, trusted_proxies=(f"{PROXY_ADDRESS}/32",))
    headers = [("Client-Cert", _b64(der))]
    async with running(home, settings) as service:
        status, body = await post_from_proxy(service.url, home, headers, client_id="svc")
        assert status == 200, body
        await asyncio.sleep((expires - dt.datetime.now(dt.UTC)).total_seconds() + 1.1)
        status, body = await post_from_proxy(service.url, home, headers, client_id="svc")
        assert (status, body.get("error")) == (401, "invalid_client"), body


# --- the ASGI middleware: a WebSocket handshake is a request that needs a token too -------------


async def test_asgi_websocket_handshake_needs_a_token(issued: Issued) -> None:
    """Before, every non-HTTP scope passed untouched: a WebSocket route had no protection."""
    reached: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(dict(scope.get("state", {})))

    middleware = BearerMiddleware(app, verifier=issued.verifier, proxy=RFC9440_PROXY)

    async def call(headers: list[tuple[bytes, bytes]], **extra: Any) -> list[Any]:
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> Any:
            return {"type": "websocket.connect"}

        scope = {"type": "websocket", "path": "/ws", "headers": headers,
                 "client": (PROXY_ADDRESS, 5000), **extra}  # fmt: skip
        await middleware(scope, receive, send)
        return sent

    cert = [(b"client-cert", rfc9440(issued.right).encode())]
    sent = await call(cert)
    assert sent == [{"type": "websocket.close", "code": 1008}]
    sent = await call(cert, extensions={"websocket.http.response": {}})
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 401
    assert not reached
    bearer = (b"authorization", f"Bearer {issued.token}".encode())
    assert await call([*cert, bearer]) == []
    assert reached[0][CLAIMS_STATE_KEY]["client_id"] == "svc"
    other = [(b"client-cert", rfc9440(issued.other).encode()), bearer]
    assert await call(other) == [{"type": "websocket.close", "code": 1008}]
    await middleware({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert len(reached) == 2


# --- review: the nginx format holds exactly one PEM certificate and nothing else -----------------


def _nginx(der: bytes) -> str:
    pem = x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode()
    return quote(pem, safe="")


async def test_nginx_header_with_anything_beside_the_certificate_is_refused(home: Home) -> None:
    """A hop that merges repeated header lines joins them with ", ": the victim's public
    certificate followed by anything must not authenticate as the victim."""
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--san-dns", "svc")  # fmt: skip
    victim, other = home.issue("svc", dns=["svc"]), home.issue("other", dns=["other"])
    settings = dataclasses.replace(
        home.settings,
        trusted_proxies=(f"{PROXY_ADDRESS}/32",),
        client_cert_header="X-SSL-Client-Cert",
        client_cert_format="nginx",
    )
    async with running(home, settings) as service:
        exact = [("X-SSL-Client-Cert", _nginx(victim.der))]
        status, body = await post_from_proxy(service.url, home, exact, client_id="svc")
        assert status == 200, body
        for value in (
            f"{_nginx(victim.der)},{_nginx(other.der)}",
            f"{_nginx(victim.der)}, {_nginx(other.der)}",
            f"{_nginx(victim.der)}{_nginx(other.der)}",
            f"junk{_nginx(victim.der)}",
            f"{_nginx(victim.der)}trailing",
        ):
            headers = [("X-SSL-Client-Cert", value)]
            status, body = await post_from_proxy(service.url, home, headers, client_id="svc")
            assert (status, body.get("error")) == (400, "invalid_request"), value[-40:]
