"""One request's authorization, shared by the aiohttp, ASGI and FastAPI integrations and the
gate (RFC 6750 §2.1), and the log line of a refusal: the client sees a generic description, the
log (INFO, logger ``mtlsauth.resource``) the precise reason with the request id the response
carries in ``X-Request-Id``. The token itself is never logged."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from multidict import MultiMapping

from mtlsauth.core.errors import MalformedAuthorization, MissingToken, OAuthError
from mtlsauth.core.peer import ProxyConfig, ProxyHeaderError
from mtlsauth.core.requestid import REQUEST_ID_HEADER, choose_request_id
from mtlsauth.resource.verify import Claims, TokenVerifier, require_scopes

__all__ = ["authorize", "bearer_token", "log_refusal", "resolve_peer"]

log = logging.getLogger("mtlsauth.resource")


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
        raise MalformedAuthorization(
            f"{exc}{_rewritten_hint(proxy, remote, headers)}",
            description=f"The client certificate header {proxy.header} is malformed, repeated, "
            "or was not sent by the trusted proxy.",
        ) from exc


def _values(headers: Mapping[str, str], name: str) -> list[str]:
    if isinstance(headers, MultiMapping):
        return list(headers.getall(name, []))
    value = headers.get(name)
    return [] if value is None else [value]


def _rewritten_hint(proxy: ProxyConfig, remote: str | None, headers: Mapping[str, str]) -> str:
    """Why a proxied request can look forged: the server put the forwarded client address in
    place of the proxy's (uvicorn does with its default ``--proxy-headers``), so the proxy is
    no longer recognised. Only the log sees this."""
    if proxy.is_trusted(remote) or remote is None:
        return ""
    forwarded = ",".join(_values(headers, "X-Forwarded-For")).split(",")
    if forwarded[-1].strip() != remote:
        return ""
    return (
        f"; {remote} is also the right-most X-Forwarded-For entry: the server seems to have "
        "replaced the proxy's address with the forwarded one (uvicorn's --proxy-headers does), "
        "so the proxy is not recognised: run uvicorn with --no-proxy-headers (BearerMiddleware "
        "takes the client address from a trusted proxy itself, with address_header)"
    )


def log_refusal(
    error: OAuthError,
    *,
    method: str,
    path: str,
    remote: str | None,
    headers: Mapping[str, str],
    proxy: ProxyConfig | None,
) -> str:
    """Log why a request is refused (INFO, with the precise reason); return its request id
    (a trusted proxy's sane ``X-Request-Id``, else a new one) for the response."""
    request_id = choose_request_id(
        _values(headers, REQUEST_ID_HEADER),
        trusted=proxy is not None and proxy.is_trusted(remote),
    )
    log.info(
        "%s %s -> %d %s: %s (peer %s, request %s)", method, path, error.status, error.error,
        error.detail, remote, request_id,
        extra={
            "request_id": request_id, "method": method, "path": path,
            "status": error.status, "error": error.error,
        },
    )  # fmt: skip
    return request_id


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
