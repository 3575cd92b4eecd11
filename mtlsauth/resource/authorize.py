"""One request's authorization, shared by the aiohttp and ASGI integrations (RFC 6750 §2.1)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from mtlsauth.core.errors import MalformedAuthorization, MissingToken
from mtlsauth.core.peer import ProxyConfig, ProxyHeaderError
from mtlsauth.resource.verify import Claims, TokenVerifier, require_scopes

__all__ = ["authorize", "bearer_token", "resolve_peer"]


def bearer_token(authorization: Sequence[str]) -> str:
    """The token of an ``Authorization: Bearer`` header; MissingToken when there is none."""
    if not authorization:
        raise MissingToken("no Authorization header")
    if len(authorization) > 1:
        raise MalformedAuthorization("more than one Authorization header")
    scheme, _, token = authorization[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        raise MissingToken(f"Authorization scheme {scheme[:20]!r} is not Bearer")
    token = token.strip()
    if not token or " " in token:
        raise MalformedAuthorization("the Bearer credentials are not one token")
    return token


def resolve_peer(
    proxy: ProxyConfig | None,
    remote: str | None,
    tls_der: bytes | None,
    headers: Mapping[str, str],
) -> bytes | None:
    """The client certificate: the TLS one, or a trusted proxy's header when configured."""
    if proxy is None:
        return tls_der
    try:
        return proxy.peer_der(remote, tls_der, headers)
    except ProxyHeaderError as exc:
        raise MalformedAuthorization(str(exc)) from exc


async def authorize(
    verifier: TokenVerifier,
    *,
    authorization: Sequence[str],
    peer_der: bytes | None,
    scopes: Iterable[str] = (),
    allow_unbound: bool | None = None,
) -> Claims:
    """Verify the request's token, its binding to ``peer_der`` and the needed scopes."""
    token = bearer_token(authorization)
    claims = await verifier.verify(token, peer_der, allow_unbound=allow_unbound)
    require_scopes(claims, scopes)
    return claims
