"""federated_jwt: a workload's token from an external issuer authenticates a client.

The request is an RFC 7523 §2.2 client assertion (``client_assertion_type``
``urn:ietf:params:oauth:client-assertion-type:jwt-bearer``), but the JWT is minted by a
federation — a Kubernetes service-account issuer, a CI system's OIDC issuer — not by the
client: its ``iss`` is the federation's issuer and its ``sub`` the workload
(``system:serviceaccount:payments:billing``), never our client_id. RFC 7523 §3 item 2.B and
OpenID Connect's ``private_key_jwt`` require ``sub`` = client_id, so this is a method of its
own and ``token_endpoint_auth_methods_supported`` says so.

* The ``client_id`` request parameter names the client; the client's registered federation and
  subject must be the assertion's. A client is never found from ``sub`` (the same subject may
  exist under several issuers).
* Checked as private_key_jwt checks (jwt_assertion.py, the same code): signature with a key
  of the federation, asymmetric algorithms only, ``iss``/``sub``/``aud``/``exp`` required,
  NumericDates, ``aud`` = the federation's configured audience or, when it has none, this
  server's assertion audiences (decision D2); lifetime at most
  ``federated_assertion_max_lifetime``.
* ``jti``: when present (Kubernetes and most CI issuers send one), single-use per federation
  issuer until ``exp``; without one the token is accepted and could be replayed within its
  lifetime, exactly as the external issuer's own relying parties would accept it.
"""

from __future__ import annotations

from typing import Any

from mtlsauth.core.errors import InvalidClient
from mtlsauth.issuer.clientauth.base import AuthContext, AuthRequest
from mtlsauth.issuer.clientauth.jwt_assertion import (
    PRIVATE_KEY_ALGORITHMS,
    assertion_header,
    jwk_keys,
    presented_assertion,
    use_jti,
    verify_assertion,
)
from mtlsauth.issuer.model import Client, Federation

__all__ = ["authenticate_federated"]


def _bad(client_id: str, detail: str, reason: str = "bad_assertion") -> InvalidClient:
    return InvalidClient(f"client {client_id!r}: {detail}", reason=reason)


async def _jwks(
    federation: Federation, kid: str | None, context: AuthContext
) -> list[dict[str, Any]]:
    if federation.jwks is not None:
        keys: list[dict[str, Any]] = federation.jwks.get("keys", [])
        return keys
    if federation.jwks_uri is None or context.federation_keys is None:
        raise InvalidClient(f"federation {federation.name!r} has no keys", reason="no_keys")
    return await context.federation_keys.keys(federation.jwks_uri, kid=kid)


async def authenticate_federated(
    client: Client, request: AuthRequest, context: AuthContext
) -> None:
    """Authenticate ``client`` with its federation's token (see the module docstring)."""
    if request.client_id != client.client_id:
        # Found through the assertion's iss: the client must be named by the request itself.
        raise _bad(client.client_id, "federated_jwt needs the client_id parameter")
    federation = context.federations(client.federation) if client.federation else None
    if federation is None or client.federated_subject is None:
        raise _bad(
            client.client_id,
            f"federation {client.federation!r} is not registered",
            reason="no_federation",
        )
    assertion = presented_assertion(client.client_id, request)
    alg, kid = assertion_header(client.client_id, assertion, PRIVATE_KEY_ALGORITHMS)
    keys = jwk_keys(await _jwks(federation, kid, context), alg, kid)
    policy = context.assertions
    audiences = {federation.audience} if federation.audience else policy.audiences
    claims, _ = verify_assertion(
        client.client_id,
        assertion,
        [(key, None) for key in keys],
        alg=alg,
        issuer=federation.issuer,
        subject=client.federated_subject,
        audiences=audiences,
        leeway=policy.leeway,
        max_lifetime=policy.federated_max_lifetime,
        require=("iss", "sub", "aud", "exp"),
    )
    if "jti" in claims:
        # The issuer's jti space, not the client's: one token cannot serve two clients.
        await use_jti(client.client_id, context, federation.issuer, claims)
