"""RFC 4514 parsing and RFC 4517 distinguishedNameMatch (decision D1), SAN canonical forms."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mtlsauth.core.dn import CertificateName, DNError, dn_of_certificate, format_dn, parse_dn

CN, ORG, C = "2.5.4.3", "2.5.4.10", "2.5.4.6"


def test_order_is_reversed_into_x500_order() -> None:
    assert parse_dn("CN=a,O=b,C=US") == (
        frozenset({(C, "us")}),
        frozenset({(ORG, "b")}),
        frozenset({(CN, "a")}),
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r"CN=a\,O=b", "a,o=b"),
        (r"CN=\#x", "#x"),
        (r"CN=x\20", "x"),
        (r"CN=\C3\A9t\C3\A9", "été"),
        (r"CN=a\+b", "a+b"),
        (r"CN=\"q\"", '"q"'),
        ("CN=#0C03666F6F", "foo"),
        ("CN=#13036162 63".replace(" ", ""), "abc"),
        ("2.5.4.3=x", "x"),
        ("OID.2.5.4.3=x", "x"),
        ("cn=  Many   Spaces  ", "many spaces"),
        ("CN=\uff21", "a"),  # NFKC: fullwidth A
    ],
)
def test_values(text: str, value: str) -> None:
    assert parse_dn(text) == (frozenset({(CN, value)}),)


def test_multi_valued_rdn_is_a_set() -> None:
    assert parse_dn("CN=a+UID=b,O=x") == parse_dn("UID=b+CN=a,O=x")
    assert parse_dn("CN=a+UID=b,O=x") != parse_dn("CN=a,UID=b,O=x")


@pytest.mark.parametrize(
    "text",
    ["", "CN", "CN=", "CN=a,", "=a", "FOO=a", "CN=a;O=b", "CN=a\\", "CN=a\\zz", "CN=#zz",
     "CN=#0c05ab", "CN=<x>", "CN=a+CN=b", "1.2.=x", "CN=#0404abcd"],
)  # fmt: skip
def test_rejected(text: str) -> None:
    with pytest.raises(DNError):
        parse_dn(text)


def test_format_round_trips() -> None:
    for text in [r"CN=a\,O=b,O=Org,C=US", "CN=a+UID=b,O=x", r"CN=\#lead,OU=trail\ "]:
        dn = parse_dn(text)
        assert parse_dn(format_dn(dn)) == dn


def _name(*attrs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])


def test_certificate_subject_matching() -> None:
    cert_name = _name((NameOID.COUNTRY_NAME, "US"), (NameOID.ORGANIZATION_NAME, "Good  Org"),
                      (NameOID.COMMON_NAME, "Alice"))  # fmt: skip
    assert dn_of_certificate(cert_name) == parse_dn("cn=alice, o=good org, c=us")
    injected = _name((NameOID.COUNTRY_NAME, "US"), (NameOID.COMMON_NAME, "Alice,O=Good Org"))
    assert dn_of_certificate(injected) != parse_dn("CN=Alice,O=Good Org,C=US")
    # The joined strings are equal; a naive comparison would accept the injected name.
    assert injected.rfc4514_string().lower().replace("\\", "") == "cn=alice,o=good org,c=us"


@pytest.mark.parametrize(
    ("kind", "value", "canonical"),
    [
        ("san_dns", "API.Example.com.", "api.example.com"),
        ("san_ip", "::FFFF:0:1", "::ffff:0:1"),
        ("san_ip", "2001:0db8:0000::1", "2001:db8::1"),
        ("san_email", "Svc@Example.COM", "Svc@example.com"),
        ("san_uri", "spiffe://example.org/a", "spiffe://example.org/a"),
        ("subject_dn", "cn=A,o=B", "CN=a,O=b"),
    ],
)
def test_canonical_names(kind: str, value: str, canonical: str) -> None:
    assert CertificateName.parse(kind, value).value == canonical


@pytest.mark.parametrize(
    ("kind", "value"),
    [("san_dns", "bad name"), ("san_ip", "300.1.1.1"), ("san_email", "nope"),
     ("san_uri", "relative/path"), ("subject_dn", "CN"), ("nickname", "x")],
)  # fmt: skip
def test_bad_names(kind: str, value: str) -> None:
    with pytest.raises(DNError):
        CertificateName.parse(kind, value)
