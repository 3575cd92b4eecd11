"""mtlsauth: an OAuth 2.0 authorization server for machines.

Client credentials over mutual TLS (RFC 8705), certificate-bound JWT access tokens (RFC 9068),
and a small CA toolkit (:mod:`pki`).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
