"""JSON logs: one line per request with its fields (status, client_id, error, method, path,
duration_ms, request_id), never a secret or a token; the request id is echoed in
``X-Request-Id`` and taken from the request only when a trusted proxy sent a sane one."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from typing import Any

from tests.conftest import Home, client_context, serve_process


def post_token(
    home: Home, secret: str, request_id: str | None = None
) -> tuple[int, dict[str, Any], str]:
    """POST /token as client ``sec``: (status, JSON body, the response's X-Request-Id)."""
    headers = {
        "Authorization": "Basic " + base64.b64encode(f"sec:{secret}".encode()).decode(),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    request = urllib.request.Request(
        f"https://127.0.0.1:{home.port}/token",
        data=b"grant_type=client_credentials",
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(  # noqa: S310 - a fixed https URL
            request, context=client_context(home), timeout=5
        ) as resp:
            return int(resp.status), json.loads(resp.read()), resp.headers["X-Request-Id"]
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers["X-Request-Id"]


def records(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def request_line(lines: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    found = [r for r in lines if r.get("request_id") == request_id and "status" in r]
    assert len(found) == 1, found
    return found[0]


def test_request_lines_carry_fields_and_no_secrets(home: Home) -> None:
    secret = home.add_client("--auth-method", "client_secret_basic", "--client-id", "sec")[
        "client_secret"
    ]
    with serve_process(home, MTLSAUTH_LOG_FORMAT="json", MTLSAUTH_LOG_LEVEL="DEBUG") as server:
        status, _body, refused_id = post_token(home, "wrong-" + secret)
        assert status == 401
        status, body, issued_id = post_token(home, secret)
        assert status == 200
        token = body["access_token"]
        # A client's own id is not believed: it is not a trusted proxy.
        _status, _body, replaced = post_token(home, secret, request_id="client-chosen-id")
    assert server.proc.returncode == 0
    lines = records(server.stderr)

    assert re.fullmatch(r"[0-9a-f]{32}", refused_id)
    refused = request_line(lines, refused_id)
    assert refused["level"] == "INFO"
    assert refused["status"] == 401
    assert refused["error"] == "invalid_client"
    assert (refused["method"], refused["path"]) == ("POST", "/token")
    assert isinstance(refused["duration_ms"], float)
    assert refused["duration_ms"] >= 0
    assert "client_id" not in refused  # never authenticated

    issued = request_line(lines, issued_id)
    assert issued["status"] == 200
    assert issued["client_id"] == "sec"
    assert "error" not in issued

    assert replaced != "client-chosen-id"
    assert request_line(lines, replaced)["status"] == 200
    assert secret not in server.stderr
    assert token not in server.stderr
    assert token.split(".")[2] not in server.stderr


def test_request_id_from_a_trusted_proxy(home: Home) -> None:
    secret = home.add_client("--auth-method", "client_secret_basic", "--client-id", "sec")[
        "client_secret"
    ]
    with serve_process(
        home, MTLSAUTH_LOG_FORMAT="json", MTLSAUTH_TRUSTED_PROXIES="127.0.0.1"
    ) as server:
        kept = "2f1d9c3e-8a7b-4c6d-9e0f-1a2b3c4d5e6f"
        status, _body, echoed = post_token(home, "wrong", request_id=kept)
        assert (status, echoed) == (401, kept)
        # Not sane (a space, a quote, too long): replaced even from the proxy.
        for bad in ('a b"', "x" * 129):
            status, _body, echoed = post_token(home, "wrong", request_id=bad)
            assert status == 401
            assert re.fullmatch(r"[0-9a-f]{32}", echoed)
    lines = records(server.stderr)
    assert request_line(lines, kept)["error"] == "invalid_client"
    assert secret not in server.stderr
