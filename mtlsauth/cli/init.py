"""``mtlsauth init``: a new home with a dev CA, a server certificate, a signing key, a database."""

from __future__ import annotations

import argparse
import secrets
import time
from urllib.parse import urlsplit

from mtlsauth.cli.common import CLIError, add_home, emit, home_of
from mtlsauth.cli.migrate import migrate_database, redact
from mtlsauth.issuer.keys import KeyRing, generate_signing_key
from mtlsauth.issuer.settings import CONFIG_FILE, ConfigError, load_settings
from mtlsauth.issuer.store import StoreError
from pki import write_private
from pki.authority import Authority, resolve_passphrase
from pki.ca import CAError
from pki.cli import CA_DIR

__all__ = ["add_parser"]


def _toml_value(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _run(args: argparse.Namespace) -> int:
    home = home_of(args)
    if home.exists() and any(home.iterdir()):
        raise CLIError(f"{home} exists and is not empty: refusing to overwrite an existing home")
    issuer = (args.issuer or f"https://localhost:{args.port}").rstrip("/")
    host = urlsplit(issuer).hostname
    if urlsplit(issuer).scheme != "https" or not host:
        raise CLIError(f"--issuer must be an https URL, got {issuer!r}", code=2)

    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    ca_dir = home / CA_DIR
    try:
        # CRLs are published by the token service itself, under the issuer URL.
        authority = Authority.init(
            ca_dir, passphrase=resolve_passphrase(ca_dir), crl_base_url=issuer
        )
        hostnames = list(dict.fromkeys(["localhost", "127.0.0.1", "::1", host]))
        authority.issue_server(hostnames=hostnames, out=home / "tls")
    except CAError as exc:
        raise CLIError(str(exc)) from exc
    key = generate_signing_key(home / "keys" / "signing.pem")
    # Publish the next key from the start, so the first rotation needs no waiting.
    KeyRing.load(home / "keys", home / "keys" / "signing.pem").ensure_next(time.time())
    write_private(home / "secret.key", secrets.token_hex(32).encode() + b"\n")

    config: dict[str, str | int] = {"issuer": issuer, "port": args.port}
    if args.mtls_port:
        config["mtls_port"] = args.mtls_port
    lines = ["# mtlsauth settings; every key can be overridden by MTLSAUTH_<KEY>."]
    lines += [f"{name} = {_toml_value(value)}" for name, value in config.items()]
    (home / CONFIG_FILE).write_text("\n".join(lines) + "\n")
    try:
        settings = load_settings(home)
    except ConfigError as exc:
        raise CLIError(str(exc), code=2) from exc

    try:
        migrate_database(settings.database_url)
    except StoreError as exc:
        raise CLIError(f"cannot create the database: {exc}") from exc
    emit(
        args,
        {
            "home": str(home),
            "issuer": settings.issuer,
            "port": settings.port,
            "mtls_port": settings.mtls_port,
            "ca_cert": str(authority.root_cert_path),
            "client_ca": str(settings.client_ca),
            "crl": str(authority.crl_path),
            "config": str(home / CONFIG_FILE),
            "database": redact(settings.database_url),
            "signing_kid": key.kid,
        },
    )
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "init",
        help="create a new home: dev CA, server certificate, signing key, database",
        description="Create a new mtlsauth home. Refuses to touch an existing, non-empty one.",
    )
    add_home(parser)
    parser.add_argument("--issuer", help="issuer URL (default https://localhost:PORT)")
    parser.add_argument("--port", type=int, default=8443, help="HTTPS port (default 8443)")
    parser.add_argument(
        "--mtls-port",
        type=int,
        help="also listen here, requiring a client certificate (RFC 8705 mtls_endpoint_aliases)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=_run)
