"""RFC 7030 EST endpoints under ``/.well-known/est`` (§3.2.2), on the token service's TLS
listener:

* ``GET cacerts`` (§4.1): the CA certificates, certs-only PKCS#7;
* ``POST simpleenroll`` (§4.2.1): a PKCS#10, HTTP Basic with an enrollment credential
  (§3.2.3); answered with the certificate and its chain, certs-only PKCS#7 (§4.2.3);
* ``POST simplereenroll`` (§4.2.2): a PKCS#10, authenticated by the client's current
  certificate in the TLS handshake (§3.3.2).

Errors take the service's one JSON shape (status codes as §4.2.3 asks: 400 for a refused
request, 401 with a Basic challenge for failed authentication).
"""

from __future__ import annotations

from aiohttp import hdrs, web

from mtlsauth.core.errors import NO_STORE, InvalidClient, InvalidRequest
from mtlsauth.issuer.clientauth import parse_basic
from mtlsauth.issuer.est import Enrollment, certs_only, parse_csr
from mtlsauth.issuer.est.wire import CERTS_ONLY, PKCS7
from mtlsauth.issuer.http.credentials import request_peer, request_source
from mtlsauth.issuer.http.keys import AUDIT, EST, GUARD

__all__ = ["EST_PREFIX", "cacerts", "simpleenroll", "simplereenroll"]

EST_PREFIX = "/.well-known/est"
#: §4.2.1: the media type of an enrollment request.
PKCS10 = "application/pkcs10"


def _enrollment(request: web.Request) -> Enrollment:
    enrollment = request.app.get(EST)
    if enrollment is None:
        raise web.HTTPNotFound(reason="no CA here: EST is not served")
    return enrollment


def _pkcs7(body: bytes, content_type: str) -> web.Response:
    return web.Response(
        body=body,
        headers={"Content-Type": content_type, "Content-Transfer-Encoding": "base64", **NO_STORE},
    )


async def _csr_body(request: web.Request) -> bytes:
    if request.content_type != PKCS10:
        raise InvalidRequest(
            f"EST request with Content-Type {request.content_type!r}",
            description=f"The request's Content-Type must be {PKCS10}.",
        )
    return await request.read()


async def cacerts(request: web.Request) -> web.Response:
    return _pkcs7(certs_only(_enrollment(request).ca_certificates), PKCS7)


async def simpleenroll(request: web.Request) -> web.Response:
    enrollment = _enrollment(request)
    csr = parse_csr(await _csr_body(request))
    authorization = request.headers.getall(hdrs.AUTHORIZATION, [])
    if len(authorization) > 1:
        raise InvalidRequest("repeated Authorization header")
    if not authorization:
        raise InvalidClient("simpleenroll without credentials", reason="no_credentials")
    token_id, secret = parse_basic(authorization[0])
    certificates = await enrollment.enroll(
        token_id,
        secret,
        csr,
        source=request_source(request),
        throttle=request.app[GUARD].throttle,
        audit=request.app[AUDIT],
    )
    return _pkcs7(certs_only(certificates), CERTS_ONLY)


async def simplereenroll(request: web.Request) -> web.Response:
    enrollment = _enrollment(request)
    csr = parse_csr(await _csr_body(request))
    peer = request_peer(request)
    if peer is None:
        raise InvalidClient("simplereenroll without a client certificate", reason="no_cert")
    certificates = await enrollment.reenroll(peer.der, csr, audit=request.app[AUDIT])
    return _pkcs7(certs_only(certificates), CERTS_ONLY)
