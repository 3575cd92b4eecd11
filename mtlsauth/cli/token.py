"""``mtlsauth token``: get a token as a service would, and print the token response."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
from pathlib import Path
from typing import Any

from mtlsauth.cli.common import CLIError
from mtlsauth.client import TokenClient, TokenError, client_ssl_context

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    if bool(args.cert) != bool(args.key):
        raise CLIError("--cert and --key go together", code=2)
    secret = args.client_secret or os.environ.get("MTLSAUTH_CLIENT_SECRET")
    try:
        ctx = client_ssl_context(
            Path(args.cacert),
            Path(args.cert) if args.cert else None,
            Path(args.key) if args.key else None,
        )
    except (OSError, ssl.SSLError) as exc:
        raise CLIError(f"cannot load the TLS files: {exc}", code=2) from exc
    client = TokenClient(
        issuer=args.issuer,
        ssl_context=ctx,
        client_id=args.client_id,
        client_secret=secret,
        secret_method=args.secret_method,
    )

    async def fetch() -> dict[str, Any]:
        async with client:
            return await client.fetch(scope=args.scope, resources=tuple(args.resource))

    try:
        response = asyncio.run(fetch())
    except TokenError as exc:
        error = {"error": exc.error, "error_description": exc.description, "status": exc.status}
        raise CLIError(json.dumps(error)) from exc
    print(json.dumps(response, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "token",
        help="get an access token (client credentials grant)",
        description="Discover the issuer's token endpoint and request a token. The secret can "
        "come from MTLSAUTH_CLIENT_SECRET instead of --client-secret (which ps can see).",
    )
    parser.add_argument("--issuer", required=True, help="issuer URL")
    parser.add_argument("--cacert", required=True, help="CA bundle that verifies the server")
    parser.add_argument("--cert", help="client certificate (PEM, may include the chain)")
    parser.add_argument("--key", help="client private key (PEM)")
    parser.add_argument("--client-id")
    parser.add_argument("--client-secret")
    parser.add_argument(
        "--secret-method",
        choices=("client_secret_basic", "client_secret_post"),
        default="client_secret_basic",
        help="how to send the secret (default client_secret_basic)",
    )
    parser.add_argument("--scope")
    parser.add_argument("--resource", action="append", default=[], metavar="URI")
    parser.add_argument("--json", action="store_true", help="accepted; output is always JSON")
    parser.set_defaults(handler=_run)
