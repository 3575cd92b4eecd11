"""A token client for services: discovery (RFC 8414), then the client credentials grant.

It presents the same TLS client certificate it will later use at the resource server, so the
token it gets is bound to that certificate (RFC 8705 §3).
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import aiohttp

from mtlsauth.server.metadata import WELL_KNOWN

BASIC = "client_secret_basic"

__all__ = ["TokenClient", "TokenError", "client_ssl_context", "form_encode"]


class TokenError(Exception):
    """The token endpoint answered with an error, or could not be reached."""

    def __init__(self, error: str, description: str = "", status: int | None = None) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status = status


def form_encode(value: str) -> str:
    """RFC 6749 Appendix B: application/x-www-form-urlencoded encoding of one value."""
    return quote_plus(value, safe="")


def client_ssl_context(
    cacert: Path, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A verifying client context that trusts ``cacert`` and presents ``cert`` when given."""
    ctx = ssl.create_default_context(cafile=str(cacert))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


@dataclass
class TokenClient:
    """Gets tokens from one issuer with one identity (certificate and/or secret)."""

    issuer: str
    ssl_context: ssl.SSLContext
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    secret_method: str = BASIC
    _metadata: dict[str, Any] | None = field(default=None, init=False, repr=False)

    async def metadata(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        if self._metadata is None:
            url = self.issuer.rstrip("/") + WELL_KNOWN
            async with session.get(url, ssl=self.ssl_context) as resp:
                if resp.status != 200:
                    raise TokenError("discovery_failed", f"{url} answered {resp.status}")
                doc = await resp.json()
            if doc.get("issuer") != self.issuer.rstrip("/"):
                raise TokenError("discovery_failed", f"metadata names issuer {doc.get('issuer')!r}")
            self._metadata = doc
        return self._metadata

    async def token_endpoint(self, session: aiohttp.ClientSession) -> str:
        doc = await self.metadata(session)
        aliases = doc.get("mtls_endpoint_aliases") or {}
        endpoint = aliases.get("token_endpoint") or doc["token_endpoint"]
        return str(endpoint)

    async def fetch(
        self, *, scope: str | None = None, resources: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """One token request; returns the RFC 6749 §5.1 response or raises TokenError."""
        fields: list[tuple[str, str]] = [("grant_type", "client_credentials")]
        if scope:
            fields.append(("scope", scope))
        fields += [("resource", r) for r in resources]
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self.client_secret is not None and self.secret_method == BASIC:
            userpass = f"{form_encode(self.client_id or '')}:{form_encode(self.client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(userpass.encode()).decode()
        else:
            if self.client_id:
                fields.append(("client_id", self.client_id))
            if self.client_secret is not None:
                fields.append(("client_secret", self.client_secret))
        body = "&".join(f"{form_encode(k)}={form_encode(v)}" for k, v in fields)
        try:
            async with aiohttp.ClientSession() as session:
                url = await self.token_endpoint(session)
                async with session.post(
                    url, data=body.encode(), headers=headers, ssl=self.ssl_context
                ) as resp:
                    doc = await resp.json(content_type=None)
                    if resp.status != 200:
                        raise TokenError(
                            str(doc.get("error", "invalid_response")),
                            str(doc.get("error_description", "")),
                            resp.status,
                        )
        except (aiohttp.ClientError, ValueError) as exc:
            raise TokenError("request_failed", str(exc)) from exc
        if not isinstance(doc, dict) or "access_token" not in doc:
            raise TokenError("invalid_response", "no access_token in the response")
        return doc
