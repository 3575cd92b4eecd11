"""``mtlsauth init``: a new home with a dev CA, a server certificate, a signing key, a database."""

from __future__ import annotations

import argparse
import secrets
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

from mtlsauth.cli.common import (
    EXIT_USAGE,
    CLIError,
    add_home,
    emit,
    home_of,
    port_number,
    url,
    warn,
)
from mtlsauth.cli.migrate import migrate_database, redact
from mtlsauth.issuer.keys import KeyRing, generate_signing_key
from mtlsauth.issuer.settings import CONFIG_FILE, ConfigError, load_settings
from mtlsauth.issuer.store import StoreError
from pki import write_private
from pki.authority import PASSPHRASE_FILE, Authority, resolve_passphrase
from pki.ca import CAError
from pki.cli import CA_DIR

__all__ = ["add_parser"]


def _toml_value(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_home(home: Path) -> bool:
    """Refuse a home that is not a new, empty directory; True when it exists already."""
    if not home.exists():
        return False
    if not home.is_dir():
        raise CLIError(f"--home {home} exists and is not a directory", EXIT_USAGE)
    try:
        empty = not any(home.iterdir())
    except OSError as exc:
        raise CLIError(f"cannot read {home}: {exc.strerror or exc}") from exc
    if not empty:
        raise CLIError(f"{home} exists and is not empty: refusing to overwrite an existing home")
    return True


def _run(args: argparse.Namespace) -> int:
    home = home_of(args)
    issuer = (args.issuer or f"https://localhost:{args.port}").rstrip("/")
    host = urlsplit(issuer).hostname
    if urlsplit(issuer).scheme != "https" or not host:
        raise CLIError(f"--issuer must be an https URL, got {issuer!r}", EXIT_USAGE)
    if args.mtls_port == args.port:
        raise CLIError(f"--mtls-port must differ from --port ({args.port})", EXIT_USAGE)
    existed = _check_home(home)
    try:
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o700)
    except OSError as exc:
        raise CLIError(f"cannot create the home {home}: {exc.strerror or exc}") from exc
    try:
        return _create(args, home, issuer, host)
    except BaseException:
        # A half-made home would make the next `init` refuse ("not empty"): take back what
        # this run created, and nothing else (the directory was new or empty).
        _undo(home, existed)
        raise


def _undo(home: Path, existed: bool) -> None:
    if not existed:
        shutil.rmtree(home, ignore_errors=True)
        return
    for child in home.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _create(args: argparse.Namespace, home: Path, issuer: str, host: str) -> int:
    ca_dir = home / CA_DIR
    try:
        passphrase = resolve_passphrase(ca_dir)
        # CRLs are published by the token service itself, under the issuer URL.
        authority = Authority.init(ca_dir, passphrase=passphrase, crl_base_url=issuer)
        hostnames = list(dict.fromkeys(["localhost", "127.0.0.1", "::1", host]))
        authority.issue_server(hostnames=hostnames, out=home / "tls")
    except CAError as exc:
        raise CLIError(str(exc)) from exc
    # Without a supplied passphrase the CA made one and keeps it next to its keys.
    passphrase_file = ca_dir / PASSPHRASE_FILE if passphrase is None else None
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
        raise CLIError(str(exc), EXIT_USAGE) from exc

    try:
        migrate_database(settings.database_url)
    except (StoreError, OSError) as exc:
        raise CLIError(f"cannot create the database: {exc}") from exc
    if passphrase_file is not None:
        warn(
            f"the CA keys are encrypted with a generated passphrase in {passphrase_file}; "
            "fine for development, move it off this machine for production"
        )
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
            "ca_passphrase_file": str(passphrase_file) if passphrase_file else None,
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
    parser.add_argument("--issuer", type=url, help="issuer URL (default https://localhost:PORT)")
    parser.add_argument("--port", type=port_number, default=8443, help="HTTPS port (default 8443)")
    parser.add_argument(
        "--mtls-port",
        type=port_number,
        help="also listen here, requiring a client certificate (RFC 8705 mtls_endpoint_aliases)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=_run)
