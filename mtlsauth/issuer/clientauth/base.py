"""What every client authentication method sees and returns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple

from cryptography import x509

from mtlsauth.core.errors import InvalidClient
from mtlsauth.core.thumbprint import x5t_s256
from mtlsauth.issuer.model import Client, SecretEntry
from mtlsauth.issuer.secrets import generate_secret, hash_secret
from mtlsauth.issuer.tls.contexts import ClientCA

if TYPE_CHECKING:
    from mtlsauth.issuer.clientauth.remote_jwks import RemoteJWKS
    from mtlsauth.issuer.store import Store

__all__ = [
    "AssertionPolicy",
    "AuthContext",
    "AuthRequest",
    "Authenticator",
    "PeerCertificate",
    "PkiVerdict",
]


class PeerCertificate:
    """The TLS client leaf certificate: DER, thumbprint and (lazily) the parsed certificate.

    One instance lives as long as its TLS connection (see ``server.credentials``), so what is
    learned about the certificate — parsed form, revocation verdict, which client it
    authenticated — is worked out once per connection, not once per request. Every remembered
    verdict names what it depends on (the client object, the CA generation, the CRL state),
    so a reload of any of them makes it be worked out again.
    """

    __slots__ = ("__dict__", "der", "refusal", "revocation_state")

    def __init__(self, der: bytes) -> None:
        self.der = der
        self.revocation_state: object = None
        self.refusal: str | None = None

    @cached_property
    def thumbprint(self) -> str:
        return x5t_s256(self.der)

    @cached_property
    def cert(self) -> x509.Certificate:
        try:
            return x509.load_der_x509_certificate(self.der)
        except ValueError as exc:
            raise InvalidClient(f"client certificate does not parse: {exc}") from exc


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
    """RFC 7523 §3 rules for client assertions (decision D2 for ``aud``)."""

    audiences: frozenset[str]
    max_lifetime: int = 300
    leeway: int = 30


class PkiVerdict(NamedTuple):
    """A tls_client_auth success, remembered by certificate thumbprint.

    It holds for this client object and CA generation, and only within the certificate's
    validity period: the period is checked on every use, so a verdict never outlives it.
    """

    client: Client
    generation: int
    not_before: dt.datetime
    not_after: dt.datetime


@dataclass(frozen=True, slots=True)
class AuthContext:
    """Server-side material the methods need."""

    secret_key: bytes
    client_ca: ClientCA
    assertions: AssertionPolicy = field(default_factory=lambda: AssertionPolicy(frozenset()))
    store: Store | None = None
    remote_jwks: RemoteJWKS | None = None
    #: tls_client_auth verdicts by certificate thumbprint (see :class:`PkiVerdict`).
    #: A reconnecting client is not parsed and matched again; any reload invalidates it.
    pki_verdicts: dict[str, PkiVerdict] = field(default_factory=dict)
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
