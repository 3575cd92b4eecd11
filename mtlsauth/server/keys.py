"""Typed application state (``web.AppKey``): no string keys anywhere."""

from __future__ import annotations

from aiohttp import web

from mtlsauth.clientauth import AuthContext
from mtlsauth.clients import ClientRegistry
from mtlsauth.config import Settings
from mtlsauth.grant import ClientCredentialsGrant
from mtlsauth.keys import SigningKey
from mtlsauth.peer import ProxyConfig
from mtlsauth.store import Store
from mtlsauth.tls import TLSManager

__all__ = [
    "AUTH_CONTEXT",
    "GRANT",
    "METADATA",
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
GRANT = web.AppKey("grant", ClientCredentialsGrant)
SIGNING_KEYS = web.AppKey("signing_keys", list[SigningKey])
METADATA = web.AppKey("metadata", bytes)
TLS = web.AppKey("tls", TLSManager)
#: Present only when a TLS-terminating proxy is trusted to forward client certificates.
PROXY = web.AppKey("proxy", ProxyConfig)
