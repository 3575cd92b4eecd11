"""``serve --workers N``: N worker processes on one port, restarted when they die.

Each worker is a full ``mtlsauth serve`` process that binds with SO_REUSEPORT, so the kernel
spreads new connections over them; they share nothing but the store. The supervisor forwards
SIGTERM/SIGINT to every worker and waits for them to drain their in-flight requests. A worker
that exits on its own is restarted (with a growing pause if it keeps dying at once), unless its
very first start failed (exit 1 at once: a taken port) or its configuration is bad (exit 2).

Metrics: the workers share a fresh private directory (``PROMETHEUS_MULTIPROC_DIR``, mode 0700,
removed at the end) where each writes its values, so any worker's /metrics adds up all of them;
when a worker dies its per-process gauges are dropped (its counters stay counted).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Final

from prometheus_client import multiprocess

from mtlsauth.issuer.metrics import MULTIPROC_ENV

__all__ = ["WORKER_ENV", "Supervisor", "worker_command"]

log = logging.getLogger("mtlsauth.cli.supervisor")

#: Set in a worker's environment: bind with SO_REUSEPORT and stay a single process.
WORKER_ENV: Final = "MTLSAUTH_WORKER"
_QUICK_DEATH: Final = 2.0
#: A worker's FIRST start that ends with exit 1 within this long is a start-up failure (a taken
#: port, an unreadable key): restarting finds the same. Generous, since a loaded machine can
#: take several seconds to import and bind; a later crash of a started worker is restarted.
_FIRST_START_WINDOW: Final = 30.0
_USAGE_ERROR: Final = 2
_CANNOT_START: Final = 1
_MAX_BACKOFF: Final = 10.0


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = 0.0
    restart_at: float = 0.0
    #: Whether it was ever restarted: only a first start that fails stops the supervisor.
    restarted: bool = False


class Supervisor:
    def __init__(self, command: Sequence[str], workers: int, *, drain_timeout: float) -> None:
        self._command = list(command)
        self._workers = [_Worker(i) for i in range(workers)]
        self._drain_timeout = drain_timeout
        self._stopping = False
        self._status = 0
        self._metrics_dir = ""

    def _start(self, worker: _Worker) -> None:
        env = {**os.environ, WORKER_ENV: str(worker.index), MULTIPROC_ENV: self._metrics_dir}
        worker.proc = subprocess.Popen(self._command, env=env)  # noqa: S603 - our own command
        worker.started_at = time.monotonic()
        log.info("worker %d started (pid %d)", worker.index, worker.proc.pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        # Fresh each run: files of an earlier run would be added to this one's counts.
        self._metrics_dir = tempfile.mkdtemp(prefix="mtlsauth-metrics-")  # mode 0700
        try:
            return self._supervise()
        finally:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _supervise(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        for worker in self._workers:
            self._start(worker)
        while not self._stopping:
            now = time.monotonic()
            for worker in self._workers:
                proc = worker.proc
                if proc is not None and proc.returncode is None and proc.poll() == _USAGE_ERROR:
                    # Bad configuration: restarting cannot help.
                    log.error("worker %d refused to start (exit 2); stopping", worker.index)
                    self._stopping = True
                    self._status = _USAGE_ERROR
                    break
                if proc is not None and proc.poll() is not None:
                    quick = now - worker.started_at < _QUICK_DEATH
                    first_start = not worker.restarted and now - worker.started_at < (
                        _FIRST_START_WINDOW
                    )
                    if first_start and proc.returncode == _CANNOT_START:
                        # Its first start failed (a taken port, say): a restart finds the same.
                        log.error("worker %d could not start (exit 1); stopping", worker.index)
                        self._stopping = True
                        self._status = _CANNOT_START
                        break
                    worker.backoff = min(_MAX_BACKOFF, worker.backoff * 2 or 0.5) if quick else 0.0
                    worker.restart_at = now + worker.backoff
                    worker.restarted = True
                    multiprocess.mark_process_dead(proc.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
                    log.warning(
                        "worker %d (pid %d) exited with %s; restarting in %.1f s",
                        worker.index, proc.pid, proc.returncode, worker.backoff,
                    )  # fmt: skip
                    worker.proc = None
                if worker.proc is None and now >= worker.restart_at and not self._stopping:
                    self._start(worker)
            time.sleep(0.2)
        return self._stop()

    def _stop(self) -> int:
        log.info("stopping %d worker(s): draining in-flight requests", len(self._workers))
        running = [w.proc for w in self._workers if w.proc is not None and w.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._drain_timeout + 5
        status = self._status
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
                status = 1
        log.info("all workers stopped")
        return status


def worker_command(home: str, port: int | None) -> list[str]:
    command = [sys.executable, "-m", "mtlsauth", "serve", "--home", home]
    if port is not None:
        command += ["--port", str(port)]
    return command
