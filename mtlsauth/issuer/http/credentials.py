"""Client credentials of a request, as every authenticated endpoint reads them:
the Authorization header (RFC 6749 §2.3.1), the form, the assertion (RFC 7523), the TLS client
certificate (RFC 8705) or a trusted proxy's header."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from aiohttp import hdrs, web

from mtlsauth.core.errors import InvalidClient, InvalidRequest
from mtlsauth.core.peer import ProxyHeaderError, peer_certificate_der
from mtlsauth.issuer.clientauth import AuthRequest, PeerCertificate, parse_basic
from mtlsauth.issuer.http.keys import PROXY, TLS

__all__ = ["client_credentials", "one", "peer_certificate", "source_of"]


def one(form: Mapping[str, tuple[str, ...]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def source_of(request: web.Request) -> str:
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


def _connection_peer(ssl_object: object) -> PeerCertificate | None:
    """The peer of this TLS connection, made once per connection and kept on it."""
    peer: PeerCertificate | None = getattr(ssl_object, "mtlsauth_peer", None)
    if peer is None:
        der = peer_certificate_der(ssl_object)  # type: ignore[arg-type]
        if not der:
            return None
        peer = PeerCertificate(der)
        with contextlib.suppress(AttributeError):
            ssl_object.mtlsauth_peer = peer  # type: ignore[attr-defined]
    return peer


def peer_certificate(request: web.Request) -> PeerCertificate | None:
    """The client's leaf: from the TLS connection, or from a trusted proxy's header."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport else None
    proxy = request.app.get(PROXY)
    if proxy is None:
        peer = _connection_peer(ssl_object) if ssl_object is not None else None
    else:
        # One proxy connection carries many clients: nothing is kept per connection.
        try:
            der = proxy.peer_der(request.remote, peer_certificate_der(ssl_object), request.headers)
        except ProxyHeaderError as exc:
            raise InvalidRequest(
                str(exc), description="The client certificate header is not accepted."
            ) from exc
        peer = PeerCertificate(der) if der else None
    if peer is None:
        return None
    # The handshake already refused revoked certificates; a keep-alive connection that
    # predates the revocation is caught here (the verdict is redone when the CRL changes).
    state = request.app[TLS].revocation
    if peer.revocation_state is not state:
        peer.refusal = state.refusal(peer.der)
        peer.revocation_state = state
    if peer.refusal is not None:
        raise InvalidClient(peer.refusal, reason="revoked_certificate")
    return peer


def client_credentials(request: web.Request, form: Mapping[str, tuple[str, ...]]) -> AuthRequest:
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
        peer=peer_certificate(request),
    )
