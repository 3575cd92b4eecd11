"""FastAPI integration: a dependency per route (RFC 6750 §2.1 bearer tokens, bound to the
client certificate by RFC 8705 §3), with the claims for the handler and an OpenAPI security
scheme that shows what each route needs.

::

    app = FastAPI()
    install(app, verifier, proxy=ProxyConfig(...))

    @app.get("/invoices")
    async def invoices(claims: Claims = Depends(require_token("invoices.read"))) -> ...:
        ...

The certificate comes from the ASGI TLS extension where the server provides it, or from a
trusted TLS-terminating proxy's header (``proxy``; uvicorn and hypercorn do not provide it).
Refusals are RFC 6750 §3 responses (the generic description; the reason goes to the log at
INFO with a request id).

OpenAPI: every protected route lists the ``mtlsauth`` scheme (HTTP bearer, JWT) with the scopes
it needs (OpenAPI 3.1 §4.8.30: scopes of non-OAuth schemes are role names).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from fastapi import FastAPI, Request, Security
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from multidict import CIMultiDict
from starlette.responses import Response

from mtlsauth.core.errors import OAuthError
from mtlsauth.core.peer import ProxyConfig
from mtlsauth.resource.asgi import tls_der_of_scope
from mtlsauth.resource.authorize import authorize, log_refusal, resolve_peer
from mtlsauth.resource.verify import Claims, TokenVerifier

__all__ = ["SCHEME_NAME", "install", "require_token"]

SCHEME_NAME: Final = "mtlsauth"
_VERIFIER: Final = "mtlsauth_verifier"
_PROXY: Final = "mtlsauth_proxy"


class _BoundBearer(SecurityBase):
    """Only describes the scheme for OpenAPI; :func:`require_token` does the checking."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            bearerFormat="JWT",
            description="An access token bound to the client certificate (RFC 8705 §3): "
            "call over mutual TLS with the certificate the token was issued to.",
        )
        self.scheme_name = SCHEME_NAME

    async def __call__(self) -> None:
        return None


_SCHEME: Final = _BoundBearer()


async def _render(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, OAuthError)
    return Response(exc.body_bytes(), status_code=exc.status, headers=exc.headers())


def install(app: FastAPI, verifier: TokenVerifier, *, proxy: ProxyConfig | None = None) -> None:
    """Give ``app`` the verifier (and the trusted proxy) the dependencies use, and render
    OAuth errors as RFC 6750 responses."""
    setattr(app.state, _VERIFIER, verifier)
    setattr(app.state, _PROXY, proxy)
    app.add_exception_handler(OAuthError, _render)


def require_token(
    *scopes: str, allow_unbound: bool | None = None
) -> Callable[..., Awaitable[Claims]]:
    """A dependency: a valid, bound token with every scope in ``scopes``; returns its claims."""

    async def dependency(
        request: Request,
        _: None = Security(_SCHEME, scopes=list(scopes)),
    ) -> Claims:
        verifier = getattr(request.app.state, _VERIFIER, None)
        if not isinstance(verifier, TokenVerifier):
            raise RuntimeError("call mtlsauth.resource.fastapi.install(app, verifier) first")
        # Every copy of every header: a repeated certificate header is refused, never first-wins.
        headers: CIMultiDict[str] = CIMultiDict(request.headers.items())
        client = request.client
        try:
            peer = resolve_peer(
                getattr(request.app.state, _PROXY, None),
                client.host if client else None,
                tls_der_of_scope(request.scope),
                headers,
            )
            return await authorize(
                verifier,
                authorization=headers.getall("authorization", []),
                peer_der=peer,
                scopes=scopes,
                allow_unbound=allow_unbound,
            )
        except OAuthError as exc:
            log_refusal(
                exc,
                method=request.method,
                path=request.url.path,
                remote=client.host if client else None,
                headers=headers,
                proxy=getattr(request.app.state, _PROXY, None),
            )
            raise

    return dependency
