"""``mtlsauth keys list|rotate``: signing key phases and zero-downtime rotation.

``rotate`` makes the published ``next`` key active (resource servers have had it in the JWKS
since the previous rotation), retires the active one — still published until every token it
signed has expired — and publishes a new ``next``. A running server picks it up within its
reload interval.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any

from mtlsauth.cli.common import CLIError, add_home, emit, settings_of
from mtlsauth.issuer.http.app import KEY_RETIRE_MARGIN
from mtlsauth.issuer.keys import KeyEntry, KeyRing, SigningKeyError
from mtlsauth.issuer.settings import Settings

__all__ = ["add_parser"]


def _iso(ts: float | None) -> str | None:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds") if ts else None


def _describe(entry: KeyEntry, now: float, retire_after: float) -> dict[str, Any]:
    published_until = (entry.retired_at or 0) + retire_after if entry.state == "retired" else None
    return {
        "kid": entry.kid,
        "state": entry.state,
        "published": entry.state != "retired" or (published_until or 0) > now,
        "signs": entry.state == "active",
        "created_at": _iso(entry.created_at),
        "activated_at": _iso(entry.activated_at),
        "retired_at": _iso(entry.retired_at),
        "published_until": _iso(published_until),
    }


def _ring(settings: Settings) -> KeyRing:
    try:
        return KeyRing.load(settings.signing_key.parent, settings.signing_key)
    except (SigningKeyError, OSError) as exc:
        raise CLIError(f"cannot read the signing keys: {exc}") from exc


def _list(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    ring, now = _ring(settings), time.time()
    retire_after = settings.token_ttl + KEY_RETIRE_MARGIN
    rows = [_describe(e, now, retire_after) for e in ring.entries]
    text = "\n".join(
        f"{r['kid']}\t{r['state']}\t{'published' if r['published'] else '-'}" for r in rows
    )
    emit(args, rows, text)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    ring, now = _ring(settings), time.time()
    retire_after = settings.token_ttl + KEY_RETIRE_MARGIN
    active, upcoming = ring.rotate(now, retire_after)
    emit(
        args,
        {
            "active": active.kid,
            "next": upcoming.kid,
            "keys": [_describe(e, now, retire_after) for e in ring.entries],
        },
    )
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("keys", help="signing keys: list phases, rotate")
    commands = parser.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    for name, handler, text in (
        ("list", _list, "the signing keys and their phases (next, active, retired)"),
        ("rotate", _rotate, "next → active → retired, and publish a new next key"),
    ):
        cmd = commands.add_parser(name, help=text, description=__doc__)
        add_home(cmd)
        cmd.add_argument("--json", action="store_true")
        cmd.set_defaults(handler=handler)
