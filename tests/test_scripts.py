"""The operator-facing scripts, run as a person would."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_round_trip() -> None:
    """mint cert → token → API 200 → same token with another certificate → 401."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTLSAUTH_")}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo")],
        capture_output=True, text=True, timeout=180, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HTTP 200" in result.stdout
    assert "HTTP 401" in result.stdout
    assert '"error":"invalid_token"' in result.stdout


def test_scripts_have_help() -> None:
    for name in ("run", "test", "check", "demo", "mint-client", "rotate-client-cert",
                 "revoke-client"):  # fmt: skip
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / name), "--help"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, name
        assert result.stdout.strip(), name


def _script(name: str, *args: str, home: Path) -> dict[str, object]:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("MTLSAUTH_")}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / name), *args, "--home", str(home)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


async def test_operator_lifecycle(tmp_path: Path) -> None:
    """mint-client → rotate-client-cert --revoke-old → revoke-client, against a live server."""
    import asyncio
    import json
    import ssl

    import aiohttp

    from pki import Authority
    from tests.conftest import make_home, running

    home = await asyncio.to_thread(make_home, tmp_path)
    minted = await asyncio.to_thread(
        _script, "mint-client", "--cn", "billing", "--san-uri",
        "spiffe://example.org/sa/billing", "--client-id", "billing", "--scope", "invoices.read",
        "--out", str(tmp_path / "v1"), home=home.path,
    )  # fmt: skip
    assert minted["client_id"] == "billing"

    async def token(cert_dir: Path) -> int | None:
        ctx = ssl.create_default_context(cafile=str(home.ca_cert))
        ctx.load_cert_chain(cert_dir / "chain.pem", cert_dir / "key.pem")
        form = {"grant_type": "client_credentials", "client_id": "billing"}
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{service.url}/token", data=form, ssl=ctx) as resp,
            ):
                return resp.status
        except aiohttp.ClientError:
            return None  # refused in the handshake

    async def eventually_refused(cert_dir: Path) -> None:
        # A revoked certificate's connection is answered 401 invalid_client (decision D10).
        for _ in range(50):
            if await token(cert_dir) == 401:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{cert_dir} still accepted after 5 s")

    async with running(home) as service:
        assert await token(tmp_path / "v1") == 200
        rotated = await asyncio.to_thread(
            _script, "rotate-client-cert", "--serial", str(minted["serial"]), "--out",
            str(tmp_path / "v2"), "--revoke-old", home=home.path,
        )  # fmt: skip
        assert (tmp_path / "v2" / "key.pem").read_bytes() != (
            tmp_path / "v1" / "key.pem"
        ).read_bytes()
        assert await token(tmp_path / "v2") == 200
        await eventually_refused(tmp_path / "v1")
        await asyncio.to_thread(
            _script, "revoke-client", "--serial", str(rotated["serial"]), "--reason",
            "key_compromise", "--remove-client", "billing", home=home.path,
        )  # fmt: skip
        await eventually_refused(tmp_path / "v2")

    authority = Authority(home.path / "ca")
    records = {r.serial: r for r in authority.inventory.query(profile="client")}
    assert records[str(minted["serial"])].status == "revoked"
    assert records[str(minted["serial"])].reason == "superseded"
    assert records[str(rotated["serial"])].status == "revoked"
    assert records[str(rotated["serial"])].reason == "key_compromise"
    assert records[str(rotated["serial"])].renewed_from == minted["serial"]
    assert records[str(minted["serial"])].sans == ["URI:spiffe://example.org/sa/billing"]
    events = [(e["event"], e.get("serial")) for e in authority.audit.entries()]
    assert events[-6:] == [
        ("cert.issue", minted["serial"]),
        ("cert.renew", rotated["serial"]),
        ("cert.revoke", minted["serial"]),
        ("crl.generate", None),
        ("cert.revoke", rotated["serial"]),
        ("crl.generate", None),
    ]
    assert json.dumps(events)  # the audit log is plain JSON lines
