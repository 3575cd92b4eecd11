"""Publishing CRLs at stable URLs (RFC 5280 §4.2.1.13 CRL distribution points, §5 CRLs).

Each CA's CRL is published, DER-encoded, as ``<base>/crl/<key id>.crl``: the key id is the
CA's subjectKeyIdentifier in hex, so the URL stays the same across CRL re-signing and never
collides between a root and its issuing CA, or an old CA and its successor. ``pki crl`` writes
the files into ``<ca>/crl/``, where the token service (``GET /crl/<key id>.crl``) or any static
web server can serve them; ``<ca>/crl-base-url`` holds the base URL given at ``init``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pki.ca import CAError

__all__ = [
    "BASE_URL_FILE",
    "MAX_CRL_BYTES",
    "PUBLISH_DIR",
    "crl_file_name",
    "crl_url",
    "publish",
    "published_crl",
    "read_base_url",
    "validate_base_url",
]

#: In the CA directory: the base URL CRLs are published under (one line).
BASE_URL_FILE: Final = "crl-base-url"
#: In the CA directory: the DER CRLs, one per CA, named by key id.
PUBLISH_DIR: Final = "crl"
#: A CRL larger than this is not served (a CA this size would want delta CRLs or OCSP).
MAX_CRL_BYTES: Final = 16 * 1024 * 1024
_NAME: Final = re.compile(r"[0-9a-f]{2,128}\.crl\Z")


def validate_base_url(url: str) -> str:
    """An http or https URL with a host and no query or fragment, without a trailing slash."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - a port outside 0-65535 raises here
    except ValueError as exc:  # an unclosed IPv6 literal, say
        raise CAError(f"the CRL base URL does not parse: {url!r} ({exc})") from exc
    if (
        parts.scheme not in {"http", "https"}
        or not parts.hostname
        or parts.query
        or (parts.fragment)
    ):
        raise CAError(
            f"the CRL base URL must be an http:// or https:// URL with a host and no query, "
            f"got {url!r}"
        )
    return url.strip().rstrip("/")


def crl_file_name(ca_cert: x509.Certificate) -> str:
    """``<subjectKeyIdentifier hex>.crl`` of the CA that signs the CRL."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound as exc:
        raise CAError("the CA certificate has no subjectKeyIdentifier") from exc
    return ski.digest.hex() + ".crl"


def crl_url(base: str, ca_cert: x509.Certificate) -> str:
    return f"{base}/{PUBLISH_DIR}/{crl_file_name(ca_cert)}"


def read_base_url(ca_dir: Path) -> str | None:
    """The base URL stored at ``init``, or None when CRLs are not published."""
    try:
        text = (ca_dir / BASE_URL_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CAError(f"cannot read {ca_dir / BASE_URL_FILE}: {exc}") from exc
    return validate_base_url(text) if text else None


def publish(
    ca_dir: Path, crls: list[tuple[x509.Certificate, x509.CertificateRevocationList]]
) -> None:
    """Write each CA's CRL as DER under its key id, atomically (a reader never sees half)."""
    target = ca_dir / PUBLISH_DIR
    target.mkdir(exist_ok=True)
    for ca_cert, crl in crls:
        path = target / crl_file_name(ca_cert)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(crl.public_bytes(Encoding.DER))
        os.replace(tmp, path)


def published_crl(ca_dir: Path, name: str) -> bytes | None:
    """The DER CRL published as ``name``, or None; any other name (a path, ``..``) is None."""
    if not _NAME.match(name):
        return None
    path = ca_dir / PUBLISH_DIR / name
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CRL_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if len(data) > MAX_CRL_BYTES:
        raise CAError(f"{path} is larger than {MAX_CRL_BYTES} bytes: not served")
    return data
