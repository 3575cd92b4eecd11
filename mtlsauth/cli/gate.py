"""``mtlsauth gate``: the bound-token check for nginx ``auth_request`` and Envoy ``ext_authz``
(see :mod:`mtlsauth.resource.gate`)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import ssl
import sys
from pathlib import Path

from aiohttp import web

from mtlsauth.cli.common import CLIError, url
from mtlsauth.cli.logs import configure_logging
from mtlsauth.core.peer import HEADER_FORMATS, ProxyConfig, parse_networks
from mtlsauth.resource import JWKSCache, TokenVerifier, VerifierConfig
from mtlsauth.resource.gate import Gate, PathRule, create_gate_app, load_rules
from mtlsauth.resource.revocation import RevocationList

__all__ = ["add_parser", "parse_listen"]

DEFAULT_LISTEN = "127.0.0.1:8445"
#: The gate listens on loopback by default, so the proxy next to it is the trusted one.
DEFAULT_TRUSTED = ("127.0.0.1/32", "::1/128")


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``; ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {value!r}: expected HOST:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"--listen {value!r}: the host must be an IP address") from exc
    return host, int(port)


def _proxy(args: argparse.Namespace) -> ProxyConfig:
    try:
        trusted = parse_networks(args.trusted_proxy or DEFAULT_TRUSTED)
    except ValueError as exc:
        raise CLIError(f"--trusted-proxy: {exc}", code=2) from exc
    return ProxyConfig(trusted=trusted, header=args.cert_header, fmt=args.cert_format)


def _rules(args: argparse.Namespace) -> tuple[PathRule, ...]:
    if args.config is None:
        return ()
    try:
        return load_rules(Path(args.config))
    except ValueError as exc:
        raise CLIError(f"--config {exc}", code=2) from exc


async def _serve(args: argparse.Namespace, host: str, port: int, ctx: ssl.SSLContext) -> None:
    issuer = args.issuer.rstrip("/")
    keys = JWKSCache(issuer=issuer, ssl_context=ctx)
    revocations = (
        RevocationList(issuer=issuer, ssl_context=ctx, interval=args.revocation_interval)
        if args.revocation_interval > 0
        else None
    )
    verifier = TokenVerifier(
        VerifierConfig(issuer=issuer, audience=args.audience), keys, revocations=revocations
    )

    async def close(_: web.Application) -> None:
        if revocations is not None:
            await revocations.close()
        await keys.close()

    gate = Gate(verifier, _proxy(args), _rules(args))
    runner = web.AppRunner(
        create_gate_app(gate, on_cleanup=[close]), access_log=None, handle_signals=False
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        if revocations is not None:
            revocations.start()
        print(f"gate listening on {site.name}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _gate(args: argparse.Namespace) -> int:
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise CLIError(str(exc), code=2) from exc
    if not args.revocation_interval >= 0:
        raise CLIError("--revocation-interval must be 0 (off) or more seconds", code=2)
    _proxy(args)
    _rules(args)  # a bad file fails before anything listens
    try:
        ctx = ssl.create_default_context(cafile=args.cacert)
    except (OSError, ssl.SSLError) as exc:
        raise CLIError(f"--cacert {args.cacert}: {exc}", code=2) from exc
    configure_logging(args.log_level, args.log_format)
    try:
        asyncio.run(_serve(args, host, port, ctx))
    except OSError as exc:
        raise CLIError(f"cannot start the gate: {exc}") from exc
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gate = sub.add_parser(
        "gate",
        help="check bound tokens for nginx auth_request / Envoy ext_authz",
        description="Answer 200 with X-Mtlsauth-Client-Id/-Subject/-Scope when the request's "
        "token is valid and bound to the certificate the proxy forwards; 401 with the RFC 6750 "
        "challenge otherwise; 403 when X-Mtlsauth-Scope-Required or a --config path rule names "
        "a scope the token lacks.",
    )
    gate.add_argument("--issuer", required=True, type=url, help="the token service's issuer URL")
    gate.add_argument("--cacert", required=True, help="CA bundle that verifies the issuer")
    gate.add_argument("--audience", required=True, help="the aud this resource server accepts")
    gate.add_argument("--listen", default=DEFAULT_LISTEN, help=f"default {DEFAULT_LISTEN}")
    gate.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="CIDR",
        help="an address the certificate header is believed from (repeatable; default loopback)",
    )
    gate.add_argument(
        "--cert-header", default="Client-Cert", help="the header the proxy forwards it in"
    )
    gate.add_argument("--cert-format", choices=HEADER_FORMATS, default="rfc9440")
    gate.add_argument("--config", metavar="FILE", help="TOML path rules ([[rule]] path, scope)")
    gate.add_argument(
        "--revocation-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="poll the issuer's revocation list this often (0: off; default 5)",
    )
    gate.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"))
    gate.add_argument("--log-format", default="text", choices=("text", "json"))
    gate.set_defaults(handler=_gate)
