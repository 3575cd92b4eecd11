"""The request path from aiohttp's low-level server (``web.Server``) to an endpoint: a fixed
route is looked up in one dict and its handler run under the app's one middleware.

``web.Application`` resolves every request through its router (an awaited resolve, a fresh
match-info object, frozen per request), then wraps the handler in the middleware chain plus a
middleware of its own that swaps ``current_app`` for sub-applications. The service has no
sub-applications and one middleware, so for its fixed routes that work is the same on every
request: :class:`Dispatcher` does it once, at start, and keeps one frozen match-info per
(method, path). Everything else (404, 405, ``/crl/{name}``) goes through the application's own
path unchanged, so the router still decides what is unmatched or not allowed, and the
middleware renders it (RFC 6749 §5.2 JSON).

Kept from ``Application`` on the fixed path: the path is matched as the router matches it
(``rel_url.path_safe``: percent-decoded, ``%2F`` kept, the query left out); an ``Expect``
header is handled before the middleware by the route's expect handler (RFC 9110 §10.1.1:
``100-continue`` answered, anything else 417); ``request.app`` and ``request.match_info`` are
what the handlers read; the body limit is the application's (``client_max_size``), since the
request objects are still made by the application.
"""

from __future__ import annotations

from typing import cast

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

__all__ = ["Dispatcher", "ServiceRunner"]


class Dispatcher:
    """``web.Server``'s request handler for ``app``: fixed routes in one lookup, the rest
    through ``app`` as aiohttp serves it. The app must be frozen (started)."""

    __slots__ = ("_app", "_fixed", "_middleware")

    def __init__(self, app: web.Application) -> None:
        if not app.frozen:
            raise RuntimeError("the application must be started before it is dispatched")
        if len(app.middlewares) != 1:
            raise ValueError("the dispatcher runs exactly one middleware")
        self._app = app
        self._middleware: Middleware = app.middlewares[0]
        self._fixed: dict[tuple[str, str], UrlMappingMatchInfo] = {}
        for resource in app.router.resources():
            if not isinstance(resource, web.PlainResource):
                continue
            for route in resource:
                if route.method == hdrs.METH_ANY:
                    continue
                info = UrlMappingMatchInfo({}, route)
                info.add_app(app)
                info.freeze()
                # The first route registered for a (method, path) wins, as in the router.
                self._fixed.setdefault((route.method, resource.canonical), info)

    @property
    def fixed_routes(self) -> frozenset[tuple[str, str]]:
        """The (method, path) pairs served without the router."""
        return frozenset(self._fixed)

    async def __call__(self, base: BaseRequest) -> web.StreamResponse:
        request = cast(web.Request, base)  # made by the application's request factory
        info = self._fixed.get((request.method, request.rel_url.path_safe))
        if info is None:
            return await self._app._handle(request)
        request._match_info = info
        if request.headers.get(hdrs.EXPECT):
            response = await info.expect_handler(request)
            await request.writer.drain()
            if response is not None:
                return response
        return await self._middleware(request, info.handler)


class ServiceRunner(web.AppRunner):
    """``web.AppRunner`` whose server hands each request to a :class:`Dispatcher`: the app
    starts, stops and makes its requests as under ``AppRunner``; only the dispatch differs."""

    __slots__ = ()

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.request_handler = Dispatcher(self.app)
        return server
