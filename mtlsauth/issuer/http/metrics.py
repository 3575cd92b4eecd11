"""GET /metrics: Prometheus text exposition of the service's metrics (every worker's, with
``serve --workers``: see :mod:`mtlsauth.issuer.metrics`).

Counters tell an outsider how the service is used, so /metrics is not public: it is served on
a separate plain-HTTP listener (``metrics_port``, loopback by default), or, without one, on the
public listeners to peers in ``metrics_allow`` only (never to a trusted proxy, which relays
others' requests); anyone else gets the 404 of a missing page.
"""

from __future__ import annotations

import asyncio
import ipaddress

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from mtlsauth.core.errors import NO_STORE
from mtlsauth.issuer.est import inventory_metrics
from mtlsauth.issuer.http.keys import METRICS, METRICS_ALLOW, PROXY, SETTINGS

__all__ = ["metrics"]


def _allowed(request: web.Request) -> bool:
    allow = request.app.get(METRICS_ALLOW)
    if allow is None:  # the separate metrics listener: its address is the protection
        return True
    # The TCP peer, never a forwarded header: a proxy must not widen the allow-list.
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    try:
        address = ipaddress.ip_address(peer[0]) if peer else None
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address is None:
        return False
    # A trusted proxy relays requests of clients elsewhere: its own address vouches for none.
    proxy = request.app.get(PROXY)
    if proxy is not None and proxy.is_trusted(str(address)):
        return False
    return any(address in network for network in allow)


async def metrics(request: web.Request) -> web.Response:
    if not _allowed(request):
        raise web.HTTPNotFound()
    # Multiprocess mode reads one file per worker and metric: not on the event loop.
    body = await asyncio.to_thread(request.app[METRICS].render)
    settings = request.app.get(SETTINGS)
    if settings is not None:
        body += await asyncio.to_thread(inventory_metrics, settings.ca_dir)
    return web.Response(body=body, headers={**NO_STORE, "Content-Type": CONTENT_TYPE_LATEST})
