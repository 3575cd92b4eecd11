"""A CA directory: a root and an issuing intermediate, the inventory, the CRL, the audit log.

::

    <dir>/ca.pem              root certificate (what verifiers trust)
    <dir>/root.key            root key, encrypted
    <dir>/issuing.pem         issuing CA certificate (signs clients, servers and the CRL)
    <dir>/issuing.key         issuing CA key, encrypted
    <dir>/issuing-chain.pem   the root, above the issuing CA
    <dir>/client-ca.pem       bundle a server verifies client certificates with (issuing + root)
    <dir>/crl.pem             the issuing CA's CRL
    <dir>/root-crl.pem        the root CA's CRL
    <dir>/crl-bundle.pem      both CRLs, for verifiers that check the whole chain (nginx ssl_crl)
    <dir>/crl/<keyid>.crl     both CRLs, DER, as published at <crl-base-url>/crl/<keyid>.crl
    <dir>/crl-base-url        where CRLs are published (named in certificates' CDPs), if anywhere
    <dir>/inventory.db        everything issued
    <dir>/audit.log           append-only JSON lines

Keys are encrypted at rest with a passphrase that comes from a file or the environment.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

# The server's own subject matching (D1): a collision is judged exactly as a handshake would be.
from mtlsauth.core.dn import dn_of_certificate
from mtlsauth.core.thumbprint import x5t_s256
from pki.audit import AuditLog
from pki.ca import (
    CA,
    REASONS,
    CAConfigError,
    CAError,
    CertificatePublicKey,
    IssuedCert,
    KeyType,
    SubjectAltNames,
    is_short_lived,
    load_private_key,
    write_private,
)
from pki.constraints import NameConstraintError, NameConstraints, check_names
from pki.csr import requested_sans, requested_subject
from pki.enroll import DEFAULT_TTL, EnrollDenied, EnrollGrant, EnrollTokens
from pki.inventory import Inventory, Record
from pki.publish import BASE_URL_FILE, crl_url, publish, read_base_url, validate_base_url
from pki.serials import normalize_serial

__all__ = [
    "CRL_DAYS",
    "PASSPHRASE_ENV",
    "PASSPHRASE_FILE",
    "PASSPHRASE_FILE_ENV",
    "ROOT_CRL_NUMBER",
    "Authority",
    "Issued",
    "resolve_passphrase",
]

# Names of places a passphrase comes from, not passphrases.
#: How often one certificate may be re-enrolled (RFC 7030 §4.2.2).
MAX_REENROLLMENTS: Final = 2
PASSPHRASE_ENV: Final = "MTLSAUTH_CA_PASSPHRASE"  # noqa: S105
PASSPHRASE_FILE_ENV: Final = "MTLSAUTH_CA_PASSPHRASE_FILE"  # noqa: S105
#: A dev home keeps a generated passphrase here; production keeps it elsewhere.
PASSPHRASE_FILE: Final = "passphrase"  # noqa: S105
#: The inventory's counter of root CRL numbers (RFC 5280 §5.2.3: per CA, increasing).
ROOT_CRL_NUMBER: Final = "root_crl_number"
#: CRL lifetime: long enough to survive a weekend, regenerated when half of it is gone.
CRL_DAYS: Final = 7


def resolve_passphrase(directory: Path, passphrase_file: str | None = None) -> bytes | None:
    """The CA passphrase: --passphrase-file, $MTLSAUTH_CA_PASSPHRASE, the file named by
    $MTLSAUTH_CA_PASSPHRASE_FILE, or ``<dir>/passphrase`` — never a command-line value."""
    candidates = [passphrase_file, os.environ.get(PASSPHRASE_FILE_ENV)]
    if passphrase_file is None and os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV].encode()
    candidates.append(str(directory / PASSPHRASE_FILE))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            value = Path(candidate).read_bytes().strip()
            if not value:
                raise CAError(f"the passphrase file {candidate} is empty")
            return value
        if candidate and candidate == passphrase_file:
            raise CAError(f"the passphrase file {candidate} does not exist")
    return None


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate the authority issued: the objects, the inventory record, the files."""

    cert: IssuedCert
    record: Record
    paths: dict[str, Path]

    def summary(self) -> dict[str, str]:
        out = {name: str(path) for name, path in self.paths.items()}
        out["serial"] = self.record.serial
        out["x5t#S256"] = self.record.thumbprint
        return out


class Authority:
    """Operations on one CA directory."""

    def __init__(self, directory: Path, *, passphrase: bytes | None = None) -> None:
        self.directory = directory
        self._passphrase = passphrase
        self._issuing: CA | None = None
        self.inventory = Inventory(directory / "inventory.db")
        self.enroll_tokens = EnrollTokens(directory / "inventory.db")
        self.audit = AuditLog(directory / "audit.log")

    # -- paths -----------------------------------------------------------------------------

    @property
    def root_cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def bundle_path(self) -> Path:
        return self.directory / "client-ca.pem"

    @property
    def crl_path(self) -> Path:
        return self.directory / "crl.pem"

    @property
    def root_crl_path(self) -> Path:
        return self.directory / "root-crl.pem"

    @property
    def crl_bundle_path(self) -> Path:
        return self.directory / "crl-bundle.pem"

    @property
    def crl_base_url(self) -> str | None:
        return read_base_url(self.directory)

    def root_cert(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.root_cert_path.read_bytes())
        except FileNotFoundError as exc:
            raise CAConfigError(f"no CA in {self.directory}: run 'pki init' first") from exc
        except (OSError, ValueError) as exc:
            raise CAError(f"cannot read the root CA certificate: {exc}") from exc

    def require(self) -> None:
        """CAConfigError unless this directory holds a CA (before anything is created in it)."""
        if not (self.directory / "issuing.pem").is_file():
            raise CAConfigError(f"no CA in {self.directory}: run 'pki init' first")

    def issuing_cert(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate((self.directory / "issuing.pem").read_bytes())
        except FileNotFoundError as exc:
            raise CAConfigError(f"no CA in {self.directory}: run 'pki init' first") from exc

    def issuing(self) -> CA:
        """The issuing CA with its key (needs the passphrase)."""
        if self._issuing is None:
            if self._passphrase is None and not (self.directory / "issuing.key").exists():
                raise CAConfigError(f"no CA in {self.directory}: run 'pki init' first")
            issuing = CA.load(self.directory, "issuing", passphrase=self._passphrase)
            base = self.crl_base_url
            issuing.crl_url = crl_url(base, issuing.cert) if base else None
            self._issuing = issuing
        return self._issuing

    def _root(self) -> CA:
        """The root CA with its key (needs the passphrase): it signs only the root CRL."""
        try:
            key_data = (self.directory / "root.key").read_bytes()
        except OSError as exc:
            raise CAError(f"cannot read the root CA key: {exc}") from exc
        try:
            key = load_private_key(key_data, self._passphrase)
        except CAError as exc:
            raise CAError(f"CA key {self.directory / 'root.key'}: {exc}") from exc
        return CA(self.root_cert(), key)

    # -- CA lifecycle ------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: Path,
        *,
        passphrase: bytes | None = None,
        key_type: KeyType = "ec-p256",
        organization: str | None = None,
        name: str = "mtlsauth",
        constraints: NameConstraints | None = None,
        root_days: int = 3650,
        issuing_days: int = 1825,
        crl_base_url: str | None = None,
    ) -> Authority:
        """Create a root and an issuing CA; without a passphrase one is generated into
        ``<dir>/passphrase`` (0600) so the keys are still encrypted at rest. With
        ``crl_base_url`` every certificate names its issuer's CRL under it (RFC 5280
        §4.2.1.13), and ``pki crl`` writes the files to publish there."""
        if (directory / "issuing.key").exists() or (directory / "ca.pem").exists():
            raise CAError(f"{directory} already holds a CA: refusing to overwrite it")
        base = validate_base_url(crl_base_url) if crl_base_url is not None else None
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        generated = passphrase is None
        if passphrase is None:
            passphrase = secrets.token_urlsafe(32).encode()
            write_private(directory / PASSPHRASE_FILE, passphrase + b"\n")
        root = CA.create(
            common_name=f"{name} root CA",
            organization=organization,
            key_type=key_type,
            days=root_days,
        )
        root.crl_url = crl_url(base, root.cert) if base else None
        issuing = root.create_intermediate(
            common_name=f"{name} issuing CA",
            organization=organization,
            key_type=key_type,
            days=issuing_days,
            constraints=constraints,
        )
        root.save(directory, "root", passphrase=passphrase)
        (directory / "root.pem").unlink()
        root_pem = root.cert_pem()
        (directory / "ca.pem").write_bytes(root_pem)
        issuing.save(directory, "issuing", passphrase=passphrase)
        (directory / "client-ca.pem").write_bytes(issuing.cert_pem() + root_pem)
        if base:
            (directory / BASE_URL_FILE).write_text(base + "\n")
            issuing.crl_url = crl_url(base, issuing.cert)
        authority = cls(directory, passphrase=passphrase)
        authority._issuing = issuing
        authority.audit.record(
            "ca.init",
            root=root.cert.subject.rfc4514_string(),
            issuing=issuing.cert.subject.rfc4514_string(),
            key_type=key_type,
            constraints=issuing.constraints.describe(),
            passphrase="generated into passphrase file" if generated else "supplied",
            crl_base_url=base,
        )
        authority.write_crl()
        return authority

    # -- issuance ---------------------------------------------------------------------------

    def _record(
        self,
        issued: IssuedCert,
        *,
        event: str,
        profile: str,
        out: Path,
        renewed_from: str | None = None,
        **details: object,
    ) -> Issued:
        """Write the files, add the inventory record, and log the audit event."""
        paths = issued.write_to_dir(out)
        record = self.inventory.add(
            issued.cert,
            profile=profile,
            renewed_from=renewed_from,
            key_path=str(paths["key"]) if "key" in paths else None,
        )
        details |= {"renewed_from": renewed_from} if renewed_from else {"sans": record.sans}
        self.audit.record(
            event,
            serial=record.serial,
            subject=record.subject,
            profile=profile,
            not_after=record.not_after,
            **details,
        )
        return Issued(cert=issued, record=record, paths=paths)

    def issue_client(
        self,
        *,
        common_name: str | None = None,
        sans: SubjectAltNames | None = None,
        days: int = 90,
        key_type: KeyType = "ec-p256",
        csr: x509.CertificateSigningRequest | None = None,
        out: Path | None = None,
        hours: int | None = None,
        requested_by: str | None = None,
    ) -> Issued:
        """A client certificate. With a CSR, its subject (``common_name`` replacing the CN)
        and its requested SANs are kept, ``sans`` added to them; every name is checked as for
        a certificate without a CSR, and one that is not allowed refuses the whole request.
        ``hours`` makes it short-lived (RFC 9608); ``requested_by`` names, in the audit log,
        the credential that asked for it."""
        sans = sans or SubjectAltNames()
        subject: x509.Name | None = None
        if csr is not None:
            subject = requested_subject(csr, common_name)
            sans = requested_sans(csr) + sans
        elif common_name is None:
            raise CAError("a client certificate needs a common name: give --cn")
        issued = self.issuing().issue_client(
            common_name=common_name or "",
            subject=subject,
            sans=sans,
            days=days,
            key_type=key_type,
            csr=csr,
            hours=hours,
        )
        # Checked before anything is written or recorded: the signed certificate is dropped.
        clash = self.subject_collision(issued.cert.subject)
        if clash is not None:
            raise CAError(
                f"the subject {issued.cert.subject.rfc4514_string()!r} matches the subject "
                f"{clash.subject!r} of valid certificate {clash.serial} under subject-DN "
                "matching (case and Unicode folding): a client registered with either DN would "
                "accept both; revoke that one first, or pick a distinct name"
            )
        return self._record(
            issued,
            event="cert.sign_csr" if csr is not None else "cert.issue",
            profile="client",
            out=out or self._default_out(issued),
            **({"requested_by": requested_by} if requested_by else {}),
        )

    def subject_collision(self, subject: x509.Name) -> Record | None:
        """A valid (unrevoked, unexpired) client certificate whose subject differs from
        ``subject`` but matches it under RFC 4517 distinguishedNameMatch with RFC 4518 folding
        (decision D1), e.g. ``CN=svc`` and ``CN=SVC`` or its full-width form.

        The same subject, attribute for attribute, is no collision: that is the same identity
        issued again (a rotation, a renewal).
        """
        wanted = dn_of_certificate(subject)
        for record in self.inventory.query(status="valid", profile="client"):
            cert = self.inventory.certificate(record.serial)
            if cert is None or cert.subject == subject:
                continue
            if dn_of_certificate(cert.subject) == wanted:
                return record
        return None

    def issue_server(self, *, hostnames: Sequence[str], days: int = 365, out: Path) -> Issued:
        issued = self.issuing().issue_server(hostnames=hostnames, days=days)
        return self._record(issued, event="cert.issue", profile="server", out=out)

    def _default_out(self, issued: IssuedCert) -> Path:
        return self.directory.parent / "certs" / issued.serial_hex

    def renew(
        self,
        serial: str,
        *,
        csr: x509.CertificateSigningRequest | None = None,
        days: int | None = None,
        out: Path | None = None,
        revoke_old: bool = False,
        new_key: bool = False,
        hours: int | None = None,
        requested_by: str | None = None,
    ) -> Issued:
        """A new certificate with the same subject, SANs and profile.

        By default the public key stays the same (the client keeps using its key file); with a
        CSR the new certificate certifies the CSR's key, and with ``new_key`` the CA generates
        a fresh key (both are key rotations).
        """
        if new_key and csr is not None:
            raise CAError("--new-key and --csr are two ways to rotate the key: pick one")
        serial = normalize_serial(serial)
        record = self.inventory.get(serial)
        old = self.inventory.certificate(serial)
        if record is None or old is None:
            raise CAError(f"no certificate with serial {serial} in the inventory")
        if record.status == "revoked":
            raise CAError(f"certificate {serial} is revoked: issue a new one instead of renewing")
        lifetime = old.not_valid_after_utc - old.not_valid_before_utc
        if hours is None and days is None and is_short_lived(old):
            # A short-lived certificate stays short-lived, and as short (RFC 9608).
            hours = max(1, round(lifetime.total_seconds() / 3600))
        days = days or max(1, round(lifetime.total_seconds() / 86400))
        ca = self.issuing()
        public_key: CertificatePublicKey | None = None
        if csr is None and not new_key:
            old_key = old.public_key()
            if not isinstance(old_key, CertificatePublicKey):
                raise CAError("the old certificate's key type is not supported")
            public_key = old_key
        sans = _sans_of(old)
        if record.profile == "server":
            hostnames = [*sans.dns, *sans.ip]
            issued = ca.issue_server(hostnames=hostnames, days=days, public_key=public_key)
        else:
            issued = ca.issue_client(
                common_name="",
                subject=old.subject,
                sans=sans,
                days=days,
                csr=csr,
                public_key=public_key,
                hours=hours,
            )
        target = out or self._default_out(issued)
        result = self._record(
            issued,
            event="cert.renew",
            profile=record.profile,
            out=target,
            renewed_from=serial,
            new_key=public_key is None,
            **({"requested_by": requested_by} if requested_by else {}),
        )
        if public_key is not None and record.key_path and Path(record.key_path).exists():
            # Same key: keep a copy beside the new certificate so the directory is complete.
            write_private(target / "key.pem", Path(record.key_path).read_bytes())
            result.paths["key"] = target / "key.pem"
        if revoke_old:
            self.revoke(serial, "superseded")
        return result

    # -- enrollment over the network (RFC 7030) ---------------------------------------------

    def create_enroll_token(
        self,
        *,
        common_name: str,
        sans: SubjectAltNames | None = None,
        days: int | None = None,
        hours: int | None = None,
        ttl: int = DEFAULT_TTL,
    ) -> tuple[EnrollGrant, str]:
        """A one-time credential for one client certificate with exactly these names; the
        names are checked now, as ``pki issue`` would check them, so a credential that could
        never be redeemed is not handed out. Returns the grant and its secret."""
        sans = sans or SubjectAltNames()
        if days is not None and hours is not None:
            raise CAError("--days and --hours are two lifetimes: pick one")
        if hours is None and days is None:
            days = 90
        try:
            x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
        except ValueError as exc:
            raise CAError(f"invalid common name: {exc}") from exc
        names = sans.general_names()
        try:
            check_names(NameConstraints.from_certificate(self.issuing_cert()), names)
        except NameConstraintError as exc:
            raise CAError(f"refused by the CA's name constraints: {exc}") from exc
        grant, secret = self.enroll_tokens.create(
            common_name=common_name, sans=sans, days=days, hours=hours, ttl=ttl
        )
        self.audit.record(
            "enroll_token.create",
            id=grant.id,
            common_name=common_name,
            sans=[f"{type(n).__name__}:{n.value}" for n in names],
            days=days,
            hours=hours,
            expires_at=grant.expires_at.isoformat(),
        )
        return grant, secret

    def enroll(self, token_id: str, secret: str, csr: x509.CertificateSigningRequest) -> Issued:
        """RFC 7030 §4.2.1 simpleenroll: a certificate for the CSR's key, with the names the
        credential fixes. EnrollDenied when the credential does not authenticate; CAError
        (naming it) when the CSR asks for a name the credential does not allow."""
        grant = self.enroll_tokens.check(token_id, secret)
        if not csr.is_signature_valid:
            # Proof of possession (RFC 7030 §3.4), before the credential is spent.
            raise CAError("the CSR's signature does not verify: it was not made with its key")
        _check_requested_names(csr, grant)
        self.enroll_tokens.claim(token_id)
        try:
            issued = self.issue_client(
                common_name=grant.common_name,
                sans=grant.sans,
                csr=csr,
                days=grant.days or 90,
                hours=grant.hours,
                requested_by=f"enroll-token:{token_id}",
            )
        except BaseException:
            self.enroll_tokens.release(token_id)
            raise
        self.enroll_tokens.redeemed(token_id, issued.record.serial)
        return issued

    def reenroll(self, current_der: bytes, csr: x509.CertificateSigningRequest) -> Issued:
        """RFC 7030 §4.2.2 simplereenroll: a new certificate with the same subject and SANs as
        ``current_der`` (which authenticated the request), for the CSR's (possibly new) key.
        The current certificate must be one this CA issued, unrevoked and unexpired."""
        current = x509.load_der_x509_certificate(current_der)
        serial = format(current.serial_number, "x")
        record = self.inventory.get(serial)
        if record is None or record.thumbprint != x5t_s256(current_der):
            raise EnrollDenied(f"certificate {serial} was not issued by this CA", "unknown_cert")
        if record.profile != "client":
            raise EnrollDenied(f"certificate {serial} is not a client certificate", "profile")
        if record.status != "valid":
            raise EnrollDenied(f"certificate {serial} is {record.status}", record.status)
        if len(self.inventory.query(renewed_from=serial)) >= MAX_REENROLLMENTS:
            # A stolen key must not mint any number of valid siblings: a certificate renews
            # once (and once more, should the first answer be lost); then it is spent.
            raise EnrollDenied(
                f"certificate {serial} was already re-enrolled {MAX_REENROLLMENTS} times: "
                "use its renewal, or enroll again with a new credential",
                "renewed",
            )
        if not csr.is_signature_valid:
            raise CAError("the CSR's signature does not verify: it was not made with its key")
        if csr.subject != current.subject:
            raise CAError(
                f"the request's subject {csr.subject.rfc4514_string()!r} is not the current "
                f"certificate's {current.subject.rfc4514_string()!r}: re-enrollment keeps it"
            )
        wanted = set(requested_sans(csr).general_names())
        have = set(_sans_of(current).general_names())
        if wanted != have:
            extra = ", ".join(_label(n) for n in wanted - have) or "none"
            missing = ", ".join(_label(n) for n in have - wanted) or "none"
            raise CAError(
                "the request's subjectAltNames differ from the current certificate's "
                f"(not allowed: {extra}; missing: {missing}): re-enrollment keeps them"
            )
        return self.renew(serial, csr=csr, requested_by=f"certificate:{serial}")

    # -- revocation -------------------------------------------------------------------------

    def revoke(
        self, serial: str, reason: str = "unspecified", *, with_renewals: bool = False
    ) -> Record:
        """Revoke ``serial`` and re-sign the CRL. ``with_renewals``: also every valid certificate
        renewed from it, at any depth (after a key compromise: whoever held the key may have
        re-enrolled it over EST to keys of their own)."""
        if reason not in REASONS:
            raise CAError(f"unknown reason {reason!r}; allowed: {', '.join(sorted(REASONS))}")
        serial = normalize_serial(serial)
        record = self.inventory.get(serial)
        if record is None:
            raise CAError(f"no certificate with serial {serial} in the inventory")
        if record.status == "revoked":
            raise CAError(f"certificate {serial} is already revoked ({record.reason})")
        record = self.inventory.revoke(serial, reason)
        self.audit.record("cert.revoke", serial=serial, subject=record.subject, reason=reason)
        if with_renewals:
            self._revoke_renewals(serial, reason)
        self.write_crl()
        return record

    def _revoke_renewals(self, serial: str, reason: str) -> None:
        pending = [serial]
        while pending:
            for child in self.inventory.query(renewed_from=pending.pop()):
                if child.status == "valid":
                    self.inventory.revoke(child.serial, reason)
                    self.audit.record(
                        "cert.revoke", serial=child.serial, subject=child.subject,
                        reason=reason, renewed_from=child.renewed_from,
                    )  # fmt: skip
                pending.append(child.serial)

    def write_crl(self, days: float = CRL_DAYS) -> x509.CertificateRevocationList:
        """Sign fresh CRLs and replace the files atomically (a server reloads on change):
        crl.pem (the issuing CA's), root-crl.pem (the root's, revoking nothing: a verifier
        that checks the whole chain needs one), crl-bundle.pem (both) and the published DER
        copies. Returns the issuing CA's CRL."""
        number = self.inventory.next_crl_number()
        issuing = self.issuing()
        crl = issuing.crl(self.inventory.revoked(), number=number, days=days)
        root = self._root()
        root_number = self.inventory.next_crl_number(ROOT_CRL_NUMBER)
        root_crl = root.crl((), number=root_number, days=days)
        issuing_pem, root_pem = crl.public_bytes(Encoding.PEM), root_crl.public_bytes(Encoding.PEM)
        try:
            for path, data in (
                (self.root_crl_path, root_pem),
                (self.crl_bundle_path, issuing_pem + root_pem),
                (self.crl_path, issuing_pem),
            ):
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            publish(self.directory, [(issuing.cert, crl), (root.cert, root_crl)])
        except OSError as exc:
            raise CAError(f"cannot write the CRLs in {self.directory}: {exc}") from exc
        self.audit.record(
            "crl.generate",
            number=number,
            revoked=len(crl),
            next_update=crl.next_update_utc.isoformat() if crl.next_update_utc else None,
            root_number=root_number,
        )
        return crl

    def crl(self) -> x509.CertificateRevocationList | None:
        if not self.crl_path.exists():
            return None
        return x509.load_pem_x509_crl(self.crl_path.read_bytes())

    def record_export(self, serial: str, path: Path) -> None:
        self.audit.record("cert.export_pkcs12", serial=serial, path=str(path))


def _label(name: x509.GeneralName) -> str:
    prefixes = {x509.DNSName: "DNS", x509.UniformResourceIdentifier: "URI",
                x509.IPAddress: "IP", x509.RFC822Name: "email"}  # fmt: skip
    return f"{prefixes.get(type(name), type(name).__name__)}:{name.value}"


def _check_requested_names(csr: x509.CertificateSigningRequest, grant: EnrollGrant) -> None:
    """CAError naming what a CSR asks for beyond what the credential allows: a subject other
    than CN=<the credential's name>, or a subjectAltName the credential does not list."""
    for attribute in csr.subject:
        if attribute.oid != x509.NameOID.COMMON_NAME or attribute.value != grant.common_name:
            raise CAError(
                f"the request's subject attribute {attribute.rfc4514_string()!r} is not "
                f"allowed: this enrollment credential allows only CN={grant.common_name}"
            )
    extra = set(requested_sans(csr).general_names()) - set(grant.sans.general_names())
    if extra:
        allowed = ", ".join(_label(n) for n in grant.sans.general_names()) or "none"
        raise CAError(
            f"the request's subjectAltNames {', '.join(sorted(_label(n) for n in extra))} are "
            f"not allowed: this enrollment credential allows {allowed}"
        )


def _sans_of(cert: x509.Certificate) -> SubjectAltNames:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return SubjectAltNames()
    return SubjectAltNames(
        dns=ext.get_values_for_type(x509.DNSName),
        uri=ext.get_values_for_type(x509.UniformResourceIdentifier),
        ip=[str(v) for v in ext.get_values_for_type(x509.IPAddress)],
        email=ext.get_values_for_type(x509.RFC822Name),
    )
