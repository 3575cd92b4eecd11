"""A foreign PKI for tests, built with cryptography alone (not pki/): a root, an intermediate,
client leaves, CRLs; as another organisation's CA would issue them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import ClientCert

PEM = serialization.Encoding.PEM


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(PEM)


@dataclass
class Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    revoked: dict[int, dt.datetime] = field(default_factory=dict)
    crl_number: int = 0

    def crl(self, *, next_update: dt.timedelta = dt.timedelta(hours=1)) -> bytes:
        """A DER CRL of everything revoked so far, signed by this issuer."""
        now = dt.datetime.now(dt.UTC)
        self.crl_number += 1
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - dt.timedelta(seconds=5))
            .next_update(now + next_update)
            .add_extension(x509.CRLNumber(self.crl_number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        for serial, at in self.revoked.items():
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at).build()
            )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _ca(cn: str, parent: Issuer | None) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer_name = parent.cert.subject if parent else _name(cn)
    signer = parent.key if parent else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if parent is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()),
            critical=False,
        )
    return Issuer(cert=builder.sign(signer, hashes.SHA256()), key=key)


@dataclass
class ForeignPKI:
    """root → intermediate → leaves."""

    root: Issuer
    intermediate: Issuer

    @classmethod
    def create(cls, org: str) -> ForeignPKI:
        root = _ca(f"{org} Root CA", None)
        return cls(root=root, intermediate=_ca(f"{org} Issuing CA", root))

    def bundle(self, out: Path, *, with_intermediate: bool = True) -> Path:
        """The ``trust add --ca`` file."""
        out.parent.mkdir(parents=True, exist_ok=True)
        pems = _pem(self.root.cert) + (_pem(self.intermediate.cert) if with_intermediate else b"")
        out.write_bytes(pems)
        return out

    def issue(
        self,
        out: Path,
        cn: str,
        *,
        uris: tuple[str, ...] = (),
        crl_urls: tuple[str, ...] = (),
        ocsp_url: str | None = None,
        ca: bool = False,
        digital_signature: bool = True,
    ) -> ClientCert:
        """A client leaf from the intermediate, written as cert, key and chain (leaf +
        intermediate, as a client sends it)."""
        issuer = self.intermediate
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        if not sans:
            sans = [x509.DNSName(f"{cn.lower()}.example")]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(issuer.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=digital_signature,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=not digital_signature,
                    key_cert_sign=ca,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        )
        if crl_urls:
            builder = builder.add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            full_name=[x509.UniformResourceIdentifier(u)],
                            relative_name=None,
                            reasons=None,
                            crl_issuer=None,
                        )
                        for u in crl_urls
                    ]
                ),
                critical=False,
            )
        if ocsp_url:
            builder = builder.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            x509.oid.AuthorityInformationAccessOID.OCSP,
                            x509.UniformResourceIdentifier(ocsp_url),
                        )
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(issuer.key, hashes.SHA256())
        out.mkdir(parents=True, exist_ok=True)
        paths = {n: out / f"{n}.pem" for n in ("cert", "key", "chain")}
        paths["cert"].write_bytes(_pem(cert))
        paths["key"].write_bytes(
            key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        paths["chain"].write_bytes(_pem(cert) + _pem(issuer.cert))
        return ClientCert(
            cert=paths["cert"],
            key=paths["key"],
            chain=paths["chain"],
            der=cert.public_bytes(serialization.Encoding.DER),
        )

    def revoke(self, cert: ClientCert) -> None:
        serial = x509.load_der_x509_certificate(cert.der).serial_number
        self.intermediate.revoked[serial] = dt.datetime.now(dt.UTC)
