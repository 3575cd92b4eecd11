"""``mtlsauth enroll`` and ``mtlsauth renew``: a client's certificate over EST (RFC 7030).

``enroll`` makes a key here (it never leaves the machine), sends a CSR with an enrollment
credential (§4.2.1) and writes the certificate (chain included) and the key (0600). ``renew``
re-enrolls with the current certificate (§4.2.2), by default with the same key, with
``--new-key`` a fresh one; ``--daemon`` keeps doing it at two thirds of each certificate's
lifetime (with jitter), retrying with back-off while the issuer is unreachable. Files are
replaced atomically (a reader sees the old file or the new one, never half of one) and keep
their modes; ``--exec`` runs a command after each renewal (to reload a service).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import random
import shlex
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from mtlsauth.cli.common import CLIError, emit, read_secret_file, url
from mtlsauth.cli.logs import configure_logging
from mtlsauth.client import EnrollError, client_ssl_context, est_enroll
from mtlsauth.core.thumbprint import x5t_s256
from pki.ca import KEY_TYPES, KeyType, PrivateKey, generate_key, make_private_dir

__all__ = ["add_parsers", "renew_forever", "renew_once"]

log = logging.getLogger("mtlsauth.renew")

#: Renew when this share of the certificate's lifetime has passed.
RENEW_AT: Final = 2 / 3
#: Up to this share of the wait is taken off at random, so a fleet issued at once does not
#: come back at once.
JITTER: Final = 0.1
#: Back-off between failed attempts: from the first to the longest, doubling.
BACKOFF_FIRST: Final = 1.0
BACKOFF_MAX: Final = 300.0
#: Answers that retrying cannot change (refused, not authenticated, not offered).
PERMANENT: Final = frozenset({400, 401, 403, 404, 415})


# --- files -----------------------------------------------------------------------------------


def replace_file(path: Path, data: bytes, *, default_mode: int) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file in the same directory, then
    rename), keeping the mode of the file it replaces (``default_mode`` for a new one)."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = default_mode
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pem(certificates: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (OSError, ValueError, IndexError) as exc:
        raise CLIError(f"cannot read the certificate {path}: {exc}", code=2) from exc


def _read_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CLIError(f"cannot read the key {path} (unencrypted PEM): {exc}", code=2) from exc
    if not isinstance(key, PrivateKey):
        raise CLIError(f"the key {path} is of an unsupported type", code=2)
    return key


def _key_type_of(key: PrivateKey) -> KeyType:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ec-p384" if key.curve.key_size >= 384 else "ec-p256"
    size = key.key_size
    return "rsa-4096" if size >= 4096 else "rsa-3072" if size >= 3072 else "rsa-2048"


def _csr(
    key: PrivateKey, subject: x509.Name, sans: x509.SubjectAlternativeName | None
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans is not None:
        builder = builder.add_extension(sans, critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def _summary(certificates: list[x509.Certificate], cert: Path, key: Path) -> dict[str, str]:
    leaf = certificates[0]
    return {
        "cert": str(cert),
        "key": str(key),
        "serial": format(leaf.serial_number, "x"),
        "subject": leaf.subject.rfc4514_string(),
        "not_after": leaf.not_valid_after_utc.isoformat(),
        "x5t#S256": x5t_s256(leaf.public_bytes(serialization.Encoding.DER)),
    }


def _context(cacert: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    try:
        return client_ssl_context(cacert, cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise CLIError(f"cannot load the TLS files: {exc}", code=2) from exc


def _reason(exc: EnrollError) -> str:
    return f"{exc} (HTTP {exc.status})" if exc.status is not None else str(exc)


# --- enroll ----------------------------------------------------------------------------------


def _enroll(args: argparse.Namespace) -> int:
    secret = read_secret_file("--secret-file", args.secret_file)
    context = _context(Path(args.cacert))
    cert_out, key_out = Path(args.cert_out), Path(args.key_out)
    try:
        # Before the credential is spent: it cannot be used twice.
        make_private_dir(key_out.parent)
        cert_out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot make the output directories: {exc}") from exc
    key = generate_key(args.key_type)
    # The names come from the credential: the request asks for none of its own.
    csr = _csr(key, x509.Name([]), None)
    try:
        certificates = asyncio.run(
            est_enroll(args.issuer, context, csr, credential=(args.id, secret))
        )
    except EnrollError as exc:
        raise CLIError(f"enrollment failed: {_reason(exc)}") from exc
    try:
        replace_file(key_out, _key_pem(key), default_mode=0o600)
        os.chmod(key_out, 0o600)  # a key is never readable by others, whatever was there
        replace_file(cert_out, _pem(certificates), default_mode=0o644)
    except OSError as exc:
        raise CLIError(f"cannot write the certificate files: {exc}") from exc
    emit(args, _summary(certificates, cert_out, key_out))
    return 0


# --- renew -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Renewal:
    """What ``renew`` works on."""

    issuer: str
    cacert: Path
    cert: Path
    key: Path
    new_key: bool = False


async def renew_once(job: Renewal) -> list[x509.Certificate]:
    """One re-enrollment (RFC 7030 §4.2.2) with the current files; they are replaced on
    success (the key first when it is new). EnrollError when refused or unreachable."""
    current = _read_cert(job.cert)
    key = _read_key(job.key)
    context = _context(job.cacert, job.cert, job.key)
    if job.new_key:
        key = generate_key(_key_type_of(key))
    try:
        sans = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = None
    certificates = await est_enroll(job.issuer, context, _csr(key, current.subject, sans))
    if job.new_key:
        replace_file(job.key, _key_pem(key), default_mode=0o600)
    replace_file(job.cert, _pem(certificates), default_mode=0o644)
    return certificates


async def _run_exec(command: str) -> None:
    argv = shlex.split(command)
    try:
        proc = await asyncio.create_subprocess_exec(*argv)
    except OSError as exc:
        log.error("--exec %s: cannot run it: %s", command, exc)
        return
    code = await proc.wait()
    (log.info if code == 0 else log.error)("--exec %s: exit %d", command, code)


def next_renewal(cert: x509.Certificate, share: float, now: dt.datetime) -> float:
    """Seconds until ``cert`` is due: ``share`` of its lifetime, less a random jitter."""
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    due = cert.not_valid_before_utc + lifetime * share
    wait = (due - now).total_seconds()
    return max(0.0, wait - random.uniform(0, JITTER) * max(0.0, wait))  # noqa: S311 - not crypto


async def renew_forever(job: Renewal, *, share: float = RENEW_AT, exec_: str | None = None) -> int:
    """Renew each certificate when ``share`` of its lifetime has passed, forever; returns
    1 only when renewing cannot succeed any more (refused, or the certificate expired)."""
    while True:
        current = _read_cert(job.cert)
        wait = next_renewal(current, share, dt.datetime.now(dt.UTC))
        due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait)
        log.info(
            "certificate %x (%s) expires %s; renewing at %s",
            current.serial_number,
            current.subject.rfc4514_string(),
            current.not_valid_after_utc.isoformat(timespec="seconds"),
            due.isoformat(timespec="seconds"),
        )
        await asyncio.sleep(wait)
        backoff = BACKOFF_FIRST
        while True:
            if dt.datetime.now(dt.UTC) >= current.not_valid_after_utc:
                log.error(
                    "certificate %x expired before it could be renewed: enroll again with a "
                    "new credential (mtlsauth pki enroll-token, mtlsauth enroll)",
                    current.serial_number,
                )
                return 1
            try:
                renewed = await renew_once(job)
                break
            except EnrollError as exc:
                if exc.status in PERMANENT:
                    log.error("renewal refused, giving up: %s", _reason(exc))
                    return 1
                left = (current.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds()
                delay = min(backoff, max(1.0, left / 10))
                log.warning("renewal failed: %s; retrying in %.0f s", _reason(exc), delay)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except OSError as exc:
                log.error("cannot write the renewed files: %s; retrying in %.0f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        log.info(
            "renewed: certificate %x, valid until %s",
            renewed[0].serial_number,
            renewed[0].not_valid_after_utc.isoformat(timespec="seconds"),
        )
        if exec_:
            await _run_exec(exec_)


def _renew(args: argparse.Namespace) -> int:
    if not 0 < args.renew_at < 1:
        raise CLIError(f"--renew-at must be between 0 and 1, got {args.renew_at}", code=2)
    job = Renewal(
        issuer=args.issuer,
        cacert=Path(args.cacert),
        cert=Path(args.cert),
        key=Path(args.key),
        new_key=args.new_key,
    )
    if args.daemon:
        configure_logging("INFO", "text")
        try:
            return asyncio.run(renew_forever(job, share=args.renew_at, exec_=args.exec))
        except KeyboardInterrupt:
            return 0
    try:
        certificates = asyncio.run(renew_once(job))
    except EnrollError as exc:
        raise CLIError(f"renewal failed: {_reason(exc)}") from exc
    except OSError as exc:
        raise CLIError(f"cannot write the renewed files: {exc}") from exc
    if args.exec:
        asyncio.run(_run_exec(args.exec))
    emit(args, _summary(certificates, job.cert, job.key))
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    enroll = sub.add_parser(
        "enroll",
        help="get a client certificate over EST with a one-time enrollment credential",
        description="Make a key here, send a CSR to the issuer's EST simpleenroll (RFC 7030) "
        "with the credential from 'mtlsauth pki enroll-token', write the certificate (with its "
        "chain) and the key (0600). Prints cert, key, serial, subject, not_after, x5t#S256.",
    )
    enroll.add_argument("--issuer", required=True, type=url, help="the token service's URL")
    enroll.add_argument("--cacert", required=True, help="CA bundle that verifies the server")
    enroll.add_argument("--id", required=True, help="the enrollment credential's id")
    enroll.add_argument("--secret-file", required=True, help="file holding its secret")
    enroll.add_argument("--cert-out", required=True, help="where to write the certificate")
    enroll.add_argument("--key-out", required=True, help="where to write the key (0600)")
    enroll.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256")
    enroll.add_argument("--json", action="store_true", help="print the result as JSON")
    enroll.set_defaults(handler=_enroll)

    renew = sub.add_parser(
        "renew",
        help="renew a client certificate over EST (simplereenroll), once or as a daemon",
        description="Re-enroll with the current certificate (same subject and SANs). Files "
        "are replaced atomically and keep their modes.",
    )
    renew.add_argument("--issuer", required=True, type=url, help="the token service's URL")
    renew.add_argument("--cacert", required=True, help="CA bundle that verifies the server")
    renew.add_argument("--cert", required=True, help="the current certificate (replaced)")
    renew.add_argument("--key", required=True, help="its key (replaced with --new-key)")
    renew.add_argument("--new-key", action="store_true", help="rotate the key at each renewal")
    renew.add_argument(
        "--daemon",
        action="store_true",
        help="keep renewing at two thirds of each certificate's lifetime, logging each step",
    )
    renew.add_argument("--exec", metavar="CMD", help="run CMD after each renewal")
    renew.add_argument(
        "--renew-at",
        type=float,
        default=RENEW_AT,
        metavar="SHARE",
        help="with --daemon: renew when this share of the lifetime has passed (default 0.67)",
    )
    renew.add_argument("--json", action="store_true", help="print the result as JSON")
    renew.set_defaults(handler=_renew)
