"""A foreign SPIFFE trust domain for tests, built with cryptography and pyjwt alone: X.509
authorities (``tests.foreign_pki``), X.509-SVIDs, JWT-SVID signing keys, the SPIFFE bundle
document (SPIFFE Trust Domain and Bundle §4) and a bundle endpoint served over https on
127.0.0.1 with a trustme certificate (the https_web profile)."""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import trustme
from aiohttp import web
from aiohttp.test_utils import unused_port
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import ClientCert, Home
from tests.foreign_pki import ForeignPKI

__all__ = ["BundleServer", "TrustDomain", "trust_bundle_endpoint_ca"]


def _jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return jwk | {"kid": kid, "use": "jwt-svid"}


@dataclass
class TrustDomain:
    """A trust domain: CAs issuing X.509-SVIDs, keys signing JWT-SVIDs, and its bundle."""

    name: str
    cas: list[ForeignPKI] = field(default_factory=list)
    jwt_keys: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)
    sequence: int = 1
    refresh_hint: int | None = 1

    @classmethod
    def create(cls, name: str) -> TrustDomain:
        domain = cls(name, cas=[ForeignPKI.create(name)])
        domain.new_jwt_key()
        return domain

    def new_jwt_key(self) -> str:
        kid = secrets.token_hex(8)
        self.jwt_keys[kid] = ec.generate_private_key(ec.SECP256R1())
        return kid

    def bundle(self) -> dict[str, Any]:
        """The bundle document: each CA's issuing certificate as an x509-svid authority."""
        keys: list[dict[str, Any]] = []
        for pki in self.cas:
            cert = pki.intermediate.cert
            der = cert.public_bytes(serialization.Encoding.DER)
            public: dict[str, Any] = json.loads(
                jwt.algorithms.ECAlgorithm.to_jwk(pki.intermediate.key.public_key())
            )
            keys.append(public | {"use": "x509-svid", "x5c": [base64.b64encode(der).decode()]})
        keys += [_jwk(key, kid) for kid, key in self.jwt_keys.items()]
        doc: dict[str, Any] = {"keys": keys, "spiffe_sequence": self.sequence}
        if self.refresh_hint is not None:
            doc["spiffe_refresh_hint"] = self.refresh_hint
        return doc

    def svid(self, out: Path, path: str, *, ca: int = 0) -> ClientCert:
        """An X.509-SVID for spiffe://<name><path> from CA number ``ca``."""
        return self.cas[ca].issue(out, "workload", uris=(f"spiffe://{self.name}{path}",))

    def jwt_svid(
        self,
        path: str,
        aud: Any,
        *,
        lifetime: int = 300,
        kid: str | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A JWT-SVID (JWT-SVID §2-§3) as a SPIRE agent hands one out: sub, aud, exp, iat."""
        kid = kid or next(iter(self.jwt_keys))
        now = int(time.time())
        body = {"sub": f"spiffe://{self.name}{path}", "aud": aud, "exp": now + lifetime,
                "iat": now} | claims  # fmt: skip
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key or self.jwt_keys[kid], algorithm="ES256",
                          headers={"kid": kid, "typ": "JWT", **(headers or {})})  # fmt: skip


def trust_bundle_endpoint_ca(home: Home, ca: trustme.CA) -> None:
    """The operator makes the service trust the bundle endpoint's CA (``jwks_uri_cafile``)."""
    ca.cert_pem.write_to_path(str(home.path / "bundle-endpoint-ca.pem"))
    config = home.path / "mtlsauth.toml"
    config.write_text(config.read_text() + '\njwks_uri_cafile = "bundle-endpoint-ca.pem"\n')


class BundleServer:
    """A SPIFFE bundle endpoint on 127.0.0.1 (https, a trustme certificate) serving
    ``domain.bundle()`` at /bundle; ``up = False`` answers 503 like a dead server, and
    ``document`` (when set) is served instead of the domain's bundle."""

    def __init__(self, domain: TrustDomain, ca: trustme.CA) -> None:
        self.domain = domain
        self.up = True
        self.document: dict[str, Any] | None = None
        self.hits = 0
        self.port = unused_port()
        self.url = f"https://127.0.0.1:{self.port}/bundle"
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(self._ctx)

    async def _bundle(self, _: web.Request) -> web.Response:
        self.hits += 1
        if not self.up:
            return web.Response(status=503)
        return web.json_response(self.document or self.domain.bundle())

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[BundleServer]:
        app = web.Application()
        app.router.add_get("/bundle", self._bundle)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=self._ctx).start()
        try:
            yield self
        finally:
            await runner.cleanup()
