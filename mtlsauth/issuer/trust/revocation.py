"""Revocation of certificates issued under external trust anchors: CRLs (RFC 5280 §5) fetched
from ``--crl-url`` and the certificates' CRL distribution points (§4.2.1.13), and OCSP (RFC 6960)
from the certificates' authority information access (§4.2.2.1).

* Fetching happens in background tasks, started by :meth:`TrustRevocation.tick` (the refresh
  loop calls it every ``reload_interval``): a CRL is refreshed every ``trust_refresh_interval``
  and before its nextUpdate; an OCSP answer every ``trust_refresh_interval`` and before its
  nextUpdate. A request never starts a fetch of its own: when nothing usable is cached (a CDP
  URL or a certificate seen for the first time) it waits for the background fetch for at most
  ``trust_fetch_timeout``, and a failed URL is not tried again before ``_RETRY`` has passed, so
  a dead server costs each request at most that wait, and only until a first answer is cached.
* Every document is verified: a CRL's signature against the anchor's certificate named as its
  issuer; an OCSP response's signature against the issuer or a responder certificate the issuer
  delegated to (id-kp-OCSPSigning, RFC 6960 §4.2.2.2), its thisUpdate/nextUpdate freshness.
* Policy per anchor: a CRL past nextUpdate is still used for ``max_stale`` seconds while it
  cannot be refreshed, then every certificate it covers is refused (fail closed). OCSP
  ``require`` refuses without a fresh good answer; ``prefer`` falls back to the CRLs, and with
  no CRL configured it lets the certificate through (the operator chose to fail open).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from mtlsauth.core.fetch import FetchError, fetch_bytes, fetch_session
from mtlsauth.issuer.trust.anchors import TrustAnchor
from mtlsauth.issuer.trust.verifier import TrustSet

__all__ = ["RevocationError", "TrustRevocation"]

log = logging.getLogger(__name__)

_SCHEMES: Final = ("http", "https")
#: Large CAs publish CRLs of a few MiB; OCSP responses are a few KiB.
_CRL_MAX_BYTES: Final = 8 * 1024 * 1024
_OCSP_MAX_BYTES: Final = 64 * 1024
#: CRL distribution points remembered per anchor (they come from certificates).
_MAX_CDP_URLS: Final = 16
#: OCSP answers remembered (one per certificate) and fetches in flight at once.
_OCSP_CACHE: Final = 4096
_MAX_IN_FLIGHT: Final = 64
#: A failed fetch is not tried again before this (seconds, capped by the refresh interval).
_RETRY: Final = 10.0
#: Clock skew tolerated on an OCSP thisUpdate.
_SKEW: Final = dt.timedelta(minutes=5)


class RevocationError(Exception):
    """A fetched CRL or OCSP response is unusable; the message says why (log only)."""


@dataclass(frozen=True, slots=True)
class _CRL:
    issuer: bytes
    revoked: frozenset[int]
    number: int | None
    this_update: dt.datetime
    next_update: dt.datetime | None


@dataclass(slots=True)
class _Source:
    """One CRL URL of one anchor, and what was last fetched from it."""

    url: str
    crl: _CRL | None = None
    fetched_at: float = 0.0  # monotonic
    next_attempt: float = 0.0  # monotonic
    task: asyncio.Task[None] | None = None


@dataclass(slots=True)
class _Answer:
    """The OCSP answer for one certificate."""

    url: str
    leaf: x509.Certificate
    issuer: x509.Certificate
    status: ocsp.OCSPCertStatus | None = None
    next_update: dt.datetime | None = None
    fetched_at: float = 0.0  # monotonic
    next_attempt: float = 0.0  # monotonic
    task: asyncio.Task[None] | None = field(default=None, repr=False)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _verify_signature(
    key: object, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm | None
) -> None:
    """Raises InvalidSignature (or RevocationError for a key type it does not know)."""
    if isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
        key.verify(signature, data, ec.ECDSA(algorithm))
    elif isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
        key.verify(signature, data, padding.PKCS1v15(), algorithm)
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        key.verify(signature, data)
    else:
        raise RevocationError(f"unsupported signing key {type(key).__name__}")


def _load_crl(body: bytes, anchor: TrustAnchor, url: str) -> _CRL:
    try:
        crl = (
            x509.load_pem_x509_crl(body)
            if body.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_crl(body)
        )
    except ValueError as exc:
        raise RevocationError(f"{url}: not a CRL: {exc}") from exc
    signers = [c for c in (*anchor.roots, *anchor.intermediates) if c.subject == crl.issuer]
    for ca in signers:
        key = ca.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
                      | ed448.Ed448PublicKey) and crl.is_signature_valid(key):  # fmt: skip
            break
    else:
        raise RevocationError(
            f"{url}: the CRL of {crl.issuer.rfc4514_string()!r} is not signed by a CA of "
            f"trust anchor {anchor.name!r}"
        )
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    return _CRL(
        issuer=crl.issuer.public_bytes(),
        revoked=frozenset(entry.serial_number for entry in crl),
        number=number,
        this_update=crl.last_update_utc,
        next_update=crl.next_update_utc,
    )


def _urls(cert: x509.Certificate, kind: str) -> list[str]:
    """The http(s) CRL distribution points (kind "crl") or OCSP responders ("ocsp")."""
    urls: list[str] = []
    try:
        if kind == "crl":
            for point in cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value:
                urls += [
                    n.value
                    for n in point.full_name or ()
                    if isinstance(n, x509.UniformResourceIdentifier)
                ]
        else:
            aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
            urls += [
                d.access_location.value
                for d in aia
                if d.access_method == AuthorityInformationAccessOID.OCSP
                and isinstance(d.access_location, x509.UniformResourceIdentifier)
            ]
    except (x509.ExtensionNotFound, ValueError):
        return []
    return [u for u in urls if u.lower().startswith(("http://", "https://"))]


def _ocsp_signer(resp: ocsp.OCSPResponse, issuer: x509.Certificate) -> x509.Certificate:
    """The issuer itself, or a responder certificate it delegated to (RFC 6960 §4.2.2.2)."""
    issuer_key_hash = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest

    def names(cert: x509.Certificate) -> bool:
        if resp.responder_name is not None:
            return bool(resp.responder_name == cert.subject)
        key_hash = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
        return bool(resp.responder_key_hash == key_hash)

    if names(issuer) or resp.responder_key_hash == issuer_key_hash:
        return issuer
    now = _now()
    for cert in resp.certificates:
        if not names(cert):
            continue
        try:
            cert.verify_directly_issued_by(issuer)
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (InvalidSignature, ValueError, TypeError, x509.ExtensionNotFound):
            continue
        if (
            ExtendedKeyUsageOID.OCSP_SIGNING in usages
            and cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
        ):
            return cert
    raise RevocationError("the OCSP response is signed by neither the issuer nor its delegate")


def _read_ocsp(body: bytes, leaf: x509.Certificate, issuer: x509.Certificate) -> _Answer:
    """The verified single response for ``leaf`` (status and nextUpdate in the answer)."""
    try:
        resp = ocsp.load_der_ocsp_response(body)
    except ValueError as exc:
        raise RevocationError(f"not an OCSP response: {exc}") from exc
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise RevocationError(f"the OCSP responder answered {resp.response_status.name}")
    signer = _ocsp_signer(resp, issuer)
    try:
        _verify_signature(
            signer.public_key(),
            resp.signature,
            resp.tbs_response_bytes,
            resp.signature_hash_algorithm,
        )
    except (InvalidSignature, UnsupportedAlgorithm) as exc:
        raise RevocationError("the OCSP response's signature does not verify") from exc
    issuer_name = issuer.subject.public_bytes(serialization.Encoding.DER)
    for single in resp.responses:
        if single.serial_number != leaf.serial_number:
            continue
        digest = hashes.Hash(single.hash_algorithm)
        digest.update(issuer_name)
        if digest.finalize() != single.issuer_name_hash:
            continue
        now = _now()
        if single.this_update_utc > now + _SKEW:
            raise RevocationError("the OCSP response's thisUpdate is in the future")
        if single.next_update_utc is not None and single.next_update_utc < now:
            raise RevocationError("the OCSP response is past its nextUpdate")
        return _Answer(
            url="",
            leaf=leaf,
            issuer=issuer,
            status=single.certificate_status,
            next_update=single.next_update_utc,
        )
    raise RevocationError("the OCSP response does not answer for this certificate")


class TrustRevocation:
    """CRLs and OCSP answers of the external anchors, fetched in the background."""

    def __init__(self, trust: TrustSet, *, refresh_interval: float, timeout: float) -> None:
        self.trust = trust
        self._refresh = refresh_interval
        self._retry = min(_RETRY, refresh_interval)
        self._timeout = timeout
        self._ssl = ssl.create_default_context()
        self._session: aiohttp.ClientSession | None = None
        self._crls: dict[tuple[str, str], _Source] = {}
        self._cdp: dict[str, list[str]] = {}
        self._ocsp: OrderedDict[tuple[str, bytes], _Answer] = OrderedDict()

    async def close(self) -> None:
        tasks = [s.task for s in self._crls.values() if s.task] + [
            a.task for a in self._ocsp.values() if a.task
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = fetch_session(self._timeout, max_connections=_MAX_IN_FLIGHT)
        return self._session

    def _in_flight(self) -> int:
        return sum(1 for s in self._crls.values() if s.task) + sum(
            1 for a in self._ocsp.values() if a.task
        )

    # -- background ---------------------------------------------------------------------------

    def tick(self) -> None:
        """Start the fetches that are due; forget what belongs to removed anchors."""
        anchors = self.trust.all()
        wanted: set[tuple[str, str]] = set()
        for anchor in anchors.values():
            urls = [
                *anchor.crl_urls,
                *(self._cdp.get(anchor.name, ()) if anchor.crl_from_cdp else ()),
            ]
            wanted |= {(anchor.name, url) for url in urls}
        for key in list(self._crls):
            if key not in wanted:
                source = self._crls.pop(key)
                if source.task:
                    source.task.cancel()
        for key in wanted:
            self._crls.setdefault(key, _Source(url=key[1]))
        self._cdp = {name: urls for name, urls in self._cdp.items() if name in anchors}
        now = time.monotonic()
        for (name, _), source in self._crls.items():
            if source.task is None and now >= source.next_attempt and self._crl_due(source, now):
                source.task = asyncio.create_task(self._fetch_crl(anchors[name], source))
        for (name, _), answer in list(self._ocsp.items()):
            if name not in anchors:
                del self._ocsp[(name, _)]
            elif answer.task is None and now >= answer.next_attempt and self._ocsp_due(answer, now):
                answer.task = asyncio.create_task(self._fetch_ocsp(answer))

    def _crl_due(self, source: _Source, now: float) -> bool:
        crl = source.crl
        if crl is None or now - source.fetched_at >= self._refresh:
            return True
        return (
            crl.next_update is not None
            and (crl.next_update - _now()).total_seconds() < self._refresh
        )

    def _ocsp_due(self, answer: _Answer, now: float) -> bool:
        if answer.status is None or now - answer.fetched_at >= self._refresh:
            return True
        left = answer.next_update
        return left is not None and (left - _now()).total_seconds() < self._refresh

    async def _fetch_crl(self, anchor: TrustAnchor, source: _Source) -> None:
        try:
            body = await fetch_bytes(
                self._http(), source.url, ssl_context=self._ssl, max_bytes=_CRL_MAX_BYTES,
                schemes=_SCHEMES,
            )  # fmt: skip
            # Parsing and verifying a large CRL is CPU work: off the event loop.
            crl = await asyncio.to_thread(_load_crl, body, anchor, source.url)
        except (FetchError, RevocationError) as exc:
            source.next_attempt = time.monotonic() + self._retry
            log.warning("trust anchor %r: CRL refresh failed: %s", anchor.name, exc)
        else:
            current = source.crl
            if current is not None and crl.this_update < current.this_update:
                log.error("trust anchor %r: %s served an older CRL; kept the newer one",
                          anchor.name, source.url)  # fmt: skip
            else:
                source.crl = crl
            source.fetched_at = time.monotonic()
        finally:
            source.task = None

    async def _fetch_ocsp(self, answer: _Answer) -> None:
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(answer.leaf, answer.issuer, hashes.SHA1())  # noqa: S303 - RFC 6960 CertID
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        try:
            body = await fetch_bytes(
                self._http(), answer.url, ssl_context=self._ssl, max_bytes=_OCSP_MAX_BYTES,
                schemes=_SCHEMES, post=("application/ocsp-request", request),
            )  # fmt: skip
            fresh = _read_ocsp(body, answer.leaf, answer.issuer)
        except (FetchError, RevocationError) as exc:
            answer.next_attempt = time.monotonic() + self._retry
            if answer.next_update is not None and answer.next_update < _now():
                answer.status = None
            log.warning("OCSP for certificate %x failed: %s", answer.leaf.serial_number, exc)
        else:
            answer.status, answer.next_update = fresh.status, fresh.next_update
            answer.fetched_at = time.monotonic()
        finally:
            answer.task = None

    # -- per request --------------------------------------------------------------------------

    async def _wait(self, task: asyncio.Task[None] | None) -> None:
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), self._timeout)

    async def refusal(self, anchor: TrustAnchor, chain: Sequence[x509.Certificate]) -> str | None:
        """Why the verified ``chain`` (leaf first) must be refused now, or None."""
        if not anchor.checks_revocation or len(chain) < 2:
            return None
        if anchor.ocsp != "off":
            status = await self._ocsp_status(anchor, chain[0], chain[1])
            if status == ocsp.OCSPCertStatus.REVOKED:
                return f"certificate {chain[0].serial_number:x} is revoked (OCSP)"
            if status == ocsp.OCSPCertStatus.GOOD:
                return None
            if anchor.ocsp == "require":
                return "no fresh OCSP answer that the certificate is good (--ocsp require)"
            if not anchor.crl_urls and not anchor.crl_from_cdp:
                return None  # prefer without CRLs: the operator chose to fail open
        return await self._crl_refusal(anchor, chain)

    async def _ocsp_status(
        self, anchor: TrustAnchor, leaf: x509.Certificate, issuer: x509.Certificate
    ) -> ocsp.OCSPCertStatus | None:
        key = (anchor.name, leaf.fingerprint(hashes.SHA256()))
        answer = self._ocsp.get(key)
        if answer is None:
            urls = _urls(leaf, "ocsp")
            if not urls:
                return None
            if len(self._ocsp) >= _OCSP_CACHE:
                self._ocsp.popitem(last=False)
            answer = self._ocsp[key] = _Answer(url=urls[0], leaf=leaf, issuer=issuer)
        self._ocsp.move_to_end(key)
        if answer.status is None:
            now = time.monotonic()
            if answer.task is None and now >= answer.next_attempt:
                if self._in_flight() >= _MAX_IN_FLIGHT:
                    return None
                answer.task = asyncio.create_task(self._fetch_ocsp(answer))
            await self._wait(answer.task)
        if answer.next_update is not None and answer.next_update < _now():
            return None
        return answer.status

    def _sources(self, anchor: TrustAnchor, leaf: x509.Certificate) -> list[_Source]:
        urls = list(anchor.crl_urls)
        if anchor.crl_from_cdp:
            known = self._cdp.setdefault(anchor.name, [])
            for url in _urls(leaf, "crl"):
                if url not in known and len(known) < _MAX_CDP_URLS:
                    known.append(url)
                if url in known:
                    urls.append(url)
        sources = []
        now = time.monotonic()
        for url in dict.fromkeys(urls):
            source = self._crls.setdefault((anchor.name, url), _Source(url=url))
            idle = source.crl is None and source.task is None and now >= source.next_attempt
            if idle and self._in_flight() < _MAX_IN_FLIGHT:
                source.task = asyncio.create_task(self._fetch_crl(anchor, source))
            sources.append(source)
        return sources

    async def _crl_refusal(
        self, anchor: TrustAnchor, chain: Sequence[x509.Certificate]
    ) -> str | None:
        sources = self._sources(anchor, chain[0])
        for source in sources:
            if source.crl is None:
                await self._wait(source.task)
        now = _now()
        # Every certificate below the root is checked where a CRL of its issuer is at hand;
        # the leaf must have one.
        for position, cert in enumerate(chain[:-1]):
            issuer = cert.issuer.public_bytes()
            crls = [s.crl for s in sources if s.crl is not None and s.crl.issuer == issuer]
            if not crls:
                if position == 0:
                    return (
                        f"no CRL of {cert.issuer.rfc4514_string()} could be fetched for trust "
                        f"anchor {anchor.name!r}"
                    )
                continue
            if any(cert.serial_number in crl.revoked for crl in crls):
                return f"certificate {cert.serial_number:x} is revoked (CRL)"
            newest = max(crls, key=lambda c: c.this_update)
            if newest.next_update is not None:
                stale = (now - newest.next_update).total_seconds()
                if stale > anchor.max_stale:
                    return (
                        f"the CRL of {cert.issuer.rfc4514_string()} is {stale:.0f} s past its "
                        f"nextUpdate and cannot be refreshed (--max-stale {anchor.max_stale})"
                    )
        return None
