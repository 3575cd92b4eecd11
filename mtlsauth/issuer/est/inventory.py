"""The CA inventory on ``/metrics``: so an alert can fire before a fleet goes dark.

* ``mtlsauth_ca_client_certs_expiring{within="7d"|"30d"}`` — valid client certificates that
  expire within 7 and 30 days;
* ``mtlsauth_ca_client_cert_expiry_timestamp_seconds{subject}`` — per client (subject), when
  its latest valid certificate expires;
* ``mtlsauth_ca_client_cert_last_renewal_timestamp_seconds{subject}`` — per client, when it
  last renewed (``pki renew`` or EST simplereenroll).

Read from the inventory at each scrape (in a thread: it is SQLite); one series per client the
CA issued for, which the operator, not a request, decides.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from pathlib import Path

from mtlsauth.issuer.metrics import labels
from pki.inventory import Inventory

__all__ = ["inventory_metrics"]

log = logging.getLogger(__name__)

_WINDOWS = (("7d", dt.timedelta(days=7)), ("30d", dt.timedelta(days=30)))


def inventory_metrics(ca_dir: Path, now: dt.datetime | None = None) -> str:
    """Prometheus text of the inventory in ``ca_dir`` ("" when there is none)."""
    path = ca_dir / "inventory.db"
    if not path.is_file():
        return ""
    now = now or dt.datetime.now(dt.UTC)
    try:
        records = Inventory(path).query(profile="client")
    except sqlite3.Error as exc:
        # The service's own counters are still worth serving; the gap itself shows.
        log.warning("cannot read the CA inventory %s for /metrics: %s", path, exc)
        return ""
    valid = [r for r in records if r.status == "valid"]
    expiry: dict[str, dt.datetime] = {}
    for record in valid:
        expiry[record.subject] = max(record.expires, expiry.get(record.subject, record.expires))
    renewed: dict[str, dt.datetime] = {}
    for record in records:
        if record.renewed_from is not None:
            at = dt.datetime.fromisoformat(record.issued_at)
            renewed[record.subject] = max(at, renewed.get(record.subject, at))
    out = [
        "# HELP mtlsauth_ca_client_certs_expiring Valid client certificates expiring soon.",
        "# TYPE mtlsauth_ca_client_certs_expiring gauge",
    ]
    for label, window in _WINDOWS:
        count = sum(1 for r in valid if r.expires <= now + window)
        out.append(f"mtlsauth_ca_client_certs_expiring{labels(within=label)} {count}")
    out += [
        "# HELP mtlsauth_ca_client_cert_expiry_timestamp_seconds When each client's latest "
        "valid certificate expires.",
        "# TYPE mtlsauth_ca_client_cert_expiry_timestamp_seconds gauge",
    ]
    for subject, when in sorted(expiry.items()):
        out.append(
            f"mtlsauth_ca_client_cert_expiry_timestamp_seconds{labels(subject=subject)} "
            f"{when.timestamp():.0f}"
        )
    out += [
        "# HELP mtlsauth_ca_client_cert_last_renewal_timestamp_seconds When each client last "
        "renewed its certificate.",
        "# TYPE mtlsauth_ca_client_cert_last_renewal_timestamp_seconds gauge",
    ]
    for subject, when in sorted(renewed.items()):
        out.append(
            f"mtlsauth_ca_client_cert_last_renewal_timestamp_seconds{labels(subject=subject)} "
            f"{when.timestamp():.3f}"
        )
    return "\n".join(out) + "\n"
