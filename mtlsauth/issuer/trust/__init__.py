"""Trust in what others issue: external token issuers (federations, RFC 7523 assertions) and
external CAs whose certificates may authenticate tls_client_auth clients (RFC 8705 §2.1), the
chains they verify along, and the revocation of what they issued."""

from mtlsauth.issuer.trust.anchors import TrustAnchor, TrustError, parse_bundle
from mtlsauth.issuer.trust.verifier import TrustSet

__all__ = ["TrustAnchor", "TrustError", "TrustSet", "parse_bundle"]
