"""Enrollment over Secure Transport (RFC 7030): the token service as an online CA for its
clients. Domain code only; the endpoints are in :mod:`mtlsauth.issuer.http.est`.

* :mod:`.wire` — the RFC 7030 §4 encodings: base64 PKCS#10 in, base64 certs-only PKCS#7 out;
* :mod:`.service` — who may enroll, throttled and audited, over the CA of :mod:`pki`;
* :mod:`.inventory` — the CA inventory's expiry and renewal figures for ``/metrics``.
"""

from mtlsauth.issuer.est.inventory import inventory_metrics
from mtlsauth.issuer.est.service import Enrollment, load_enrollment
from mtlsauth.issuer.est.wire import certs_only, parse_csr

__all__ = ["Enrollment", "certs_only", "inventory_metrics", "load_enrollment", "parse_csr"]
