"""``mtlsauth token``: get a token as a service would, and print the token response."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
from typing import Any

from mtlsauth.cli.common import EXIT_USAGE, CLIError, read_secret_file, readable_file, url
from mtlsauth.client import TokenClient, TokenError, client_ssl_context

__all__ = ["add_parser"]


SECRET_ENV = "MTLSAUTH_CLIENT_SECRET"  # noqa: S105 - a variable name


def _secret(args: argparse.Namespace) -> str | None:
    """The client secret: --client-secret, else --client-secret-file, else the environment."""
    if args.client_secret is not None:
        return str(args.client_secret)
    if args.client_secret_file is not None:
        return read_secret_file("--client-secret-file", args.client_secret_file)
    return os.environ.get(SECRET_ENV) or None


def _run(args: argparse.Namespace) -> int:
    if bool(args.cert) != bool(args.key):
        raise CLIError("--cert and --key go together", EXIT_USAGE)
    secret = _secret(args)
    cacert = readable_file("--cacert", args.cacert)
    cert = readable_file("--cert", args.cert) if args.cert else None
    key = readable_file("--key", args.key) if args.key else None
    try:
        ctx = client_ssl_context(cacert, cert, key)
    except (OSError, ssl.SSLError) as exc:
        # ssl names neither the file nor what is wrong with it ("PEM lib"): name the files.
        files = ", ".join(str(p) for p in (cacert, cert, key) if p is not None)
        raise CLIError(
            f"cannot load the TLS files ({files}): not PEM, or the key does not match the "
            f"certificate ({exc})",
            EXIT_USAGE,
        ) from exc
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
        description="Discover the issuer's token endpoint and request a token. Give the "
        f"secret with --client-secret-file or ${SECRET_ENV}: --client-secret puts it on the "
        "command line, where other users of this machine can read it (ps, /proc).",
    )
    parser.add_argument("--issuer", required=True, type=url, help="issuer URL")
    parser.add_argument("--cacert", required=True, help="CA bundle that verifies the server")
    parser.add_argument("--cert", help="client certificate (PEM, may include the chain)")
    parser.add_argument("--key", help="client private key (PEM)")
    parser.add_argument("--client-id")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument(
        "--client-secret",
        metavar="S",
        help="the client secret; VISIBLE to other users of this machine (ps, /proc): prefer "
        f"--client-secret-file or ${SECRET_ENV}",
    )
    secret.add_argument(
        "--client-secret-file",
        metavar="F",
        help=f"read the client secret (one line) from this file; else ${SECRET_ENV} is used",
    )
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
