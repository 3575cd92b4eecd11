"""The resource-server checker: verify a token (RFC 9068 §4) and that the presenting
certificate is its own (RFC 8705 §3); errors are RFC 6750 §3 challenges.

Core: :class:`TokenVerifier` (framework-free) with a :class:`JWKSCache` and, to refuse tokens
the issuer revoked, a :class:`RevocationList`. Integrations: :mod:`mtlsauth.resource.aiohttp`,
:mod:`mtlsauth.resource.asgi`, :mod:`mtlsauth.resource.fastapi`, and the gate for nginx and
Envoy (:mod:`mtlsauth.resource.gate`). It imports nothing of
mtlsauth but :mod:`mtlsauth.core` (tests/test_layout.py pins it, and its public names).
"""

from mtlsauth.resource.authorize import authorize, bearer_token
from mtlsauth.resource.jwks import JWKSCache, JWKSFetchError
from mtlsauth.resource.revocation import RevocationList
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
    "RevocationList",
    "TokenVerifier",
    "VerifierConfig",
    "authorize",
    "bearer_token",
    "require_scopes",
]
