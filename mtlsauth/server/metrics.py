"""GET /metrics: Prometheus text exposition of this process's counters."""

from __future__ import annotations

from aiohttp import web

from mtlsauth.server.keys import METRICS

__all__ = ["metrics"]


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[METRICS].render(),
        content_type="text/plain",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )
