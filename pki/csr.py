"""What a certificate signing request asks for (RFC 2986), checked before anything is signed.

A CSR's subject and its requested subjectAltNames (the extensionRequest attribute, RFC 2985
§5.4.2) are kept in the certificate, under the same rules as names given on the command line:
each SAN must pass the validation client registration uses, and the CA's name constraints
apply to all of them. What is not allowed is refused with its name, never silently dropped.
"""

from __future__ import annotations

from typing import Final

from cryptography import x509
from cryptography.x509.oid import NameOID

from mtlsauth.core.dn import DNError, dn_of_certificate
from pki.ca import CAError, SubjectAltNames

__all__ = ["SUBJECT_ATTRIBUTES", "requested_sans", "requested_subject"]

#: Subject attributes a CSR may carry: those a subject-DN registration can name (RFC 4514 §3
#: and the ones common in client certificates). Anything else is refused rather than signed
#: into a certificate that no registration could match.
SUBJECT_ATTRIBUTES: Final[dict[x509.ObjectIdentifier, str]] = {
    NameOID.COMMON_NAME: "CN",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.POSTAL_CODE: "POSTALCODE",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    NameOID.TITLE: "TITLE",
    NameOID.GIVEN_NAME: "GN",
    NameOID.SURNAME: "SN",
    NameOID.DN_QUALIFIER: "DNQUALIFIER",
    NameOID.ORGANIZATION_IDENTIFIER: "ORGANIZATIONIDENTIFIER",
    NameOID.EMAIL_ADDRESS: "EMAILADDRESS",
}


def requested_subject(
    csr: x509.CertificateSigningRequest, common_name: str | None = None
) -> x509.Name:
    """The CSR's subject, every RDN kept in order; ``common_name`` replaces its CN (or is
    added when it has none). CAError names an attribute that is not allowed."""
    rdns: list[x509.RelativeDistinguishedName] = []
    replaced = False
    try:
        override = (
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
            if common_name is not None
            else None
        )
    except ValueError as exc:
        raise CAError(f"invalid common name: {exc}") from exc
    for rdn in csr.subject.rdns:
        for attribute in rdn:
            if attribute.oid not in SUBJECT_ATTRIBUTES:
                raise CAError(
                    f"the CSR's subject attribute {attribute.oid.dotted_string} "
                    f"({attribute.oid._name}) is not allowed; allowed: "
                    f"{', '.join(SUBJECT_ATTRIBUTES.values())}"
                )
        if override is not None and any(a.oid == NameOID.COMMON_NAME for a in rdn):
            # The common name is replaced where the CSR put it, so the DN keeps its order.
            if not replaced:
                rdns.append(override)
                replaced = True
            continue
        rdns.append(rdn)
    if override is not None and not replaced:
        rdns.append(override)
    subject = x509.Name(rdns)
    if not subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        raise CAError("the CSR has no common name: give --cn")
    try:
        dn_of_certificate(subject)
    except DNError as exc:
        raise CAError(f"the CSR's subject is not allowed: {exc}") from exc
    return subject


def requested_sans(csr: x509.CertificateSigningRequest) -> SubjectAltNames:
    """The subjectAltNames the CSR requests; CAError names an entry of a type a client
    certificate may not carry (directoryName, otherName, registeredID)."""
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return SubjectAltNames()
    except ValueError as exc:
        raise CAError(f"the CSR's extensions do not parse: {exc}") from exc
    dns: list[str] = []
    uri: list[str] = []
    ip: list[str] = []
    email: list[str] = []
    for name in ext:
        if isinstance(name, x509.DNSName):
            dns.append(name.value)
        elif isinstance(name, x509.UniformResourceIdentifier):
            uri.append(name.value)
        elif isinstance(name, x509.IPAddress):
            ip.append(str(name.value))
        elif isinstance(name, x509.RFC822Name):
            email.append(name.value)
        else:
            raise CAError(
                f"the CSR requests a subjectAltName of type {type(name).__name__} "
                f"({name.value!r}), which is not allowed: only DNS, URI, IP and email"
            )
    return SubjectAltNames(dns=dns, uri=uri, ip=ip, email=email)
