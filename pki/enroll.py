"""One-time enrollment credentials (RFC 7030 §3.2.3: HTTP Basic on simpleenroll).

An operator makes one with ``pki enroll-token``: it fixes the names the certificate will carry
(a common name and subjectAltNames) and its lifetime, and it can be used once, before it
expires. Only a SHA-256 hash of the secret is kept: the secret is 256 random bits, so a keyed
or slow hash would add nothing but cost.

The credentials live in the CA's inventory database, next to what they are used for: issuing
needs the CA key, so enrollment runs only where the CA directory is, and a credential and the
certificate it was redeemed for are written to the same place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pki.ca import CAError, SubjectAltNames
from pki.inventory import open_db

__all__ = ["DEFAULT_TTL", "MAX_TTL", "EnrollDenied", "EnrollGrant", "EnrollTokens"]

#: How long a credential can be used, by default (seconds): long enough to hand it over.
DEFAULT_TTL: Final = 3600
#: A credential lives at most a week: one that is never used should not linger.
MAX_TTL: Final = 7 * 86400
#: Prefix of credential ids, so an id in a log is recognisable.
ID_PREFIX: Final = "et_"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS enroll_tokens (
    id           TEXT PRIMARY KEY,
    secret_hash  TEXT NOT NULL,
    common_name  TEXT NOT NULL,
    sans         TEXT NOT NULL,
    days         INTEGER,
    hours        INTEGER,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    used_at      TEXT,
    serial       TEXT
);
"""


class EnrollDenied(CAError):
    """The enrollment credential (or current certificate) does not authenticate the request:
    unknown, wrong secret, used, expired. ``reason`` is a short label for logs and metrics."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EnrollGrant:
    """What a credential allows: the names and the lifetime of one certificate."""

    id: str
    common_name: str
    sans: SubjectAltNames
    days: int | None
    hours: int | None
    expires_at: dt.datetime


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class EnrollTokens:
    """The credentials of one CA, in its inventory database."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return open_db(self.path, _SCHEMA)

    def create(
        self,
        *,
        common_name: str,
        sans: SubjectAltNames,
        days: int | None,
        hours: int | None,
        ttl: int = DEFAULT_TTL,
    ) -> tuple[EnrollGrant, str]:
        """A new credential and its secret (returned once, never stored)."""
        if not 1 <= ttl <= MAX_TTL:
            raise CAError(f"--ttl must be from 1 to {MAX_TTL} seconds, got {ttl}")
        token_id = ID_PREFIX + secrets.token_urlsafe(12)
        secret = secrets.token_urlsafe(32)
        now = dt.datetime.now(dt.UTC)
        grant = EnrollGrant(
            id=token_id,
            common_name=common_name,
            sans=sans,
            days=days,
            hours=hours,
            expires_at=now + dt.timedelta(seconds=ttl),
        )
        names = {"dns": list(sans.dns), "uri": list(sans.uri), "ip": list(sans.ip),
                 "email": list(sans.email)}  # fmt: skip
        with self._db() as db:
            db.execute(
                "INSERT INTO enroll_tokens (id, secret_hash, common_name, sans, days, hours,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (token_id, _hash(secret), common_name, json.dumps(names), days, hours,
                 now.isoformat(), grant.expires_at.isoformat()),
            )  # fmt: skip
        return grant, secret

    def check(self, token_id: str, secret: str) -> EnrollGrant:
        """The grant of a credential that may be used now; EnrollDenied otherwise."""
        with self._db() as db:
            row = db.execute(
                "SELECT secret_hash, common_name, sans, days, hours, expires_at, used_at"
                " FROM enroll_tokens WHERE id = ?",
                (token_id,),
            ).fetchone()
        if row is None:
            raise EnrollDenied(f"unknown enrollment credential {token_id[:40]!r}", "unknown")
        secret_hash, common_name, sans, days, hours, expires_at, used_at = row
        if not hmac.compare_digest(secret_hash, _hash(secret)):
            raise EnrollDenied(f"wrong secret for enrollment credential {token_id}", "bad_secret")
        if used_at is not None:
            raise EnrollDenied(f"enrollment credential {token_id} was used at {used_at}", "used")
        expires = dt.datetime.fromisoformat(expires_at)
        if expires <= dt.datetime.now(dt.UTC):
            raise EnrollDenied(
                f"enrollment credential {token_id} expired at {expires_at}", "expired"
            )
        return EnrollGrant(
            id=token_id,
            common_name=common_name,
            sans=SubjectAltNames(**json.loads(sans)),
            days=days,
            hours=hours,
            expires_at=expires,
        )

    def claim(self, token_id: str) -> None:
        """Mark the credential used, atomically: of two concurrent requests only one wins."""
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._db() as db:
            cursor = db.execute(
                "UPDATE enroll_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL"
                " AND expires_at > ?",
                (now, token_id, now),
            )
        if cursor.rowcount != 1:
            raise EnrollDenied(f"enrollment credential {token_id} was used meanwhile", "used")

    def release(self, token_id: str) -> None:
        """Undo :meth:`claim` when nothing was issued (the request was refused)."""
        with self._db() as db:
            db.execute(
                "UPDATE enroll_tokens SET used_at = NULL WHERE id = ? AND serial IS NULL",
                (token_id,),
            )

    def redeemed(self, token_id: str, serial: str) -> None:
        """Record the certificate the credential was used for."""
        with self._db() as db:
            db.execute("UPDATE enroll_tokens SET serial = ? WHERE id = ?", (serial, token_id))
