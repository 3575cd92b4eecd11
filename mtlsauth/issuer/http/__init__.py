"""The token service over HTTP (aiohttp): the application, one module per endpoint, one
middleware.

Every endpoint has the same shape: parse the request (``forms``), authenticate the client
(``credentials.authenticate``: credentials, peer certificate and source, through the guard),
call the domain, answer. ``/token`` (RFC 6749 §4.4.2, §5.1), ``/introspect`` (RFC 7662 §2),
``/revoke`` (RFC 7009 §2), the metadata (RFC 8414 §3), ``/jwks`` (RFC 7517 §5), ``/health`` and
``/metrics``. ``app`` wires the domain objects into typed state (``keys``: ``web.AppKey``) and
runs the background refresh; ``connections`` bounds what one TCP connection may hold;
``middleware`` renders every error (RFC 6749 §5.2); ``dispatch`` runs the app on aiohttp's
low-level server, fixed routes looked up in one dict.
"""
