"""Bad input to every ``mtlsauth`` command: a one-line message and the documented exit code
(0 done, 1 refused or failed, 2 usage or configuration), never a traceback.

Each command is run in-process through ``main(argv)``; an exception escaping ``main`` fails
the test as surely as a traceback on stderr would.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import unused_port

from mtlsauth.cli import build_parser, main
from tests.conftest import Home, make_home, run_cli

#: ``mtlsauth pki ...`` has its own tests (tests/test_pki.py and the pki wing's own).
_NOT_HERE = {"pki"}

USAGE, FAILED = 2, 1


def _leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[str]:
    """Every runnable command, e.g. ``client add``, read from the parser itself."""
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if not prefix and name in _NOT_HERE:
                    continue
                found |= _leaf_commands(sub, (*prefix, name))
    if not found and prefix:
        found.add(" ".join(prefix))
    return found


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MTLSAUTH_HOME", "MTLSAUTH_CLIENT_SECRET", "MTLSAUTH_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return make_home(tmp_path_factory.mktemp("errors"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("files")
    (root / "a-file").write_text("not a directory\n")
    (root / "bad.pem").write_text("not PEM\n")
    (root / "bad-toml").mkdir()
    (root / "bad-toml" / "mtlsauth.toml").write_text("port = [\n")
    (root / "bad-value").mkdir()
    (root / "bad-value" / "mtlsauth.toml").write_text("port = 99999\n")
    return {
        "missing": str(root / "missing"),
        "file": str(root / "a-file"),
        "under-file": str(root / "a-file" / "home"),
        "bad-pem": str(root / "bad.pem"),
        "bad-toml": str(root / "bad-toml"),
        "bad-value": str(root / "bad-value"),
        "dead-issuer": f"https://127.0.0.1:{unused_port()}",
    }


# (command, argv with {placeholders}, exit code). {home} is a real home made by `init`.
# fmt: off
CASES: list[tuple[str, list[str], int]] = [
    ("init", ["init", "--home", "{file}"], USAGE),
    ("init", ["init", "--home", "{under-file}"], FAILED),
    ("init", ["init", "--home", "{home}"], FAILED),
    ("init", ["init", "--home", "{missing}", "--port", "0"], USAGE),
    ("init", ["init", "--home", "{missing}", "--port", "http"], USAGE),
    ("init", ["init", "--home", "{missing}", "--port", "9443", "--mtls-port", "9443"], USAGE),
    ("init", ["init", "--home", "{missing}", "--issuer", "http://plain"], USAGE),
    ("init", ["init"], USAGE),
    ("serve", ["serve", "--home", "{missing}"], USAGE),
    ("serve", ["serve", "--home", "{file}"], USAGE),
    ("serve", ["serve", "--home", "{bad-toml}"], USAGE),
    ("serve", ["serve", "--home", "{bad-value}"], USAGE),
    ("serve", ["serve", "--home", "{home}", "--port", "70000"], USAGE),
    ("serve", ["serve", "--home", "{home}", "--workers", "0"], USAGE),
    ("client add", ["client", "add", "--home", "{missing}", "--auth-method",
                    "client_secret_basic"], USAGE),
    ("client add", ["client", "add", "--home", "{home}", "--auth-method",
                    "self_signed_tls_client_auth", "--cert", "{missing}"], USAGE),
    ("client add", ["client", "add", "--home", "{home}", "--auth-method", "nope"], USAGE),
    ("client list", ["client", "list", "--home", "{missing}"], USAGE),
    ("client list", ["client", "list", "--home", "{file}"], USAGE),
    ("client list", ["client", "list", "--home", "{bad-toml}"], USAGE),
    ("client show", ["client", "show", "nobody", "--home", "{missing}"], USAGE),
    ("client show", ["client", "show", "nobody", "--home", "{home}"], FAILED),
    ("client remove", ["client", "remove", "nobody", "--home", "{missing}"], USAGE),
    ("client remove", ["client", "remove", "nobody", "--home", "{home}"], FAILED),
    ("client rotate-secret", ["client", "rotate-secret", "x", "--home", "{missing}"], USAGE),
    ("client rotate-secret", ["client", "rotate-secret", "x", "--home", "{home}",
                              "--grace", "nan"], USAGE),
    ("client rotate-secret", ["client", "rotate-secret", "nobody", "--home", "{home}"], FAILED),
    ("keys list", ["keys", "list", "--home", "{missing}"], USAGE),
    ("keys list", ["keys", "list", "--home", "{file}"], USAGE),
    ("keys rotate", ["keys", "rotate", "--home", "{missing}"], USAGE),
    ("migrate", ["migrate", "--home", "{missing}"], USAGE),
    ("migrate", ["migrate", "--home", "{bad-value}"], USAGE),
    ("token", ["token", "--issuer", "{dead-issuer}", "--cacert", "{missing}"], USAGE),
    ("token", ["token", "--issuer", "{dead-issuer}", "--cacert", "{home}/ca/ca.pem",
               "--cert", "{missing}", "--key", "{home}/tls/key.pem"], USAGE),
    ("token", ["token", "--issuer", "{dead-issuer}", "--cacert", "{bad-pem}"], USAGE),
    ("token", ["token", "--issuer", "{dead-issuer}", "--cacert", "{home}/ca/ca.pem"], FAILED),
    ("token", ["token", "--cacert", "{home}/ca/ca.pem"], USAGE),
    # Read bounded (the review: /dev/zero filled memory).
    ("token", ["token", "--issuer", "{dead-issuer}", "--cacert", "{home}/ca/ca.pem",
               "--client-id", "x", "--client-secret-file", "/dev/zero"], USAGE),
    ("check", ["check", "--issuer", "{dead-issuer}", "--cacert", "{missing}",
               "--token", "x"], USAGE),
    ("check", ["check", "--issuer", "{dead-issuer}", "--cacert", "{home}/ca/ca.pem",
               "--token", "x", "--cert", "{bad-pem}"], USAGE),
    ("check", ["check", "--issuer", "{dead-issuer}", "--cacert", "{home}/ca/ca.pem",
               "--token", "not.a.token"], FAILED),
    ("demo-api", ["demo-api", "--home", "{missing}"], USAGE),
    ("federation add", ["federation", "add", "--home", "{missing}", "--name", "k",
                        "--issuer", "https://k8s.example"], USAGE),
    ("federation add", ["federation", "add", "--home", "{home}", "--name", "k",
                        "--issuer", "http://plain", "--jwks", "{missing}"], USAGE),
    ("enroll", ["enroll", "--issuer", "{dead-issuer}", "--cacert", "{home}/ca/ca.pem",
                "--id", "x", "--secret-file", "{missing}", "--cert-out", "{missing}/c",
                "--key-out", "{missing}/k"], USAGE),
    ("enroll", ["enroll", "--issuer", "{dead-issuer}", "--cacert", "{home}/ca/ca.pem",
                "--id", "x", "--secret-file", "/dev/zero", "--cert-out", "{missing}/c",
                "--key-out", "{missing}/k"], USAGE),
    ("enroll", ["enroll", "--issuer", "{dead-issuer}", "--cacert", "{missing}", "--id", "x",
                "--secret-file", "{home}/ca/ca.pem", "--cert-out", "{missing}/c",
                "--key-out", "{missing}/k"], USAGE),
    ("renew", ["renew", "--issuer", "{dead-issuer}", "--cacert", "{home}/ca/ca.pem",
               "--cert", "{missing}", "--key", "{missing}"], USAGE),
    ("renew", ["renew", "--issuer", "{dead-issuer}", "--cacert", "{home}/ca/ca.pem",
               "--cert", "{bad-pem}", "--key", "{bad-pem}"], USAGE),
    ("gate", ["gate", "--issuer", "{dead-issuer}", "--cacert", "{missing}", "--audience", "a"],
     USAGE),
    ("gate", ["gate", "--issuer", "{dead-issuer}", "--cacert", "{home}/ca/ca.pem",
              "--audience", "a", "--listen", "nonsense"], USAGE),
    ("gate", ["gate", "--issuer", "{dead-issuer}", "--cacert", "{home}/ca/ca.pem",
              "--audience", "a", "--config", "{bad-pem}"], USAGE),
    ("trust add", ["trust", "add", "--home", "{missing}", "--name", "t", "--ca", "{bad-pem}"],
     USAGE),
    ("trust add", ["trust", "add", "--home", "{home}", "--name", "t", "--ca", "{missing}"], USAGE),
    ("trust add", ["trust", "add", "--home", "{home}", "--name", "t", "--ca", "{bad-pem}"], USAGE),
    # Devices and broken URLs (the second review: /dev/zero filled memory; tracebacks).
    ("trust add", ["trust", "add", "--home", "{home}", "--name", "t", "--ca", "/dev/zero"], USAGE),
    ("trust add", ["trust", "add", "--home", "{home}", "--name", "t", "--ca", "{home}/ca/ca.pem",
                   "--crl-url", "http://[::1"], USAGE),
    # SPIFFE bundle endpoints: https only, one trust domain, a URL that parses; --ca or a URL.
    ("trust add", ["trust", "add", "--home", "{home}", "--name", "t"], USAGE),
    ("trust add", ["trust", "add", "--home", "{home}", "--name", "t", "--spiffe-bundle-url",
                   "http://spire.example/bundle", "--spiffe-trust-domain", "td.example"], USAGE),
    ("trust add", ["trust", "add", "--home", "{home}", "--name", "t", "--spiffe-bundle-url",
                   "https://spire.example/bundle"], USAGE),
    ("trust add", ["trust", "add", "--home", "{home}", "--name", "t", "--spiffe-bundle-url",
                   "https://spire.example/bundle", "--spiffe-trust-domain", "a.example",
                   "--spiffe-trust-domain", "b.example"], USAGE),
    ("trust add", ["trust", "add", "--home", "{home}", "--name", "t", "--spiffe-bundle-url",
                   "https://[::1", "--spiffe-trust-domain", "td.example"], USAGE),
    # Credentials in the URL would be kept and printed in clear (trust list, every log line);
    # a space or control character makes a URL no fetch can use: both were taken (exit 0).
    ("trust add", ["trust", "add", "--home", "{home}", "--name", "t", "--spiffe-bundle-url",
                   "https://user:pw@spire.example/bundle", "--spiffe-trust-domain",
                   "td.example"], USAGE),
    ("trust add", ["trust", "add", "--home", "{home}", "--name", "t", "--spiffe-bundle-url",
                   "https://spire .example/bundle", "--spiffe-trust-domain", "td.example"], USAGE),
    ("trust add", ["trust", "add", "--home", "{home}", "--name", "t", "--spiffe-bundle-url",
                   "https://spire.example/bun\tdle", "--spiffe-trust-domain", "td.example"], USAGE),
    ("trust add", ["trust", "add", "--home", "{home}", "--name", "t", "--spiffe-bundle-url",
                   "https://spire.example/bundle", "--spiffe-trust-domain", "td.example",
                   "--crl-url", "http://crl.example/c.crl"], USAGE),
    # JWT-SVID clients: an anchor and a SPIFFE ID; the anchor must be registered.
    ("client add", ["client", "add", "--home", "{home}", "--auth-method", "spiffe_jwt"], USAGE),
    ("client add", ["client", "add", "--home", "{home}", "--auth-method", "spiffe_jwt",
                    "--spiffe-id", "spiffe://td.example/a"], USAGE),
    ("client add", ["client", "add", "--home", "{home}", "--auth-method", "spiffe_jwt",
                    "--trust", "nobody", "--spiffe-id", "spiffe://td.example/a/../b"], USAGE),
    ("client add", ["client", "add", "--home", "{home}", "--auth-method", "spiffe_jwt",
                    "--trust", "nobody", "--spiffe-id", "spiffe://td.example/a"], FAILED),
    ("client add", ["client", "add", "--home", "{home}", "--auth-method", "private_key_jwt",
                    "--jwks", "/dev/zero"], USAGE),
    ("client add", ["client", "add", "--home", "{home}", "--auth-method",
                    "self_signed_tls_client_auth", "--cert", "/dev/zero"], USAGE),
    ("federation add", ["federation", "add", "--home", "{home}", "--name", "f",
                        "--issuer", "https://x", "--jwks", "/dev/zero"], USAGE),
    ("federation add", ["federation", "add", "--home", "{home}", "--name", "f",
                        "--issuer", "https://[::1"], USAGE),
    ("federation add", ["federation", "add", "--home", "{home}", "--name", "f",
                        "--issuer", "https://x", "--jwks-uri", "https://[::1"], USAGE),
    ("init", ["init", "--home", "{missing}", "--issuer", "https://[::1"], USAGE),
    ("gate", ["gate", "--issuer", "https://[::1", "--cacert", "{home}/ca/ca.pem",
              "--audience", "a"], USAGE),
    ("trust list", ["trust", "list", "--home", "{missing}"], USAGE),
    ("trust list", ["trust", "list", "--home", "{file}"], USAGE),
    ("trust show", ["trust", "show", "nobody", "--home", "{missing}"], USAGE),
    ("trust show", ["trust", "show", "nobody", "--home", "{home}"], FAILED),
    ("trust remove", ["trust", "remove", "nobody", "--home", "{missing}"], USAGE),
    ("trust remove", ["trust", "remove", "nobody", "--home", "{home}"], FAILED),
    ("federation list", ["federation", "list", "--home", "{missing}"], USAGE),
    ("federation list", ["federation", "list", "--home", "{file}"], USAGE),
    ("federation show", ["federation", "show", "nobody", "--home", "{missing}"], USAGE),
    ("federation show", ["federation", "show", "nobody", "--home", "{home}"], FAILED),
    ("federation remove", ["federation", "remove", "nobody", "--home", "{missing}"], USAGE),
    ("federation remove", ["federation", "remove", "nobody", "--home", "{home}"], FAILED),
    ("demo-api", ["demo-api", "--home", "{home}", "--port", "0"], USAGE),
]
# fmt: on


def test_every_command_has_bad_input_cases() -> None:
    """A new command must come with its bad-input cases here."""
    assert _leaf_commands(build_parser()) == {command for command, _, _ in CASES}


@pytest.mark.parametrize(
    ("argv", "code"),
    [pytest.param(argv, code, id=" ".join(argv)) for _, argv, code in CASES],
)
def test_bad_input_exit_code_and_no_traceback(
    argv: list[str], code: int, shared_home: Home, files: dict[str, str]
) -> None:
    values = {**files, "home": str(shared_home.path)}
    got, out, err = run_cli([arg.format_map(values) for arg in argv])
    assert "Traceback" not in err + out
    assert got == code, err
    assert err.strip(), "a refusal says why on stderr"
    assert err.startswith(("error: ", "refused: ", "mtlsauth ", "usage: ")), err


def test_usage_errors_and_help() -> None:
    assert run_cli(["no-such-command"])[0] == USAGE
    assert run_cli([])[0] == USAGE
    assert run_cli(["--help"])[0] == 0
    assert run_cli(["client", "add", "--help"])[0] == 0


def test_database_that_cannot_be_opened(
    shared_home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's own OS error (SQLite on a path that cannot exist) is a failure, exit 1."""
    monkeypatch.setenv("MTLSAUTH_DATABASE_URL", f"sqlite:///{tmp_path}/a-file/x.db")
    (tmp_path / "a-file").write_text("")
    for argv in (["client", "list"], ["migrate"]):
        code, _, err = run_cli([*argv, "--home", str(shared_home.path)])
        assert code == FAILED, err
        assert "Traceback" not in err


def test_failed_init_leaves_no_half_made_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure late in init (the database) takes back what it made: init can be rerun."""
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("MTLSAUTH_DATABASE_URL", f"sqlite:///{tmp_path}/a-file/x.db")
    home = tmp_path / "home"
    code, _, err = run_cli(["init", "--home", str(home)])
    assert code == FAILED, err
    assert "Traceback" not in err
    assert not home.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(["init", "--home", str(empty)])[0] == FAILED
    assert empty.is_dir()
    assert list(empty.iterdir()) == []
    monkeypatch.delenv("MTLSAUTH_DATABASE_URL")
    code, _, err = run_cli(["init", "--home", str(home), "--json"])
    assert code == 0, err


def test_token_names_the_missing_file(shared_home: Home, files: dict[str, str]) -> None:
    ca = str(shared_home.ca_cert)
    for flags, missing in (
        (["--cacert", files["missing"]], files["missing"]),
        (["--cacert", ca, "--cert", files["missing"], "--key", ca], files["missing"]),
        (["--cacert", ca, "--cert", ca, "--key", files["missing"]], files["missing"]),
    ):
        code, _, err = run_cli(["token", "--issuer", files["dead-issuer"], *flags])
        assert code == USAGE
        assert missing in err


def test_check_reads_a_bounded_token_from_stdin(
    monkeypatch: pytest.MonkeyPatch, shared_home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    """``check --token -`` with endless input stops at the limit (the review: /dev/zero)."""
    endless = io.TextIOWrapper(io.BytesIO(b"\0" * 1_000_000))
    monkeypatch.setattr(sys, "stdin", endless)
    code = main(["check", "--issuer", "https://127.0.0.1:9", "--cacert",
                 str(shared_home.ca_cert), "--token", "-"])  # fmt: skip
    assert code == 2
    assert "more than" in capsys.readouterr().err


def test_pki_init_with_a_broken_crl_base_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unclosed IPv6 literal is a refusal, not a traceback (the second review)."""
    code = main(["pki", "init", "--home", str(tmp_path / "h"), "--crl-base-url", "http://[::1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "does not parse" in err
    assert "Traceback" not in err
