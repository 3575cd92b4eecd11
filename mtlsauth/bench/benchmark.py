"""``scripts/bench``: how fast mtlsauth issues and checks tokens, measured, never asserted.

The service runs in its own process pinned to one core; the load comes from this process pinned
to another, over N keep-alive TLS connections (or a new connection per request) for a fixed
time. Reported per scenario: tokens/s, latency p50/p90/p99, errors, and the server's CPU time
per token (from /proc). Each scenario's time is split into rounds taken in turn across all
scenarios, so that the machine's drift hits every row alike; the ratios the targets are stated
in are shown over all rounds and round by round. The resource-server checks are measured
in-process on one core: first use (signature and claims) and repeated use (the verified-token
cache).

Floors measured in the same run (rows marked "reference:"): an aiohttp handler returning a
fixed token-sized response (the framework alone, over keep-alive and over new connections), a
bare TLS server answering a fixed 200 (the mTLS handshake alone), and P-256 verification and
ES256 signing through cryptography.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import importlib.util
import json
import os
import platform
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from multidict import CIMultiDict, CIMultiDictProxy

from mtlsauth.bench.peer import CLIENT_ID as PEER_CLIENT_ID
from mtlsauth.bench.peer import Peer, PeerError
from mtlsauth.core.access_token import ALGORITHM
from mtlsauth.core.errors import JSON_NO_STORE
from mtlsauth.core.peer import ProxyConfig, parse_networks
from mtlsauth.core.thumbprint import x5t_s256
from mtlsauth.issuer.keys import KeyRing
from mtlsauth.issuer.settings import load_settings
from mtlsauth.issuer.tls.contexts import ServerTLSConfig, build_server_context
from mtlsauth.issuer.tokens import TokenSigner
from mtlsauth.resource import TokenVerifier, VerifierConfig
from mtlsauth.resource.gate import Gate
from pki import CA

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is optional
    uvloop = None  # type: ignore[assignment]

__all__ = ["BareResponder", "fixed_app", "main"]

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    scenario: str
    connections: int
    seconds: float
    requests: int
    errors: int
    tokens_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    server_cpu_s: float
    cpu_us_per_token: float


def _cpu_seconds(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(len(values) * share))] * 1000


class _KeepAlive(asyncio.Protocol):
    """One keep-alive connection sending the same request back to back."""

    def __init__(
        self, request: bytes, sink: list[float], errors: list[int], *, one_shot: bool = False
    ):
        self.request = request
        # One request and close (new connection per request), or back to back from start().
        self.one_shot = one_shot
        self.deadline = 0.0
        self.sink = sink
        self.errors = errors
        self.buffer = b""
        self.sent_at = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        if self.one_shot:
            self._send()

    def start(self, deadline: float) -> None:
        self.deadline = deadline
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            status = int(head[9:12])
            self.buffer = self.buffer[end:]
            now = time.perf_counter()
            if status == 200:
                self.sink.append(now - self.sent_at)
            else:
                self.errors.append(status)
            if now >= self.deadline:
                assert self.transport is not None
                self.transport.close()
                return
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _request(path: str, body: str, headers: dict[str, str], *, close: bool = False) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: localhost",
             "Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


async def _keep_alive_load(
    port: int,
    ctx: ssl.SSLContext,
    request: bytes,
    connections: int,
    seconds: float,
    *,
    on_start: Callable[[], None] = lambda: None,
) -> tuple[list[float], list[int]]:
    """Open every connection first (handshakes are not part of the keep-alive figure), then
    call ``on_start`` and send back to back for ``seconds``."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors: list[int] = []
    protocols = []
    for _ in range(connections):
        _, proto = await loop.create_connection(
            lambda: _KeepAlive(request, latencies, errors),
            "127.0.0.1",
            port,
            ssl=ctx,
            server_hostname="localhost",
        )
        protocols.append(proto)
    on_start()
    deadline = time.perf_counter() + seconds
    for proto in protocols:
        proto.start(deadline)
    await asyncio.gather(*(p.done for p in protocols))
    return latencies, errors


async def _new_connection_load(
    port: int, ctx: ssl.SSLContext, request: bytes, connections: int, seconds: float
) -> tuple[list[float], list[int]]:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors: list[int] = []
    deadline = time.perf_counter() + seconds

    async def one_client() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            sink: list[float] = []
            try:
                _, proto = await loop.create_connection(
                    lambda sink=sink: _KeepAlive(request, sink, errors, one_shot=True),  # type: ignore[misc]
                    "127.0.0.1",
                    port,
                    ssl=ctx,
                    server_hostname="localhost",
                )
                await proto.done
            except OSError:
                errors.append(0)
                continue
            if sink:
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(one_client() for _ in range(connections)))
    return latencies, errors


class BareResponder(asyncio.Protocol):
    """The reference: a TLS server that answers any request with a fixed 200 and closes."""

    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.transport.write(self.RESPONSE)  # type: ignore[attr-defined]
            self.transport.close()


# A body the size of a bound token response, so the framework reference writes what we write.
_FIXED_BODY = b'{"access_token":"' + b"x" * 640 + b'","token_type":"Bearer","expires_in":300}'


async def _fixed(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=_FIXED_BODY, headers=JSON_NO_STORE)


def fixed_app() -> web.Application:
    """The framework reference: POST /token reads the body and returns a fixed token-sized
    response."""
    app = web.Application()
    app.router.add_post("/token", _fixed)
    return app


def _reference_server(home: Path, port: int, kind: str) -> None:
    """A reference server with the service's own certificates and TLS settings: ``bare`` is a
    TLS server answering a fixed 200 and closing (the handshake alone); ``aiohttp`` is an
    aiohttp application whose POST /token reads the body and returns a fixed token-sized
    response (the framework alone)."""
    settings = load_settings(home)
    ctx = build_server_context(
        ServerTLSConfig(cert=settings.tls_cert, key=settings.tls_key, client_ca=settings.client_ca),
        require_cert=False,
    )
    if uvloop is not None:
        uvloop.install()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        if kind == "bare":
            server = await loop.create_server(BareResponder, "127.0.0.1", port, ssl=ctx)
            async with server:
                await stop.wait()
            return
        runner = web.AppRunner(fixed_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
        await stop.wait()
        await runner.cleanup()

    asyncio.run(run())


@contextlib.contextmanager
def _server(
    home: Path,
    port: int,
    cores: set[int],
    workers: int,
    *,
    reference: str | None = None,
    peer: Peer | None = None,
) -> Iterator[list[int]]:
    # The default configuration, audit log included: the rows compare what operators run.
    env = {**os.environ, "MTLSAUTH_HOST": "127.0.0.1", "MTLSAUTH_PORT": str(port),
           "MTLSAUTH_LOG_LEVEL": "WARNING", "MTLSAUTH_THROTTLE_LIMIT": "100000"}  # fmt: skip
    command = [sys.executable, "-m", "mtlsauth", "serve", "--home", str(home)]
    cwd: Path | None = None
    if reference:
        command = [sys.executable, "-m", "mtlsauth.bench.benchmark", "--reference-server", str(port),
                   "--reference-kind", reference, "--home", str(home)]  # fmt: skip
    if peer is not None:
        command, cwd = peer.command(), peer.directory
        env.update(peer.env(port))
    if workers > 1:
        command += ["--workers", str(workers)]
    # The peer warns on stderr at every start about its in-memory adapter; failures show as errors.
    stderr = subprocess.DEVNULL if peer is not None else None
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr,
                            preexec_fn=lambda: os.sched_setaffinity(0, cores))  # noqa: PLW1509  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        time.sleep(1.0 if workers > 1 else 0.2)
        pids = [proc.pid, *_children(proc.pid)] if workers > 1 else [proc.pid]
        yield pids
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run_cli(*args: str) -> Any:
    out = subprocess.run([sys.executable, "-m", "mtlsauth", *args, "--json"], check=True,
                         capture_output=True, text=True)  # fmt: skip
    return json.loads(out.stdout)


@dataclass(frozen=True)
class _Scenario:
    """One row of the table: what is served, and how the load reaches it."""

    name: str
    ctx: ssl.SSLContext
    request: bytes
    connections: int
    new_connections: bool = False
    workers: int = 1
    server_cores: frozenset[int] = frozenset({0})
    reference: str | None = None
    peer: Peer | None = None
    #: Node's JIT needs longer than CPython to reach its steady state.
    warm_up: float = 1.0


@dataclass
class _Round:
    latencies: list[float]
    errors: int
    elapsed: float
    cpu: float


def _measure(scenario: _Scenario, home: Path, seconds: float) -> _Round:
    """One round: start the server, warm it up, measure for ``seconds``, stop it."""
    port = _free_port()
    with _server(home, port, set(scenario.server_cores), scenario.workers,
                 reference=scenario.reference, peer=scenario.peer) as pids:  # fmt: skip
        # Warm up (caches, JIT-free but import-heavy first requests), then measure.
        load = _new_connection_load if scenario.new_connections else _keep_alive_load
        asyncio.run(load(port, scenario.ctx, scenario.request, min(scenario.connections, 4),
                         scenario.warm_up))  # fmt: skip
        marks: dict[str, float] = {}

        def mark() -> None:
            marks.update(cpu=_cpu_seconds(pids), time=time.perf_counter())

        if scenario.new_connections:
            mark()
            latencies, errors = asyncio.run(
                load(port, scenario.ctx, scenario.request, scenario.connections, seconds)
            )
        else:
            latencies, errors = asyncio.run(
                _keep_alive_load(port, scenario.ctx, scenario.request, scenario.connections,
                                 seconds, on_start=mark)
            )  # fmt: skip
        elapsed = time.perf_counter() - marks["time"]
        cpu = _cpu_seconds(pids) - marks["cpu"]
    return _Round(latencies, len(errors), elapsed, cpu)


def _cpu_per_request(parts: list[_Round]) -> float:
    count = sum(len(r.latencies) for r in parts)
    return sum(r.cpu for r in parts) / count if count else 0.0


def _per_second(parts: list[_Round]) -> float:
    elapsed = sum(r.elapsed for r in parts)
    return sum(len(r.latencies) for r in parts) / elapsed if elapsed else 0.0


def _result(scenario: _Scenario, rounds: list[_Round]) -> Result:
    latencies = sorted(value for r in rounds for value in r.latencies)
    return Result(
        scenario=scenario.name,
        connections=scenario.connections,
        seconds=round(sum(r.elapsed for r in rounds), 2),
        requests=len(latencies),
        errors=sum(r.errors for r in rounds),
        tokens_per_s=round(_per_second(rounds), 1),
        p50_ms=round(_percentile(latencies, 0.50), 2),
        p90_ms=round(_percentile(latencies, 0.90), 2),
        p99_ms=round(_percentile(latencies, 0.99), 2),
        server_cpu_s=round(sum(r.cpu for r in rounds), 2),
        cpu_us_per_token=round(_cpu_per_request(rounds) * 1e6, 1),
    )


def _per_cpu_second(parts: list[_Round]) -> float:
    """Capacity: tokens per second of server CPU (with a handshake per request the load
    generator on the other core saturates neither server, so tokens/s alone would not tell)."""
    cpu = _cpu_per_request(parts)
    return 1 / cpu if cpu else 0.0


def _peer_scenarios(
    peer: Peer | None, keep_alive: _Scenario, new_connection: _Scenario
) -> list[_Scenario]:
    """The peer's rows, with the same load, connections and core as mtlsauth's."""
    if peer is None:
        return []
    ctx = peer.client_context()
    body = f"grant_type=client_credentials&client_id={PEER_CLIENT_ID}"
    return [
        _Scenario(f"peer ({peer.describe()}): tls_client_auth, keep-alive", ctx,
                  _request("/token", body, {}), keep_alive.connections, peer=peer, warm_up=3.0),
        _Scenario(f"peer ({peer.describe()}): tls_client_auth, new TLS connection per request",
                  ctx, _request("/token", body, {}, close=True), new_connection.connections,
                  new_connections=True, peer=peer, warm_up=3.0),
    ]  # fmt: skip


def _peer_ratios(
    rounds: dict[str, list[_Round]], mine: list[_Scenario], peers: list[_Scenario]
) -> list[dict[str, Any]]:
    """The issue's targets: capacity of mtlsauth over the peer's, path by path."""
    return [
        _ratio(f"tokens per second of server CPU, mtlsauth / peer: "
               f"{ours.name.removeprefix('tls_client_auth, ')}", target,
               rounds[ours.name], rounds[theirs.name], _per_cpu_second)
        for ours, theirs, target in zip(mine, peers, ("≥ 3", "≥ 2.5"), strict=False)
    ]  # fmt: skip


#: The servers of ``mtlsauth.bench.tls_layer`` (pyOpenSSL: the 'bench' extra).
_TLS_LAYER_KINDS = ("pyopenssl-service", "pyopenssl-bare", "pyopenssl-aiohttp",
                    "ssl-stateful-service")  # fmt: skip


def _run_tls_layer_ab(args: argparse.Namespace, home: Path, ssl_rows: list[_Scenario]) -> int:
    """``--tls-layer-ab``: each new-connection row (token, fixed response, bare handshake) over
    ``ssl`` and again over the pyOpenSSL transport, plus the token over ``ssl`` with stateful
    session tickets (what pyOpenSSL's rows use), in alternating rounds; server CPU per request
    of one over the other, round by round."""
    kinds = {None: "pyopenssl-service", "bare": "pyopenssl-bare", "aiohttp": "pyopenssl-aiohttp"}
    twins = [dataclasses.replace(row, name=f"pyOpenSSL transport: {row.name}",
                                 reference=kinds[row.reference]) for row in ssl_rows]  # fmt: skip
    token = ssl_rows[0]
    stateful = dataclasses.replace(token, reference="ssl-stateful-service",
                                   name=f"ssl, stateful session tickets: {token.name}")  # fmt: skip
    scenarios = [
        token,
        stateful,
        twins[0],
        *(s for p in zip(ssl_rows[1:], twins[1:], strict=True) for s in p),
    ]
    rounds = _run_interleaved(scenarios, home, args.seconds, args.rounds)
    ratios = [
        _ratio(f"server CPU per request, pyOpenSSL / ssl: {row.name}",
               "≤ 0.75 to adopt" if row.reference is None else "(floor)",
               rounds[twin.name], rounds[row.name], _cpu_per_request)
        for row, twin in zip(ssl_rows, twins, strict=True)
    ]  # fmt: skip
    ratios += [
        _ratio("server CPU per token, pyOpenSSL / ssl with stateful session tickets",
               "(like for like tickets)", rounds[twins[0].name], rounds[stateful.name],
               _cpu_per_request),
        _ratio("server CPU per token, ssl with stateful session tickets / ssl", "(tickets alone)",
               rounds[stateful.name], rounds[token.name], _cpu_per_request),
    ]  # fmt: skip
    results = [_result(s, rounds[s.name]) for s in scenarios]
    return _report(args, results, ratios, [], None)


def _run_interleaved(
    scenarios: list[_Scenario], home: Path, seconds: float, rounds: int
) -> dict[str, list[_Round]]:
    """Every scenario gets ``seconds`` in all, split into ``rounds`` rounds taken in turn, so
    that a drift of the machine's speed (large on shared VMs) hits every row alike and the
    ratios between rows stay meaningful."""
    done: dict[str, list[_Round]] = {s.name: [] for s in scenarios}
    for _ in range(rounds):
        for scenario in scenarios:
            done[scenario.name].append(_measure(scenario, home, seconds / rounds))
    return done


def _ratio(
    name: str, target: str, a: list[_Round], b: list[_Round], value: Callable[[list[_Round]], float]
) -> dict[str, Any]:
    """a / b over all rounds, and round by round (the spread shows the machine's noise)."""

    def divide(x: float, y: float) -> float:
        return round(x / y, 2) if y else 0.0

    return {
        "ratio": name,
        "target": target,
        "all_rounds": divide(value(a), value(b)),
        "per_round": [divide(value([x]), value([y])) for x, y in zip(a, b, strict=True)],
    }


class _StaticKeys:
    """One known key: the measurement is of verification, not of fetching JWKS."""

    def __init__(self, key: jwt.PyJWK) -> None:
        self._key = key

    async def key(self, kid: str) -> jwt.PyJWK:
        return self._key


def _gate_checks(
    signer: TokenSigner, config: VerifierConfig, source: _StaticKeys, audience: str, seconds: float
) -> list[dict[str, Any]]:
    """The gate: what it does per auth_request from nginx — the forwarded PEM parsed, the token
    verified (or found in the cache), the binding and the location's scope checked."""
    client = CA.create().issue_client(common_name="bench")
    gate_der = client.cert_der()
    gate_tokens = [
        signer.sign(client_id="bench", audience=(audience,), scope=("read",),
                     x5t_s256=x5t_s256(gate_der)).token
        for _ in range(5000)
    ]  # fmt: skip
    proxy = ProxyConfig(trusted=parse_networks(["127.0.0.1"]), header="X-Cert", fmt="nginx")
    cert_header = quote(client.cert_pem().decode(), safe="")

    def gate_headers(token: str) -> CIMultiDictProxy[str]:
        return CIMultiDictProxy(CIMultiDict({
            "Authorization": f"Bearer {token}", "X-Cert": cert_header,
            "X-Original-URI": "/api/invoices", "X-Mtlsauth-Scope-Required": "read",
        }))  # fmt: skip

    async def gate_checks(first_use: bool) -> float:
        gate = Gate(TokenVerifier(config, source), proxy)
        requests = [gate_headers(t) for t in (gate_tokens if first_use else gate_tokens[:1])]
        started = time.perf_counter()
        done = 0
        while time.perf_counter() - started < seconds and (not first_use or done < len(requests)):
            headers = requests[done % len(requests)]
            await gate.check(remote="127.0.0.1", headers=headers, method="GET", path="/_auth")
            done += 1
        return done / (time.perf_counter() - started)

    return [
        {"scenario": "gate check (nginx headers), first use",
         "per_s": round(asyncio.run(gate_checks(first_use=True)), 1)},
        {"scenario": "gate check (nginx headers), repeated token",
         "per_s": round(asyncio.run(gate_checks(first_use=False)), 1)},
    ]  # fmt: skip


def _alternate(
    first_use: Callable[[list[str], float], tuple[int, float]],
    tokens: list[str],
    seconds: float,
    bare: Callable[[], object],
) -> tuple[float, float]:
    """First use and the bare verification in alternating slices, so that the ratio the
    target is stated in (first use / bare P-256) sees the same machine on both sides."""
    slices = 5
    per_slice = len(tokens) // slices
    first_done = first_time = bare_time = 0.0
    for n in range(slices):
        done, took = first_use(tokens[n * per_slice : (n + 1) * per_slice], seconds / slices)
        first_done += done
        first_time += took
        started = time.perf_counter()
        for _ in range(done):
            bare()
        bare_time += time.perf_counter() - started
    return first_done / first_time, first_done / bare_time


_BARE_ALTERNATING = "reference: P-256 verification alone, in slices alternating with first use"


def _resource_checks(home: Path, seconds: float) -> list[dict[str, Any]]:
    """In-process verifications per second on this (pinned) core."""
    settings = load_settings(home)
    ring = KeyRing.load(settings.signing_key.parent, settings.signing_key)
    source = _StaticKeys(jwt.PyJWK(ring.active.public_jwk(), algorithm=ALGORITHM))
    signer = TokenSigner(issuer=settings.issuer, key=ring.active, ttl=600)
    der = b"benchmark-peer-certificate"
    count = 20000
    tokens = [
        signer.sign(client_id="bench", audience=(settings.audience,), scope=("read",),
                     x5t_s256=x5t_s256(der)).token
        for _ in range(count)
    ]  # fmt: skip
    config = VerifierConfig(settings.issuer, settings.audience, cache_size=count + 1)

    async def first_use(batch: list[str], budget: float) -> tuple[int, float]:
        verifier = TokenVerifier(config, source)
        started = time.perf_counter()
        done = 0
        for token in batch:
            await verifier.verify(token, der)
            done += 1
            if time.perf_counter() - started > budget:
                break
        return done, time.perf_counter() - started

    async def repeated() -> float:
        verifier = TokenVerifier(config, source)
        token = tokens[0]
        await verifier.verify(token, der)
        started = time.perf_counter()
        done = 0
        while time.perf_counter() - started < seconds:
            for _ in range(1000):
                await verifier.verify(token, der)
            done += 1000
        return done / (time.perf_counter() - started)

    def primitive(operation: Callable[[], object]) -> float:
        started = time.perf_counter()
        done = 0
        while time.perf_counter() - started < min(seconds, 2.0):
            for _ in range(100):
                operation()
            done += 100
        return done / (time.perf_counter() - started)

    # The floors: what cryptography's P-256 costs on this core, with nothing around it.
    public = ring.active.private_key.public_key()
    signing_input, _, signature = tokens[0].rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    der_signature = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    data = signing_input.encode()
    ecdsa = ec.ECDSA(hashes.SHA256())

    def rate(value: float) -> float:
        return round(value, 1)

    first_rate, bare_rate = _alternate(
        lambda batch, budget: asyncio.run(first_use(batch, budget)), tokens, seconds,
        lambda: public.verify(der_signature, data, ecdsa),
    )  # fmt: skip
    return [
        {"scenario": "resource check, first use", "per_s": rate(first_rate)},
        {"scenario": _BARE_ALTERNATING, "per_s": rate(bare_rate)},
        {"scenario": "resource check, repeated token", "per_s": rate(asyncio.run(repeated()))},
        *_gate_checks(signer, config, source, settings.audience, seconds),
        {"scenario": "reference: P-256 signature verification alone",
         "per_s": rate(primitive(lambda: public.verify(der_signature, data, ecdsa)))},
        {"scenario": "reference: ES256 signature alone",
         "per_s": rate(primitive(lambda: ring.active.sign(data)))},
    ]  # fmt: skip


def _setup(workdir: Path) -> tuple[Path, dict[str, Any]]:
    home = workdir / "home"
    _run_cli("init", "--home", str(home))
    cert_dir = workdir / "client"
    _run_cli("pki", "issue", "--home", str(home), "--cn", "bench", "--san-dns", "bench",
             "--out", str(cert_dir))  # fmt: skip
    _run_cli("client", "add", "--home", str(home), "--auth-method", "tls_client_auth",
             "--client-id", "mtls", "--san-dns", "bench", "--scope", "read")  # fmt: skip
    secret = _run_cli("client", "add", "--home", str(home), "--auth-method",
                      "client_secret_basic", "--client-id", "sec", "--scope", "read")  # fmt: skip
    return home, {"cert_dir": cert_dir, "secret": secret["client_secret"]}


def _machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    loop = "uvloop" if uvloop is not None else "asyncio"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "event_loop": loop,
        "openssl": ssl.OPENSSL_VERSION,
    }


def _table(
    results: list[Result], ratios: list[dict[str, Any]], checks: list[dict[str, Any]]
) -> str:
    rows = ["| scenario | conns | tokens/s | p50 ms | p90 ms | p99 ms | errors | server CPU µs/token |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in results:
        rows.append(
            f"| {r.scenario} | {r.connections} | {r.tokens_per_s:,.0f} | {r.p50_ms} | {r.p90_ms} "
            f"| {r.p99_ms} | {r.errors} | {r.cpu_us_per_token} |"
        )
    rows.append("")
    rows.append("| ratio | all rounds | round by round | target |")
    rows.append("|---|---:|---|---|")
    for q in ratios:
        spread = ", ".join(str(v) for v in q["per_round"])
        rows.append(f"| {q['ratio']} | {q['all_rounds']} | {spread} | {q['target']} |")
    if not checks:
        return "\n".join(rows)
    rows.append("")
    rows.append("| in-process on one core | per second |")
    rows.append("|---|---:|")
    rows += [f"| {c['scenario']} | {c['per_s']:,.0f} |" for c in checks]
    first = next(c["per_s"] for c in checks if c["scenario"] == "resource check, first use")
    bare = next(c["per_s"] for c in checks if c["scenario"] == _BARE_ALTERNATING)
    rows.append(f"| ratio: first use / P-256 verification alone, alternating (target ≥ 0.8) "
                f"| {first / bare:.2f} |")  # fmt: skip
    return "\n".join(rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="per scenario, all rounds together (default 10)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds per scenario, taken in turn across scenarios (default 3)")  # fmt: skip
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--new-connection-clients", type=int, default=8,
                        help="concurrent clients in the new-connection scenario")  # fmt: skip
    parser.add_argument("--workers", action="store_true",
                        help="also measure 1 vs 2 workers sharing both cores with the load")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--peer", type=Path, metavar="DIR",
                        help="also measure the reference peer (node-oidc-provider) prepared in "
                             "DIR, in the same rounds; without it the peer rows are left out")  # fmt: skip
    parser.add_argument("--tls-layer-ab", action="store_true",
                        help="measure only the new-connection rows (token, fixed response, bare "
                             "handshake), each over Python's ssl and over the pyOpenSSL "
                             "transport of mtlsauth.bench.tls_layer, and the token over ssl with "
                             "stateful session tickets, in alternating rounds, with their ratios "
                             "(needs the 'bench' extra: pip install -e '.[bench]')")  # fmt: skip
    parser.add_argument("--reference-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument(
        "--reference-kind",
        default="bare",
        help=argparse.SUPPRESS,
        choices=["bare", "aiohttp", *_TLS_LAYER_KINDS],
    )
    parser.add_argument("--home", help=argparse.SUPPRESS)
    return parser


def _open_peer(parser: argparse.ArgumentParser, directory: Path | None) -> Peer | None:
    if directory is None:
        return None
    try:
        return Peer.open(directory)
    except PeerError as exc:
        parser.error(str(exc))  # exits 2, naming what is missing


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds more than 0")
    if args.reference_server and args.reference_kind in _TLS_LAYER_KINDS:
        from mtlsauth.bench import tls_layer  # noqa: PLC0415  # pyOpenSSL: the 'bench' extra

        tls_layer.serve(args.home, args.reference_server, args.reference_kind)
        return 0
    if args.reference_server:
        _reference_server(Path(args.home), args.reference_server, args.reference_kind)
        return 0
    if (os.cpu_count() or 1) < 2:
        print("the benchmark needs two cores (server on one, load on the other)", file=sys.stderr)
        return 2
    peer = _open_peer(parser, args.peer)
    if args.tls_layer_ab and (peer is not None or args.workers):
        parser.error("--tls-layer-ab measures the new-connection rows alone: no --peer, --workers")
    if args.tls_layer_ab and importlib.util.find_spec("OpenSSL") is None:
        parser.error("--tls-layer-ab needs pyOpenSSL: pip install -e '.[bench]'")

    with tempfile.TemporaryDirectory(prefix="mtlsauth-bench-") as tmp:
        home, material = _setup(Path(tmp))
        ca = str(home / "ca" / "ca.pem")
        os.sched_setaffinity(0, {1})  # the load generator's core
        if uvloop is not None:
            uvloop.install()
        plain = ssl.create_default_context(cafile=ca)
        mtls = ssl.create_default_context(cafile=ca)
        mtls.load_cert_chain(material["cert_dir"] / "chain.pem", material["cert_dir"] / "key.pem")
        basic = base64.b64encode(f"sec:{quote_plus(material['secret'])}".encode()).decode()
        secret_request = _request("/token", "grant_type=client_credentials",
                                  {"Authorization": f"Basic {basic}"})  # fmt: skip
        mtls_request = _request("/token", "grant_type=client_credentials&client_id=mtls", {})
        mtls_close = _request("/token", "grant_type=client_credentials&client_id=mtls", {},
                              close=True)  # fmt: skip
        keep_alive = _Scenario("tls_client_auth, keep-alive", mtls, mtls_request,
                               args.connections)  # fmt: skip
        framework = _Scenario("reference: aiohttp handler with a fixed response, keep-alive",
                              mtls, mtls_request, args.connections, reference="aiohttp")  # fmt: skip
        new_connection = _Scenario("tls_client_auth, new TLS connection per request", mtls,
                                   mtls_close, args.new_connection_clients,
                                   new_connections=True)  # fmt: skip
        handshake = _Scenario("reference: bare mTLS handshake + fixed response", mtls,
                              mtls_close, args.new_connection_clients, new_connections=True,
                              reference="bare")  # fmt: skip
        framework_connection = _Scenario(
            "reference: aiohttp handler with a fixed response, new connection per request",
            mtls, mtls_close, args.new_connection_clients, new_connections=True,
            reference="aiohttp")  # fmt: skip
        scenarios = [
            _Scenario("client_secret_basic, keep-alive", plain, secret_request, args.connections),
            keep_alive, framework, new_connection, handshake, framework_connection,
        ]  # fmt: skip
        workers = [
            _Scenario(f"tls_client_auth, keep-alive, {n} {'workers' if n > 1 else 'worker'} on "
                      "cores 0+1", mtls,
                      mtls_request, args.connections, workers=n, server_cores=frozenset({0, 1}))
            for n in ((1, 2) if args.workers else ())
        ]  # fmt: skip
        scenarios += workers
        peers = _peer_scenarios(peer, keep_alive, new_connection)
        scenarios += peers
        if args.tls_layer_ab:
            return _run_tls_layer_ab(args, home, [new_connection, framework_connection, handshake])
        rounds = _run_interleaved(scenarios, home, args.seconds, args.rounds)
        results = [_result(s, rounds[s.name]) for s in scenarios]
        ratios = [
            _ratio("server CPU per token: new connection / bare handshake", "≤ 1.10",
                   rounds[new_connection.name], rounds[handshake.name], _cpu_per_request),
            _ratio("server CPU per request: aiohttp fixed response, new connection / bare "
                   "handshake", "(the framework's own floor)", rounds[framework_connection.name],
                   rounds[handshake.name], _cpu_per_request),
            _ratio("server CPU per token: keep-alive / aiohttp fixed response", "(the framework)",
                   rounds[keep_alive.name], rounds[framework.name], _cpu_per_request),
        ]  # fmt: skip
        ratios += _peer_ratios(rounds, [keep_alive, new_connection], peers)
        if workers:
            ratios.append(_ratio("tokens/s: 2 workers / 1 worker", "≥ 1.8",
                                 rounds[workers[1].name], rounds[workers[0].name], _per_second))  # fmt: skip
        os.sched_setaffinity(0, {0})
        checks = _resource_checks(home, min(args.seconds, 5.0))
    return _report(args, results, ratios, checks, peer)


def _report(
    args: argparse.Namespace,
    results: list[Result],
    ratios: list[dict[str, Any]],
    checks: list[dict[str, Any]],
    peer: Peer | None,
) -> int:
    machine = _machine()
    if args.tls_layer_ab:
        from mtlsauth.bench.tls_layer import ssl_version  # noqa: PLC0415  # the 'bench' extra

        machine["openssl"] = ssl_version()
    peer_note = peer.describe() if peer else "not measured (scripts/bench --peer DIR)"
    report = {"machine": machine, "peer": peer_note, "rounds": args.rounds,
              "results": [asdict(r) for r in results], "ratios": ratios, "checks": checks}  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
              f"{machine['event_loop']}, {machine['openssl']}")  # fmt: skip
        print(f"peer: {peer_note}")
        print(_table(results, ratios, checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
