"""The ``mtlsauth`` command.

Exit codes: 0 success; 1 the operation was refused or failed (the reason on stderr); 2 usage or
configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mtlsauth.cli import clients, est, init, keys, migrate, resource, serve, token
from mtlsauth.cli.common import CLIError
from pki import cli as pki_cli

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtlsauth",
        description="OAuth 2.0 client credentials over mutual TLS, with certificate-bound tokens.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    init.add_parser(sub)
    serve.add_parser(sub)
    clients.add_parser(sub)
    token.add_parser(sub)
    keys.add_parser(sub)
    migrate.add_parser(sub)
    resource.add_parsers(sub)
    est.add_parsers(sub)
    pki = sub.add_parser("pki", help="the CA toolkit (same as python -m pki)")
    pki_cli.add_commands(pki)
    pki.set_defaults(handler=pki_cli.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
