"""POST /token: parse the request, hand it to the client credentials grant, answer.

RFC 6749 §4.4.2 request, §5.1 response with ``Cache-Control: no-store`` and ``Pragma: no-cache``.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from mtlsauth.clientauth import AuthRequest, PeerCertificate, parse_basic
from mtlsauth.errors import InvalidClient, InvalidRequest
from mtlsauth.grant import TokenParams
from mtlsauth.peer import ProxyHeaderError
from mtlsauth.server.forms import parse_form
from mtlsauth.server.keys import GRANT, PROXY, TLS
from mtlsauth.tls import peer_certificate_der

__all__ = ["peer_certificate", "token"]

_HEADERS = {
    "Content-Type": "application/json",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
}


def peer_certificate(request: web.Request) -> PeerCertificate | None:
    """The client's leaf: from the TLS connection, or from a trusted proxy's header."""
    transport = request.transport
    der = peer_certificate_der(transport.get_extra_info("ssl_object")) if transport else None
    proxy = request.app.get(PROXY)
    if proxy is not None:
        try:
            der = proxy.peer_der(request.remote, der, request.headers)
        except ProxyHeaderError as exc:
            raise InvalidRequest(
                str(exc), description="The client certificate header is not accepted."
            ) from exc
    if not der:
        return None
    # The handshake already refused revoked certificates; a keep-alive connection that
    # predates the revocation is caught here.
    refusal = request.app[TLS].revocation.refusal(der)
    if refusal is not None:
        raise InvalidClient(refusal)
    return PeerCertificate(der)


async def token(request: web.Request) -> web.Response:
    form = parse_form(await request.read(), request.content_type, request.charset)

    def one(name: str) -> str | None:
        values = form.get(name)
        return values[0] if values else None

    client_id = one("client_id")
    basic_secret = None
    authorization = request.headers.getall(hdrs.AUTHORIZATION, [])
    if len(authorization) > 1:
        raise InvalidRequest("repeated Authorization header")
    if authorization:
        basic_id, basic_secret = parse_basic(authorization[0])
        if client_id is not None and client_id != basic_id:
            raise InvalidRequest("client_id in the body differs from the Basic credentials")
        client_id = basic_id
    credentials = AuthRequest(
        client_id=client_id,
        basic_secret=basic_secret,
        post_secret=one("client_secret"),
        assertion=one("client_assertion"),
        assertion_type=one("client_assertion_type"),
        peer=peer_certificate(request),
    )
    params = TokenParams(
        grant_type=one("grant_type"),
        scope=one("scope"),
        resources=form.get("resource", ()),
    )
    body = request.app[GRANT].issue(params, credentials)
    return web.Response(body=body, headers=_HEADERS)
