"""The token service: an OAuth 2.0 authorization server for the client credentials grant
(RFC 6749 §4.4) with certificate-bound access tokens (RFC 8705, RFC 9068).

The domain knows nothing of HTTP:

* ``settings`` — the validated configuration; ``model`` — the registered client (RFC 7591 §2
  metadata); ``registry`` — every client in memory, refreshed from ``store/`` (SQLite or
  PostgreSQL) when it changes; ``registration`` — what an operator may register.
* ``clientauth/`` — one module per client authentication method (RFC 6749 §2.3.1, RFC 7523 §2.2,
  RFC 8705 §2) and the ``guard`` every endpoint authenticates through (throttled by
  ``throttle``, decision D7; tallied by ``audit``; counted by ``metrics``).
* ``grant`` — from authenticated client to token response (RFC 6749 §4.4, §5.1); ``tokens`` —
  the ``TokenSigner`` (RFC 9068, bound by ``cnf``, RFC 8705 §3.1); ``keys`` and ``secrets`` —
  signing keys and client secrets; ``introspection`` — RFC 7662 and RFC 7009.
* ``tls/`` — the server's TLS contexts; each connection's handshake makes its
  ``PeerCertificate`` and checks revocation (RFC 5280 §5).

``http/`` is the aiohttp application around it: one module per endpoint, one middleware.
``issuer`` always means the issuer URL (RFC 8414 §2), never the signer.
"""
