"""The ``mtlsauth`` command.

Exit codes, every subcommand (``mtlsauth pki`` included): 0 done; 1 the operation was refused or
failed (the reason on stderr); 2 usage or configuration error. Bad input never prints a
traceback: each command translates what it expects at its boundary, and ``main`` turns what is
left of the operating system's errors (a file that vanished, a directory not writable) into a
one-line message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mtlsauth.cli import (
    clients,
    est,
    federation,
    gate,
    init,
    keys,
    migrate,
    resource,
    serve,
    token,
    trust,
)
from mtlsauth.cli.common import EXIT_FAILED, EXIT_USAGE, CLIError
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
    federation.add_parser(sub)
    trust.add_parser(sub)
    token.add_parser(sub)
    keys.add_parser(sub)
    migrate.add_parser(sub)
    resource.add_parsers(sub)
    gate.add_parser(sub)
    est.add_parsers(sub)
    pki = sub.add_parser("pki", help="the CA toolkit (same as python -m pki)")
    pki_cli.add_commands(pki)
    pki.set_defaults(handler=pki_cli.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        # argparse has printed the usage error (or --help): hand back its code, so main() is
        # callable in-process and `mtlsauth` still exits 2 for usage errors.
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(args.handler(args))
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except OSError as exc:
        reason = exc.strerror or str(exc)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {reason}{where}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
