"""What every client authentication method (RFC 6749 §2.3, RFC 7523 §2, RFC 8705 §2) sees:
the request's credentials, the server-side material, and the remembered tls_client_auth
verdicts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from mtlsauth.core.peer import PeerCertificate
from mtlsauth.issuer.clientauth.remote_jwks import RemoteJWKS
from mtlsauth.issuer.model import Client, Federation, SecretEntry
from mtlsauth.issuer.secrets import generate_secret, hash_secret
from mtlsauth.issuer.store import Store
from mtlsauth.issuer.tls.contexts import ClientCA
from mtlsauth.issuer.trust.bundles import BundleRefresher
from mtlsauth.issuer.trust.revocation import TrustRevocation
from mtlsauth.issuer.trust.verifier import TrustSet

__all__ = [
    "AssertionPolicy",
    "AuthContext",
    "AuthRequest",
    "Authenticator",
    "PkiVerdicts",
]


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """The credentials of one request, as the endpoint extracted them."""

    client_id: str | None
    basic_secret: str | None
    post_secret: str | None
    assertion: str | None
    assertion_type: str | None
    peer: PeerCertificate | None


@dataclass(frozen=True, slots=True)
class AssertionPolicy:
    """RFC 7523 §3 rules for client assertions (decision D2 for ``aud``, D9 for lifetimes).

    An hour, because mainstream clients sign that far ahead out of the box (Authlib's
    ``PrivateKeyJWT`` and ``ClientSecretJWT`` use ``exp = iat + 3600``); replay stays impossible
    because the jti is kept until ``exp``.
    """

    audiences: frozenset[str]
    max_lifetime: int = 3600
    leeway: int = 30
    #: Federated tokens are minted by another issuer with its own lifetimes (a Kubernetes
    #: projected token lives at least 10 minutes), so they have their own ceiling.
    federated_max_lifetime: int = 3600
    #: This server's issuer identifier: the sole ``aud`` a JWT-SVID may carry (OAuth SPIFFE
    #: client authentication draft §3.1 item 3, after draft-ietf-oauth-rfc7523bis).
    issuer: str = ""


class _PkiVerdict(NamedTuple):
    client: Client
    generation: int
    not_before: dt.datetime
    not_after: dt.datetime


class PkiVerdicts:
    """tls_client_auth successes (RFC 8705 §2.1), remembered by certificate thumbprint.

    A reconnecting client is not parsed and matched against the CA and its registered name
    again: the CA check alone is a P-256 signature verification, ≈ 150 µs (timeit on the
    benchmark VM), half a token's cost. A verdict
    holds for one client object and CA generation, so a reload of either makes it be worked
    out again; the validity period it returns is checked by the caller on every use, so a
    verdict never outlives the certificate.
    """

    _MAX: Final = 16384

    def __init__(self) -> None:
        self._verdicts: dict[str, _PkiVerdict] = {}

    def period(
        self, thumbprint: str, client: Client, generation: int
    ) -> tuple[dt.datetime, dt.datetime] | None:
        """The remembered validity period, when this client was proved with this certificate
        under this CA generation; None otherwise."""
        known = self._verdicts.get(thumbprint)
        if known is None or known.client is not client or known.generation != generation:
            return None
        return known.not_before, known.not_after

    def remember(
        self,
        thumbprint: str,
        client: Client,
        generation: int,
        period: tuple[dt.datetime, dt.datetime],
    ) -> None:
        if len(self._verdicts) >= self._MAX:
            self._verdicts.clear()
        self._verdicts[thumbprint] = _PkiVerdict(client, generation, *period)


def _no_federation(_name: str) -> Federation | None:
    return None


@dataclass(frozen=True, slots=True)
class AuthContext:
    """Server-side material the methods need."""

    secret_key: bytes
    client_ca: ClientCA
    assertions: AssertionPolicy = field(default_factory=lambda: AssertionPolicy(frozenset()))
    store: Store | None = None
    remote_jwks: RemoteJWKS | None = None
    pki_verdicts: PkiVerdicts = field(default_factory=PkiVerdicts)
    #: The registered federations by name (the registry's look-up), for federated_jwt.
    federations: Callable[[str], Federation | None] = _no_federation
    #: The federations' JWK Sets, fetched and cached apart from the clients' jwks_uri.
    federation_keys: RemoteJWKS | None = None
    #: External trust anchors (``mtlsauth trust add``) for clients registered with --trust.
    trust: TrustSet = field(default_factory=TrustSet)
    #: Their CRLs and OCSP answers (None: no revocation checks, as in unit set-ups).
    trust_revocation: TrustRevocation | None = None
    #: The SPIFFE bundles of anchors with a bundle endpoint (None: none are followed).
    bundles: BundleRefresher | None = None
    #: Stand-ins a secret presented for an unregistered client_id is checked against, so that
    #: it costs the same HMAC and comparison as a wrong secret of a registered client.
    decoys: dict[str, Client] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # The decoy's secret is never known to anyone: nothing can match it.
        entry = SecretEntry(hash=hash_secret(self.secret_key, generate_secret()))
        decoys = {
            method: Client(
                client_id="(unregistered)", auth_method=method, bound_tokens=False, secrets=(entry,)
            )
            for method in ("client_secret_basic", "client_secret_post")
        }
        object.__setattr__(self, "decoys", decoys)


#: A method checks the request's credentials against the client and raises InvalidClient;
#: it returns the hash of the secret that matched, when a secret was used.
Authenticator = Callable[[Client, AuthRequest, AuthContext], Awaitable[str | None]]
