"""The mtlsauth command, called in-process through main(argv)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtlsauth.core.thumbprint import x5t_s256
from tests.conftest import Home, cli_json, run_cli, running


def test_init_output_and_files(tmp_path: Path) -> None:
    out = cli_json(["init", "--home", str(tmp_path / "h"), "--port", "9443"])
    assert out["issuer"] == "https://localhost:9443"
    assert out["port"] == 9443
    for name in ("ca_cert", "client_ca", "config"):
        assert Path(out[name]).is_file()
    home = tmp_path / "h"
    for secret in ("ca/root.key", "ca/issuing.key", "ca/passphrase", "ca/inventory.db",
                   "ca/audit.log", "tls/key.pem", "keys/signing.pem", "secret.key",
                   "mtlsauth.db"):  # fmt: skip
        assert stat.S_IMODE((home / secret).stat().st_mode) == 0o600, secret
    for key in ("ca/root.key", "ca/issuing.key"):
        assert b"ENCRYPTED PRIVATE KEY" in (home / key).read_bytes(), key
    # The server certificate verifies against ca_cert for every loopback name.
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", out["ca_cert"], "-purpose", "sslserver",
         "-untrusted", str(home / "ca" / "issuing.pem"), str(home / "tls" / "cert.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    server = x509.load_pem_x509_certificate((home / "tls" / "cert.pem").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost"} <= set(san.get_values_for_type(x509.DNSName))
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}


def test_init_refuses_existing_home(tmp_path: Path) -> None:
    cli_json(["init", "--home", str(tmp_path / "h")])
    before = (tmp_path / "h" / "secret.key").read_bytes()
    code, out, err = run_cli(["init", "--home", str(tmp_path / "h"), "--json"])
    assert code == 1
    assert out == ""
    assert "refusing to overwrite" in err
    assert (tmp_path / "h" / "secret.key").read_bytes() == before


def test_init_custom_issuer(tmp_path: Path) -> None:
    out = cli_json(["init", "--home", str(tmp_path / "h"), "--issuer", "https://auth.example.com/"])
    assert out["issuer"] == "https://auth.example.com"
    code, _, err = run_cli(["init", "--home", str(tmp_path / "x"), "--issuer", "http://plain"])
    assert code == 2
    assert "https" in err


def test_home_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTLSAUTH_HOME", str(tmp_path / "h"))
    cli_json(["init"])
    assert cli_json(["client", "list"]) == []
    monkeypatch.delenv("MTLSAUTH_HOME")
    code, _, err = run_cli(["client", "list"])
    assert code == 2
    assert "--home" in err


def test_client_lifecycle(home: Home) -> None:
    h = str(home.path)
    added = home.add_client(
        "--auth-method", "tls_client_auth", "--client-id", "svc", "--subject-dn",
        "CN=svc, O=Example", "--scope", "read", "--audience", "https://api.example.com",
    )  # fmt: skip
    assert added["client_id"] == "svc"
    assert "client_secret" not in added
    assert added["bound_tokens"] is True
    assert added["tls_client_auth_subject_dn"] == "CN=svc,O=example"

    secret_client = home.add_client("--auth-method", "client_secret_post")
    assert len(secret_client["client_secret"]) >= 43  # 256 bits, base64url
    assert secret_client["bound_tokens"] is False

    listed = cli_json(["client", "list", "--home", h])
    assert {c["client_id"] for c in listed} == {"svc", secret_client["client_id"]}
    assert all("client_secret" not in c for c in listed)

    shown = cli_json(["client", "show", "svc", "--home", h])
    assert shown["audiences"] == ["https://api.example.com"]
    # Secrets are never shown again, not even hashed.
    shown_secret = cli_json(["client", "show", secret_client["client_id"], "--home", h])
    assert "client_secret" not in shown_secret
    assert secret_client["client_secret"] not in json.dumps(shown_secret)

    code, _, err = run_cli(["client", "add", "--home", h, "--auth-method", "tls_client_auth",
                            "--client-id", "svc", "--san-dns", "x"])  # fmt: skip
    assert code == 1
    assert "taken" in err

    assert cli_json(["client", "remove", "svc", "--home", h]) == {
        "client_id": "svc",
        "removed": True,
    }
    code, _, err = run_cli(["client", "show", "svc", "--home", h])
    assert code == 1
    code, _, _ = run_cli(["client", "remove", "svc", "--home", h])
    assert code == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--auth-method", "tls_client_auth"], "exactly one"),
        (["--auth-method", "tls_client_auth", "--san-dns", "a", "--san-dns", "b"], "exactly one"),
        (["--auth-method", "tls_client_auth", "--subject-dn", "CN=a,FOO=b"], "unknown attribute"),
        (["--auth-method", "tls_client_auth", "--san-ip", "1.2.3"], "not an IP"),
        (["--auth-method", "self_signed_tls_client_auth"], "--cert"),
        (["--auth-method", "client_secret_basic", "--san-dns", "a"], "only for tls_client_auth"),
        (["--auth-method", "client_secret_basic", "--scope", 'a "b'], "invalid scope"),
        (["--auth-method", "client_secret_basic", "--audience", "relative"], "absolute URI"),
        (["--auth-method", "client_secret_basic", "--audience", "https://[::1"], "does not parse"),
        (["--auth-method", "client_secret_basic", "--client-id", " lead"], "VSCHAR"),
        (["--auth-method", "private_key_jwt"], "exactly one of --jwks FILE, --jwks-uri URL"),
        (["--auth-method", "private_key_jwt", "--jwks-uri", "http://plain/jwks"], "https"),
        (["--auth-method", "client_secret_basic", "--jwks-uri", "https://x/j"], "private_key_jwt"),
    ],
)
def test_client_add_refusals(home: Home, args: list[str], message: str) -> None:
    code, out, err = run_cli(["client", "add", "--home", str(home.path), *args, "--json"])
    assert code == 2
    assert out == ""
    assert message in err


def test_pki_issue_contract(home: Home, tmp_path: Path) -> None:
    out = cli_json(["pki", "issue", "--home", str(home.path), "--cn", "svc", "--san-dns", "svc",
                    "--san-uri", "spiffe://example.org/svc", "--out", str(tmp_path / "o")])  # fmt: skip
    assert set(out) == {"cert", "key", "chain", "serial", "x5t#S256"}
    cert = x509.load_pem_x509_certificate(Path(out["cert"]).read_bytes())
    assert format(cert.serial_number, "x") == out["serial"]
    assert out["x5t#S256"] == x5t_s256(cert.public_bytes(serialization.Encoding.DER))
    assert stat.S_IMODE(Path(out["key"]).stat().st_mode) == 0o600
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile",
         str(home.ca_cert), "-untrusted", str(home.path / "ca" / "issuing.pem"), out["cert"]],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_pki_issue_from_csr_never_sees_the_key(home: Home, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc")]))
        .sign(key, hashes.SHA256())
    )
    csr_path = tmp_path / "svc.csr"
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    out = cli_json(["pki", "issue", "--home", str(home.path), "--cn", "svc", "--csr",
                    str(csr_path), "--out", str(tmp_path / "o")])  # fmt: skip
    assert "key" not in out
    assert not (tmp_path / "o" / "key.pem").exists()
    cert = x509.load_pem_x509_certificate(Path(out["cert"]).read_bytes())
    assert cert.public_key() == key.public_key()


def test_python_m_pki_shares_the_parser(home: Home, tmp_path: Path) -> None:
    result = subprocess.run(
        ["python", "-m", "pki", "issue", "--home", str(home.path), "--cn", "x", "--out",
         str(tmp_path / "x"), "--json"],
        capture_output=True, text=True, check=False, env={**os.environ},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == {"cert", "key", "chain", "serial", "x5t#S256"}


async def test_token_command(home: Home) -> None:
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc", "--san-dns",
                           "svc", "--scope", "read")  # fmt: skip
    sec = await home.aadd_client("--auth-method", "client_secret_post", "--client-id", "p")
    cert = home.issue("svc", dns=["svc"])
    issuer = f"https://localhost:{home.port}"
    async with running(home):
        code, out, err = await asyncio.to_thread(
            run_cli,
            ["token", "--issuer", issuer, "--cacert", str(home.ca_cert), "--cert",
             str(cert.chain), "--key", str(cert.key), "--client-id", "svc"],
        )  # fmt: skip
        assert code == 0, err
        response = json.loads(out)
        assert response["token_type"] == "Bearer"
        assert response["scope"] == "read"

        code, out, err = await asyncio.to_thread(
            run_cli,
            ["token", "--issuer", issuer, "--cacert", str(home.ca_cert), "--client-id", "p",
             f"--client-secret={sec['client_secret']}", "--secret-method", "client_secret_post"],
        )  # fmt: skip
        assert code == 0, err

        code, out, err = await asyncio.to_thread(
            run_cli,
            ["token", "--issuer", issuer, "--cacert", str(home.ca_cert), "--client-id", "svc"],
        )
        assert code == 1
        assert json.loads(err.removeprefix("error: "))["error"] == "invalid_client"
