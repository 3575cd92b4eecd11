"""The core every wing shares; it imports nothing else of mtlsauth and nothing of ``pki``.

* :mod:`~mtlsauth.core.errors` — the OAuth error tree (RFC 6749 §5.2, RFC 6750 §3), which owns
  its wire format.
* :mod:`~mtlsauth.core.thumbprint` — the certificate thumbprint ``x5t#S256`` (RFC 8705 §3.1).
* :mod:`~mtlsauth.core.dn` — distinguished names and their matching (RFC 4514, RFC 4518; D1).
* :mod:`~mtlsauth.core.peer` — where a request's client certificate comes from: the TLS
  connection or a trusted proxy's header (RFC 9440, nginx, Envoy XFCC via
  :mod:`~mtlsauth.core.xfcc`).
* :mod:`~mtlsauth.core.fetch` — one bounded HTTPS JSON fetch (no redirects, size and address
  limits) for key sets and metadata.
"""
