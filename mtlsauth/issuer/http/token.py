"""POST /token: parse the request, authenticate the client, hand it to the client credentials
grant, answer.

RFC 6749 §4.4.2 request, §5.1 response with ``Cache-Control: no-store`` and ``Pragma: no-cache``.
"""

from __future__ import annotations

import time

from aiohttp import web

from mtlsauth.core.errors import JSON_NO_STORE
from mtlsauth.issuer.grant import TokenParams
from mtlsauth.issuer.http.credentials import authenticate, one
from mtlsauth.issuer.http.forms import parse_form
from mtlsauth.issuer.http.keys import GRANT

__all__ = ["token"]


async def token(request: web.Request) -> web.Response:
    started = time.perf_counter()
    form = parse_form(await request.read(), request.content_type, request.charset)
    params = TokenParams(
        grant_type=one(form, "grant_type"),
        scope=one(form, "scope"),
        resources=form.get("resource", ()),
    )
    caller = await authenticate(request, form)
    body = request.app[GRANT].issue(caller.client, params, caller.peer, started=started)
    return web.Response(body=body, headers=JSON_NO_STORE)
