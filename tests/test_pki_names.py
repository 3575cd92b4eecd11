"""Names in CA-issued certificates: what a CSR asks for is kept or refused, never dropped, and
``pki issue``/``pki sign`` accept exactly the SANs that client registration accepts."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import make_home, run_cli
from tests.test_pki import pki


def openssl_csr(tmp_path: Path, subject: str, sans: str, name: str = "req") -> Path:
    """A CSR made by ``openssl req``, as a client would make one."""
    csr = tmp_path / f"{name}.csr"
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(tmp_path / f"{name}.key"), "-subj", subject,
         "-addext", f"subjectAltName={sans}", "-out", str(csr)],
        capture_output=True, check=True,
    )  # fmt: skip
    return csr


def built_csr(tmp_path: Path, subject: x509.Name, sans: list[x509.GeneralName]) -> Path:
    """A CSR with names ``openssl req`` would not write, made with cryptography."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    csr = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    path = tmp_path / "built.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def cert_of(path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def san_strings(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {f"{type(n).__name__}:{n.value}" for n in ext}


@pytest.fixture
def constrained_home(tmp_path: Path) -> Path:
    home = tmp_path / "constrained"
    code, _, err = pki(home, "init", "--permit-dns", "example.org", "--permit-uri", "example.org")
    assert code == 0, err
    return home


def test_sign_keeps_the_csr_subject_and_sans(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert pki(home, "init")[0] == 0
    csr = openssl_csr(
        tmp_path, "/C=DE/O=Example/OU=payments/CN=payments",
        "URI:spiffe://example.org/ns/prod/sa/payments,DNS:payments.internal",
    )  # fmt: skip
    code, out, err = pki(home, "sign", "--csr", str(csr), "--out", str(tmp_path / "out"))
    assert code == 0, err
    cert = cert_of(out["cert"])
    assert cert.subject.rfc4514_string() == "CN=payments,OU=payments,O=Example,C=DE"
    assert san_strings(cert) == {
        "UniformResourceIdentifier:spiffe://example.org/ns/prod/sa/payments",
        "DNSName:payments.internal",
    }
    # --cn replaces the common name only; a --san-* flag adds to what the CSR asks for.
    code, out, err = pki(home, "sign", "--csr", str(csr), "--cn", "payments-2",
                         "--san-dns", "pay.internal", "--out", str(tmp_path / "out2"))  # fmt: skip
    assert code == 0, err
    cert = cert_of(out["cert"])
    assert cert.subject.rfc4514_string() == "CN=payments-2,OU=payments,O=Example,C=DE"
    assert "DNSName:pay.internal" in san_strings(cert)
    assert "DNSName:payments.internal" in san_strings(cert)


def test_sign_keeps_csr_names_inside_the_name_constraints(
    constrained_home: Path, tmp_path: Path
) -> None:
    csr = openssl_csr(tmp_path, "/CN=svc", "URI:spiffe://example.org/sa/svc,DNS:svc.example.org")
    code, out, err = pki(constrained_home, "sign", "--csr", str(csr), "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert san_strings(cert_of(out["cert"])) == {
        "UniformResourceIdentifier:spiffe://example.org/sa/svc",
        "DNSName:svc.example.org",
    }


@pytest.mark.parametrize(
    ("sans", "named"),
    [
        ("DNS:svc.example.org,DNS:evil.com", "evil.com"),
        ("URI:spiffe://evil.org/sa/x", "spiffe://evil.org/sa/x"),
    ],
)
def test_sign_refuses_csr_names_outside_the_name_constraints(
    constrained_home: Path, tmp_path: Path, sans: str, named: str
) -> None:
    csr = openssl_csr(tmp_path, "/CN=svc", sans)
    code, _, err = pki(constrained_home, "sign", "--csr", str(csr), "--out", str(tmp_path / "o"))
    assert code == 1
    assert named in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()
    assert pki(constrained_home, "list")[1] == []


@pytest.mark.parametrize(
    ("subject", "sans", "named"),
    [
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc")]),
         [x509.DNSName("bad_name!")], "bad_name!"),
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc")]),
         [x509.UniformResourceIdentifier("not a uri")], "not a uri"),
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc")]),
         [x509.RFC822Name("nobody")], "nobody"),
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc")]),
         [x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))],
         "DirectoryName"),
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc"),
                    x509.NameAttribute(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), "x")]),
         [], "1.3.6.1.4.1.99999.1"),
    ],
)  # fmt: skip
def test_sign_refuses_what_the_csr_asks_for_that_is_not_allowed(
    tmp_path: Path, subject: x509.Name, sans: list[x509.GeneralName], named: str
) -> None:
    home = tmp_path / "home"
    assert pki(home, "init")[0] == 0
    csr = built_csr(tmp_path, subject, sans)
    code, _, err = pki(home, "sign", "--csr", str(csr), "--out", str(tmp_path / "o"))
    assert code == 1
    assert named in err
    assert "Traceback" not in err
    assert pki(home, "list")[1] == []


BAD_SANS = [
    ("--san-uri", "not a uri"),
    ("--san-dns", "bad_name!"),
    ("--san-email", "nobody"),
    ("--san-ip", "10.0.0.300"),
    ("--san-dns", ""),
]
GOOD_SANS = [
    ("--san-uri", "spiffe://example.org/sa/billing"),
    ("--san-dns", "billing.internal"),
    ("--san-email", "billing@example.org"),
    ("--san-ip", "10.0.0.3"),
]


@pytest.mark.parametrize(("flag", "value"), BAD_SANS)
def test_issue_and_registration_refuse_the_same_bad_sans(
    tmp_path: Path, flag: str, value: str
) -> None:
    home = make_home(tmp_path)
    code, _, err = pki(home.path, "issue", "--cn", "svc", flag, value)
    assert code == 1, err
    assert "Traceback" not in err
    assert [r["profile"] for r in pki(home.path, "list")[1]] == ["server"]
    code, _, err = run_cli(["client", "add", "--home", str(home.path),
                            "--auth-method", "tls_client_auth", flag, value])  # fmt: skip
    assert code != 0
    assert "Traceback" not in err


@pytest.mark.parametrize(("flag", "value"), GOOD_SANS)
def test_issue_and_registration_accept_the_same_good_sans(
    tmp_path: Path, flag: str, value: str
) -> None:
    home = make_home(tmp_path)
    code, out, err = pki(home.path, "issue", "--cn", "svc", flag, value)
    assert code == 0, err
    code, _, err = run_cli(["client", "add", "--home", str(home.path),
                            "--auth-method", "tls_client_auth", flag, value])  # fmt: skip
    assert code == 0, err
    # pki verify agrees with what issue did.
    code, _, err = pki(home.path, "verify", "--cert", out["cert"])
    assert code == 0, err


def test_verify_refuses_a_certificate_with_an_invalid_san(tmp_path: Path) -> None:
    """A certificate signed outside pki issue (here: the CA key used directly) with a SAN
    registration refuses is not reported as one that would be accepted."""
    home = make_home(tmp_path)
    ca = home.ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("bad_name!")]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    path = tmp_path / "odd.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    code, out, _ = pki(home.path, "verify", "--cert", str(path))
    assert code == 1, out
    failed = [c["check"] for c in out["checks"] if not c["ok"]]
    assert failed == ["san_syntax"]


@pytest.mark.parametrize(
    ("newkey", "allowed"),
    [
        (["-newkey", "rsa:1024"], False),
        (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"], False),
        (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"], False),
        (["-newkey", "rsa:2048"], True),
        (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"], True),
        (["-newkey", "ed25519"], True),
    ],
)
def test_sign_takes_only_the_key_types_issue_offers(
    tmp_path: Path, newkey: list[str], allowed: bool
) -> None:
    """A CSR's key is held to the same list as ``pki issue --key-type`` (found by the review:
    RSA-1024 and secp256k1 CSRs were signed)."""
    home = tmp_path / "home"
    assert pki(home, "init")[0] == 0
    csr = tmp_path / "k.csr"
    subprocess.run(
        ["openssl", "req", "-new", *newkey, "-nodes", "-keyout", str(tmp_path / "k.key"),
         "-subj", "/CN=weak", "-out", str(csr)],
        capture_output=True, check=True,
    )  # fmt: skip
    code, _, err = pki(home, "sign", "--csr", str(csr), "--out", str(tmp_path / "out"))
    if allowed:
        assert code == 0, err
    else:
        assert code == 1
        assert "key" in err
