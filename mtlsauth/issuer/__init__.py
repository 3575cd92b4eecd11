"""The token service: an OAuth 2.0 authorization server for the client credentials grant.

Domain modules know nothing of HTTP: ``settings`` (the validated configuration), ``model`` (the
registered client), ``registration``, ``secrets``, ``keys`` and ``tokens`` (RFC 9068 access tokens),
``grant`` (RFC 6749 §4.4), ``introspection`` (RFC 7662, RFC 7009), ``throttle`` (D7), ``audit``,
``metrics``; ``clientauth/`` holds one module per client authentication method (RFC 6749 §2.3,
RFC 7523, RFC 8705); ``store/`` the SQLite and PostgreSQL stores; ``tls/`` the server's TLS contexts
and certificate revocation. ``http/`` is the aiohttp application: one module per endpoint, one
middleware.
"""
