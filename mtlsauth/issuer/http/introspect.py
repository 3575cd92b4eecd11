"""POST /introspect (RFC 7662 §2): authenticated clients ask whether a token is active."""

from __future__ import annotations

import json

from aiohttp import web

from mtlsauth.core.errors import JSON_NO_STORE, InvalidRequest
from mtlsauth.issuer.http.credentials import authenticate, one
from mtlsauth.issuer.http.forms import parse_form
from mtlsauth.issuer.http.keys import INSPECTOR

__all__ = ["introspect"]


async def introspect(request: web.Request) -> web.Response:
    form = parse_form(await request.read(), request.content_type, request.charset)
    caller = await authenticate(request, form)
    token = one(form, "token")
    if token is None:
        raise InvalidRequest("introspection without a token parameter")
    result = await request.app[INSPECTOR].introspect(token, caller.client.client_id)
    return web.Response(body=json.dumps(result, separators=(",", ":")), headers=JSON_NO_STORE)
