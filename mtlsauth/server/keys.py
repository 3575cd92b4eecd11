"""Typed application state (``web.AppKey``): no string keys anywhere."""

from __future__ import annotations

from aiohttp import web

from mtlsauth.clientauth import AuthContext
from mtlsauth.clientauth.guard import ClientGuard
from mtlsauth.clients import ClientRegistry
from mtlsauth.config import Settings
from mtlsauth.grant import ClientCredentialsGrant
from mtlsauth.introspection import TokenInspector
from mtlsauth.metrics import Metrics
from mtlsauth.peer import IPNetwork, ProxyConfig
from mtlsauth.server.signing import SigningKeys
from mtlsauth.store import Store
from mtlsauth.tls import TLSManager

__all__ = [
    "AUTH_CONTEXT",
    "GRANT",
    "GUARD",
    "INSPECTOR",
    "METADATA",
    "METRICS",
    "METRICS_ALLOW",
    "PROXY",
    "REGISTRY",
    "SETTINGS",
    "SIGNING_KEYS",
    "STORE",
    "TLS",
]

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
REGISTRY = web.AppKey("registry", ClientRegistry)
AUTH_CONTEXT = web.AppKey("auth_context", AuthContext)
GUARD = web.AppKey("guard", ClientGuard)
GRANT = web.AppKey("grant", ClientCredentialsGrant)
INSPECTOR = web.AppKey("inspector", TokenInspector)
METRICS = web.AppKey("metrics", Metrics)
SIGNING_KEYS = web.AppKey("signing_keys", SigningKeys)
METADATA = web.AppKey("metadata", bytes)
TLS = web.AppKey("tls", TLSManager)
#: Present only when a TLS-terminating proxy is trusted to forward client certificates.
PROXY = web.AppKey("proxy", ProxyConfig)
#: On the public listeners: the peer networks that may read /metrics (others get 404).
METRICS_ALLOW = web.AppKey("metrics_allow", tuple[IPNetwork, ...])
