"""The client credentials grant (RFC 6749 §4.4): from authenticated client to signed token.

Knows nothing of HTTP, credentials or sources: it takes the authenticated client, the decoded
parameters and the client's certificate, and returns the token response body (§5.1) or raises
an OAuthError.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from mtlsauth.core.errors import (
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from mtlsauth.core.peer import PeerCertificate
from mtlsauth.issuer.audit import Audit
from mtlsauth.issuer.metrics import Metrics
from mtlsauth.issuer.model import SPIFFE_JWT_METHOD, Client
from mtlsauth.issuer.registration import validate_scope_tokens
from mtlsauth.issuer.tokens import TokenSigner

__all__ = ["GRANT_TYPE", "ClientCredentialsGrant", "TokenParams"]

GRANT_TYPE: Final = "client_credentials"


@dataclass(frozen=True, slots=True)
class TokenParams:
    """The token request parameters the grant reads (already de-duplicated)."""

    grant_type: str | None
    scope: str | None
    resources: Sequence[str]

    def __post_init__(self) -> None:
        # Refused before the client is authenticated: a malformed request is not a failure.
        if not self.grant_type:
            raise InvalidRequest("grant_type is missing")


class ClientCredentialsGrant:
    """Settles scope and audience for an authenticated client, binds and signs the token."""

    def __init__(
        self, *, signer: TokenSigner, default_audience: str, audit: Audit, metrics: Metrics
    ) -> None:
        self._signer = signer
        self._default_audience = (default_audience,)
        self._audit = audit
        self._metrics = metrics

    def issue(
        self,
        client: Client,
        params: TokenParams,
        peer: PeerCertificate | None,
        *,
        started: float,
    ) -> bytes:
        """The JSON token response (RFC 6749 §5.1) for ``client``, bound to ``peer`` when the
        client registered for bound tokens, or is federated (or a JWT-SVID's) and presented one
        (RFC 8705 §3).
        ``started`` is the request's ``time.perf_counter()``, so the latency histogram
        includes the authentication."""
        if params.grant_type != GRANT_TYPE:
            raise UnsupportedGrantType(f"grant_type {str(params.grant_type)[:40]!r}")
        if GRANT_TYPE not in client.grant_types:
            raise UnauthorizedClient(f"client {client.client_id!r} may not use {GRANT_TYPE}")
        scope = _granted_scope(client, params.scope)
        audience = _audience(client, params.resources) or self._default_audience
        thumbprint = None
        if client.bound_tokens:
            if peer is None:
                # Decision D3: the client asked for bound tokens but brought no certificate.
                raise InvalidRequest(
                    f"client {client.client_id!r} is registered for certificate-bound tokens "
                    "but presented no TLS client certificate",
                    description="This client's tokens are certificate-bound: present a TLS "
                    "client certificate.",
                )
            thumbprint = peer.thumbprint
        elif peer is not None and (
            client.federation is not None or client.auth_method == SPIFFE_JWT_METHOD
        ):
            # A federated workload's token (or a JWT-SVID) proves who it is, not what key it
            # holds: a certificate it does present makes the access token useless if stolen.
            thumbprint = peer.thumbprint
        token = self._signer.sign(
            client_id=client.client_id, audience=audience, scope=scope, x5t_s256=thumbprint
        )
        if self._audit.enabled:
            self._audit.event(
                "token.issued",
                client_id=client.client_id,
                jti=token.claims["jti"],
                method=client.auth_method,
                thumbprint=thumbprint,
                scope=" ".join(scope),
                aud=list(audience),
            )
        self._metrics.token_issued(client.auth_method, bound=thumbprint is not None)
        if peer is not None:
            self._metrics.client_certificate(client.client_id, peer)
        self._metrics.token_latency(client.auth_method, time.perf_counter() - started)
        response: dict[str, object] = {
            "access_token": token.token,
            "token_type": "Bearer",
            "expires_in": token.expires_in,
        }
        if scope:
            response["scope"] = " ".join(scope)
        return json.dumps(response, separators=(",", ":")).encode()


def _granted_scope(client: Client, requested: str | None) -> tuple[str, ...]:
    """RFC 6749 §3.3: every requested token must be allowed; none requested → the defaults."""
    if requested is None:
        return client.scopes
    try:
        tokens = validate_scope_tokens(requested.split(" "))
    except ValueError as exc:
        raise InvalidScope(f"client {client.client_id!r}: {exc}") from exc
    allowed = set(client.scopes)
    refused = [t for t in tokens if t not in allowed]
    if refused:
        raise InvalidScope(f"client {client.client_id!r} may not request scope(s) {refused}")
    return tokens


def _audience(client: Client, resources: Sequence[str]) -> tuple[str, ...]:
    """RFC 8707 §2: each ``resource`` is an absolute URI without fragment, allowed for the
    client."""
    for resource in resources:
        try:
            parts = urlsplit(resource)
        except ValueError as exc:  # e.g. an unclosed IPv6 literal
            raise InvalidTarget(f"resource {resource[:80]!r} does not parse: {exc}") from exc
        if not parts.scheme or (not parts.netloc and not parts.path) or parts.fragment:
            raise InvalidTarget(f"resource {resource[:80]!r} is not an absolute URI")
        if resource not in client.audiences:
            raise InvalidTarget(
                f"client {client.client_id!r} may not request resource {resource!r}"
            )
    return tuple(dict.fromkeys(resources)) if resources else client.audiences
