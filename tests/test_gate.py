"""``mtlsauth gate`` end to end: a real nginx (README's configuration) in front of a non-Python
upstream (nginx itself), asking a real gate process, with a live token service."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import unused_port
from multidict import CIMultiDict
from yarl import URL

from mtlsauth.client import TokenClient
from mtlsauth.core.thumbprint import x5t_s256
from mtlsauth.issuer.keys import SigningKey, generate_signing_key
from mtlsauth.issuer.tokens import TokenSigner
from tests.conftest import ClientCert, Home, client_context, running
from tests.proxies import nginx_servers

ROOT = Path(__file__).resolve().parent.parent
GATE_HEADER = "X-SSL-Client-Cert"
#: A client that talks to the gate directly from here is not the trusted proxy (127.0.0.1).
FORGER_ADDRESS = "127.0.0.3"


def readme_nginx_conf() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- gate-nginx -->\n```nginx\n(.*?)```", text, re.S)
    assert found, "README lost its gate nginx configuration"
    return found.group(1)


@contextlib.contextmanager
def gate_process(home: Home, port: int, *extra: str) -> Iterator[subprocess.Popen[str]]:
    settings = home.settings
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtlsauth", "gate", "--issuer", settings.issuer,
         "--cacert", str(home.ca_cert), "--audience", settings.audience,
         "--listen", f"127.0.0.1:{port}", "--trusted-proxy", "127.0.0.1/32",
         "--cert-header", GATE_HEADER, "--cert-format", "nginx",
         "--revocation-interval", "0.3", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "gate listening" in line, line
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def nginx_in_front(home: Home, workdir: Path, gate_port: int) -> Iterator[str]:
    port, upstream = unused_port(), unused_port()
    conf = (
        readme_nginx_conf()
        .replace("127.0.0.1:8080", f"127.0.0.1:{upstream}")
        .replace("127.0.0.1:8445", f"127.0.0.1:{gate_port}")
        .replace("127.0.0.1:443", f"127.0.0.1:{port}")
        .replace("/etc/nginx/tls/", f"{home.path}/tls/")
        .replace("/etc/nginx/client-ca.pem", str(home.settings.client_ca))
    )
    with nginx_servers(workdir, conf, port):
        yield f"https://127.0.0.1:{port}"


async def get(
    url: str,
    home: Home,
    cert: ClientCert | None,
    token: str | None,
    headers: dict[str, str] | None = None,
    local: str | None = None,
) -> tuple[int, CIMultiDict[str], str]:
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    connector = aiohttp.TCPConnector(local_addr=(local, 0) if local else None)
    ssl = client_context(home, cert) if url.startswith("https") else True
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        # encoded: sent as written (dot segments included), as an attacker would.
        session.get(URL(url, encoded=True), headers=all_headers, ssl=ssl) as resp,
    ):
        return resp.status, resp.headers.copy(), await resp.text()


def forge(home: Home, cert: ClientCert, *, ttl: int = 300, key: SigningKey | None = None) -> str:
    """A token as the issuer would sign it (or with another ``key``), bound to ``cert``."""
    settings = home.settings
    signer = TokenSigner(
        issuer=settings.issuer, key=key or SigningKey.load(settings.signing_key), ttl=ttl
    )
    return signer.sign(
        client_id="svc", audience=(settings.audience,), scope=("demo.read",),
        x5t_s256=x5t_s256(cert.der),
    ).token  # fmt: skip


async def issue(home: Home, cert: ClientCert) -> str:
    async with TokenClient(
        issuer=home.settings.issuer, ssl_context=client_context(home, cert), client_id="svc"
    ) as client:
        return await client.token()


@pytest.fixture
def certs(home: Home) -> tuple[ClientCert, ClientCert]:
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "svc", "--san-dns", "svc",
                    "--scope", "demo.read")  # fmt: skip
    return home.issue("svc", dns=["svc"]), home.issue("other", dns=["other"])


@contextlib.asynccontextmanager
async def stack(home: Home, workdir: Path, *gate_args: str) -> AsyncIterator[tuple[str, str, Any]]:
    gate_port = unused_port()
    with (
        gate_process(home, gate_port, *gate_args) as proc,
        nginx_in_front(home, workdir, gate_port) as proxy,
    ):
        yield proxy, f"http://127.0.0.1:{gate_port}", proc


def challenge_error(headers: CIMultiDict[str]) -> str | None:
    found = re.search(r'error="([a-z_]+)"', headers.get("WWW-Authenticate", ""))
    return found.group(1) if found else None


async def test_gate_behind_nginx(
    home: Home, tmp_path: Path, certs: tuple[ClientCert, ClientCert]
) -> None:
    right, other = certs
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\npath = "/api/write"\nscope = "demo.write"\n')
    async with running(home):
        token = await issue(home, right)
        async with stack(home, tmp_path / "nginx", "--config", str(rules)) as (proxy, gate, proc):
            # The right certificate and token: through, with the identity headers upstream,
            # whatever the client claimed under those names.
            forged_identity = {"X-Mtlsauth-Client-Id": "admin"}
            status, _, body = await get(f"{proxy}/api/x", home, right, token, forged_identity)
            assert status == 200, body
            assert '"client_id":"svc"' in body
            assert '"scope":"demo.read"' in body
            assert '"subject":"svc"' in body
            # Another certificate, or none: 401 invalid_token with the challenge.
            for cert in (other, None):
                status, headers, _ = await get(f"{proxy}/api/x", home, cert, token)
                assert (status, challenge_error(headers)) == (401, "invalid_token")
            # No token: the bare challenge.
            status, headers, _ = await get(f"{proxy}/api/x", home, right, None)
            assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="mtlsauth"')
            # Expired, and signed by a key the issuer does not have.
            stranger = generate_signing_key(tmp_path / "stranger" / "key.pem")
            for bad in (forge(home, right, ttl=-120), forge(home, right, key=stranger)):
                status, headers, _ = await get(f"{proxy}/api/x", home, right, bad)
                assert (status, challenge_error(headers)) == (401, "invalid_token")
            # A scope the location needs (X-Mtlsauth-Scope-Required) or a path rule needs.
            for path, scope in (("/admin/x", "demo.admin"), ("/api/write/1", "demo.write")):
                status, headers, _ = await get(f"{proxy}{path}", home, right, token)
                assert (status, challenge_error(headers)) == (403, "insufficient_scope"), path
                needed = re.search(r'scope="([^"]*)"', headers["WWW-Authenticate"])
                assert needed is not None
                assert scope in needed.group(1).split()
            # A dot segment does not walk around the path rule.
            status, _, _ = await get(f"{proxy}/api/x/../write/1", home, right, token)
            assert status == 403
            # Straight to the gate from an address that is not the trusted proxy, forging the
            # certificate header: refused (and not believed).
            pem = quote(right.cert.read_text(), safe="")
            status, headers, _ = await get(
                f"{gate}/api/x", home, None, token, {GATE_HEADER: pem}, local=FORGER_ADDRESS
            )
            assert (status, challenge_error(headers)) == (401, "invalid_request")
            status, headers, _ = await get(
                f"{gate}/api/x", home, None, token, {"X-Request-Id": "rid-42"}
            )
            assert (status, headers.get("X-Request-Id")) == (401, "rid-42"), headers
    # Every refusal was logged with the reason and a request id; the token never was.
    proc.wait(timeout=10)
    log = proc.stderr.read()
    assert "-> 401 invalid_token" in log
    assert "request rid-42)" in log
    assert "bound to another certificate" in log
    assert "not a trusted proxy" in log
    assert token not in log
    assert token.split(".")[2] not in log


async def test_gate_keeps_answering_while_the_issuer_is_down(
    home: Home, tmp_path: Path, certs: tuple[ClientCert, ClientCert]
) -> None:
    right, _ = certs
    gate_port = unused_port()
    with gate_process(home, gate_port):
        async with running(home):
            token = await issue(home, right)
            with nginx_in_front(home, tmp_path / "nginx", gate_port) as proxy:
                status, _, body = await get(f"{proxy}/api/x", home, right, token)
                assert status == 200, body
        # The issuer is gone: the seen token, and a token never seen before whose key the
        # gate holds, still pass; a wrong certificate is still refused.
        with nginx_in_front(home, tmp_path / "nginx2", gate_port) as proxy:
            for t in (token, forge(home, right)):
                status, _, body = await get(f"{proxy}/api/x", home, right, t)
                assert status == 200, body


async def test_gate_without_keys_or_down_is_a_503(
    home: Home, tmp_path: Path, certs: tuple[ClientCert, ClientCert]
) -> None:
    right, _ = certs
    token = forge(home, right)
    gate_port = unused_port()
    with nginx_in_front(home, tmp_path / "nginx", gate_port) as proxy:
        # No gate listening yet, then a gate that never reached the issuer.
        status, _, _ = await get(f"{proxy}/api/x", home, right, token)
        assert status == 503
        with gate_process(home, gate_port):
            status, _, body = await get(f"{proxy}/api/x", home, right, token)
            assert (status, body) == (503, '{"error":"temporarily_unavailable"}')


async def test_revoked_token_is_refused_by_the_gate(
    home: Home, tmp_path: Path, certs: tuple[ClientCert, ClientCert]
) -> None:
    right, _ = certs
    async with running(home) as service:
        token = await issue(home, right)
        async with stack(home, tmp_path / "nginx") as (proxy, _, _):
            status, _, body = await get(f"{proxy}/api/x", home, right, token)
            assert status == 200, body
            status, _, _ = await service.post(
                "/revoke", data={"token": token, "client_id": "svc"}, cert=right
            )
            assert status == 200
            revoked_at = time.monotonic()
            while True:
                status, headers, _ = await get(f"{proxy}/api/x", home, right, token)
                if status == 401:
                    assert challenge_error(headers) == "invalid_token"
                    break
                # Poll interval 0.3 s + the issuer's 1 s list cache, with room for a busy box.
                assert time.monotonic() - revoked_at < 5, "the revocation did not reach the gate"
                await asyncio.sleep(0.1)
            # Another token of the same client still passes.
            status, _, _ = await get(f"{proxy}/api/x", home, right, await issue(home, right))
            assert status == 200
