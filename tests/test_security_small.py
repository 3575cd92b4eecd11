"""Operator tooling, attacked: CRL rollback, CLI input that must be refused before anything is
written, DN collisions, key file permissions, and secrets kept off the process list."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from mtlsauth.cli import main
from mtlsauth.core.dn import DNError, parse_dn
from mtlsauth.issuer.tls.revocation import RevocationState
from pki import Authority
from tests.conftest import ClientCert, Home, cli_json, client_context, run_cli, running
from tests.test_revocation import revoke, serial_of, token_request

# --- item 2: a CRL never goes back -----------------------------------------------------------


def _crl(
    authority: Authority, *, number: int, this_update: dt.datetime, revoked: list[int]
) -> bytes:
    ca = authority.issuing()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(this_update)
        .next_update(this_update + dt.timedelta(days=7))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(this_update)
            .build()
        )
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def svc(home: Home) -> ClientCert:
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "svc", "--san-dns", "svc")
    return home.issue("svc", dns=["svc"])


async def _refused_within(port: int, ctx: object, seconds: float) -> None:
    started = time.monotonic()
    # A revoked certificate's connection is answered 401 (decision D10), never served.
    while (await asyncio.to_thread(token_request, port, ctx))[0] != 401:  # type: ignore[arg-type]
        assert time.monotonic() - started < seconds, "the revoked certificate is still accepted"
        await asyncio.sleep(0.1)


async def test_older_crl_written_back_does_not_unrevoke(
    home: Home, svc: ClientCert, caplog: pytest.LogCaptureFixture
) -> None:
    crl_path = home.authority.crl_path
    before_revocation = crl_path.read_bytes()  # CRL #1, signed by init: svc is not on it
    ctx = client_context(home, svc)
    async with running(home) as service:
        port = int(service.url.rsplit(":", 1)[1])
        assert (await asyncio.to_thread(token_request, port, ctx))[0] == 200
        await asyncio.to_thread(revoke, home, serial_of(svc))
        await _refused_within(port, ctx, 5)

        # The attack: the older, genuinely signed CRL written back over the file.
        with caplog.at_level(logging.ERROR, logger="mtlsauth.issuer.tls.contexts"):
            crl_path.write_bytes(before_revocation)
            await asyncio.sleep(1.0)  # reload interval 0.1 s
            for _ in range(3):
                assert (await asyncio.to_thread(token_request, port, ctx))[0] == 401
    assert "CRL refused on reload" in caplog.text


async def test_same_number_with_earlier_this_update_is_refused(home: Home, svc: ClientCert) -> None:
    authority = home.authority
    serial = int(serial_of(svc), 16)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    authority.crl_path.write_bytes(
        _crl(authority, number=50, this_update=now - dt.timedelta(minutes=1), revoked=[serial])
    )
    ctx = client_context(home, svc)
    async with running(home) as service:
        port = int(service.url.rsplit(":", 1)[1])
        assert (await asyncio.to_thread(token_request, port, ctx))[0] == 401
        authority.crl_path.write_bytes(
            _crl(authority, number=50, this_update=now - dt.timedelta(hours=1), revoked=[])
        )
        await asyncio.sleep(1.0)
        assert (await asyncio.to_thread(token_request, port, ctx))[0] == 401
        # Going forward still works: a newer CRL that no longer lists it is taken.
        authority.crl_path.write_bytes(_crl(authority, number=51, this_update=now, revoked=[]))
        started = time.monotonic()
        while (await asyncio.to_thread(token_request, port, ctx))[0] != 200:
            assert time.monotonic() - started < 5, "a newer CRL was not loaded"
            await asyncio.sleep(0.1)


def test_crl_of_a_still_trusted_ca_cannot_vanish(home: Home, svc: ClientCert) -> None:
    authority = home.authority
    issuing = authority.issuing_cert()
    revoke(home, serial_of(svc))
    current = RevocationState.load(authority.crl_path, [issuing])
    assert current.refusal(svc.der) is not None
    kept, refused = current.keep_newest(RevocationState.empty(), {issuing.subject.public_bytes()})
    assert kept.refusal(svc.der) is not None
    assert len(refused) == 1
    # A CA no longer trusted takes its CRL with it.
    gone, refused = current.keep_newest(RevocationState.empty(), set())
    assert gone.by_issuer == {}
    assert refused == []


# --- item 3: rotate-secret validates --grace before it writes --------------------------------


@pytest.mark.parametrize("grace", ["inf", "-inf", "nan", "-1", "1e12", "2592001"])
def test_rotate_secret_refuses_a_bad_grace_and_writes_nothing(home: Home, grace: str) -> None:
    added = home.add_client("--auth-method", "client_secret_basic", "--client-id", "s")
    show = ["client", "show", "s", "--home", str(home.path)]
    before = cli_json(show)
    code, out, err = run_cli(["client", "rotate-secret", "s", "--home", str(home.path),
                              f"--grace={grace}", "--json"])  # fmt: skip
    assert code == 2
    assert out == ""
    assert "--grace" in err
    assert "Traceback" not in err
    assert cli_json(show) == before  # no new secret, the old one keeps no expiry
    assert added["client_secret"]


@pytest.mark.parametrize("grace", ["0", "2592000"])
def test_rotate_secret_accepts_the_documented_range(home: Home, grace: str) -> None:
    home.add_client("--auth-method", "client_secret_basic", "--client-id", "s")
    rotated = cli_json(["client", "rotate-secret", "s", "--home", str(home.path),
                        f"--grace={grace}"])  # fmt: skip
    assert rotated["client_secret"]
    assert rotated["previous_secrets_expire_at"]
    shown = cli_json(["client", "show", "s", "--home", str(home.path)])
    assert len(shown["secrets"]) == 2


# --- item 5: a lone surrogate is a bad name, not a traceback ---------------------------------


@pytest.mark.parametrize("text", ["CN=svc\udc80", "\udcff=x", "CN=a,O=\ud800"])
def test_parse_dn_refuses_a_lone_surrogate(text: str) -> None:
    with pytest.raises(DNError, match="not valid Unicode"):
        parse_dn(text)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--subject-dn", "CN=svc\udc80"), ("--san-uri", "spiffe://td/\udc80"),
     ("--san-email", "a\udc80@example.org")],
)  # fmt: skip
def test_client_add_with_a_surrogate_exits_2(home: Home, flag: str, value: str) -> None:
    code, out, err = run_cli(["client", "add", "--home", str(home.path), "--auth-method",
                              "tls_client_auth", flag, value])  # fmt: skip
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {flag}:")
    assert cli_json(["client", "list", "--home", str(home.path)]) == []


@pytest.mark.parametrize("flag", ["--san-dns", "--san-uri", "--san-email"])
def test_pki_issue_with_an_unencodable_san_is_refused(
    home: Home, tmp_path: Path, flag: str
) -> None:
    code, out, err = run_cli(["pki", "issue", "--home", str(home.path), "--cn", "x", flag,
                              "\udc80@x", "--out", str(tmp_path / "o")])  # fmt: skip
    assert (code, out) == (1, "")
    assert err.startswith("error: invalid subject alternative name")
    assert not (tmp_path / "o").exists()


# --- item 6: key files 0600 in 0700 directories, whatever the umask --------------------------


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
def test_pki_issue_writes_private_files_whatever_the_umask(home: Home, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "svc"
    issued = cli_json(["pki", "issue", "--home", str(home.path), "--cn", "svc",
                       "--out", str(out)])  # fmt: skip
    assert Path(issued["key"]).parent == out
    assert _mode(Path(issued["key"])) == 0o600
    assert _mode(out) == 0o700
    assert _mode(tmp_path / "deep") == 0o700
    # The default place, <home>/certs/<serial>, too; and a renewal's copy of the key.
    issued = cli_json(["pki", "issue", "--home", str(home.path), "--cn", "other"])
    assert _mode(Path(issued["key"])) == 0o600
    assert _mode(Path(issued["key"]).parent) == 0o700
    assert _mode(home.path / "certs") == 0o700
    renewed = cli_json(["pki", "renew", "--home", str(home.path), "--serial", issued["serial"],
                        "--out", str(tmp_path / "renewed")])  # fmt: skip
    assert _mode(Path(renewed["key"])) == 0o600
    assert _mode(tmp_path / "renewed") == 0o700


# --- item 7: the token command takes its secret from a file or the environment ---------------


async def test_token_secret_from_file_or_environment(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sec = await home.aadd_client("--auth-method", "client_secret_post", "--client-id", "p")
    secret_file = tmp_path / "secret"
    secret_file.write_text(sec["client_secret"] + "\n")
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("not-the-secret\n")
    base = ["token", "--issuer", f"https://localhost:{home.port}", "--cacert",
            str(home.ca_cert), "--client-id", "p", "--secret-method", "client_secret_post"]  # fmt: skip
    async with running(home):
        code, out, err = await asyncio.to_thread(
            run_cli, [*base, "--client-secret-file", str(secret_file)]
        )
        assert code == 0, err
        assert json.loads(out)["token_type"] == "Bearer"

        code, _, err = await asyncio.to_thread(
            run_cli, [*base, "--client-secret-file", str(wrong_file)]
        )
        assert code == 1
        assert json.loads(err.removeprefix("error: "))["error"] == "invalid_client"

        monkeypatch.setenv("MTLSAUTH_CLIENT_SECRET", sec["client_secret"])
        code, out, err = await asyncio.to_thread(run_cli, base)
        assert code == 0, err
        # The file, when given, wins over the environment.
        code, _, err = await asyncio.to_thread(
            run_cli, [*base, "--client-secret-file", str(wrong_file)]
        )
        assert code == 1


@pytest.mark.parametrize("content", [None, "", "\n", "two\nlines\n"])
def test_token_bad_secret_file_exits_2(home: Home, tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    code, out, err = run_cli(["token", "--issuer", f"https://localhost:{home.port}", "--cacert",
                              str(home.ca_cert), "--client-id", "p",
                              "--client-secret-file", str(path)])  # fmt: skip
    assert (code, out) == (2, "")
    assert err.startswith("error:")
    assert "--client-secret-file" in err


def test_token_help_says_the_flag_is_visible(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--help"]) == 0  # main() returns argparse's exit code
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--client-secret-file" in help_text
    assert "VISIBLE to other users" in help_text


# --- item 4: names that match each other under D1 are refused --------------------------------


@pytest.mark.parametrize(
    "variant",
    [
        "CN=SVC,O=Org",
        "CN=\uff53\uff56\uff43,O=\uff2f\uff32\uff27",  # full-width
        "CN=svc\x1f,O=Org",
        "CN=svc, O=org ",
        "O=Org+CN=x,CN=svc,O=Org",
    ],
)
def test_client_add_refuses_a_subject_dn_matching_another(home: Home, variant: str) -> None:
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "first",
                    "--subject-dn", "CN=svc,O=Org")  # fmt: skip
    code, out, err = run_cli(["client", "add", "--home", str(home.path), "--auth-method",
                              "tls_client_auth", "--client-id", "second",
                              "--subject-dn", variant])  # fmt: skip
    if variant.startswith("O=Org+CN=x"):
        # Control: a different DN (an extra RDN) is no collision.
        assert code == 0, err
        return
    assert (code, out) == (1, "")
    assert "'first'" in err
    clients = cli_json(["client", "list", "--home", str(home.path)])
    assert [c["client_id"] for c in clients] == ["first"]


def test_client_add_refuses_a_matching_san(home: Home) -> None:
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "first",
                    "--san-dns", "svc.example")  # fmt: skip
    code, _, err = run_cli(["client", "add", "--home", str(home.path), "--auth-method",
                            "tls_client_auth", "--san-dns", "SVC.example."])  # fmt: skip
    assert code == 1
    assert "'first'" in err
    # Another kind of name with the same text is a different name.
    home.add_client("--auth-method", "tls_client_auth", "--subject-dn", "CN=svc.example")


def _issue(home: Home, cn: str) -> tuple[int, str, str]:
    return run_cli(["pki", "issue", "--home", str(home.path), "--cn", cn, "--json"])


def test_pki_issue_refuses_a_subject_matching_a_valid_certificate(home: Home) -> None:
    code, out, err = _issue(home, "svc")
    assert code == 0, err
    first = json.loads(out)["serial"]
    for variant in ("SVC", "\uff53\uff56\uff43", "svc\x1f", " svc"):
        code, out, err = _issue(home, variant)
        assert (code, out) == (1, ""), variant
        assert first in err
    records = home.authority.inventory.query(profile="client")
    assert [r.serial for r in records] == [first]
    # The same subject again (a rotation) and a renewal are the same identity: fine.
    code, out, err = _issue(home, "svc")
    assert code == 0, err
    second = json.loads(out)["serial"]
    code, _, err = run_cli(["pki", "renew", "--home", str(home.path), "--serial", first])
    assert code == 0, err
    # Once every certificate of that subject is revoked, the name is free again.
    for record in home.authority.inventory.query(status="valid", profile="client"):
        revoke(home, record.serial)
    assert second in {r.serial for r in home.authority.inventory.query(status="revoked")}
    code, _, err = _issue(home, "SVC")
    assert code == 0, err
