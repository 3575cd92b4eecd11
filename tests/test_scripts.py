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
    for name in ("run", "test", "check", "demo"):
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / name), "--help"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, name
        assert result.stdout.strip(), name
