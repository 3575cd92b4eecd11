"""A small certificate authority on cryptography's x509 builders.

``CA.create(...)`` makes a self-signed root and ``root.create_intermediate(...)`` an issuing
CA under it (optionally name-constrained); ``CA.load(dir, name)`` reads one back, its key
decrypted with a passphrase; ``ca.issue_client`` and ``ca.issue_server`` return
:class:`IssuedCert` objects that render PEM and PKCS#12 and write files; ``ca.crl(...)`` signs a
CRL. Certificates follow RFC 5280 strictly: critical basicConstraints and keyUsage, SKI/AKI,
random 159-bit serials; client certificates carry EKU clientAuth only, server certificates
serverAuth only; an issuing CA's name constraints are enforced before anything is signed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtlsauth.core.dn import CertificateName, DNError
from pki.constraints import NameConstraintError, NameConstraints, check_names

__all__ = [
    "CA",
    "KEY_TYPES",
    "NO_REV_AVAIL",
    "REASONS",
    "SHORT_LIVED_MAX_HOURS",
    "CAConfigError",
    "CAError",
    "CertificatePublicKey",
    "IssuedCert",
    "KeyType",
    "PrivateKey",
    "SubjectAltNames",
    "generate_key",
    "is_short_lived",
    "load_private_key",
    "make_private_dir",
    "write_private",
]

KeyType = Literal["ec-p256", "ec-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096"]
KEY_TYPES: Final[tuple[KeyType, ...]] = (
    "ec-p256",
    "ec-p384",
    "ed25519",
    "rsa-2048",
    "rsa-3072",
    "rsa-4096",
)
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
CertificatePublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

#: Revocation reasons operators may give (RFC 5280 §5.3.1 names).
REASONS: Final[dict[str, x509.ReasonFlags]] = {
    flag.name: flag for flag in x509.ReasonFlags if flag is not x509.ReasonFlags.remove_from_crl
}
#: id-ce-noRevAvail (RFC 9608 §2): the CA publishes no revocation information for the
#: certificate; cryptography has no class for it, so it is carried as its DER value (NULL).
NO_REV_AVAIL: Final = x509.ObjectIdentifier("2.5.29.56")
_DER_NULL: Final = b"\x05\x00"
#: The longest short-lived certificate (``hours``): a week, the CA/Browser Forum's bound for
#: certificates that need no revocation; longer lifetimes are ``days`` and revocable.
SHORT_LIVED_MAX_HOURS: Final = 168
# Backdating absorbs small clock skew between the CA and the verifiers.
_BACKDATE: Final = dt.timedelta(minutes=5)


class CAError(Exception):
    """A CA operation was refused (bad input, missing files, policy): the CLI's exit 1."""

    exit_code: int = 1


class CAConfigError(CAError):
    """There is nothing to operate on: no home given, or no CA in it. The CLI's exit 2."""

    exit_code = 2


def generate_key(key_type: KeyType = "ec-p256") -> PrivateKey:
    """A fresh private key of the named type."""
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise CAError(f"unknown key type {key_type!r}; allowed: {', '.join(KEY_TYPES)}")


_CURVES: Final = (ec.SECP256R1, ec.SECP384R1)
_RSA_BITS: Final = range(2048, 8193)


def check_public_key(key: object) -> CertificatePublicKey:
    """``key`` if it is of a type ``--key-type`` offers (EC P-256/P-384, Ed25519, RSA 2048-8192
    bits); CAError otherwise. A CSR's key is held to the same list as a generated one."""
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _CURVES):
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size in _RSA_BITS:
        return key
    detail = getattr(getattr(key, "curve", None), "name", None) or getattr(key, "key_size", "")
    raise CAError(
        f"the key ({type(key).__name__.removesuffix('PublicKey')} {detail}) is not allowed: "
        "use EC P-256 or P-384, Ed25519, or RSA of 2048 to 8192 bits"
    )


def _signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    # Ed25519 signs without a separate digest; the others use SHA-256 or SHA-384.
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _key_usage(
    *, key_cert_sign: bool = False, crl_sign: bool = False, key_encipherment: bool = False
) -> x509.KeyUsage:
    """keyUsage with digitalSignature and only the other bits asked for (RFC 5280 §4.2.1.3)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def make_private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents owner-only (0700), whatever the umask.

    Directories that already exist are left as they are: one may be shared (``--out /tmp``),
    and the key files inside are 0600 regardless.
    """
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: not ours to change
        # mkdir's mode is masked by the umask; chmod is not.
        os.chmod(directory, 0o700)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (0600), never world-readable."""
    make_private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # Before the first byte: a file that already existed keeps its old mode through O_TRUNC.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def load_private_key(data: bytes, passphrase: bytes | None) -> PrivateKey:
    """A PEM private key, decrypted with ``passphrase`` when it is encrypted."""
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as exc:
        # cryptography says TypeError for "encrypted but no password" and the reverse.
        if passphrase is None:
            raise CAError("the key is encrypted: a passphrase is needed") from exc
        raise CAError("the key is not encrypted, but a passphrase was given") from exc
    except ValueError as exc:
        raise CAError("the key cannot be decrypted: wrong passphrase or damaged file") from exc
    if not isinstance(key, PrivateKey):
        raise CAError("the key is of an unsupported type")
    return key


@dataclass(frozen=True, slots=True)
class SubjectAltNames:
    """The subjectAltName entries of a certificate; every list may be empty."""

    dns: Sequence[str] = ()
    uri: Sequence[str] = ()
    ip: Sequence[str] = ()
    email: Sequence[str] = ()

    def general_names(self) -> list[x509.GeneralName]:
        """The entries as GeneralNames, each validated by the same rules client registration
        applies (:meth:`CertificateName.parse`): a name no client could be registered with is
        refused here, not signed. Values are kept in that canonical form."""
        entries = [("san_dns", v) for v in self.dns] + [("san_uri", v) for v in self.uri]
        entries += [("san_ip", v) for v in self.ip] + [("san_email", v) for v in self.email]
        names: list[x509.GeneralName] = []
        for kind, value in entries:
            label = _SAN_LABELS[kind]
            try:
                canonical = CertificateName.parse(kind, value).value
            except DNError as exc:
                raise CAError(f"invalid subject alternative name {label}:{value}: {exc}") from exc
            # cryptography says ValueError (UnicodeEncodeError included) for a name it cannot
            # encode, e.g. a non-ASCII DNS name.
            try:
                names.append(_general_name(kind, canonical))
            except ValueError as exc:
                raise CAError(f"invalid subject alternative name {label}:{value}: {exc}") from exc
        return list(dict.fromkeys(names))

    def __add__(self, other: SubjectAltNames) -> SubjectAltNames:
        return SubjectAltNames(
            dns=[*self.dns, *other.dns],
            uri=[*self.uri, *other.uri],
            ip=[*self.ip, *other.ip],
            email=[*self.email, *other.email],
        )


_SAN_LABELS: Final = {"san_dns": "DNS", "san_uri": "URI", "san_ip": "IP", "san_email": "email"}


def _general_name(kind: str, value: str) -> x509.GeneralName:
    if kind == "san_dns":
        return x509.DNSName(value)
    if kind == "san_uri":
        return x509.UniformResourceIdentifier(value)
    if kind == "san_ip":
        return x509.IPAddress(ipaddress.ip_address(value))
    return x509.RFC822Name(value)


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """A certificate the CA issued, with its key when the CA generated it."""

    cert: x509.Certificate
    key: PrivateKey | None
    chain: tuple[x509.Certificate, ...] = field(default=())

    @property
    def serial_hex(self) -> str:
        return format(self.cert.serial_number, "x")

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def chain_pem(self) -> bytes:
        """The leaf followed by the issuing CA certificates, as a TLS peer sends them."""
        return self.cert_pem() + b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in self.chain
        )

    def key_pem(self) -> bytes:
        if self.key is None:
            raise CAError("this certificate was issued for a CSR: the CA never had its key")
        return _key_pem(self.key)

    def pkcs12(self, password: bytes, *, name: str | None = None) -> bytes:
        """The key, certificate and chain as an encrypted PKCS#12 file."""
        if self.key is None:
            raise CAError("no private key to export: the certificate was issued for a CSR")
        if not password:
            raise CAError("a PKCS#12 export needs a password")
        label = name or self.cert.subject.rfc4514_string()
        return pkcs12.serialize_key_and_certificates(
            label.encode(),
            self.key,
            self.cert,
            list(self.chain) or None,
            serialization.BestAvailableEncryption(password),
        )

    def write_to_dir(self, out: Path) -> dict[str, Path]:
        """Write cert.pem, chain.pem and (when known) key.pem (0600) into ``out``; the
        directories made for them are 0700."""
        paths = {"cert": out / "cert.pem", "chain": out / "chain.pem"}
        try:
            make_private_dir(out)
            paths["cert"].write_bytes(self.cert_pem())
            paths["chain"].write_bytes(self.chain_pem())
            if self.key is not None:
                paths["key"] = out / "key.pem"
                write_private(paths["key"], self.key_pem())
        except OSError as exc:
            raise CAError(f"cannot write the certificate files to {out}: {exc}") from exc
        return paths


class CA:
    """A certificate authority: its certificate, private key and the chain above it."""

    def __init__(
        self,
        cert: x509.Certificate,
        key: PrivateKey,
        chain: Sequence[x509.Certificate] = (),
    ) -> None:
        self.cert = cert
        self.key = key
        self.chain = tuple(chain)
        self.constraints = NameConstraints.from_certificate(cert)
        #: Where this CA's CRL is published (RFC 5280 §4.2.1.13); put in what it issues.
        self.crl_url: str | None = None

    # -- creation and storage ------------------------------------------------------------

    @classmethod
    def create(
        cls,
        *,
        common_name: str = "mtlsauth dev CA",
        organization: str | None = None,
        key_type: KeyType = "ec-p256",
        days: int = 3650,
    ) -> CA:
        """A new self-signed root CA (RFC 5280 §4.2.1.9: critical CA basicConstraints)."""
        key = generate_key(key_type)
        name = _ca_name(common_name, organization)
        cert = _ca_builder(name, name, key.public_key(), days, path_length=None).sign(
            key, _signature_hash(key)
        )
        return cls(cert, key)

    def create_intermediate(
        self,
        *,
        common_name: str,
        organization: str | None = None,
        key_type: KeyType = "ec-p256",
        days: int = 1825,
        constraints: NameConstraints | None = None,
    ) -> CA:
        """An issuing CA signed by this one (pathLen 0: it issues only end-entity certs); it
        names this CA's CRL in its CRL distribution points when :attr:`crl_url` is set."""
        constraints = constraints or NameConstraints()
        check_names(self.constraints, constraints.permitted)
        key = generate_key(key_type)
        builder = _ca_builder(
            _ca_name(common_name, organization),
            self.cert.subject,
            key.public_key(),
            days,
            path_length=0,
            not_after_cap=self.cert.not_valid_after_utc,
            issuer_ski=self._ski(),
        )
        extension = constraints.extension()
        if extension is not None:
            builder = builder.add_extension(extension, critical=True)
        if self.crl_url is not None:
            builder = builder.add_extension(_distribution_points(self.crl_url), critical=False)
        cert = builder.sign(self.key, _signature_hash(self.key))
        return CA(cert, key, chain=(self.cert, *self.chain))

    @classmethod
    def load(cls, directory: Path, name: str = "ca", *, passphrase: bytes | None = None) -> CA:
        """Read a CA written by :meth:`save` (its chain from ``<name>-chain.pem`` if present)."""
        try:
            cert = x509.load_pem_x509_certificate((directory / f"{name}.pem").read_bytes())
            key_data = (directory / f"{name}.key").read_bytes()
            chain_file = directory / f"{name}-chain.pem"
            chain = (
                x509.load_pem_x509_certificates(chain_file.read_bytes())
                if chain_file.exists()
                else []
            )
        except FileNotFoundError as exc:
            raise CAError(f"no CA {name!r} in {directory}: {exc.filename} is missing") from exc
        except ValueError as exc:
            raise CAError(f"the CA {name!r} in {directory} cannot be read: {exc}") from exc
        try:
            key = load_private_key(key_data, passphrase)
        except CAError as exc:
            raise CAError(f"CA key {directory / (name + '.key')}: {exc}") from exc
        return cls(cert, key, chain)

    def save(self, directory: Path, name: str = "ca", *, passphrase: bytes | None = None) -> None:
        """Write ``<name>.pem``, ``<name>.key`` (0600, encrypted when a passphrase is given)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{name}.pem").write_bytes(self.cert_pem())
        if self.chain:
            (directory / f"{name}-chain.pem").write_bytes(
                b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)
            )
        write_private(directory / f"{name}.key", _key_pem(self.key, passphrase))

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def _ski(self) -> x509.SubjectKeyIdentifier:
        return self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value

    # -- issuance ------------------------------------------------------------------------

    def issue_client(
        self,
        *,
        common_name: str,
        sans: SubjectAltNames = SubjectAltNames(),
        days: int = 90,
        key_type: KeyType = "ec-p256",
        csr: x509.CertificateSigningRequest | None = None,
        subject: x509.Name | None = None,
        public_key: CertificatePublicKey | None = None,
        hours: int | None = None,
    ) -> IssuedCert:
        """A client certificate: EKU clientAuth only (RFC 8705 client authentication).

        The key is generated here unless a CSR (the client keeps its key) or a known public
        key (renewal with the same key) is given. With ``hours`` it is short-lived: valid that
        many hours, and marked noRevAvail (RFC 9608) instead of naming a CRL.
        """
        return self._issue(
            common_name=common_name,
            subject=subject,
            sans=sans,
            days=days,
            hours=hours,
            key_type=key_type,
            csr=csr,
            public_key=public_key,
            eku=ExtendedKeyUsageOID.CLIENT_AUTH,
        )

    def issue_server(
        self,
        *,
        hostnames: Iterable[str],
        days: int = 365,
        key_type: KeyType = "ec-p256",
        public_key: CertificatePublicKey | None = None,
    ) -> IssuedCert:
        """A TLS server certificate for DNS names and IP addresses: EKU serverAuth only."""
        dns: list[str] = []
        ips: list[str] = []
        for host in hostnames:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                dns.append(host)
            else:
                ips.append(host)
        if not dns and not ips:
            raise CAError("a server certificate needs at least one hostname or IP address")
        return self._issue(
            common_name=(dns or ips)[0],
            subject=None,
            sans=SubjectAltNames(dns=dns, ip=ips),
            days=days,
            key_type=key_type,
            csr=None,
            public_key=public_key,
            eku=ExtendedKeyUsageOID.SERVER_AUTH,
        )

    def _issue(
        self,
        *,
        common_name: str,
        subject: x509.Name | None,
        sans: SubjectAltNames,
        days: int,
        key_type: KeyType,
        csr: x509.CertificateSigningRequest | None,
        public_key: CertificatePublicKey | None,
        eku: x509.ObjectIdentifier,
        hours: int | None = None,
    ) -> IssuedCert:
        if hours is not None:
            if not 1 <= hours <= SHORT_LIVED_MAX_HOURS:
                raise CAError(f"--hours must be from 1 to {SHORT_LIVED_MAX_HOURS}, got {hours}")
            lifetime = dt.timedelta(hours=hours)
        elif not 1 <= days <= 3650:
            raise CAError(f"--days must be from 1 to 3650, got {days}")
        else:
            lifetime = dt.timedelta(days=days)
        key: PrivateKey | None = None
        if csr is not None:
            if not csr.is_signature_valid:
                raise CAError("the CSR's signature does not verify: it was not made with its key")
            public_key = check_public_key(csr.public_key())
        elif public_key is not None:
            check_public_key(public_key)
        else:
            key = generate_key(key_type)
            public_key = key.public_key()
        if subject is None:
            try:
                subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
            except ValueError as exc:
                raise CAError(f"invalid common name: {exc}") from exc
        names = sans.general_names()
        try:
            check_names(self.constraints, names)
        except NameConstraintError as exc:
            raise CAError(f"refused by the CA's name constraints: {exc}") from exc
        now = dt.datetime.now(dt.UTC)
        not_after = min(now + lifetime, self.cert.not_valid_after_utc)
        # ECDSA and Ed25519 keys only sign; RSA keys also encipher the TLS 1.2 key exchange.
        is_rsa = isinstance(public_key, rsa.RSAPublicKey)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(key_encipherment=is_rsa), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ski()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        if hours is not None:
            # RFC 9608 §4: non-critical, and never beside a CRL distribution point.
            no_rev = x509.UnrecognizedExtension(NO_REV_AVAIL, _DER_NULL)
            builder = builder.add_extension(no_rev, critical=False)
        elif self.crl_url is not None:
            builder = builder.add_extension(_distribution_points(self.crl_url), critical=False)
        cert = builder.sign(self.key, _signature_hash(self.key))
        # The chain a TLS peer sends: the issuing CA, not the root (the verifier has that).
        return IssuedCert(cert=cert, key=key, chain=(self.cert, *self.chain[:-1]))

    # -- revocation ----------------------------------------------------------------------

    def crl(
        self,
        revoked: Iterable[tuple[int, dt.datetime, str]],
        *,
        number: int,
        days: float = 7,
    ) -> x509.CertificateRevocationList:
        """A CRL (RFC 5280 §5) of ``(serial, revoked_at, reason)`` entries, valid ``days``."""
        if not 0 < days <= 366:
            raise CAError(f"a CRL's validity (--days) must be from 1 to 366 days, got {days}")
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + dt.timedelta(days=days))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ski()),
                critical=False,
            )
        )
        for serial, when, reason in revoked:
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
            flag = REASONS.get(reason, x509.ReasonFlags.unspecified)
            if flag is not x509.ReasonFlags.unspecified:
                entry = entry.add_extension(x509.CRLReason(flag), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        return builder.sign(self.key, _signature_hash(self.key))


def is_short_lived(cert: x509.Certificate) -> bool:
    """Whether ``cert`` carries noRevAvail (RFC 9608): its CA publishes no revocation for it."""
    return any(ext.oid == NO_REV_AVAIL for ext in cert.extensions)


def _distribution_points(url: str) -> x509.CRLDistributionPoints:
    """RFC 5280 §4.2.1.13: one distribution point, a full name (the URL), no reasons (so the
    CRL there covers every reason), the CRL issued by the certificate's issuer."""
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )


def _ca_name(common_name: str, organization: str | None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKey,
    days: int,
    *,
    path_length: int | None,
    not_after_cap: dt.datetime | None = None,
    issuer_ski: x509.SubjectKeyIdentifier | None = None,
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    not_after = now + dt.timedelta(days=days)
    if not_after_cap is not None:
        not_after = min(not_after, not_after_cap)
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski or ski),
            critical=False,
        )
    )
