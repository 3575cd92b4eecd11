"""``mtlsauth serve`` as a real process: ready, healthy, and a graceful stop on SIGTERM."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import Home


def _health(url: str, ca: Path) -> int | None:
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=1) as resp:  # noqa: S310
            return int(resp.status)
    except OSError:
        return None


def test_serve_until_sigterm(home: Home) -> None:
    env = {"MTLSAUTH_HOST": "127.0.0.1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtlsauth", "serve", "--home", str(home.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = f"https://127.0.0.1:{home.port}/health"
        deadline = time.monotonic() + 15
        while _health(url, home.ca_cert) != 200:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the server did not become healthy"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in err
    assert "Traceback" not in err


def test_serve_reports_bad_config(home: Home) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mtlsauth", "serve", "--home", str(home.path)],
        capture_output=True,
        text=True,
        env={"MTLSAUTH_PORT": "99999", "PATH": "/usr/bin:/bin"},
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "'port'" in proc.stderr
    assert "1 to 65535" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_json_logs(home: Home) -> None:
    import json

    env = {"MTLSAUTH_HOST": "127.0.0.1", "MTLSAUTH_LOG_FORMAT": "json", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtlsauth", "serve", "--home", str(home.path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 15
        while _health(f"https://127.0.0.1:{home.port}/health", home.ca_cert) != 200:
            assert proc.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert records
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["message"].startswith("listening on") for r in records)
