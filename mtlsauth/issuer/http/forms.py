"""Strict application/x-www-form-urlencoded parsing for OAuth endpoints.

RFC 6749 §3.2: parameters must not repeat (decision: any repeat is 400 invalid_request, except
RFC 8707 ``resource`` which may), and a parameter sent without a value is treated as omitted.
aiohttp's ``post()`` is first-wins on repeats, so the raw body is parsed here, once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import unquote_plus

from mtlsauth.core.errors import InvalidRequest

__all__ = ["FORM_CONTENT_TYPE", "parse_form"]

FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"
_REPEATABLE: Final = frozenset({"resource"})
_MAX_FIELDS: Final = 64
_PLAIN_NAME: Final = re.compile(r"[a-z_]{1,40}")


def parse_form(
    body: bytes, content_type: str, charset: str | None
) -> Mapping[str, tuple[str, ...]]:
    """Decode a form body into name → values; raises InvalidRequest on anything malformed."""
    if content_type != FORM_CONTENT_TYPE:
        raise InvalidRequest(
            f"content type {content_type[:60]!r}",
            description=f"The request body must be {FORM_CONTENT_TYPE}.",
        )
    if charset not in (None, "utf-8", "UTF-8"):
        raise InvalidRequest(f"charset {charset!r}", description="The form must be UTF-8.")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("non-ASCII bytes in a form body") from exc
    values: dict[str, list[str]] = {}
    pairs = [p for p in text.split("&") if p]
    if len(pairs) > _MAX_FIELDS:
        raise InvalidRequest(f"{len(pairs)} form fields")
    for pair in pairs:
        raw_name, _, raw_value = pair.partition("=")
        if "%" in pair or "+" in pair:
            try:
                name = unquote_plus(raw_name, encoding="utf-8", errors="strict")
                value = unquote_plus(raw_value, encoding="utf-8", errors="strict")
            except UnicodeDecodeError as exc:
                raise InvalidRequest("a form field is not valid UTF-8 after decoding") from exc
        else:  # nothing to decode: the common case for token requests
            name, value = raw_name, raw_value
        seen = values.setdefault(name, [])
        if seen and name not in _REPEATABLE:
            raise InvalidRequest(
                f"parameter {name[:40]!r} repeated",
                # Named back only when it is a plain parameter name: the description never
                # carries arbitrary request bytes.
                description=f"Parameter {name!r} must not be repeated."
                if _PLAIN_NAME.fullmatch(name)
                else "A parameter must not be repeated.",
            )
        seen.append(value)
    # Only after the duplicate check: a repeated parameter is an error even when one is empty.
    return {name: tuple(v for v in vals if v) for name, vals in values.items() if any(vals)}
