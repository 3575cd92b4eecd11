"""``mtlsauth client add|list|show|remove``: the client registry, straight in the store.

A running server sees changes within its reload interval (0.5 s by default), no restart.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mtlsauth.cli.common import CLIError, add_home, emit, readable_file, settings_of, url
from mtlsauth.cli.migrate import redact
from mtlsauth.issuer.model import AUTH_METHODS, SECRET_METHODS, Client
from mtlsauth.issuer.registration import (
    MAX_SECRET_GRACE,
    RegistrationError,
    name_taken_by,
    new_secret,
    register,
    validate_grace,
)
from mtlsauth.issuer.settings import Settings
from mtlsauth.issuer.store import (
    ClientExistsError,
    FederationExistsError,
    Store,
    StoreError,
    TrustAnchorExistsError,
    open_store,
)
from mtlsauth.issuer.trust.spiffe import SpiffePattern

__all__ = ["add_parser", "describe", "with_store"]

T = TypeVar("T")
_NAME_FLAGS = ("subject_dn", "san_dns", "san_uri", "san_ip", "san_email")


def with_store(settings: Settings, fn: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        store = open_store(settings.database_url.get())
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (ClientExistsError, FederationExistsError, TrustAnchorExistsError) as exc:
        raise CLIError(str(exc)) from exc
    except StoreError as exc:
        raise CLIError(f"store error: {exc}") from exc
    except OSError as exc:
        # SQLite raises the OS's error for a database path that cannot be opened.
        raise CLIError(f"store error: cannot open {redact(settings.database_url)}: {exc}") from exc


def describe(client: Client) -> dict[str, Any]:
    """A client as JSON for operators; never a secret or its hash."""
    data: dict[str, Any] = {
        "client_id": client.client_id,
        "auth_method": client.auth_method,
        "bound_tokens": client.bound_tokens,
        "scope": " ".join(client.scopes),
        "audiences": list(client.audiences),
        "grant_types": list(client.grant_types),
    }
    if client.tls_name is not None:
        data[f"tls_client_auth_{client.tls_name.kind}"] = client.tls_name.value
    if client.certificates:
        data["certificates"] = [
            {"x5t#S256": c.thumbprint, "not_after": c.not_after.isoformat()}
            for c in client.certificates
        ]
    if client.secrets:
        now = time.time()
        data["secrets"] = [
            {
                "created_at": _iso(s.created_at),
                "expires_at": _iso(s.expires_at),
                "last_used_at": _iso(s.last_used_at),
                "active": s.is_active(now),
            }
            for s in client.secrets
        ]
    if client.jwks is not None:
        data["jwks_kids"] = [k.get("kid") for k in client.jwks.get("keys", [])]
    if client.jwks_uri is not None:
        data["jwks_uri"] = client.jwks_uri
    if client.federation is not None:
        data["federation"] = client.federation
        data["federated_subject"] = client.federated_subject
    if client.trust is not None:
        data["trust"] = client.trust
    if client.spiffe_id is not None:
        data["spiffe_id"] = client.spiffe_id
    return data


def _iso(ts: float | None) -> str | None:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds") if ts else None


def _rotate_secret(args: argparse.Namespace) -> int:
    # Before anything is written: an infinite grace would never expire the old secrets, and
    # one past what a timestamp can hold would crash after the store already changed.
    try:
        grace = validate_grace(args.grace)
    except RegistrationError as exc:
        raise CLIError(str(exc), code=2) from exc
    settings = settings_of(args)
    client = with_store(settings, lambda store: store.get_client(args.client_id))
    if client is None:
        raise CLIError(f"no client {args.client_id!r}")
    if client.auth_method not in SECRET_METHODS | {"client_secret_jwt"}:
        raise CLIError(f"client {args.client_id!r} uses {client.auth_method}: it has no secret")
    secret, entry = new_secret(client.auth_method, settings.secret_key.get(), client.client_id)
    with_store(settings, lambda store: store.rotate_secret(client.client_id, entry, grace))
    emit(
        args,
        {
            "client_id": client.client_id,
            "client_secret": secret,
            "previous_secrets_expire_at": _iso(time.time() + grace),
        },
    )
    return 0


def _add(args: argparse.Namespace) -> int:
    if args.auth_method is None and args.federation is None:
        raise CLIError("--auth-method is required (or --federation, for federated_jwt)", code=2)
    settings = settings_of(args)
    names = [(flag, value) for flag in _NAME_FLAGS for value in getattr(args, flag)]
    try:
        new = register(
            auth_method=args.auth_method or "federated_jwt",
            secret_key=settings.secret_key.get(),
            client_id=args.client_id,
            names=names,
            cert_files=[readable_file("--cert", p) for p in args.cert],
            jwks_file=readable_file("--jwks", args.jwks) if args.jwks else None,
            jwks_uri=args.jwks_uri,
            bound_tokens=args.bound_tokens,
            scope=args.scope,
            audiences=args.audience,
            federation=args.federation,
            federated_subject=args.federated_subject,
            trust=args.trust,
            spiffe_id=args.spiffe_id,
        )
    except RegistrationError as exc:
        raise CLIError(str(exc), code=2) from exc
    with_store(settings, lambda store: _add_unique(store, new.client))
    data = describe(new.client)
    if new.client_secret is not None:
        data["client_secret"] = new.client_secret
    emit(args, data)
    return 0


async def _add_unique(store: Store, client: Client) -> None:
    """Store ``client`` unless its certificate name matches another client's of the same CA,
    its federation does not exist, or it names a trust anchor that is not registered (refused,
    1)."""
    if client.federation is not None and client.federation not in {
        f.name for f in await store.list_federations()
    }:
        raise CLIError(
            f"no federation {client.federation!r}: add it first with 'mtlsauth federation add'"
        )
    if client.trust is not None:
        anchor = next((a for a in await store.list_trust_anchors() if a.name == client.trust), None)
        if anchor is None:
            raise CLIError(f"--trust: no trust anchor {client.trust!r} (see 'mtlsauth trust list')")
        if client.spiffe_id is not None:
            domain = SpiffePattern.parse(client.spiffe_id).base.trust_domain
            if domain not in anchor.spiffe_trust_domains:
                raise CLIError(
                    f"--spiffe-id: trust anchor {anchor.name!r} is not registered for the trust "
                    f"domain {domain!r} (trust add --spiffe-trust-domain)"
                )
        if client.auth_method == "spiffe_jwt" and anchor.spiffe_bundle_url is None:
            raise CLIError(
                f"--trust: trust anchor {anchor.name!r} has no SPIFFE bundle endpoint, so no "
                "JWT-SVID keys (trust add --spiffe-bundle-url)"
            )
    if client.tls_name is not None:
        # Under different anchors the same name is two tenants' clients: a certificate can
        # only chain to one of them, so it can never authenticate as both.
        peers = [c for c in await store.list_clients() if c.trust == client.trust]
        other = name_taken_by(client.tls_name, peers)
        if other is not None and other.tls_name is not None:
            flag = "--" + client.tls_name.kind.replace("_", "-")
            raise CLIError(
                f"{flag} matches the name client {other.client_id!r} is registered with "
                f"({other.tls_name.value!r}) under certificate-name matching (case, spaces and "
                "Unicode folded): a certificate would authenticate as both; pick a distinct name"
            )
    await store.add_client(client)


def _list(args: argparse.Namespace) -> int:
    clients = with_store(settings_of(args), lambda store: store.list_clients())
    rows = [describe(c) for c in clients]
    text = "\n".join(
        f"{c.client_id}\t{c.auth_method}\tbound={'yes' if c.bound_tokens else 'no'}\t"
        f"scope={' '.join(c.scopes) or '-'}"
        for c in clients
    )
    emit(args, rows, text or "(no clients)")
    return 0


def _show(args: argparse.Namespace) -> int:
    client = with_store(settings_of(args), lambda store: store.get_client(args.client_id))
    if client is None:
        raise CLIError(f"no client {args.client_id!r}")
    emit(args, describe(client))
    return 0


def _remove(args: argparse.Namespace) -> int:
    settings = settings_of(args)

    async def remove(store: Store) -> bool:
        if not await store.remove_client(args.client_id):
            return False
        # Its tokens stay valid at resource servers until they expire unless they are told
        # (GET /revoked): the entry lasts as long as the longest-lived of them.
        await store.revoke_client(args.client_id, time.time() + settings.token_ttl + 60)
        return True

    removed = with_store(settings, remove)
    if not removed:
        raise CLIError(f"no client {args.client_id!r}")
    emit(args, {"client_id": args.client_id, "removed": True})
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("client", help="register, list, show and remove clients")
    commands = parser.add_subparsers(dest="client_command", required=True, metavar="COMMAND")

    add = commands.add_parser(
        "add",
        help="register a client",
        description="Register a client. tls_client_auth needs exactly one certificate name "
        "(or, with --trust, --spiffe-id); "
        "self_signed_tls_client_auth needs --cert or --jwks. Secrets are shown once.",
    )
    add_home(add)
    add.add_argument(
        "--auth-method",
        choices=AUTH_METHODS,
        help="required, except with --federation (federated_jwt is implied)",
    )
    add.add_argument("--client-id", help="the client_id (default: random)")
    add.add_argument(
        "--subject-dn",
        action="append",
        default=[],
        metavar="DN",
        help="RFC 4514 subject DN (tls_client_auth)",
    )
    add.add_argument("--san-dns", action="append", default=[], metavar="NAME")
    add.add_argument("--san-uri", action="append", default=[], metavar="URI")
    add.add_argument("--san-ip", action="append", default=[], metavar="ADDRESS")
    add.add_argument("--san-email", action="append", default=[], metavar="ADDRESS")
    add.add_argument(
        "--cert",
        action="append",
        default=[],
        metavar="PEM",
        help="a certificate to register (self_signed_tls_client_auth); repeatable",
    )
    add.add_argument(
        "--jwks",
        metavar="FILE",
        help="JWK Set: public keys (private_key_jwt) or keys with x5c (self-signed)",
    )
    add.add_argument(
        "--jwks-uri", type=url, metavar="URL", help="https URL of the keys (private_key_jwt)"
    )
    add.add_argument(
        "--federation",
        metavar="NAME",
        help="the federation whose tokens authenticate the client (federated_jwt)",
    )
    add.add_argument(
        "--federated-subject",
        metavar="SUB",
        help="the sub of those tokens, e.g. system:serviceaccount:NS:NAME (federated_jwt)",
    )
    add.add_argument(
        "--bound-tokens",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bind tokens to the TLS certificate (default: on for mTLS methods)",
    )
    add.add_argument("--scope", default="", help='allowed (and default) scopes, "a b"')
    add.add_argument(
        "--audience",
        action="append",
        default=[],
        metavar="URI",
        help="allowed audience / resource (RFC 8707); repeatable",
    )
    add.add_argument(
        "--trust",
        metavar="NAME",
        help="tls_client_auth, spiffe_x509: the certificate must chain to this external trust "
        "anchor ('mtlsauth trust add'), not the home's client CA; spiffe_jwt: the anchor whose "
        "SPIFFE bundle holds the JWT-SVID keys",
    )
    add.add_argument(
        "--spiffe-id",
        metavar="ID",
        help="spiffe_x509 (or tls_client_auth) with --trust: the X.509-SVID's SPIFFE ID "
        "(spiffe_jwt: the JWT-SVID's sub), spiffe://TD/path (exact) or spiffe://TD/path/* (any "
        "ID below the path)",
    )
    add.add_argument("--json", action="store_true")
    add.set_defaults(handler=_add)

    lst = commands.add_parser("list", help="list clients")
    add_home(lst)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=_list)

    rotate = commands.add_parser(
        "rotate-secret",
        help="add a new secret; the old ones keep working for --grace seconds",
        description="Zero-downtime secret rotation: prints the new secret (once); the current "
        "secrets stay valid for --grace seconds so services can switch over.",
    )
    add_home(rotate)
    rotate.add_argument("client_id", metavar="ID")
    rotate.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                        help="seconds the old secrets stay valid, 0 to "
                             f"{MAX_SECRET_GRACE} (30 days; default 3600)")  # fmt: skip
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(handler=_rotate_secret)

    for name, handler, text in (
        ("show", _show, "show one client"),
        ("remove", _remove, "remove a client"),
    ):
        cmd = commands.add_parser(name, help=text)
        add_home(cmd)
        cmd.add_argument("client_id", metavar="ID")
        cmd.add_argument("--json", action="store_true")
        cmd.set_defaults(handler=handler)
