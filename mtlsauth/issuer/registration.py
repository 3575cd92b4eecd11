"""Client registration: validate what an operator asks for and build the Client to store.

Metadata follows RFC 7591 and RFC 8705 §2: a tls_client_auth client names exactly one of
subject DN, SAN DNS, SAN URI, SAN IP or SAN email; a self_signed_tls_client_auth client
registers its certificates (PEM, or a JWKS whose keys carry ``x5c``); a federated_jwt client
names its federation and the ``sub`` of the federation's tokens.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mtlsauth.core.dn import CertificateName, DNError
from mtlsauth.issuer.model import (
    AUTH_METHODS,
    CERTIFICATE_METHODS,
    SECRET_METHODS,
    SPIFFE_ID_METHODS,
    SPIFFE_JWT_METHOD,
    SPIFFE_X509_METHOD,
    Client,
    RegisteredCert,
    SecretEntry,
)
from mtlsauth.issuer.secrets import generate_secret, hash_secret, seal_secret
from mtlsauth.issuer.trust.spiffe import SpiffeError, SpiffePattern

__all__ = [
    "MAX_SECRET_GRACE",
    "NewClient",
    "RegistrationError",
    "load_public_jwks",
    "name_taken_by",
    "new_secret",
    "register",
    "validate_grace",
    "validate_scope_tokens",
]

# RFC 6749 Appendix A.1: client-id = *VSCHAR (%x20-7E); no edge spaces, at most 200.
_CLIENT_ID: Final = re.compile(r"[\x21-\x7e]([\x20-\x7e]{0,198}[\x21-\x7e])?\Z")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+\Z")
# A JWT ``sub`` (RFC 7519 §4.1.2) is compared as a string: printable ASCII, bounded.
_SUBJECT: Final = re.compile(r"[\x21-\x7e]{1,2048}\Z")
#: The longest the old secrets may keep working after a rotation (30 days, in seconds): long
#: enough to roll a fleet over, short enough that a forgotten rotation still ends.
MAX_SECRET_GRACE: Final = 30 * 86400


class RegistrationError(ValueError):
    """The registration request is invalid; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class NewClient:
    """A stored client and, for secret methods, the secret to show once."""

    client: Client
    client_secret: str | None


def validate_scope_tokens(tokens: Sequence[str]) -> tuple[str, ...]:
    """RFC 6749 §3.3 scope tokens, de-duplicated in order; ValueError names a bad one."""
    for token in tokens:
        if not _SCOPE_TOKEN.match(token):
            raise ValueError(f"invalid scope token {token!r}")
    return tuple(dict.fromkeys(tokens))


def _load_pem_certs(paths: Sequence[Path]) -> list[bytes]:
    ders = []
    for path in paths:
        try:
            certs = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise RegistrationError(
                f"--cert {path}: not a readable PEM certificate ({exc})"
            ) from exc
        ders += [c.public_bytes(serialization.Encoding.DER) for c in certs]
    return ders


def _read_jwks(path: Path) -> list[Any]:
    """The ``keys`` of a JWK Set file (RFC 7517 §5); RegistrationError names what is wrong."""
    try:
        doc: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RegistrationError(f"--jwks {path}: not a readable JSON file ({exc})") from exc
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not keys:
        raise RegistrationError(f"--jwks {path}: a JWK Set needs a non-empty 'keys' array")
    return keys


def _load_jwks_certs(path: Path) -> list[bytes]:
    """The first certificate of every key's ``x5c`` (RFC 7517 §4.7: base64, not base64url)."""
    ders = []
    for jwk in _read_jwks(path):
        chain = jwk.get("x5c") if isinstance(jwk, dict) else None
        if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
            raise RegistrationError(f"--jwks {path}: every key needs an 'x5c' certificate chain")
        try:
            der = base64.b64decode(chain[0], validate=True)
            x509.load_der_x509_certificate(der)
        except (binascii.Error, ValueError) as exc:
            raise RegistrationError(f"--jwks {path}: an 'x5c' entry is not a certificate") from exc
        ders.append(der)
    return ders


def load_public_jwks(path: Path) -> dict[str, Any]:
    """A JWK Set of public signing keys for private_key_jwt (RFC 7517); no private members."""
    keys = _read_jwks(path)
    for jwk in keys:
        if not isinstance(jwk, dict) or jwk.get("kty") not in {"EC", "RSA", "OKP"}:
            raise RegistrationError(f"--jwks {path}: every key needs kty EC, RSA or OKP")
        if set(jwk) & {"d", "p", "q", "dp", "dq", "qi", "k"}:
            raise RegistrationError(
                f"--jwks {path}: holds private key material; register public keys only"
            )
        try:
            jwt.PyJWK(jwk)
        except jwt.PyJWTError as exc:
            raise RegistrationError(f"--jwks {path}: a key does not parse ({exc})") from exc
    return {"keys": keys}


def _tls_name(auth_method: str, names: Sequence[tuple[str, str]]) -> CertificateName | None:
    if auth_method != "tls_client_auth":
        if names:
            raise RegistrationError(
                f"certificate names are only for tls_client_auth, not {auth_method}"
            )
        return None
    if len(names) != 1:
        raise RegistrationError(
            "tls_client_auth needs exactly one of --subject-dn, --san-dns, --san-uri, "
            "--san-ip, --san-email"
        )
    try:
        return CertificateName.parse(*names[0])
    except DNError as exc:
        raise RegistrationError(f"--{names[0][0].replace('_', '-')}: {exc}") from exc


def _spiffe_id(
    auth_method: str, names: Sequence[tuple[str, str]], trust: str | None, value: str
) -> str:
    """The canonical ``--spiffe-id`` pattern (SPIFFE ID §2), for tls_client_auth (an
    X.509-SVID) under an external anchor instead of a certificate name, spiffe_x509 (the same,
    under draft-ietf-oauth-spiffe-client-auth §3.2's name) or spiffe_jwt (a JWT-SVID, §3.1)."""
    if auth_method not in SPIFFE_ID_METHODS:
        raise RegistrationError(
            f"--spiffe-id is for {', '.join(sorted(SPIFFE_ID_METHODS))}, not {auth_method}"
        )
    if names:
        raise RegistrationError("--spiffe-id replaces --subject-dn/--san-*: give only one")
    if trust is None:
        raise RegistrationError("--spiffe-id needs --trust NAME (the anchor issuing the SVIDs)")
    try:
        return str(SpiffePattern.parse(value))
    except SpiffeError as exc:
        raise RegistrationError(f"--spiffe-id: {exc}") from exc


def _assertion_keys(
    auth_method: str, jwks_file: Path | None, jwks_uri: str | None
) -> dict[str, Any] | None:
    """private_key_jwt: the registered JWK Set (or None when keys come from ``jwks_uri``)."""
    if auth_method != "private_key_jwt":
        if jwks_uri is not None:
            raise RegistrationError(f"--jwks-uri is for private_key_jwt, not {auth_method}")
        return None
    if (jwks_file is None) == (jwks_uri is None):
        raise RegistrationError("private_key_jwt needs exactly one of --jwks FILE, --jwks-uri URL")
    if jwks_uri is not None and not re.match(r"https://[^/\s]+", jwks_uri):
        raise RegistrationError(f"--jwks-uri must be an https URL, got {jwks_uri!r}")
    return load_public_jwks(jwks_file) if jwks_file is not None else None


def _certificates(
    auth_method: str, cert_files: Sequence[Path], jwks_file: Path | None
) -> tuple[RegisteredCert, ...]:
    """self_signed_tls_client_auth: the registered certificates (PEM files, JWKS x5c)."""
    ders = _load_pem_certs(cert_files)
    if jwks_file is not None and auth_method != "private_key_jwt":
        ders += _load_jwks_certs(jwks_file)
    if auth_method == "self_signed_tls_client_auth":
        if not ders:
            raise RegistrationError("self_signed_tls_client_auth needs --cert PEM or --jwks FILE")
    elif ders:
        raise RegistrationError(
            "--cert/--jwks register certificates for self_signed_tls_client_auth, "
            f"not {auth_method}"
        )
    certificates = tuple(RegisteredCert.from_der(d) for d in dict.fromkeys(ders))
    now = dt.datetime.now(dt.UTC)
    for cert in certificates:
        if not cert.not_before <= now <= cert.not_after:
            raise RegistrationError(
                f"certificate {cert.thumbprint} is not valid now "
                f"(valid {cert.not_before:%Y-%m-%d} to {cert.not_after:%Y-%m-%d})"
            )
    return certificates


def name_taken_by(name: CertificateName, clients: Iterable[Client]) -> Client | None:
    """The tls_client_auth client already registered with a name that matches ``name``.

    Matching is the server's own (RFC 4517 distinguishedNameMatch with RFC 4518 folding for
    subject DNs, decision D1; the canonical forms for SANs): two clients whose names match
    would both accept every certificate that matches either, so the second is refused.
    """
    for client in clients:
        other = client.tls_name
        if client.auth_method != "tls_client_auth" or other is None or other.kind != name.kind:
            continue
        try:
            # Canonicalised again: a row stored before a change of folding still compares.
            other = CertificateName.parse(other.kind, other.value)
        except DNError:
            continue
        if (other.dn == name.dn) if name.kind == "subject_dn" else other.value == name.value:
            return client
    return None


def _federated(
    auth_method: str, federation: str | None, subject: str | None
) -> tuple[str | None, str | None]:
    """federated_jwt: the federation's name and the subject its tokens must carry."""
    if auth_method != "federated_jwt":
        if federation is not None or subject is not None:
            raise RegistrationError(
                f"--federation/--federated-subject are for federated_jwt, not {auth_method}"
            )
        return None, None
    if federation is None or subject is None:
        raise RegistrationError("federated_jwt needs --federation NAME and --federated-subject SUB")
    if not _SUBJECT.match(subject):
        raise RegistrationError(
            f"--federated-subject must be 1-2048 printable ASCII characters, got {subject!r}"
        )
    return federation, subject


def validate_grace(seconds: float) -> float:
    """The grace period of a secret rotation: a finite number of seconds, 0 to 30 days."""
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_SECRET_GRACE):
        raise RegistrationError(
            f"--grace must be a number of seconds from 0 to {MAX_SECRET_GRACE} (30 days), "
            f"got {seconds!r}"
        )
    return seconds


def new_secret(auth_method: str, secret_key: bytes, client_id: str) -> tuple[str, SecretEntry]:
    """A generated secret and its stored form (sealed too for client_secret_jwt)."""
    secret = generate_secret()
    sealed = (
        seal_secret(secret_key, secret, client_id) if auth_method == "client_secret_jwt" else None
    )
    return secret, SecretEntry(
        hash_secret(secret_key, secret), sealed=sealed, created_at=time.time()
    )


def register(
    *,
    auth_method: str,
    secret_key: bytes,
    client_id: str | None = None,
    names: Sequence[tuple[str, str]] = (),
    cert_files: Sequence[Path] = (),
    jwks_file: Path | None = None,
    jwks_uri: str | None = None,
    bound_tokens: bool | None = None,
    scope: str = "",
    audiences: Sequence[str] = (),
    grant_types: Sequence[str] = ("client_credentials",),
    federation: str | None = None,
    federated_subject: str | None = None,
    trust: str | None = None,
    spiffe_id: str | None = None,
) -> NewClient:
    """Validate a registration and build the client (not yet stored)."""
    if auth_method not in AUTH_METHODS:
        raise RegistrationError(
            f"--auth-method must be one of {', '.join(AUTH_METHODS)}, got {auth_method!r}"
        )
    # Hex: a generated id never starts with "-" (which a command line would read as an option).
    client_id = client_id if client_id is not None else secrets.token_hex(16)
    if not _CLIENT_ID.match(client_id):
        raise RegistrationError(
            "--client-id must be 1-200 printable ASCII characters (RFC 6749 VSCHAR), "
            "not starting or ending with a space"
        )
    if trust is not None and auth_method not in SPIFFE_ID_METHODS:
        raise RegistrationError(
            f"--trust is for {', '.join(sorted(SPIFFE_ID_METHODS))}, not {auth_method}"
        )
    if auth_method == SPIFFE_JWT_METHOD and (trust is None or spiffe_id is None):
        raise RegistrationError(
            "spiffe_jwt needs --trust NAME (an anchor with --spiffe-bundle-url) and --spiffe-id"
        )
    if auth_method == SPIFFE_X509_METHOD and (trust is None or spiffe_id is None):
        raise RegistrationError(
            "spiffe_x509 needs --trust NAME (the anchor issuing the X.509-SVIDs) and --spiffe-id"
        )
    if spiffe_id is not None:
        spiffe_id = _spiffe_id(auth_method, names, trust, spiffe_id)
        tls_name = None
    else:
        tls_name = _tls_name(auth_method, names)
    jwks = _assertion_keys(auth_method, jwks_file, jwks_uri)
    certificates = _certificates(auth_method, cert_files, jwks_file)
    federation, federated_subject = _federated(auth_method, federation, federated_subject)
    try:
        scopes = validate_scope_tokens(scope.split())
    except ValueError as exc:
        raise RegistrationError(f"--scope: {exc}") from exc
    for aud in audiences:
        try:
            parts = urlsplit(aud)
        except ValueError as exc:  # e.g. an unclosed IPv6 literal
            raise RegistrationError(f"--audience does not parse: {aud!r}") from exc
        if not parts.scheme or parts.fragment:
            raise RegistrationError(f"--audience must be an absolute URI without fragment: {aud!r}")
    for grant in grant_types:
        if grant != "client_credentials":
            raise RegistrationError(
                f"grant type {grant!r} is not supported; use client_credentials"
            )
    secret: str | None = None
    entries: tuple[SecretEntry, ...] = ()
    if auth_method in SECRET_METHODS | {"client_secret_jwt"}:
        secret, entry = new_secret(auth_method, secret_key, client_id)
        entries = (entry,)
    client = Client(
        client_id=client_id,
        auth_method=auth_method,  # checked against AUTH_METHODS above
        bound_tokens=auth_method in CERTIFICATE_METHODS if bound_tokens is None else bound_tokens,
        scopes=scopes,
        audiences=tuple(dict.fromkeys(audiences)),
        grant_types=tuple(dict.fromkeys(grant_types)),
        tls_name=tls_name,
        certificates=certificates,
        secrets=entries,
        created_at=time.time(),
        jwks=jwks,
        jwks_uri=jwks_uri,
        federation=federation,
        federated_subject=federated_subject,
        trust=trust,
        spiffe_id=spiffe_id,
    )
    return NewClient(client=client, client_secret=secret)
