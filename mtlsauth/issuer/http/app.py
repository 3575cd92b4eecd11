"""The aiohttp application of the token service (RFC 6749 §3 endpoints, RFC 8414 metadata):
routes, the middleware, and what lives as long as the app.

Everything opened at start (store, client registry, audit log, the background loop) is owned
by a ``cleanup_ctx`` and closed on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

from mtlsauth.core.peer import parse_networks
from mtlsauth.issuer.audit import Audit
from mtlsauth.issuer.clientauth import AssertionPolicy, AuthContext
from mtlsauth.issuer.clientauth.guard import ClientGuard
from mtlsauth.issuer.clientauth.remote_jwks import RemoteJWKS
from mtlsauth.issuer.est import load_enrollment
from mtlsauth.issuer.grant import ClientCredentialsGrant
from mtlsauth.issuer.http.crl import crl
from mtlsauth.issuer.http.est import EST_PREFIX, cacerts, simpleenroll, simplereenroll
from mtlsauth.issuer.http.health import health
from mtlsauth.issuer.http.introspect import introspect
from mtlsauth.issuer.http.jwks import jwks
from mtlsauth.issuer.http.keys import (
    ANCHORS,
    AUDIT,
    EST,
    GRANT,
    GUARD,
    INSPECTOR,
    METADATA,
    METRICS,
    METRICS_ALLOW,
    PROXY,
    REGISTRY,
    REVOCATION_FEED,
    SETTINGS,
    SIGNER,
    SIGNING_KEYS,
    STORE,
    TLS,
    TRUST_REVOCATION,
)
from mtlsauth.issuer.http.metadata import WELL_KNOWN, build_metadata, metadata
from mtlsauth.issuer.http.metrics import metrics
from mtlsauth.issuer.http.middleware import service_middleware
from mtlsauth.issuer.http.revoke import revoke
from mtlsauth.issuer.http.revoked import revoked
from mtlsauth.issuer.http.signing import SigningKeys
from mtlsauth.issuer.http.token import token
from mtlsauth.issuer.introspection import TokenInspector
from mtlsauth.issuer.metrics import Metrics
from mtlsauth.issuer.model import Client
from mtlsauth.issuer.registry import ClientRegistry
from mtlsauth.issuer.revocation_feed import RevocationFeed
from mtlsauth.issuer.settings import Settings
from mtlsauth.issuer.store import Store, StoreError, open_store
from mtlsauth.issuer.throttle import Throttle, ThrottlePolicy
from mtlsauth.issuer.tls.contexts import ServerTLSConfig, TLSManager
from mtlsauth.issuer.tls.revocation import renew_crl_if_due, revoked_thumbprints
from mtlsauth.issuer.tokens import TokenSigner
from mtlsauth.issuer.trust.bundles import BundleRefresher
from mtlsauth.issuer.trust.registry import AnchorRegistry
from mtlsauth.issuer.trust.revocation import TrustRevocation
from mtlsauth.issuer.trust.verifier import TrustSet

__all__ = ["create_app", "create_metrics_app", "create_tls", "server_tls_config"]

log = logging.getLogger("mtlsauth.issuer.http")

#: CRL freshness, secret last-use stamps and expired replay-cache rows are handled this often.
HOUSEKEEPING_INTERVAL = 60.0
#: Failed authentications reach the audit log as one line per tally this often.
AUDIT_TALLY_INTERVAL = 10.0
#: Buffered audit events reach the file this often (what a crash can lose; see audit.py).
AUDIT_FLUSH_INTERVAL = 1.0
#: A retired signing key stays published this long after its last token could have expired.
KEY_RETIRE_MARGIN = 60.0


def server_tls_config(settings: Settings) -> ServerTLSConfig:
    """What the listeners' TLS contexts are built from, as ``settings`` say."""
    return ServerTLSConfig(
        cert=settings.tls_cert,
        key=settings.tls_key,
        client_ca=settings.client_ca,
        crl=settings.crl,
        session_tickets=settings.tls_session_tickets,
    )


def create_tls(settings: Settings) -> TLSManager:
    """The listeners' TLS contexts for ``settings`` (before the app starts)."""
    return TLSManager(
        server_tls_config(settings), with_required_listener=settings.mtls_port is not None
    )


def _self_signed_anchors(clients: Mapping[str, Client]) -> frozenset[bytes]:
    return frozenset(
        cert.der
        for client in clients.values()
        if client.auth_method == "self_signed_tls_client_auth"
        for cert in client.certificates
    )


async def _observe(app: web.Application) -> None:
    """Refresh the gauges that are read from state rather than counted on the way."""
    metrics, tls = app[METRICS], app[TLS]
    metrics.crl_next_update(
        (entry.issuer, entry.next_update)
        for entry in tls.revocation.by_issuer.values()
        if entry.next_update is not None
    )
    metrics.forget_certificates(app[REGISTRY].all().keys(), time.time())
    metrics.sample_process()


async def _housekeeping(app: web.Application) -> None:
    settings, tls, store = app[SETTINGS], app[TLS], app[STORE]
    await _observe(app)
    if settings.crl is not None and await asyncio.to_thread(
        renew_crl_if_due, settings.crl, tls.revocation
    ):
        tls.reload_if_changed()
    tls.warn_if_crl_stale(dt.timedelta(hours=settings.crl_warn_hours))
    await app[GUARD].flush_usage(store)
    await store.purge(time.time(), failure_window=settings.throttle_window)


async def _refresh_forever(app: web.Application) -> None:
    """Pick up what other processes changed — clients (the CLI, other hosts), throttling
    blocks, TLS files, signing keys — and do the periodic housekeeping."""
    settings, tls, registry = app[SETTINGS], app[TLS], app[REGISTRY]
    loop = asyncio.get_running_loop()
    next_housekeeping = loop.time()
    next_tallies = loop.time() + AUDIT_TALLY_INTERVAL
    while True:
        try:
            await app[STORE].wait_for_change(settings.reload_interval)
            await registry.refresh()
            await app[ANCHORS].refresh()
            await app[GUARD].throttle.refresh()
        except StoreError as exc:
            log.warning("store refresh failed; serving from the caches: %s", exc)
        except Exception:
            # This loop must outlive any one failure, or the caches would go stale for good.
            log.exception("store refresh failed unexpectedly; serving from the caches")
            await asyncio.sleep(settings.reload_interval)
        tls.reload_if_changed()
        app[TRUST_REVOCATION].tick()
        app[ANCHORS].tick()
        if app[SIGNING_KEYS].reload_if_changed():
            app[SIGNER].use_key(app[SIGNING_KEYS].active)
        if loop.time() >= next_tallies:
            next_tallies = loop.time() + AUDIT_TALLY_INTERVAL
            app[AUDIT].flush_tallies()
        if loop.time() >= next_housekeeping:
            next_housekeeping = loop.time() + HOUSEKEEPING_INTERVAL
            try:
                await _housekeeping(app)
            except StoreError as exc:
                log.warning("housekeeping failed: %s", exc)


def _jwks_uri_context(settings: Settings) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if settings.jwks_uri_cafile is not None:
        ctx.load_verify_locations(cafile=str(settings.jwks_uri_cafile))
    return ctx


async def _close(*fetchers: RemoteJWKS | TrustRevocation | BundleRefresher) -> None:
    """Stop the outbound fetchers (their tasks and sessions), in order."""
    for fetcher in fetchers:
        await fetcher.close()


async def _runtime(app: web.Application) -> AsyncIterator[None]:
    settings, tls = app[SETTINGS], app[TLS]
    store: Store = open_store(settings.database_url.get())
    await store.open()
    audit = Audit(settings.audit_log)
    remote_jwks = RemoteJWKS(
        _jwks_uri_context(settings),
        policy=settings.jwks_uri_policy,
        timeout=settings.jwks_uri_timeout,
    )
    # Apart from the clients' key sets: a flood of client URIs cannot evict a federation's.
    federation_keys = RemoteJWKS(
        _jwks_uri_context(settings),
        owner="a federation's",
        policy=settings.jwks_uri_policy,
        timeout=settings.jwks_uri_timeout,
    )
    trust_revocation = TrustRevocation(
        TrustSet(),
        refresh_interval=settings.trust_refresh_interval,
        timeout=settings.trust_fetch_timeout,
    )
    bundles = BundleRefresher(
        store,
        ssl_context=_jwks_uri_context(settings),
        timeout=settings.trust_fetch_timeout,
        min_refresh=settings.spiffe_bundle_min_refresh,
    )
    try:
        registry = ClientRegistry(store)
        registry.on_change(lambda clients: tls.set_trust_anchors(_self_signed_anchors(clients)))
        await registry.refresh()
        anchors = AnchorRegistry(store, trust_revocation.trust, tls.set_external_anchors, bundles)
        await anchors.refresh()
        context = AuthContext(
            secret_key=settings.secret_key.get(),
            client_ca=tls.client_ca,
            assertions=AssertionPolicy(
                audiences=settings.assertion_audiences,
                max_lifetime=settings.assertion_max_lifetime,
                federated_max_lifetime=settings.federated_assertion_max_lifetime,
                issuer=settings.issuer,
            ),
            store=store,
            remote_jwks=remote_jwks,
            federations=registry.federation,
            federation_keys=federation_keys,
            trust=anchors.trust,
            trust_revocation=trust_revocation,
            bundles=bundles,
        )
        policy = ThrottlePolicy(
            limit=settings.throttle_limit,
            window=settings.throttle_window,
            block=settings.throttle_block,
        )
        guard = ClientGuard(
            registry=registry,
            context=context,
            throttle=Throttle(store, policy),
            audit=audit,
            metrics=app[METRICS],
        )
        await guard.throttle.refresh()
    except BaseException:
        await _close(remote_jwks, federation_keys, trust_revocation, bundles)
        audit.close()
        await store.close()
        raise
    app[STORE] = store
    app[REGISTRY] = registry
    app[ANCHORS] = anchors
    app[TRUST_REVOCATION] = trust_revocation
    app[AUDIT] = audit
    app[GUARD] = guard
    keys = app[SIGNING_KEYS]
    signer = app[SIGNER] = TokenSigner(
        issuer=settings.issuer, key=keys.active, ttl=settings.token_ttl
    )
    app[GRANT] = ClientCredentialsGrant(
        signer=signer,
        default_audience=settings.audience,
        audit=audit,
        metrics=app[METRICS],
    )
    crl = settings.crl
    app[REVOCATION_FEED] = RevocationFeed(
        store,
        settings.issuer,
        revoked_certificates=(lambda: revoked_thumbprints(crl.parent)) if crl else None,
    )
    app[INSPECTOR] = TokenInspector(
        issuer=settings.issuer, keys=keys.published, store=store, audit=audit
    )
    task = asyncio.create_task(_refresh_forever(app))
    audit_task = asyncio.create_task(audit.flush_forever(AUDIT_FLUSH_INTERVAL))
    yield
    for background in (task, audit_task):
        background.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await background
    with contextlib.suppress(StoreError):
        await guard.flush_usage(store)
    await _close(remote_jwks, federation_keys, trust_revocation, bundles)
    audit.close()
    await store.close()


def create_app(settings: Settings, tls: TLSManager) -> web.Application:
    """The token service; serve it with ``tls.optional`` (and ``tls.required``) as ssl context."""
    app_metrics = Metrics()
    app = web.Application(
        middlewares=[
            service_middleware(
                app_metrics,
                settings.max_connection_age,
                parse_networks(settings.trusted_proxies),
            )
        ],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[TLS] = tls
    app[METRICS] = app_metrics
    app[SIGNING_KEYS] = SigningKeys(
        settings.signing_key.parent,
        settings.signing_key,
        retire_after=settings.token_ttl + KEY_RETIRE_MARGIN,
    )
    app[METADATA] = json.dumps(build_metadata(settings), indent=2).encode()
    if (proxy := settings.proxy) is not None:
        app[PROXY] = proxy
    app.cleanup_ctx.append(_runtime)
    app.router.add_post("/token", token, name="token")
    app.router.add_post("/introspect", introspect, name="introspect")
    app.router.add_post("/revoke", revoke, name="revoke")
    app.router.add_get(WELL_KNOWN, metadata, name="metadata")
    app.router.add_get("/jwks", jwks, name="jwks")
    app.router.add_get("/revoked", revoked, name="revoked")
    app.router.add_get("/health", health, name="health")
    app.router.add_get("/crl/{name}", crl, name="crl")
    if (enrollment := load_enrollment(settings)) is not None:
        app[EST] = enrollment
        app.router.add_get(f"{EST_PREFIX}/cacerts", cacerts, name="est_cacerts")
        app.router.add_post(f"{EST_PREFIX}/simpleenroll", simpleenroll, name="est_simpleenroll")
        app.router.add_post(
            f"{EST_PREFIX}/simplereenroll", simplereenroll, name="est_simplereenroll"
        )
    if settings.metrics_port is None:
        # Otherwise /metrics lives only on its own listener (serve starts it).
        app[METRICS_ALLOW] = parse_networks(settings.metrics_allow)
        app.router.add_get("/metrics", metrics, name="metrics")
    return app


def create_metrics_app(service: web.Application) -> web.Application:
    """The separate metrics listener (``metrics_port``): /metrics of ``service``, nothing else."""
    app = web.Application(middlewares=[service_middleware(service[METRICS], float("inf"))])
    app[METRICS] = service[METRICS]
    app[SETTINGS] = service[SETTINGS]
    app.router.add_get("/metrics", metrics, name="metrics")
    return app
