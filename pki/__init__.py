"""mtlsauth's CA toolkit: a small certificate authority for client certificates.

Library use::

    ca = pki.CA.create(common_name="Example Issuing CA")
    sans = pki.SubjectAltNames(dns=["billing.internal"])
    issued = ca.issue_client(common_name="billing", sans=sans)
    issued.write_to_dir(Path("out"))

Command line: ``python -m pki --help`` or ``mtlsauth pki --help`` (one parser serves both).
"""

from pki.ca import (
    CA,
    KEY_TYPES,
    CAError,
    IssuedCert,
    KeyType,
    PrivateKey,
    SubjectAltNames,
    generate_key,
    write_private,
)

__all__ = [
    "CA",
    "KEY_TYPES",
    "CAError",
    "IssuedCert",
    "KeyType",
    "PrivateKey",
    "SubjectAltNames",
    "generate_key",
    "write_private",
]
