"""Registering a federation: an external token issuer whose JWTs may authenticate clients.

Where its keys come from, in order of preference of the operator:

* ``--jwks FILE``: a JWK Set registered with the federation (an air-gapped cluster, or an
  issuer whose discovery needs credentials, as a Kubernetes API server's usually does: export
  ``kubectl get --raw /openid/v1/jwks``);
* ``--jwks-uri URL``: fetched by the server (:mod:`mtlsauth.core.jwks`);
* neither: OpenID Connect Discovery 1.0 §4, done once when the federation is added:
  ``<issuer>/.well-known/openid-configuration``, whose ``issuer`` must be the configured issuer
  exactly (§4.3) and whose ``jwks_uri`` is stored.

Every fetch, at registration and at run time, goes through :mod:`mtlsauth.core.fetch` (https,
no redirects, bounded) under the address policy of ``jwks_uri_allow_private``: federation
issuers are often internal, and the operator allows those networks there, in one place.
"""

from __future__ import annotations

import re
import ssl
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from mtlsauth.core.fetch import AddressPolicy, FetchError, fetch_json, fetch_session
from mtlsauth.issuer.model import Federation
from mtlsauth.issuer.registration import RegistrationError, load_public_jwks

__all__ = [
    "DISCOVERY_PATH",
    "DiscoveryError",
    "discover_jwks_uri",
    "new_federation",
    "outbound_context",
    "validate_name",
]

DISCOVERY_PATH: Final = "/.well-known/openid-configuration"
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# An issuer or audience is compared as a string (RFC 7519 §4.1.1, §4.1.3): printable, bounded.
_STRING: Final = re.compile(r"[\x21-\x7e]{1,2048}\Z")


class DiscoveryError(Exception):
    """The issuer's discovery document cannot be had or does not fit; the message says why."""


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise RegistrationError(
            "--name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
            f"digit, got {name!r}"
        )
    return name


def _https(flag: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.fragment or not _STRING.match(url):
        raise RegistrationError(f"{flag} must be an https URL, got {url!r}")
    return url


def new_federation(
    *,
    name: str,
    issuer: str,
    jwks_uri: str | None = None,
    jwks_file: Path | None = None,
    audience: str | None = None,
) -> Federation:
    """Validate a federation (without discovery: :func:`discover_jwks_uri` fills
    ``jwks_uri`` when neither it nor a JWK Set is given)."""
    validate_name(name)
    if jwks_uri is not None and jwks_file is not None:
        raise RegistrationError("give at most one of --jwks-uri URL, --jwks FILE")
    if jwks_uri is None and jwks_file is None:
        _https("--issuer (discovered)", issuer)
    elif not _STRING.match(issuer):
        raise RegistrationError(f"--issuer must be 1-2048 printable characters, got {issuer!r}")
    if audience is not None and not _STRING.match(audience):
        raise RegistrationError(f"--audience must be 1-2048 printable characters, got {audience!r}")
    return Federation(
        name=name,
        issuer=issuer,
        jwks_uri=_https("--jwks-uri", jwks_uri) if jwks_uri is not None else None,
        jwks=load_public_jwks(jwks_file) if jwks_file is not None else None,
        audience=audience,
        created_at=time.time(),
    )


def outbound_context(cafile: Path | None) -> ssl.SSLContext:
    """The verifying context of key fetches: the system's CAs, plus ``jwks_uri_cafile``."""
    ctx = ssl.create_default_context()
    if cafile is not None:
        ctx.load_verify_locations(cafile=str(cafile))
    return ctx


async def discover_jwks_uri(
    issuer: str, *, ssl_context: ssl.SSLContext, policy: AddressPolicy, seconds: float
) -> str:
    """OpenID Connect Discovery 1.0 §4: the ``jwks_uri`` of ``issuer``'s configuration,
    whose ``issuer`` must be ``issuer`` exactly (§4.3); ``seconds`` bounds the fetch."""
    url = issuer.rstrip("/") + DISCOVERY_PATH
    session = fetch_session(seconds, policy)
    try:
        doc: Any = await fetch_json(session, url, ssl_context=ssl_context, policy=policy)
    except FetchError as exc:
        raise DiscoveryError(str(exc)) from exc
    finally:
        await session.close()
    if not isinstance(doc, dict):
        raise DiscoveryError(f"{url} is not a JSON object")
    if doc.get("issuer") != issuer:
        raise DiscoveryError(
            f"{url} names issuer {str(doc.get('issuer'))[:200]!r}, not {issuer!r} "
            "(OpenID Connect Discovery §4.3: they must be identical)"
        )
    jwks_uri = doc.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise DiscoveryError(f"{url} has no jwks_uri")
    try:
        return _https("jwks_uri", jwks_uri)
    except RegistrationError as exc:
        raise DiscoveryError(f"{url}: {exc}") from exc
