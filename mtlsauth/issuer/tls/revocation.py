"""Revocation of CA-issued client certificates, from the CA's CRL (RFC 5280 §5).

The server does not use OpenSSL's CRL check (``VERIFY_CRL_CHECK_LEAF``): measured here, it
refuses every registered self-signed certificate, since no CRL can exist for an issuer whose
key only the client holds. Instead the CRL is loaded and verified here and consulted at every
handshake (resumed ones included) and again on every token request, so neither a resumed
session nor a long keep-alive connection outlives a revocation.

An expired CRL fails closed: certificates of that CA are refused until it is re-signed.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509

from pki.authority import Authority, resolve_passphrase
from pki.ca import CAError

__all__ = ["CRLError", "Refusal", "RevocationState", "renew_crl_if_due", "revoked_thumbprints"]

log = logging.getLogger(__name__)

_PEM_CRL: Final = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)
_CACHE_SIZE: Final = 4096


class CRLError(Exception):
    """A CRL file is missing, malformed, or not signed by a trusted CA."""


class Refusal(str):
    """Why a client certificate is refused: the string is the precise reason, for the log;
    ``description`` is what the client is told (decision D10: it learns why, not the CA's
    internals)."""

    description: str

    def __new__(cls, detail: str, description: str) -> Refusal:
        self = super().__new__(cls, detail)
        self.description = description
        return self


@dataclass(frozen=True, slots=True)
class _IssuerCRL:
    revoked: dict[int, str]
    this_update: dt.datetime
    next_update: dt.datetime | None
    number: int | None
    #: The issuer's name for messages (RFC 4514).
    issuer: str = ""


def _older(new: _IssuerCRL, current: _IssuerCRL) -> bool:
    """Whether ``new`` was issued before ``current`` (RFC 5280 §5.2.3, §5.1.2.4)."""
    if new.number is not None and current.number is not None and new.number != current.number:
        return new.number < current.number
    return new.this_update < current.this_update


def _reason(entry: x509.RevokedCertificate) -> str:
    try:
        return str(entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name)
    except x509.ExtensionNotFound:
        return "unspecified"


@dataclass(slots=True)
class RevocationState:
    """The verified CRLs by issuer name, and a per-leaf cache of the answers."""

    by_issuer: dict[bytes, _IssuerCRL] = field(default_factory=dict)
    # DER → (issuer DER, issuer for messages, serial): encoding the issuer name is not free,
    # and every handshake asks.
    _parsed: dict[bytes, tuple[bytes, x509.Name, int]] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> RevocationState:
        return cls()

    @classmethod
    def load(cls, path: Path, issuers: Iterable[x509.Certificate]) -> RevocationState:
        """Every CRL in ``path``, each verified against the CA certificate that issued it."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CRLError(f"cannot read the CRL {path}: {exc}") from exc
        blocks = _PEM_CRL.findall(data)
        if not blocks:
            raise CRLError(f"{path} holds no PEM CRL")
        by_subject = {c.subject.public_bytes(): c for c in issuers}
        state = cls()
        for block in blocks:
            try:
                crl = x509.load_pem_x509_crl(block)
            except ValueError as exc:
                raise CRLError(f"{path}: a CRL does not parse: {exc}") from exc
            issuer_key = crl.issuer.public_bytes()
            ca = by_subject.get(issuer_key)
            if ca is None:
                raise CRLError(f"{path}: CRL of {crl.issuer.rfc4514_string()!r}, not a trusted CA")
            if not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
                raise CRLError(f"{path}: the CRL's signature does not verify against its CA")
            try:
                number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            except x509.ExtensionNotFound:
                number = None
            state.by_issuer[issuer_key] = _IssuerCRL(
                revoked={entry.serial_number: _reason(entry) for entry in crl},
                this_update=crl.last_update_utc,
                next_update=crl.next_update_utc,
                number=number,
                issuer=crl.issuer.rfc4514_string(),
            )
        return state

    def keep_newest(
        self, loaded: RevocationState, trusted: Container[bytes]
    ) -> tuple[RevocationState, list[str]]:
        """``loaded``, except where it would go back: per issuer, a CRL older than the one in
        force is refused and the current one kept, so a stale CRL written back over the file
        cannot un-revoke a certificate. Older means a lower CRL number (RFC 5280 §5.2.3: the
        numbers increase monotonically), or the same number (or none) with an earlier
        thisUpdate. A CA that is still in ``trusted`` (issuer names, DER) but whose CRL
        vanished from the file keeps its current CRL too. Returns the state and the reasons
        for every CRL refused."""
        merged = dict(loaded.by_issuer)
        refused: list[str] = []
        for issuer, current in self.by_issuer.items():
            new = loaded.by_issuer.get(issuer)
            if new is None:
                if issuer in trusted:
                    merged[issuer] = current
                    refused.append(f"the new CRL file has no CRL of {current.issuer}")
            elif _older(new, current):
                merged[issuer] = current
                refused.append(
                    f"the new CRL of {current.issuer} (number {new.number}, thisUpdate "
                    f"{new.this_update:%Y-%m-%dT%H:%M:%SZ}) is older than the one in force "
                    f"(number {current.number}, thisUpdate "
                    f"{current.this_update:%Y-%m-%dT%H:%M:%SZ})"
                )
        if not refused:
            return loaded, []
        return RevocationState(by_issuer=merged), refused

    def refusal(self, der: bytes, now: dt.datetime | None = None) -> Refusal | None:
        """Why this certificate must be refused, or None. Certificates of CAs without a CRL
        here (self-signed ones) are not judged."""
        known = self._parsed.get(der)
        if known is None:
            try:
                cert = x509.load_der_x509_certificate(der)
            except ValueError:
                return Refusal(
                    "the client certificate does not parse",
                    "The client certificate does not parse.",
                )
            if len(self._parsed) >= _CACHE_SIZE:
                self._parsed.clear()
            known = self._parsed[der] = (
                cert.issuer.public_bytes(),
                cert.issuer,
                cert.serial_number,
            )
        issuer_der, issuer, serial = known
        entry = self.by_issuer.get(issuer_der)
        if entry is None:
            return None
        now = now or dt.datetime.now(dt.UTC)
        if entry.next_update is not None and now > entry.next_update:
            return Refusal(
                f"the CRL of {issuer.rfc4514_string()} expired at {entry.next_update}",
                "The client certificate's revocation status cannot be checked now (its CA's "
                "revocation list has expired); try again later.",
            )
        reason = entry.revoked.get(serial)
        if reason is not None:
            return Refusal(
                f"certificate {serial:x} is revoked ({reason})",
                f"The client certificate has been revoked (certificate_revoked: {reason}).",
            )
        return None

    def freshness(self, now: dt.datetime | None = None) -> list[tuple[str, dt.timedelta]]:
        """Time left until each CRL's nextUpdate (negative when expired)."""
        now = now or dt.datetime.now(dt.UTC)
        return [
            (f"CRL #{entry.number}", entry.next_update - now)
            for entry in self.by_issuer.values()
            if entry.next_update is not None
        ]

    def lifetime(self) -> dt.timedelta | None:
        spans = [e.next_update - e.this_update for e in self.by_issuer.values() if e.next_update]
        return min(spans) if spans else None


def renew_crl_if_due(crl_path: Path, state: RevocationState) -> bool:
    """Re-sign the CRL once half its lifetime is gone, when this process can read the CA
    passphrase (a dev home can; production may leave it to 'mtlsauth pki crl' from cron)."""
    lifetime = state.lifetime()
    left = [remaining for _, remaining in state.freshness()]
    if lifetime is None or not left or min(left) > lifetime / 2:
        return False
    ca_dir = crl_path.parent
    try:
        passphrase = resolve_passphrase(ca_dir)
        if passphrase is None:
            log.warning("the CRL is past half its life, but no CA passphrase is available here")
            return False
        Authority(ca_dir, passphrase=passphrase).write_crl()
    except (CAError, OSError) as exc:
        log.error("cannot re-sign the CRL: %s", exc)
        return False
    log.info("re-signed the CRL %s", crl_path)
    return True


def revoked_thumbprints(ca_dir: Path) -> list[str]:
    """``x5t#S256`` of the unexpired certificates the CA in ``ca_dir`` revoked, from its
    inventory (for GET /revoked: resource servers refuse the tokens bound to them). Empty when
    this host has no CA inventory."""
    if not (ca_dir / "inventory.db").exists():
        return []
    now = dt.datetime.now(dt.UTC)
    records = Authority(ca_dir).inventory.query(status="revoked")
    return sorted(r.thumbprint for r in records if r.expires > now)
