"""Every ``pki`` subcommand answers bad input with a message and its documented exit code
(1 refused or failed, 2 usage or configuration), never a traceback. Run as a real process,
so what is checked is what an operator sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_pki import pki

COMMANDS_NEEDING_A_CA: list[list[str]] = [
    ["list"],
    ["crl"],
    ["crl", "--info"],
    ["issue", "--cn", "svc"],
    ["sign", "--csr", "{csr}"],
    ["renew", "--serial", "0a1b"],
    ["revoke", "--serial", "0a1b"],
    ["revoke", "--cert", "{cert}"],
    ["export", "--serial", "0a1b", "--out", "{tmp}/x.p12"],
    ["verify", "--cert", "{cert}"],
]


def run_pki(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MTLSAUTH_")}
    result = subprocess.run(
        [sys.executable, "-m", "pki", *args],
        capture_output=True, text=True, check=False, env=clean | (env or {}), timeout=60,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    return result.returncode, result.stderr


@pytest.fixture(scope="module")
def ca_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("pki-errors") / "home"
    code, _, err = pki(home, "init")
    assert code == 0, err
    code, _, err = pki(home, "issue", "--cn", "svc", "--out", str(home.parent / "svc"))
    assert code == 0, err
    return home


@pytest.fixture(scope="module")
def good_files(ca_home: Path) -> dict[str, str]:
    """A valid CSR and certificate, so that only the home is wrong."""
    folder = ca_home.parent
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(folder / "req.key"), "-subj", "/CN=req",
         "-out", str(folder / "req.csr")],
        capture_output=True, check=True,
    )  # fmt: skip
    return {"csr": str(folder / "req.csr"), "cert": str(folder / "svc" / "cert.pem")}


def _fill(argv: list[str], files: dict[str, str], tmp: Path) -> list[str]:
    return [a.format(tmp=tmp, **files) for a in argv]


@pytest.mark.parametrize("argv", COMMANDS_NEEDING_A_CA, ids=" ".join)
def test_a_missing_home_is_exit_2(
    argv: list[str], good_files: dict[str, str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-home"
    code, err = run_pki(*_fill(argv, good_files, tmp_path), "--home", str(missing))
    assert code == 2, err
    assert "pki init" in err
    assert not missing.exists()  # nothing was created in it
    # No --home and no $MTLSAUTH_HOME at all: the same.
    code, err = run_pki(*_fill(argv, good_files, tmp_path))
    assert code == 2, err
    assert "MTLSAUTH_HOME" in err


@pytest.mark.parametrize("argv", [["list", "--bogus"], ["issue"], ["revoke"], ["nope"]])
def test_usage_errors_are_exit_2(argv: list[str], ca_home: Path) -> None:
    assert run_pki(*argv, "--home", str(ca_home))[0] == 2


def test_init_where_no_home_can_be_made_is_exit_1(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("not a directory\n")
    code, err = run_pki("init", "--home", str(a_file / "home"))
    assert code == 1, err
    assert err.startswith("error: ")


BAD_FILES: list[list[str]] = [
    ["sign", "--csr", "{tmp}/missing.csr"],
    ["sign", "--csr", "{garbage}"],
    ["sign", "--csr", "{tmp}"],
    ["issue", "--cn", "x", "--csr", "{garbage}"],
    ["issue", "--cn", "x", "--out", "{garbage}/sub"],
    ["renew", "--serial", "{serial}", "--csr", "{garbage}"],
    ["revoke", "--cert", "{tmp}/missing.pem"],
    ["revoke", "--cert", "{garbage}"],
    ["export", "--serial", "{serial}", "--out", "{tmp}/x.p12",
     "--password-file", "{tmp}/missing-password"],
    ["export", "--serial", "{serial}", "--out", "{tmp}/x.p12",
     "--password-file", "{password}", "--key", "{garbage}"],
    ["export", "--serial", "{serial}", "--out", "{tmp}/x.p12",
     "--password-file", "{password}", "--key", "{tmp}/missing.key"],
    ["export", "--serial", "{serial}", "--out", "{garbage}/x.p12", "--password-file", "{password}"],
    ["verify", "--cert", "{tmp}/missing.pem"],
    ["verify", "--cert", "{garbage}"],
    ["crl", "--passphrase-file", "{tmp}/missing-passphrase"],
    ["crl", "--passphrase-file", "{tmp}"],
    ["crl", "--passphrase-file", "{password}"],
    ["crl", "--days", "0"],
    ["crl", "--days", "-3"],
    ["list", "--serial", "not-hex"],
]  # fmt: skip


@pytest.mark.parametrize("argv", BAD_FILES, ids=" ".join)
def test_bad_files_and_values_are_exit_1(argv: list[str], ca_home: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_text("this is not PEM\n")
    password = tmp_path / "password"
    password.write_text("wrong-or-p12-password\n")
    serial = pki(ca_home, "list")[1][0]["serial"]
    filled = [
        a.format(tmp=tmp_path, garbage=garbage, password=password, serial=serial) for a in argv
    ]
    code, err = run_pki(*filled, "--home", str(ca_home))
    assert code == 1, err
    assert err.startswith("error: "), err


def test_a_damaged_inventory_is_exit_1(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert pki(home, "init")[0] == 0
    (home / "ca" / "inventory.db").write_text("this is not a database\n")
    for argv in (["list"], ["crl"], ["revoke", "--serial", "0a"], ["issue", "--cn", "x"]):
        code, err = run_pki(*argv, "--home", str(home))
        assert code == 1, (argv, err)
        assert "inventory" in err, err
