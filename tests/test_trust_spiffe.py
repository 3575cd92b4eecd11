"""SPIFFE X.509-SVIDs as client identities under an external anchor, registered as
spiffe_x509 (draft-ietf-oauth-spiffe-client-auth §3.2) or tls_client_auth --spiffe-id: exact and
wildcard IDs, the SVID rules, and the anchor's trust domains."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import ClientCert, Home, run_cli, running
from tests.foreign_pki import ForeignPKI
from tests.test_trust import trust_add

TD = "acme.example"
METHODS = ["spiffe_x509", "tls_client_auth"]


def _register(home: Home, pki: ForeignPKI, tmp_path: Path, method: str) -> None:
    trust_add(home, "acme", pki.bundle(tmp_path / "acme.pem"), "--spiffe-trust-domain", TD)
    for client_id, spiffe_id in (
        ("exact", f"spiffe://{TD}/ns/prod/sa/api"),
        ("below", f"spiffe://{TD}/ns/prod/*"),
        ("foreign-td", "spiffe://other.example/ns/prod/*"),
    ):
        code, _, err = run_cli(["client", "add", "--home", str(home.path), "--auth-method",
                                method, "--client-id", client_id, "--trust", "acme",
                                "--spiffe-id", spiffe_id, "--json"])  # fmt: skip
        assert code == (1 if client_id == "foreign-td" else 0), err


@pytest.mark.parametrize("method", METHODS)
async def test_spiffe_ids_exact_and_below_a_path(home: Home, tmp_path: Path, method: str) -> None:
    pki = ForeignPKI.create("Acme")
    await asyncio.to_thread(_register, home, pki, tmp_path, method)

    def svid(name: str, *uris: str, **kw: bool) -> ClientCert:
        return pki.issue(tmp_path / name, "workload", uris=uris, **kw)  # type: ignore[arg-type]

    api = svid("api", f"spiffe://{TD}/ns/prod/sa/api")
    worker = svid("worker", f"spiffe://{TD}/ns/prod/sa/worker")
    cases = [
        ("exact", api, 200),
        ("exact", worker, 401),
        ("exact", svid("api-sub", f"spiffe://{TD}/ns/prod/sa/api/x"), 401),
        ("below", api, 200),
        ("below", worker, 200),
        # The path itself, a sibling sharing a prefix, and another trust domain: not below.
        ("below", svid("ns", f"spiffe://{TD}/ns/prod"), 401),
        ("below", svid("sibling", f"spiffe://{TD}/ns/production/sa/api"), 401),
        ("below", svid("other-td", "spiffe://other.example/ns/prod/sa/api"), 401),
        # Not SVIDs: two URI SANs, a CA certificate, no digitalSignature.
        ("below", svid("two", f"spiffe://{TD}/ns/prod/a", f"spiffe://{TD}/ns/prod/b"), 401),
        ("below", svid("ca", f"spiffe://{TD}/ns/prod/ca", ca=True), 401),
        ("below", svid("ku", f"spiffe://{TD}/ns/prod/ku", digital_signature=False), 401),
        ("below", svid("http", "https://acme.example/ns/prod/x"), 401),
    ]
    async with running(home) as service:
        for client_id, cert, expected in cases:
            status, body = await service.token(cert=cert, client_id=client_id)
            assert status == expected, (client_id, cert.cert.parent.name, body)
            if expected == 401:
                assert body["error"] == "invalid_client"
        # D8: an SVID client authenticates with its certificate only.
        status, body = await service.token(cert=api, client_id="exact", client_secret="x" * 43)
        assert (status, body["error"]) == (401, "invalid_client")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--spiffe-id", f"spiffe://{TD}/a"], 2),  # no --trust
        (["--trust", "acme", "--spiffe-id", f"spiffe://{TD}/a/../b"], 2),
        (["--trust", "acme", "--spiffe-id", f"spiffe://{TD.upper()}/a"], 2),
        (["--trust", "acme", "--spiffe-id", f"spiffe://{TD}"], 2),
        (["--trust", "acme", "--spiffe-id", f"spiffe://{TD}/a", "--subject-dn", "CN=x"], 2),
        (["--trust", "acme", "--spiffe-id", "spiffe://other.example/a"], 1),
    ],
)
def test_bad_spiffe_registrations(
    home: Home, tmp_path: Path, args: list[str], code: int, method: str
) -> None:
    trust_add(home, "acme", ForeignPKI.create("Acme").bundle(tmp_path / "a.pem"),
              "--spiffe-trust-domain", TD)  # fmt: skip
    got, _, err = run_cli(["client", "add", "--home", str(home.path),
                           "--auth-method", method, *args])  # fmt: skip
    assert got == code, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [
        ["--trust", "acme"],  # no --spiffe-id: the SVID's ID is the client's name
        ["--spiffe-id", f"spiffe://{TD}/a"],  # no --trust: which CAs issue the SVIDs
        ["--trust", "acme", "--subject-dn", "CN=x"],
    ],
)
def test_spiffe_x509_needs_an_anchor_and_a_spiffe_id(
    home: Home, tmp_path: Path, args: list[str]
) -> None:
    trust_add(home, "acme", ForeignPKI.create("Acme").bundle(tmp_path / "a.pem"),
              "--spiffe-trust-domain", TD)  # fmt: skip
    got, _, err = run_cli(["client", "add", "--home", str(home.path),
                           "--auth-method", "spiffe_x509", *args])  # fmt: skip
    assert got == 2, err
    assert "Traceback" not in err
