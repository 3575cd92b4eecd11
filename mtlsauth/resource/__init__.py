"""The resource-server checker: verify a token and that the presenting certificate is its own.

Core: :class:`TokenVerifier` (framework-free) with a :class:`JWKSCache`. Integrations:
:mod:`mtlsauth.resource.aiohttp` and :mod:`mtlsauth.resource.asgi`.
"""

from mtlsauth.resource.authorize import authorize, bearer_token
from mtlsauth.resource.jwks import JWKSCache, JWKSFetchError
from mtlsauth.resource.verify import (
    ALGORITHMS,
    Claims,
    TokenVerifier,
    VerifierConfig,
    require_scopes,
)

__all__ = [
    "ALGORITHMS",
    "Claims",
    "JWKSCache",
    "JWKSFetchError",
    "TokenVerifier",
    "VerifierConfig",
    "authorize",
    "bearer_token",
    "require_scopes",
]
