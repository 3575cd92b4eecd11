"""Federated workload tokens: an external issuer's JWT authenticates a client (federated_jwt).

The external issuers are built here with cryptography and pyjwt alone: a key, a JWK Set and an
OpenID Connect discovery document served by a real https server on 127.0.0.1 (a certificate
from the home's CA). Token requests go to a real token service over real TLS.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mtlsauth.core.thumbprint import x5t_s256
from mtlsauth.issuer.clientauth import ASSERTION_TYPE
from mtlsauth.issuer.model import Federation
from mtlsauth.issuer.registration import register
from mtlsauth.issuer.store import FederationExistsError, Store
from tests.conftest import (
    ClientCert,
    Home,
    Service,
    cli_json,
    eventually,
    fresh_database,
    run_cli,
    running,
)
from tests.test_assertions import public_jwk
from tests.test_security_jwks import Handler, https_server
from tests.test_stores import use_postgres

SUBJECT = "system:serviceaccount:payments:billing"


@dataclass
class Issuer:
    """An external token issuer: its key and, once served, its URL."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    kid: str = field(default_factory=lambda: secrets.token_hex(4))
    url: str = ""
    jwks_hits: int = 0

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self.key, self.kid)]}

    def token(self, aud: str, *, sub: str = SUBJECT, lifetime: int = 600, **overrides: Any) -> str:
        """A token as a Kubernetes API server projects one into a pod."""
        kid = overrides.pop("kid", None) or self.kid
        now = int(time.time())
        claims = {
            "iss": self.url,
            "sub": sub,
            "aud": [aud],
            "exp": now + lifetime,
            "iat": now,
            "nbf": now,
            "jti": secrets.token_hex(16),
            "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "billing"}},
        } | overrides
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": kid})


@contextlib.asynccontextmanager
async def serve_issuer(home: Home, issuer: Issuer, *, doc_issuer: str | None = None
                       ) -> AsyncIterator[Issuer]:  # fmt: skip
    """Serve ``issuer``'s discovery document and JWK Set over https; sets ``issuer.url``."""

    async def discovery(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"issuer": doc_issuer or issuer.url, "jwks_uri": f"{issuer.url}/keys"}
        )

    async def keys(request: web.Request) -> web.StreamResponse:
        issuer.jwks_hits += 1
        return web.json_response(issuer.jwks())

    routes: dict[str, Handler] = {"/.well-known/openid-configuration": discovery, "/keys": keys}
    async with https_server(home, routes) as (url, _):
        issuer.url = url
        yield issuer


def allow_loopback_fetches(home: Home) -> None:
    """The issuers here are internal (127.0.0.1) with a certificate from the home's CA: the
    operator allows both in the configuration file, as the README says."""
    config = home.path / "mtlsauth.toml"
    config.write_text(
        config.read_text()
        + '\njwks_uri_cafile = "ca/ca.pem"\njwks_uri_allow_private = "127.0.0.0/8,::1"\n'
    )


def fed_cli(home: Home, *args: str) -> tuple[int, str, str]:
    try:
        return run_cli(["federation", *args, "--home", str(home.path)])
    except SystemExit as exc:  # argparse's usage error
        return int(str(exc.code)), "", ""


async def add_federation(home: Home, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = await asyncio.to_thread(
        cli_json, ["federation", "add", "--home", str(home.path), *args]
    )
    return result


async def add_federated_client(home: Home, federation: str, client_id: str = "billing",
                               subject: str = SUBJECT, *extra: str) -> dict[str, Any]:  # fmt: skip
    return await home.aadd_client(
        "--auth-method", "federated_jwt", "--client-id", client_id, "--federation", federation,
        "--federated-subject", subject, "--scope", "invoices.read", *extra,
    )  # fmt: skip


async def federated_token(
    service: Service, token: str, client_id: str | None = "billing", cert: ClientCert | None = None
) -> tuple[int, Any]:
    form = {"client_assertion_type": ASSERTION_TYPE, "client_assertion": token}
    if client_id is not None:
        form["client_id"] = client_id
    return await service.token(cert, **form)


async def verified_claims(service: Service, access_token: str) -> dict[str, Any]:
    """The access token's claims, verified with the service's published keys."""
    _, doc = await service.get("/jwks")
    header = jwt.get_unverified_header(access_token)
    jwk = next(k for k in doc["keys"] if k["kid"] == header["kid"])
    claims: dict[str, Any] = jwt.decode(
        access_token,
        jwt.PyJWK(jwk).key,
        algorithms=[header["alg"]],
        audience=service.home.settings.issuer,
        issuer=service.home.settings.issuer,
    )
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def forged(header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None = None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = b""
    if hmac_key is not None:
        signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@pytest.fixture
def fed_home(home: Home) -> Home:
    allow_loopback_fetches(home)
    return home


# --- the happy path ---------------------------------------------------------------------------


async def test_federated_token_bound_when_a_certificate_is_presented(fed_home: Home) -> None:
    home = fed_home
    async with serve_issuer(home, Issuer()) as k8s:
        added = await add_federation(home, "--name", "k8s", "--issuer", k8s.url)
        assert added["jwks_uri"] == f"{k8s.url}/keys"  # found by discovery
        client = await add_federated_client(home, "k8s")
        assert (client["federation"], client["federated_subject"]) == ("k8s", SUBJECT)
        cert = home.issue("billing", dns=["billing"])
        async with running(home) as service:
            _, metadata = await service.get("/.well-known/oauth-authorization-server")
            assert "federated_jwt" in metadata["token_endpoint_auth_methods_supported"]

            status, body = await federated_token(service, k8s.token(home.settings.issuer))
            assert status == 200, body
            claims = await verified_claims(service, body["access_token"])
            assert (claims["sub"], claims["client_id"]) == ("billing", "billing")
            assert claims["scope"] == "invoices.read"
            assert "cnf" not in claims

            status, body = await federated_token(
                service, k8s.token(f"{home.settings.issuer}/token"), cert=cert
            )
            assert status == 200, body
            claims = await verified_claims(service, body["access_token"])
            assert claims["cnf"] == {"x5t#S256": x5t_s256(cert.der)}


async def test_configured_audience_and_static_jwks(fed_home: Home, tmp_path: Path) -> None:
    """--jwks FILE needs no fetch at all; --audience replaces this server's own audiences."""
    home = fed_home
    ci = Issuer(url="https://gitlab.example.com")
    jwks_file = tmp_path / "ci-jwks.json"
    jwks_file.write_text(json.dumps(ci.jwks()))
    await add_federation(home, "--name", "ci", "--issuer", ci.url, "--jwks", str(jwks_file),
                         "--audience", "mtlsauth")  # fmt: skip
    await add_federated_client(home, "ci", "deployer", "project_path:ops/deploy:ref:main")
    async with running(home) as service:
        sub = "project_path:ops/deploy:ref:main"
        status, body = await federated_token(service, ci.token("mtlsauth", sub=sub), "deployer")
        assert status == 200, body
        status, body = await federated_token(
            service, ci.token(home.settings.issuer, sub=sub), "deployer"
        )
        assert (status, body["error"]) == (401, "invalid_client")


# --- what is refused --------------------------------------------------------------------------


async def test_refused_tokens(fed_home: Home) -> None:
    home = fed_home
    aud = home.settings.issuer
    async with (
        serve_issuer(home, Issuer()) as k8s,
        serve_issuer(home, Issuer()) as other,
    ):
        await add_federation(home, "--name", "k8s", "--issuer", k8s.url)
        await add_federation(home, "--name", "other", "--issuer", other.url)
        await add_federated_client(home, "k8s")
        await add_federated_client(home, "other", "other-billing")
        await add_federated_client(home, "k8s", k8s.url)
        public_pem = k8s.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        now = int(time.time())
        claims = {"iss": k8s.url, "sub": SUBJECT, "aud": aud, "exp": now + 600, "iat": now}
        refused = {
            "wrong audience": k8s.token("https://elsewhere.example"),
            "wrong issuer": k8s.token(aud, iss="https://evil.example"),
            "wrong subject": k8s.token(aud, sub="system:serviceaccount:payments:other"),
            "expired": k8s.token(aud, exp=now - 120, iat=now - 720, nbf=now - 720),
            "lives too long": k8s.token(aud, lifetime=2 * 86400),
            "no exp": k8s.token(aud, exp=None),
            "exp not a number": k8s.token(aud, exp=str(now + 600)),
            "alg none": forged({"alg": "none", "kid": k8s.kid}, claims),
            "alg HS256 keyed with the public key": forged(
                {"alg": "HS256", "kid": k8s.kid}, claims, hmac_key=public_pem
            ),
            "unknown kid": k8s.token(aud, kid="nope"),
            "signed by another key": Issuer(url=k8s.url, kid=k8s.kid).token(aud),
            # The other federation's issuer vouches for the same subject: not this client's.
            "another federation's issuer": other.token(aud),
        }
        lenient = dataclasses.replace(home.settings, throttle_limit=1000)  # failing on purpose
        async with running(home, lenient) as service:
            for name, token in refused.items():
                status, body = await federated_token(service, token)
                assert (status, body.get("error")) == (401, "invalid_client"), name

            # The client is named by client_id, never found from the token's iss or sub: not
            # even when a client_id happens to be the federation's issuer URL.
            status, body = await federated_token(service, k8s.token(aud), client_id=None)
            assert (status, body["error"]) == (401, "invalid_client")
            assert (await federated_token(service, k8s.token(aud), client_id=k8s.url))[0] == 200
            status, body = await federated_token(service, k8s.token(aud), "other-billing")
            assert (status, body["error"]) == (401, "invalid_client")

            # A jti is single-use.
            token = k8s.token(aud)
            assert (await federated_token(service, token))[0] == 200
            status, body = await federated_token(service, token)
            assert (status, body["error"]) == (401, "invalid_client")

            # Without a jti the token is accepted (documented), and the other client's works.
            assert (await federated_token(service, k8s.token(aud, jti=None)))[0] == 200
            assert (await federated_token(service, other.token(aud), "other-billing"))[0] == 200


async def test_issuer_down_keeps_cached_keys(fed_home: Home) -> None:
    home = fed_home
    aud = home.settings.issuer
    k8s = Issuer()
    async with running(home) as service:
        async with serve_issuer(home, k8s):
            await add_federation(home, "--name", "k8s", "--issuer", k8s.url)
            await add_federated_client(home, "k8s")

            async def works() -> bool:
                return (await federated_token(service, k8s.token(aud)))[0] == 200

            await eventually(works)
            assert k8s.jwks_hits == 1
        # The issuer is down now: the keys fetched keep verifying its tokens.
        for _ in range(3):
            status, body = await federated_token(service, k8s.token(aud))
            assert status == 200, body
        status, body = await federated_token(service, k8s.token(aud, kid="rotated"))
        assert (status, body["error"]) == (401, "invalid_client")
        assert (await federated_token(service, k8s.token(aud)))[0] == 200
        assert k8s.jwks_hits == 1


@pytest.fixture(params=["sqlite", "postgres"])
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (the home's SQLite), or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
    else:
        with fresh_database() as url:
            yield url


async def test_removed_federation_stops_working_on_a_running_server(
    fed_home: Home, postgres_url: str | None
) -> None:
    """SQLite: seen at the next poll (reload_interval). PostgreSQL: the poll is set to its
    slowest (2 s) and NOTIFY must bring the change sooner."""
    home = fed_home
    aud = home.settings.issuer
    settings, within = home.settings, 2.0
    if postgres_url is not None:
        await asyncio.to_thread(use_postgres, home, postgres_url)
        settings, within = dataclasses.replace(home.settings, reload_interval=2.0), 1.0
    async with serve_issuer(home, Issuer()) as k8s:
        await add_federation(home, "--name", "k8s", "--issuer", k8s.url)
        await add_federated_client(home, "k8s")
        async with running(home, settings) as service:
            assert (await federated_token(service, k8s.token(aud)))[0] == 200
            removed = await asyncio.to_thread(
                cli_json, ["federation", "remove", "k8s", "--home", str(home.path)]
            )
            assert removed["clients"] == ["billing"]

            async def refused() -> bool:
                status, _ = await federated_token(service, k8s.token(aud))
                return status == 401

            await eventually(refused, within=within)


# --- the CLI --------------------------------------------------------------------------------


async def test_cli(fed_home: Home, tmp_path: Path) -> None:
    home = fed_home
    async with (
        serve_issuer(home, Issuer()) as k8s,
        serve_issuer(home, Issuer(), doc_issuer="https://impostor.example") as liar,
    ):
        # Discovery: the document's issuer must be the configured one, exactly.
        code, _, err = await asyncio.to_thread(fed_cli, home, "add", "--name", "liar",
                                               "--issuer", liar.url)  # fmt: skip
        assert code == 1
        assert "issuer" in err
        code, _, _ = await asyncio.to_thread(fed_cli, home, "add", "--name", "slash",
                                             "--issuer", k8s.url + "/")  # fmt: skip
        assert code == 1
        added = await add_federation(home, "--name", "k8s", "--issuer", k8s.url)
        code, _, err = await asyncio.to_thread(fed_cli, home, "add", "--name", "k8s",
                                               "--issuer", k8s.url)  # fmt: skip
        assert code == 1
        assert "exists" in err

    listed = await asyncio.to_thread(cli_json, ["federation", "list", "--home", str(home.path)])
    assert listed == [added]
    await add_federated_client(home, "k8s")
    shown = await asyncio.to_thread(
        cli_json, ["federation", "show", "k8s", "--home", str(home.path)]
    )
    assert shown["clients"] == ["billing"]
    assert shown["issuer"] == added["issuer"]

    for argv, expected in (
        (["add", "--name", "bad name", "--issuer", "https://x.example"], 2),
        (["add", "--name", "x", "--issuer", "http://x.example"], 2),
        (["add", "--name", "x", "--issuer", "https://x.example", "--jwks-uri", "http://x"], 2),
        (["add", "--name", "x", "--issuer", "https://x.example", "--jwks", "/nonexistent"], 2),
        (["add", "--name", "x", "--issuer", "https://x", "--jwks", "f", "--jwks-uri", "u"], 2),
        (["show", "nope"], 1),
        (["remove", "nope"], 1),
    ):
        code, _, err = await asyncio.to_thread(fed_cli, home, *argv)
        assert code == expected, (argv, err)
        assert "Traceback" not in err

    def sync_client_add(*args: str) -> int:
        return run_cli(["client", "add", "--home", str(home.path), *args])[0]

    async def client_add(*args: str) -> int:
        return await asyncio.to_thread(sync_client_add, *args)

    assert await client_add("--auth-method", "federated_jwt", "--federation", "nope",
                      "--federated-subject", SUBJECT) == 1  # fmt: skip
    assert await client_add("--auth-method", "federated_jwt", "--federation", "k8s") == 2
    assert await client_add("--scope", "x") == 2  # no --auth-method, no --federation
    implied = await home.aadd_client("--federation", "k8s", "--federated-subject", "ci:job")
    assert implied["auth_method"] == "federated_jwt"
    assert await client_add("--auth-method", "private_key_jwt", "--jwks-uri", "https://x.example/k",
                      "--federation", "k8s", "--federated-subject", SUBJECT) == 2  # fmt: skip


async def test_discovery_of_an_internal_issuer_needs_allowing(home: Home) -> None:
    """Without jwks_uri_allow_private, an issuer on 127.0.0.1 is not fetched (exit 1)."""
    config = home.path / "mtlsauth.toml"
    config.write_text(config.read_text() + '\njwks_uri_cafile = "ca/ca.pem"\n')
    async with serve_issuer(home, Issuer()) as k8s:
        code, _, err = await asyncio.to_thread(fed_cli, home, "add", "--name", "k8s",
                                               "--issuer", k8s.url)  # fmt: skip
        assert code == 1
        assert "jwks_uri_allow_private" in err


# --- the store ------------------------------------------------------------------------------


async def test_store_keeps_federations_and_federated_clients(store: Store) -> None:
    before = await store.change_marker()
    federation = Federation(name="k8s", issuer="https://k8s.example", jwks={"keys": []},
                            audience="mtlsauth", created_at=time.time())  # fmt: skip
    await store.add_federation(federation)
    assert await store.list_federations() == [federation]
    assert await store.change_marker() != before
    with pytest.raises(FederationExistsError):
        await store.add_federation(federation)
    client = register(auth_method="federated_jwt", secret_key=b"k" * 32, client_id="billing",
                      federation="k8s", federated_subject=SUBJECT).client  # fmt: skip
    await store.add_client(client)
    assert await store.get_client("billing") == client
    marker = await store.change_marker()
    assert await store.remove_federation("k8s")
    assert not await store.remove_federation("k8s")
    assert await store.list_federations() == []
    assert await store.change_marker() != marker
