"""Name constraints (RFC 5280 §4.2.1.10), enforced when a certificate is issued.

A CA with ``permitted`` subtrees may only certify names inside them (per name type: a type
with no permitted subtree is unconstrained), and never a name inside an ``excluded`` one.
Matching follows RFC 5280: a DNS constraint ``example.org`` covers the name and every
subdomain, ``.example.org`` only subdomains; a URI constraint applies to the URI's host the
same way; an email constraint is a mailbox, a host, or ``.domain``; an IP constraint is a
network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509

__all__ = ["NameConstraintError", "NameConstraints", "check_names"]


class NameConstraintError(ValueError):
    """A name falls outside the CA's permitted subtrees or inside an excluded one."""


def _dns_within(name: str, constraint: str) -> bool:
    name, constraint = name.lower().rstrip("."), constraint.lower().rstrip(".")
    if constraint.startswith("."):
        return name.endswith(constraint)
    return name == constraint or name.endswith("." + constraint)


def _email_within(address: str, constraint: str) -> bool:
    local, _, host = address.rpartition("@")
    if "@" in constraint:
        c_local, _, c_host = constraint.rpartition("@")
        return local == c_local and host.lower() == c_host.lower()
    if constraint.startswith("."):
        return host.lower().endswith(constraint.lower())
    return host.lower() == constraint.lower()


def _within(name: x509.GeneralName, subtree: x509.GeneralName) -> bool | None:
    """Whether ``name`` is inside ``subtree``; None when they are of different types."""
    if isinstance(name, x509.DNSName) and isinstance(subtree, x509.DNSName):
        return _dns_within(name.value, subtree.value)
    if isinstance(name, x509.UniformResourceIdentifier) and isinstance(
        subtree, x509.UniformResourceIdentifier
    ):
        host = urlsplit(name.value).hostname
        if not host:
            return False  # RFC 5280: a URI without a host cannot satisfy a constraint
        constraint = subtree.value.lower()
        return host.endswith(constraint) if constraint.startswith(".") else host == constraint
    if isinstance(name, x509.RFC822Name) and isinstance(subtree, x509.RFC822Name):
        return _email_within(name.value, subtree.value)
    if isinstance(name, x509.IPAddress) and isinstance(subtree, x509.IPAddress):
        address, network = name.value, subtree.value
        if not isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
            return False
        return isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address) and (
            address.version == network.version and address in network
        )
    return None


@dataclass(frozen=True, slots=True)
class NameConstraints:
    permitted: tuple[x509.GeneralName, ...] = ()
    excluded: tuple[x509.GeneralName, ...] = ()

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> NameConstraints:
        try:
            ext = cert.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            return cls()
        return cls(tuple(ext.permitted_subtrees or ()), tuple(ext.excluded_subtrees or ()))

    @classmethod
    def parse(
        cls,
        *,
        dns: Sequence[str] = (),
        uri: Sequence[str] = (),
        email: Sequence[str] = (),
        ip: Sequence[str] = (),
        excluded_dns: Sequence[str] = (),
    ) -> NameConstraints:
        """Permitted subtrees from operator input (URI constraints are host names)."""
        try:
            permitted: list[x509.GeneralName] = [x509.DNSName(v) for v in dns]
            permitted += [x509.UniformResourceIdentifier(v) for v in uri]
            permitted += [x509.RFC822Name(v) for v in email]
            permitted += [x509.IPAddress(ipaddress.ip_network(v, strict=True)) for v in ip]
        except ValueError as exc:
            raise NameConstraintError(f"invalid name constraint: {exc}") from exc
        return cls(tuple(permitted), tuple(x509.DNSName(v) for v in excluded_dns))

    def extension(self) -> x509.NameConstraints | None:
        if not self.permitted and not self.excluded:
            return None
        return x509.NameConstraints(
            permitted_subtrees=list(self.permitted) or None,
            excluded_subtrees=list(self.excluded) or None,
        )

    def describe(self) -> dict[str, list[str]]:
        return {
            "permitted": [f"{type(n).__name__}:{n.value}" for n in self.permitted],
            "excluded": [f"{type(n).__name__}:{n.value}" for n in self.excluded],
        }


def check_names(constraints: NameConstraints, names: Iterable[x509.GeneralName]) -> None:
    """Raise NameConstraintError naming the first name the constraints do not allow."""
    for name in names:
        for subtree in constraints.excluded:
            if _within(name, subtree):
                raise NameConstraintError(
                    f"{type(name).__name__} {name.value!r} is inside the excluded subtree "
                    f"{subtree.value!r}"
                )
        same_type = [s for s in constraints.permitted if _within(name, s) is not None]
        if same_type and not any(_within(name, s) for s in same_type):
            allowed = ", ".join(repr(s.value) for s in same_type)
            raise NameConstraintError(
                f"{type(name).__name__} {name.value!r} is outside the permitted subtrees "
                f"({allowed})"
            )
