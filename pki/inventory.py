"""The inventory of everything the CA issued: serial, subject, SANs, profile, validity, status.

SQLite, next to the CA. Status is ``valid`` or ``revoked``; ``expired`` is derived when read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mtlsauth.core.thumbprint import x5t_s256
from pki.serials import normalize_serial

__all__ = ["Inventory", "Record", "open_db"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS certificates (
    serial       TEXT PRIMARY KEY,
    subject      TEXT NOT NULL,
    sans         TEXT NOT NULL,
    profile      TEXT NOT NULL,
    not_before   TEXT NOT NULL,
    not_after    TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'valid',
    reason       TEXT,
    revoked_at   TEXT,
    thumbprint   TEXT NOT NULL,
    renewed_from TEXT,
    key_path     TEXT,
    issued_at    TEXT NOT NULL,
    pem          TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    prefixes: dict[type, str] = {
        x509.DNSName: "DNS",
        x509.UniformResourceIdentifier: "URI",
        x509.IPAddress: "IP",
        x509.RFC822Name: "email",
    }
    return [f"{prefixes.get(type(n), type(n).__name__)}:{n.value}" for n in ext]


@dataclass(frozen=True, slots=True)
class Record:
    serial: str
    subject: str
    sans: list[str]
    profile: str
    not_before: str
    not_after: str
    status: str
    reason: str | None
    revoked_at: str | None
    thumbprint: str
    renewed_from: str | None
    key_path: str | None
    issued_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def expires(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.not_after)


@contextmanager
def open_db(path: Path, schema: str) -> Iterator[sqlite3.Connection]:
    """The CA's SQLite database (created 0600: it holds what the CA issued), with ``schema``
    applied (idempotent DDL), in autocommit mode; closed on exit."""
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        conn.executescript(schema)
        yield conn
    finally:
        conn.close()


class Inventory:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return open_db(self.path, _SCHEMA)

    def add(
        self,
        cert: x509.Certificate,
        *,
        profile: str,
        renewed_from: str | None = None,
        key_path: str | None = None,
    ) -> Record:
        der = cert.public_bytes(Encoding.DER)
        row = (
            format(cert.serial_number, "x"),
            cert.subject.rfc4514_string(),
            json.dumps(_sans(cert)),
            profile,
            cert.not_valid_before_utc.isoformat(),
            cert.not_valid_after_utc.isoformat(),
            x5t_s256(der),
            renewed_from,
            key_path,
            dt.datetime.now(dt.UTC).isoformat(),
            cert.public_bytes(Encoding.PEM).decode(),
        )
        with self._db() as db:
            db.execute(
                "INSERT INTO certificates (serial, subject, sans, profile, not_before, not_after,"
                " thumbprint, renewed_from, key_path, issued_at, pem)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        record = self.get(row[0])
        assert record is not None
        return record

    def get(self, serial: str) -> Record | None:
        found = self.query(serial=serial)
        return found[0] if found else None

    def certificate(self, serial: str) -> x509.Certificate | None:
        with self._db() as db:
            row = db.execute(
                "SELECT pem FROM certificates WHERE serial = ?", (normalize_serial(serial),)
            ).fetchone()
        return x509.load_pem_x509_certificate(row[0].encode()) if row else None

    def revoke(self, serial: str, reason: str) -> Record:
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._db() as db:
            db.execute(
                "UPDATE certificates SET status = 'revoked', reason = ?, revoked_at = ?"
                " WHERE serial = ? AND status = 'valid'",
                (reason, now, normalize_serial(serial)),
            )
        record = self.get(serial)
        assert record is not None
        return record

    def revoked(self) -> list[tuple[int, dt.datetime, str]]:
        with self._db() as db:
            rows = db.execute(
                "SELECT serial, revoked_at, reason FROM certificates WHERE status = 'revoked'"
                " ORDER BY revoked_at"
            ).fetchall()
        return [(int(s, 16), dt.datetime.fromisoformat(at), reason) for s, at, reason in rows]

    def next_crl_number(self, counter: str = "crl_number") -> int:
        """The next number of one CA's CRLs (each CA counts its own)."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT value FROM meta WHERE key = ?", (counter,)).fetchone()
            number = int(row[0]) + 1 if row else 1
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (counter, str(number))
            )
            db.execute("COMMIT")
        return number

    def query(
        self,
        *,
        serial: str | None = None,
        renewed_from: str | None = None,
        status: str | None = None,
        profile: str | None = None,
        expiring_within: dt.timedelta | None = None,
        subject_contains: str | None = None,
    ) -> list[Record]:
        """Records matching every given filter; status ``expired`` is derived from not_after."""
        clauses: list[str] = []
        args: list[str] = []
        if serial is not None:
            clauses.append("serial = ?")
            args.append(normalize_serial(serial))
        if renewed_from is not None:
            clauses.append("renewed_from = ?")
            args.append(normalize_serial(renewed_from))
        if profile is not None:
            clauses.append("profile = ?")
            args.append(profile)
        with self._db() as db:
            sql = "SELECT serial, subject, sans, profile, not_before, not_after, status, reason,"
            sql += " revoked_at, thumbprint, renewed_from, key_path, issued_at FROM certificates"
            if clauses:
                sql += " WHERE " + " AND ".join(clauses)
            rows = db.execute(sql + " ORDER BY issued_at", args).fetchall()
        now = dt.datetime.now(dt.UTC)
        records = []
        for row in rows:
            (serial_, subject, sans, prof, nb, na, st, reason, rev_at, thumb, renewed, key, at) = (
                row
            )
            record = Record(
                serial=serial_, subject=subject, sans=json.loads(sans), profile=prof,
                not_before=nb, not_after=na, status=st, reason=reason, revoked_at=rev_at,
                thumbprint=thumb, renewed_from=renewed, key_path=key, issued_at=at,
            )  # fmt: skip
            if record.status == "valid" and record.expires <= now:
                record = Record(**{**record.as_dict(), "status": "expired"})
            if status is not None and record.status != status:
                continue
            if expiring_within is not None and not (
                record.status == "valid" and record.expires <= now + expiring_within
            ):
                continue
            if subject_contains and subject_contains.lower() not in record.subject.lower():
                continue
            records.append(record)
        return records
