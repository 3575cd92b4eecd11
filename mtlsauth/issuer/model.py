"""The registered-client model: a client, its secrets and certificates, its auth method.

Field names follow the RFC 7591 §2 client metadata where one exists (``token_endpoint_auth_method``
values of RFC 7591 §2, RFC 7523 §2.2 and RFC 8705 §2); the store persists it and the registry
(registry.py) caches it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from cryptography import x509

from mtlsauth.core.dn import CertificateName
from mtlsauth.core.thumbprint import x5t_s256

__all__ = [
    "AUTH_METHODS",
    "CERTIFICATE_METHODS",
    "FEDERATED_METHOD",
    "SECRET_METHODS",
    "SPIFFE_ID_METHODS",
    "SPIFFE_JWT_METHOD",
    "SPIFFE_X509_METHOD",
    "AuthMethod",
    "Client",
    "Federation",
    "RegisteredCert",
    "SecretEntry",
]

AuthMethod = Literal[
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
    "private_key_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
    "federated_jwt",
    "spiffe_jwt",
    "spiffe_x509",
]
AUTH_METHODS: Final[tuple[AuthMethod, ...]] = get_args(AuthMethod)
SECRET_METHODS: Final = frozenset({"client_secret_basic", "client_secret_post"})
CERTIFICATE_METHODS: Final = frozenset(
    {"tls_client_auth", "self_signed_tls_client_auth", "spiffe_x509"}
)
#: A JWT from an external issuer (a federation) names the client: RFC 7523 §2.2 assertion
#: whose ``iss``/``sub`` are the workload's, not the client_id (see clientauth/federated.py).
FEDERATED_METHOD: Final = "federated_jwt"
#: draft-ietf-oauth-spiffe-client-auth §4 names the SPIFFE methods: a JWT-SVID (§3.1) under an
#: anchor's SPIFFE bundle, and an X.509-SVID over mutual TLS (§3.2, RFC 8705 with the SVID
#: rules; the same check as tls_client_auth with --spiffe-id).
SPIFFE_JWT_METHOD: Final = "spiffe_jwt"
SPIFFE_X509_METHOD: Final = "spiffe_x509"
#: The methods a ``--spiffe-id`` (and with it ``--trust``) registers.
SPIFFE_ID_METHODS: Final = frozenset({"tls_client_auth", "spiffe_jwt", "spiffe_x509"})


@dataclass(frozen=True, slots=True)
class SecretEntry:
    """One active secret of a client (several during a rotation grace period)."""

    hash: str
    expires_at: float | None = None
    #: client_secret_jwt needs the secret itself (HMAC key): kept sealed (AES-GCM) only then.
    sealed: str | None = field(default=None, repr=False)
    created_at: float = 0.0
    last_used_at: float | None = None

    def is_active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class RegisteredCert:
    """A certificate registered for self_signed_tls_client_auth (RFC 8705 §2.2)."""

    der: bytes
    thumbprint: str
    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def from_der(cls, der: bytes) -> RegisteredCert:
        cert = x509.load_der_x509_certificate(der)
        return cls(
            der=der,
            thumbprint=x5t_s256(der),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )


@dataclass(frozen=True, slots=True)
class Client:
    """A registered client (RFC 7591 metadata names where they exist)."""

    client_id: str
    auth_method: AuthMethod
    bound_tokens: bool
    scopes: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ("client_credentials",)
    tls_name: CertificateName | None = None
    certificates: tuple[RegisteredCert, ...] = ()
    secrets: tuple[SecretEntry, ...] = field(default=(), repr=False)
    created_at: float = 0.0
    #: private_key_jwt keys: a registered JWK Set, or a URL to fetch one from.
    jwks: dict[str, Any] | None = field(default=None, repr=False)
    jwks_uri: str | None = None
    #: federated_jwt: the federation (by name) whose token authenticates the client, and the
    #: token's ``sub`` it must carry.
    federation: str | None = None
    federated_subject: str | None = None
    #: tls_client_auth: the external trust anchor the certificate must chain to (``trust
    #: add``); None for the home's client CA.
    trust: str | None = None
    #: tls_client_auth with an X.509-SVID, or spiffe_jwt (a JWT-SVID): ``spiffe://TD/path``
    #: or ``spiffe://TD/path/*``.
    spiffe_id: str | None = None

    def certificate(self, thumbprint: str) -> RegisteredCert | None:
        for cert in self.certificates:
            if cert.thumbprint == thumbprint:
                return cert
        return None


@dataclass(frozen=True, slots=True)
class Federation:
    """An external token issuer whose JWTs may authenticate clients (RFC 7523 §2.2 assertions
    from, e.g., a Kubernetes service-account issuer or a CI system's OIDC issuer).

    Keys come from a JWK Set at ``jwks_uri`` (given, or found by OpenID Connect discovery when
    the federation was added) or from the registered ``jwks``.
    """

    name: str
    issuer: str
    jwks_uri: str | None = None
    jwks: dict[str, Any] | None = field(default=None, repr=False)
    #: The ``aud`` the issuer's tokens carry for us; None: this server's assertion audiences.
    audience: str | None = None
    created_at: float = 0.0
