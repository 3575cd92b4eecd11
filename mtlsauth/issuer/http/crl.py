"""GET /crl/<key id>.crl: the CA's CRLs, published where issued certificates' CRL
distribution points say (RFC 5280 §4.2.1.13), DER-encoded (§5) as ``application/pkix-crl``
(RFC 2585 §4.2).

The files are those ``mtlsauth pki crl`` (and every revocation) writes into ``<ca>/crl/``; the
CA directory is the one holding the configured ``crl``. The token service listens on HTTPS
only, so that is what it serves them over; a relying party that fetches CRLs over plain HTTP
can be pointed at any static web server serving the same directory (see README).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from mtlsauth.issuer.http.keys import SETTINGS
from pki.ca import CAError
from pki.publish import published_crl

__all__ = ["crl"]

log = logging.getLogger(__name__)


async def crl(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if settings.crl is None:
        raise web.HTTPNotFound(reason="CRLs are not published here")
    try:
        data = await asyncio.to_thread(
            published_crl, settings.crl.parent, request.match_info["name"]
        )
    except (CAError, OSError) as exc:
        log.error("cannot serve CRL %s: %s", request.match_info["name"], exc)
        raise web.HTTPServiceUnavailable(reason="the CRL cannot be read") from exc
    if data is None:
        raise web.HTTPNotFound(reason="no such CRL")
    # Short caching: a revocation re-signs the CRL at once, and relying parties should see it.
    return web.Response(
        body=data,
        content_type="application/pkix-crl",
        headers={"Cache-Control": "public, max-age=60"},
    )
