"""Every operator script answers --help with its usage lines, and nothing of its code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPTS = sorted(
    p.name for p in (Path(__file__).resolve().parent.parent / "scripts").iterdir()
    if not p.name.startswith("_")
)  # fmt: skip


def test_the_list_is_not_empty() -> None:
    assert {"run", "test", "check", "demo", "bench", "mint-client"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage_only(name: str, flag: str) -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / name
    result = subprocess.run(
        ["bash", str(script), flag], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines, name
    for line in lines:
        assert not line.startswith("#"), line
        assert "set -euo" not in line, line
        assert not line.startswith(("cd ", ". ", "if ", "usage()")), line
    assert result.stderr == ""
