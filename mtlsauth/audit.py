"""Audit events as JSON lines: what was issued to whom, and every failed authentication.

One line per event, appended to ``audit_log`` (0600), flushed as written:

* ``token.issued``: client_id, jti, method, thumbprint (x5t#S256 or null), scope, aud
* ``auth.failed``: client_id (as claimed), reason, source
* ``token.revoked``, ``token.introspected``: client_id, jti
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any, TextIO

__all__ = ["Audit"]

log = logging.getLogger(__name__)


class Audit:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: TextIO | None = None
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

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
