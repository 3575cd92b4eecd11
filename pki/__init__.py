"""mtlsauth's CA toolkit: a small certificate authority for client certificates.

Library use::

    root = pki.CA.create(common_name="Example root CA")
    issuing = root.create_intermediate(common_name="Example issuing CA")
    sans = pki.SubjectAltNames(dns=["billing.internal"])
    issued = issuing.issue_client(common_name="billing", sans=sans)
    issued.write_to_dir(Path("out"))

    authority = pki.Authority.init(Path("ca"))   # root + issuing CA, inventory, CRL, audit

Command line: ``python -m pki --help`` or ``mtlsauth pki --help`` (one parser serves both).
"""

from pki.authority import Authority, Issued, resolve_passphrase
from pki.ca import (
    CA,
    KEY_TYPES,
    REASONS,
    CAConfigError,
    CAError,
    IssuedCert,
    KeyType,
    PrivateKey,
    SubjectAltNames,
    generate_key,
    load_private_key,
    write_private,
)
from pki.constraints import NameConstraintError, NameConstraints
from pki.verify import Report, explain

__all__ = [
    "CA",
    "KEY_TYPES",
    "REASONS",
    "Authority",
    "CAConfigError",
    "CAError",
    "Issued",
    "IssuedCert",
    "KeyType",
    "NameConstraintError",
    "NameConstraints",
    "PrivateKey",
    "Report",
    "SubjectAltNames",
    "explain",
    "generate_key",
    "load_private_key",
    "resolve_passphrase",
    "write_private",
]
