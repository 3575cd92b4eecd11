"""``mtlsauth serve``: run the token service until SIGTERM or SIGINT, then stop gracefully."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
from collections.abc import Callable

from aiohttp import web

from mtlsauth.cli.common import CLIError, add_home, home_of
from mtlsauth.config import ConfigError, Settings, load_settings
from mtlsauth.keys import SigningKeyError
from mtlsauth.logs import configure_logging
from mtlsauth.server.app import create_app, create_tls
from mtlsauth.store import StoreError
from mtlsauth.supervisor import WORKER_ENV, Supervisor, worker_command

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is optional
    uvloop = None  # type: ignore[assignment]

__all__ = ["add_parser", "serve"]

log = logging.getLogger("mtlsauth.server")
# In-flight requests get this long to finish after SIGTERM.
SHUTDOWN_TIMEOUT = 10.0


async def serve(
    settings: Settings, *, ready: Callable[[], None] | None = None, reuse_port: bool = False
) -> None:
    """Serve until SIGTERM/SIGINT; the optional listener, and the mTLS one when configured.

    ``reuse_port``: bind with SO_REUSEPORT, so several worker processes share the port.
    """
    tls = create_tls(settings)
    app = create_app(settings, tls)
    runner = web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=settings.keepalive_timeout,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        handle_signals=False,
    )
    await runner.setup()
    try:
        listeners = [(settings.port, tls.optional)]
        if settings.mtls_port is not None and tls.required is not None:
            listeners.append((settings.mtls_port, tls.required))
        started = 0
        for port, context in listeners:
            for host in settings.hosts:
                site = web.TCPSite(
                    runner, host, port, ssl_context=context, reuse_port=reuse_port or None
                )
                try:
                    await site.start()
                except OSError as exc:
                    # A machine without IPv6 cannot bind ::1; the other addresses still serve.
                    log.warning("cannot listen on %s port %d: %s", host, port, exc)
                    continue
                started += 1
                log.info("listening on %s", site.name)
        if started == 0:
            raise OSError(f"could not listen on any of {', '.join(settings.hosts)}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready()
        await stop.wait()
        log.info("shutting down: draining in-flight requests (up to %.0f s)", SHUTDOWN_TIMEOUT)
    finally:
        await runner.cleanup()
    log.info("stopped")


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (the ``fast`` extra): about 1.5x the requests per core."""
    if uvloop is None:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(home_of(args))
    except ConfigError as exc:
        raise CLIError(f"configuration error: {exc}", code=2) from exc
    if args.port is not None:
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
    except (StoreError, SigningKeyError, OSError) as exc:
        raise CLIError(f"cannot start: {exc}") from exc
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the token service",
        description="Serve until SIGTERM or SIGINT; in-flight requests are drained on stop.",
    )
    add_home(parser)
    parser.add_argument("--port", type=int, help="override the configured HTTPS port")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="N worker processes on one port (SO_REUSEPORT), restarted if they die; "
        "one per core is the usual choice (default 1)",
    )
    parser.set_defaults(handler=_run)
