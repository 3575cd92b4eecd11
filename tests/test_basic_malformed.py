"""A Basic header that does not decode is a malformed request: 400 invalid_request
(RFC 6749 §5.2), not 401 invalid_client — on every endpoint that authenticates clients.

RFC 6749 §2.3.1 / Appendix B: the client_id and secret are form-encoded, then joined with ':'
and base64-encoded (RFC 7617 §2) from UTF-8.
"""

from __future__ import annotations

import base64

import pytest

from tests.conftest import Home, running

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


MALFORMED = {
    "user not form-encoding": _basic(b"sec%zz:secret"),
    "password not form-encoding": _basic(b"sec:se%zzcret"),
    "truncated escape": _basic(b"sec:secret%4"),
    "escape of invalid UTF-8": _basic(b"sec:%ff%fe"),
    "not base64": "Basic !!!not-base64!!!",
    "base64 without padding": "Basic " + base64.b64encode(b"sec:secret").decode().rstrip("="),
    "not UTF-8": _basic(b"sec:\xff\xfe"),
    "no colon": _basic(b"secsecret"),
}


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
async def test_malformed_basic_is_invalid_request(home: Home, path: str) -> None:
    added = await home.aadd_client("--auth-method", "client_secret_basic", "--client-id", "sec")
    body = {"/token": "grant_type=client_credentials"}.get(path, "token=abc")
    async with running(home) as service:
        # Well-formed (escapes included): the client authenticates.
        secret = added["client_secret"]
        good = _basic(f"%73ec:{secret}".encode())
        status, _, doc = await service.post(
            path, data=body, headers={**FORM, "Authorization": good}
        )
        assert status == 200, doc
        for label, value in MALFORMED.items():
            status, _, doc = await service.post(
                path, data=body, headers={**FORM, "Authorization": value}
            )
            assert (status, doc["error"]) == (400, "invalid_request"), label
