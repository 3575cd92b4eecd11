"""The aiohttp application: routes, the error middleware, and what lives as long as the app.

Everything opened at start (store, client registry, the refresh task) is owned by a
``cleanup_ctx`` and closed on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

from mtlsauth.clientauth import AuthContext
from mtlsauth.clients import Client, ClientRegistry
from mtlsauth.config import Settings
from mtlsauth.grant import ClientCredentialsGrant
from mtlsauth.keys import SigningKey
from mtlsauth.revocation import renew_crl_if_due
from mtlsauth.server.health import health
from mtlsauth.server.jwks import jwks
from mtlsauth.server.keys import (
    AUTH_CONTEXT,
    GRANT,
    METADATA,
    PROXY,
    REGISTRY,
    SETTINGS,
    SIGNING_KEYS,
    STORE,
    TLS,
)
from mtlsauth.server.metadata import WELL_KNOWN, build_metadata, metadata
from mtlsauth.server.middleware import connection_lifetime, error_middleware
from mtlsauth.server.token import token
from mtlsauth.store import Store, StoreError, open_store
from mtlsauth.tls import ServerTLSConfig, TLSManager
from mtlsauth.tokens import TokenIssuer

__all__ = ["create_app", "create_tls"]

log = logging.getLogger("mtlsauth.server")


def create_tls(settings: Settings) -> TLSManager:
    """The listeners' TLS contexts for ``settings`` (before the app starts)."""
    config = ServerTLSConfig(
        cert=settings.tls_cert, key=settings.tls_key, client_ca=settings.client_ca, crl=settings.crl
    )
    return TLSManager(config, with_required_listener=settings.mtls_port is not None)


def _self_signed_anchors(clients: Mapping[str, Client]) -> frozenset[bytes]:
    return frozenset(
        cert.der
        for client in clients.values()
        if client.auth_method == "self_signed_tls_client_auth"
        for cert in client.certificates
    )


# CRL freshness is looked at this often (a CRL lives for days).
HOUSEKEEPING_INTERVAL = 60.0


async def _refresh_forever(registry: ClientRegistry, tls: TLSManager, settings: Settings) -> None:
    """Pick up client and TLS file changes made by other processes (the CLI, other hosts),
    and keep the CRL fresh."""
    loop = asyncio.get_running_loop()
    next_housekeeping = loop.time()
    while True:
        await asyncio.sleep(settings.reload_interval)
        try:
            await registry.refresh()
        except StoreError as exc:
            log.warning("client registry refresh failed; serving the cached clients: %s", exc)
        tls.reload_if_changed()
        if loop.time() >= next_housekeeping:
            next_housekeeping = loop.time() + HOUSEKEEPING_INTERVAL
            if settings.crl is not None and await asyncio.to_thread(
                renew_crl_if_due, settings.crl, tls.revocation
            ):
                tls.reload_if_changed()
            tls.warn_if_crl_stale(dt.timedelta(hours=settings.crl_warn_hours))


async def _runtime(app: web.Application) -> AsyncIterator[None]:
    settings, tls = app[SETTINGS], app[TLS]
    store: Store = open_store(settings.database_url)
    await store.open()
    app[STORE] = store
    registry = ClientRegistry(store)
    registry.on_change(lambda clients: tls.set_trust_anchors(_self_signed_anchors(clients)))
    try:
        await registry.refresh()
    except BaseException:
        await store.close()
        raise
    app[REGISTRY] = registry
    app[GRANT] = ClientCredentialsGrant(
        registry=registry,
        auth_context=app[AUTH_CONTEXT],
        issuer=TokenIssuer(
            issuer=settings.issuer, key=app[SIGNING_KEYS][0], ttl=settings.token_ttl
        ),
        default_audience=settings.audience,
    )
    task = asyncio.create_task(_refresh_forever(registry, tls, settings))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await store.close()


def create_app(settings: Settings, tls: TLSManager) -> web.Application:
    """The token service; serve it with ``tls.optional`` (and ``tls.required``) as ssl context."""
    app = web.Application(
        middlewares=[error_middleware, connection_lifetime(settings.max_connection_age)],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[TLS] = tls
    app[SIGNING_KEYS] = [SigningKey.load(settings.signing_key)]
    app[AUTH_CONTEXT] = AuthContext(secret_key=settings.secret_key.get(), client_ca=tls.client_ca)
    app[METADATA] = json.dumps(build_metadata(settings), indent=2).encode()
    if (proxy := settings.proxy) is not None:
        app[PROXY] = proxy
    app.cleanup_ctx.append(_runtime)
    app.router.add_post("/token", token)
    app.router.add_get(WELL_KNOWN, metadata)
    app.router.add_get("/jwks", jwks)
    app.router.add_get("/health", health)
    return app
