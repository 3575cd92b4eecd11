"""ASGI middleware (Starlette, FastAPI, any ASGI app): RFC 6750 §2.1 bearer tokens, bound to
the client certificate by RFC 8705 §3.

::

    app = BearerMiddleware(app, verifier=verifier, scopes=("invoices.read",), proxy=proxy)

The certificate comes from the ASGI TLS extension (``scope["extensions"]["tls"]
["client_cert_chain"]``) where the server provides it, or — the common deployment, since
uvicorn and hypercorn do not — from a trusted TLS-terminating proxy's header (``proxy``).
The claims are put in ``scope["state"]["mtlsauth_claims"]`` (Starlette: ``request.state``).

Behind a proxy, run the server WITHOUT its proxy-headers option (uvicorn ``--no-proxy-headers``):
uvicorn's default replaces the connection's address with the ``X-Forwarded-For`` one before
this middleware runs, so the proxy could no longer be told from a client that forges the
certificate header. With ``proxy.address_header`` set, this middleware gives the app the client
address the trusted proxy vouches for instead (``scope["client"]``), judged on the real peer.

Why a request was refused is logged at INFO (logger ``mtlsauth.resource``) with the request id
the response carries in ``X-Request-Id``; the client sees only the generic description.

WebSocket handshakes need a token too (they are HTTP requests until accepted): a refused one
gets the RFC 6750 answer where the server offers the ``websocket.http.response`` extension,
else the handshake is closed (the server answers 403). Only ``lifespan`` passes untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from multidict import CIMultiDict

from mtlsauth.core.errors import MalformedAuthorization, OAuthError
from mtlsauth.core.peer import ProxyConfig, ProxyHeaderError
from mtlsauth.core.requestid import REQUEST_ID_HEADER
from mtlsauth.resource.authorize import authorize, log_refusal, resolve_peer
from mtlsauth.resource.verify import TokenVerifier

__all__ = ["CLAIMS_STATE_KEY", "BearerMiddleware", "tls_der_of_scope"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CLAIMS_STATE_KEY = "mtlsauth_claims"


def tls_der_of_scope(scope: Scope) -> bytes | None:
    """The client leaf of the ASGI TLS extension, where the server provides it."""
    chain = scope.get("extensions", {}).get("tls", {}).get("client_cert_chain")
    if not chain:
        return None
    try:
        return x509.load_pem_x509_certificate(str(chain[0]).encode()).public_bytes(Encoding.DER)
    except ValueError as exc:
        raise MalformedAuthorization(
            f"the server's client_cert_chain does not parse: {exc}"
        ) from exc


class BearerMiddleware:
    """Require a valid, certificate-bound access token on every HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: TokenVerifier,
        scopes: Iterable[str] = (),
        allow_unbound: bool | None = None,
        proxy: ProxyConfig | None = None,
        exempt: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.scopes = tuple(scopes)
        self.allow_unbound = allow_unbound
        self.proxy = proxy
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette routes on the same percent-decoded ``path`` compared here, so an exempt
        # path is exactly the route that runs. Anything but HTTP and WebSocket (lifespan)
        # carries no request to protect.
        if scope["type"] not in ("http", "websocket") or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        # Every copy of every header: a repeated certificate header is refused, never first-wins.
        headers: CIMultiDict[str] = CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope.get("headers", ())
        )
        authorization = headers.getall("authorization", [])
        client = scope.get("client")
        try:
            peer = resolve_peer(
                self.proxy, client[0] if client else None, tls_der_of_scope(scope), headers
            )
            claims = await authorize(
                self.verifier,
                authorization=authorization,
                peer_der=peer,
                scopes=self.scopes,
                allow_unbound=self.allow_unbound,
            )
        except OAuthError as exc:
            request_id = log_refusal(
                exc,
                method=scope.get("method", "GET"),
                path=scope.get("path", ""),
                remote=client[0] if client else None,
                headers=headers,
                proxy=self.proxy,
            )
            if scope["type"] == "websocket":
                await _refuse_websocket(scope, send, exc, request_id)
            else:
                await _send_error(send, exc, request_id)
            return
        scope.setdefault("state", {})[CLAIMS_STATE_KEY] = claims
        await self.app(self._forwarded(scope, headers), receive, send)

    def _forwarded(self, scope: Scope, headers: CIMultiDict[str]) -> Scope:
        """The scope with the client address the trusted proxy vouches for (``address_header``),
        as a server's proxy-headers option would set it — but judged on the real peer."""
        proxy, client = self.proxy, scope.get("client")
        if proxy is None or proxy.address_header is None or not client:
            return scope
        if not proxy.is_trusted(client[0]):
            return scope
        try:
            address = proxy.client_address(client[0], headers.getall(proxy.address_header, []))
        except ProxyHeaderError:
            return scope  # the proxy named no client: the app sees the proxy's address
        return {**scope, "client": (address, 0)}


async def _send_error(send: Send, error: OAuthError, request_id: str, prefix: str = "http") -> None:
    body = error.body_bytes()
    headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers().items()
    ]
    headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": f"{prefix}.response.start", "status": error.status, "headers": headers})
    await send({"type": f"{prefix}.response.body", "body": body})


async def _refuse_websocket(scope: Scope, send: Send, error: OAuthError, request_id: str) -> None:
    """ASGI spec: a close before accept makes the server refuse the handshake with 403."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await _send_error(send, error, request_id, prefix="websocket.http")
    else:
        await send({"type": "websocket.close", "code": 1008})
