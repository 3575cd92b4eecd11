"""The gate as Envoy's ext_authz HTTP service: the exact check request Envoy sends (Envoy is
not installable here), the path rules file, and the gate command's configuration errors."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from mtlsauth.core.peer import ProxyConfig, parse_networks
from mtlsauth.resource import JWKSCache, TokenVerifier, VerifierConfig
from mtlsauth.resource.gate import Gate, create_gate_app, load_rules, normalized_path
from tests.conftest import ClientCert, Home, client_context, run_cli, running
from tests.test_gate import issue

XFCC = "x-forwarded-client-cert"


def xfcc(cert: ClientCert) -> str:
    """What Envoy's SANITIZE_SET with set_current_client_cert_details {cert: true} writes."""
    return (
        f"Hash={hashlib.sha256(cert.der).hexdigest()};"
        f'Cert="{quote(cert.cert.read_text(), safe="")}";Subject="CN={cert.cert.parent.name}"'
    )


@pytest.fixture
def certs(home: Home) -> tuple[ClientCert, ClientCert]:
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "svc", "--san-dns", "svc",
                    "--scope", "demo.read")  # fmt: skip
    return home.issue("svc", dns=["svc"]), home.issue("other", dns=["other"])


async def test_the_check_request_envoy_sends(
    home: Home, tmp_path: Path, certs: tuple[ClientCert, ClientCert], aiohttp_client: Any
) -> None:
    right, other = certs
    settings = home.settings
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\npath = "/api/write"\nmethods = ["POST"]\nscope = "demo.write"\n')
    keys = JWKSCache(issuer=settings.issuer, ssl_context=client_context(home))
    gate = Gate(
        TokenVerifier(VerifierConfig(settings.issuer, settings.audience), keys),
        ProxyConfig(trusted=parse_networks(["127.0.0.1"]), header=XFCC, fmt="xfcc"),
        load_rules(rules),
    )
    client: TestClient[Any, Any] = await aiohttp_client(create_gate_app(gate))
    try:
        async with running(home):
            token = await issue(home, right)

            async def check(method: str, path: str, cert: ClientCert | str) -> Any:
                # Envoy: the original method, path_prefix "" + the original path, an empty
                # body, and the allowed headers (Authorization always among them).
                headers = {
                    "Host": "api.internal",
                    "Authorization": f"Bearer {token}",
                    XFCC: cert if isinstance(cert, str) else xfcc(cert),
                    "x-request-id": "5f1c2d3e-envoy",
                    "x-envoy-expected-rq-timeout-ms": "1000",
                    "Content-Length": "0",
                }
                return await client.request(method, path, headers=headers)

            resp = await check("GET", "/api/invoices?page=2", right)
            assert resp.status == 200
            assert resp.headers["X-Mtlsauth-Client-Id"] == "svc"
            assert resp.headers["X-Mtlsauth-Subject"] == "svc"
            assert resp.headers["X-Mtlsauth-Scope"] == "demo.read"
            assert (await check("GET", "/api/write/1", right)).status == 200  # rule is POST-only
            resp = await check("POST", "/api/write/1", right)
            assert resp.status == 403
            assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
            assert (await check("GET", "/api/x", other)).status == 401
            # A client's own XFCC element in front of Envoy's: SANITIZE_SET never writes two.
            resp = await check("GET", "/api/x", f"{xfcc(other)},{xfcc(right)}")
            assert resp.status == 401
            assert 'error="invalid_request"' in resp.headers["WWW-Authenticate"]
    finally:
        await keys.close()


def test_paths_are_compared_as_routed(tmp_path: Path) -> None:
    assert normalized_path("/api/x/../write/1?q=/api") == "/api/write/1"
    assert normalized_path("//api//write/") == "/api/write"
    assert normalized_path("/api/%2e%2e/admin") == "/admin"
    assert normalized_path("/../../etc") == "/etc"
    # What other routers route (the second review): Tomcat/Spring drop ';params' (and read
    # '..;' as '..'), IIS drops trailing dots and spaces and ignores case. Rules only add
    # scopes, so matching more broadly can only refuse more.
    assert normalized_path("/admin;jsessionid=x") == "/admin"
    assert normalized_path("/public/..;/admin") == "/admin"
    assert normalized_path("/admin%2e") == "/admin"
    assert normalized_path("/admin%20") == "/admin"
    assert normalized_path("/Admin") == "/admin"
    (tmp_path / "rules.toml").write_text('[[rule]]\npath = "/API/Write"\nscope = "w"\n')
    (rule,) = load_rules(tmp_path / "rules.toml")
    assert rule.matches("POST", normalized_path("/api/WRITE/1"))
    assert normalized_path("") == "/"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[rule]]\npath = 'api'\nscope = 'x'\n", "path must be a string starting with '/'"),
        ("[[rule]]\npath = '/api'\nscope = ''\n", "scope must be a non-empty"),
        ("[[rule]]\npath = '/api'\nscope = 'x'\nmethods = 'GET'\n", "methods must be a list"),
        ("[[rule]]\npath = '/api'\nscope = 'x'\nextra = 1\n", "a table with path, scope"),
        ("[rules]\n", "unknown keys ['rules']"),
        ("not toml [", "Expected"),
    ],
)
def test_bad_rule_files_are_refused_at_start(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"rules\.toml") as info:
        load_rules(path)
    assert problem in str(info.value)
    code, _, err = run_cli(["gate", "--issuer", "https://i.example", "--cacert", str(path),
                            "--audience", "a", "--config", str(path)])  # fmt: skip
    assert code == 2
    assert problem in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--listen", "localhost:80"], "the host must be an IP address"),
        (["--listen", "127.0.0.1"], "expected HOST:PORT"),
        (["--trusted-proxy", "10.0.0.0/99"], "--trusted-proxy"),
        (["--revocation-interval", "-1"], "--revocation-interval"),
    ],
)
def test_bad_gate_options_exit_2(tmp_path: Path, args: list[str], problem: str) -> None:
    ca = tmp_path / "missing.pem"
    code, _, err = run_cli(
        ["gate", "--issuer", "https://i.example", "--cacert", str(ca), "--audience", "a", *args]
    )
    assert code == 2
    assert problem in err


def test_missing_cacert_exits_2(tmp_path: Path) -> None:
    code, _, err = run_cli(["gate", "--issuer", "https://i.example", "--audience", "a",
                            "--cacert", str(tmp_path / "missing.pem")])  # fmt: skip
    assert code == 2
    assert "--cacert" in err
