"""Audit events as JSON lines: what was issued to whom (RFC 9068 tokens, by ``jti``), and every
failed authentication (RFC 6749 §5.2 ``invalid_client``).

One line per event, appended to ``audit_log`` (0600), flushed as written:

* ``token.issued``: client_id, jti, method, thumbprint (x5t#S256 or null), scope, aud
* ``auth.failed``: client_id (the registered client it claimed, or null), reason, source,
  count, since — failed authentications are tallied and written as one line per
  (client_id, reason, source) per interval (:meth:`Audit.flush_tallies`), so a flood of
  failures costs a counter, not a line each; at most ``max_tallies`` tallies are held, the
  rest go to source ``"*"``. Known and unknown client_ids take this same path, so how the
  failure is recorded tells nothing about which client_ids exist.
* ``token.revoked``, ``token.introspected``: client_id, jti
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, TextIO

__all__ = ["Audit"]

#: Beyond this many distinct tallies in one interval, failures are tallied under source "*".
MAX_TALLIES = 1000

log = logging.getLogger(__name__)


class Audit:
    def __init__(self, path: Path | None, *, max_tallies: int = MAX_TALLIES) -> None:
        self.path = path
        self._file: TextIO | None = None
        self._max_tallies = max_tallies
        #: (event, client_id, reason, source) -> [count, first time].
        self._tallies: dict[tuple[str, str | None, str, str], list[Any]] = {}
        if path is not None:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._file = os.fdopen(fd, "a", buffering=1, encoding="utf-8")

    @property
    def enabled(self) -> bool:
        """False when no audit log is configured (callers may skip building the record)."""
        return self._file is not None

    def event(self, name: str, **fields: Any) -> None:
        if self._file is None:
            return
        record = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "event": name}
        record.update(fields)
        try:
            self._file.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        except OSError as exc:  # a full disk must not take the token service down
            log.error("cannot write the audit log %s: %s", self.path, exc)

    def tally(self, name: str, *, client_id: str | None, reason: str, source: str) -> None:
        """Count one occurrence of ``name``; written with its count by :meth:`flush_tallies`."""
        if self._file is None:
            return
        key = (name, client_id, reason, source)
        entry = self._tallies.get(key)
        if entry is None:
            if len(self._tallies) >= self._max_tallies:
                key = (name, None, reason, "*")
                entry = self._tallies.get(key)
            if entry is None:
                entry = self._tallies[key] = [0, time.time()]
        entry[0] += 1

    def flush_tallies(self) -> None:
        """Write one line per tally collected since the last flush (background loop, close)."""
        tallies, self._tallies = self._tallies, {}
        for (name, client_id, reason, source), (count, since) in tallies.items():
            self.event(
                name,
                client_id=client_id,
                reason=reason,
                source=source,
                count=count,
                since=dt.datetime.fromtimestamp(since, dt.UTC).isoformat(timespec="milliseconds"),
            )

    def close(self) -> None:
        self.flush_tallies()
        if self._file is not None:
            self._file.close()
            self._file = None
