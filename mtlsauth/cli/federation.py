"""``mtlsauth federation add|list|show|remove``: external token issuers whose JWTs may
authenticate clients (``client add --auth-method federated_jwt --federation NAME``).

Stored in the store like clients: a running server sees a change within its reload interval
(at once with PostgreSQL's NOTIFY), no restart.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
from typing import Any

from mtlsauth.cli.clients import with_store
from mtlsauth.cli.common import CLIError, add_home, emit, readable_file, settings_of, url
from mtlsauth.issuer.model import Federation
from mtlsauth.issuer.registration import RegistrationError
from mtlsauth.issuer.store import Store
from mtlsauth.issuer.trust.federation import (
    DiscoveryError,
    discover_jwks_uri,
    new_federation,
    outbound_context,
)

__all__ = ["add_parser", "describe_federation"]


def describe_federation(federation: Federation) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": federation.name,
        "issuer": federation.issuer,
        "audience": federation.audience,
        "created_at": dt.datetime.fromtimestamp(federation.created_at, dt.UTC).isoformat(
            timespec="seconds"
        ),
    }
    if federation.jwks_uri is not None:
        data["jwks_uri"] = federation.jwks_uri
    if federation.jwks is not None:
        data["jwks_kids"] = [k.get("kid") for k in federation.jwks.get("keys", [])]
    return data


def _add(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    try:
        federation = new_federation(
            name=args.name,
            issuer=args.issuer,
            jwks_uri=args.jwks_uri,
            jwks_file=readable_file("--jwks", args.jwks) if args.jwks else None,
            audience=args.audience,
        )
    except RegistrationError as exc:
        raise CLIError(str(exc), code=2) from exc
    if federation.jwks_uri is None and federation.jwks is None:
        try:
            jwks_uri = asyncio.run(
                discover_jwks_uri(
                    federation.issuer,
                    ssl_context=outbound_context(settings.jwks_uri_cafile),
                    policy=settings.jwks_uri_policy,
                    seconds=settings.jwks_uri_timeout,
                )
            )
        except DiscoveryError as exc:
            raise CLIError(
                f"discovery failed: {exc} (give --jwks-uri URL or --jwks FILE, or allow an "
                "internal address with the jwks_uri_allow_private setting)"
            ) from exc
        federation = dataclasses.replace(federation, jwks_uri=jwks_uri)
    with_store(settings, lambda store: store.add_federation(federation))
    emit(args, describe_federation(federation))
    return 0


async def _users(store: Store, name: str) -> list[str]:
    return [c.client_id for c in await store.list_clients() if c.federation == name]


async def _find(store: Store, name: str) -> tuple[Federation, list[str]]:
    found = next((f for f in await store.list_federations() if f.name == name), None)
    if found is None:
        raise CLIError(f"no federation {name!r}")
    return found, await _users(store, name)


def _list(args: argparse.Namespace) -> int:
    federations = with_store(settings_of(args), lambda store: store.list_federations())
    text = "\n".join(f"{f.name}\t{f.issuer}\taudience={f.audience or '-'}" for f in federations)
    emit(args, [describe_federation(f) for f in federations], text or "(no federations)")
    return 0


def _show(args: argparse.Namespace) -> int:
    federation, users = with_store(settings_of(args), lambda store: _find(store, args.name))
    emit(args, describe_federation(federation) | {"clients": users})
    return 0


async def _remove_federation(store: Store, name: str) -> list[str]:
    if not await store.remove_federation(name):
        raise CLIError(f"no federation {name!r}")
    return await _users(store, name)


def _remove(args: argparse.Namespace) -> int:
    users = with_store(settings_of(args), lambda store: _remove_federation(store, args.name))
    # Its clients stay registered and fail to authenticate until removed or re-federated.
    emit(args, {"name": args.name, "removed": True, "clients": users})
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "federation", help="external token issuers whose JWTs authenticate clients"
    )
    commands = parser.add_subparsers(dest="federation_command", required=True, metavar="COMMAND")

    add = commands.add_parser(
        "add",
        help="register an external token issuer",
        description="Register an external token issuer (a Kubernetes service-account issuer, "
        "a CI system's OIDC issuer). Its keys come from --jwks FILE, --jwks-uri URL, or, with "
        "neither, from its OpenID Connect discovery document, fetched now.",
    )
    add_home(add)
    add.add_argument("--name", required=True, help="the federation's name")
    add.add_argument(
        "--issuer", required=True, type=url, metavar="URL", help="the tokens' iss, exactly"
    )
    keys = add.add_mutually_exclusive_group()
    keys.add_argument(
        "--jwks-uri", type=url, metavar="URL", help="https URL of the issuer's JWK Set"
    )
    keys.add_argument("--jwks", metavar="FILE", help="the issuer's JWK Set (public keys)")
    add.add_argument(
        "--audience",
        metavar="AUD",
        help="the aud its tokens carry for this server (default: this server's issuer or "
        "token endpoint)",
    )
    add.add_argument("--json", action="store_true")
    add.set_defaults(handler=_add)

    lst = commands.add_parser("list", help="list federations")
    add_home(lst)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=_list)

    for name, handler, text in (
        ("show", _show, "show one federation and the clients it authenticates"),
        ("remove", _remove, "remove a federation (its clients stop authenticating)"),
    ):
        cmd = commands.add_parser(name, help=text)
        add_home(cmd)
        cmd.add_argument("name", metavar="NAME")
        cmd.add_argument("--json", action="store_true")
        cmd.set_defaults(handler=handler)
