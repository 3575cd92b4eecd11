"""Clients added or removed with the CLI reach a running server within 2 s, no restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.conftest import Home, Service, eventually, run_cli, running, self_signed


async def _gets_token(service: Service, **kwargs: object) -> bool:
    try:
        status, _ = await service.token(**kwargs)  # type: ignore[arg-type]
    except aiohttp.ClientError:
        return False
    return status == 200


async def test_tls_client_added_and_removed_while_running(home: Home) -> None:
    cert = home.issue("late", dns=["late"])
    async with running(home) as service:
        status, body = await service.token(cert, client_id="late")
        assert (status, body["error"]) == (401, "invalid_client")

        await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "late",
                               "--san-dns", "late")  # fmt: skip
        await eventually(lambda: _gets_token(service, cert=cert, client_id="late"), within=2.0)

        code, _, err = await asyncio.to_thread(
            run_cli, ["client", "remove", "late", "--home", str(home.path)]
        )
        assert code == 0, err

        async def refused() -> bool:
            status, body = await service.token(cert, client_id="late")
            return bool(status == 401 and body["error"] == "invalid_client")

        await eventually(refused, within=2.0)


async def test_self_signed_client_added_and_removed_while_running(
    home: Home, tmp_path: Path
) -> None:
    """The new certificate becomes a trust anchor of the handshake without a restart."""
    mine = self_signed(tmp_path / "mine", "mine")
    async with running(home) as service:
        assert not await _gets_token(service, cert=mine, client_id="ss")
        await home.aadd_client("--auth-method", "self_signed_tls_client_auth", "--client-id", "ss",
                               "--cert", str(mine.cert))  # fmt: skip
        await eventually(lambda: _gets_token(service, cert=mine, client_id="ss"), within=2.0)

        code, _, err = await asyncio.to_thread(
            run_cli, ["client", "remove", "ss", "--home", str(home.path)]
        )
        assert code == 0, err

        async def handshake_refused() -> bool:
            try:
                await service.token(mine, client_id="ss")
            except aiohttp.ClientError:
                return True
            return False

        await eventually(handshake_refused, within=2.0)
