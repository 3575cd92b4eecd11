"""Who may enroll (RFC 7030 §3.2.3, §3.3.2), over the CA toolkit's issuance code.

* simpleenroll (§4.2.1) is authenticated by a one-time enrollment credential (HTTP Basic);
  failures are throttled per source like failed client authentication (D7), since the
  credential is a secret that could be guessed at, and each is audited;
* simplereenroll (§4.2.2) is authenticated by the current certificate, presented in the TLS
  handshake: it must be one this CA issued, unrevoked and unexpired (the CA inventory says so
  even before a new CRL reaches the handshake).

Issuance is :meth:`pki.Authority.enroll` / :meth:`~pki.Authority.reenroll`: the same
name checks, profile, CRL distribution point, inventory record and CA audit as ``pki issue``.
The CA works on files and SQLite, so every call runs in a thread.

The online CA needs the issuing key. :func:`load_enrollment` turns issuing on only when the
``enrollment`` setting allows it and the CA passphrase is readable here.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Final

from cryptography import x509

from mtlsauth.core.errors import InvalidClient, InvalidRequest, OAuthError, TemporarilyUnavailable
from mtlsauth.issuer.audit import Audit
from mtlsauth.issuer.settings import ConfigError, Settings
from mtlsauth.issuer.throttle import Throttle, ThrottleKey, source_key
from pki.authority import Authority, resolve_passphrase
from pki.ca import CAError
from pki.enroll import EnrollDenied

__all__ = ["ENROLL_THROTTLE_ID", "Enrollment", "EnrollmentOff", "load_enrollment"]

log = logging.getLogger(__name__)

#: The throttle's client_id for failed enrollments: one key per source, whatever credential id
#: was invented. No registered client_id starts with a space, so none shares its counter.
ENROLL_THROTTLE_ID: Final = " est-enroll"


class EnrollmentOff(OAuthError):
    """This server does not issue certificates (setting off, or no CA key here)."""

    error = "invalid_request"
    status = 404
    default_description = "Enrollment is not offered here."


class Enrollment:
    """The EST operations of one CA directory."""

    def __init__(self, authority: Authority, *, can_issue: bool) -> None:
        self.authority = authority
        self.can_issue = can_issue
        #: §4.1.3: the issuing CA and the root, what a client needs to build the chain.
        self.ca_certificates: tuple[x509.Certificate, ...] = (
            authority.issuing_cert(),
            authority.root_cert(),
        )

    async def enroll(
        self,
        token_id: str,
        secret: str,
        csr: x509.CertificateSigningRequest,
        *,
        source: str,
        throttle: Throttle,
        audit: Audit,
    ) -> list[x509.Certificate]:
        """§4.2.1: the new certificate and its chain; InvalidClient (401) for a credential
        that does not authenticate, InvalidRequest (400, naming it) for a name it does not
        allow, SlowDown (429) after too many failures from this source."""
        self._require_issuing()
        key: ThrottleKey = (ENROLL_THROTTLE_ID, source_key(source))
        try:
            issued = await asyncio.to_thread(self.authority.enroll, token_id, secret, csr)
        except EnrollDenied as exc:
            audit.tally("est.enroll_failed", client_id=None, reason=exc.reason, source=key[1])
            # A credential cannot be guessed (256 bits): like a certificate (D7), a valid one is
            # never refused up front, so failures elsewhere at this address cannot lock it out.
            throttle.check(key)
            await throttle.failed(key)
            raise InvalidClient(str(exc), reason=f"enroll_{exc.reason}") from exc
        except CAError as exc:
            raise _refused(exc) from exc
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc
        await throttle.succeeded(key)
        audit.event(
            "est.enroll",
            enroll_token=token_id,
            serial=issued.record.serial,
            subject=issued.record.subject,
            source=key[1],
        )
        return [issued.cert.cert, *issued.cert.chain]

    async def reenroll(
        self, current_der: bytes, csr: x509.CertificateSigningRequest, *, audit: Audit
    ) -> list[x509.Certificate]:
        """§4.2.2: a new certificate with the current one's names, for the CSR's key."""
        self._require_issuing()
        try:
            issued = await asyncio.to_thread(self.authority.reenroll, current_der, csr)
        except EnrollDenied as exc:
            raise InvalidClient(str(exc), reason=f"reenroll_{exc.reason}") from exc
        except CAError as exc:
            raise _refused(exc) from exc
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc
        audit.event(
            "est.reenroll",
            serial=issued.record.serial,
            renewed_from=issued.record.renewed_from,
            subject=issued.record.subject,
        )
        return [issued.cert.cert, *issued.cert.chain]

    def _require_issuing(self) -> None:
        if not self.can_issue:
            raise EnrollmentOff("enrollment is off: setting off, or no CA passphrase here")


def _refused(exc: CAError) -> InvalidRequest:
    # The CA's reason names what is not allowed (a name, a key type); the requester made the
    # CSR and holds the credential, so it tells them nothing they did not send.
    return InvalidRequest(str(exc), description=f"The request is refused: {exc}"[:500])


def _unavailable(exc: sqlite3.Error) -> OAuthError:
    return TemporarilyUnavailable(f"the CA inventory cannot be used: {exc}")


def load_enrollment(settings: Settings) -> Enrollment | None:
    """The EST service of ``settings.ca_dir``: None when there is no CA there; issuing only
    when ``enrollment`` is on and the CA passphrase is readable (ConfigError when it is
    readable but does not open the key: a misconfiguration to fix, not to serve around)."""
    directory: Path = settings.ca_dir
    if not (directory / "issuing.pem").is_file() or not (directory / "ca.pem").is_file():
        log.info("EST: no CA in %s; /.well-known/est is not served", directory)
        return None
    if not settings.enrollment:
        log.info("EST enrollment is off (setting 'enrollment'); cacerts is still served")
        return Enrollment(Authority(directory), can_issue=False)
    try:
        passphrase = resolve_passphrase(directory)
    except CAError as exc:
        raise ConfigError(f"setting 'enrollment': {exc}") from exc
    if passphrase is None:
        log.warning(
            "EST enrollment is off: the CA passphrase is not readable here "
            "($MTLSAUTH_CA_PASSPHRASE, $MTLSAUTH_CA_PASSPHRASE_FILE or %s/passphrase)",
            directory,
        )
        return Enrollment(Authority(directory), can_issue=False)
    authority = Authority(directory, passphrase=passphrase)
    try:
        authority.issuing()
    except CAError as exc:
        raise ConfigError(
            f"setting 'enrollment': the CA key in {directory} cannot be used: {exc}; "
            "fix the passphrase, or set enrollment = false"
        ) from exc
    log.info("EST enrollment is on: this server issues client certificates from %s", directory)
    return Enrollment(authority, can_issue=True)
