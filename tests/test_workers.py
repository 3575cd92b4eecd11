"""``serve --workers N``: one port, N processes, a dead worker is replaced, a clean stop."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import threading
import time
import urllib.request

from tests.conftest import Home, serve_process


def children(pid: int) -> set[int]:
    result = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return {int(p) for p in result.stdout.split()}


def test_workers_share_a_port_and_are_restarted(home: Home) -> None:
    ctx = ssl.create_default_context(cafile=str(home.ca_cert))
    url = f"https://127.0.0.1:{home.port}/health"
    outcomes: list[bool] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                    outcomes.append(resp.status == 200)
            except OSError:
                outcomes.append(False)

    with serve_process(home, "--workers", "2") as server:
        supervisor = server.proc.pid
        deadline = time.monotonic() + 15
        while len(children(supervisor)) < 2:
            assert time.monotonic() < deadline, "two workers did not start"
            time.sleep(0.1)
        workers = children(supervisor)
        thread = threading.Thread(target=load)
        thread.start()
        time.sleep(0.5)
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)  # a worker dies (PID of a process this test started)
        deadline = time.monotonic() + 10
        while True:
            now = children(supervisor)
            if len(now) == 2 and victim not in now:
                break
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        thread.join()
    assert server.proc.returncode == 0, server.stderr
    assert "exited with -9; restarting" in server.stderr
    assert len(outcomes) > 20
    # Only requests caught in flight on the killed worker may fail.
    assert outcomes.count(False) <= 3, outcomes.count(False)
    assert children(supervisor) == set()


def test_workers_flag_is_validated(home: Home) -> None:
    result = subprocess.run(
        ["python", "-m", "mtlsauth", "serve", "--home", str(home.path), "--workers", "0"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--workers must be from 1 to 256" in result.stderr
