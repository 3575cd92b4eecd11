"""Prometheus metrics of the token service, through ``prometheus_client``.

* ``mtlsauth_http_requests_total{endpoint,status}``
* ``mtlsauth_token_request_seconds{auth_method}`` — histogram of token request latency
* ``mtlsauth_auth_failures_total{reason}``
* ``mtlsauth_tokens_issued_total{auth_method,bound}``
* ``mtlsauth_build_info{version}`` — always 1
* ``mtlsauth_crl_next_update_timestamp_seconds{ca}`` — each loaded CRL's nextUpdate
* ``mtlsauth_client_certificate_expiry_timestamp_seconds{client_id}`` — the earliest notAfter
  among the unexpired certificates each registered client presented (one series per client
  that authenticated: an unauthenticated request cannot add a label value)
* the CA inventory's client certificates (expiring within 7 and 30 days, expiry and last
  renewal per subject): see :mod:`mtlsauth.issuer.est.inventory`
* ``process_*`` — CPU, memory, open files, start time

With ``serve --workers N`` every worker is its own process, so the supervisor gives them a
shared private ``PROMETHEUS_MULTIPROC_DIR``: each process writes its values to files there, and
whichever worker answers a scrape adds up every worker's files (``MultiProcessCollector``), so
a scrape counts every worker and a dead worker's counts are kept. Process metrics cannot be
collected across processes: each worker copies its own into ``pid``-labelled gauges
(``sample_process``), which the supervisor drops when the worker dies.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import os
from collections.abc import Collection, Iterable
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from mtlsauth import __version__
from mtlsauth.core.peer import PeerCertificate

__all__ = [
    "BUCKETS",
    "MULTIPROC_ENV",
    "Metrics",
    "WorkerFiles",
    "multiprocess_dir",
]

BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: prometheus_client reads this when it is imported: set it before a worker starts.
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
#: Certificates remembered per client for the expiry gauge (a fleet renews one at a time).
_CERTS_PER_CLIENT: Final = 16
#: ProcessCollector samples copied into gauges in multiprocess mode.
_PROCESS_GAUGES: Final = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
)

# ``*_created`` series exist only in single-process mode; one exposition for both modes.
disable_created_metrics()  # type: ignore[no-untyped-call]


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """The service's metrics; one per app. Hot-path methods are a dict lookup and an add."""

    def __init__(self) -> None:
        self._multiprocess = multiprocess_dir() is not None
        # Its own registry: several apps in one process (tests) do not share series. In
        # multiprocess mode the values live in files and a scrape reads them all.
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "mtlsauth_http_requests",
            "HTTP requests by endpoint and status.",
            ["endpoint", "status"],
            registry=registry,
        )
        self._latency = Histogram(
            "mtlsauth_token_request_seconds",
            "Token request latency by auth method.",
            ["auth_method"],
            buckets=BUCKETS,
            registry=registry,
        )
        self._failures = Counter(
            "mtlsauth_auth_failures",
            "Failed client authentications by reason.",
            ["reason"],
            registry=registry,
        )
        self._tokens = Counter(
            "mtlsauth_tokens_issued",
            "Access tokens issued.",
            ["auth_method", "bound"],
            registry=registry,
        )
        Gauge(
            "mtlsauth_build_info",
            "The running mtlsauth version (always 1).",
            ["version"],
            multiprocess_mode="max",
            registry=registry,
        ).labels(version=__version__).set(1)
        self._crl_next_update = Gauge(
            "mtlsauth_crl_next_update_timestamp_seconds",
            "The nextUpdate of each CA's loaded CRL (Unix time).",
            ["ca"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self._client_expiry = Gauge(
            "mtlsauth_client_certificate_expiry_timestamp_seconds",
            "The earliest notAfter among the unexpired certificates a client presented.",
            ["client_id"],
            multiprocess_mode="livemin",
            registry=registry,
        )
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._token_children: dict[tuple[str, bool], Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        # client_id → {thumbprint: notAfter}: a repeat certificate costs one lookup.
        self._seen: dict[str, dict[str, float]] = {}
        self._process: dict[str, Gauge] = {}
        if self._multiprocess:
            self._process = {
                name: Gauge(
                    name,
                    f"{name} of each worker process.",
                    multiprocess_mode="liveall",
                    registry=None,
                )
                for name in _PROCESS_GAUGES
            }
        else:
            ProcessCollector(registry=registry)

    # --- the hot path ----------------------------------------------------------------------

    # The labelled children are kept: ``labels()`` takes a lock and checks the values, about
    # half the cost of an update (same-run A/B: 3.7-7.9 µs vs 1.9-3.2 µs in multiprocess mode).
    # The label values are route names, status codes, auth methods and failure reasons: few.

    def request(self, endpoint: str, status: int) -> None:
        child = self._request_children.get((endpoint, status))
        if child is None:
            child = self._request_children[(endpoint, status)] = self._requests.labels(
                endpoint, str(status)
            )
        child.inc()

    def token_latency(self, auth_method: str, seconds: float) -> None:
        child = self._histograms.get(auth_method)
        if child is None:
            child = self._histograms[auth_method] = self._latency.labels(auth_method)
        child.observe(seconds)

    def auth_failure(self, reason: str) -> None:
        self._failures.labels(reason).inc()

    def token_issued(self, auth_method: str, *, bound: bool) -> None:
        child = self._token_children.get((auth_method, bound))
        if child is None:
            child = self._token_children[(auth_method, bound)] = self._tokens.labels(
                auth_method, "true" if bound else "false"
            )
        child.inc()

    def client_certificate(self, client_id: str, peer: PeerCertificate) -> None:
        """Note the certificate an authenticated client presented (its expiry gauge)."""
        seen = self._seen.get(client_id)
        if seen is not None and peer.thumbprint in seen:
            return
        try:
            not_after = peer.cert.not_valid_after_utc.timestamp()
        except ValueError:
            return
        seen = self._seen.setdefault(client_id, {})
        if len(seen) >= _CERTS_PER_CLIENT:
            del seen[min(seen, key=seen.__getitem__)]
        seen[peer.thumbprint] = not_after
        self._client_expiry.labels(client_id).set(min(seen.values()))

    # --- housekeeping ----------------------------------------------------------------------

    def forget_certificates(self, registered: Collection[str], now: float) -> None:
        """Drop expired certificates and removed clients from the expiry gauge."""
        for client_id in list(self._seen):
            seen = self._seen[client_id]
            for thumbprint in [t for t, at in seen.items() if at <= now]:
                del seen[thumbprint]
            if seen and client_id in registered:
                self._client_expiry.labels(client_id).set(min(seen.values()))
            else:
                del self._seen[client_id]
                self._client_expiry.remove(client_id)

    def crl_next_update(self, updates: Iterable[tuple[str, dt.datetime]]) -> None:
        for ca, next_update in updates:
            self._crl_next_update.labels(ca).set(next_update.timestamp())

    def sample_process(self) -> None:
        """Multiprocess mode: copy this process's CPU and memory into its gauges."""
        if not self._process:
            return
        for family in ProcessCollector(registry=None).collect():
            for sample in family.samples:
                gauge = self._process.get(sample.name)
                if gauge is not None:
                    gauge.set(sample.value)

    def render(self) -> bytes:
        """The text exposition (format 0.0.4) of every process's metrics."""
        if not self._multiprocess:
            return generate_latest(self.registry)
        self.sample_process()
        registry = CollectorRegistry()
        registry.register(WorkerFiles(multiprocess_dir() or ""))
        return generate_latest(registry)


class WorkerFiles(Collector):
    """``MultiProcessCollector`` without its empty-file failure: a process creates its file
    before sizing it, and a scrape that reads it in between raises ``struct.error``, losing
    every worker's metrics; a worker killed in that window leaves the empty file for good
    (prometheus/client_python#1199). An empty file has recorded nothing: it is skipped."""

    def __init__(self, path: str) -> None:
        self._path = path

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in glob.glob(os.path.join(self._path, "*.db")):
            with contextlib.suppress(FileNotFoundError):  # a dead worker's, just removed
                if os.path.getsize(path) > 0:
                    files.append(path)
        merged: Iterable[Metric] = multiprocess.MultiProcessCollector.merge(files)  # type: ignore[no-untyped-call]
        return merged
