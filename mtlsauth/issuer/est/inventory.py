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
from collections.abc import Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from pki.inventory import Inventory, Record

__all__ = ["inventory_metrics"]

log = logging.getLogger(__name__)

_WINDOWS = (("7d", dt.timedelta(days=7)), ("30d", dt.timedelta(days=30)))


def inventory_metrics(ca_dir: Path, now: dt.datetime | None = None) -> bytes:
    """Prometheus text of the inventory in ``ca_dir`` (empty when there is none)."""
    path = ca_dir / "inventory.db"
    if not path.is_file():
        return b""
    try:
        records = Inventory(path).query(profile="client")
    except sqlite3.Error as exc:
        # The service's own counters are still worth serving; the gap itself shows.
        log.warning("cannot read the CA inventory %s for /metrics: %s", path, exc)
        return b""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_InventoryCollector(records, now or dt.datetime.now(dt.UTC)))
    return generate_latest(registry)


class _InventoryCollector(Collector):
    """One scrape's view of the inventory, as prometheus_client metric families."""

    def __init__(self, records: Sequence[Record], now: dt.datetime) -> None:
        self._records = records
        self._now = now

    def collect(self) -> Iterator[Metric]:
        valid = [r for r in self._records if r.status == "valid"]
        expiring = GaugeMetricFamily(
            "mtlsauth_ca_client_certs_expiring",
            "Valid client certificates expiring soon.",
            labels=["within"],
        )
        for label, window in _WINDOWS:
            expiring.add_metric([label], sum(1 for r in valid if r.expires <= self._now + window))
        yield expiring
        expiry: dict[str, dt.datetime] = {}
        for record in valid:
            expiry[record.subject] = max(record.expires, expiry.get(record.subject, record.expires))
        latest = GaugeMetricFamily(
            "mtlsauth_ca_client_cert_expiry_timestamp_seconds",
            "When each client's latest valid certificate expires.",
            labels=["subject"],
        )
        for subject, when in sorted(expiry.items()):
            latest.add_metric([subject], round(when.timestamp()))
        yield latest
        renewed: dict[str, dt.datetime] = {}
        for record in self._records:
            if record.renewed_from is not None:
                at = dt.datetime.fromisoformat(record.issued_at)
                renewed[record.subject] = max(at, renewed.get(record.subject, at))
        last = GaugeMetricFamily(
            "mtlsauth_ca_client_cert_last_renewal_timestamp_seconds",
            "When each client last renewed its certificate.",
            labels=["subject"],
        )
        for subject, when in sorted(renewed.items()):
            last.add_metric([subject], when.timestamp())
        yield last
