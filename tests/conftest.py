"""Test fixtures: a real home made by ``mtlsauth init``, a real server with real TLS.

Servers listen on 127.0.0.1 on free ports and are stopped by the fixture that started them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import io
import json
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import unused_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtlsauth.cli import main
from mtlsauth.issuer.http.app import create_app, create_tls
from mtlsauth.issuer.http.dispatch import ServiceRunner
from mtlsauth.issuer.settings import Settings, load_settings
from mtlsauth.issuer.store import Store, open_store
from mtlsauth.issuer.store.postgres import PostgresStore
from mtlsauth.issuer.tls.contexts import TLSManager
from pki import CA, Authority, IssuedCert, SubjectAltNames
from pki.cli import authority_for


def run_cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """Run ``mtlsauth`` in-process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def cli_json(argv: Sequence[str]) -> Any:
    """Run a ``--json`` command that must succeed and return its parsed output."""
    code, out, err = run_cli([*argv, "--json"])
    assert code == 0, err
    return json.loads(out)


@dataclass
class Home:
    path: Path
    port: int
    mtls_port: int | None

    @property
    def settings(self) -> Settings:
        return dataclasses.replace(
            load_settings(self.path, environ={}), hosts=("127.0.0.1",), reload_interval=0.1
        )

    @property
    def authority(self) -> Authority:
        return authority_for(self.path)

    @property
    def ca(self) -> CA:
        """The issuing CA, with its key."""
        return self.authority.issuing()

    @property
    def ca_cert(self) -> Path:
        return self.path / "ca" / "ca.pem"

    def issue(self, name: str, **sans: Sequence[str]) -> ClientCert:
        """A client certificate from the home's CA, recorded in its inventory."""
        issued = self.authority.issue_client(
            common_name=name, sans=SubjectAltNames(**sans), out=self.path.parent / "certs" / name
        )
        return ClientCert(
            cert=issued.paths["cert"],
            key=issued.paths["key"],
            chain=issued.paths["chain"],
            der=issued.cert.cert_der(),
        )

    def add_client(self, *args: str) -> dict[str, Any]:
        """``mtlsauth client add`` (synchronous: it runs its own event loop)."""
        result: dict[str, Any] = cli_json(["client", "add", "--home", str(self.path), *args])
        return result

    async def aadd_client(self, *args: str) -> dict[str, Any]:
        """``mtlsauth client add`` from inside a running event loop."""
        return await asyncio.to_thread(self.add_client, *args)


@dataclass
class ClientCert:
    cert: Path
    key: Path
    chain: Path
    der: bytes

    @classmethod
    def write(cls, issued: IssuedCert, out: Path) -> ClientCert:
        paths = issued.write_to_dir(out)
        return cls(
            cert=paths["cert"], key=paths["key"], chain=paths["chain"], der=issued.cert_der()
        )


def make_home(tmp_path: Path, *, mtls: bool = False) -> Home:
    port = unused_port()
    mtls_port = unused_port() if mtls else None
    argv = ["init", "--home", str(tmp_path / "home"), "--port", str(port)]
    if mtls_port:
        argv += ["--mtls-port", str(mtls_port)]
    cli_json(argv)
    return Home(path=tmp_path / "home", port=port, mtls_port=mtls_port)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return make_home(tmp_path)


@pytest.fixture
def mtls_home(tmp_path: Path) -> Home:
    """A home configured with a second, certificate-requiring listener."""
    return make_home(tmp_path, mtls=True)


@pytest.fixture(scope="session")
def other_ca() -> trustme.CA:
    """A CA the server does not trust."""
    return trustme.CA()


def client_context(home: Home, cert: ClientCert | None = None) -> ssl.SSLContext:
    """A verifying client context trusting the home's CA, presenting ``cert`` (with its chain)."""
    ctx = ssl.create_default_context(cafile=str(home.ca_cert))
    if cert is not None:
        ctx.load_cert_chain(cert.chain, cert.key)
    return ctx


@dataclass
class Service:
    home: Home
    tls: TLSManager
    url: str
    mtls_url: str | None
    app: web.Application

    def ssl_context(self, cert: ClientCert | None = None) -> ssl.SSLContext:
        return client_context(self.home, cert)

    async def post(
        self,
        path: str = "/token",
        *,
        data: bytes | str | dict[str, str] | None = None,
        cert: ClientCert | None = None,
        ctx: ssl.SSLContext | None = None,
        headers: dict[str, str] | None = None,
        base: str | None = None,
    ) -> tuple[int, dict[str, Any], Any]:
        """POST and return (status, headers, parsed JSON body)."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                (base or self.url) + path,
                data=data,
                headers=headers,
                ssl=ctx or self.ssl_context(cert),
            ) as resp,
        ):
            return resp.status, dict(resp.headers), await resp.json(content_type=None)

    async def get(self, path: str, *, cert: ClientCert | None = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.url + path, ssl=self.ssl_context(cert)) as resp,
        ):
            return resp.status, await resp.json(content_type=None)

    async def token(self, cert: ClientCert | None = None, **form: str) -> tuple[int, Any]:
        status, _, body = await self.post(
            data={"grant_type": "client_credentials", **form}, cert=cert
        )
        return status, body


@contextlib.asynccontextmanager
async def running(home: Home, settings: Settings | None = None) -> AsyncIterator[Service]:
    """The token service on 127.0.0.1, as ``mtlsauth serve`` runs it."""
    settings = settings or home.settings
    tls = create_tls(settings)
    app = create_app(settings, tls)
    runner = ServiceRunner(app, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", settings.port, ssl_context=tls.optional).start()
        mtls_url = None
        if settings.mtls_port and tls.required:
            await web.TCPSite(
                runner, "127.0.0.1", settings.mtls_port, ssl_context=tls.required
            ).start()
            mtls_url = f"https://127.0.0.1:{settings.mtls_port}"
        yield Service(home, tls, f"https://127.0.0.1:{settings.port}", mtls_url, app)
    finally:
        await runner.cleanup()


async def eventually(check: Any, within: float = 2.0) -> None:
    """Await ``check()`` until it returns True, failing after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if await check():
            return
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.05)


def self_signed(
    out: Path,
    cn: str,
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> ClientCert:
    """A self-signed client certificate, as a client would make for itself (RFC 8705 §2.2)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=1))
        .not_valid_after(not_after or now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return ClientCert.write(IssuedCert(cert=cert, key=key, chain=()), out)


def trustme_cert(ca: trustme.CA, out: Path, *identities: str) -> ClientCert:
    """A client certificate from a CA the server does not trust."""
    leaf = ca.issue_cert(*identities)
    out.mkdir(parents=True, exist_ok=True)
    cert, key = out / "cert.pem", out / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    chain = out / "chain.pem"
    chain.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    return ClientCert(cert=cert, key=key, chain=chain, der=der)


@dataclass
class ServeProcess:
    """A real ``mtlsauth serve`` process; ``stderr`` is filled in when it has stopped."""

    proc: subprocess.Popen[str]
    stderr: str = ""


def _healthy(home: Home) -> bool:
    ctx = ssl.create_default_context(cafile=str(home.ca_cert))
    try:
        url = f"https://127.0.0.1:{home.port}/health"
        with urllib.request.urlopen(url, context=ctx, timeout=1) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


@contextlib.contextmanager
def serve_process(home: Home, *args: str, **env: str) -> Iterator[ServeProcess]:
    """Start ``python -m mtlsauth serve`` on 127.0.0.1, wait until healthy; on exit send
    SIGTERM (by PID), wait, and collect stderr. The test asserts on ``returncode``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtlsauth", "serve", "--home", str(home.path), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={"MTLSAUTH_HOST": "127.0.0.1", "PATH": "/usr/bin:/bin", **env},
    )
    running = ServeProcess(proc)
    try:
        deadline = time.monotonic() + 15
        while not _healthy(home):
            if proc.poll() is not None:
                raise AssertionError(f"the server exited: {proc.communicate()[1]}")
            if time.monotonic() > deadline:
                raise AssertionError("the server did not become healthy within 15 s")
            time.sleep(0.1)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            running.stderr = proc.communicate(timeout=15)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            running.stderr = proc.communicate()[1]


# The store behaviour suites run against SQLite and the real PostgreSQL server.
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped afterwards."""
    name = f"mtlsauth_test_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        with fresh_database() as url:
            yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.migrate()
    if isinstance(s, PostgresStore):
        await s.close()
        s = open_store(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
