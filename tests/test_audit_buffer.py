"""The audit log off the hot path: events are buffered and written on an interval, when the
buffer is full, and at a clean stop — nothing issued is lost when the service stops cleanly."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import pytest

import mtlsauth.issuer.http.app
from mtlsauth.issuer.audit import Audit
from tests.conftest import ClientCert, Home, client_context, eventually, running, serve_process

TOKENS = 40


@pytest.fixture
def svc(home: Home) -> ClientCert:
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "svc", "--san-dns", "svc",
                    "--scope", "read")  # fmt: skip
    return home.issue("svc", dns=["svc"])


def _issued(home: Home) -> list[dict[str, Any]]:
    path = home.path / "audit.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == "token.issued"]


async def test_tokens_are_buffered_and_all_written_at_a_clean_stop(
    home: Home, svc: ClientCert, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No interval flush during the test: what reaches the file comes from the stop.
    monkeypatch.setattr(mtlsauth.issuer.http.app, "AUDIT_FLUSH_INTERVAL", 3600.0, raising=False)
    jtis = []
    async with running(home) as service:
        for _ in range(TOKENS):
            status, body = await service.token(svc, client_id="svc")
            assert status == 200
            jtis.append(body["access_token"])
        assert _issued(home) == []  # not written per token
    issued = _issued(home)
    assert len(issued) == TOKENS
    assert len({e["jti"] for e in issued}) == TOKENS
    assert all(e["client_id"] == "svc" and e["method"] == "tls_client_auth" for e in issued)


async def test_buffered_events_reach_the_file_on_the_interval(
    home: Home, svc: ClientCert, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mtlsauth.issuer.http.app, "AUDIT_FLUSH_INTERVAL", 0.05)
    async with running(home) as service:
        status, _ = await service.token(svc, client_id="svc")
        assert status == 200

        async def written() -> bool:
            return len(_issued(home)) == 1

        await eventually(written)


def test_a_full_buffer_is_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = Audit(path, max_buffered=3)
    for n in range(5):
        audit.event("token.issued", client_id="c", jti=str(n))
    written = [json.loads(line)["jti"] for line in path.read_text().splitlines()]
    assert written == ["0", "1", "2"]  # bounded: the buffer never holds max_buffered events
    audit.close()
    written = [json.loads(line)["jti"] for line in path.read_text().splitlines()]
    assert written == ["0", "1", "2", "3", "4"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_sigterm_writes_every_buffered_event(home: Home, svc: ClientCert) -> None:
    """The real `mtlsauth serve`: tokens issued just before SIGTERM are all in the log."""
    ctx = client_context(home, svc)
    form = "grant_type=client_credentials&client_id=svc"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    with serve_process(home) as server:
        connection = http.client.HTTPSConnection("127.0.0.1", home.port, context=ctx, timeout=5)
        for _ in range(TOKENS):
            connection.request("POST", "/token", body=form, headers=headers)
            response = connection.getresponse()
            response.read()
            assert response.status == 200
        connection.close()
    assert server.proc.returncode == 0, server.stderr
    assert len(_issued(home)) == TOKENS
