"""The CA toolkit's command line: ``python -m pki`` and ``mtlsauth pki`` share this parser.

Every command takes ``--home DIR`` (env ``MTLSAUTH_HOME``; the CA lives in ``<home>/ca``) and
``--json``. Passphrases come from ``--passphrase-file``, ``MTLSAUTH_CA_PASSPHRASE``,
``MTLSAUTH_CA_PASSPHRASE_FILE`` or ``<home>/ca/passphrase`` — never from a flag's value.

Exit codes: 0 success (``verify``: would be accepted); 1 refused or failed — bad input, an
unreadable or malformed file, a policy refusal (``verify``: would be refused); 2 usage or
configuration — a bad flag, no home given, no CA in the home. Never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import sqlite3
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from pki.authority import Authority, resolve_passphrase
from pki.ca import (
    KEY_TYPES,
    REASONS,
    CAConfigError,
    CAError,
    IssuedCert,
    SubjectAltNames,
    load_private_key,
    write_private,
)
from pki.constraints import NameConstraintError, NameConstraints
from pki.enroll import DEFAULT_TTL
from pki.publish import crl_url
from pki.serials import normalize_serial
from pki.verify import explain

__all__ = ["CA_DIR", "add_commands", "authority_for", "main", "run"]

#: Where a home keeps its CA, relative to the home directory.
CA_DIR = "ca"
P12_PASSWORD_ENV = "MTLSAUTH_P12_PASSWORD"  # noqa: S105 - a variable name


def _home(value: str | None) -> Path:
    home = value or os.environ.get("MTLSAUTH_HOME")
    if not home:
        raise CAConfigError("no home directory: pass --home DIR or set MTLSAUTH_HOME")
    return Path(home).expanduser().resolve()


def authority_for(home: Path, passphrase_file: str | None = None) -> Authority:
    directory = home / CA_DIR
    # Before anything else: reading the inventory of a missing CA would create files in it.
    Authority(directory).require()
    return Authority(directory, passphrase=resolve_passphrase(directory, passphrase_file))


def _authority(args: argparse.Namespace) -> Authority:
    return authority_for(_home(args.home), getattr(args, "passphrase_file", None))


def _emit(args: argparse.Namespace, data: Any) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
    elif isinstance(data, dict):
        for key, value in data.items():
            print(f"{key}: {value}")
    else:
        print(data)


def _sans(args: argparse.Namespace) -> SubjectAltNames:
    return SubjectAltNames(dns=args.san_dns, uri=args.san_uri, ip=args.san_ip, email=args.san_email)


def _read_cert(path: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificates(Path(path).read_bytes())[0]
    except (OSError, ValueError, IndexError) as exc:
        raise CAError(f"cannot read the certificate {path}: {exc}") from exc


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CAError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def _read_csr(path: str) -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise CAError(f"cannot read the CSR {path}: {exc}") from exc


# --- commands ---------------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> int:
    directory = _home(args.home) / CA_DIR
    try:
        constraints = NameConstraints.parse(
            dns=args.permit_dns,
            uri=args.permit_uri,
            email=args.permit_email,
            ip=args.permit_ip,
            excluded_dns=args.exclude_dns,
        )
    except NameConstraintError as exc:
        raise CAError(str(exc)) from exc
    passphrase = resolve_passphrase(directory, args.passphrase_file)
    authority = Authority.init(
        directory,
        passphrase=passphrase,
        key_type=args.key_type,
        organization=args.org,
        name=args.name,
        constraints=constraints,
        crl_base_url=args.crl_base_url,
    )
    if passphrase is None:
        print(
            f"warning: the CA keys are encrypted with a generated passphrase in "
            f"{directory / 'passphrase'}; move it off this machine for production",
            file=sys.stderr,
        )
    _emit(
        args,
        {
            "ca_cert": str(authority.root_cert_path),
            "client_ca": str(authority.bundle_path),
            "crl": str(authority.crl_path),
            "crl_bundle": str(authority.crl_bundle_path),
            "crl_urls": _crl_urls(authority),
            "issuing_ca": authority.issuing_cert().subject.rfc4514_string(),
            "name_constraints": constraints.describe(),
        },
    )
    return 0


def _cmd_issue(args: argparse.Namespace) -> int:
    authority = _authority(args)
    csr = _read_csr(args.csr) if args.csr else None
    issued = authority.issue_client(
        common_name=args.cn,
        sans=_sans(args),
        days=args.days,
        key_type=args.key_type,
        csr=csr,
        out=Path(args.out) if args.out else None,
        hours=args.hours,
    )
    _emit(args, issued.summary())
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    authority = _authority(args)
    csr = _read_csr(args.csr)
    issued = authority.issue_client(
        common_name=args.cn,
        sans=_sans(args),
        days=args.days,
        csr=csr,
        out=Path(args.out) if args.out else None,
    )
    _emit(args, issued.summary())
    return 0


def _cmd_renew(args: argparse.Namespace) -> int:
    authority = _authority(args)
    serial = normalize_serial(args.serial)
    issued = authority.renew(
        serial,
        csr=_read_csr(args.csr) if args.csr else None,
        days=args.days,
        out=Path(args.out) if args.out else None,
        revoke_old=args.revoke_old,
        new_key=args.new_key,
    )
    _emit(args, issued.summary() | {"renewed_from": serial})
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    authority = _authority(args)
    if args.serial is not None:
        serial = normalize_serial(args.serial)
    else:
        serial = format(_read_cert(args.cert).serial_number, "x")
    record = authority.revoke(serial, args.reason, with_renewals=args.with_renewals)
    _emit(
        args,
        {"serial": record.serial, "subject": record.subject, "status": record.status,
         "reason": record.reason, "revoked_at": record.revoked_at},
    )  # fmt: skip
    return 0


#: Where RFC 7030 puts the enrollment operations, under the server's base URL (§3.2.2).
EST_PATH = "/.well-known/est"
#: mtlsauth's default issuer, for a home whose mtlsauth.toml does not name one.
DEFAULT_ISSUER = "https://localhost:8443"


def _issuer_of(home: Path, given: str | None) -> str:
    """The token service's URL: --issuer, $MTLSAUTH_ISSUER, or the home's mtlsauth.toml."""
    if given:
        return given.rstrip("/")
    if os.environ.get("MTLSAUTH_ISSUER"):
        return os.environ["MTLSAUTH_ISSUER"].rstrip("/")
    try:
        with (home / "mtlsauth.toml").open("rb") as fh:
            issuer = tomllib.load(fh).get("issuer")
    except FileNotFoundError:
        issuer = None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CAConfigError(f"cannot read {home / 'mtlsauth.toml'}: {exc}") from exc
    return str(issuer).rstrip("/") if isinstance(issuer, str) and issuer else DEFAULT_ISSUER


def _cmd_enroll_token(args: argparse.Namespace) -> int:
    home = _home(args.home)
    authority = authority_for(home, args.passphrase_file)
    grant, secret = authority.create_enroll_token(
        common_name=args.cn, sans=_sans(args), days=args.days, hours=args.hours, ttl=args.ttl
    )
    _emit(
        args,
        {
            "id": grant.id,
            "secret": secret,
            "expires_at": grant.expires_at.isoformat(),
            "url": _issuer_of(home, args.issuer) + EST_PATH + "/simpleenroll",
            "common_name": grant.common_name,
            "sans": [str(n.value) for n in grant.sans.general_names()],
            "days": grant.days,
            "hours": grant.hours,
        },
    )
    return 0


def _crl_info(crl: x509.CertificateRevocationList) -> dict[str, Any]:
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    return {
        "number": number,
        "this_update": crl.last_update_utc.isoformat(),
        "next_update": crl.next_update_utc.isoformat() if crl.next_update_utc else None,
        "revoked": [format(r.serial_number, "x") for r in crl],
    }


def _crl_urls(authority: Authority) -> list[str]:
    """Where the issuing and the root CA's CRLs are published, if anywhere."""
    base = authority.crl_base_url
    if base is None:
        return []
    return [crl_url(base, authority.issuing_cert()), crl_url(base, authority.root_cert())]


def _cmd_crl(args: argparse.Namespace) -> int:
    authority = _authority(args)
    if args.info:
        crl = authority.crl()
        if crl is None:
            raise CAError("no CRL yet: run 'pki crl' to sign one")
    else:
        crl = authority.write_crl(days=args.days)
    _emit(
        args,
        _crl_info(crl)
        | {
            "path": str(authority.crl_path),
            "bundle": str(authority.crl_bundle_path),
            "urls": _crl_urls(authority),
        },
    )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    records = _authority(args).inventory.query(
        serial=args.serial,
        status=args.status,
        profile=args.profile,
        expiring_within=dt.timedelta(days=args.expiring) if args.expiring is not None else None,
        subject_contains=args.subject,
    )
    rows = [r.as_dict() for r in records]
    fmt = "json" if args.json else args.format
    if fmt == "json":
        print(json.dumps(rows, indent=2))
    elif fmt == "csv":
        out = io.StringIO()
        fields = ["serial", "subject", "sans", "profile", "not_before", "not_after", "status",
                  "reason", "revoked_at", "thumbprint", "renewed_from"]  # fmt: skip
        writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row | {"sans": " ".join(row["sans"])})
        print(out.getvalue(), end="")
    else:
        for r in records:
            print(f"{r.serial}\t{r.status}\t{r.profile}\t{r.not_after[:10]}\t{r.subject}\t"
                  f"{' '.join(r.sans)}")  # fmt: skip
        if not records:
            print("(no certificates)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    authority = _authority(args)
    serial = normalize_serial(args.serial)
    record = authority.inventory.get(serial)
    cert = authority.inventory.certificate(serial)
    if record is None or cert is None:
        raise CAError(f"no certificate with serial {args.serial} in the inventory")
    if record.status == "revoked" and not args.force:
        # A revoked certificate is refused by every verifier: exporting it silently hands an
        # operator a bundle that cannot work (or one that should no longer exist).
        raise CAError(
            f"certificate {record.serial} is revoked ({record.reason}, {record.revoked_at}): "
            "refusing to export it; --force exports it anyway"
        )
    key_path = args.key or record.key_path
    if not key_path or not Path(key_path).is_file():
        raise CAError("the private key is not known here: give --key FILE")
    if args.password_file:
        password = _read_file(args.password_file, "the password file").strip()
    else:
        password = os.environ.get(P12_PASSWORD_ENV, "").encode()
    if not password:
        raise CAError(f"a PKCS#12 password is needed: --password-file F or ${P12_PASSWORD_ENV}")
    try:
        key = load_private_key(_read_file(key_path, "the private key"), None)
    except CAError as exc:
        raise CAError(f"the private key {key_path}: {exc}") from exc
    issuing = authority.issuing_cert()
    data = IssuedCert(cert=cert, key=key, chain=(issuing,)).pkcs12(password)
    out = Path(args.out)
    try:
        write_private(out, data)
    except OSError as exc:
        raise CAError(f"cannot write {out}: {exc}") from exc
    authority.record_export(record.serial, out)
    _emit(args, {"serial": record.serial, "pkcs12": str(out)})
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    authority = authority_for(_home(args.home))
    report = explain(
        _read_cert(args.cert),
        root=authority.root_cert(),
        issuing=authority.issuing_cert(),
        crl=authority.crl(),
    )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for check in report.checks:
            mark = "ok  " if check.ok else "FAIL"
            if check.ok and check.warning:
                mark = "warn"
            print(f"{mark} {check.name}: {check.detail}")
        print(f"verdict: {report.as_dict()['verdict']}")
    return 0 if report.ok else 1


# --- parser ------------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, *, passphrase: bool = True) -> None:
    parser.add_argument("--home", help="the mtlsauth home (env MTLSAUTH_HOME); CA in <home>/ca")
    if passphrase:
        parser.add_argument(
            "--passphrase-file", metavar="FILE", help="file holding the CA key passphrase"
        )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _san_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--san-dns", action="append", default=[], metavar="NAME")
    parser.add_argument("--san-uri", action="append", default=[], metavar="URI",
                        help="e.g. a SPIFFE ID spiffe://example.org/sa/billing")  # fmt: skip
    parser.add_argument("--san-ip", action="append", default=[], metavar="ADDRESS")
    parser.add_argument("--san-email", action="append", default=[], metavar="ADDRESS")


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Add the pki sub-commands to ``parser`` (used by ``python -m pki`` and ``mtlsauth pki``)."""
    sub = parser.add_subparsers(dest="pki_command", required=True, metavar="COMMAND")
    _add_ca_commands(sub)
    _add_issuing_commands(sub)
    _add_inventory_commands(sub)


if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _add_ca_commands(sub: Subparsers) -> None:
    init = sub.add_parser("init", help="create a root and an issuing CA (keys encrypted)")
    _common(init)
    init.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256")
    init.add_argument("--name", default="mtlsauth", help="name prefix of the CA certificates")
    init.add_argument("--org", help="organization (O) of the CA certificates")
    init.add_argument(
        "--permit-dns",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="name constraint: only these DNS subtrees may be certified",
    )
    init.add_argument(
        "--permit-uri",
        action="append",
        default=[],
        metavar="HOST",
        help="name constraint on URI hosts (e.g. example.org for spiffe://example.org/...)",
    )
    init.add_argument("--permit-email", action="append", default=[], metavar="DOMAIN")
    init.add_argument("--permit-ip", action="append", default=[], metavar="CIDR")
    init.add_argument("--exclude-dns", action="append", default=[], metavar="DOMAIN")  # fmt: skip
    init.add_argument(
        "--crl-base-url",
        metavar="URL",
        help="publish CRLs under URL/crl/<keyid>.crl and name that in every certificate's CRL "
        "distribution points (mtlsauth init: the issuer URL)",
    )
    init.set_defaults(pki_handler=_cmd_init)

    crl = sub.add_parser(
        "crl",
        help="sign fresh CRLs: crl.pem, root-crl.pem, crl-bundle.pem, crl/<keyid>.crl "
        "(or show the current one with --info)",
    )
    _common(crl)
    crl.add_argument("--days", type=int, default=7, help="validity of the CRL (default 7)")
    crl.add_argument("--info", action="store_true", help="show the current CRL, sign nothing")
    crl.set_defaults(pki_handler=_cmd_crl)


def _add_issuing_commands(sub: Subparsers) -> None:
    issue = sub.add_parser(
        "issue",
        help="issue a client certificate (EKU clientAuth), generating its key",
        description="Issue a client certificate. With --csr the client keeps its key: only the "
        "certificate and chain are written.",
    )
    _common(issue)
    issue.add_argument("--cn", required=True, help="subject common name")
    _san_flags(issue)
    lifetime = issue.add_mutually_exclusive_group()
    lifetime.add_argument("--days", type=int, default=90, help="validity in days (default 90)")
    lifetime.add_argument(
        "--hours",
        type=int,
        help="short-lived: validity in hours (1-168), marked noRevAvail (RFC 9608), no CRL DP",
    )
    issue.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256")
    issue.add_argument("--out", help="directory for cert.pem, key.pem, chain.pem")
    issue.add_argument("--csr", help="PEM CSR to sign instead of generating a key")
    issue.set_defaults(pki_handler=_cmd_issue)

    sign = sub.add_parser("sign", help="sign a CSR: the client keeps its private key")
    _common(sign)
    sign.add_argument("--csr", required=True, help="the PEM CSR")
    sign.add_argument("--cn", help="subject common name (default: the CSR's)")
    _san_flags(sign)
    sign.add_argument("--days", type=int, default=90)
    sign.add_argument("--out", help="directory for cert.pem and chain.pem")
    sign.set_defaults(pki_handler=_cmd_sign)

    renew = sub.add_parser(
        "renew",
        help="renew a certificate: same subject and SANs; same key, or a new one from --csr",
    )
    _common(renew)
    renew.add_argument("--serial", required=True, metavar="HEX")
    renew.add_argument("--csr", help="certify this CSR's (new) key instead of the old key")
    renew.add_argument("--new-key", action="store_true", help="generate a fresh key (rotation)")
    renew.add_argument("--days", type=int, help="validity (default: the old lifetime)")
    renew.add_argument("--out", help="directory for the new files")
    renew.add_argument("--revoke-old", action="store_true",
                       help="revoke the old certificate (reason superseded)")  # fmt: skip
    renew.set_defaults(pki_handler=_cmd_renew)

    token = sub.add_parser(
        "enroll-token",
        help="a one-time credential a client enrolls with over EST (RFC 7030)",
        description="Make a one-time enrollment credential: the client sends its own CSR to "
        "POST /.well-known/est/simpleenroll with HTTP Basic (id, secret) and gets a certificate "
        "with exactly these names. The secret is shown once.",
    )
    _common(token)
    token.add_argument("--cn", required=True, help="subject common name")
    _san_flags(token)
    lifetime = token.add_mutually_exclusive_group()
    lifetime.add_argument("--days", type=int, help="certificate validity in days (default 90)")
    lifetime.add_argument(
        "--hours",
        type=int,
        help="short-lived certificate: validity in hours (1-168), marked noRevAvail (RFC 9608)",
    )
    token.add_argument("--ttl", type=int, default=DEFAULT_TTL, metavar="SECONDS",
                       help="how long the credential can be used (default 3600)")  # fmt: skip
    token.add_argument("--issuer", help="the token service's URL (default: the home's issuer)")
    token.set_defaults(pki_handler=_cmd_enroll_token)

    revoke = sub.add_parser("revoke", help="revoke a certificate and re-sign the CRL")
    _common(revoke)
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--serial", metavar="HEX")
    which.add_argument("--cert", metavar="FILE")
    revoke.add_argument("--reason", choices=sorted(REASONS), default="unspecified")
    revoke.add_argument(
        "--with-renewals",
        action="store_true",
        help="also revoke every valid certificate renewed from it, at any depth (after a key "
        "compromise: renewals over EST may carry keys the thief chose)",
    )
    revoke.set_defaults(pki_handler=_cmd_revoke)


def _add_inventory_commands(sub: Subparsers) -> None:
    lst = sub.add_parser("list", help="the inventory of everything issued")
    _common(lst)
    lst.add_argument("--serial", metavar="HEX", help="only this serial (any common hex form)")
    lst.add_argument("--status", choices=("valid", "revoked", "expired"))
    lst.add_argument("--profile", choices=("client", "server"))
    lst.add_argument("--expiring", type=int, metavar="DAYS", help="valid, expiring within DAYS")
    lst.add_argument("--subject", help="subject contains this text")
    lst.add_argument("--format", choices=("table", "json", "csv"), default="table")
    lst.set_defaults(pki_handler=_cmd_list)

    export = sub.add_parser("export", help="export a certificate with its key as PKCS#12")
    _common(export)
    export.add_argument("--serial", required=True, metavar="HEX")
    export.add_argument("--key", help="the private key (default: where issue wrote it)")
    export.add_argument("--out", required=True, help="the .p12 file to write (0600)")
    export.add_argument("--password-file", help=f"PKCS#12 password file (or ${P12_PASSWORD_ENV})")
    export.add_argument("--force", action="store_true", help="export even a revoked certificate")
    export.set_defaults(pki_handler=_cmd_export)

    verify = sub.add_parser(
        "verify",
        help="explain, offline, whether a client certificate would pass the handshake",
        description="Checks chain, validity, EKU, keyUsage, name constraints, revocation and "
        "CRL freshness. Exit 0: would be accepted; 1: would be refused.",
    )
    _common(verify, passphrase=False)
    verify.add_argument("--cert", required=True, metavar="FILE")
    verify.set_defaults(pki_handler=_cmd_verify)


def run(args: argparse.Namespace) -> int:
    """Run a parsed pki command; a refusal becomes exit 1 (2 for no home or no CA) with the
    reason on stderr, never a traceback."""
    try:
        return int(args.pki_handler(args))
    except CAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # A file the command needed (passphrase, CA file, output directory) is not usable.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"error: the CA inventory cannot be used: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pki", description=__doc__)
    add_commands(parser)
    return run(parser.parse_args(argv))
