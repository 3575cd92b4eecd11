"""Bounded fetching of small JSON documents (JWK Sets, RFC 7517 §5; RFC 8414 §3 metadata) over
https, and of signed revocation documents (CRLs, RFC 5280 §5; OCSP, RFC 6960 Appendix A), for
which plain http is the normal transport: their signature, not the channel, vouches for them.

Shared, through :mod:`mtlsauth.core.jwks`, by the token service (clients' ``jwks_uri``, RFC 7591
§2) and the resource checker (the issuer's keys).

* https only (http too where a caller allows it), and redirects are never followed: a 3xx is
  a failure (a redirect could send the fetch to plain http or to an internal address).
* The body is read whole up to ``max_bytes``; anything larger is a failure.
* Where the connection goes is checked on the address it actually uses: a hostname goes through
  a resolver that drops every address the :class:`AddressPolicy` refuses (so DNS rebinding
  cannot slip an internal address in between a check and the connect), and an IP literal, which
  aiohttp never hands to a resolver, is checked before the request.
* Every failure is a :class:`FetchError` whose message names the precise reason (for the log).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

__all__ = [
    "DEFAULT_MAX_BYTES",
    "AddressPolicy",
    "FetchError",
    "FilteringResolver",
    "fetch_bytes",
    "fetch_json",
    "fetch_session",
]

#: A JWK Set or metadata document is a few KiB; this leaves room for many RSA keys.
DEFAULT_MAX_BYTES: Final = 65536

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class FetchError(Exception):
    """A document could not be fetched or is not JSON; the message says why (log only)."""


_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
#: RFC 8215 local-use NAT64: the embedded address may sit anywhere in the prefix, and the
#: translator is the operator's own, so it counts as a private network.
_LOCAL_NAT64: Final = ipaddress.IPv6Network("64:ff9b:1::/48")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches: IPv4-mapped (``::ffff:a.b.c.d``), NAT64
    (RFC 6052 ``64:ff9b::a.b.c.d``) or 6to4 (RFC 3056 ``2002:AABB:CCDD::``). Such an address
    is judged as the IPv4 address, so ``64:ff9b::a00:1`` is private like 10.0.0.1."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which addresses an outbound fetch may connect to.

    Global unicast addresses always; anything else (loopback, private, link-local, shared,
    reserved, multicast, the unspecified address) only inside ``allowed`` networks. ``None``
    as a policy (see :func:`fetch_session`) means no check, for fetches whose URL an operator
    configured.
    """

    allowed: tuple[IPNetwork, ...] = ()

    def permits(self, address: str | IPAddress) -> bool:
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address):
            ip = _embedded_ipv4(ip) or ip
        if any(ip in network for network in self.allowed):
            return True
        if ip in _LOCAL_NAT64:
            return False
        return ip.is_global and not ip.is_multicast and not ip.is_unspecified


class FilteringResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver and keeps only the addresses ``policy`` permits.

    The connector connects only to what this returns, so the check holds for the very address
    used, whatever the DNS answers next time.
    """

    def __init__(self, policy: AddressPolicy, resolver: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._resolver = resolver or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        permitted = [r for r in results if self._policy.permits(r["host"])]
        if not permitted:
            refused = ", ".join(sorted({r["host"] for r in results}))
            raise OSError(f"{host} resolves only to refused addresses ({refused})")
        return permitted

    async def close(self) -> None:
        await self._resolver.close()


def fetch_session(
    timeout: float, policy: AddressPolicy | None = None, *, max_connections: int = 16
) -> aiohttp.ClientSession:
    """A session for :func:`fetch_json`: total ``timeout`` per request, ``policy`` enforced on
    resolved addresses, no proxy from the environment, at most ``max_connections`` open."""
    connector = aiohttp.TCPConnector(
        resolver=FilteringResolver(policy) if policy is not None else None,
        limit=max_connections,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        trust_env=False,
    )


def _check_url(
    url: str, policy: AddressPolicy | None, schemes: tuple[str, ...] = ("https",)
) -> None:
    try:
        parsed = URL(url)
    except ValueError as exc:
        raise FetchError(f"{url!r} is not a URL") from exc
    if parsed.scheme not in schemes or not parsed.host:
        raise FetchError(f"{url} is not an {' or '.join(schemes)} URL")
    if policy is None:
        return
    try:
        literal = ipaddress.ip_address(parsed.host)
    except ValueError:
        return  # a name: the session's resolver checks what it resolves to
    if not policy.permits(literal):
        raise FetchError(f"{url} names an address that is not allowed ({literal})")


async def _read_body(resp: aiohttp.ClientResponse, url: str, max_bytes: int) -> bytes:
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise FetchError(f"{url} announced {resp.content_length} bytes (limit {max_bytes})")
    body = bytearray()
    # read(n) returns what one chunk holds; a document may come in many.
    async for chunk in resp.content.iter_any():
        body += chunk
        if len(body) > max_bytes:
            raise FetchError(f"{url} sent more than {max_bytes} bytes")
    return bytes(body)


async def fetch_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    ssl_context: ssl.SSLContext,
    policy: AddressPolicy | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Any:
    """GET ``url`` (https, no redirects, at most ``max_bytes``) and parse it as JSON."""
    body = await fetch_bytes(
        session, url, ssl_context=ssl_context, policy=policy, max_bytes=max_bytes
    )
    try:
        return json.loads(body)
    except RecursionError as exc:
        raise FetchError(f"{url} sent JSON nested too deeply") from exc
    except ValueError as exc:
        raise FetchError(f"{url} did not send JSON: {exc}") from exc


async def fetch_bytes(
    session: aiohttp.ClientSession,
    url: str,
    *,
    ssl_context: ssl.SSLContext,
    policy: AddressPolicy | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    schemes: tuple[str, ...] = ("https",),
    post: tuple[str, bytes] | None = None,
) -> bytes:
    """GET ``url`` — or POST ``post`` = (content type, body) — with a URL scheme of ``schemes``,
    no redirects, at most ``max_bytes``; the body."""
    _check_url(url, policy, schemes)
    try:
        request = (
            session.post(
                url,
                data=post[1],
                headers={"Content-Type": post[0]},
                ssl=ssl_context,
                allow_redirects=False,
            )
            if post is not None
            else session.get(url, ssl=ssl_context, allow_redirects=False)
        )
        async with request as resp:
            if resp.status != 200:
                hint = " (redirects are not followed)" if 300 <= resp.status < 400 else ""
                raise FetchError(f"{url} answered {resp.status}{hint}")
            return await _read_body(resp, url, max_bytes)
    except TimeoutError as exc:  # before OSError, of which it is a subclass
        raise FetchError(f"cannot fetch {url}: timed out") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise FetchError(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from exc
