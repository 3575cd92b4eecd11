"""The OAuth error tree: every error owns its wire format.

::

    OAuthError                      (RFC 6749 §5.2 error response)
    ├── InvalidRequest              400 invalid_request
    │   └── HeadersTooLarge         431 invalid_request (RFC 6585 §5)
    ├── InvalidClient               401 invalid_client + WWW-Authenticate: Basic (decision D4)
    ├── InvalidGrant                400 invalid_grant
    ├── UnauthorizedClient          400 unauthorized_client
    ├── UnsupportedGrantType        400 unsupported_grant_type
    ├── InvalidScope                400 invalid_scope
    ├── InvalidTarget               400 invalid_target (RFC 8707 §2)
    ├── UnsupportedTokenType        400 unsupported_token_type (RFC 7009 §2.2.1)
    ├── SlowDown                    429 slow_down (throttled, with Retry-After)
    ├── ServerError                 500 server_error
    ├── TemporarilyUnavailable      503 temporarily_unavailable
    └── BearerError                 RFC 6750 §3 errors at a resource server
        ├── MissingToken            401, a bare ``Bearer`` challenge (no error code, §3.1)
        ├── MalformedAuthorization  400 invalid_request
        ├── InvalidToken            401 invalid_token
        └── InsufficientScope       403 insufficient_scope (with the needed ``scope``)

Each error carries a public ``description`` (generic and safe; it goes on the wire) and a
private ``detail`` (the precise reason; it goes only to the log). Raise them anywhere; the
server's one error middleware renders them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, Final

__all__ = [
    "JSON_NO_STORE",
    "NO_STORE",
    "REALM",
    "BearerError",
    "HeadersTooLarge",
    "InsufficientScope",
    "InvalidClient",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTarget",
    "InvalidToken",
    "MalformedAuthorization",
    "MissingToken",
    "OAuthError",
    "ServerError",
    "SlowDown",
    "TemporarilyUnavailable",
    "UnauthorizedClient",
    "UnsupportedGrantType",
    "UnsupportedTokenType",
]

#: The realm of every challenge: ``WWW-Authenticate: Basic`` (decision D4) and ``Bearer``
#: (RFC 6750 §3).
REALM: Final = "mtlsauth"

#: RFC 6749 §5.1: a response carrying a token, or anything about one, must not be cached.
#: Every response of the service that is not meant for caches carries these.
NO_STORE: Final[Mapping[str, str]] = MappingProxyType(
    {"Cache-Control": "no-store", "Pragma": "no-cache"}
)
#: The headers of a JSON body that must not be cached (token, introspection and error responses).
JSON_NO_STORE: Final[Mapping[str, str]] = MappingProxyType(
    {"Content-Type": "application/json", **NO_STORE}
)


class OAuthError(Exception):
    """An RFC 6749 §5.2 error response."""

    error: ClassVar[str] = "invalid_request"
    status: ClassVar[int] = 400
    default_description: ClassVar[str] = "The request is invalid."

    def __init__(
        self,
        detail: str = "",
        *,
        description: str | None = None,
        headers: Mapping[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        self.description = description or self.default_description
        self.detail = detail or self.description
        #: A short, low-cardinality label for metrics and audit (the error code by default).
        self.reason = reason or self.error
        self._headers = dict(headers or {})
        super().__init__(self.detail)

    def headers(self) -> dict[str, str]:
        """The response's headers: JSON, never cached (RFC 6749 §5.1), and the error's own."""
        return {**JSON_NO_STORE, **self._headers}

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}

    def body_bytes(self) -> bytes:
        return json.dumps(self.body(), separators=(",", ":")).encode()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(error={self.error!r}, detail={self.detail!r})"


class InvalidRequest(OAuthError):
    error = "invalid_request"
    default_description = "The request is missing a parameter, repeats one, or is malformed."


class HeadersTooLarge(InvalidRequest):
    """RFC 6585 §5: a request line or header field too long, or too many header fields."""

    status = 431
    default_description = "The request's header fields are too large or too many."


class InvalidClient(OAuthError):
    """Client authentication failed (RFC 6749 §5.2); always 401 with a Basic challenge (D4)."""

    error = "invalid_client"
    status = 401
    default_description = "Client authentication failed."

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "WWW-Authenticate": f'Basic realm="{REALM}"'}


class InvalidGrant(OAuthError):
    error = "invalid_grant"
    default_description = "The grant is invalid."


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"
    default_description = "The client is not authorized to use this grant type."


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"
    default_description = "The grant type is not supported; use client_credentials."


class InvalidScope(OAuthError):
    error = "invalid_scope"
    default_description = "The requested scope is invalid or exceeds what the client may request."


class InvalidTarget(OAuthError):
    """RFC 8707 §2: the requested resource is invalid or not allowed for the client."""

    error = "invalid_target"
    default_description = "The requested resource is invalid or not allowed for this client."


class UnsupportedTokenType(OAuthError):
    """RFC 7009 §2.2.1: revocation of this token type is not supported."""

    error = "unsupported_token_type"
    default_description = "This token type cannot be revoked here."


class SlowDown(OAuthError):
    error = "slow_down"
    status = 429
    default_description = "Too many failed attempts; retry later."

    def __init__(self, detail: str = "", *, retry_after: int) -> None:
        super().__init__(
            detail, headers={"Retry-After": str(max(1, retry_after))}, reason="throttled"
        )


class ServerError(OAuthError):
    error = "server_error"
    status = 500
    default_description = "The server encountered an internal error."


class TemporarilyUnavailable(OAuthError):
    error = "temporarily_unavailable"
    status = 503
    default_description = "The service is temporarily unavailable; retry later."


def _quoted(value: str) -> str:
    """An RFC 6750 §3 auth-param value: quoted, with no quote or backslash inside."""
    return '"' + "".join(c for c in value if c not in '"\\' and 0x20 <= ord(c) < 0x7F) + '"'


class BearerError(OAuthError):
    """An RFC 6750 §3 error: the challenge goes into ``WWW-Authenticate: Bearer``."""

    include_error: ClassVar[bool] = True

    def __init__(
        self, detail: str = "", *, description: str | None = None, scope: str = ""
    ) -> None:
        super().__init__(detail, description=description)
        self.scope = scope

    def challenge(self) -> str:
        params = [f"realm={_quoted(REALM)}"]
        if self.include_error:
            params.append(f"error={_quoted(self.error)}")
            params.append(f"error_description={_quoted(self.description)}")
        if self.scope:
            params.append(f"scope={_quoted(self.scope)}")
        return "Bearer " + ", ".join(params)

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "WWW-Authenticate": self.challenge()}

    def body(self) -> dict[str, str]:
        body = super().body()
        if self.scope:
            body["scope"] = self.scope
        return body


class MissingToken(BearerError):
    """§3.1: a request with no authentication gets a challenge without an error code."""

    error = "invalid_token"
    status = 401
    include_error = False
    default_description = "An access token is required."


class MalformedAuthorization(BearerError):
    error = "invalid_request"
    status = 400
    default_description = "The Authorization header is malformed."


class InvalidToken(BearerError):
    error = "invalid_token"
    status = 401
    default_description = "The access token is invalid, expired, or not bound to this certificate."


class InsufficientScope(BearerError):
    error = "insufficient_scope"
    status = 403
    default_description = "The access token does not carry the scope this request needs."
