"""One request's authorization, shared by the aiohttp, ASGI and FastAPI integrations and the
gate (RFC 6750 §2.1); and how each of them logs a refusal.

A refused request is logged at INFO on the ``mtlsauth.resource`` logger with its request id and
the precise reason (the error's ``detail``); the client gets only the generic RFC 6750 §3
description. The token itself is never logged.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from mtlsauth.core.errors import MalformedAuthorization, MissingToken, OAuthError
from mtlsauth.core.peer import ProxyConfig, ProxyHeaderError
from mtlsauth.resource.verify import Claims, TokenVerifier, require_scopes

__all__ = [
    "REQUEST_ID_HEADER",
    "authorize",
    "bearer_token",
    "log_refusal",
    "request_id",
    "resolve_peer",
]

log = logging.getLogger("mtlsauth.resource")

#: The header a proxy names the request in (nginx ``$request_id``, Envoy ``x-request-id``).
REQUEST_ID_HEADER: Final = "X-Request-Id"
# A request id is copied into logs and a response header: only a short, plain token is taken.
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")


def request_id(headers: Mapping[str, str]) -> str:
    """The proxy's request id when it sent a plain one, else a new random one."""
    value = headers.get(REQUEST_ID_HEADER)
    if value is not None and _REQUEST_ID.match(value):
        return value
    return uuid.uuid4().hex


def log_refusal(error: OAuthError, rid: str, where: str) -> None:
    """Log why a request was refused (the precise reason; never the token)."""
    log.info(
        "refused %s request %s: %d %s: %s", where, rid, error.status, error.error, error.detail
    )


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
