"""The CA's audit log: one JSON object per line, only ever appended to (0600).

Every issuance, renewal, revocation, CRL and CA event is recorded with the time, the
operating-system user and what was done. Nothing here rewrites or truncates the file.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["AuditLog"]


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (as {user})" if sudo else user


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, event: str, **details: Any) -> None:
        entry = {"time": dt.datetime.now(dt.UTC).isoformat(), "event": event, "actor": _actor()}
        entry.update(details)
        line = (json.dumps(entry, sort_keys=False, default=str) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
