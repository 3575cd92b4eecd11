"""The CA toolkit's command line: ``python -m pki`` and ``mtlsauth pki`` share this parser.

Exit codes: 0 success, 1 the operation was refused (bad CSR, missing CA), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from mtlsauth.thumbprint import x5t_s256
from pki.ca import CA, KEY_TYPES, CAError, SubjectAltNames

__all__ = ["CA_DIR", "add_commands", "main"]

#: Where a home keeps its CA, relative to the home directory.
CA_DIR = "ca"


def _home(value: str | None) -> Path:
    home = value or os.environ.get("MTLSAUTH_HOME")
    if not home:
        raise CAError("no home directory: pass --home DIR or set MTLSAUTH_HOME")
    return Path(home).expanduser().resolve()


def _cmd_issue(args: argparse.Namespace) -> int:
    home = _home(args.home)
    ca = CA.load(home / CA_DIR)
    csr = None
    if args.csr:
        try:
            csr = x509.load_pem_x509_csr(Path(args.csr).read_bytes())
        except (OSError, ValueError) as exc:
            raise CAError(f"cannot read the CSR {args.csr}: {exc}") from exc
    issued = ca.issue_client(
        common_name=args.cn,
        sans=SubjectAltNames(
            dns=args.san_dns, uri=args.san_uri, ip=args.san_ip, email=args.san_email
        ),
        days=args.days,
        key_type=args.key_type,
        csr=csr,
    )
    out = Path(args.out) if args.out else home / "certs" / issued.serial_hex
    paths = issued.write_to_dir(out)
    result = {name: str(path) for name, path in paths.items()}
    result |= {"serial": issued.serial_hex, "x5t#S256": x5t_s256(issued.cert_der())}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, value in result.items():
            print(f"{name}: {value}")
    return 0


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Add the pki sub-commands to ``parser`` (used by ``python -m pki`` and ``mtlsauth pki``)."""
    sub = parser.add_subparsers(dest="pki_command", required=True, metavar="COMMAND")

    issue = sub.add_parser(
        "issue",
        help="issue a client certificate (EKU clientAuth) from the home's CA",
        description="Issue a client certificate. With --csr the client keeps its key: only the "
        "certificate and chain are written.",
    )
    issue.add_argument("--home", help="the mtlsauth home (env MTLSAUTH_HOME)")
    issue.add_argument("--cn", required=True, help="subject common name")
    issue.add_argument("--san-dns", action="append", default=[], metavar="NAME")
    issue.add_argument("--san-uri", action="append", default=[], metavar="URI")
    issue.add_argument("--san-ip", action="append", default=[], metavar="ADDRESS")
    issue.add_argument("--san-email", action="append", default=[], metavar="ADDRESS")
    issue.add_argument("--days", type=int, default=90, help="validity in days (default 90)")
    issue.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256")
    issue.add_argument("--out", help="directory for cert.pem, key.pem, chain.pem")
    issue.add_argument("--csr", help="PEM CSR to sign instead of generating a key")
    issue.add_argument("--json", action="store_true", help="print the result as JSON")
    issue.set_defaults(pki_handler=_cmd_issue)


def run(args: argparse.Namespace) -> int:
    """Run a parsed pki command; CA errors become exit 1 with the reason on stderr."""
    try:
        return int(args.pki_handler(args))
    except CAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pki", description=__doc__)
    add_commands(parser)
    return run(parser.parse_args(argv))
