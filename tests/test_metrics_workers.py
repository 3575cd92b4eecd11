"""/metrics with ``serve --workers 2``: every scrape counts every worker (prometheus_client's
multiprocess mode), whichever worker answers, and a dead worker's counts are kept; plus the
build, process, CRL and certificate-expiry gauges."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
import urllib.request
from pathlib import Path

from aiohttp.test_utils import unused_port
from prometheus_client import CollectorRegistry
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from mtlsauth import __version__
from mtlsauth.issuer.metrics import WorkerFiles
from pki.ca import SubjectAltNames
from tests.conftest import ClientCert, Home, client_context, serve_process
from tests.test_workers import children

TOKENS = 12


def scrape(port: int) -> list[Sample]:
    # A fresh connection per scrape: SO_REUSEPORT hands each to either worker.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def fetch_token(home: Home, cert: ClientCert) -> None:
    request = urllib.request.Request(
        f"https://127.0.0.1:{home.port}/token",
        data=b"grant_type=client_credentials&client_id=svc",
        method="POST",
    )
    with urllib.request.urlopen(  # noqa: S310 - a fixed https URL
        request, context=client_context(home, cert), timeout=5
    ) as resp:
        assert resp.status == 200
        assert json.loads(resp.read())["token_type"] == "Bearer"


def metrics_dir_of(pid: int) -> Path:
    """The PROMETHEUS_MULTIPROC_DIR a worker (a process this test's server started) was given;
    until the worker has exec'd, /proc shows the supervisor's environment: wait for it."""
    deadline = time.monotonic() + 10
    while True:
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode()
        env = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
        if "PROMETHEUS_MULTIPROC_DIR" in env:
            return Path(env["PROMETHEUS_MULTIPROC_DIR"])
        assert time.monotonic() < deadline, "the worker has no PROMETHEUS_MULTIPROC_DIR"
        time.sleep(0.05)


def wait_for_workers(supervisor: int, count: int) -> set[int]:
    deadline = time.monotonic() + 20
    while len(pids := children(supervisor)) < count:
        assert time.monotonic() < deadline, f"{count} workers did not start"
        time.sleep(0.1)
    return pids


def test_each_scrape_counts_every_worker(home: Home, tmp_path: Path) -> None:
    cert = home.issue("svc", dns=["svc"])
    # Expires within a week: the CA inventory gauge counts it in both windows.
    home.authority.issue_client(
        common_name="soon", sans=SubjectAltNames(dns=["soon"]), days=5, out=tmp_path / "soon"
    )
    home.add_client(
        "--auth-method", "tls_client_auth", "--client-id", "svc", "--san-dns", "svc",
        "--bound-tokens",
    )  # fmt: skip
    metrics_port = unused_port()
    with serve_process(
        home, "--workers", "2",
        MTLSAUTH_METRICS_PORT=str(metrics_port), MTLSAUTH_RELOAD_INTERVAL="0.2",
    ) as server:  # fmt: skip
        workers = wait_for_workers(server.proc.pid, 2)
        metrics_dir = metrics_dir_of(min(workers))
        assert metrics_dir.is_dir()
        assert stat.S_IMODE(metrics_dir.stat().st_mode) == 0o700  # private to the service
        assert metrics_dir_of(max(workers)) == metrics_dir
        for _ in range(TOKENS):
            fetch_token(home, cert)
        for _ in range(8):
            samples = scrape(metrics_port)
            issued = value(
                samples, "mtlsauth_tokens_issued_total", auth_method="tls_client_auth", bound="true"
            )
            assert issued == TOKENS
            count = value(
                samples, "mtlsauth_token_request_seconds_count", auth_method="tls_client_auth"
            )
            assert count == TOKENS
            assert value(samples, "mtlsauth_build_info", version=__version__) == 1
            pids = {s.labels["pid"] for s in samples if s.name == "process_resident_memory_bytes"}
            assert pids <= {str(p) for p in workers}
            assert pids, "no process metrics"

        # The gauges filled in by the workers' housekeeping.
        deadline = time.monotonic() + 10
        while True:
            samples = scrape(metrics_port)
            expiry = value(samples, "mtlsauth_client_certificate_expiry_timestamp_seconds")
            crl = [s for s in samples if s.name == "mtlsauth_crl_next_update_timestamp_seconds"]
            soon = value(samples, "mtlsauth_ca_client_certs_expiring", within="7d")
            if expiry is not None and crl and soon is not None:
                break
            assert time.monotonic() < deadline, "the gauges were not published"
            time.sleep(0.2)
        assert value(
            samples, "mtlsauth_client_certificate_expiry_timestamp_seconds", client_id="svc"
        ) == int(home.authority.inventory.query(subject_contains="svc")[0].expires.timestamp())
        assert all(s.value > time.time() for s in crl)
        assert soon == 1
        assert value(samples, "mtlsauth_ca_client_certs_expiring", within="30d") == 1

        # A worker dies: its counts stay in every scrape, its process gauges go.
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)  # a worker this test's server started, by PID
        deadline = time.monotonic() + 20
        while victim in children(server.proc.pid) or len(children(server.proc.pid)) < 2:
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.1)
        fetch_token(home, cert)
        for _ in range(6):
            samples = scrape(metrics_port)
            issued = value(
                samples, "mtlsauth_tokens_issued_total", auth_method="tls_client_auth", bound="true"
            )
            assert issued == TOKENS + 1
            pids = {s.labels["pid"] for s in samples if s.name == "process_resident_memory_bytes"}
            assert str(victim) not in pids
    assert server.proc.returncode == 0, server.stderr
    assert not metrics_dir.exists(), "the supervisor leaves no metrics files behind"


def test_an_empty_worker_file_does_not_break_the_scrape(tmp_path: Path) -> None:
    """A worker creates its file before sizing it; one killed in between leaves it empty for
    good (prometheus/client_python#1199). Every other worker's counts are still read."""
    written = MmapedDict(str(tmp_path / "counter_101.db"))  # type: ignore[no-untyped-call]
    key = mmap_key(
        "mtlsauth_tokens_issued",
        "mtlsauth_tokens_issued_total",
        ["auth_method", "bound"],
        ["tls_client_auth", "true"],
        "Access tokens issued.",
    )
    written.write_value(key, 7.0, 0.0)  # type: ignore[no-untyped-call]
    written.close()  # type: ignore[no-untyped-call]
    (tmp_path / "counter_102.db").write_bytes(b"")
    registry = CollectorRegistry()
    registry.register(WorkerFiles(str(tmp_path)))
    samples = [s for family in registry.collect() for s in family.samples]
    assert value(samples, "mtlsauth_tokens_issued_total", auth_method="tls_client_auth") == 7
