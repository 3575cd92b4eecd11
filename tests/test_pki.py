"""The CA toolkit: certificates strict validators accept, and the whole certificate lifecycle.

Certificates are checked with ``openssl verify -x509_strict`` and openssl's text output.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki import Authority, CAError, NameConstraints, SubjectAltNames
from pki.cli import main as pki_main
from tests.conftest import run_cli


def pki(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, Any, str]:
    """``mtlsauth pki ... --json`` in-process; returns (code, parsed stdout or text, stderr)."""
    code, out, err = run_cli(["pki", *args, "--home", str(home), "--json"])
    try:
        return code, json.loads(out), err
    except ValueError:
        return code, out, err


def openssl_verify(
    ca_dir: Path, cert: Path, purpose: str = "sslclient"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", "-x509_strict", "-purpose", purpose, "-CAfile", str(ca_dir / "ca.pem"),
         "-untrusted", str(ca_dir / "issuing.pem"), str(cert)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def openssl_text(cert: Path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-text"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


@pytest.fixture
def ca_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    code, _, err = pki(home, "init")
    assert code == 0, err
    return home


def test_init_makes_a_strict_two_level_ca(ca_home: Path) -> None:
    ca_dir = ca_home / "ca"
    root_text = openssl_text(ca_dir / "ca.pem")
    issuing_text = openssl_text(ca_dir / "issuing.pem")
    for text in (root_text, issuing_text):
        assert "X509v3 Basic Constraints: critical" in text
        assert "CA:TRUE" in text
        assert "X509v3 Key Usage: critical" in text
        assert "Certificate Sign, CRL Sign" in text
        assert "X509v3 Subject Key Identifier" in text
        assert "X509v3 Authority Key Identifier" in text
    assert "pathlen:0" in issuing_text
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", str(ca_dir / "ca.pem"),
         str(ca_dir / "issuing.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for key in ("root.key", "issuing.key"):
        assert (ca_dir / key).read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")


def test_client_certificate_profile(ca_home: Path, tmp_path: Path) -> None:
    code, out, err = pki(ca_home, "issue", "--cn", "billing", "--san-dns", "billing.internal",
                         "--san-uri", "spiffe://example.org/ns/prod/sa/billing",
                         "--san-ip", "10.1.2.3", "--san-email", "billing@example.org",
                         "--out", str(tmp_path / "b"))  # fmt: skip
    assert code == 0, err
    result = openssl_verify(ca_home / "ca", Path(out["cert"]))
    assert result.returncode == 0, result.stdout + result.stderr
    # A client certificate is not a server certificate.
    assert openssl_verify(ca_home / "ca", Path(out["cert"]), "sslserver").returncode != 0
    text = openssl_text(Path(out["cert"]))
    assert "X509v3 Basic Constraints: critical" in text
    assert "CA:FALSE" in text
    assert "X509v3 Key Usage: critical" in text
    assert "Digital Signature" in text
    assert "TLS Web Client Authentication" in text
    assert "TLS Web Server Authentication" not in text
    for san in ("DNS:billing.internal", "URI:spiffe://example.org/ns/prod/sa/billing",
                "IP Address:10.1.2.3", "email:billing@example.org"):  # fmt: skip
        assert san in text
    cert = x509.load_pem_x509_certificate(Path(out["cert"]).read_bytes())
    assert 0 < cert.serial_number < 2**159
    # The chain file is what a client sends: leaf, then the issuing CA.
    chain = x509.load_pem_x509_certificates(Path(out["chain"]).read_bytes())
    assert [c.subject for c in chain] == [
        cert.subject,
        x509.load_pem_x509_certificate((ca_home / "ca" / "issuing.pem").read_bytes()).subject,
    ]


@pytest.mark.parametrize("key_type", ["ec-p384", "ed25519", "rsa-2048"])
def test_other_key_types(tmp_path: Path, key_type: str) -> None:
    home = tmp_path / "home"
    assert pki(home, "init", "--key-type", key_type)[0] == 0
    code, out, err = pki(home, "issue", "--cn", "x", "--key-type", key_type,
                         "--out", str(tmp_path / "x"))  # fmt: skip
    assert code == 0, err
    result = openssl_verify(home / "ca", Path(out["cert"]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_name_constraints_enforced_at_issuance(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, _, err = pki(home, "init", "--permit-dns", "example.org", "--permit-uri",
                       "example.org", "--permit-ip", "10.0.0.0/8")  # fmt: skip
    assert code == 0, err
    assert "critical" in openssl_text(home / "ca" / "issuing.pem").split("Name Constraints")[1][:20]
    allowed = [
        ("--san-dns", "svc.example.org"),
        ("--san-dns", "example.org"),
        ("--san-uri", "spiffe://example.org/ns/prod/sa/x"),
        ("--san-ip", "10.9.8.7"),
    ]
    for flag, value in allowed:
        code, out, err = pki(home, "issue", "--cn", "ok", flag, value, "--out",
                             str(tmp_path / value.replace("/", "_")))  # fmt: skip
        assert code == 0, (value, err)
        assert openssl_verify(home / "ca", Path(out["cert"])).returncode == 0
    refused = [
        ("--san-dns", "evil.com"),
        ("--san-dns", "example.org.evil.com"),
        ("--san-dns", "notexample.org"),
        ("--san-uri", "spiffe://evil.org/x"),
        ("--san-ip", "192.168.1.1"),
    ]
    before = len(Authority(home / "ca").inventory.query())
    for flag, value in refused:
        code, _, err = pki(home, "issue", "--cn", "no", flag, value)
        assert code == 1, value
        assert "name constraints" in err, err
    assert len(Authority(home / "ca").inventory.query()) == before


def test_name_constraint_library_semantics() -> None:
    from pki.constraints import NameConstraintError, check_names

    constraints = NameConstraints.parse(dns=[".example.org"], email=["example.org"])
    check_names(constraints, [x509.DNSName("a.example.org"), x509.RFC822Name("x@example.org")])
    for name in (x509.DNSName("example.org"), x509.RFC822Name("x@sub.example.org")):
        with pytest.raises(NameConstraintError):
            check_names(constraints, [name])
    # A type without a permitted subtree is not constrained.
    check_names(constraints, [x509.UniformResourceIdentifier("https://anything.test/")])
    excluded = NameConstraints.parse(excluded_dns=["corp.example.org"])
    with pytest.raises(NameConstraintError):
        check_names(excluded, [x509.DNSName("db.corp.example.org")])


def test_encrypted_keys_and_passphrase_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    secret_file = tmp_path / "pass.txt"
    secret_file.write_text("correct horse battery staple\n")
    assert pki(home, "init", "--passphrase-file", str(secret_file))[0] == 0
    assert not (home / "ca" / "passphrase").exists()  # supplied, so none generated
    # No passphrase: refused with the reason.
    code, _, err = pki(home, "issue", "--cn", "x")
    assert code == 1
    assert "passphrase" in err
    # Wrong passphrase.
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("nope")
    code, _, err = pki(home, "issue", "--cn", "x", "--passphrase-file", str(wrong))
    assert code == 1
    assert "wrong passphrase" in err
    # From a file, and from the environment.
    assert pki(home, "issue", "--cn", "x", "--passphrase-file", str(secret_file))[0] == 0
    monkeypatch.setenv("MTLSAUTH_CA_PASSPHRASE", "correct horse battery staple")
    assert pki(home, "issue", "--cn", "y")[0] == 0
    # The key on disk decrypts with exactly that passphrase.
    serialization.load_pem_private_key(
        (home / "ca" / "issuing.key").read_bytes(), b"correct horse battery staple"
    )


def test_csr_flow_keeps_the_key_with_the_client(ca_home: Path, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "payments")]))
        .sign(key, hashes.SHA256())
    )
    csr_file = tmp_path / "payments.csr"
    csr_file.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    code, out, err = pki(ca_home, "sign", "--csr", str(csr_file), "--san-dns", "payments",
                         "--out", str(tmp_path / "p"))  # fmt: skip
    assert code == 0, err
    assert "key" not in out
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["cert.pem", "chain.pem"]
    cert = x509.load_pem_x509_certificate(Path(out["cert"]).read_bytes())
    assert cert.public_key() == key.public_key()
    assert cert.subject.rfc4514_string() == "CN=payments"
    # A CSR whose signature does not match its key is refused.
    bad = tmp_path / "bad.csr"
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    body = pem.splitlines()
    body[-2] = body[-2][:-4] + ("AAAA" if not body[-2].endswith("AAAA") else "BBBB")
    bad.write_text("\n".join(body) + "\n")
    assert pki(ca_home, "sign", "--csr", str(bad))[0] == 1


def _crl(home: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl((home / "ca" / "crl.pem").read_bytes())


def test_lifecycle_inventory_and_audit(ca_home: Path, tmp_path: Path) -> None:
    """issue → renew (same key) → renew (new key, revoke old) → revoke; then look at the books."""
    code, first, err = pki(ca_home, "issue", "--cn", "svc", "--san-dns", "svc.internal",
                           "--days", "30", "--out", str(tmp_path / "v1"))  # fmt: skip
    assert code == 0, err
    code, second, err = pki(ca_home, "renew", "--serial", first["serial"], "--out",
                            str(tmp_path / "v2"))  # fmt: skip
    assert code == 0, err
    c1 = x509.load_pem_x509_certificate(Path(first["cert"]).read_bytes())
    c2 = x509.load_pem_x509_certificate(Path(second["cert"]).read_bytes())
    assert c2.public_key() == c1.public_key()  # same key
    assert c2.serial_number != c1.serial_number
    assert c2.subject == c1.subject
    assert (c2.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            == c1.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)  # fmt: skip
    assert (c2.not_valid_after_utc - c2.not_valid_before_utc).days == 30
    assert Path(second["key"]).read_bytes() == Path(first["key"]).read_bytes()

    new_key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")]))
        .sign(new_key, hashes.SHA256())
    )
    csr_file = tmp_path / "new.csr"
    csr_file.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    code, third, err = pki(ca_home, "renew", "--serial", second["serial"], "--csr", str(csr_file),
                           "--revoke-old", "--out", str(tmp_path / "v3"))  # fmt: skip
    assert code == 0, err
    c3 = x509.load_pem_x509_certificate(Path(third["cert"]).read_bytes())
    assert c3.public_key() == new_key.public_key()
    assert c3.subject == c1.subject  # renewal keeps the subject, not the CSR's

    code, revoked, err = pki(ca_home, "revoke", "--serial", first["serial"], "--reason",
                             "key_compromise")  # fmt: skip
    assert code == 0, err
    assert revoked["status"] == "revoked"
    code, _, err = pki(ca_home, "revoke", "--serial", first["serial"])
    assert code == 1
    assert "already revoked" in err

    crl = _crl(ca_home)
    entries = {format(r.serial_number, "x"): r for r in crl}
    assert set(entries) == {first["serial"], second["serial"]}
    reason = entries[first["serial"]].extensions.get_extension_for_class(x509.CRLReason)
    assert reason.value.reason == x509.ReasonFlags.key_compromise

    code, rows, _ = pki(ca_home, "list")
    by_serial = {r["serial"]: r for r in rows}
    assert by_serial[first["serial"]]["status"] == "revoked"
    assert by_serial[first["serial"]]["reason"] == "key_compromise"
    assert by_serial[second["serial"]]["reason"] == "superseded"
    assert by_serial[second["serial"]]["renewed_from"] == first["serial"]
    assert by_serial[third["serial"]]["renewed_from"] == second["serial"]
    assert by_serial[third["serial"]]["status"] == "valid"
    assert by_serial[third["serial"]]["sans"] == ["DNS:svc.internal"]
    code, valid, _ = pki(ca_home, "list", "--status", "valid")
    assert [r["serial"] for r in valid] == [third["serial"]]
    code, soon, _ = pki(ca_home, "list", "--expiring", "40")
    assert [r["serial"] for r in soon] == [third["serial"]]
    code, soon, _ = pki(ca_home, "list", "--expiring", "10")
    assert soon == []
    code, out, _ = run_cli(["pki", "list", "--home", str(ca_home), "--format", "csv"])
    table = list(csv.DictReader(io.StringIO(out)))
    assert {r["serial"] for r in table} == {first["serial"], second["serial"], third["serial"]}
    assert {r["status"] for r in table} == {"valid", "revoked"}

    events = [e["event"] for e in Authority(ca_home / "ca").audit.entries()]
    assert events == [
        "ca.init", "crl.generate",
        "cert.issue",
        "cert.renew",
        "cert.renew", "cert.revoke", "crl.generate",
        "cert.revoke", "crl.generate",
    ]  # fmt: skip
    audit = Authority(ca_home / "ca").audit.entries()
    assert all({"time", "event", "actor"} <= set(e) for e in audit)
    assert audit[-2]["serial"] == first["serial"]
    assert audit[-2]["reason"] == "key_compromise"


def test_pkcs12_export(ca_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, issued, _ = pki(ca_home, "issue", "--cn", "svc", "--out", str(tmp_path / "s"))
    assert code == 0
    code, _, err = pki(ca_home, "export", "--serial", issued["serial"], "--out",
                       str(tmp_path / "s.p12"))  # fmt: skip
    assert code == 1
    assert "password" in err
    monkeypatch.setenv("MTLSAUTH_P12_PASSWORD", "p12-secret")
    code, _, err = pki(ca_home, "export", "--serial", issued["serial"], "--out",
                       str(tmp_path / "s.p12"))  # fmt: skip
    assert code == 0, err
    key, cert, extra = pkcs12.load_key_and_certificates(
        (tmp_path / "s.p12").read_bytes(), b"p12-secret"
    )
    assert cert is not None
    assert format(cert.serial_number, "x") == issued["serial"]
    assert key is not None
    assert key.public_key() == cert.public_key()
    assert len(extra) == 1  # the issuing CA
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's error for a bad password
        pkcs12.load_key_and_certificates((tmp_path / "s.p12").read_bytes(), b"wrong")


def expired_crl(authority: Authority) -> bytes:
    """A correctly signed CRL whose nextUpdate has passed."""
    import datetime as dt

    ca = authority.issuing()
    now = dt.datetime.now(dt.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(days=2))
        .next_update(now - dt.timedelta(days=1))
        .add_extension(x509.CRLNumber(99), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.PEM)


def _verify(home: Path, cert: Path) -> tuple[int, dict[str, Any]]:
    code, out, _ = run_cli(["pki", "verify", "--home", str(home), "--cert", str(cert), "--json"])
    report: dict[str, Any] = json.loads(out)
    return code, report


def _failed(report: dict[str, Any]) -> set[str]:
    return {c["check"] for c in report["checks"] if not c["ok"]}


def test_verify_explains(ca_home: Path, tmp_path: Path) -> None:
    code, good, _ = pki(ca_home, "issue", "--cn", "good", "--out", str(tmp_path / "good"))
    code, report = _verify(ca_home, Path(good["cert"]))
    assert code == 0
    assert report["ok"] is True

    code, bad, _ = pki(ca_home, "issue", "--cn", "bad", "--out", str(tmp_path / "bad"))
    pki(ca_home, "revoke", "--serial", bad["serial"], "--reason", "key_compromise")
    code, report = _verify(ca_home, Path(bad["cert"]))
    assert code == 1
    assert _failed(report) == {"revocation"}
    assert "key_compromise" in json.dumps(report)

    # Another CA's certificate, and a server certificate (no clientAuth).
    other = tmp_path / "other"
    assert pki(other, "init")[0] == 0
    code, foreign, _ = pki(other, "issue", "--cn", "x", "--out", str(tmp_path / "f"))
    code, report = _verify(ca_home, Path(foreign["cert"]))
    assert code == 1
    assert "chain" in _failed(report)
    authority = Authority(
        ca_home / "ca", passphrase=(ca_home / "ca" / "passphrase").read_bytes().strip()
    )
    server = authority.issue_server(hostnames=["localhost"], out=tmp_path / "srv")
    code, report = _verify(ca_home, server.paths["cert"])
    assert code == 1
    assert "eku" in _failed(report)

    # An expired CRL is explained as such (every certificate of the CA would be refused).
    (ca_home / "ca" / "crl.pem").write_bytes(expired_crl(authority))
    code, report = _verify(ca_home, Path(good["cert"]))
    assert code == 1
    assert _failed(report) == {"crl"}
    assert "expired" in json.dumps(report)


def test_python_m_pki_and_library(tmp_path: Path) -> None:
    assert pki_main(["init", "--home", str(tmp_path / "h")]) == 0
    authority = Authority(
        tmp_path / "h" / "ca",
        passphrase=(tmp_path / "h" / "ca" / "passphrase").read_bytes().strip(),
    )
    issued = authority.issue_client(
        common_name="lib", sans=SubjectAltNames(dns=["lib.internal"]), out=tmp_path / "lib"
    )
    eku = issued.cert.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(CAError, match="already holds a CA"):
        Authority.init(tmp_path / "h" / "ca")


def test_crl_command(ca_home: Path) -> None:
    code, info, _ = pki(ca_home, "crl", "--info")
    assert code == 0
    first = info["number"]
    code, info, _ = pki(ca_home, "crl", "--days", "2")
    assert code == 0
    assert info["number"] == first + 1
    crl = _crl(ca_home)
    assert crl.next_update_utc is not None
    assert 1.9 < (crl.next_update_utc - crl.last_update_utc).total_seconds() / 86400 < 2.1
