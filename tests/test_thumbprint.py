"""x5t#S256 (RFC 8705 §3.1) against values computed independently with openssl."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mtlsauth.core.thumbprint import b64url, x5t_s256

FIXED_CERT = Path(__file__).parent / "data" / "fixed-cert.pem"
# openssl x509 -in fixed-cert.pem -outform DER | openssl dgst -sha256 -binary | base64url
FIXED_X5T_S256 = "rl7Zs-6HK4rUj1s3E8w19BSv87K6iPq7Puenuf8FYTM"


def _der(path: Path) -> bytes:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def test_fixed_certificate_known_answer() -> None:
    assert x5t_s256(_der(FIXED_CERT)) == FIXED_X5T_S256


def _openssl_x5t(pem: Path) -> str:
    der = subprocess.run(
        ["openssl", "x509", "-in", str(pem), "-outform", "DER"], check=True, capture_output=True
    ).stdout
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary"], input=der, check=True, capture_output=True
    ).stdout
    return base64.b64encode(digest).decode().replace("+", "-").replace("/", "_").rstrip("=")


def test_matches_openssl_on_fresh_certificates(tmp_path: Path) -> None:
    from pki import CA

    ca = CA.create()
    for index in range(5):
        issued = ca.issue_client(common_name=f"c{index}")
        pem = tmp_path / f"c{index}.pem"
        pem.write_bytes(issued.cert_pem())
        assert x5t_s256(issued.cert_der()) == _openssl_x5t(pem)
    assert _openssl_x5t(FIXED_CERT) == FIXED_X5T_S256


def test_b64url_has_no_padding() -> None:
    assert b64url(b"\xff\xfe") == "__4"
    assert len(x5t_s256(b"anything")) == 43
