"""The core every wing shares; it imports nothing else of mtlsauth and nothing of ``pki``
(tests/test_layout.py pins it).

* :mod:`~mtlsauth.core.errors` — the OAuth error tree (RFC 6749 §5.2, RFC 6750 §3), which owns
  its wire format; the one realm and the one no-store header set (RFC 6749 §5.1).
* :mod:`~mtlsauth.core.access_token` — the JWT access-token profile (RFC 9068) and its
  certificate binding ``cnf`` (RFC 8705 §3.1), for the issuer and the checker alike.
* :mod:`~mtlsauth.core.thumbprint` — the certificate thumbprint ``x5t#S256`` (RFC 8705 §3.1).
* :mod:`~mtlsauth.core.dn` — distinguished names and their matching (RFC 4514, RFC 4518; D1).
* :mod:`~mtlsauth.core.peer` — where a request's client certificate comes from: the TLS
  connection or a trusted proxy's header (RFC 9440, nginx, Envoy XFCC via
  :mod:`~mtlsauth.core.xfcc`).
* :mod:`~mtlsauth.core.fetch` — one bounded HTTPS JSON fetch (no redirects, size and address
  limits) for key sets and metadata.
* :mod:`~mtlsauth.core.jwks` — the one JWK Set fetch-and-cache component (RFC 7517 §5): single
  flight, back-off, refetch limits, bounded maps.
* :mod:`~mtlsauth.core.requestid` — the per-request id of logs and ``X-Request-Id``.
"""
