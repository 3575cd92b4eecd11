"""POST /revoke (RFC 7009 §2): a client revokes one of its own access tokens."""

from __future__ import annotations

from aiohttp import web

from mtlsauth.core.errors import NO_STORE, InvalidRequest, UnsupportedTokenType
from mtlsauth.issuer.http.credentials import authenticate, one
from mtlsauth.issuer.http.forms import parse_form
from mtlsauth.issuer.http.keys import INSPECTOR

__all__ = ["revoke"]

_HINTS = frozenset({"access_token", "refresh_token"})


async def revoke(request: web.Request) -> web.Response:
    form = parse_form(await request.read(), request.content_type, request.charset)
    caller = await authenticate(request, form)
    token = one(form, "token")
    if token is None:
        raise InvalidRequest("revocation without a token parameter")
    hint = one(form, "token_type_hint")
    if hint is not None and hint not in _HINTS:
        raise UnsupportedTokenType(f"token_type_hint {hint[:40]!r}")
    await request.app[INSPECTOR].revoke(token, caller.client.client_id)
    # RFC 7009 §2.2: 200 whether or not the token was known.
    return web.Response(status=200, headers=NO_STORE)
