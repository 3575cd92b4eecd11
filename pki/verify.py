"""Explain, offline, whether a client certificate would pass the server's handshake and why.

A refused handshake is silent for the client (it sees EOF), so this runs the same checks the
server does, one by one, and says which fails: chain to the CA, validity, EKU clientAuth,
keyUsage, name constraints, revocation, and the freshness of the CRL itself.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from mtlsauth.core.dn import CertificateName, DNError
from pki.constraints import NameConstraintError, NameConstraints, check_names

__all__ = ["CRL_WARN_BEFORE", "Check", "Report", "explain"]

#: A CRL this close to its nextUpdate is reported as a warning.
CRL_WARN_BEFORE: Final = dt.timedelta(days=2)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    warning: bool = False


@dataclass(slots=True)
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str, *, warning: bool = False) -> None:
        self.checks.append(Check(name, ok, detail, warning))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": "would be accepted" if self.ok else "would be refused",
            "checks": [
                {"check": c.name, "ok": c.ok, "detail": c.detail}
                | ({"warning": True} if c.warning else {})
                for c in self.checks
            ],
        }


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier] | None:
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return None


def explain(
    leaf: x509.Certificate,
    *,
    root: x509.Certificate,
    issuing: x509.Certificate,
    crl: x509.CertificateRevocationList | None,
    now: dt.datetime | None = None,
) -> Report:
    """Every check the server makes, in order, with a reason for each."""
    now = now or dt.datetime.now(dt.UTC)
    report = Report()
    _check_chain(report, leaf, root, issuing, now)
    _check_validity(report, leaf, now)
    _check_eku(report, leaf)
    _check_key_usage(report, leaf)
    _check_san_syntax(report, leaf)
    _check_name_constraints(report, leaf, issuing)
    if leaf.issuer == issuing.subject:
        _check_crl(report, leaf, issuing, crl, now)
    return report


def _check_chain(
    report: Report,
    leaf: x509.Certificate,
    root: x509.Certificate,
    issuing: x509.Certificate,
    now: dt.datetime,
) -> None:
    """RFC 5280 §6 for this CA's fixed two-level path."""
    if leaf.issuer == leaf.subject:
        report.add(
            "chain",
            False,
            "self-signed: it passes only if registered for a self_signed_tls_client_auth client",
        )
        return
    if leaf.issuer != issuing.subject:
        report.add(
            "chain",
            False,
            f"issued by {leaf.issuer.rfc4514_string()!r}, not by this CA "
            f"({issuing.subject.rfc4514_string()!r})",
        )
        return
    # The same path OpenSSL builds on the server: leaf <- issuing CA <- root (trust anchor).
    # (cryptography's client verifier would also demand a SAN, which the server does not.)
    for child, parent, label in ((leaf, issuing, "the issuing CA"), (issuing, root, "the root")):
        try:
            child.verify_directly_issued_by(parent)
        except (InvalidSignature, ValueError, TypeError) as exc:
            report.add("chain", False, f"{label}'s signature does not verify ({exc})")
            return
    for ca, label in ((issuing, "issuing CA"), (root, "root CA")):
        if not ca.not_valid_before_utc <= now <= ca.not_valid_after_utc:
            report.add("chain", False, f"the {label} certificate is not valid now")
            return
        try:
            is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            report.add("chain", False, f"the {label} certificate is not a CA")
            return
    report.add("chain", True, "chains to the root through the issuing CA")


def _check_validity(report: Report, leaf: x509.Certificate, now: dt.datetime) -> None:
    if now < leaf.not_valid_before_utc:
        report.add("validity", False, f"not valid before {leaf.not_valid_before_utc.isoformat()}")
    elif now > leaf.not_valid_after_utc:
        report.add("validity", False, f"expired at {leaf.not_valid_after_utc.isoformat()}")
    else:
        days = (leaf.not_valid_after_utc - now).days
        report.add(
            "validity",
            True,
            f"valid until {leaf.not_valid_after_utc.isoformat()} ({days} days left)",
            warning=days < 14,
        )


def _check_eku(report: Report, leaf: x509.Certificate) -> None:
    """OpenSSL's server side requires clientAuth whenever an EKU extension is present."""
    eku = _eku(leaf)
    if eku is None:
        report.add("eku", True, "no extendedKeyUsage: any purpose is allowed", warning=True)
    elif ExtendedKeyUsageOID.CLIENT_AUTH in eku:
        report.add("eku", True, "extendedKeyUsage includes clientAuth")
    else:
        names = ", ".join(getattr(o, "_name", o.dotted_string) for o in eku)
        report.add("eku", False, f"extendedKeyUsage lacks clientAuth (has: {names})")


_KEY_USAGES: Final = (
    ("digital_signature", "digitalSignature"),
    ("content_commitment", "nonRepudiation"),
    ("key_encipherment", "keyEncipherment"),
    ("data_encipherment", "dataEncipherment"),
    ("key_agreement", "keyAgreement"),
    ("key_cert_sign", "keyCertSign"),
    ("crl_sign", "cRLSign"),
)


def _check_key_usage(report: Report, leaf: x509.Certificate) -> None:
    """RFC 8446 §4.4.2.2: a TLS client signs CertificateVerify, so keyUsage (when present)
    must allow digitalSignature. OpenSSL lets keyAgreement alone pass; the server does not."""
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        report.add("key_usage", True, "no keyUsage extension", warning=True)
        return
    if usage.digital_signature:
        report.add("key_usage", True, "digitalSignature set")
        return
    present = ", ".join(label for attr, label in _KEY_USAGES if getattr(usage, attr)) or "none"
    report.add(
        "key_usage",
        False,
        f"digitalSignature missing (has: {present}): a TLS client must sign with its key "
        "(RFC 8446 §4.4.2.2), so the token service refuses it",
    )


_SAN_KINDS: Final[dict[type, str]] = {
    x509.DNSName: "san_dns",
    x509.UniformResourceIdentifier: "san_uri",
    x509.IPAddress: "san_ip",
    x509.RFC822Name: "san_email",
}


def _check_san_syntax(report: Report, leaf: x509.Certificate) -> None:
    """Every SAN must pass the validation client registration applies (the one pki issue
    uses): a name no client can be registered with authenticates nobody."""
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return
    for name in sans:
        kind = _SAN_KINDS.get(type(name))
        if kind is None:
            continue
        try:
            CertificateName.parse(kind, str(name.value))
        except DNError as exc:
            report.add("san_syntax", False, f"{type(name).__name__} {name.value!r}: {exc}")
            return
    report.add("san_syntax", True, "every SAN is a valid name")


def _check_name_constraints(
    report: Report, leaf: x509.Certificate, issuing: x509.Certificate
) -> None:
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        check_names(NameConstraints.from_certificate(issuing), list(sans))
    except x509.ExtensionNotFound:
        report.add("name_constraints", True, "no subjectAltName")
    except NameConstraintError as exc:
        report.add("name_constraints", False, str(exc))
    else:
        report.add("name_constraints", True, "every SAN is within the CA's name constraints")


def _check_crl(
    report: Report,
    leaf: x509.Certificate,
    issuing: x509.Certificate,
    crl: x509.CertificateRevocationList | None,
    now: dt.datetime,
) -> None:
    if crl is None:
        report.add("crl", False, "no CRL: the server cannot tell whether it is revoked")
        return
    if not crl.is_signature_valid(issuing.public_key()):  # type: ignore[arg-type]
        report.add("crl", False, "the CRL's signature does not verify against the CA")
    elif crl.next_update_utc is not None and now > crl.next_update_utc:
        report.add(
            "crl",
            False,
            f"the CRL expired at {crl.next_update_utc.isoformat()}: every certificate of "
            "this CA is refused until it is regenerated (mtlsauth pki crl)",
        )
    else:
        left = crl.next_update_utc - now if crl.next_update_utc else None
        until = crl.next_update_utc.isoformat() if crl.next_update_utc else "?"
        report.add(
            "crl",
            True,
            f"fresh until {until}",
            warning=left is not None and left < CRL_WARN_BEFORE,
        )
    entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    if entry is None:
        report.add("revocation", True, "not revoked")
        return
    try:
        why = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
    except x509.ExtensionNotFound:
        why = "unspecified"
    report.add("revocation", False, f"revoked at {entry.revocation_date_utc.isoformat()} ({why})")
