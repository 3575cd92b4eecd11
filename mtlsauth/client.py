"""A token client for services: discovery (RFC 8414), the client credentials grant, a token
cache with refresh before expiry, and an aiohttp session that presents the token and the same
client certificate it was bound to (RFC 8705 §3); and the client side of EST (RFC 7030)
enrollment and re-enrollment of that certificate.

A TokenClient made with :meth:`TokenClient.from_files` notices when its certificate files
are replaced (a renewal) and uses the new certificate for its next connection: the next
token is bound to it, and cached tokens bound to the old one are dropped.

::

    ctx = client_ssl_context(ca, cert, key)
    async with TokenClient(issuer=..., ssl_context=ctx, client_id="billing") as tokens:
        async with tokens.session() as api:
            async with api.get("https://api.internal/invoices") as resp: ...
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote_plus

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

__all__ = [
    "BearerSession",
    "EnrollError",
    "TokenClient",
    "TokenError",
    "client_ssl_context",
    "est_enroll",
    "form_encode",
]

BASIC: Final = "client_secret_basic"
POST: Final = "client_secret_post"
WELL_KNOWN: Final = "/.well-known/oauth-authorization-server"
#: RFC 7030 §3.2.2: the EST operations' path under the server's base URL.
EST_PREFIX: Final = "/.well-known/est"
# Refresh when less than this share of the lifetime (and at least this many seconds) is left.
REFRESH_SHARE: Final = 0.2
REFRESH_MIN_SECONDS: Final = 10.0


class TokenError(Exception):
    """The token endpoint answered with an error, or could not be reached."""

    def __init__(self, error: str, description: str = "", status: int | None = None) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status = status


class EnrollError(Exception):
    """The EST server refused the request (``status``, the OAuth ``error``), or could not be
    reached (``status`` None)."""

    def __init__(self, error: str, description: str = "", status: int | None = None) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status = status


async def est_enroll(
    issuer: str,
    ssl_context: ssl.SSLContext,
    csr: x509.CertificateSigningRequest,
    *,
    credential: tuple[str, str] | None = None,
    time_limit: float = 30.0,
) -> list[x509.Certificate]:
    """Send ``csr`` to the issuer's EST server; the certificate first, then its chain.

    With ``credential`` (id, secret) it is a first enrollment (RFC 7030 §4.2.1, HTTP Basic);
    without, a re-enrollment (§4.2.2) authenticated by the certificate ``ssl_context``
    presents.
    """
    operation = "simpleenroll" if credential is not None else "simplereenroll"
    url = f"{issuer.rstrip('/')}{EST_PREFIX}/{operation}"
    headers = {"Content-Type": "application/pkcs10"}
    if credential is not None:
        userpass = f"{form_encode(credential[0])}:{form_encode(credential[1])}"
        headers["Authorization"] = "Basic " + base64.b64encode(userpass.encode()).decode()
    body = base64.encodebytes(csr.public_bytes(Encoding.DER))
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=time_limit)) as http,
            http.post(url, data=body, headers=headers, ssl=ssl_context) as resp,
        ):
            data = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise EnrollError("request_failed", str(exc) or type(exc).__name__) from exc
    if status != 200:
        raise _enroll_error(data, status)
    try:
        certificates = pkcs7.load_der_pkcs7_certificates(base64.b64decode(b"".join(data.split())))
    except ValueError as exc:
        raise EnrollError("invalid_response", f"not a certs-only PKCS#7: {exc}", status) from exc
    return _leaf_first(certificates, csr)


def _enroll_error(data: bytes, status: int) -> EnrollError:
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        return EnrollError(
            str(doc.get("error", "invalid_response")), str(doc.get("error_description", "")), status
        )
    return EnrollError("invalid_response", data[:200].decode(errors="replace"), status)


def _leaf_first(
    certificates: Sequence[x509.Certificate], csr: x509.CertificateSigningRequest
) -> list[x509.Certificate]:
    """A certs-only PKCS#7 is a SET (no order): the certificate of the CSR's key goes first."""
    key = csr.public_key()
    leaves = [c for c in certificates if c.public_key() == key]
    if len(leaves) != 1:
        raise EnrollError("invalid_response", "no certificate for the request's key in the answer")
    return [leaves[0], *(c for c in certificates if c is not leaves[0])]


#: What a TLS alert from the token service means for the client (RFC 8446 §6.2), by the
#: alert's name; OpenSSL names it in ``ssl.SSLError.reason`` (``TLSV1_ALERT_UNKNOWN_CA``).
_ALERTS: Final[Mapping[str, str]] = {
    "unknown_ca": "the server does not trust the issuer of the client certificate",
    "certificate_expired": "the client certificate has expired or is not yet valid",
    "certificate_revoked": "the client certificate has been revoked",
    "bad_certificate": "the server refused the client certificate",
    "unsupported_certificate": "the client certificate is not meant for client authentication",
    "certificate_unknown": "the server refused the client certificate",
    "certificate_required": "the server requires a client certificate",
    "handshake_failure": "the TLS handshake failed",
    "protocol_version": "no TLS version in common with the server",
}


def _tls_alert(exc: BaseException) -> str | None:
    """The name of the TLS alert the server sent (``unknown_ca``), if that is what ``exc``
    (or what it wraps) reports; aiohttp wraps ``ssl.SSLError`` one or two levels deep."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        reason = getattr(current, "reason", None)
        if isinstance(current, ssl.SSLError) and isinstance(reason, str) and "_ALERT_" in reason:
            return reason.split("_ALERT_", 1)[1].lower()
        current = current.__cause__ or current.__context__
    return None


def _request_failed(exc: BaseException) -> TokenError:
    """A TokenError that says why the connection failed; a TLS alert is named (decision D10)."""
    alert = _tls_alert(exc)
    if alert is not None:
        meaning = _ALERTS.get(alert, "the server ended the TLS connection")
        return TokenError("tls_alert", f"the server sent the TLS alert {alert}: {meaning}")
    return TokenError("request_failed", str(exc) or type(exc).__name__)


async def _discovery_failed(url: str, resp: aiohttp.ClientResponse) -> TokenError:
    """The server's own OAuth error when it gave one (a refused certificate is answered 401
    invalid_client on every request, discovery included), else the status."""
    try:
        doc = await resp.json(content_type=None)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return TokenError(doc["error"], str(doc.get("error_description", "")), resp.status)
    return TokenError("discovery_failed", f"{url} answered {resp.status}", resp.status)


def form_encode(value: str) -> str:
    """RFC 6749 Appendix B: application/x-www-form-urlencoded encoding of one value."""
    return quote_plus(value, safe="")


def client_ssl_context(
    cacert: Path, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A verifying client context that trusts ``cacert`` and presents ``cert`` when given."""
    ctx = ssl.create_default_context(cafile=str(cacert))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


class _Closing:
    """``async with`` closes the object."""

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


@dataclass(frozen=True, slots=True)
class _IdentityFiles:
    """The files a TokenClient's TLS identity was loaded from, and how they looked then."""

    cacert: Path
    cert: Path
    key: Path
    stamp: tuple[tuple[int, int, int], ...]

    @staticmethod
    def stamp_of(*paths: Path) -> tuple[tuple[int, int, int], ...]:
        # A renewal replaces the files (a new inode) or rewrites them (a new mtime or size).
        stats = [os.stat(p) for p in paths]
        return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in stats)


@dataclass(frozen=True, slots=True)
class _Cached:
    response: Mapping[str, Any]
    refresh_at: float


class TokenClient(_Closing):
    """Gets and caches tokens from one issuer with one identity (certificate and/or secret)."""

    def __init__(
        self,
        *,
        issuer: str,
        ssl_context: ssl.SSLContext,
        client_id: str | None = None,
        client_secret: str | None = None,
        secret_method: str = BASIC,
        timeout: float = 10.0,
    ) -> None:
        if secret_method not in (BASIC, POST):
            raise ValueError(f"secret_method must be {BASIC} or {POST}")
        self.issuer = issuer.rstrip("/")
        self.ssl_context = ssl_context
        self.client_id = client_id
        self._secret = client_secret
        self._secret_method = secret_method
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._metadata: dict[str, Any] | None = None
        self._cache: dict[tuple[str | None, tuple[str, ...]], _Cached] = {}
        self._locks: dict[tuple[str | None, tuple[str, ...]], asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None
        self._files: _IdentityFiles | None = None
        self.requests = 0

    @classmethod
    def from_files(
        cls, *, issuer: str, cacert: Path, cert: Path, key: Path, **options: Any
    ) -> TokenClient:
        """A client whose certificate is read from ``cert`` and ``key`` and read again when
        they change (``mtlsauth renew`` replaced them): no restart after a renewal."""
        stamp = _IdentityFiles.stamp_of(cert, key)
        client = cls(issuer=issuer, ssl_context=client_ssl_context(cacert, cert, key), **options)
        client._files = _IdentityFiles(cacert, cert, key, stamp)
        return client

    def reload_identity(self) -> bool:
        """Use renewed certificate files for the next connection; True when it switched.

        Tokens bound to the old certificate are dropped from the cache: presented with the
        new certificate they would not match their ``cnf`` (RFC 8705 §3). A half-written
        pair (a new certificate beside the old key) is skipped until it is whole.
        """
        files = self._files
        if files is None:
            return False
        try:
            stamp = _IdentityFiles.stamp_of(files.cert, files.key)
            if stamp == files.stamp:
                return False
            context = client_ssl_context(files.cacert, files.cert, files.key)
        except (OSError, ssl.SSLError):
            return False
        self.ssl_context = context
        self._files = _IdentityFiles(files.cacert, files.cert, files.key, stamp)
        self._cache.clear()
        return True

    def __repr__(self) -> str:
        return f"TokenClient(issuer={self.issuer!r}, client_id={self.client_id!r})"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def metadata(self) -> dict[str, Any]:
        """The issuer's RFC 8414 metadata (fetched once; it must name this issuer)."""
        if self._metadata is None:
            url = self.issuer + WELL_KNOWN
            async with self._http().get(url, ssl=self.ssl_context) as resp:
                if resp.status != 200:
                    raise await _discovery_failed(url, resp)
                doc = await resp.json(content_type=None)
            if not isinstance(doc, dict) or doc.get("issuer") != self.issuer:
                raise TokenError("discovery_failed", "the metadata names another issuer")
            self._metadata = doc
        return self._metadata

    async def token_endpoint(self) -> str:
        """The mTLS alias (RFC 8705 §5) when the server has one, else the token endpoint."""
        doc = await self.metadata()
        aliases = doc.get("mtls_endpoint_aliases") or {}
        return str(aliases.get("token_endpoint") or doc["token_endpoint"])

    def _request_body(
        self, scope: str | None, resources: tuple[str, ...]
    ) -> tuple[str, dict[str, str]]:
        fields: list[tuple[str, str]] = [("grant_type", "client_credentials")]
        if scope:
            fields.append(("scope", scope))
        fields += [("resource", r) for r in resources]
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self._secret is not None and self._secret_method == BASIC:
            userpass = f"{form_encode(self.client_id or '')}:{form_encode(self._secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(userpass.encode()).decode()
        else:
            if self.client_id:
                fields.append(("client_id", self.client_id))
            if self._secret is not None:
                fields.append(("client_secret", self._secret))
        return "&".join(f"{form_encode(k)}={form_encode(v)}" for k, v in fields), headers

    async def fetch(
        self, *, scope: str | None = None, resources: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """One token request, uncached; returns the RFC 6749 §5.1 response or raises TokenError."""
        self.reload_identity()
        body, headers = self._request_body(scope, resources)
        self.requests += 1
        try:
            url = await self.token_endpoint()
            async with self._http().post(
                url, data=body.encode(), headers=headers, ssl=self.ssl_context
            ) as resp:
                doc = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise _request_failed(exc) from exc
        if status != 200:
            error = doc if isinstance(doc, dict) else {}
            raise TokenError(
                str(error.get("error", "invalid_response")),
                str(error.get("error_description", "")),
                status,
            )
        if not isinstance(doc, dict) or not isinstance(doc.get("access_token"), str):
            raise TokenError("invalid_response", "no access_token in the response")
        return doc

    async def token(
        self, *, scope: str | None = None, resources: tuple[str, ...] = (), force: bool = False
    ) -> str:
        """A valid access token, from the cache until shortly before it expires.

        Concurrent callers share one request (single flight).
        """
        self.reload_identity()
        key = (scope, resources)
        cached = self._cache.get(key)
        if cached is not None and not force and time.monotonic() < cached.refresh_at:
            return str(cached.response["access_token"])
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._cache.get(key)
            if cached is not None and not force and time.monotonic() < cached.refresh_at:
                return str(cached.response["access_token"])
            response = await self.fetch(scope=scope, resources=resources)
            now = time.monotonic()
            lifetime = float(response.get("expires_in", 60))
            margin = max(REFRESH_MIN_SECONDS, lifetime * REFRESH_SHARE)
            self._cache[key] = _Cached(
                response=response, refresh_at=now + max(0.0, lifetime - margin)
            )
            return str(response["access_token"])

    def session(
        self, *, scope: str | None = None, resources: tuple[str, ...] = ()
    ) -> BearerSession:
        """An aiohttp session that sends the token and presents the same certificate."""
        return BearerSession(self, scope=scope, resources=resources)


class BearerSession(_Closing):
    """Requests with ``Authorization: Bearer`` and this client's TLS identity.

    A 401 ``invalid_token`` answer is retried once with a fresh token (the old one may have
    been revoked or signed by a retired key).
    """

    def __init__(
        self, tokens: TokenClient, *, scope: str | None, resources: tuple[str, ...]
    ) -> None:
        self._tokens = tokens
        self._scope = scope
        self._resources = resources
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        await self._session.close()

    async def request(self, method: str, url: str, **kwargs: Any) -> aiohttp.ClientResponse:
        """Send a request; the caller reads and releases the response (``async with``)."""
        for attempt in (1, 2):
            token = await self._tokens.token(
                scope=self._scope, resources=self._resources, force=attempt == 2
            )
            headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {token}"}
            resp = await self._session.request(
                method, url, headers=headers, ssl=self._tokens.ssl_context, **kwargs
            )
            challenge = resp.headers.get("WWW-Authenticate", "")
            if attempt == 1 and resp.status == 401 and 'error="invalid_token"' in challenge:
                resp.release()
                kwargs["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
                continue
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, url: str, **kwargs: Any) -> _RequestContext:
        return _RequestContext(self.request("GET", url, **kwargs))

    def post(self, url: str, **kwargs: Any) -> _RequestContext:
        return _RequestContext(self.request("POST", url, **kwargs))


class _RequestContext:
    """``async with session.get(...) as resp`` for :class:`BearerSession`."""

    def __init__(self, pending: Any) -> None:
        self._pending = pending
        self._resp: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        self._resp = await self._pending
        return self._resp

    async def __aexit__(self, *exc: object) -> None:
        if self._resp is not None:
            self._resp.release()
