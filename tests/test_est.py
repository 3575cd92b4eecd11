"""EST (RFC 7030) on the token service, driven by clients nobody here wrote (openssl req,
curl, openssl pkcs7) and by ``mtlsauth enroll`` / ``renew``: first enrollment with a one-time
credential, a token bound to the new certificate, re-enrollment with a new key, short-lived
certificates renewed by the daemon, a running TokenClient switching to them, and the CA
inventory on /metrics."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtlsauth.client import TokenClient
from mtlsauth.core.thumbprint import x5t_s256
from mtlsauth.issuer.est import inventory_metrics
from pki.ca import NO_REV_AVAIL
from pki.enroll import EnrollDenied
from tests.conftest import ClientCert, Home, Service, cli_json, client_context, run_cli, running

EST = "/.well-known/est"


# --- helpers ---------------------------------------------------------------------------------


async def sh(command: str, cwd: Path) -> tuple[int, str, str]:
    """Run a shell command line as an operator would type it."""
    proc = await asyncio.create_subprocess_shell(
        command,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def cli(*argv: str) -> tuple[int, str, str]:
    """``mtlsauth`` in-process, off the event loop the test server runs on."""
    return await asyncio.to_thread(run_cli, list(argv))


def enroll_token(home: Home, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = cli_json(["pki", "enroll-token", "--home", str(home.path), *args])
    return result


def csr_b64(
    subject: list[x509.NameAttribute[Any]] | None = None, sans: list[x509.GeneralName] | None = None
) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject or []))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    return key, base64.encodebytes(der)


async def post_est(
    service: Service,
    operation: str,
    body: bytes,
    *,
    auth: tuple[str, str] | None = None,
    cert: ClientCert | None = None,
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/pkcs10"}
    if auth:
        basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{service.url}{EST}/{operation}",
            data=body,
            headers=headers,
            ssl=service.ssl_context(cert),
        ) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


def error_of(body: bytes) -> tuple[str, str]:
    doc = json.loads(body)
    return doc["error"], doc["error_description"]


def leaf_of(pem: bytes, cn: str) -> x509.Certificate:
    (leaf,) = [
        c
        for c in x509.load_pem_x509_certificates(pem)
        if c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
    ]
    return leaf


def client_cert(directory: Path) -> ClientCert:
    """The files ``mtlsauth enroll`` wrote, as the test helpers want them."""
    cert = directory / "cert.pem"
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    return ClientCert(cert=cert, key=directory / "key.pem", chain=cert, der=der)


def cnf_of(token: str) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    return str(claims["cnf"]["x5t#S256"])


async def enroll_cli(home: Home, service: Service, out: Path, *token_args: str) -> ClientCert:
    token = enroll_token(home, *token_args)
    secret = out.parent / f"{out.name}.secret"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(token["secret"] + "\n")
    code, stdout, err = await cli(
        "enroll", "--issuer", service.url, "--cacert", str(home.ca_cert), "--id", token["id"],
        "--secret-file", str(secret), "--cert-out", str(out / "cert.pem"),
        "--key-out", str(out / "key.pem"), "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["cert"] == str(out / "cert.pem")
    return client_cert(out)


async def renew_cli(home: Home, service: Service, cert: ClientCert, *extra: str) -> int:
    code, _, _ = await cli(
        "renew", "--issuer", service.url, "--cacert", str(home.ca_cert),
        "--cert", str(cert.cert), "--key", str(cert.key), *extra,
    )  # fmt: skip
    return code


def audit_events(home: Home) -> list[dict[str, Any]]:
    lines = (home.path / "ca" / "audit.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


# --- the server side, with openssl and curl ---------------------------------------------------


async def test_operator_enrolls_with_openssl_and_curl(home: Home, tmp_path: Path) -> None:
    token = enroll_token(home, "--cn", "billing", "--san-dns", "billing.internal")
    assert token["url"] == f"{home.settings.issuer}{EST}/simpleenroll"
    expires = dt.datetime.fromisoformat(token["expires_at"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=59) < expires <= dt.timedelta(hours=1)
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "billing",
                    "--san-dns", "billing.internal")  # fmt: skip
    work = tmp_path / "op"
    work.mkdir()
    ca = home.ca_cert
    async with running(home) as service:
        code, _, err = await sh(
            f"curl -sS --fail --cacert {ca} {service.url}{EST}/cacerts -o cacerts.b64 && "
            "base64 -d cacerts.b64 > cacerts.der && "
            "openssl pkcs7 -inform DER -in cacerts.der -print_certs -out cacerts.pem",
            work,
        )
        assert code == 0, err
        ca_certs = x509.load_pem_x509_certificates((work / "cacerts.pem").read_bytes())
        assert {c.subject.rfc4514_string() for c in ca_certs} == {
            "CN=mtlsauth root CA",
            "CN=mtlsauth issuing CA",
        }

        code, _, err = await sh(
            "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
            "-keyout key.pem -subj /CN=billing -addext subjectAltName=DNS:billing.internal "
            "-outform DER -out req.der && base64 req.der > req.b64",
            work,
        )
        assert code == 0, err

        def enroll(out: str) -> str:
            return (
                f"curl -sS --cacert {ca} --user {token['id']}:{token['secret']} "
                "-H 'Content-Type: application/pkcs10' --data-binary @req.b64 "
                f"-o {out} -w '%{{http_code}}' {service.url}{EST}/simpleenroll"
            )

        code, status, err = await sh(enroll("cert.b64"), work)
        assert (code, status) == (0, "200"), err
        code, _, err = await sh(
            "base64 -d cert.b64 > cert.p7 && "
            "openssl pkcs7 -inform DER -in cert.p7 -print_certs -out certs.pem",
            work,
        )
        assert code == 0, err
        leaf = leaf_of((work / "certs.pem").read_bytes(), "billing")
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == ["billing.internal"]
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert points[0].full_name[0].value.startswith(home.settings.issuer + "/crl/")
        serial = format(leaf.serial_number, "x")
        record = home.authority.inventory.get(serial)
        assert record is not None
        assert record.status == "valid"
        issued = [e for e in audit_events(home) if e.get("serial") == serial]
        assert issued[0]["requested_by"] == f"enroll-token:{token['id']}"

        # The certificate gets a token bound to it.
        der = leaf.public_bytes(serialization.Encoding.DER)
        issuing = x509.load_pem_x509_certificate((home.path / "ca" / "issuing.pem").read_bytes())
        chain = work / "chain.pem"
        chain.write_bytes(
            leaf.public_bytes(serialization.Encoding.PEM)
            + issuing.public_bytes(serialization.Encoding.PEM)
        )
        cert = ClientCert(cert=chain, key=work / "key.pem", chain=chain, der=der)
        status_, body = await service.token(cert=cert, client_id="billing")
        assert status_ == 200, body
        assert cnf_of(body["access_token"]) == x5t_s256(der)

        # The credential is spent.
        code, status, _ = await sh(enroll("again.json"), work)
        assert status == "401"
        assert json.loads((work / "again.json").read_text())["error"] == "invalid_client"


async def test_a_credential_fixes_the_names_and_checks_possession(home: Home) -> None:
    token = enroll_token(home, "--cn", "billing", "--san-dns", "billing.internal")
    auth = (token["id"], token["secret"])
    cn = x509.NameAttribute(NameOID.COMMON_NAME, "billing")
    dns = x509.DNSName("billing.internal")
    async with running(home) as service:
        cases: list[tuple[list[x509.NameAttribute[Any]], list[x509.GeneralName], str]] = [
            ([x509.NameAttribute(NameOID.COMMON_NAME, "payroll")], [dns], "CN=payroll"),
            ([cn], [dns, x509.DNSName("evil.internal")], "evil.internal"),
            ([cn, x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corp")], [dns], "O=Corp"),
            ([cn], [x509.UniformResourceIdentifier("spiffe://x/y")], "spiffe://x/y"),
        ]
        for subject, sans, named in cases:
            _, body = csr_b64(subject, sans)
            status, _, answer = await post_est(service, "simpleenroll", body, auth=auth)
            error, description = error_of(answer)
            assert (status, error) == (400, "invalid_request"), answer
            assert named in description

        # Proof of possession: a CSR whose signature does not verify.
        _, body = csr_b64([cn], [dns])
        der = bytearray(base64.b64decode(body))
        der[-1] ^= 0x01  # the last byte of the signature's s: still DER, no longer valid
        tampered = x509.load_der_x509_csr(bytes(der))
        assert not tampered.is_signature_valid
        status, _, answer = await post_est(
            service, "simpleenroll", base64.encodebytes(bytes(der)), auth=auth
        )
        assert (status, error_of(answer)[0]) == (400, "invalid_request")
        assert "signature" in error_of(answer)[1]
        # Not base64 / not a CSR / wrong media type.
        status, _, _ = await post_est(service, "simpleenroll", b"%%%", auth=auth)
        assert status == 400

        # None of the refusals spent the credential; an empty request gets the fixed names.
        _, body = csr_b64()
        status, headers, answer = await post_est(service, "simpleenroll", body, auth=auth)
        assert status == 200, answer
        assert headers["Content-Type"] == "application/pkcs7-mime; smime-type=certs-only"


async def test_unknown_wrong_expired_credentials_are_401_then_guesses_throttled(home: Home) -> None:
    expiring = enroll_token(home, "--cn", "soon", "--ttl", "1")
    good = enroll_token(home, "--cn", "later")
    settings = dataclasses.replace(home.settings, throttle_limit=3)
    _, body = csr_b64()
    await asyncio.sleep(1.1)
    async with running(home, settings) as service:
        for auth in [
            ("et_unknown", "x" * 43),
            (good["id"], "wrong-secret"),
            (expiring["id"], expiring["secret"]),
        ]:
            status, headers, answer = await post_est(service, "simpleenroll", body, auth=auth)
            assert (status, error_of(answer)[0]) == (401, "invalid_client"), auth
            assert headers["WWW-Authenticate"].startswith("Basic ")
        status, _, _ = await post_est(service, "simpleenroll", body)
        assert status == 401
        # Three failures from this source: a further guess waits now...
        status, headers, answer = await post_est(
            service, "simpleenroll", body, auth=(good["id"], "another-guess")
        )
        assert (status, error_of(answer)[0]) == (429, "slow_down")
        assert int(headers["Retry-After"]) > 0
        # ...but the right credential (it cannot be guessed) is never locked out by someone
        # else's failures at the same address (the second review: it got 429).
        status, _, answer = await post_est(
            service, "simpleenroll", body, auth=(good["id"], good["secret"])
        )
        assert status == 200, answer


async def test_enrollment_needs_the_ca_passphrase_and_the_setting(
    home: Home, monkeypatch: Any
) -> None:
    token = enroll_token(home, "--cn", "billing")
    _, body = csr_b64()
    (home.path / "ca" / "passphrase").rename(home.path / "passphrase.offline")
    monkeypatch.delenv("MTLSAUTH_CA_PASSPHRASE", raising=False)
    monkeypatch.delenv("MTLSAUTH_CA_PASSPHRASE_FILE", raising=False)
    async with running(home) as service:
        status, _, _ = await post_est(
            service, "simpleenroll", body, auth=(token["id"], token["secret"])
        )
        assert status == 404
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{service.url}{EST}/cacerts", ssl=service.ssl_context()) as resp,
        ):
            assert resp.status == 200  # the CA certificates are public either way
    monkeypatch.setenv("MTLSAUTH_CA_PASSPHRASE_FILE", str(home.path / "passphrase.offline"))
    settings = dataclasses.replace(home.settings, enrollment=False)
    async with running(home, settings) as service:
        status, _, _ = await post_est(
            service, "simpleenroll", body, auth=(token["id"], token["secret"])
        )
        assert status == 404
    async with running(home) as service:
        status, _, _ = await post_est(
            service, "simpleenroll", body, auth=(token["id"], token["secret"])
        )
        assert status == 200


# --- mtlsauth enroll / renew -------------------------------------------------------------------


async def test_enroll_then_renew_with_a_new_key(home: Home, tmp_path: Path) -> None:
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                    "--san-dns", "svc.internal")  # fmt: skip
    out = tmp_path / "svc"
    async with running(home) as service:
        first = await enroll_cli(home, service, out, "--cn", "svc", "--san-dns", "svc.internal")
        assert (out / "key.pem").stat().st_mode & 0o777 == 0o600
        old = tmp_path / "old"
        old.mkdir()
        (old / "cert.pem").write_bytes(first.cert.read_bytes())
        (old / "key.pem").write_bytes(first.key.read_bytes())
        old_cert = client_cert(old)
        status, body = await service.token(cert=first, client_id="svc")
        assert status == 200
        assert cnf_of(body["access_token"]) == x5t_s256(first.der)

        os.chmod(first.cert, 0o640)
        marker = tmp_path / "reloaded"
        code = await renew_cli(home, service, first, "--new-key", "--exec", f"touch {marker}")
        assert code == 0
        assert marker.exists()
        second = client_cert(out)
        assert second.der != first.der
        assert (out / "key.pem").read_bytes() != (old / "key.pem").read_bytes()
        assert first.cert.stat().st_mode & 0o777 == 0o640  # the mode is kept
        assert (out / "key.pem").stat().st_mode & 0o777 == 0o600
        new = x509.load_der_x509_certificate(second.der)
        was = x509.load_der_x509_certificate(first.der)
        assert new.subject == was.subject
        assert new.public_key() != was.public_key()

        status, body = await service.token(cert=second, client_id="svc")
        assert status == 200
        assert cnf_of(body["access_token"]) == x5t_s256(second.der)
        # The old certificate stays valid until it expires or is revoked.
        status, body = await service.token(cert=old_cert, client_id="svc")
        assert status == 200
        assert cnf_of(body["access_token"]) == x5t_s256(old_cert.der)
        serial = format(new.serial_number, "x")
        record = home.authority.inventory.get(serial)
        assert record is not None
        assert record.renewed_from == format(was.serial_number, "x")
        event = next(e for e in audit_events(home) if e.get("serial") == serial)
        assert event["requested_by"] == f"certificate:{format(was.serial_number, 'x')}"

        # A re-enrollment must keep the names.
        _, body_ = csr_b64([x509.NameAttribute(NameOID.COMMON_NAME, "other")])
        status, _, answer = await post_est(service, "simplereenroll", body_, cert=second)
        assert (status, error_of(answer)[0]) == (400, "invalid_request")
        # ... and needs a certificate.
        status, _, answer = await post_est(service, "simplereenroll", body_)
        assert (status, error_of(answer)[0]) == (401, "invalid_client")


async def test_revoked_or_expired_certificates_cannot_reenroll(home: Home, tmp_path: Path) -> None:
    async with running(home) as service:
        cert = await enroll_cli(home, service, tmp_path / "a", "--cn", "gone")
        home.authority.revoke(format(x509.load_der_x509_certificate(cert.der).serial_number, "x"))
        before = cert.cert.read_bytes()
        assert await renew_cli(home, service, cert) == 1
        assert cert.cert.read_bytes() == before

        # An expired certificate of this CA, in its inventory.
        authority = home.authority
        issuing = authority.issuing()
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        expired = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "late")]))
            .issuer_name(issuing.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=2))
            .not_valid_after(now - dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(issuing.key, hashes.SHA256())
        )
        authority.inventory.add(expired, profile="client")
        late = tmp_path / "late"
        late.mkdir()
        (late / "cert.pem").write_bytes(
            expired.public_bytes(serialization.Encoding.PEM) + issuing.cert_pem()
        )
        (late / "key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        assert await renew_cli(home, service, client_cert(late)) == 1
    # Where no handshake refuses it (a proxy forwarding it), the CA refuses it.
    _, body = csr_b64([x509.NameAttribute(NameOID.COMMON_NAME, "late")])
    csr = x509.load_der_x509_csr(base64.b64decode(body))
    der = expired.public_bytes(serialization.Encoding.DER)
    with pytest.raises(EnrollDenied) as refused:
        authority.reenroll(der, csr)
    assert refused.value.reason == "expired"


# --- short-lived certificates, the daemon, a running TokenClient, /metrics ----------------------


async def test_daemon_renews_a_short_lived_certificate_and_the_client_follows(
    home: Home, tmp_path: Path
) -> None:
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "edge",
                    "--san-uri", "spiffe://example.org/edge")  # fmt: skip
    out = tmp_path / "edge"
    async with running(home) as service:
        first = await enroll_cli(
            home, service, out, "--cn", "edge", "--san-uri", "spiffe://example.org/edge",
            "--hours", "1",
        )  # fmt: skip
        cert = x509.load_der_x509_certificate(first.der)
        assert any(ext.oid == NO_REV_AVAIL and not ext.critical for ext in cert.extensions)
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert dt.timedelta(hours=1) <= lifetime <= dt.timedelta(hours=1, minutes=10)
        # RFC 9608 §4: no CRL distribution point beside noRevAvail.
        assert not any(isinstance(e.value, x509.CRLDistributionPoints) for e in cert.extensions)

        async with TokenClient.from_files(
            issuer=home.settings.issuer, cacert=home.ca_cert, cert=first.cert, key=first.key,
            client_id="edge",
        ) as tokens:  # fmt: skip
            assert cnf_of(await tokens.token()) == x5t_s256(first.der)
            assert cnf_of(await tokens.token()) == x5t_s256(first.der)  # cached
            assert tokens.requests == 1
            # 0.001 of an hour: the daemon renews after about 3.6 s instead of 40 minutes.
            daemon = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mtlsauth", "renew", "--issuer", service.url,
                "--cacert", str(home.ca_cert), "--cert", str(first.cert), "--key",
                str(first.key), "--new-key", "--daemon", "--renew-at", "0.001",
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert daemon.stderr is not None
            log = b""
            try:
                # The daemon writes the files, then logs: wait for the log line, so a loaded
                # machine cannot stop it between the two.
                async with asyncio.timeout(30):
                    while b"renewed: certificate" not in log:
                        line = await daemon.stderr.readline()
                        assert line, f"the daemon stopped: {log!r}"
                        log += line
            finally:
                daemon.terminate()
                await daemon.communicate()
            assert client_cert(out).der != first.der
            second = client_cert(out)
            renewed = x509.load_der_x509_certificate(second.der)
            assert any(ext.oid == NO_REV_AVAIL for ext in renewed.extensions)
            assert renewed.not_valid_after_utc - renewed.not_valid_before_utc <= lifetime

            # The running client uses the new certificate for its next token.
            token = await tokens.token()
            assert cnf_of(token) == x5t_s256(second.der)
            assert tokens.requests == 2

        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{service.url}/metrics", ssl=client_context(home)) as resp,
        ):
            text = await resp.text()
    assert 'mtlsauth_ca_client_certs_expiring{within="7d"}' in text
    assert 'mtlsauth_ca_client_certs_expiring{within="30d"}' in text
    renewal = [
        line
        for line in text.splitlines()
        if line.startswith(
            'mtlsauth_ca_client_cert_last_renewal_timestamp_seconds{subject="CN=edge"}'
        )
    ]
    assert len(renewal) == 1
    assert abs(float(renewal[0].split()[-1]) - dt.datetime.now(dt.UTC).timestamp()) < 60


def test_pki_issue_makes_short_lived_certificates(home: Home) -> None:
    out = cli_json(["pki", "issue", "--home", str(home.path), "--cn", "edge", "--hours", "2"])
    cert = x509.load_pem_x509_certificate(Path(out["cert"]).read_bytes())
    assert any(ext.oid == NO_REV_AVAIL and not ext.critical for ext in cert.extensions)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(hours=2) <= lifetime <= dt.timedelta(hours=2, minutes=10)
    code, _, err = run_cli(
        ["pki", "issue", "--home", str(home.path), "--cn", "x", "--hours", "169"]
    )
    assert code == 1
    assert "--hours must be from 1 to 168" in err
    code, _, err = run_cli(  # argparse: one lifetime or the other
        ["pki", "issue", "--home", str(home.path), "--cn", "x", "--hours", "1", "--days", "2"]
    )
    assert code == 2, err
    # A renewal keeps it short-lived, and as short.
    renewed = cli_json(["pki", "renew", "--home", str(home.path), "--serial", out["serial"]])
    again = x509.load_pem_x509_certificate(Path(renewed["cert"]).read_bytes())
    assert any(ext.oid == NO_REV_AVAIL for ext in again.extensions)
    assert again.not_valid_after_utc - again.not_valid_before_utc <= dt.timedelta(
        hours=2, minutes=10
    )


def test_inventory_metrics_count_what_expires_and_who_renewed(home: Home) -> None:
    authority = home.authority
    soon = authority.issue_client(common_name="soon", days=5)
    authority.issue_client(common_name="month", days=20)
    authority.issue_client(common_name="later", days=90)
    gone = authority.issue_client(common_name="gone", days=3)
    authority.revoke(gone.record.serial)
    authority.renew(soon.record.serial)
    text = inventory_metrics(home.path / "ca").decode()
    assert 'mtlsauth_ca_client_certs_expiring{within="7d"} 2.0' in text  # soon and its renewal
    assert 'mtlsauth_ca_client_certs_expiring{within="30d"} 3.0' in text
    assert 'mtlsauth_ca_client_cert_last_renewal_timestamp_seconds{subject="CN=soon"}' in text
    assert 'last_renewal_timestamp_seconds{subject="CN=month"}' not in text
    assert 'expiry_timestamp_seconds{subject="CN=gone"}' not in text  # revoked
    assert inventory_metrics(home.path / "nowhere") == b""


async def test_daemon_retries_with_back_off_while_the_issuer_is_down(
    home: Home, tmp_path: Path
) -> None:
    out = tmp_path / "svc"
    async with running(home) as service:
        first = await enroll_cli(home, service, out, "--cn", "svc", "--hours", "1")
        url = service.url
    # Due after about 1.8 s, while nothing listens.
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mtlsauth", "renew", "--issuer", url,
        "--cacert", str(home.ca_cert), "--cert", str(first.cert), "--key", str(first.key),
        "--daemon", "--renew-at", "0.0005",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.sleep(4)
        assert client_cert(out).der == first.der
        assert daemon.returncode is None
        async with running(home):
            deadline = asyncio.get_running_loop().time() + 30
            while client_cert(out).der == first.der:
                assert daemon.returncode is None, "the daemon stopped"
                assert asyncio.get_running_loop().time() < deadline, "no renewal in 30 s"
                await asyncio.sleep(0.2)
    finally:
        daemon.terminate()
        _, log = await daemon.communicate()
    assert b"renewal failed" in log
    assert b"retrying in" in log
    assert b"renewed: certificate" in log


def test_an_unreadable_inventory_leaves_the_other_metrics_alone(home: Home) -> None:
    (home.path / "ca" / "inventory.db").write_bytes(b"not a database" * 100)
    assert inventory_metrics(home.path / "ca") == b""


async def test_a_stolen_key_cannot_mint_unrevocable_siblings(home: Home, tmp_path: Path) -> None:
    """The second review: 60 re-enrollments from one certificate all succeeded, and revoking
    it left every renewal valid. A certificate re-enrolls at most twice; ``pki revoke
    --with-renewals`` takes every renewal made from it, at any depth."""
    async with running(home) as service:
        cert = await enroll_cli(home, service, tmp_path / "a", "--cn", "stolen")
        parent = format(x509.load_der_x509_certificate(cert.der).serial_number, "x")
        name = [x509.NameAttribute(NameOID.COMMON_NAME, "stolen")]
        statuses = []
        for _ in range(3):
            _, body = csr_b64(name)
            status, _, answer = await post_est(service, "simplereenroll", body, cert=cert)
            statuses.append(status)
        assert statuses == [200, 200, 401], answer
    children = home.authority.inventory.query(renewed_from=parent)
    assert len(children) == 2
    grandchild = home.authority.renew(children[0].serial)  # a renewal of a renewal
    code, _, err = run_cli(["pki", "revoke", "--home", str(home.path), "--serial", parent,
                            "--reason", "key_compromise", "--with-renewals"])  # fmt: skip
    assert code == 0, err
    for serial in (*(c.serial for c in children), grandchild.record.serial):
        record = home.authority.inventory.get(serial)
        assert record is not None
        assert (record.status, record.reason) == ("revoked", "key_compromise")
