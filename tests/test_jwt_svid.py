"""JWT-SVIDs as client credentials (draft-ietf-oauth-spiffe-client-auth §3.1): the spiffe_jwt
method, keys from the trust domain's SPIFFE bundle (served over https, built with pyjwt and
cryptography alone), over real TLS against a running token service."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import ec

from mtlsauth.core.thumbprint import x5t_s256
from mtlsauth.issuer.clientauth import ASSERTION_TYPE, SPIFFE_ASSERTION_TYPE
from tests.conftest import ClientCert, Home, Service, cli_json, eventually, running
from tests.spiffe_domain import BundleServer, TrustDomain, trust_bundle_endpoint_ca
from tests.test_federation import forged, verified_claims

TD = "acme.example"


@pytest.fixture
async def endpoint(home: Home) -> AsyncIterator[BundleServer]:
    ca = trustme.CA()
    trust_bundle_endpoint_ca(home, ca)
    async with BundleServer(TrustDomain.create(TD), ca).serving() as server:
        await asyncio.to_thread(
            cli_json, ["trust", "add", "--home", str(home.path), "--name", "acme",
                       "--spiffe-bundle-url", server.url, "--spiffe-trust-domain", TD])  # fmt: skip
        for client_id, spiffe_id in (
            ("exact", f"spiffe://{TD}/ns/prod/sa/api"),
            ("below", f"spiffe://{TD}/ns/prod/*"),
            # Registered under its SPIFFE ID: found from the JWT-SVID's sub, no client_id.
            (f"spiffe://{TD}/ns/prod/sa/batch", f"spiffe://{TD}/ns/prod/sa/batch"),
        ):
            await home.aadd_client("--auth-method", "spiffe_jwt", "--client-id", client_id,
                                   "--trust", "acme", "--spiffe-id", spiffe_id,
                                   "--scope", "invoices.read")  # fmt: skip
        yield server


@pytest.fixture
async def service(home: Home, endpoint: BundleServer) -> AsyncIterator[Service]:
    # Many refusals from one address: throttling (D7) is tested elsewhere.
    settings = dataclasses.replace(home.settings, throttle_limit=1000, trust_fetch_timeout=1)
    async with running(home, settings) as svc:
        issuer = settings.issuer

        async def fetched() -> bool:
            status, _ = await svid_token(svc, endpoint.domain.jwt_svid("/ns/prod/sa/api", issuer))
            return status == 200

        await eventually(fetched, within=5)
        yield svc


async def svid_token(
    service: Service,
    assertion: str,
    client_id: str | None = "exact",
    cert: ClientCert | None = None,
    assertion_type: str = SPIFFE_ASSERTION_TYPE,
) -> tuple[int, Any]:
    form = {"client_assertion_type": assertion_type, "client_assertion": assertion}
    if client_id is not None:
        form["client_id"] = client_id
    return await service.token(cert, **form)


async def test_a_jwt_svid_gets_a_token_bound_when_a_certificate_is_presented(
    home: Home, endpoint: BundleServer, service: Service
) -> None:
    issuer = home.settings.issuer
    svid = endpoint.domain.jwt_svid("/ns/prod/sa/api", issuer)
    status, body = await svid_token(service, svid)
    assert status == 200, body
    claims = await verified_claims(service, body["access_token"])
    assert claims["client_id"] == "exact"
    assert "cnf" not in claims
    # The draft leaves jti out and lets a JWT-SVID be reused until it expires.
    assert (await svid_token(service, svid))[0] == 200
    cert = home.issue("workload")
    status, body = await svid_token(service, svid, cert=cert)
    assert status == 200, body
    claims = await verified_claims(service, body["access_token"])
    assert claims["cnf"] == {"x5t#S256": x5t_s256(cert.der)}
    # aud as a one-element array, and a client found by its SPIFFE ID without client_id.
    batch = endpoint.domain.jwt_svid("/ns/prod/sa/batch", [issuer])
    status, body = await svid_token(service, batch, client_id=None)
    assert status == 200, body
    claims = await verified_claims(service, body["access_token"])
    assert claims["client_id"] == f"spiffe://{TD}/ns/prod/sa/batch"


async def test_wildcard_matches_below_the_path_only(
    home: Home, endpoint: BundleServer, service: Service
) -> None:
    issuer = home.settings.issuer
    cases = [
        ("/ns/prod/sa/worker", 200),
        ("/ns/prod/a/b/c", 200),
        ("/ns/prod", 401),  # the path itself
        ("/ns/production/sa/api", 401),  # a sibling sharing a prefix
        ("/ns/dev/sa/api", 401),
    ]
    for path, expected in cases:
        status, body = await svid_token(
            service, endpoint.domain.jwt_svid(path, issuer), client_id="below"
        )
        assert status == expected, (path, body)
    # The exact registration: nothing below it.
    status, _ = await svid_token(service, endpoint.domain.jwt_svid("/ns/prod/sa/api/x", issuer))
    assert status == 401


async def test_refused_jwt_svids(home: Home, endpoint: BundleServer, service: Service) -> None:
    domain = endpoint.domain
    issuer = home.settings.issuer
    path = "/ns/prod/sa/api"
    other = TrustDomain.create("other.example")
    stranger = ec.generate_private_key(ec.SECP256R1())
    kid = next(iter(domain.jwt_keys))
    now = int(time.time())
    good = {"sub": f"spiffe://{TD}{path}", "aud": issuer, "exp": now + 300}
    cases: dict[str, str] = {
        "another audience": domain.jwt_svid(path, "https://elsewhere.example"),
        "the token endpoint (the draft: the issuer only)": domain.jwt_svid(path, f"{issuer}/token"),
        "the issuer among others": domain.jwt_svid(path, [issuer, "https://elsewhere.example"]),
        "another trust domain's key": other.jwt_svid(path, issuer),
        "another trust domain's SPIFFE ID": domain.jwt_svid(path, issuer,
                                                            sub=f"spiffe://other.example{path}"),
        "expired": domain.jwt_svid(path, issuer, lifetime=-120),
        "longer than assertion_max_lifetime": domain.jwt_svid(path, issuer, lifetime=7200),
        "no exp": domain.jwt_svid(path, issuer, exp=None),
        "exp a string": domain.jwt_svid(path, issuer, exp=str(now + 300)),
        # Integers past a double's range (pyjwt's int() checks pass them): not a 500.
        "exp a 400-digit integer": domain.jwt_svid(path, issuer, exp=10**400),
        "iat a 400-digit negative integer": domain.jwt_svid(path, issuer, iat=-(10**400)),
        "nbf a 400-digit negative integer": domain.jwt_svid(path, issuer, nbf=-(10**400)),
        "no aud": domain.jwt_svid(path, None),
        "a key not in the bundle": domain.jwt_svid(path, issuer, key=stranger),
        "a key not in the bundle, no kid": jwt.encode(good, stranger, algorithm="ES256"),
        "alg none": forged({"alg": "none", "kid": kid}, good),
        "HS256": forged({"alg": "HS256", "kid": kid}, good, hmac_key=b"k" * 32),
        "an access token's typ": domain.jwt_svid(path, issuer, headers={"typ": "at+jwt"}),
        # A typ that is no string (unsigned: anyone can send it) was a 500.
        "typ an array": forged({"alg": "ES256", "kid": kid, "typ": ["JWT"]}, good),
        "typ an object": forged({"alg": "ES256", "kid": kid, "typ": {"JWT": 1}}, good),
        "sub not a SPIFFE ID": domain.jwt_svid(path, issuer, sub="api"),
        "not a JWT": "not-a-jwt",
    }  # fmt: skip
    for case, assertion in cases.items():
        status, body = await svid_token(service, assertion)
        assert (status, body.get("error")) == (401, "invalid_client"), (case, body)
    # The JWT-SVID is right, the assertion type is not: RFC 7523's jwt-bearer.
    status, body = await svid_token(
        service, domain.jwt_svid(path, issuer), assertion_type=ASSERTION_TYPE
    )
    assert (status, body.get("error")) == (401, "invalid_client")


async def test_a_rotated_jwt_key_reaches_the_server_and_the_old_one_stops(
    home: Home, endpoint: BundleServer, tmp_path: Path
) -> None:
    domain = endpoint.domain
    issuer = home.settings.issuer
    old_kid = next(iter(domain.jwt_keys))
    config = home.path / "mtlsauth.toml"
    config.write_text(config.read_text() + "spiffe_bundle_min_refresh = 0.5\n")
    settings = dataclasses.replace(home.settings, throttle_limit=1000, trust_fetch_timeout=1)
    async with running(home, settings) as svc:
        keys = dict(domain.jwt_keys)

        async def works(kid: str, expected: int) -> bool:
            keys.update(domain.jwt_keys)
            svid = domain.jwt_svid("/ns/prod/sa/api", issuer, kid=kid, key=keys[kid])
            status, _ = await svid_token(svc, svid)
            return status == expected

        await eventually(lambda: works(old_kid, 200), within=5)
        new_kid = domain.new_jwt_key()
        del domain.jwt_keys[old_kid]
        domain.sequence += 1
        await eventually(lambda: works(new_kid, 200), within=5)
        assert await works(old_kid, 401)


def test_discovery_names_the_method(home: Home) -> None:
    from mtlsauth.issuer.http.metadata import build_metadata

    assert "spiffe_jwt" in build_metadata(home.settings)["token_endpoint_auth_methods_supported"]
