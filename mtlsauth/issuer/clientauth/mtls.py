"""Mutual-TLS client authentication (RFC 8705 §2).

tls_client_auth (§2.1): the TLS layer validated the chain; here the leaf must have been issued
by the client CA — or chain to the external trust anchor the client was registered with
(``--trust``) — and carry the registered name, or be an X.509-SVID with the registered SPIFFE
ID (``--spiffe-id``; ``spiffe_x509``, draft-ietf-oauth-spiffe-client-auth §3.2, is that check
under the draft's name). self_signed_tls_client_auth (§2.2): the leaf
must be one of the registered certificates (by thumbprint) and valid now (decision D6).

Behind a trusted proxy no handshake of ours saw the certificate, so tls_client_auth also checks
here what OpenSSL checks in a handshake (RFC 5280 §4.1.2.5 validity, §4.2.1.12 extended key
usage: clientAuth when the extension is present) rather than trusting the proxy's settings.

Whatever the method, a certificate whose keyUsage leaves out digitalSignature is refused
(:func:`check_signing_usage`): a TLS client proves its key by signing CertificateVerify (RFC 8446
§4.4.2.2, RFC 5280 §4.2.1.3), and OpenSSL's sslclient purpose lets keyAgreement alone pass.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from mtlsauth.core.errors import InvalidClient
from mtlsauth.core.peer import PeerCertificate
from mtlsauth.issuer.clientauth.base import AuthContext, AuthRequest
from mtlsauth.issuer.model import Client
from mtlsauth.issuer.trust.spiffe import SpiffeError, SpiffePattern, svid_id

__all__ = [
    "authenticate_pki",
    "authenticate_self_signed",
    "check_bundle_fresh",
    "check_signing_usage",
]

#: Told to the client (decision D10): the certificate itself is refused, whoever presents it.
_NOT_FOR_SIGNING = (
    "The client certificate's keyUsage does not allow digitalSignature (RFC 8446 §4.4.2.2)."
)


def _peer(client: Client, request: AuthRequest) -> PeerCertificate:
    if request.peer is None:
        raise InvalidClient(
            f"client {client.client_id!r}: no TLS client certificate presented",
            reason="no_certificate",
        )
    return request.peer


def _parsed(peer: PeerCertificate) -> x509.Certificate:
    try:
        return peer.cert
    except ValueError as exc:
        raise InvalidClient(f"client certificate does not parse: {exc}") from exc


def _check_period(
    client: Client, peer: PeerCertificate, not_before: dt.datetime, not_after: dt.datetime
) -> None:
    now = dt.datetime.now(dt.UTC)
    if now < not_before or now > not_after:
        state = "not yet valid" if now < not_before else "expired"
        raise InvalidClient(
            f"client {client.client_id!r}: certificate {peer.thumbprint} is {state} "
            f"(valid {not_before.isoformat()} to {not_after.isoformat()})",
            reason="bad_certificate",
        )


def _check_purpose(client: Client, peer: PeerCertificate) -> None:
    try:
        usages = _parsed(peer).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return  # no restriction (RFC 5280 §4.2.1.12)
    except ValueError as exc:
        raise InvalidClient(
            f"client {client.client_id!r}: certificate {peer.thumbprint} has a malformed "
            f"extension: {exc}",
            reason="bad_certificate",
        ) from exc
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise InvalidClient(
            f"client {client.client_id!r}: certificate {peer.thumbprint} has an extended key "
            "usage without clientAuth",
            reason="bad_certificate",
        )


def check_signing_usage(peer: PeerCertificate) -> None:
    """RFC 8446 §4.4.2.2: the certificate's key must be allowed to sign, when keyUsage is
    present (RFC 5280 §4.2.1.3). Applies to every method and to forwarded certificates."""
    try:
        usage = _parsed(peer).extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    except ValueError as exc:
        raise InvalidClient(
            f"certificate {peer.thumbprint} has a malformed extension: {exc}",
            reason="bad_certificate",
        ) from exc
    if not usage.digital_signature:
        raise InvalidClient(
            f"certificate {peer.thumbprint} has keyUsage without digitalSignature",
            description=_NOT_FOR_SIGNING,
            reason="bad_certificate",
        )


async def _check_external(
    client: Client, peer: PeerCertificate, cert: x509.Certificate, context: AuthContext
) -> None:
    """A client registered with ``--trust NAME``: the leaf must chain to that anchor (not just
    any the handshake trusts, so another tenant's CA never matches) and not be revoked under
    the anchor's CRL/OCSP policy. Asked on every request: a revocation must reach keep-alive
    connections too, and the answers it needs are cached by the revocation component."""
    assert client.trust is not None
    check_bundle_fresh(client, context)
    chain = context.trust.chain(client.trust, cert, peer.intermediates)
    if isinstance(chain, str):
        raise InvalidClient(
            f"client {client.client_id!r}: certificate {peer.thumbprint} {chain}",
            reason="bad_certificate",
        )
    anchor = context.trust.get(client.trust)
    if anchor is not None and context.trust_revocation is not None:
        refusal = await context.trust_revocation.refusal(anchor, chain)
        if refusal is not None:
            raise InvalidClient(
                f"client {client.client_id!r}: certificate {peer.thumbprint} refused under "
                f"trust anchor {client.trust!r}: {refusal}",
                reason="bad_certificate",
            )


def check_bundle_fresh(client: Client, context: AuthContext) -> None:
    """SPIFFE Federation §5: a trust domain whose bundle could not be refreshed within its
    staleness budget (``--max-stale``) fails closed; the client is told why (decision D10)."""
    refusal = context.bundles.refusal(client.trust) if context.bundles and client.trust else None
    if refusal is not None:
        raise InvalidClient(
            f"client {client.client_id!r}: {refusal}",
            description="The client's SPIFFE trust domain bundle could not be refreshed within "
            "its staleness budget; its SVIDs are refused until it can be.",
            reason="stale_bundle",
        )


def _check_svid(
    client: Client, peer: PeerCertificate, cert: x509.Certificate, context: AuthContext
) -> None:
    """SPIFFE X509-SVID §5.2: the leaf is an SVID, its trust domain is one the client's anchor
    was registered for, and its ID is the registered one (or below the registered path)."""
    assert client.spiffe_id is not None
    assert client.trust is not None
    anchor = context.trust.get(client.trust)
    try:
        svid = svid_id(cert)
        pattern = SpiffePattern.parse(client.spiffe_id)
    except SpiffeError as exc:
        raise InvalidClient(
            f"client {client.client_id!r}: certificate {peer.thumbprint} is not a valid "
            f"X.509-SVID: {exc}",
            reason="bad_certificate",
        ) from exc
    if anchor is None or svid.trust_domain not in anchor.spiffe_trust_domains:
        raise InvalidClient(
            f"client {client.client_id!r}: SPIFFE ID {svid} is of a trust domain trust anchor "
            f"{client.trust!r} is not registered for",
            reason="bad_certificate",
        )
    if not pattern.matches(svid):
        raise InvalidClient(
            f"client {client.client_id!r}: SPIFFE ID {svid} does not match {pattern}",
            reason="bad_certificate",
        )


def _check_name(client: Client, peer: PeerCertificate, cert: x509.Certificate) -> None:
    if client.tls_name is None or not client.tls_name.matches(cert):
        raise InvalidClient(
            f"client {client.client_id!r}: certificate {peer.thumbprint} does not carry the "
            f"registered {client.tls_name.kind if client.tls_name else 'name'}",
            reason="bad_certificate",
        )


async def authenticate_pki(client: Client, request: AuthRequest, context: AuthContext) -> None:
    """RFC 8705 §2.1.2: the registered subject DN or SAN entry must match the certificate,
    which must be valid now and meant for client authentication."""
    peer = _peer(client, request)
    if client.trust is not None:
        cert = _parsed(peer)
        _check_period(client, peer, cert.not_valid_before_utc, cert.not_valid_after_utc)
        _check_purpose(client, peer)
        await _check_external(client, peer, cert, context)
        if client.spiffe_id is not None:
            _check_svid(client, peer, cert, context)
        else:
            _check_name(client, peer, cert)
        return
    generation = context.client_ca.generation
    known = context.pki_verdicts.period(peer.thumbprint, client, generation)
    if known is not None:
        # Proved before, and neither the client nor the CA changed since; time did.
        _check_period(client, peer, *known)
        return
    cert = _parsed(peer)
    period = (cert.not_valid_before_utc, cert.not_valid_after_utc)
    _check_period(client, peer, *period)
    _check_purpose(client, peer)
    if not context.client_ca.issued(cert):
        raise InvalidClient(
            f"client {client.client_id!r}: certificate {peer.thumbprint} was not issued by the "
            "client CA",
            reason="bad_certificate",
        )
    _check_name(client, peer, cert)
    context.pki_verdicts.remember(peer.thumbprint, client, generation, period)


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
