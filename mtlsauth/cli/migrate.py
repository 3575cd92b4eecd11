"""``mtlsauth migrate``: create or upgrade the database schema (PostgreSQL needs it before the
first ``serve``; SQLite also migrates itself when opened)."""

from __future__ import annotations

import argparse
import asyncio
from urllib.parse import urlsplit

from mtlsauth.cli.common import CLIError, add_home, emit, settings_of
from mtlsauth.issuer.settings import Secret
from mtlsauth.issuer.store import StoreError, open_store

__all__ = ["add_parser", "migrate_database"]


def redact(database_url: Secret[str]) -> str:
    """The URL without its password, for output and logs."""
    url = database_url.get()
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def migrate_database(database_url: Secret[str]) -> tuple[int, int]:
    async def run() -> tuple[int, int]:
        store = open_store(database_url.get())
        try:
            return await store.migrate()
        finally:
            await store.close()

    return asyncio.run(run())


def _run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    try:
        before, after = migrate_database(settings.database_url)
    except (StoreError, OSError) as exc:
        raise CLIError(f"migration failed: {exc}") from exc
    emit(
        args,
        {"database": redact(settings.database_url), "version_before": before, "version": after},
    )
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("migrate", help="create or upgrade the database schema",
                            description=__doc__)  # fmt: skip
    add_home(parser)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=_run)
