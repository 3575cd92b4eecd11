"""``mtlsauth serve`` as a real process: ready, healthy, and a graceful stop on SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import Home, serve_process


def test_serve_until_sigterm(home: Home) -> None:
    with serve_process(home) as server:
        pass  # healthy; leaving the block sends SIGTERM
    assert server.proc.returncode == 0, server.stderr
    assert "stopped" in server.stderr
    assert "Traceback" not in server.stderr


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
    with serve_process(home, MTLSAUTH_LOG_FORMAT="json") as server:
        pass
    assert server.proc.returncode == 0
    records = [json.loads(line) for line in server.stderr.splitlines() if line.strip()]
    assert records
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["message"].startswith("listening on") for r in records)
