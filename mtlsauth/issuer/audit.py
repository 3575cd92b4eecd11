"""Audit events as JSON lines: what was issued to whom (RFC 9068 tokens, by ``jti``), and every
failed authentication (RFC 6749 §5.2 ``invalid_client``).

One line per event, appended to ``audit_log`` (0600). Events are buffered off the hot path: a
token costs an append to a list, and the lines are formatted and written in one ``write`` by
:meth:`Audit.flush` — every ``flush_interval`` from :meth:`Audit.flush_forever`, whenever
``max_buffered`` events are waiting (so the buffer is bounded), and on :meth:`Audit.close` (a
clean stop loses nothing). A crash (SIGKILL, power loss) loses the events of the last interval.

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

import asyncio
import datetime as dt
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["Audit"]

#: Beyond this many distinct tallies in one interval, failures are tallied under source "*".
MAX_TALLIES = 1000
#: Beyond this many waiting events the buffer is written at once (memory stays bounded).
MAX_BUFFERED = 4096

log = logging.getLogger(__name__)

# One encoder for every line: json.dumps builds a new one per call when given options.
_ENCODE = json.JSONEncoder(separators=(",", ":"), default=str).encode


class Audit:
    def __init__(
        self, path: Path | None, *, max_tallies: int = MAX_TALLIES, max_buffered: int = MAX_BUFFERED
    ) -> None:
        self.path = path
        self._fd: int | None = None
        self._max_tallies = max_tallies
        self._max_buffered = max_buffered
        #: (time, event, fields) waiting for :meth:`flush`; formatted there, not per token.
        self._buffer: list[tuple[float, str, dict[str, Any]]] = []
        #: (event, client_id, reason, source) -> [count, first time].
        self._tallies: dict[tuple[str, str | None, str, str], list[Any]] = {}
        if path is not None:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    @property
    def enabled(self) -> bool:
        """False when no audit log is configured (callers may skip building the record)."""
        return self._fd is not None

    def event(self, name: str, **fields: Any) -> None:
        if self._fd is None:
            return
        self._buffer.append((time.time(), name, fields))
        if len(self._buffer) >= self._max_buffered:
            self.flush()

    def flush(self) -> None:
        """Write every buffered event, one JSON line each, in one append."""
        buffer, self._buffer = self._buffer, []
        if self._fd is None or not buffer:
            return
        lines = []
        second, prefix = -1, ""
        for when, name, fields in buffer:
            whole, millis = divmod(int(when * 1000), 1000)
            if whole != second:  # events of one second share the date and time
                second, prefix = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            record = {"time": f"{prefix}.{millis:03d}+00:00", "event": name}
            record.update(fields)
            lines.append(_ENCODE(record) + "\n")
        data = memoryview("".join(lines).encode())
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as exc:  # a full disk must not take the token service down
            log.error("cannot write the audit log %s (%d events lost): %s", self.path,
                      len(buffer), exc)  # fmt: skip

    async def flush_forever(self, interval: float) -> None:
        """Flush every ``interval`` seconds until cancelled (the server's background task)."""
        while True:
            await asyncio.sleep(interval)
            self.flush()

    def tally(self, name: str, *, client_id: str | None, reason: str, source: str) -> None:
        """Count one occurrence of ``name``; written with its count by :meth:`flush_tallies`."""
        if self._fd is None:
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
        """Buffer one line per tally collected since the last flush (background loop, close)."""
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
        """Write what is buffered and tallied, then close the file (a clean stop loses nothing)."""
        self.flush_tallies()
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
