"""The request id: one per request, in every log line about it and in the ``X-Request-Id``
response header, so an operator can follow one request through proxy, service and log.

An incoming ``X-Request-Id`` is kept only from a trusted proxy (which made it, nginx's
``$request_id`` say) and only when it is sane: one value of 1-128 characters from a small safe
set. Anyone else's is replaced, so a client cannot forge another request's id or smuggle text
into the log.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Final

__all__ = ["REQUEST_ID", "REQUEST_ID_HEADER", "choose_request_id"]

REQUEST_ID_HEADER: Final = "X-Request-Id"
#: The id of the request being handled (set by the middleware; read by the log formatter).
REQUEST_ID: ContextVar[str | None] = ContextVar("mtlsauth_request_id", default=None)
#: UUIDs, hex (nginx ``$request_id``), base64url, Envoy's and AWS's ``Root=1-...`` style ids.
_SANE: Final = re.compile(r"[A-Za-z0-9._:=+/-]{1,128}")


def choose_request_id(incoming: Sequence[str], *, trusted: bool) -> str:
    """The incoming id when a trusted proxy sent exactly one sane value; else a new one."""
    if trusted and len(incoming) == 1 and _SANE.fullmatch(incoming[0]):
        return incoming[0]
    return secrets.token_hex(16)
