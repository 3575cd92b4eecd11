"""GET /health for load balancers (no RFC): 200 when the store answers, 503 otherwise."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from mtlsauth.core.errors import NO_STORE
from mtlsauth.issuer.http.keys import STORE
from mtlsauth.issuer.store import StoreError

__all__ = ["health"]

log = logging.getLogger(__name__)


async def health(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(2):
            await request.app[STORE].change_marker()
    except (StoreError, TimeoutError) as exc:
        log.warning("health check failed: %s", exc)
        return web.json_response(
            {"status": "unavailable", "store": "down"},
            status=503,
            headers=NO_STORE,
        )
    return web.json_response({"status": "ok"}, headers=NO_STORE)
