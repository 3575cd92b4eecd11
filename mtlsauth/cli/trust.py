"""``mtlsauth trust add|list|show|remove``: external trust anchors, straight in the store.

A running server rebuilds its TLS contexts with the new anchors within its reload interval,
no restart (the store's change marker; PostgreSQL also NOTIFYs). An anchor with
``--spiffe-bundle-url`` is fetched by the servers, never by this command; ``list`` and ``show``
report the bundle in force from the store (:func:`~mtlsauth.issuer.trust.bundles.bundle_status`).
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from cryptography.hazmat.primitives import serialization

from mtlsauth.cli.clients import with_store
from mtlsauth.cli.common import CLIError, add_home, emit, readable_file, settings_of, url
from mtlsauth.core.thumbprint import x5t_s256
from mtlsauth.issuer.store import Store
from mtlsauth.issuer.store.base import StoredBundle
from mtlsauth.issuer.trust.anchors import (
    MAX_STALE_DEFAULT,
    OCSP_MODES,
    TrustAnchor,
    TrustError,
)
from mtlsauth.issuer.trust.bundles import bundle_status

__all__ = ["add_parser", "describe"]


def describe(anchor: TrustAnchor, bundle: dict[str, Any] | None = None) -> dict[str, Any]:
    """An anchor as JSON for operators; ``bundle``: its SPIFFE bundle's state, if it has one
    (:func:`mtlsauth.issuer.trust.bundles.bundle_status`)."""

    def cert(c: Any) -> dict[str, str]:
        return {
            "subject": c.subject.rfc4514_string(),
            "x5t#S256": x5t_s256(c.public_bytes(serialization.Encoding.DER)),
            "not_after": c.not_valid_after_utc.isoformat(),
        }

    return {
        "name": anchor.name,
        "roots": [cert(c) for c in anchor.roots],
        "intermediates": [cert(c) for c in anchor.intermediates],
        **anchor.policy(),
        **({"spiffe_bundle": bundle} if bundle is not None else {}),
        "created_at": dt.datetime.fromtimestamp(anchor.created_at, dt.UTC).isoformat(
            timespec="seconds"
        ),
    }


def _described(args: argparse.Namespace) -> list[tuple[TrustAnchor, dict[str, Any]]]:
    """Every anchor with its JSON description, bundle state included (from the store)."""
    settings = settings_of(args)

    async def read(store: Store) -> tuple[list[TrustAnchor], dict[str, StoredBundle]]:
        return await store.list_trust_anchors(), await store.spiffe_bundles()

    anchors, stored = with_store(settings, read)
    minimum = settings.spiffe_bundle_min_refresh
    return [
        (
            a,
            describe(
                a,
                bundle_status(a, stored.get(a.name), minimum) if a.spiffe_bundle_url else None,
            ),
        )
        for a in anchors
    ]


def _add(args: argparse.Namespace) -> int:
    bundle = b""
    if args.ca is not None:
        try:
            bundle = readable_file("--ca", args.ca).read_bytes()
        except OSError as exc:
            raise CLIError(f"--ca: cannot read {args.ca}: {exc.strerror}", code=2) from exc
    try:
        anchor = TrustAnchor.create(
            name=args.name,
            bundle=bundle,
            crl_urls=args.crl_url,
            crl_from_cdp=args.crl_from_cdp,
            max_stale=args.max_stale,
            ocsp=args.ocsp,
            spiffe_trust_domains=args.spiffe_trust_domain,
            spiffe_bundle_url=args.spiffe_bundle_url,
        )
    except TrustError as exc:
        raise CLIError(str(exc), code=2) from exc
    with_store(settings_of(args), lambda store: store.add_trust_anchor(anchor))
    status = bundle_status(anchor, None, 0.0) if anchor.spiffe_bundle_url else None
    emit(args, describe(anchor, status))
    return 0


def _list(args: argparse.Namespace) -> int:
    described = _described(args)
    text = "\n".join(
        f"{a.name}\troots={len(a.roots)}\tintermediates={len(a.intermediates)}"
        + (f"\tbundle={a.spiffe_bundle_url}" if a.spiffe_bundle_url else "")
        for a, _ in described
    )
    emit(args, [d for _, d in described], text or "(no trust anchors)")
    return 0


def _show(args: argparse.Namespace) -> int:
    found = next((d for a, d in _described(args) if a.name == args.name), None)
    if found is None:
        raise CLIError(f"no trust anchor {args.name!r}")
    emit(args, found)
    return 0


async def _remove_unused(store: Store, name: str) -> bool:
    users = [c.client_id for c in await store.list_clients() if c.trust == name]
    if users:
        shown = ", ".join(repr(u) for u in users[:5])
        raise CLIError(f"trust anchor {name!r} is used by client(s) {shown}: remove them first")
    return await store.remove_trust_anchor(name)


def _remove(args: argparse.Namespace) -> int:
    if not with_store(settings_of(args), lambda store: _remove_unused(store, args.name)):
        raise CLIError(f"no trust anchor {args.name!r}")
    emit(args, {"name": args.name, "removed": True})
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("trust", help="external CAs whose certificates authenticate clients")
    commands = parser.add_subparsers(dest="trust_command", required=True, metavar="COMMAND")

    add = commands.add_parser(
        "add",
        help="register an external trust anchor",
        description="Register another CA for tls_client_auth clients (client add --trust NAME). "
        "--ca is a PEM bundle: the root CA certificate(s) and every intermediate CA below them "
        "that clients' certificates are issued by. Or a SPIFFE trust domain's bundle endpoint "
        "(--spiffe-bundle-url with one --spiffe-trust-domain), for X.509-SVIDs and JWT-SVIDs "
        "(client add --auth-method spiffe_jwt).",
    )
    add_home(add)
    add.add_argument("--name", required=True, help="the name clients refer to (--trust NAME)")
    add.add_argument(
        "--ca",
        metavar="FILE",
        help="PEM: roots and intermediates (with --spiffe-bundle-url: optional, the bootstrap "
        "bundle trusted until the first fetch)",
    )
    add.add_argument(
        "--crl-url",
        action="append",
        default=[],
        type=url,
        metavar="URL",
        help="http(s) URL of a CRL of this CA; repeatable",
    )
    add.add_argument(
        "--crl-from-cdp",
        action="store_true",
        help="also fetch the CRLs named in the certificates' CRL distribution points",
    )
    add.add_argument(
        "--max-stale",
        type=int,
        default=MAX_STALE_DEFAULT,
        metavar="SECONDS",
        help="how long past nextUpdate a CRL (or past its refresh interval a SPIFFE bundle) "
        f"that cannot be refreshed is still used (default {MAX_STALE_DEFAULT})",
    )
    add.add_argument(
        "--ocsp",
        choices=OCSP_MODES,
        default="off",
        help="ask the certificate's OCSP responder: prefer (fall back to the CRLs; with none, "
        "allow) or require (no answer: refuse); default off",
    )
    add.add_argument(
        "--spiffe-trust-domain",
        action="append",
        default=[],
        metavar="TD",
        help="a SPIFFE trust domain whose X.509-SVIDs this CA issues (client add --spiffe-id); "
        "repeatable",
    )
    add.add_argument(
        "--spiffe-bundle-url",
        type=url,
        metavar="URL",
        help="a SPIFFE bundle endpoint (https_web) of the one --spiffe-trust-domain: its X.509 "
        "authorities become this anchor's CAs and its JWT-SVID keys verify spiffe_jwt clients; "
        "refreshed in the background as its refresh hint says",
    )
    add.add_argument("--json", action="store_true")
    add.set_defaults(handler=_add)

    lst = commands.add_parser("list", help="list external trust anchors")
    add_home(lst)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=_list)

    for name, handler, text in (
        ("show", _show, "show one trust anchor"),
        ("remove", _remove, "remove a trust anchor (refused while clients use it)"),
    ):
        cmd = commands.add_parser(name, help=text)
        add_home(cmd)
        cmd.add_argument("name", metavar="NAME")
        cmd.add_argument("--json", action="store_true")
        cmd.set_defaults(handler=handler)
