"""Every ```sh and ```python block in README.md runs as written, in a dev home with a real server.

A block that cannot run here (it serves forever, needs a production host, or is a synopsis
with placeholders) is marked by the line ``<!-- not-run: reason -->`` right before it; that
list is kept short. What the test adapts, and nothing more: the ports (the README's 8443 and
8444 become free ports here), ``mtlsauth`` on PATH (README says how: .venv/bin or activate),
and the files a reader would have (``dev-home`` made by ``scripts/run``'s steps, the clients
and files the snippets name: ``reports`` with ``reports.secret``, ``billing.pem``,
``billing-keys.json``, ``issuer-ca.pem``, ``$CLIENT_ID``/``$CLIENT_SECRET``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aiohttp.test_utils import unused_port
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tests.conftest import Home, cli_json, self_signed

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NOT_RUN = re.compile(r"<!-- not-run: (?P<reason>[^>]+?) -->")
FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")


@dataclass(frozen=True)
class Block:
    lang: str
    line: int
    code: str
    not_run: str | None


def blocks(text: str) -> list[Block]:
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        previous = lines[i - 1] if i else ""
        marker = NOT_RUN.fullmatch(previous.strip())
        found.append(Block(match["lang"], i + 1, "\n".join(lines[i + 1 : end]) + "\n",
                           marker["reason"] if marker else None))  # fmt: skip
        i = end + 1
    return found


RUNNABLE = [b for b in blocks(README.read_text()) if b.lang in ("sh", "python")]


def test_the_not_run_list_is_short_and_says_why() -> None:
    skipped = [b for b in RUNNABLE if b.not_run]
    assert len(skipped) <= 6, [b.line for b in skipped]
    assert all(len(b.not_run or "") > 10 for b in skipped)
    assert len(RUNNABLE) - len(skipped) >= 10
    # A marker must sit right before a block it applies to, not drift away from it.
    assert README.read_text().count("<!-- not-run:") == len(skipped)


@dataclass
class World:
    cwd: Path
    env: dict[str, str]
    port: int
    api_port: int

    def adapt(self, code: str) -> str:
        return code.replace("localhost:8443", f"localhost:{self.port}").replace(
            "localhost:8444", f"localhost:{self.api_port}"
        )


def _wait(proc: subprocess.Popen[bytes], log: Path, ready: str) -> None:
    deadline = time.monotonic() + 30
    while ready not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    cwd = tmp_path_factory.mktemp("readme")
    port, api_port = unused_port(), unused_port()
    dev = cwd / "dev-home"
    cli_json(["init", "--home", str(dev), "--port", str(port)])
    home = Home(path=dev, port=port, mtls_port=None)
    # What scripts/run makes: the demo client and its certificate in dev-home/demo.
    cli_json(["pki", "issue", "--home", str(dev), "--cn", "demo", "--san-dns",
              "demo.mtlsauth.test", "--out", str(dev / "demo")])  # fmt: skip
    home.add_client("--client-id", "demo", "--auth-method", "tls_client_auth", "--san-dns",
                    "demo.mtlsauth.test", "--scope", "demo.read demo.write")  # fmt: skip
    reports = home.add_client("--client-id", "reports", "--auth-method",
                              "client_secret_basic", "--scope", "read")  # fmt: skip
    (cwd / "reports.secret").write_text(reports["client_secret"] + "\n")
    billing = self_signed(cwd / "billing", "billing")
    shutil.copy(billing.cert, cwd / "billing.pem")
    key = serialization.load_pem_private_key(billing.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    public = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    (cwd / "billing-keys.json").write_text(json.dumps({"keys": [{**public, "kid": "billing"}]}))
    shutil.copy(dev / "ca" / "ca.pem", cwd / "issuer-ca.pem")
    # What the federation and trust-anchor blocks name: a cluster's key set, another company's
    # CA (a root and the intermediate that issues its client certificates), a mesh's root.
    (cwd / "k8s-jwks.json").write_text(json.dumps({"keys": [{**public, "kid": "k8s"}]}))
    acme = trustme.CA()
    acme.cert_pem.write_to_path(cwd / "acme-root.pem")
    acme.create_child_ca().cert_pem.write_to_path(cwd / "acme-issuing-ca.pem")
    trustme.CA().cert_pem.write_to_path(cwd / "mesh-bundle.pem")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MTLSAUTH_")},
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "MTLSAUTH_HOME": str(dev),
        "MTLSAUTH_HOST": "127.0.0.1",
        "CLIENT_ID": "reports",
        "CLIENT_SECRET": reports["client_secret"],
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for argv, log, ready in (
            (["serve"], cwd / "serve.log", "listening on"),
            (["demo-api", "--port", str(api_port)], cwd / "api.log", "listening on"),
        ):
            with log.open("wb") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "mtlsauth", *argv, "--home", str(dev)],
                    stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                ))  # fmt: skip
            _wait(procs[-1], log, ready)
        yield World(cwd=cwd, env=env, port=port, api_port=api_port)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


@pytest.mark.parametrize(
    "block",
    [pytest.param(b, id=f"{b.lang}-line-{b.line}") for b in RUNNABLE if not b.not_run],
)
def test_readme_block_runs(block: Block, world: World) -> None:
    code = world.adapt(block.code)
    if block.lang == "sh":
        argv = ["bash", "-c", "set -euo pipefail\n" + code]
    else:
        script = world.cwd / f"snippet_{block.line}.py"
        script.write_text(code)
        argv = [sys.executable, "-W", "error::ResourceWarning", str(script)]
    result = subprocess.run(
        argv, cwd=world.cwd, env=world.env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    assert "Unclosed" not in output
    assert '"error"' not in result.stdout, output


def test_decisions_cited_are_written_out() -> None:
    """README stands on its own: every D<n> that README or the code cites is defined in it."""
    text = README.read_text()
    notes = text[text.index("## Design notes") :]
    defined = set(re.findall(r"^- \*\*(D\d+)\b", notes, flags=re.MULTILINE))
    assert defined == {f"D{n}" for n in range(1, 11)}
    sources = [text, *(p.read_text() for p in (ROOT / "mtlsauth").rglob("*.py"))]
    cited = {m for source in sources for m in re.findall(r"\b(D\d+)\b", source)}
    assert cited <= defined, cited - defined
    assert "shared/DESIGN" not in text


def test_benchmark_analysis_lives_next_to_the_benchmark() -> None:
    text = README.read_text()
    performance = text[text.index("## Performance") : text.index("## Security")]
    assert "mtlsauth/bench/README.md" in performance
    assert "Where the time goes" not in performance
    analysis = (ROOT / "mtlsauth" / "bench" / "README.md").read_text()
    assert "Where the time goes" in analysis
    assert "Against the targets" in analysis
