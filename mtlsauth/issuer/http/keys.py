"""Typed application state of the token service (``web.AppKey``): no string keys anywhere."""

from __future__ import annotations

from aiohttp import web

from mtlsauth.core.peer import IPNetwork, ProxyConfig
from mtlsauth.issuer.audit import Audit
from mtlsauth.issuer.clientauth.guard import ClientGuard
from mtlsauth.issuer.est import Enrollment
from mtlsauth.issuer.grant import ClientCredentialsGrant
from mtlsauth.issuer.http.signing import SigningKeys
from mtlsauth.issuer.introspection import TokenInspector
from mtlsauth.issuer.metrics import Metrics
from mtlsauth.issuer.registry import ClientRegistry
from mtlsauth.issuer.revocation_feed import RevocationFeed
from mtlsauth.issuer.settings import Settings
from mtlsauth.issuer.store import Store
from mtlsauth.issuer.tls.contexts import TLSManager
from mtlsauth.issuer.tokens import TokenSigner
from mtlsauth.issuer.trust.registry import AnchorRegistry
from mtlsauth.issuer.trust.revocation import TrustRevocation

__all__ = [
    "ANCHORS",
    "AUDIT",
    "CLIENT_ID",
    "EST",
    "GRANT",
    "GUARD",
    "INSPECTOR",
    "METADATA",
    "METRICS",
    "METRICS_ALLOW",
    "PROXY",
    "REGISTRY",
    "REVOCATION_FEED",
    "SETTINGS",
    "SIGNER",
    "SIGNING_KEYS",
    "STORE",
    "TLS",
    "TRUST_REVOCATION",
]

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
REGISTRY = web.AppKey("registry", ClientRegistry)
AUDIT = web.AppKey("audit", Audit)
GUARD = web.AppKey("guard", ClientGuard)
GRANT = web.AppKey("grant", ClientCredentialsGrant)
INSPECTOR = web.AppKey("inspector", TokenInspector)
METRICS = web.AppKey("metrics", Metrics)
SIGNING_KEYS = web.AppKey("signing_keys", SigningKeys)
#: Signs the tokens; the refresh loop hands it each newly active key (rotation).
SIGNER = web.AppKey("signer", TokenSigner)
METADATA = web.AppKey("metadata", bytes)
TLS = web.AppKey("tls", TLSManager)
ANCHORS = web.AppKey("anchors", AnchorRegistry)
TRUST_REVOCATION = web.AppKey("trust_revocation", TrustRevocation)
#: Present only when a TLS-terminating proxy is trusted to forward client certificates.
PROXY = web.AppKey("proxy", ProxyConfig)
#: On the public listeners: the peer networks that may read /metrics (others get 404).
METRICS_ALLOW = web.AppKey("metrics_allow", tuple[IPNetwork, ...])
#: GET /revoked: the revoked, unexpired token ids resource servers poll.
REVOCATION_FEED = web.AppKey("revocation_feed", RevocationFeed)
#: Present only when the CA directory (``ca_dir``) holds a CA: RFC 7030 enrollment.
EST = web.AppKey("est", Enrollment)
#: The authenticated client of a request, for the request's log line.
CLIENT_ID = web.RequestKey("client_id", str)
