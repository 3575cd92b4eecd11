"""Log configuration: plain text for people, JSON lines for log pipelines (``log_format``)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Final

from mtlsauth.core.requestid import REQUEST_ID

__all__ = ["FIELDS", "JSONFormatter", "configure_logging"]

#: Structured fields a log call may pass in ``extra`` that become keys of the JSON line. A
#: fixed list: nothing else a record carries (a secret, a token) can reach the log by accident.
FIELDS: Final = ("request_id", "method", "path", "status", "duration_ms", "client_id", "error")


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the structured ``FIELDS``
    that are set (``request_id`` also from the request being handled), and the exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if "request_id" not in entry and (request_id := REQUEST_ID.get()) is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
