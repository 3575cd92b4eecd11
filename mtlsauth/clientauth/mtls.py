"""Mutual-TLS client authentication (RFC 8705 §2).

tls_client_auth (§2.1): the TLS layer validated the chain; here the leaf must have been issued
by the client CA and carry the registered name. self_signed_tls_client_auth (§2.2): the leaf
must be one of the registered certificates (by thumbprint) and valid now (decision D6).
"""

from __future__ import annotations

import datetime as dt

from mtlsauth.clientauth.base import AuthContext, AuthRequest, PeerCertificate
from mtlsauth.clients import Client
from mtlsauth.errors import InvalidClient

__all__ = ["authenticate_pki", "authenticate_self_signed"]

_MAX_VERDICTS = 16384


def _peer(client: Client, request: AuthRequest) -> PeerCertificate:
    if request.peer is None:
        raise InvalidClient(
            f"client {client.client_id!r}: no TLS client certificate presented",
            reason="no_certificate",
        )
    return request.peer


async def authenticate_pki(client: Client, request: AuthRequest, context: AuthContext) -> None:
    """RFC 8705 §2.1.2: the registered subject DN or SAN entry must match the certificate."""
    peer = _peer(client, request)
    generation = context.client_ca.generation
    known = context.pki_verdicts.get(peer.thumbprint)
    if known is not None and known[0] is client and known[1] == generation:
        return  # proved before, and neither the client nor the CA changed since
    if not context.client_ca.issued(peer.cert):
        raise InvalidClient(
            f"client {client.client_id!r}: certificate {peer.thumbprint} was not issued by the "
            "client CA",
            reason="bad_certificate",
        )
    if client.tls_name is None or not client.tls_name.matches(peer.cert):
        raise InvalidClient(
            f"client {client.client_id!r}: certificate {peer.thumbprint} does not carry the "
            f"registered {client.tls_name.kind if client.tls_name else 'name'}",
            reason="bad_certificate",
        )
    if len(context.pki_verdicts) >= _MAX_VERDICTS:
        context.pki_verdicts.clear()
    context.pki_verdicts[peer.thumbprint] = (client, generation)


async def authenticate_self_signed(
    client: Client, request: AuthRequest, context: AuthContext
) -> None:
    """RFC 8705 §2.2.2: the certificate must be one the client registered."""
    peer = _peer(client, request)
    registered = client.certificate(peer.thumbprint)
    if registered is None:
        raise InvalidClient(
            f"client {client.client_id!r}: certificate {peer.thumbprint} is not registered",
            reason="bad_certificate",
        )
    now = dt.datetime.now(dt.UTC)
    if not registered.not_before <= now <= registered.not_after:
        raise InvalidClient(
            f"client {client.client_id!r}: certificate {peer.thumbprint} is expired or not "
            "yet valid",
            reason="bad_certificate",
        )
