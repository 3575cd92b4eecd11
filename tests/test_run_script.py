"""``scripts/run`` on a chosen port: the issuer, the metadata and the printed curl all follow it."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from aiohttp.test_utils import unused_port

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "scripts" / "run"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTLSAUTH_")}
    return {**env, "MTLSAUTH_HOST": "127.0.0.1", **extra}


def _printed_curl(stderr: str) -> str:
    """The curl command scripts/run printed, joined from its continuation lines."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("curl "))
    command = lines[start].strip()
    while command.endswith("\\"):
        start += 1
        command = command[:-1] + " " + lines[start].strip()
    return command


def _read_until_curl(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stderr is not None
    seen = ""
    while "/token" not in seen:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"scripts/run ended before printing the curl command: {seen}")
        seen += line
        assert time.monotonic() < deadline, seen
    return seen


def _metadata(port: int, cafile: Path, deadline: float) -> dict[str, object]:
    ctx = ssl.create_default_context(cafile=str(cafile))
    url = f"https://127.0.0.1:{port}/.well-known/oauth-authorization-server"
    while True:
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                data: dict[str, object] = json.load(resp)
                return data
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_run_on_a_chosen_port(tmp_path: Path) -> None:
    port, home = unused_port(), tmp_path / "dev home"
    proc = subprocess.Popen(
        ["bash", str(RUN), "--port", str(port)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env=_env(MTLSAUTH_HOME=str(home)),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        printed = _read_until_curl(proc, deadline)
        metadata = _metadata(port, home / "ca" / "ca.pem", deadline)
        assert metadata["issuer"] == f"https://localhost:{port}"
        assert metadata["token_endpoint"] == f"https://localhost:{port}/token"
        command = _printed_curl(printed)
        assert f"https://localhost:{port}/token" in command
        result = subprocess.run(
            ["bash", "-c", command + " --silent --show-error --fail"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        response = json.loads(result.stdout)
        assert response["token_type"] == "Bearer"
        assert response["scope"] == "demo.read demo.write"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0

    # The same home asked for another port (flag or environment): refused, naming both.
    other = unused_port()
    for args, extra in (([f"--port={other}"], {}), ([], {"MTLSAUTH_PORT": str(other)})):
        refused = subprocess.run(
            ["bash", str(RUN), *args], capture_output=True, text=True, timeout=60,
            env=_env(MTLSAUTH_HOME=str(home), **extra), check=False,
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        assert str(port) in refused.stderr
        assert str(other) in refused.stderr


def test_run_refuses_a_bad_port(tmp_path: Path) -> None:
    for value in ("0", "70000", "http"):
        result = subprocess.run(
            ["bash", str(RUN), "--port", value], capture_output=True, text=True, timeout=30,
            env=_env(MTLSAUTH_HOME=str(tmp_path / "h")), check=False,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert not (tmp_path / "h").exists()
