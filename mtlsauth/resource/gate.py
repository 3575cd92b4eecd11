"""The gate: bound-token checks for any resource server behind nginx or Envoy.

nginx ``auth_request`` and Envoy's ``ext_authz`` filter (HTTP service mode) ask a small HTTP
service whether a request may pass. The gate answers with the same verifier and caches as the
libraries (RFC 9068 §4 token checks, RFC 8705 §3 binding to the client certificate the proxy
forwards, RFC 6750 §3 errors):

* 200 with ``X-Mtlsauth-Client-Id``, ``X-Mtlsauth-Subject`` and ``X-Mtlsauth-Scope`` for the
  proxy to pass on;
* 401 with the ``WWW-Authenticate: Bearer`` challenge (a malformed ``Authorization`` header,
  RFC 6750's 400 ``invalid_request``, is answered 401 with ``error="invalid_request"``: nginx's
  ``auth_request`` turns every status but 2xx, 401 and 403 into a 500);
* 403 ``insufficient_scope`` when the route needs a scope the token lacks: named per location
  by the proxy in ``X-Mtlsauth-Scope-Required``, or by path rules (:func:`load_rules`).

The certificate header and ``X-Original-URI`` / ``X-Original-Method`` are believed only from
the trusted proxy addresses (:class:`mtlsauth.core.peer.ProxyConfig`); the original request's
path is the gate request's own path otherwise (Envoy appends it to its ``path_prefix``).
"""

from __future__ import annotations

import functools
import posixpath
import tomllib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, unquote

from aiohttp import hdrs, web
from multidict import CIMultiDictProxy

from mtlsauth.core.errors import MalformedAuthorization, OAuthError
from mtlsauth.core.peer import ProxyConfig, ProxyHeaderError, cert_from_header
from mtlsauth.core.requestid import REQUEST_ID_HEADER, choose_request_id
from mtlsauth.resource.authorize import authorize, log_refusal, resolve_peer
from mtlsauth.resource.verify import Claims, TokenVerifier

__all__ = [
    "CLIENT_ID_HEADER",
    "ORIGINAL_METHOD_HEADER",
    "ORIGINAL_URI_HEADER",
    "SCOPE_HEADER",
    "SCOPE_REQUIRED_HEADER",
    "SUBJECT_HEADER",
    "Gate",
    "PathRule",
    "create_gate_app",
    "load_rules",
]

CLIENT_ID_HEADER: Final = "X-Mtlsauth-Client-Id"
SUBJECT_HEADER: Final = "X-Mtlsauth-Subject"
SCOPE_HEADER: Final = "X-Mtlsauth-Scope"
SCOPE_REQUIRED_HEADER: Final = "X-Mtlsauth-Scope-Required"
ORIGINAL_URI_HEADER: Final = "X-Original-URI"
ORIGINAL_METHOD_HEADER: Final = "X-Original-Method"

#: Forwarded certificate headers remembered (parsed once: a PEM parse costs ~100 µs, more than
#: the rest of a repeated token's check). ~3 KiB each.
CERT_CACHE_SIZE: Final = 1024

# Every printable ASCII character but '%' passes as is; anything else is percent-encoded, so
# a claim can never end a header line.
_HEADER_SAFE: Final = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "%")


@dataclass(frozen=True, slots=True)
class PathRule:
    """Requests under ``prefix`` (whole path segments), for ``methods`` (all when empty),
    need every scope in ``scopes``."""

    prefix: str
    scopes: tuple[str, ...]
    methods: frozenset[str] = field(default_factory=frozenset)

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method.upper() not in self.methods:
            return False
        base = self.prefix.rstrip("/").casefold()  # paths are case-folded (normalized_path)
        return not base or path == base or path.startswith(base + "/")


def _rule(index: int, entry: Any) -> PathRule:
    where = f"rule {index + 1}"
    if not isinstance(entry, dict) or set(entry) - {"path", "scope", "methods"}:
        raise ValueError(f"{where}: a table with path, scope and optional methods")
    path, scope, methods = entry.get("path"), entry.get("scope"), entry.get("methods", [])
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"{where}: path must be a string starting with '/'")
    if not isinstance(scope, str) or not scope.split():
        raise ValueError(f"{where}: scope must be a non-empty space-separated string")
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise ValueError(f"{where}: methods must be a list of strings")
    return PathRule(path, tuple(scope.split()), frozenset(m.upper() for m in methods))


def load_rules(path: Path) -> tuple[PathRule, ...]:
    """Path rules from a TOML file; ValueError names the problem::

        [[rule]]
        path = "/invoices"          # this path and everything under it
        methods = ["GET"]           # optional; every method when absent
        scope = "invoices.read"     # every scope listed is needed

    Every rule that matches a request adds its scopes.
    """
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if set(data) - {"rule"}:
        raise ValueError(f"{path}: unknown keys {sorted(set(data) - {'rule'})}; only [[rule]]")
    entries = data.get("rule", [])
    if not isinstance(entries, list):
        raise ValueError(f"{path}: rule must be an array of tables ([[rule]])")
    try:
        return tuple(_rule(i, entry) for i, entry in enumerate(entries))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def normalized_path(uri: str) -> str:
    """The path of a request URI as any upstream's router may see it: no query,
    percent-decoded, no ``;params`` (RFC 3986 §3.3; Tomcat and Spring drop them and read
    ``..;`` as ``..``), no dot segments (``/public/../invoices`` is ``/invoices``), no trailing
    dots or spaces in a segment (IIS), case-folded (IIS, ASP.NET). Path rules only add scopes,
    so folding more paths together can only refuse more."""
    # Not urlsplit: it reads '//host/x' as a network location, not as the path nginx routes.
    path = unquote(uri.partition("?")[0].partition("#")[0]) or "/"
    path = "/".join(segment.partition(";")[0] for segment in path.split("/"))
    normal = posixpath.normpath(path)
    segments = [segment.rstrip(". ") for segment in normal.split("/")]
    # POSIX keeps a leading '//' (implementation-defined); a router does not.
    return "/" + "/".join(segments).strip("/").casefold()


def _one(headers: CIMultiDictProxy[str], name: str) -> str | None:
    values = headers.getall(name, [])
    if len(values) > 1:
        raise MalformedAuthorization(f"{name} header repeated ({len(values)} copies)")
    return values[0] if values else None


def _header_value(value: Any) -> str:
    return quote(str(value), safe=_HEADER_SAFE)


class Gate:
    """Decides one forwarded request: the claims, or the OAuthError to answer."""

    def __init__(
        self,
        verifier: TokenVerifier,
        proxy: ProxyConfig,
        rules: Sequence[PathRule] = (),
    ) -> None:
        self.verifier = verifier
        self.proxy = proxy
        self.rules = tuple(rules)
        # Only successes are cached (lru_cache does not keep exceptions).
        self._forwarded = functools.lru_cache(maxsize=CERT_CACHE_SIZE)(
            functools.partial(cert_from_header, fmt=proxy.fmt, xfcc_mode=proxy.xfcc_mode)
        )
        # The callers are a few proxies: parsing their address every time is most of a
        # repeated check's cost.
        self._is_trusted = functools.lru_cache(maxsize=256)(proxy.is_trusted)

    def peer(self, remote: str | None, headers: CIMultiDictProxy[str]) -> bytes | None:
        """The forwarded certificate (ProxyConfig's rules; the parse of one value cached)."""
        values = headers.getall(self.proxy.header, [])
        if len(values) == 1 and self._is_trusted(remote):
            try:
                return self._forwarded(values[0])
            except ProxyHeaderError as exc:
                raise MalformedAuthorization(str(exc)) from exc
        return resolve_peer(self.proxy, remote, None, headers)

    def required_scopes(self, headers: CIMultiDictProxy[str], method: str, path: str) -> list[str]:
        needed = [s for rule in self.rules if rule.matches(method, path) for s in rule.scopes]
        named = _one(headers, SCOPE_REQUIRED_HEADER)
        if named:
            needed.extend(named.split())
        return list(dict.fromkeys(needed))

    def original(
        self, remote: str | None, headers: CIMultiDictProxy[str], method: str, path: str
    ) -> tuple[str, str]:
        """The original request's method and normalized path."""
        if self._is_trusted(remote):
            method = _one(headers, ORIGINAL_METHOD_HEADER) or method
            path = _one(headers, ORIGINAL_URI_HEADER) or path
        return method, normalized_path(path)

    async def check(
        self, *, remote: str | None, headers: CIMultiDictProxy[str], method: str, path: str
    ) -> Claims:
        peer = self.peer(remote, headers)
        method, path = self.original(remote, headers, method, path)
        return await authorize(
            self.verifier,
            authorization=headers.getall(hdrs.AUTHORIZATION, []),
            peer_der=peer,
            scopes=self.required_scopes(headers, method, path),
        )


def identity_headers(claims: Claims) -> dict[str, str]:
    """What the proxy copies to the upstream (``auth_request_set``, Envoy's
    ``allowed_upstream_headers``)."""
    return {
        CLIENT_ID_HEADER: _header_value(claims.get("client_id", claims.get("sub", ""))),
        SUBJECT_HEADER: _header_value(claims.get("sub", "")),
        SCOPE_HEADER: _header_value(claims.get("scope", "")),
    }


def _refusal(error: OAuthError, rid: str) -> web.Response:
    # auth_request passes 401 and 403 on and turns anything else into a 500 (see above).
    status = 401 if error.status == 400 else error.status
    headers = {**error.headers(), REQUEST_ID_HEADER: rid}
    return web.Response(status=status, body=error.body_bytes(), headers=headers)


GATE = web.AppKey("mtlsauth_gate", Gate)


async def _decide(request: web.Request) -> web.Response:
    gate = request.app[GATE]
    try:
        claims = await gate.check(
            remote=request.remote,
            headers=request.headers,
            method=request.method,
            path=request.raw_path,
        )
    except OAuthError as exc:
        rid = log_refusal(
            exc,
            method=request.method,
            path=request.path,
            remote=request.remote,
            headers=request.headers,
            proxy=gate.proxy,
        )
        return _refusal(exc, rid)
    rid = choose_request_id(
        request.headers.getall(REQUEST_ID_HEADER, []), trusted=gate.proxy.is_trusted(request.remote)
    )
    return web.Response(status=200, headers={**identity_headers(claims), REQUEST_ID_HEADER: rid})


def create_gate_app(
    gate: Gate,
    *,
    on_cleanup: Iterable[Callable[[web.Application], Awaitable[None]]] = (),
) -> web.Application:
    """The gate's aiohttp app: every method on every path asks :meth:`Gate.check`."""
    app = web.Application()
    app[GATE] = gate
    app.router.add_route("*", "/{tail:.*}", _decide)
    app.on_cleanup.extend(on_cleanup)
    return app
