"""The token service's TLS: server contexts swapped without a restart, the peer certificate of
each connection, and revocation of CA-issued client certificates (RFC 5280 §5, RFC 8705 §2)."""
