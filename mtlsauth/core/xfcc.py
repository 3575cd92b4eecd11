"""Envoy's ``x-forwarded-client-cert`` (XFCC) header, parsed exactly as Envoy writes it.

No RFC defines this header (RFC 9440 ``Client-Cert`` is the standard one, in
:mod:`mtlsauth.core.peer`); its grammar is Envoy's.

Envoy's grammar (its documentation of ``x-forwarded-client-cert``): elements separated by
``,``; each element is ``key=value`` pairs separated by ``;``; a value is either unquoted (with
no ``"``, ``,`` or ``;`` in it) or wholly double-quoted with ``\\"`` (and ``\\\\``) escapes.
Keys are case-insensitive and are the ones Envoy writes: By, Hash, Cert, Chain, Subject, URI,
DNS. By, URI and DNS repeat (one per SAN); the others appear at most once per element.

Anything else is refused rather than guessed at: a lenient parser lets one element's text be
read as part of another, and in APPEND_FORWARD mode the elements before Envoy's are written
by the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = ["KEYS", "XfccElement", "XfccError", "parse_xfcc"]

#: Envoy's keys, lower-cased, and whether one element may carry the key more than once.
KEYS: Final[Mapping[str, bool]] = {
    "by": True,
    "hash": False,
    "cert": False,
    "chain": False,
    "subject": False,
    "uri": True,
    "dns": True,
}

#: An element: lower-cased key → its values in order.
XfccElement = dict[str, list[str]]


class XfccError(ValueError):
    """The header is not an XFCC value as Envoy writes it."""


def _quoted(value: str, start: int) -> tuple[str, int]:
    """The quoted string opening at ``start``; returns it unescaped and the index past it."""
    out: list[str] = []
    i = start + 1
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            if i + 1 >= len(value):
                break
            out.append(value[i + 1])
            i += 2
        elif ch == '"':
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise XfccError("a quoted XFCC value is not terminated")


def _unquoted(value: str, start: int) -> tuple[str, int]:
    end = start
    while end < len(value) and value[end] not in ",;":
        if value[end] == '"':
            raise XfccError("a '\"' inside an unquoted XFCC value")
        end += 1
    return value[start:end], end


def parse_xfcc(value: str) -> list[XfccElement]:
    """The elements of an XFCC header value, first to last; XfccError when it is malformed."""
    elements: list[XfccElement] = []
    element: XfccElement = {}
    i = 0
    while True:
        eq = value.find("=", i)
        if eq < 0:
            raise XfccError("an XFCC pair has no '='")
        key = value[i:eq].strip().lower()
        if key not in KEYS:
            raise XfccError(f"{value[i:eq][:20]!r} is not an XFCC key Envoy writes")
        if key in element and not KEYS[key]:
            raise XfccError(f"XFCC key {key!r} twice in one element")
        start = eq + 1
        if start < len(value) and value[start] == '"':
            text, i = _quoted(value, start)
        else:
            text, i = _unquoted(value, start)
        element.setdefault(key, []).append(text)
        if i == len(value):
            elements.append(element)
            return elements
        if value[i] == ",":
            elements.append(element)
            element = {}
        elif value[i] != ";":
            raise XfccError("text after a quoted XFCC value")
        i += 1
        if i == len(value):
            raise XfccError("an XFCC header ends in a separator")
