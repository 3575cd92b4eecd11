"""Text output (without --json) is for people: no Python values (None, True, [...])."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from tests.conftest import Home, run_cli

#: How Python values look when printed raw; none of this may reach text output.
PYTHON_VALUES = re.compile(r"\bNone\b|\bTrue\b|\bFalse\b|\[\]|\['|\{'|\[\{")


def _text(argv: list[str]) -> str:
    code, out, err = run_cli(argv)
    assert code == 0, err
    assert out.strip()
    assert not PYTHON_VALUES.search(out), out
    return out


def test_every_command_prints_human_text(home: Home, tmp_path: Path) -> None:
    h = ["--home", str(home.path)]
    cert = home.issue("svc", dns=["svc.test"])
    _text(["client", "add", *h, "--auth-method", "self_signed_tls_client_auth",
           "--client-id", "self", "--cert", str(cert.cert)])  # fmt: skip
    out = _text(["client", "add", *h, "--auth-method", "client_secret_basic",
                 "--client-id", "reports"])  # fmt: skip
    assert "bound_tokens: no" in out
    assert "audiences: -" in out
    assert "grant_types: client_credentials" in out
    _text(["client", "add", *h, "--auth-method", "tls_client_auth", "--client-id", "svc",
           "--san-dns", "svc.test", "--audience", "https://a.test", "--audience",
           "https://b.test"])  # fmt: skip
    out = _text(["client", "show", "svc", *h])
    assert "audiences: https://a.test, https://b.test" in out
    assert "bound_tokens: yes" in out
    out = _text(["client", "show", "reports", *h])
    assert "last_used_at=-" in out
    assert "active=yes" in out
    _text(["client", "show", "self", *h])
    assert "bound=no" in _text(["client", "list", *h])
    _text(["client", "rotate-secret", "reports", *h])
    _text(["client", "remove", "reports", *h])
    _text(["keys", "list", *h])
    _text(["keys", "rotate", *h])
    _text(["migrate", *h])
    out = _text(["init", "--home", str(tmp_path / "other")])
    assert "mtls_port: -" in out


@pytest.mark.parametrize("json_output", [False, True])
def test_init_announces_the_generated_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, json_output: bool
) -> None:
    for name in ("MTLSAUTH_CA_PASSPHRASE", "MTLSAUTH_CA_PASSPHRASE_FILE"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "h"
    code, out, err = run_cli(["init", "--home", str(home)] + (["--json"] if json_output else []))
    assert code == 0, err
    passphrase = home / "ca" / "passphrase"
    assert stat.S_IMODE(passphrase.stat().st_mode) == 0o600
    assert str(passphrase) in out
    assert str(passphrase) in err  # the warning: move it off the machine for production


def test_init_with_a_supplied_passphrase_names_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTLSAUTH_CA_PASSPHRASE", "correct horse battery staple")
    code, out, err = run_cli(["init", "--home", str(tmp_path / "h"), "--json"])
    assert code == 0, err
    assert '"ca_passphrase_file": null' in out
    assert not (tmp_path / "h" / "ca" / "passphrase").exists()
