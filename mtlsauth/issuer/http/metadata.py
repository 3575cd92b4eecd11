"""GET /.well-known/oauth-authorization-server (RFC 8414 §3), with RFC 8705 §3.3 and §5."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mtlsauth.issuer.clientauth import supported_methods
from mtlsauth.issuer.clientauth.jwt_assertion import PRIVATE_KEY_ALGORITHMS, SECRET_ALGORITHMS
from mtlsauth.issuer.grant import GRANT_TYPE
from mtlsauth.issuer.http.keys import METADATA
from mtlsauth.issuer.settings import Settings

__all__ = ["WELL_KNOWN", "build_metadata", "metadata"]

WELL_KNOWN = "/.well-known/oauth-authorization-server"


def build_metadata(settings: Settings) -> dict[str, Any]:
    """The metadata document; endpoints are under the issuer (RFC 8414 §2)."""
    methods = supported_methods()
    algorithms = sorted(PRIVATE_KEY_ALGORITHMS | SECRET_ALGORITHMS)
    doc: dict[str, Any] = {
        "issuer": settings.issuer,
        "token_endpoint": f"{settings.issuer}/token",
        "jwks_uri": f"{settings.issuer}/jwks",
        "introspection_endpoint": f"{settings.issuer}/introspect",
        "revocation_endpoint": f"{settings.issuer}/revoke",
        "grant_types_supported": [GRANT_TYPE],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": methods,
        "token_endpoint_auth_signing_alg_values_supported": algorithms,
        "introspection_endpoint_auth_methods_supported": methods,
        "introspection_endpoint_auth_signing_alg_values_supported": algorithms,
        "revocation_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_signing_alg_values_supported": algorithms,
        "tls_client_certificate_bound_access_tokens": True,
    }
    mtls = settings.mtls_base_url
    if mtls is not None:
        doc["mtls_endpoint_aliases"] = {
            "token_endpoint": f"{mtls}/token",
            "introspection_endpoint": f"{mtls}/introspect",
            "revocation_endpoint": f"{mtls}/revoke",
        }
    return doc


async def metadata(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METADATA],
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )
