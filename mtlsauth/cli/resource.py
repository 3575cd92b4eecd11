"""``mtlsauth check`` (verify a token as a resource server would) and ``mtlsauth demo-api``."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mtlsauth.bench.demo_api import create_demo_api, demo_api_ssl_context
from mtlsauth.cli.common import CLIError, add_home, port_number, read_bounded, settings_of, url
from mtlsauth.core.errors import OAuthError
from mtlsauth.resource import JWKSCache, TokenVerifier, VerifierConfig, require_scopes

__all__ = ["add_parsers"]


def _cert_der(path: str) -> bytes:
    try:
        cert = x509.load_pem_x509_certificates(Path(path).read_bytes())[0]
    except (OSError, ValueError, IndexError) as exc:
        raise CLIError(f"--cert {path}: not a readable PEM certificate ({exc})", code=2) from exc
    return cert.public_bytes(Encoding.DER)


def _check(args: argparse.Namespace) -> int:
    from_stdin = args.token == "-"  # noqa: S105 - "-" is the flag's stdin marker
    token = read_bounded("--token -", sys.stdin.buffer).strip() if from_stdin else args.token
    peer = _cert_der(args.cert) if args.cert else None
    try:
        ctx = ssl.create_default_context(cafile=args.cacert)
    except (OSError, ssl.SSLError) as exc:
        raise CLIError(f"--cacert {args.cacert}: {exc}", code=2) from exc

    async def verify() -> dict[str, Any]:
        keys = JWKSCache(issuer=args.issuer, ssl_context=ctx)
        try:
            verifier = TokenVerifier(
                VerifierConfig(
                    issuer=args.issuer.rstrip("/"),
                    audience=args.audience or args.issuer.rstrip("/"),
                    allow_unbound=args.allow_unbound,
                ),
                keys,
            )
            claims = await verifier.verify(token, peer)
            require_scopes(claims, args.scope)
            return claims
        finally:
            await keys.close()

    try:
        claims = asyncio.run(verify())
    except OAuthError as exc:
        print(json.dumps(exc.body(), indent=2))
        print(f"refused: {exc.detail}", file=sys.stderr)
        return 1
    print(json.dumps(claims, indent=2))
    return 0


def _demo_api(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    app = create_demo_api(
        issuer=settings.issuer,
        audience=settings.audience,
        issuer_ca=settings.home / "ca" / "ca.pem",
    )

    async def run() -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, args.host, args.port, ssl_context=demo_api_ssl_context(settings)
            )
            await site.start()
            print(f"demo API listening on {site.name}/hello", file=sys.stderr, flush=True)
            stop = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    except OSError as exc:
        raise CLIError(f"cannot start the demo API: {exc}") from exc
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser(
        "check",
        help="verify a token as a resource server would (signature, claims, binding)",
        description="Exit 0 and print the claims when the token is valid and bound to --cert; "
        "exit 1 and print the RFC 6750 error otherwise (the precise reason on stderr).",
    )
    check.add_argument("--issuer", required=True, type=url)
    check.add_argument("--cacert", required=True, help="CA bundle that verifies the issuer")
    check.add_argument("--token", required=True, help="the access token, or - to read stdin")
    check.add_argument("--cert", help="the client certificate presenting the token (PEM)")
    check.add_argument("--audience", help="expected aud (default: the issuer)")
    check.add_argument("--scope", action="append", default=[], help="a scope the token needs")
    check.add_argument(
        "--allow-unbound", action="store_true", help="accept tokens without a certificate binding"
    )
    check.add_argument("--json", action="store_true", help="accepted; output is always JSON")
    check.set_defaults(handler=_check)

    demo = sub.add_parser(
        "demo-api",
        help="run a small protected API (GET /hello needs scope demo.read)",
        description="A protected API that uses the resource checker; for demos and tests.",
    )
    add_home(demo)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=port_number, default=8444)
    demo.set_defaults(handler=_demo_api)
