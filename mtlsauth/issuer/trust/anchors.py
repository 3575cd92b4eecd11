"""An external trust anchor as an operator registers it (``mtlsauth trust add``).

The ``--ca`` bundle holds the anchor's root certificate(s) and, optionally, the intermediate
CA certificates below them. The check made after the handshake (which anchor the leaf chains
to, see :mod:`.verifier`) builds the path through the intermediates the client sent and those of
the bundle; a certificate forwarded by a proxy comes without its chain, so the bundle must hold
the intermediates then.
Only the roots (self-issued certificates) become TLS trust anchors; an intermediate stays an
untrusted path element, so it can never stand in for its root.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from mtlsauth.issuer.trust.spiffe import SpiffeError, valid_trust_domain

__all__ = ["MAX_STALE_DEFAULT", "OCSP_MODES", "TrustAnchor", "TrustError", "parse_bundle"]

#: A CRL that could not be refreshed is still used this long past its nextUpdate (seconds).
MAX_STALE_DEFAULT: Final = 3600
#: A name is what clients reference (``client add --trust NAME``): short and plain.
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
_MAX_BUNDLE: Final = 64
#: off: no OCSP; prefer: OCSP when it answers, else the CRL policy; require: no answer, no entry.
OCSP_MODES: Final = ("off", "prefer", "require")


class TrustError(ValueError):
    """A trust anchor registration is invalid; the message names the flag and the reason."""


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def parse_bundle(pem: bytes) -> tuple[tuple[x509.Certificate, ...], tuple[x509.Certificate, ...]]:
    """(roots, intermediates) of a PEM bundle of CA certificates; TrustError when it is not one.

    Roots are the self-issued certificates (RFC 5280 §3.3.1); every intermediate must chain to
    one of them through the bundle, so that a stray certificate cannot sneak in as a path.
    """
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise TrustError(f"--ca: not a PEM bundle of certificates: {exc}") from exc
    if len(certs) > _MAX_BUNDLE:
        raise TrustError(f"--ca: at most {_MAX_BUNDLE} certificates per anchor")
    for cert in certs:
        if not _is_ca(cert):
            raise TrustError(
                f"--ca: {cert.subject.rfc4514_string()!r} is not a CA certificate "
                "(basicConstraints cA is not true)"
            )
    roots = tuple(c for c in certs if c.subject == c.issuer)
    if not roots:
        raise TrustError("--ca: the bundle holds no root (self-issued) CA certificate")
    intermediates = tuple(c for c in certs if c.subject != c.issuer)
    for cert in intermediates:
        _check_intermediate(cert, roots, intermediates)
    return roots, intermediates


def _check_intermediate(
    cert: x509.Certificate,
    roots: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
) -> None:
    # Walk up by signature (RFC 5280 §6.1 does the full validation per handshake, in the
    # verifier); here only that the bundle is one tree, bounded by its size.
    current = cert
    for _ in range(len(intermediates) + 1):
        for issuer in (*roots, *intermediates):
            if issuer is current or issuer.subject != current.issuer:
                continue
            try:
                current.verify_directly_issued_by(issuer)
            except (InvalidSignature, ValueError, TypeError):
                continue
            if issuer in roots:
                return
            current = issuer
            break
        else:
            break
    raise TrustError(
        f"--ca: the intermediate {cert.subject.rfc4514_string()!r} does not chain to a root "
        "of the bundle"
    )


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    # CRLs are signed objects: plain http is their normal transport (RFC 5280 §4.2.1.13).
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TrustError(f"--crl-url must be an http or https URL, got {url!r}")
    return url


def _check_bundle_url(url: str) -> str:
    parts = urlsplit(url)
    # The https_web profile (SPIFFE Federation §5.2.1), which the OAuth SPIFFE client
    # authentication draft requires: the endpoint's certificate is checked against Web PKI.
    if parts.scheme != "https" or not parts.hostname or parts.fragment or len(url) > 2048:
        raise TrustError(f"--spiffe-bundle-url must be an https URL, got {url!r}")
    # RFC 3986 §3.2.1: no credentials in the URL (they would be stored and shown in clear);
    # §2: no spaces or control characters (no fetch could use such a URL).
    if "@" in parts.netloc or any(c.isspace() or not c.isprintable() for c in url):
        raise TrustError(
            "--spiffe-bundle-url must have no user:password@ and no spaces or control "
            f"characters, got {url!r}"
        )
    return url


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    """A registered external CA and its revocation policy."""

    name: str
    #: The PEM bundle as registered: roots and intermediates (see the module docstring).
    bundle: bytes
    crl_urls: tuple[str, ...] = ()
    crl_from_cdp: bool = False
    max_stale: int = MAX_STALE_DEFAULT
    ocsp: str = "off"
    #: SPIFFE trust domains whose SVIDs this anchor may issue (``--spiffe-trust-domain``).
    spiffe_trust_domains: tuple[str, ...] = ()
    #: A SPIFFE bundle endpoint (``--spiffe-bundle-url``): the bundle's X.509 authorities
    #: replace ``bundle``'s roots once fetched, and its JWT-SVID keys verify JWT-SVIDs.
    spiffe_bundle_url: str | None = None
    created_at: float = 0.0
    roots: tuple[x509.Certificate, ...] = field(default=(), compare=False, repr=False)
    intermediates: tuple[x509.Certificate, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def create(
        cls,
        *,
        name: str,
        bundle: bytes,
        crl_urls: Sequence[str] = (),
        crl_from_cdp: bool = False,
        max_stale: int = MAX_STALE_DEFAULT,
        ocsp: str = "off",
        spiffe_trust_domains: Sequence[str] = (),
        spiffe_bundle_url: str | None = None,
        created_at: float | None = None,
    ) -> TrustAnchor:
        """Validate a registration (TrustError names the bad flag).

        With ``spiffe_bundle_url`` the ``--ca`` bundle is optional: when given it is the
        bootstrap bundle (SPIFFE Federation §5.2: trust obtained out of band), trusted until
        the first fetch succeeds; the trust domain is exactly one (a bundle is of one domain,
        SPIFFE Trust Domain and Bundle §3)."""
        if not _NAME.match(name):
            raise TrustError(
                "--name must be 1-63 letters, digits, '.', '_' or '-', starting with a letter "
                f"or digit, got {name!r}"
            )
        if not 0 <= max_stale <= 30 * 86400:
            raise TrustError(f"--max-stale must be 0 to {30 * 86400} seconds, got {max_stale}")
        if ocsp not in OCSP_MODES:
            raise TrustError(f"--ocsp must be one of {', '.join(OCSP_MODES)}, got {ocsp!r}")
        for domain in spiffe_trust_domains:
            try:
                valid_trust_domain(domain)
            except SpiffeError as exc:
                raise TrustError(f"--spiffe-trust-domain: {exc}") from exc
        if spiffe_bundle_url is not None:
            _check_bundle_url(spiffe_bundle_url)
            if len(set(spiffe_trust_domains)) != 1:
                raise TrustError(
                    "--spiffe-bundle-url needs exactly one --spiffe-trust-domain (the bundle's)"
                )
            if (crl_urls or crl_from_cdp or ocsp != "off") and not bundle.strip():
                raise TrustError("--crl-url/--crl-from-cdp/--ocsp need --ca (the issuing CAs)")
        elif not bundle.strip():
            raise TrustError("give --ca FILE, or --spiffe-bundle-url URL")
        roots: tuple[x509.Certificate, ...] = ()
        intermediates: tuple[x509.Certificate, ...] = ()
        if bundle.strip():
            roots, intermediates = parse_bundle(bundle)
        return cls(
            name=name,
            bundle=bundle,
            crl_urls=tuple(dict.fromkeys(_check_url(u) for u in crl_urls)),
            crl_from_cdp=crl_from_cdp,
            max_stale=max_stale,
            ocsp=ocsp,
            spiffe_trust_domains=tuple(dict.fromkeys(spiffe_trust_domains)),
            spiffe_bundle_url=spiffe_bundle_url,
            created_at=time.time() if created_at is None else created_at,
            roots=roots,
            intermediates=intermediates,
        )

    @property
    def checks_revocation(self) -> bool:
        return bool(self.crl_urls) or self.crl_from_cdp or self.ocsp != "off"

    def with_authorities(self, authorities: Sequence[x509.Certificate]) -> TrustAnchor:
        """This anchor as its SPIFFE bundle says: the bundle's X.509 authorities are its trust
        anchors (X509-SVID §5.1), in place of the bootstrap ``--ca`` bundle."""
        return dataclasses.replace(self, roots=tuple(authorities), intermediates=())

    @property
    def root_ders(self) -> frozenset[bytes]:
        return frozenset(c.public_bytes(serialization.Encoding.DER) for c in self.roots)

    def policy(self) -> dict[str, Any]:
        """The revocation policy as stored (JSON) and shown."""
        return {
            "crl_urls": list(self.crl_urls),
            "crl_from_cdp": self.crl_from_cdp,
            "max_stale": self.max_stale,
            "ocsp": self.ocsp,
            "spiffe_trust_domains": list(self.spiffe_trust_domains),
            "spiffe_bundle_url": self.spiffe_bundle_url,
        }

    @classmethod
    def from_stored(
        cls, name: str, bundle: bytes, policy: dict[str, Any], created_at: float
    ) -> TrustAnchor:
        return cls.create(
            name=name,
            bundle=bundle,
            crl_urls=policy.get("crl_urls", ()),
            crl_from_cdp=bool(policy.get("crl_from_cdp", False)),
            max_stale=int(policy.get("max_stale", MAX_STALE_DEFAULT)),
            ocsp=str(policy.get("ocsp", "off")),
            spiffe_trust_domains=policy.get("spiffe_trust_domains", ()),
            spiffe_bundle_url=policy.get("spiffe_bundle_url"),
            created_at=created_at,
        )
