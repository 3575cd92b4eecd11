"""``pki export`` refuses a revoked certificate unless told ``--force``."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.serialization import pkcs12

from tests.test_pki import pki


def test_export_of_a_revoked_certificate_needs_force(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert pki(home, "init")[0] == 0
    code, issued, err = pki(home, "issue", "--cn", "gone", "--out", str(tmp_path / "gone"))
    assert code == 0, err
    password = tmp_path / "pass"
    password.write_text("s3cret\n")
    export = ["export", "--serial", issued["serial"], "--password-file", str(password)]
    assert pki(home, *export, "--out", str(tmp_path / "before.p12"))[0] == 0
    assert pki(home, "revoke", "--serial", issued["serial"], "--reason", "key_compromise")[0] == 0

    code, _, err = pki(home, *export, "--out", str(tmp_path / "refused.p12"))
    assert code == 1
    assert "revoked" in err
    assert "--force" in err
    assert not (tmp_path / "refused.p12").exists()

    code, _, err = pki(home, *export, "--out", str(tmp_path / "forced.p12"), "--force")
    assert code == 0, err
    key, cert, _chain = pkcs12.load_key_and_certificates(
        (tmp_path / "forced.p12").read_bytes(), b"s3cret"
    )
    assert key is not None
    assert cert is not None
    assert format(cert.serial_number, "x") == issued["serial"]
