"""Serial numbers as other tools print them find the certificate, for every certificate.

The forms come from real ``openssl x509`` output: ``-serial`` (upper-case hex padded to whole
octets, so a serial whose first nibble is zero starts with ``0``) and ``-text`` (colon-separated
octets), plus a ``0x`` prefix in either case.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from pki import Authority, SubjectAltNames
from pki.cli import authority_for
from tests.test_pki import pki

#: Enough certificates that serials with a leading zero octet or nibble occur; issuing goes on
#: (bounded) until at least one of each shape is among them.
MIN_CERTS = 24
MAX_CERTS = 400


def openssl_forms(cert: Path) -> list[str]:
    """The serial of ``cert`` as openssl prints it, and the other forms people paste."""
    serial = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-serial"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    text = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-text"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = re.search(r"Serial Number:\s*\n\s*([0-9a-f:]+)", text)
    assert found, text
    bare = serial.removeprefix("serial=")
    return [serial, bare, bare.lower(), found.group(1), found.group(1).upper(), f"0x{bare}",
            f"0X{bare.lower()}", f"  {bare}  "]  # fmt: skip


def issue_many(authority: Authority, out: Path) -> list[tuple[str, Path]]:
    """(inventory serial, cert.pem) of certificates including both a serial that openssl
    pads with a zero nibble and one it does not."""
    issued: list[tuple[str, Path]] = []
    while len(issued) < MAX_CERTS:
        n = len(issued)
        cert = authority.issue_client(
            common_name=f"svc-{n}", sans=SubjectAltNames(), out=out / str(n)
        )
        issued.append((cert.record.serial, cert.paths["cert"]))
        odd = [s for s, _ in issued if len(s) % 2 == 1]
        if len(issued) >= MIN_CERTS and odd and len(odd) < len(issued):
            break
    return issued


@pytest.fixture
def ca_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert pki(home, "init")[0] == 0
    return home


def test_every_openssl_form_finds_every_certificate(ca_home: Path, tmp_path: Path) -> None:
    authority = authority_for(ca_home)
    issued = issue_many(authority, tmp_path / "certs")
    assert any(len(serial) % 2 == 1 for serial, _ in issued)
    for serial, path in issued:
        for form in openssl_forms(path):
            record = authority.inventory.get(form)
            assert record is not None, f"{form!r} (serial {serial}) is not in the inventory"
            assert record.serial == serial
            assert authority.inventory.certificate(form) is not None


def test_commands_take_openssl_serials(ca_home: Path, tmp_path: Path) -> None:
    authority = authority_for(ca_home)
    issued = issue_many(authority, tmp_path / "certs")
    padded = next((s, p) for s, p in issued if len(s) % 2 == 1)
    serial, path = padded
    forms = openssl_forms(path)
    # pki list --serial, with openssl -serial's output as it is.
    code, rows, err = pki(ca_home, "list", "--serial", forms[0])
    assert code == 0, err
    assert [r["serial"] for r in rows] == [serial]
    # pki export, with the -text form (colons).
    password = tmp_path / "p12pass"
    password.write_text("secret\n")
    code, out, err = pki(ca_home, "export", "--serial", forms[3], "--out",
                         str(tmp_path / "x.p12"), "--password-file", str(password))  # fmt: skip
    assert code == 0, err
    assert out["serial"] == serial
    # pki renew, with a 0x prefix.
    code, out, err = pki(ca_home, "renew", "--serial", forms[5], "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert out["renewed_from"] == serial
    # pki revoke, with the upper-case padded form.
    code, out, err = pki(ca_home, "revoke", "--serial", forms[1])
    assert code == 0, err
    assert out["serial"] == serial
    assert out["status"] == "revoked"


@pytest.mark.parametrize("bad", ["xyz", "0x", "", "12:zz", "0", "a" * 200])
def test_a_malformed_serial_is_refused_cleanly(ca_home: Path, bad: str) -> None:
    for command in (["revoke", "--serial", bad], ["list", "--serial", bad]):
        code, _, err = pki(ca_home, *command)
        assert code == 1, (command, err)
        assert "serial" in err
        assert "Traceback" not in err
