"""A real nginx that terminates mutual TLS in front of a service, started and stopped by a test.

nginx connects upstream from 127.0.0.2, so the service can tell the trusted proxy from a
client that connects directly (from 127.0.0.1) and forges the header.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from aiohttp.test_utils import unused_port

PROXY_ADDRESS = "127.0.0.2"
CERT_HEADER = "X-SSL-Client-Cert"
ADDRESS_HEADER = "X-Forwarded-For"


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {log.read_text() if log.exists() else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("nginx did not start listening")


@contextlib.contextmanager
def nginx(
    workdir: Path,
    *,
    upstream: str,
    server_cert: Path,
    server_key: Path,
    client_ca: Path | None,
    upstream_ca: Path | None = None,
    verify_client: str = "optional",
    forward_address: bool = False,
    crl: Path | None = None,
) -> Iterator[str]:
    """Serve ``https://127.0.0.1:PORT`` → ``upstream``, forwarding $ssl_client_escaped_cert
    (and, with ``forward_address``, the client's address appended to X-Forwarded-For); with
    ``crl``, nginx checks the client chain against those CRLs itself (``ssl_crl``)."""
    port = unused_port()
    client_ca_line = f"ssl_client_certificate {client_ca};" if client_ca else ""
    if crl is not None:
        # The chain is leaf, issuing CA, root: depth 2, and nginx wants a CRL for each CA.
        client_ca_line += f" ssl_verify_depth 2; ssl_crl {crl};"
    address_line = (
        f"proxy_set_header {ADDRESS_HEADER} $proxy_add_x_forwarded_for;" if forward_address else ""
    )
    upstream_tls = ""
    if upstream.startswith("https://"):
        upstream_tls = f"""
            proxy_ssl_trusted_certificate {upstream_ca};
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;"""
    server = f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {server_cert};
        ssl_certificate_key {server_key};
        {client_ca_line}
        ssl_verify_client {verify_client};
        location / {{
            proxy_pass {upstream};
            proxy_bind {PROXY_ADDRESS};
            proxy_set_header {CERT_HEADER} $ssl_client_escaped_cert;
            {address_line}{upstream_tls}
        }}
    }}"""
    with nginx_servers(workdir, server, port):
        yield f"https://127.0.0.1:{port}"


@contextlib.contextmanager
def nginx_servers(workdir: Path, servers: str, port: int) -> Iterator[None]:
    """A real nginx with the given ``server {}`` blocks (they listen on ``port`` and anything
    else they name); for set-ups the single-location :func:`nginx` cannot express."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx is not installed: scripts/test installs it")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
user root;
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
{servers}
}}
""")
    log = workdir / "error.log"
    proc = subprocess.Popen(
        [binary, "-p", str(workdir), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, proc, log)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
