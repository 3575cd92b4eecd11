"""``mtlsauth serve``: run the token service until SIGTERM or SIGINT, then stop gracefully."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from typing import Final

from aiohttp import web

from mtlsauth.cli.common import EXIT_USAGE, CLIError, add_home, port_number, settings_of
from mtlsauth.cli.logs import configure_logging
from mtlsauth.cli.supervisor import WORKER_ENV, Supervisor, worker_command
from mtlsauth.core.peer import parse_networks
from mtlsauth.issuer.http.app import create_app, create_metrics_app, create_tls
from mtlsauth.issuer.http.connections import ConnectionCounter, ConnectionPolicy, GuardedSite
from mtlsauth.issuer.http.dispatch import ServiceRunner
from mtlsauth.issuer.keys import SigningKeyError
from mtlsauth.issuer.settings import ConfigError, Settings
from mtlsauth.issuer.store import StoreError

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is optional
    uvloop = None  # type: ignore[assignment]

__all__ = ["ListenError", "add_parser", "connection_policy", "listening", "serve"]

log = logging.getLogger("mtlsauth.issuer.http")
# In-flight requests get this long to finish after SIGTERM.
SHUTDOWN_TIMEOUT = 10.0


class ListenError(Exception):
    """A listener could not be started (its address and port are in the message)."""


#: bind() errors that mean "this machine has no such address" (no IPv6, say): skip it.
_ABSENT_ADDRESS: Final = frozenset({errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})


def connection_policy(settings: Settings) -> ConnectionPolicy:
    return ConnectionPolicy(
        header_timeout=settings.request_header_timeout,
        body_timeout=settings.request_body_timeout,
        keepalive_timeout=settings.keepalive_timeout,
        handshake_timeout=settings.tls_handshake_timeout,
        max_per_source=settings.max_connections_per_source,
        max_total=settings.max_connections,
        max_header_size=settings.max_header_size,
        max_headers=settings.max_headers,
        exempt=parse_networks(settings.trusted_proxies),
    )


async def _start(site: GuardedSite, host: str, port: int, *, optional: bool) -> bool:
    try:
        await site.start()
    except OSError as exc:
        if optional and exc.errno in _ABSENT_ADDRESS:
            # A machine without IPv6 cannot bind ::1; the other addresses still serve.
            log.warning("cannot listen on %s port %d: %s", host, port, exc)
            return False
        reason = exc.strerror or str(exc)
        raise ListenError(f"cannot listen on {host} port {port}: {reason}") from exc
    log.info("listening on %s", site.name)
    return True


@contextlib.asynccontextmanager
async def listening(
    settings: Settings, *, reuse_port: bool = False
) -> AsyncIterator[web.Application]:
    """The service's listeners (and the metrics listener) from start until the block ends.

    Raises ListenError when an address is taken (EADDRINUSE is never skipped: a second server
    on the same port must not start half-way), or when no address could be bound at all.
    """
    tls = create_tls(settings)
    app = create_app(settings, tls)
    policy = connection_policy(settings)
    runner = ServiceRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT, handle_signals=False)
    await runner.setup()
    metrics_runner: web.AppRunner | None = None
    try:
        counter = ConnectionCounter(policy)
        listeners = [(settings.port, tls.optional)]
        if settings.mtls_port is not None and tls.required is not None:
            listeners.append((settings.mtls_port, tls.required))
        for port, context in listeners:
            started = 0
            for host in settings.hosts:
                site = GuardedSite(
                    runner, host, port, policy=policy, counter=counter,
                    ssl_context=context, reuse_port=reuse_port,
                )  # fmt: skip
                started += await _start(site, host, port, optional=len(settings.hosts) > 1)
            if started == 0:
                raise ListenError(f"could not listen on any of {', '.join(settings.hosts)}")
        if settings.metrics_port is not None:
            metrics_runner = web.AppRunner(create_metrics_app(app), handle_signals=False)
            await metrics_runner.setup()
            site = GuardedSite(
                metrics_runner, settings.metrics_host, settings.metrics_port,
                policy=policy, counter=ConnectionCounter(policy), reuse_port=reuse_port,
            )  # fmt: skip
            await _start(site, settings.metrics_host, settings.metrics_port, optional=False)
        yield app
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()


async def serve(
    settings: Settings, *, ready: Callable[[], None] | None = None, reuse_port: bool = False
) -> None:
    """Serve until SIGTERM/SIGINT; the optional listener, and the mTLS one when configured.

    ``reuse_port``: bind with SO_REUSEPORT, so several worker processes share the port.
    """
    async with listening(settings, reuse_port=reuse_port):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready()
        await stop.wait()
        log.info("shutting down: draining in-flight requests (up to %.0f s)", SHUTDOWN_TIMEOUT)
    log.info("stopped")


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (the ``fast`` extra): about 1.5x the requests per core."""
    if uvloop is None:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if args.port is not None:
        if args.port in (settings.mtls_port, settings.metrics_port):
            raise CLIError(f"--port {args.port} is the mtls_port or metrics_port", EXIT_USAGE)
        settings = dataclasses.replace(settings, port=args.port)
    if not 1 <= args.workers <= 256:
        raise CLIError(f"--workers must be from 1 to 256, got {args.workers}", code=2)
    configure_logging(settings.log_level, settings.log_format)
    worker = os.environ.get(WORKER_ENV) is not None
    if args.workers > 1 and not worker:
        command = worker_command(str(settings.home), args.port)
        return Supervisor(command, args.workers, drain_timeout=SHUTDOWN_TIMEOUT).run()
    try:
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            runner.run(serve(settings, reuse_port=worker))
    except ConfigError as exc:  # found while building the app (the CA key for enrollment)
        raise CLIError(f"configuration error: {exc}", code=2) from exc
    except (StoreError, SigningKeyError, ListenError, OSError) as exc:
        raise CLIError(f"cannot start: {exc}") from exc
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the token service",
        description="Serve until SIGTERM or SIGINT; in-flight requests are drained on stop.",
    )
    add_home(parser)
    parser.add_argument("--port", type=port_number, help="override the configured HTTPS port")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="N worker processes on one port (SO_REUSEPORT), restarted if they die; "
        "one per core is the usual choice (default 1)",
    )
    parser.set_defaults(handler=_run)
