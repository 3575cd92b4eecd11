"""How every authenticated endpoint (/token, /introspect, /revoke) authenticates its client.

The credentials come from the Authorization header (RFC 6749 §2.3.1), the form (§2.3.1, RFC 7523
§2.2 assertions) and the client certificate (RFC 8705 §2): the TLS connection's, or a trusted
proxy's header. The guard then authenticates them, throttled, audited and measured.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import hdrs, web

from mtlsauth.core.errors import InvalidClient, InvalidRequest
from mtlsauth.core.peer import PeerCertificate, ProxyHeaderError
from mtlsauth.issuer.clientauth import Authenticated, AuthRequest, parse_basic
from mtlsauth.issuer.http.keys import CLIENT_ID, GUARD, PROXY, TLS
from mtlsauth.issuer.tls.contexts import CheckingSSLObject

__all__ = ["authenticate", "one", "request_peer", "request_source"]


def one(form: Mapping[str, tuple[str, ...]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


async def authenticate(request: web.Request, form: Mapping[str, tuple[str, ...]]) -> Authenticated:
    """The request's client, authenticated by the guard; InvalidClient or InvalidRequest."""
    caller = await request.app[GUARD].authenticate(_credentials(request, form), _source(request))
    request[CLIENT_ID] = caller.client.client_id
    return caller


def request_source(request: web.Request) -> str:
    """The address failures of this request count against (see :func:`_source`)."""
    return _source(request)


def request_peer(request: web.Request) -> PeerCertificate | None:
    """The client's certificate, checked against revocation (see :func:`_peer`)."""
    return _peer(request)


def _source(request: web.Request) -> str:
    """The address failures are counted against (D7): the one a trusted proxy vouches for in
    ``client_address_header``, otherwise the TCP peer."""
    proxy = request.app.get(PROXY)
    if proxy is None:
        return request.remote or "unknown"
    values = request.headers.getall(proxy.address_header, []) if proxy.address_header else []
    try:
        return proxy.client_address(request.remote, values)
    except ProxyHeaderError as exc:
        raise InvalidRequest(
            str(exc), description="The forwarded client address is not accepted."
        ) from exc


def _connection_peer(request: web.Request) -> PeerCertificate | None:
    """The peer the TLS handshake of this connection made (see CheckingSSLObject)."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport else None
    return ssl_object.peer if isinstance(ssl_object, CheckingSSLObject) else None


def _peer(request: web.Request) -> PeerCertificate | None:
    """The client's leaf: from the TLS connection, or from a trusted proxy's header."""
    peer = _connection_peer(request)
    proxy = request.app.get(PROXY)
    if proxy is not None:
        # One proxy connection carries many clients: a forwarded certificate is one request's.
        try:
            der = proxy.peer_der(request.remote, peer.der if peer else None, request.headers)
        except ProxyHeaderError as exc:
            raise InvalidRequest(
                str(exc), description="The client certificate header is not accepted."
            ) from exc
        peer = PeerCertificate(der) if der else None
    if peer is None:
        return None
    refusal = request.app[TLS].refusal(peer)
    if refusal is not None:
        # D10: the client learns why its certificate is refused; the log gets the detail.
        raise InvalidClient(refusal, description=refusal.description, reason="revoked_certificate")
    return peer


def _credentials(request: web.Request, form: Mapping[str, tuple[str, ...]]) -> AuthRequest:
    client_id = one(form, "client_id")
    basic_secret = None
    authorization = request.headers.getall(hdrs.AUTHORIZATION, [])
    if len(authorization) > 1:
        raise InvalidRequest("repeated Authorization header")
    if authorization:
        basic_id, basic_secret = parse_basic(authorization[0])
        if client_id is not None and client_id != basic_id:
            raise InvalidRequest("client_id in the body differs from the Basic credentials")
        client_id = basic_id
    return AuthRequest(
        client_id=client_id,
        basic_secret=basic_secret,
        post_secret=one(form, "client_secret"),
        assertion=one(form, "client_assertion"),
        assertion_type=one(form, "client_assertion_type"),
        peer=_peer(request),
    )
